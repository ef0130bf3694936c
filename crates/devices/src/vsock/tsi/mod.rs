//! Transparent socket impersonation: the host side of libkrunfw's AF_TSI sockets.
//!
//! The guest kernel sends control datagrams to the host CID on well-known ports (proxy
//! create, connect, getname, sendto, listen, accept, release; libkrunfw
//! `net/tsi/af_tsi.h`); the device opens the real host sockets. Stream data then flows over
//! a plain vsock stream to port [`TSI_PROXY_PORT`]; datagram data over vsock datagrams.

mod dgram;
mod stream;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::PathBuf;

use super::connection::BUF_ALLOC;
use super::muxer::ConnKey;
use super::packet::{Header, Packet, HOST_CID, OP_RW, TYPE_DGRAM};

pub use dgram::TsiDgram;
pub use stream::TsiStream;

/// Stream port every TSI stream proxy connects its vsock side to (TSI_DEFAULT_PORT).
pub const TSI_PROXY_PORT: u32 = 620;
/// Control ports (destination ports of the guest's control datagrams).
pub const TSI_PROXY_CREATE: u32 = 1024;
pub const TSI_CONNECT: u32 = 1025;
pub const TSI_GETNAME: u32 = 1026;
pub const TSI_SENDTO_ADDR: u32 = 1027;
pub const TSI_SENDTO_DATA: u32 = 1028;
pub const TSI_LISTEN: u32 = 1029;
pub const TSI_ACCEPT: u32 = 1030;
pub const TSI_PROXY_RELEASE: u32 = 1031;
/// Size of the address field in the control messages (TSI_ADDR_LEN).
pub const TSI_ADDR_LEN: usize = 128;

/// TSI proxies (guest sockets, stream and datagram) at most; a PROXY_CREATE past it is
/// ignored, so the guest socket's later calls fail. Bounds the table and the UDP sockets.
pub const MAX_TSI_PROXIES: usize = 4096;
/// TSI host connects under way at most (each holds a socket for up to
/// [`CONNECT_TIMEOUT`](crate::vsock::CONNECT_TIMEOUT)); a TSI_CONNECT past it gets -EAGAIN.
pub const MAX_PENDING_CONNECTS: usize = 64;

/// `KRUN_TSI_HIJACK_INET`: AF_INET and AF_INET6 sockets are proxied.
pub const TSI_HIJACK_INET: u32 = 1 << 0;
/// `KRUN_TSI_HIJACK_UNIX`: AF_UNIX sockets are proxied.
pub const TSI_HIJACK_UNIX: u32 = 1 << 1;

/// Linux address families and socket types as the guest writes them.
pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const SOCK_STREAM: u16 = 1;
pub const SOCK_DGRAM: u16 = 2;

/// The errno a guest socket gets when the TSI scope forbids its destination. microsandbox's
/// fork was not available to check; EACCES says "policy", unlike ECONNREFUSED.
pub const SCOPE_BLOCKED_ERRNO: i32 = libc::EACCES;

/// Which destinations guest TSI sockets may reach (microsandbox's `krun_set_tsi_scope`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsiScope {
    /// 0: none, 1: only `subnet`, 2: only public addresses, 3: any (and >3: any).
    pub scope: u8,
    /// The subnet for scope 1, as (network, prefix length).
    pub subnet: Option<(IpAddr, u8)>,
    /// The guest's own address (its TSI interface carries it): when set, guest listeners
    /// are exposed only on it (or on the wildcard address, which in a guest with one
    /// address means the same).
    pub ip: Option<IpAddr>,
}

impl TsiScope {
    /// Whether `addr` lies in the scope's subnet (false without one).
    pub fn in_subnet(&self, addr: &IpAddr) -> bool {
        self.subnet
            .is_some_and(|(net, len)| in_subnet(addr, &net, len))
    }

