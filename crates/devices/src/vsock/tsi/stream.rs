//! TSI stream proxies: connect (non-blocking, finished on the socket's writability), listen
//! with the port map, accept, getpeername and release.

use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;

use log::debug;
use vmm_sys_util::epoll::EventSet;

use super::{
    ctrl_reply, encode_sockaddr, le_u32, neg_errno, parse_sockaddr, result_reply, TsiAddr, AF_UNIX,
    MAX_PENDING_CONNECTS, SCOPE_BLOCKED_ERRNO, TSI_ACCEPT, TSI_ADDR_LEN, TSI_CONNECT, TSI_GETNAME,
    TSI_LISTEN, TSI_PROXY_PORT,
};
use crate::vsock::backend::Connecting;
use crate::vsock::connection::HostStream;
use crate::vsock::muxer::{ConnKey, Muxer, Source};
use crate::vsock::packet::Header;

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

pub enum StreamState {
    Idle,
    /// A host connect under way: its stream is polled for writability under `token`, and
    /// the answer goes to the guest's control port `ctl`.
    Connecting {
        stream: Box<dyn HostStream>,
        token: u64,
        ctl: u32,
    },
    /// Connected on the host; waits for the guest's OP_REQUEST to port 620.
    Connected(Box<dyn HostStream>),
    Listening {
        listener: Listener,
        token: u64,
        vm_port: u32,
        /// Established connections the guest has not asked for with TSI_ACCEPT yet.
        pending: u32,
        /// Control port of a blocking TSI_ACCEPT waiting for a connection.
        waiting: Option<u32>,
    },
    /// The stream now belongs to a vsock connection.
    Attached,
}

pub struct TsiStream {
    /// The guest socket's family (AF_INET, AF_INET6, AF_UNIX), kept for diagnostics.
    #[allow(dead_code)]
    pub family: u16,
    pub state: StreamState,
}

