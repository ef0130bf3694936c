//! DHCPv4 messages (RFC 2131, options RFC 2132, rapid commit RFC 4039), built and parsed
//! without I/O. The client sends DISCOVER with rapid commit; a server that supports it
//! answers ACK at once, any other answers OFFER and gets a REQUEST.

use std::net::Ipv4Addr;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
/// The fixed BOOTP part before the options.
const FIXED_LEN: usize = 236;

const OPT_PAD: u8 = 0;
const OPT_SUBNET_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_MTU: u8 = 26;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAM_LIST: u8 = 55;
const OPT_RAPID_COMMIT: u8 = 80;
const OPT_END: u8 = 255;

pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;

/// What a server's OFFER or ACK says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    pub message_type: u8,
    pub address: Option<Ipv4Addr>,
    pub netmask: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub mtu: Option<u16>,
    pub server_id: Option<Ipv4Addr>,
    pub rapid_commit: bool,
}

/// A DISCOVER (with rapid commit), or a REQUEST for `offer`.
pub fn request(mac: [u8; 6], xid: u32, offer: Option<&Lease>) -> Vec<u8> {
    let mut m = vec![0u8; FIXED_LEN];
    m[0] = BOOTREQUEST;
    m[1] = 1; // htype: Ethernet
    m[2] = 6; // hlen
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    // flags: BROADCAST, so the answer reaches a client that has no address yet.
    m[10] = 0x80;
    m[28..34].copy_from_slice(&mac);
    m.extend_from_slice(&MAGIC_COOKIE);
    match offer {
        None => {
            m.extend_from_slice(&[OPT_MESSAGE_TYPE, 1, DISCOVER]);
            m.extend_from_slice(&[OPT_RAPID_COMMIT, 0]);
        }
        Some(offer) => {
            m.extend_from_slice(&[OPT_MESSAGE_TYPE, 1, REQUEST]);
            if let Some(addr) = offer.address {
                m.extend_from_slice(&[OPT_REQUESTED_IP, 4]);
                m.extend_from_slice(&addr.octets());
            }
            if let Some(id) = offer.server_id {
                m.extend_from_slice(&[OPT_SERVER_ID, 4]);
                m.extend_from_slice(&id.octets());
            }
        }
    }
    m.extend_from_slice(&[
        OPT_PARAM_LIST,
        4,
        OPT_SUBNET_MASK,
        OPT_ROUTER,
        OPT_DNS,
        OPT_MTU,
    ]);
    m.push(OPT_END);
    m
}