    /// Whether a guest listener bound to `addr` may be exposed on the host. Scope 0 exposes
    /// nothing; with a guest address, only that address and the wildcard are exposed (as
    /// microsandbox's fork documents: "only the IP can be bound to or listened on"; the
    /// wildcard is also allowed here, since servers bind it and it names that one address).
    pub fn allows_listen(&self, addr: &IpAddr) -> bool {
        if self.scope == 0 {
            return false;
        }
        match self.ip {
            Some(ip) => *addr == ip || addr.is_unspecified(),
            None => true,
        }
    }

    /// The host address a permitted guest listener on `addr` binds: the guest's own address
    /// is not the host's, so it stands for the wildcard, as in the guest.
    pub fn host_listen_addr(&self, addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(_) if self.ip == Some(addr) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) if self.ip == Some(addr) => std::net::Ipv6Addr::UNSPECIFIED.into(),
            _ => addr,
        }
    }

    /// Whether a guest socket may reach `addr`. Unix socket paths are not scoped.
    pub fn allows(&self, addr: &IpAddr) -> bool {
        match self.scope {
            0 => false,
            1 => self.in_subnet(addr),
            2 => is_public(addr),
            _ => true,
        }
    }
}

fn in_subnet(addr: &IpAddr, net: &IpAddr, len: u8) -> bool {
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(*a) & mask == u32::from(*n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(*a) & mask == u128::from(*n) & mask
        }
        _ => false,
    }
}

fn is_public(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            !(a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || (a.octets()[0] == 100 && a.octets()[1] & 0xc0 == 64))
        }
        IpAddr::V6(a) => {
            let seg0 = a.segments()[0];
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || seg0 & 0xfe00 == 0xfc00
                || seg0 & 0xffc0 == 0xfe80)
        }
    }
}

/// A destination or bound address from a control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TsiAddr {
    Inet(SocketAddr),
    Unix(PathBuf),
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Decodes a Linux `struct sockaddr_*` of `len` bytes (family little endian as the x86
/// guest stores it, ports and IPv4/IPv6 addresses in network order).
pub fn parse_sockaddr(b: &[u8], len: usize) -> Option<TsiAddr> {
    let b = b.get(..len.min(b.len()))?;
    match le_u16(b, 0)? {
        AF_INET if b.len() >= 8 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Some(TsiAddr::Inet(SocketAddr::V4(SocketAddrV4::new(ip, port))))
        }
        AF_INET6 if b.len() >= 28 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let flow = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&b[8..24]);
            let scope = le_u32(b, 24)?;
            Some(TsiAddr::Inet(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flow,
                scope,
            ))))
        }
        AF_UNIX if b.len() > 2 && b[2] != 0 => {
            let path = &b[2..];
            let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
            let s = std::str::from_utf8(&path[..end]).ok()?;
            Some(TsiAddr::Unix(PathBuf::from(s)))
        }
        _ => None,
    }
}

/// Encodes an address as a Linux sockaddr; returns the bytes (their length is addr_len).
pub fn encode_sockaddr(addr: &SocketAddr) -> Vec<u8> {
    match addr {
        SocketAddr::V4(a) => {
            let mut b = vec![0u8; 16];
            b[0..2].copy_from_slice(&AF_INET.to_le_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.ip().octets());
            b
        }
        SocketAddr::V6(a) => {
            let mut b = vec![0u8; 28];
            b[0..2].copy_from_slice(&AF_INET6.to_le_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.flowinfo().to_be_bytes());
            b[8..24].copy_from_slice(&a.ip().octets());
            b[24..28].copy_from_slice(&a.scope_id().to_le_bytes());
            b
        }
    }
}

/// The negative errno of an I/O error, as the guest expects it in a result field.
pub fn neg_errno(e: &io::Error) -> i32 {
    -e.raw_os_error().unwrap_or(libc::EIO)
}

/// TSI proxies of one device.
pub struct TsiState {
    pub streams: HashMap<u32, TsiStream>,
    pub dgrams: HashMap<u32, TsiDgram>,
    /// Host-initiated connections of TSI listeners: connection -> listener proxy port.
    pub accepted: HashMap<ConnKey, u32>,
    /// Streams in [`stream::StreamState::Connecting`]: host connects under way, at most
    /// [`MAX_PENDING_CONNECTS`].
    pub connecting: usize,
}