impl Drop for TsiStream {
    fn drop(&mut self) {
        if let StreamState::Listening {
            listener: Listener::Unix(_, path),
            ..
        } = &self.state
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Muxer {
    pub(crate) fn tsi_stream_create(&mut self, svm_port: u32, family: u16) {
        // A guest that reuses a proxy port it never released: the old proxy's sockets go.
        self.tsi_stream_drop(svm_port);
        self.tsi.streams.insert(
            svm_port,
            TsiStream {
                family,
                state: StreamState::Idle,
            },
        );
    }

    /// TSI_CONNECT for a stream proxy: answers at once, unless the host connect is still
    /// under way; then when it ends ([`Muxer::tsi_connect_ready`]).
    pub(crate) fn tsi_stream_connect(&mut self, hdr: &Header, svm_port: u32, addr: TsiAddr) {
        let cid = self.cfg.guest_cid;
        let ctl = hdr.src_port;
        if let TsiAddr::Inet(a) = &addr {
            if let Some(scope) = &self.cfg.tsi_scope {
                if !scope.allows(&a.ip()) {
                    debug!("vsock0: tsi connect to {a} blocked by scope");
                    self.push_ctrl(result_reply(cid, TSI_CONNECT, ctl, -SCOPE_BLOCKED_ERRNO));
                    return;
                }
            }
        }
        match self.tsi.streams.get(&svm_port).map(|e| &e.state) {
            None => {
                self.push_ctrl(result_reply(cid, TSI_CONNECT, ctl, -libc::ECONNREFUSED));
                return;
            }
            // As Linux answers a second connect(2) on one socket.
            Some(StreamState::Connecting { .. }) => {
                self.push_ctrl(result_reply(cid, TSI_CONNECT, ctl, -libc::EALREADY));
                return;
            }
            Some(StreamState::Listening { .. }) => {
                self.push_ctrl(result_reply(cid, TSI_CONNECT, ctl, -libc::EINVAL));
                return;
            }
            Some(StreamState::Connected(_) | StreamState::Attached) => {
                self.push_ctrl(result_reply(cid, TSI_CONNECT, ctl, -libc::EISCONN));
                return;
            }
            Some(StreamState::Idle) => {}
        }
        if self.tsi.connecting >= MAX_PENDING_CONNECTS {
            debug!("vsock0: tsi connect refused: {MAX_PENDING_CONNECTS} connects in flight");
            self.push_ctrl(result_reply(cid, TSI_CONNECT, ctl, -libc::EAGAIN));
            return;
        }
        let state = match self.backend.connect_start(&addr) {
            Ok(Connecting::Done(stream)) => {
                self.push_ctrl(result_reply(cid, TSI_CONNECT, ctl, 0));
                StreamState::Connected(stream)
            }
            Ok(Connecting::InProgress(stream)) => {
                match self.add_source(stream.raw_fd(), EventSet::OUT, Source::TsiConnect(svm_port))
                {
                    Ok(token) => {
                        self.tsi.connecting += 1;
                        StreamState::Connecting { stream, token, ctl }
                    }
                    Err(e) => {
                        self.push_ctrl(result_reply(cid, TSI_CONNECT, ctl, neg_errno(&e)));
                        StreamState::Idle
                    }
                }
            }
            Err(e) => {
                debug!("vsock0: tsi connect to {addr:?}: {e}");
                self.push_ctrl(result_reply(cid, TSI_CONNECT, ctl, neg_errno(&e)));
                StreamState::Idle
            }
        };
        if let Some(entry) = self.tsi.streams.get_mut(&svm_port) {
            entry.state = state;
        }
    }

    /// A connect under way ended (its stream became writable, or failed): answer the guest.
    pub(crate) fn tsi_connect_ready(&mut self, svm_port: u32) {
        let Some(entry) = self.tsi.streams.get_mut(&svm_port) else {
            return;
        };
        let StreamState::Connecting { stream, token, ctl } =
            std::mem::replace(&mut entry.state, StreamState::Idle)
        else {
            return;
        };
        let result = match stream.take_error() {
            Ok(None) => 0,
            Ok(Some(e)) | Err(e) => neg_errno(&e),
        };
        self.remove_source(token, stream.raw_fd());
        self.tsi.connecting = self.tsi.connecting.saturating_sub(1);
        if result == 0 {
            if let Some(entry) = self.tsi.streams.get_mut(&svm_port) {
                entry.state = StreamState::Connected(stream);
            }
        }
        let cid = self.cfg.guest_cid;
        self.push_ctrl(result_reply(cid, TSI_CONNECT, ctl, result));
    }

    /// Drops the stream proxy `svm_port` with what it holds in the muxer's interest set.
    fn tsi_stream_drop(&mut self, svm_port: u32) {
        let Some(entry) = self.tsi.streams.remove(&svm_port) else {
            return;
        };
        match &entry.state {
            StreamState::Listening {
                listener, token, ..
            } => {
                let fd = match listener {
                    Listener::Tcp(l) => l.as_raw_fd(),
                    Listener::Unix(l, _) => l.as_raw_fd(),
                };
                self.remove_source(*token, fd);
            }
            StreamState::Connecting { stream, token, .. } => {
                self.remove_source(*token, stream.raw_fd());
                self.tsi.connecting = self.tsi.connecting.saturating_sub(1);
            }
            _ => {}
        }
    }

    /// The guest's OP_REQUEST to port 620 from a connected proxy takes its host stream.
    pub(crate) fn tsi_take_stream(&mut self, hdr: &Header) -> Option<Box<dyn HostStream>> {
        if hdr.dst_port != TSI_PROXY_PORT {
            return None;
        }
        let entry = self.tsi.streams.get_mut(&hdr.src_port)?;
        match std::mem::replace(&mut entry.state, StreamState::Attached) {
            StreamState::Connected(s) => Some(s),
            other => {
                entry.state = other;
                None
            }
        }
    }

    /// TSI_LISTEN: bind on the host per the port map and listen.
    pub(crate) fn tsi_listen(&mut self, hdr: &Header, data: &[u8]) {
        let cid = self.cfg.guest_cid;
        let ctl = hdr.src_port;
        let (Some(svm_port), Some(vm_port), Some(backlog), Some(addr_len)) = (
            le_u32(data, 0),
            le_u32(data, 4),
            le_u32(data, 8),
            le_u32(data, 12),
        ) else {
            return;
        };
        let addr = data
            .get(16..16 + TSI_ADDR_LEN.min(data.len().saturating_sub(16)))
            .and_then(|b| parse_sockaddr(b, addr_len as usize));
        let result = match (self.tsi.streams.contains_key(&svm_port), addr) {
            (false, _) => -libc::EPERM,
            (true, None) => -libc::EINVAL,
            (true, Some(addr)) => match self.tsi_bind_listener(svm_port, vm_port, addr, backlog) {
                Ok(()) => 0,
                Err(errno) => errno,
            },
        };
        self.push_ctrl(result_reply(cid, TSI_LISTEN, ctl, result));
    }

    fn tsi_bind_listener(
        &mut self,
        svm_port: u32,
        vm_port: u32,
        addr: TsiAddr,
        _backlog: u32,
    ) -> Result<(), i32> {
        if let Some(TsiStream {
            state: StreamState::Listening { .. },
            ..
        }) = self.tsi.streams.get(&svm_port)
        {
            return Ok(());
        }
        let listener = match addr {
            TsiAddr::Inet(mut a) => {
                if let Some(scope) = &self.cfg.tsi_scope {
                    if !scope.allows_listen(&a.ip()) {
                        debug!("vsock0: tsi listen on {a} blocked by scope");
                        return Err(-SCOPE_BLOCKED_ERRNO);
                    }
                    a.set_ip(scope.host_listen_addr(a.ip()));
                }
                // None exposes every guest listener on the same host port; a map exposes
                // only its guest ports, and EPERM makes the guest listen locally instead.
                if let Some(map) = &self.cfg.port_map {
                    match map.iter().find(|m| m.guest_port == a.port()) {
                        Some(m) => a.set_port(m.host_port),
                        None => return Err(-libc::EPERM),
                    }
                }
                let l = TcpListener::bind(a).map_err(|e| neg_errno(&e))?;
                l.set_nonblocking(true).map_err(|e| neg_errno(&e))?;
                Listener::Tcp(l)
            }
            TsiAddr::Unix(p) => {
                let _ = std::fs::remove_file(&p);
                let l = UnixListener::bind(&p).map_err(|e| neg_errno(&e))?;
                l.set_nonblocking(true).map_err(|e| neg_errno(&e))?;
                Listener::Unix(l, p)
            }
        };
        let fd = match &listener {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        };
        let token = self
            .add_source(fd, EventSet::IN, Source::TsiListener(svm_port))
            .map_err(|e| neg_errno(&e))?;
        if let Some(entry) = self.tsi.streams.get_mut(&svm_port) {
            entry.state = StreamState::Listening {
                listener,
                token,
                vm_port,
                pending: 0,
                waiting: None,
            };
        }
        Ok(())
    }

    /// A host client reached a TSI listener: connect it to the guest's vsock listener.
    pub(crate) fn on_tsi_accept(&mut self, svm_port: u32) {
        loop {
            let Some(TsiStream {
                state:
                    StreamState::Listening {
                        listener, vm_port, ..
                    },
                ..
            }) = self.tsi.streams.get(&svm_port)
            else {
                return;
            };
            let vm_port = *vm_port;
            let accepted: io::Result<Box<dyn HostStream>> = match listener {
                Listener::Tcp(l) => l
                    .accept()
                    .and_then(|(s, _)| s.set_nonblocking(true).map(|()| s))
                    .map(|s| Box::new(s) as Box<dyn HostStream>),
                Listener::Unix(l, _) => l
                    .accept()
                    .and_then(|(s, _)| s.set_nonblocking(true).map(|()| s))
                    .map(|s| Box::new(s) as Box<dyn HostStream>),
            };
            match accepted {
                Ok(s) => match self.connect_to_guest(vm_port, s) {
                    Ok(key) => {
                        self.tsi.accepted.insert(key, svm_port);
                    }
                    Err(e) => debug!("vsock0: tsi accept: {e}"),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!("vsock0: tsi accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// The guest acknowledged a host-initiated connection: complete a TSI accept.
    pub(crate) fn tsi_conn_established(&mut self, key: ConnKey) {
        let Some(svm_port) = self.tsi.accepted.get(&key).copied() else {
            return;
        };
        let cid = self.cfg.guest_cid;
        let mut reply = None;
        if let Some(TsiStream {
            state: StreamState::Listening {
                pending, waiting, ..
            },
            ..
        }) = self.tsi.streams.get_mut(&svm_port)
        {
            match waiting.take() {
                Some(ctl) => reply = Some(result_reply(cid, TSI_ACCEPT, ctl, 0)),
                None => *pending += 1,
            }
        }
        if let Some(r) = reply {
            self.push_ctrl(r);
        }
    }

    pub(crate) fn tsi_conn_closed(&mut self, key: ConnKey) {
        self.tsi.accepted.remove(&key);
    }

    /// TSI_ACCEPT: answers when an established connection is pending (or EAGAIN for a
    /// non-blocking accept); otherwise the answer waits for the next connection.
    pub(crate) fn tsi_accept(&mut self, hdr: &Header, data: &[u8]) {
        let cid = self.cfg.guest_cid;
        let ctl = hdr.src_port;
        let (Some(svm_port), Some(flags)) = (le_u32(data, 0), le_u32(data, 4)) else {
            return;
        };
        let result = match self.tsi.streams.get_mut(&svm_port) {
            Some(TsiStream {
                state:
                    StreamState::Listening {
                        pending, waiting, ..
                    },
                ..
            }) => {
                if *pending > 0 {
                    *pending -= 1;
                    Some(0)
                } else if flags & libc::O_NONBLOCK as u32 != 0 {
                    Some(-libc::EAGAIN)
                } else {
                    *waiting = Some(ctl);
                    None
                }
            }
            _ => Some(-libc::EINVAL),
        };
        if let Some(r) = result {
            self.push_ctrl(result_reply(cid, TSI_ACCEPT, ctl, r));
        }
    }

    /// TSI_GETNAME (peer): the remote address of the host socket behind a connection.
    pub(crate) fn tsi_getname(&mut self, hdr: &Header, data: &[u8]) {
        let cid = self.cfg.guest_cid;
        let (Some(svm_port), Some(peer_port)) = (le_u32(data, 0), le_u32(data, 4)) else {
            return;
        };
        let conn = self.conns.get(&(peer_port, svm_port));
        let (result, addr): (i32, Vec<u8>) = match conn {
            Some(c) => match c.peer_inet() {
                Some(a) => (0, encode_sockaddr(&a)),
                None => (0, AF_UNIX.to_le_bytes().to_vec()),
            },
            None => match self.tsi.dgrams.get(&svm_port).and_then(|d| d.peer()) {
                Some(a) => (0, encode_sockaddr(&a)),
                None => (-libc::ENOTCONN, Vec::new()),
            },
        };
        let mut rsp = vec![0u8; 8 + TSI_ADDR_LEN];
        rsp[0..4].copy_from_slice(&result.to_le_bytes());
        rsp[4..8].copy_from_slice(&(addr.len() as u32).to_le_bytes());
        rsp[8..8 + addr.len()].copy_from_slice(&addr);
        self.push_ctrl(ctrl_reply(cid, TSI_GETNAME, hdr.src_port, rsp));
    }

    /// TSI_PROXY_RELEASE: the guest socket closed; drop its proxy (and host listener).
    pub(crate) fn tsi_release(&mut self, data: &[u8]) {
        let Some(svm_port) = le_u32(data, 0) else {
            return;
        };
        self.tsi_stream_drop(svm_port);
        if let Some(d) = self.tsi.dgrams.remove(&svm_port) {
            self.remove_source(d.token, d.fd());
        }
    }
}