fn ipv4(bytes: &[u8]) -> Option<Ipv4Addr> {
    let b: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

/// Parses a server's reply to transaction `xid` for `mac`; None for anything else
/// (other clients' replies, requests, malformed messages).
pub fn parse_reply(msg: &[u8], xid: u32, mac: [u8; 6]) -> Option<Lease> {
    if msg.len() < FIXED_LEN + 4 || msg[0] != BOOTREPLY {
        return None;
    }
    if msg[4..8] != xid.to_be_bytes() || msg[28..34] != mac {
        return None;
    }
    if msg[FIXED_LEN..FIXED_LEN + 4] != MAGIC_COOKIE {
        return None;
    }
    let mut lease = Lease {
        address: ipv4(&msg[16..20]).filter(|a| !a.is_unspecified()),
        ..Lease::default()
    };
    let mut opts = &msg[FIXED_LEN + 4..];
    while let Some((&code, rest)) = opts.split_first() {
        match code {
            OPT_PAD => {
                opts = rest;
                continue;
            }
            OPT_END => break,
            _ => {}
        }
        let (&len, rest) = rest.split_first()?;
        let value = rest.get(..usize::from(len))?;
        opts = &rest[usize::from(len)..];
        match code {
            OPT_MESSAGE_TYPE => lease.message_type = *value.first()?,
            OPT_SUBNET_MASK => lease.netmask = ipv4(value),
            OPT_ROUTER => lease.router = ipv4(value),
            OPT_DNS => lease.dns = value.chunks_exact(4).filter_map(ipv4).collect(),
            OPT_MTU if value.len() == 2 => {
                lease.mtu = Some(u16::from_be_bytes([value[0], value[1]]))
            }
            OPT_SERVER_ID => lease.server_id = ipv4(value),
            OPT_RAPID_COMMIT => lease.rapid_commit = true,
            _ => {}
        }
    }
    (lease.message_type != 0).then_some(lease)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 9];

    fn reply(xid: u32, opts: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; FIXED_LEN];
        m[0] = BOOTREPLY;
        m[4..8].copy_from_slice(&xid.to_be_bytes());
        m[16..20].copy_from_slice(&[10, 0, 2, 15]);
        m[28..34].copy_from_slice(&MAC);
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(opts);
        m
    }

    #[test]
    fn discover_asks_for_rapid_commit_and_broadcast() {
        let m = request(MAC, 0x1234_5678, None);
        assert_eq!((m[0], m[10]), (BOOTREQUEST, 0x80));
        assert_eq!(&m[4..8], &[0x12, 0x34, 0x56, 0x78]);
        assert_eq!(&m[28..34], &MAC);
        assert_eq!(&m[FIXED_LEN + 4..FIXED_LEN + 9], &[53, 1, DISCOVER, 80, 0]);
        assert_eq!(*m.last().unwrap(), OPT_END);
    }

    #[test]
    fn request_names_the_offer_and_server() {
        let offer = Lease {
            address: Some(Ipv4Addr::new(10, 0, 2, 15)),
            server_id: Some(Ipv4Addr::new(10, 0, 2, 2)),
            ..Lease::default()
        };
        let m = request(MAC, 7, Some(&offer));
        let opts = &m[FIXED_LEN + 4..];
        assert_eq!(&opts[..3], &[53, 1, REQUEST]);
        assert_eq!(&opts[3..9], &[50, 4, 10, 0, 2, 15]);
        assert_eq!(&opts[9..15], &[54, 4, 10, 0, 2, 2]);
    }

    #[test]
    fn parse_ack_with_every_option() {
        let opts = [
            53, 1, ACK, 1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 2, 2, 6, 8, 10, 0, 2, 3, 1, 1, 1, 1,
            26, 2, 0xff, 0xf0, 54, 4, 10, 0, 2, 2, 80, 0, 0, 255,
        ];
        let lease = parse_reply(&reply(7, &opts), 7, MAC).unwrap();
        assert_eq!(
            lease,
            Lease {
                message_type: ACK,
                address: Some(Ipv4Addr::new(10, 0, 2, 15)),
                netmask: Some(Ipv4Addr::new(255, 255, 255, 0)),
                router: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)],
                mtu: Some(65520),
                server_id: Some(Ipv4Addr::new(10, 0, 2, 2)),
                rapid_commit: true,
            }
        );
    }

    #[test]
    fn parse_rejects_other_transactions_and_malformed_options() {
        let good = reply(7, &[53, 1, OFFER, 255]);
        assert!(parse_reply(&good, 8, MAC).is_none());
        assert!(parse_reply(&good, 7, [2, 0, 0, 0, 0, 1]).is_none());
        assert!(parse_reply(&good[..100], 7, MAC).is_none());
        // An option whose length runs past the end.
        assert!(parse_reply(&reply(7, &[53, 1, OFFER, 6, 200, 1]), 7, MAC).is_none());
        // No message type.
        assert!(parse_reply(&reply(7, &[1, 4, 255, 0, 0, 0, 255]), 7, MAC).is_none());
        // Every truncation of a good reply is handled.
        let full = reply(7, &[53, 1, ACK, 3, 4, 10, 0, 2, 2, 255]);
        for n in 0..full.len() {
            let _ = parse_reply(&full[..n], 7, MAC);
        }
    }
}
