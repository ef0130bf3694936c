//! The connection multiplexer: routes guest packets to connections, unix bridges and TSI
//! proxies, and produces the packets the guest receives, all driven by one epoll set.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;

use log::{debug, warn};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::backend::{HostListener, VsockBackend};
use super::connection::{ConnState, Connection, HostRead, HostStream, Outcome};
use super::packet::{Header, Packet, HOST_CID, OP_REQUEST, OP_RST, TYPE_DGRAM, TYPE_STREAM};
use super::tsi::{TsiAddr, TsiState};
use super::{VsockConfig, VsockError};

/// Most control packets (responses, resets) waiting for receive buffers; past it new ones
/// are dropped and logged, so a guest that never posts buffers cannot grow the VMM.
const MAX_CTRL_QUEUE: usize = 4096;
/// Live connections at most (guest- and host-initiated): each buffers up to
/// [`BUF_ALLOC`](super::connection::BUF_ALLOC) of guest data, so this bounds that memory
/// (2048 x 256 KiB = 512 MiB) and the host fds behind them. A request past it gets a RST.
pub const MAX_CONNECTIONS: usize = 2048;
/// First epoll token handed to host fds; lower ones belong to the worker.
pub const FIRST_SOURCE_TOKEN: u64 = 16;
/// Host-side ports of host-initiated connections start here, far from guest-chosen ports.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// (host-side port, guest-side port).
pub type ConnKey = (u32, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Conn(ConnKey),
    /// A `listen = true` bridge: index into `bridges`.
    Bridge(usize),
    /// A TSI stream listener, keyed by the guest's proxy port.
    TsiListener(u32),
    /// A TSI datagram socket, keyed by the guest's proxy port.
    TsiDgram(u32),
    /// A TSI stream's host connect under way, keyed by the guest's proxy port.
    TsiConnect(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ready {
    Conn(ConnKey),
    Dgram(u32),
}

struct Bridge {
    port: u32,
    path: PathBuf,
    listener: Box<dyn HostListener>,
}

/// Routes packets between the guest and the host sockets the backend opens. Its host fds
/// are an interest set of its own (`epoll`), which the device's worker watches as one fd and
/// drains with [`Muxer::process_host_events`]; the muxer runs no loop.
pub struct Muxer {
    pub(super) cfg: VsockConfig,
    pub(super) backend: Arc<dyn VsockBackend>,
    pub(super) epoll: Epoll,
    pub(super) conns: HashMap<ConnKey, Connection>,
    /// [`MAX_CONNECTIONS`]; tests lower it.
    pub(super) max_conns: usize,
    sources: HashMap<u64, Source>,
    next_token: u64,
    ctrl: VecDeque<Packet>,
    ready: VecDeque<Ready>,
    ready_set: HashSet<Ready>,
    next_local_port: u32,
    bridges: Vec<Bridge>,
    pub(super) tsi: TsiState,
}

impl Muxer {
    /// Creates the epoll set and binds the `listen = true` bridge sockets.
    pub fn new(cfg: VsockConfig, backend: Arc<dyn VsockBackend>) -> Result<Self, VsockError> {
        let epoll = Epoll::new().map_err(VsockError::Epoll)?;
        let tsi = TsiState::new();
        let mut mux = Muxer {
            cfg,
            backend,
            epoll,
            conns: HashMap::new(),
            max_conns: MAX_CONNECTIONS,
            sources: HashMap::new(),
            next_token: FIRST_SOURCE_TOKEN,
            ctrl: VecDeque::new(),
            ready: VecDeque::new(),
            ready_set: HashSet::new(),
            next_local_port: FIRST_LOCAL_PORT,
            bridges: Vec::new(),
            tsi,
        };
        for port in mux.cfg.ports.clone() {
            if !port.listen {
                continue;
            }
            let listener = mux
                .backend
                .listen_unix(&port.path)
                .map_err(|e| VsockError::Bind(port.path.clone(), e))?;
            let idx = mux.bridges.len();
            mux.add_source(listener.raw_fd(), EventSet::IN, Source::Bridge(idx))
                .map_err(VsockError::Epoll)?;
            mux.bridges.push(Bridge {
                port: port.port,
                path: port.path,
                listener,
            });
        }
        Ok(mux)
    }

    pub(super) fn add_source(&mut self, fd: RawFd, ev: EventSet, src: Source) -> io::Result<u64> {
        let token = self.next_token;
        self.next_token += 1;
        self.epoll
            .ctl(ControlOperation::Add, fd, EpollEvent::new(ev, token))?;
        self.sources.insert(token, src);
        Ok(token)
    }

    pub(super) fn remove_source(&mut self, token: u64, fd: RawFd) {
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        self.sources.remove(&token);
    }

    /// Queues a packet for the guest outside any connection's data flow.
    pub(super) fn push_ctrl(&mut self, pkt: Packet) {
        if self.ctrl.len() >= MAX_CTRL_QUEUE {
            warn!(
                "vsock0: control queue full, dropping a packet for port {}",
                pkt.hdr.dst_port
            );
            return;
        }
        self.ctrl.push_back(pkt);
    }

    pub(super) fn mark_ready(&mut self, r: Ready) {
        if self.ready_set.insert(r) {
            self.ready.push_back(r);
        }
    }

    /// Whether packets are waiting for guest receive buffers.
    pub fn has_rx(&self) -> bool {
        !self.ctrl.is_empty() || !self.ready.is_empty()
    }

    /// A reset for a packet that matches no connection.
    pub(super) fn rst_for(&self, hdr: &Header) -> Packet {
        Packet {
            hdr: Header {
                src_cid: HOST_CID,
                dst_cid: self.cfg.guest_cid,
                src_port: hdr.dst_port,
                dst_port: hdr.src_port,
                type_: TYPE_STREAM,
                op: OP_RST,
                ..Header::default()
            },
            data: Vec::new(),
        }
    }

    fn alloc_local_port(&mut self, peer_port: u32) -> u32 {
        loop {
            let port = self.next_local_port;
            self.next_local_port = self.next_local_port.wrapping_add(1).max(FIRST_LOCAL_PORT);
            if !self.conns.contains_key(&(port, peer_port)) {
                return port;
            }
        }
    }

    /// Registers a connection over `stream` and arms its epoll interest.
    pub(super) fn insert_conn(
        &mut self,
        key: ConnKey,
        stream: Box<dyn HostStream>,
        state: ConnState,
    ) -> io::Result<()> {
        if self.conns.len() >= self.max_conns && !self.conns.contains_key(&key) {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("{} connections already", self.max_conns),
            ));
        }
        let fd = stream.raw_fd();
        let token = self.add_source(fd, EventSet::empty(), Source::Conn(key))?;
        let conn = Connection::new(self.cfg.guest_cid, key.0, key.1, stream, state, token);
        self.conns.insert(key, conn);
        self.rearm(key);
        Ok(())
    }

    /// Starts a host-initiated connection to guest port `peer_port` (device-side OP_REQUEST).
    pub(super) fn connect_to_guest(
        &mut self,
        peer_port: u32,
        stream: Box<dyn HostStream>,
    ) -> io::Result<ConnKey> {
        let local = self.alloc_local_port(peer_port);
        let key = (local, peer_port);
        self.insert_conn(key, stream, ConnState::AwaitingResponse)?;
        if let Some(conn) = self.conns.get_mut(&key) {
            let req = conn.request();
            self.push_ctrl(req);
        }
        Ok(key)
    }

    pub(super) fn close_conn(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.remove(&key) {
            self.remove_source(conn.token, conn.fd());
            self.ready_set.remove(&Ready::Conn(key));
            self.tsi_conn_closed(key);
        }
    }

    /// Recomputes a connection's epoll interest from its state.
    pub(super) fn rearm(&mut self, key: ConnKey) {
        let in_ready = self.ready_set.contains(&Ready::Conn(key));
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.hup {
            // A hung-up socket is not polled (HUP is level-triggered); reads are driven
            // by credit until they reach EOF.
            if conn.wants_read() && !in_ready {
                self.mark_ready(Ready::Conn(key));
            }
            return;
        }
        let mut ev = EventSet::empty();
        if conn.wants_read() && !in_ready {
            ev |= EventSet::IN;
        }
        if conn.wants_write() {
            ev |= EventSet::OUT;
        }
        if conn.armed != ev.bits() {
            conn.armed = ev.bits();
            let _ = self.epoll.ctl(
                ControlOperation::Modify,
                conn.fd(),
                EpollEvent::new(ev, conn.token),
            );
        }
    }

    fn apply(&mut self, key: ConnKey, out: Outcome) {
        for p in out.replies {
            self.push_ctrl(p);
        }
        if out.established {
            self.tsi_conn_established(key);
        }
        if out.close {
            self.close_conn(key);
        } else {
            self.rearm(key);
        }
    }

    /// Handles one packet the guest transmitted.
    pub fn on_guest_packet(&mut self, pkt: Packet) {
        if pkt.hdr.dst_cid != HOST_CID {
            debug!("vsock0: dropping packet for cid {}", pkt.hdr.dst_cid);
            return;
        }
        match pkt.hdr.type_ {
            TYPE_DGRAM => self.on_guest_dgram(pkt),
            TYPE_STREAM => self.on_guest_stream(pkt),
            t => debug!("vsock0: dropping packet of type {t}"),
        }
    }

    fn on_guest_stream(&mut self, pkt: Packet) {
        let key = (pkt.hdr.dst_port, pkt.hdr.src_port);
        if let Some(conn) = self.conns.get_mut(&key) {
            if pkt.hdr.op == OP_REQUEST {
                // A second request on a live connection: the guest lost track; reset both.
                let rst = self.rst_for(&pkt.hdr);
                self.push_ctrl(rst);
                self.close_conn(key);
                return;
            }
            let out = conn.on_guest(pkt);
            self.apply(key, out);
            return;
        }
        match pkt.hdr.op {
            OP_REQUEST => self.on_guest_request(pkt),
            OP_RST => {}
            _ => {
                let rst = self.rst_for(&pkt.hdr);
                self.push_ctrl(rst);
            }
        }
    }

    /// A guest connect: TSI proxy port, a unix bridge, or a reset.
    fn on_guest_request(&mut self, pkt: Packet) {
        let key = (pkt.hdr.dst_port, pkt.hdr.src_port);
        if self.conns.len() >= self.max_conns {
            // Refused before any host socket is opened: a guest past the cap must not make
            // the VMM connect to the host service only to hang up on it.
            debug!(
                "vsock0: {} connections already, refusing port {}",
                self.max_conns, key.0
            );
            let rst = self.rst_for(&pkt.hdr);
            self.push_ctrl(rst);
            return;
        }
        let stream: Option<Box<dyn HostStream>> = if let Some(s) = self.tsi_take_stream(&pkt.hdr) {
            Some(s)
        } else if let Some(port) = self
            .cfg
            .ports
            .iter()
            .find(|p| p.port == pkt.hdr.dst_port && !p.listen)
        {
            match self.backend.connect(&TsiAddr::Unix(port.path.clone())) {
                Ok(s) => Some(s),
                Err(e) => {
                    debug!("vsock0: port {} -> {}: {e}", port.port, port.path.display());
                    None
                }
            }
        } else {
            None
        };
        let Some(stream) = stream else {
            let rst = self.rst_for(&pkt.hdr);
            self.push_ctrl(rst);
            return;
        };
        if let Err(e) = self.insert_conn(key, stream, ConnState::Established) {
            warn!("vsock0: cannot poll a new connection: {e}");
            let rst = self.rst_for(&pkt.hdr);
            self.push_ctrl(rst);
            return;
        }
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.note_peer_credit(&pkt.hdr);
            let resp = conn.packet(super::packet::OP_RESPONSE, 0, Vec::new());
            self.push_ctrl(resp);
            self.rearm(key);
        }
    }

    /// Handles one epoll event on a host fd.
    pub fn on_host_event(&mut self, token: u64, ev: EventSet) {
        let Some(src) = self.sources.get(&token).copied() else {
            return;
        };
        match src {
            Source::Conn(key) => self.on_conn_event(key, ev),
            Source::Bridge(idx) => self.on_bridge_accept(idx),
            Source::TsiListener(port) => self.on_tsi_accept(port),
            Source::TsiDgram(port) => self.mark_ready(Ready::Dgram(port)),
            Source::TsiConnect(port) => self.tsi_connect_ready(port),
        }
    }

    fn on_conn_event(&mut self, key: ConnKey, ev: EventSet) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if ev.intersects(EventSet::HANG_UP | EventSet::ERROR) && !conn.hup {
            conn.hup = true;
            conn.armed = 0;
            let (token, fd) = (conn.token, conn.fd());
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
            // Keep the token mapping so close_conn stays uniform.
            let _ = token;
        }
        if ev.contains(EventSet::OUT) || conn.hup {
            let out = conn.on_writable();
            if out.close || !out.replies.is_empty() {
                self.apply(key, out);
                if !self.conns.contains_key(&key) {
                    return;
                }
            }
        }
        if ev.contains(EventSet::IN) || ev.intersects(EventSet::HANG_UP | EventSet::ERROR) {
            self.mark_ready(Ready::Conn(key));
        }
        self.rearm(key);
    }

    fn on_bridge_accept(&mut self, idx: usize) {
        loop {
            let Some(bridge) = self.bridges.get_mut(idx) else {
                return;
            };
            let port = bridge.port;
            match bridge.listener.accept() {
                Ok(Some(stream)) => {
                    if let Err(e) = self.connect_to_guest(port, stream) {
                        warn!("vsock0: bridge {port}: cannot poll connection: {e}");
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    debug!("vsock0: bridge {} accept: {e}", bridge.path.display());
                    return;
                }
            }
        }
    }

    /// Produces the next packet for a guest receive buffer holding `cap` payload bytes.
    pub fn next_rx(&mut self, cap: usize) -> Option<Packet> {
        if let Some(p) = self.ctrl.pop_front() {
            return Some(p);
        }
        while let Some(r) = self.ready.pop_front() {
            self.ready_set.remove(&r);
            match r {
                Ready::Conn(key) => {
                    let Some(conn) = self.conns.get_mut(&key) else {
                        continue;
                    };
                    match conn.read_host(cap) {
                        HostRead::Packet(p) => {
                            // More may be readable: keep it in the rotation.
                            if p.hdr.op == super::packet::OP_RW {
                                self.mark_ready(r);
                            }
                            self.rearm(key);
                            return Some(p);
                        }
                        HostRead::Idle => self.rearm(key),
                        HostRead::Closed(p) => {
                            self.close_conn(key);
                            return Some(p);
                        }
                    }
                }
                Ready::Dgram(port) => {
                    if let Some(p) = self.tsi_dgram_read(port, cap) {
                        self.mark_ready(r);
                        return Some(p);
                    }
                }
            }
        }
        None
    }

    /// Gives a packet back after the guest's buffer turned out unusable (too small).
    pub fn unread_ctrl(&mut self, pkt: Packet) {
        self.ctrl.push_front(pkt);
    }

    /// The fd of the muxer's interest set: readable when a host socket has an event.
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Handles the host socket events that are ready now (never waits); at most `max`
    /// per call, the rest stay ready for the next one.
    pub fn process_host_events(&mut self, max: usize) {
        let mut events = [EpollEvent::default(); 64];
        let max = max.min(events.len());
        let n = match self.epoll.wait(0, &mut events[..max]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => {
                warn!("vsock0: cannot read the host socket events: {e}");
                0
            }
        };
        for ev in &events[..n] {
            self.on_host_event(ev.data(), ev.event_set());
        }
    }
}