impl TsiState {
    pub fn new() -> Self {
        TsiState {
            streams: HashMap::new(),
            dgrams: HashMap::new(),
            accepted: HashMap::new(),
            connecting: 0,
        }
    }
}

/// A control answer: a datagram from the control port `op_port` to the guest's control
/// socket `ctl_port`.
pub fn ctrl_reply(guest_cid: u64, op_port: u32, ctl_port: u32, data: Vec<u8>) -> Packet {
    Packet {
        hdr: Header {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: op_port,
            dst_port: ctl_port,
            len: data.len() as u32,
            type_: TYPE_DGRAM,
            op: OP_RW,
            buf_alloc: BUF_ALLOC,
            ..Header::default()
        },
        data,
    }
}

/// A result-only answer (connect, listen, accept): one little-endian i32.
pub fn result_reply(guest_cid: u64, op_port: u32, ctl_port: u32, result: i32) -> Packet {
    ctrl_reply(guest_cid, op_port, ctl_port, result.to_le_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_in_round_trip_keeps_port_and_ip() {
        let a: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        let b = encode_sockaddr(&a);
        assert_eq!(parse_sockaddr(&b, b.len()), Some(TsiAddr::Inet(a)));
    }

    #[test]
    fn sockaddr_in6_round_trip_keeps_port_and_ip() {
        let a: SocketAddr = "[::1]:53".parse().unwrap();
        let b = encode_sockaddr(&a);
        assert_eq!(b.len(), 28);
        assert_eq!(parse_sockaddr(&b, b.len()), Some(TsiAddr::Inet(a)));
    }

    #[test]
    fn sockaddr_un_path_parsed_until_nul() {
        let mut b = vec![1u8, 0];
        b.extend_from_slice(b"/tmp/x.sock\0junk");
        assert_eq!(
            parse_sockaddr(&b, b.len()),
            Some(TsiAddr::Unix(PathBuf::from("/tmp/x.sock")))
        );
    }

    #[test]
    fn scope_levels_filter_destinations() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let public: IpAddr = "8.8.8.8".parse().unwrap();
        let lan: IpAddr = "192.168.1.7".parse().unwrap();
        let none = TsiScope {
            scope: 0,
            subnet: None,
            ip: None,
        };
        let group = TsiScope {
            scope: 1,
            subnet: Some(("192.168.1.0".parse().unwrap(), 24)),
            ip: None,
        };
        let publ = TsiScope {
            scope: 2,
            subnet: None,
            ip: None,
        };
        let any = TsiScope {
            scope: 3,
            subnet: None,
            ip: None,
        };
        assert!(!none.allows(&public));
        assert!(group.allows(&lan) && !group.allows(&public));
        assert!(publ.allows(&public) && !publ.allows(&lan) && !publ.allows(&lo));
        assert!(any.allows(&lo));
    }

    #[test]
    fn listeners_follow_scope_and_guest_address() {
        let own: IpAddr = "10.0.2.15".parse().unwrap();
        let other: IpAddr = "10.0.2.16".parse().unwrap();
        let any4: IpAddr = "0.0.0.0".parse().unwrap();
        let with_ip = TsiScope {
            scope: 3,
            subnet: None,
            ip: Some(own),
        };
        assert!(with_ip.allows_listen(&own) && with_ip.allows_listen(&any4));
        assert!(!with_ip.allows_listen(&other));
        assert_eq!(with_ip.host_listen_addr(own), any4);
        assert_eq!(with_ip.host_listen_addr(any4), any4);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(with_ip.host_listen_addr(lo), lo);
        let none = TsiScope {
            scope: 0,
            subnet: None,
            ip: Some(own),
        };
        assert!(!none.allows_listen(&own) && !none.allows_listen(&any4));
        let no_ip = TsiScope {
            scope: 1,
            subnet: None,
            ip: None,
        };
        assert!(no_ip.allows_listen(&other) && no_ip.allows_listen(&any4));
    }
}
