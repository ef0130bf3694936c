//! TSI stream proxies: connect (on a helper thread), listen with the port map, accept,
//! getpeername and release.

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
use crate::vsock::connection::HostStream;
use crate::vsock::muxer::{ConnKey, Muxer, Source};
use crate::vsock::packet::Header;

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

pub enum StreamState {
    Idle,
    Connecting,
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
        self.tsi.streams.insert(
            svm_port,
            TsiStream {
                family,
                state: StreamState::Idle,
            },
        );
    }

    /// TSI_CONNECT for a stream proxy: answers at once on failure, else when the
    /// background connect finishes.
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
        if self.tsi.connecting >= MAX_PENDING_CONNECTS {
            debug!("vsock0: tsi connect refused: {MAX_PENDING_CONNECTS} connects in flight");
            self.push_ctrl(result_reply(cid, TSI_CONNECT, ctl, -libc::EAGAIN));
            return;
        }
        let Some(entry) = self.tsi.streams.get_mut(&svm_port) else {
            self.push_ctrl(result_reply(cid, TSI_CONNECT, ctl, -libc::ECONNREFUSED));
            return;
        };
        entry.state = StreamState::Connecting;
        let tx = self.tsi.connect_tx.clone();
        let evt = match self.tsi.connect_evt.try_clone() {
            Ok(e) => e,
            Err(e) => {
                self.push_ctrl(result_reply(cid, TSI_CONNECT, ctl, neg_errno(&e)));
                return;
            }
        };
        let backend = self.backend.clone();
        let spawned = std::thread::Builder::new()
            .name("vsock0-connect".into())
            .spawn(move || {
                let res = backend.connect(&addr);
                let _ = tx.send((svm_port, ctl, res.map_err(|e| neg_errno(&e))));
                let _ = evt.write(1);
            });
        match spawned {
            Ok(_) => self.tsi.connecting += 1,
            Err(e) => self.push_ctrl(result_reply(cid, TSI_CONNECT, ctl, neg_errno(&e))),
        }
    }

    /// Collects finished background connects and answers the guest.
    pub(crate) fn tsi_connects_done(&mut self) {
        let _ = self.tsi.connect_evt.read();
        while let Ok((svm_port, ctl, res)) = self.tsi.connect_rx.try_recv() {
            self.tsi.connecting = self.tsi.connecting.saturating_sub(1);
            let Some(entry) = self.tsi.streams.get_mut(&svm_port) else {
                continue; // Released meanwhile: the stream just closes.
            };
            let result = match res {
                Ok(s) => {
                    entry.state = StreamState::Connected(s);
                    0
                }
                Err(errno) => {
                    entry.state = StreamState::Idle;
                    errno
                }
            };
            let cid = self.cfg.guest_cid;
            self.push_ctrl(result_reply(cid, TSI_CONNECT, ctl, result));
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
        if let Some(entry) = self.tsi.streams.remove(&svm_port) {
            if let StreamState::Listening {
                listener, token, ..
            } = &entry.state
            {
                let fd = match listener {
                    Listener::Tcp(l) => l.as_raw_fd(),
                    Listener::Unix(l, _) => l.as_raw_fd(),
                };
                self.remove_source(*token, fd);
            }
        }
        if let Some(d) = self.tsi.dgrams.remove(&svm_port) {
            self.remove_source(d.token, d.fd());
        }
    }
}
