//! TSI datagram proxies and the dispatch of the guest's control datagrams.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use log::debug;
use vmm_sys_util::epoll::EventSet;

use super::{
    le_u32, neg_errno, parse_sockaddr, result_reply, TsiAddr, AF_INET, AF_INET6, AF_UNIX,
    MAX_TSI_PROXIES, SCOPE_BLOCKED_ERRNO, SOCK_DGRAM, SOCK_STREAM, TSI_ACCEPT, TSI_ADDR_LEN,
    TSI_CONNECT, TSI_GETNAME, TSI_HIJACK_INET, TSI_HIJACK_UNIX, TSI_LISTEN, TSI_PROXY_CREATE,
    TSI_PROXY_RELEASE, TSI_SENDTO_ADDR, TSI_SENDTO_DATA,
};
use crate::vsock::connection::BUF_ALLOC;
use crate::vsock::muxer::{Muxer, Source};
use crate::vsock::packet::{Header, Packet, HOST_CID, MAX_PKT_DATA, OP_RW, TYPE_DGRAM};

/// A host UDP socket standing in for a guest datagram socket.
pub struct TsiDgram {
    sock: UdpSocket,
    pub token: u64,
    connected: Option<SocketAddr>,
    sendto: Option<SocketAddr>,
}

impl TsiDgram {
    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    pub fn peer(&self) -> Option<SocketAddr> {
        self.connected
    }
}

impl Muxer {
    /// A datagram from the guest: a TSI control message or TSI datagram data.
    pub(crate) fn on_guest_dgram(&mut self, pkt: Packet) {
        let tsi = self.cfg.tsi_features;
        if tsi == 0 {
            debug!(
                "vsock0: datagram to port {} without TSI, dropped",
                pkt.hdr.dst_port
            );
            return;
        }
        let hdr = pkt.hdr;
        let data = &pkt.data;
        match hdr.dst_port {
            TSI_PROXY_CREATE => self.tsi_proxy_create(data),
            TSI_CONNECT => self.tsi_connect(&hdr, data),
            TSI_GETNAME => self.tsi_getname(&hdr, data),
            TSI_SENDTO_ADDR => self.tsi_sendto_addr(data),
            TSI_LISTEN => self.tsi_listen(&hdr, data),
            TSI_ACCEPT => self.tsi_accept(&hdr, data),
            TSI_PROXY_RELEASE => self.tsi_release(data),
            // TSI_SENDTO_DATA or the proxy port of a connected socket: payload.
            _ if hdr.op == OP_RW => self.tsi_dgram_send(&hdr, data),
            _ => debug!("vsock0: unexpected datagram op {}", hdr.op),
        }
    }

    fn tsi_proxy_create(&mut self, data: &[u8]) {
        let (Some(svm_port), Some(kind)) = (le_u32(data, 0), le_u32(data, 4)) else {
            return;
        };
        let family = (kind & 0xffff) as u16;
        let type_ = (kind >> 16) as u16;
        let allowed = match family {
            AF_INET | AF_INET6 => self.cfg.tsi_features & TSI_HIJACK_INET != 0,
            AF_UNIX => self.cfg.tsi_features & TSI_HIJACK_UNIX != 0,
            _ => false,
        };
        if !allowed {
            debug!("vsock0: tsi proxy for family {family} not enabled");
            return;
        }
        let known =
            self.tsi.streams.contains_key(&svm_port) || self.tsi.dgrams.contains_key(&svm_port);
        if !known && self.tsi.streams.len() + self.tsi.dgrams.len() >= MAX_TSI_PROXIES {
            debug!(
                "vsock0: tsi proxy for port {svm_port} refused: {MAX_TSI_PROXIES} proxies already"
            );
            return;
        }
        match type_ {
            SOCK_STREAM => self.tsi_stream_create(svm_port, family),
            SOCK_DGRAM if family != AF_UNIX => self.tsi_dgram_create(svm_port, family),
            _ => debug!("vsock0: tsi proxy type {type_} family {family} unsupported"),
        }
    }

    fn tsi_dgram_create(&mut self, svm_port: u32, family: u16) {
        let bind: SocketAddr = if family == AF_INET6 {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let sock = match UdpSocket::bind(bind).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(s) => s,
            Err(e) => {
                debug!("vsock0: tsi udp socket: {e}");
                return;
            }
        };
        if let Some(old) = self.tsi.dgrams.remove(&svm_port) {
            self.remove_source(old.token, old.fd());
        }
        match self.add_source(
            sock.as_raw_fd(),
            EventSet::IN | EventSet::EDGE_TRIGGERED,
            Source::TsiDgram(svm_port),
        ) {
            Ok(token) => {
                self.tsi.dgrams.insert(
                    svm_port,
                    TsiDgram {
                        sock,
                        token,
                        connected: None,
                        sendto: None,
                    },
                );
            }
            Err(e) => debug!("vsock0: tsi udp poll: {e}"),
        }
    }

