//! IPv4 + UDP framing for the DHCP client, which talks through a packet socket (it has no
//! address to bind a UDP socket to yet).

use std::net::Ipv4Addr;

const IPV4_HDR_LEN: usize = 20;
const UDP_HDR_LEN: usize = 8;
const PROTO_UDP: u8 = 17;

/// An IPv4 packet from 0.0.0.0:`src_port` to 255.255.255.255:`dst_port` carrying `payload`
/// (UDP checksum 0: none, as IPv4 allows).
pub fn udp_broadcast(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = UDP_HDR_LEN + payload.len();
    let total = IPV4_HDR_LEN + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 64, PROTO_UDP, 0, 0]);
    p.extend_from_slice(&Ipv4Addr::UNSPECIFIED.octets());
    p.extend_from_slice(&Ipv4Addr::BROADCAST.octets());
    let csum = checksum(&p[..IPV4_HDR_LEN]);
    p[10..12].copy_from_slice(&csum.to_be_bytes());
    p.extend_from_slice(&src_port.to_be_bytes());
    p.extend_from_slice(&dst_port.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// The UDP payload of IPv4 packet `p` if it is UDP to `dst_port`.
pub fn udp_payload(p: &[u8], dst_port: u16) -> Option<&[u8]> {
    let (&vihl, _) = p.split_first()?;
    if vihl >> 4 != 4 || *p.get(9)? != PROTO_UDP {
        return None;
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*p.get(2)?, *p.get(3)?]));
    let p = p.get(..total.min(p.len()))?;
    let udp = p.get(ihl..)?;
    if udp.len() < UDP_HDR_LEN || u16::from_be_bytes([udp[2], udp[3]]) != dst_port {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    udp.get(UDP_HDR_LEN..len.max(UDP_HDR_LEN).min(udp.len()))
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_round_trips_and_has_a_valid_header_checksum() {
        let p = udp_broadcast(68, 67, b"hello");
        assert_eq!(p.len(), 20 + 8 + 5);
        assert_eq!(
            checksum(&p[..20]),
            0,
            "a header with its checksum sums to zero"
        );
        assert_eq!(&p[16..20], &[255, 255, 255, 255]);
        assert_eq!(udp_payload(&p, 67), Some(&b"hello"[..]));
        assert_eq!(udp_payload(&p, 68), None);
    }

    #[test]
    fn malformed_packets_yield_nothing() {
        let p = udp_broadcast(68, 67, b"x");
        for n in 0..p.len() {
            let _ = udp_payload(&p[..n], 67);
        }
        let mut bad = p.clone();
        bad[0] = 0x4f; // header length past the end
        assert_eq!(udp_payload(&bad, 67), None);
        assert_eq!(udp_payload(&[], 67), None);
    }
}