    fn parse_req_addr(data: &[u8]) -> Option<(u32, TsiAddr)> {
        let svm_port = le_u32(data, 0)?;
        let len = le_u32(data, 4)? as usize;
        let addr = data.get(8..(8 + TSI_ADDR_LEN).min(data.len()))?;
        Some((svm_port, parse_sockaddr(addr, len)?))
    }

    fn scope_blocks(&self, addr: &TsiAddr) -> bool {
        match (addr, &self.cfg.tsi_scope) {
            (TsiAddr::Inet(a), Some(scope)) => !scope.allows(&a.ip()),
            _ => false,
        }
    }

    fn tsi_connect(&mut self, hdr: &Header, data: &[u8]) {
        let cid = self.cfg.guest_cid;
        let Some((svm_port, addr)) = Self::parse_req_addr(data) else {
            self.push_ctrl(result_reply(cid, TSI_CONNECT, hdr.src_port, -libc::EINVAL));
            return;
        };
        if self.tsi.streams.contains_key(&svm_port) {
            return self.tsi_stream_connect(hdr, svm_port, addr);
        }
        let blocked = self.scope_blocks(&addr);
        let result = match (self.tsi.dgrams.get_mut(&svm_port), addr) {
            (None, _) => -libc::ECONNREFUSED,
            (Some(_), _) if blocked => -SCOPE_BLOCKED_ERRNO,
            (Some(d), TsiAddr::Inet(a)) => match d.sock.connect(a) {
                Ok(()) => {
                    d.connected = Some(a);
                    0
                }
                Err(e) => neg_errno(&e),
            },
            (Some(_), TsiAddr::Unix(_)) => -libc::EAFNOSUPPORT,
        };
        self.push_ctrl(result_reply(cid, TSI_CONNECT, hdr.src_port, result));
    }

    fn tsi_sendto_addr(&mut self, data: &[u8]) {
        let Some((svm_port, TsiAddr::Inet(a))) = Self::parse_req_addr(data) else {
            return;
        };
        if let Some(d) = self.tsi.dgrams.get_mut(&svm_port) {
            d.sendto = Some(a);
        }
    }

    /// Datagram payload from guest proxy port `src_port`: to the last SENDTO_ADDR
    /// destination for TSI_SENDTO_DATA, else to the connected peer.
    fn tsi_dgram_send(&mut self, hdr: &Header, data: &[u8]) {
        let blocked = |m: &Muxer, a: &SocketAddr| {
            m.cfg.tsi_scope.as_ref().is_some_and(|s| !s.allows(&a.ip()))
        };
        let Some(d) = self.tsi.dgrams.get(&hdr.src_port) else {
            debug!("vsock0: datagram from unknown proxy {}", hdr.src_port);
            return;
        };
        let dest = if hdr.dst_port == TSI_SENDTO_DATA || d.connected.is_none() {
            d.sendto
        } else {
            None
        };
        let res = match dest {
            Some(a) if blocked(self, &a) => return,
            Some(a) => d.sock.send_to(data, a),
            None if d.connected.is_some() => d.sock.send(data),
            None => return,
        };
        if let Err(e) = res {
            debug!("vsock0: tsi udp send: {e}");
        }
    }

    /// Reads one datagram of a readable TSI socket for the guest.
    pub(crate) fn tsi_dgram_read(&mut self, svm_port: u32, cap: usize) -> Option<Packet> {
        let d = self.tsi.dgrams.get(&svm_port)?;
        let mut buf = vec![0u8; cap.min(MAX_PKT_DATA)];
        let n = match d.sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    debug!("vsock0: tsi udp recv: {e}");
                }
                return None;
            }
        };
        buf.truncate(n);
        Some(Packet {
            hdr: Header {
                src_cid: HOST_CID,
                dst_cid: self.cfg.guest_cid,
                src_port: svm_port,
                dst_port: svm_port,
                len: n as u32,
                type_: TYPE_DGRAM,
                op: OP_RW,
                buf_alloc: BUF_ALLOC,
                ..Header::default()
            },
            data: buf,
        })
    }
}
