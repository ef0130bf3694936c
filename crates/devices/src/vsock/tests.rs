//! vsock tests: the muxer driven directly (guest packets in, guest packets out, host
//! sockets real), plus the queue path with mock queues and the device lifecycle.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::epoll::EpollEvent;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::connection::{ConnState, Connection, HostStream, BUF_ALLOC};
use super::muxer::{Muxer, FIRST_SOURCE_TOKEN};
use super::packet::*;
use super::tsi::*;
use super::worker::Queues;
use super::*;
use crate::virtio::{ActivationContext, ActiveQueue, VirtioDevice};
use crate::GuestMemory;

const GUEST: u64 = 3;

fn tempdir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "vsock-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mux(cfg: VsockConfig) -> Muxer {
    mux_with(cfg, Arc::new(HostBackend))
}

fn mux_with(cfg: VsockConfig, backend: Arc<dyn VsockBackend>) -> Muxer {
    Muxer::new(cfg, backend).unwrap()
}

/// Handles host socket events for up to `ms`.
fn pump(m: &mut Muxer, ms: i32) {
    let mut events = [EpollEvent::default(); 16];
    let n = m.epoll.wait(ms, &mut events).unwrap();
    for ev in &events[..n] {
        if ev.data() >= FIRST_SOURCE_TOKEN {
            m.on_host_event(ev.data(), ev.event_set());
        }
    }
}

/// Pumps until the muxer yields a packet (4 KiB receive buffers, like Linux's).
fn next(m: &mut Muxer) -> Packet {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(p) = m.next_rx(4096) {
            return p;
        }
        assert!(Instant::now() < deadline, "no packet for the guest");
        pump(m, 50);
    }
}

fn stream_pkt(src: u32, dst: u32, op: u16, data: &[u8]) -> Packet {
    Packet {
        hdr: Header {
            src_cid: GUEST,
            dst_cid: HOST_CID,
            src_port: src,
            dst_port: dst,
            len: data.len() as u32,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 64 * 1024,
            fwd_cnt: 0,
        },
        data: data.to_vec(),
    }
}

fn dgram_pkt(src: u32, dst: u32, data: Vec<u8>) -> Packet {
    let mut p = stream_pkt(src, dst, OP_RW, &data);
    p.hdr.type_ = TYPE_DGRAM;
    p
}

fn read_exact_timeout(s: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

fn bridge_cfg(port: u32, path: PathBuf, listen: bool) -> VsockConfig {
    VsockConfig {
        ports: vec![VsockPort { port, path, listen }],
        ..VsockConfig::default()
    }
}

/// A guest connection to a `listen = false` bridge; returns the host end.
fn connect_bridge(m: &mut Muxer, listener: &UnixListener) -> UnixStream {
    m.on_guest_packet(stream_pkt(5000, 1234, OP_REQUEST, &[]));
    let resp = next(m);
    assert_eq!(resp.hdr.op, OP_RESPONSE);
    assert_eq!((resp.hdr.src_port, resp.hdr.dst_port), (1234, 5000));
    assert_eq!(resp.hdr.dst_cid, GUEST);
    assert_eq!(resp.hdr.buf_alloc, BUF_ALLOC);
    let (host, _) = listener.accept().unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    host
}

#[test]
fn bridge_guest_connect_data_both_ways_then_rst_on_close() {
    let dir = tempdir("b");
    let path = dir.join("s.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let mut m = mux(bridge_cfg(1234, path, false));
    let mut host = connect_bridge(&mut m, &listener);

    m.on_guest_packet(stream_pkt(5000, 1234, OP_RW, b"hello"));
    assert_eq!(read_exact_timeout(&mut host, 5), b"hello");

    host.write_all(b"world").unwrap();
    let p = next(&mut m);
    assert_eq!((p.hdr.op, p.data.as_slice()), (OP_RW, &b"world"[..]));
    assert_eq!((p.hdr.src_port, p.hdr.dst_port), (1234, 5000));

    let mut shut = stream_pkt(5000, 1234, OP_SHUTDOWN, &[]);
    shut.hdr.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    m.on_guest_packet(shut);
    assert_eq!(next(&mut m).hdr.op, OP_RST);
    assert!(m.conns.is_empty());
    let mut buf = [0u8; 1];
    assert_eq!(host.read(&mut buf).unwrap(), 0, "host end sees the close");
}

#[test]
fn bridge_host_close_sends_shutdown_then_rst_frees_entry() {
    let dir = tempdir("c");
    let path = dir.join("s.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let mut m = mux(bridge_cfg(1234, path, false));
    let host = connect_bridge(&mut m, &listener);
    drop(host);
    let p = next(&mut m);
    assert_eq!((p.hdr.op, p.hdr.flags), (OP_SHUTDOWN, SHUTDOWN_SEND));
    m.on_guest_packet(stream_pkt(5000, 1234, OP_RST, &[]));
    assert!(m.conns.is_empty());
}

#[test]
fn request_to_unknown_port_gets_rst() {
    let mut m = mux(VsockConfig::default());
    m.on_guest_packet(stream_pkt(5000, 4321, OP_REQUEST, &[]));
    let p = next(&mut m);
    assert_eq!(p.hdr.op, OP_RST);
    assert_eq!((p.hdr.src_port, p.hdr.dst_port), (4321, 5000));
    assert!(m.conns.is_empty());
}

#[test]
fn data_on_unknown_connection_gets_rst() {
    let mut m = mux(VsockConfig::default());
    m.on_guest_packet(stream_pkt(5000, 4321, OP_RW, b"x"));
    assert_eq!(next(&mut m).hdr.op, OP_RST);
}

#[test]
fn credit_zero_stops_host_reads_until_credit_update() {
    let dir = tempdir("cr");
    let path = dir.join("s.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let mut m = mux(bridge_cfg(1234, path, false));
    let mut req = stream_pkt(5000, 1234, OP_REQUEST, &[]);
    req.hdr.buf_alloc = 4;
    m.on_guest_packet(req);
    assert_eq!(next(&mut m).hdr.op, OP_RESPONSE);
    let (mut host, _) = listener.accept().unwrap();

    host.write_all(b"0123456789").unwrap();
    let p = next(&mut m);
    assert_eq!(p.data, b"0123");
    // Out of credit: at most one credit request, then nothing, however long we wait.
    let mut extra = Vec::new();
    for _ in 0..5 {
        pump(&mut m, 20);
        while let Some(p) = m.next_rx(4096) {
            extra.push(p);
        }
    }
    assert!(extra
        .iter()
        .all(|p| p.hdr.op == OP_CREDIT_REQUEST && p.data.is_empty()));
    assert!(extra.len() <= 1);

    let mut upd = stream_pkt(5000, 1234, OP_CREDIT_UPDATE, &[]);
    upd.hdr.buf_alloc = 4;
    upd.hdr.fwd_cnt = 4;
    m.on_guest_packet(upd);
    assert_eq!(next(&mut m).data, b"4567");
}

#[test]
fn guest_overrunning_credit_gets_rst() {
    let dir = tempdir("ov");
    let path = dir.join("s.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let mut m = mux(bridge_cfg(1234, path, false));
    let _host = connect_bridge(&mut m, &listener);
    // The host never reads: the socket buffer fills, then our 256 KiB, then RST.
    let chunk = vec![7u8; 64 * 1024];
    let mut rst = false;
    for _ in 0..64 {
        m.on_guest_packet(stream_pkt(5000, 1234, OP_RW, &chunk));
        while let Some(p) = m.next_rx(4096) {
            rst |= p.hdr.op == OP_RST;
        }
        if rst {
            break;
        }
    }
    assert!(rst, "a guest ignoring credit is reset");
    assert!(m.conns.is_empty());
}

/// A host socket that never takes a byte: everything the guest sends stays in `tx_buf`.
struct StuckStream(UnixStream);

impl Read for StuckStream {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::WouldBlock.into())
    }
}

impl Write for StuckStream {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::WouldBlock.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl HostStream for StuckStream {
    fn raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
    fn shutdown_write(&self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn connection_buffer_of_full_credit_in_odd_packets_allocates_at_most_buf_alloc() {
    let (a, _b) = UnixStream::pair().unwrap();
    let mut conn = Connection::new(
        GUEST,
        1234,
        5000,
        Box::new(StuckStream(a)),
        ConnState::Established,
        FIRST_SOURCE_TOKEN,
    );
    // 4 KiB first, then 64 KiB packets, then the rest of the credit: doubling from 4 KiB
    // used to reach 272 KiB of allocation for 256 KiB of data.
    let mut sizes = vec![4096usize, 65536, 65536, 65536];
    sizes.push(BUF_ALLOC as usize - sizes.iter().sum::<usize>());
    for len in sizes {
        let out = conn.on_guest(stream_pkt(5000, 1234, OP_RW, &vec![1u8; len]));
        assert!(
            !out.close,
            "data within credit must not reset the connection"
        );
        assert!(
            conn.tx_buf_capacity() <= BUF_ALLOC as usize,
            "tx_buf allocated {} bytes, past the {BUF_ALLOC} of credit",
            conn.tx_buf_capacity()
        );
    }
    let out = conn.on_guest(stream_pkt(5000, 1234, OP_RW, &[1u8]));
    assert!(out.close, "one byte past the credit resets");
    assert_eq!(out.replies.last().map(|p| p.hdr.op), Some(OP_RST));
}

#[test]
fn bridge_listen_host_client_reaches_guest_listener() {
    let dir = tempdir("l");
    let path = dir.join("l.sock");
    let mut m = mux(bridge_cfg(5555, path.clone(), true));
    let mut client = UnixStream::connect(&path).unwrap();
    let req = next(&mut m);
    assert_eq!((req.hdr.op, req.hdr.dst_port), (OP_REQUEST, 5555));
    let local = req.hdr.src_port;
    let mut resp = stream_pkt(5555, local, OP_RESPONSE, &[]);
    resp.hdr.buf_alloc = 1 << 16;
    m.on_guest_packet(resp);

    client.write_all(b"ping").unwrap();
    let p = next(&mut m);
    assert_eq!((p.hdr.op, p.data.as_slice()), (OP_RW, &b"ping"[..]));
    m.on_guest_packet(stream_pkt(5555, local, OP_RW, b"pong"));
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(read_exact_timeout(&mut client, 4), b"pong");
    drop(m);
    assert!(
        !path.exists(),
        "the bridge socket is removed with the device"
    );
}

// ---- the muxer on a fake backend: no sockets on the host ----

/// A host without sockets: each connect hands the muxer one end of a socketpair and keeps
/// the other for the test; a listener is an eventfd the test makes readable when it queues
/// a client.
#[derive(Default)]
struct FakeBackend {
    /// Where connects went, and the test's ends, in order.
    connected: Mutex<Vec<(String, UnixStream)>>,
    /// Connects fail with this errno when set.
    refuse: Option<i32>,
    listeners: Mutex<Vec<(PathBuf, FakeClients)>>,
}

/// The clients waiting at a fake listener, and its readiness eventfd.
#[derive(Clone)]
struct FakeClients {
    waiting: Arc<Mutex<VecDeque<UnixStream>>>,
    ready: Arc<EventFd>,
}

impl FakeClients {
    /// A host client connects: returns the client's end.
    fn connect(&self) -> UnixStream {
        let (ours, theirs) = UnixStream::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        self.waiting.lock().unwrap().push_back(theirs);
        self.ready.write(1).unwrap();
        ours.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        ours
    }
}

struct FakeListener(FakeClients);

impl HostListener for FakeListener {
    fn raw_fd(&self) -> std::os::fd::RawFd {
        self.0.ready.as_raw_fd()
    }
    fn accept(&mut self) -> std::io::Result<Option<Box<dyn HostStream>>> {
        match self.0.waiting.lock().unwrap().pop_front() {
            Some(s) => Ok(Some(Box::new(s))),
            None => {
                let _ = self.0.ready.read();
                Ok(None)
            }
        }
    }
}

impl VsockBackend for FakeBackend {
    fn connect(&self, addr: &TsiAddr) -> std::io::Result<Box<dyn HostStream>> {
        if let Some(errno) = self.refuse {
            return Err(std::io::Error::from_raw_os_error(errno));
        }
        let (ours, theirs) = UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        theirs.set_read_timeout(Some(Duration::from_secs(5)))?;
        let name = match addr {
            TsiAddr::Inet(a) => a.to_string(),
            TsiAddr::Unix(p) => p.display().to_string(),
        };
        self.connected.lock().unwrap().push((name, theirs));
        Ok(Box::new(ours))
    }

    fn listen_unix(&self, path: &std::path::Path) -> std::io::Result<Box<dyn HostListener>> {
        let clients = FakeClients {
            waiting: Arc::default(),
            ready: Arc::new(EventFd::new(EFD_NONBLOCK)?),
        };
        self.listeners
            .lock()
            .unwrap()
            .push((path.to_owned(), clients.clone()));
        Ok(Box::new(FakeListener(clients)))
    }
}

impl FakeBackend {
    fn take_peer(&self) -> (String, UnixStream) {
        self.connected.lock().unwrap().remove(0)
    }
}

#[test]
fn fake_backend_guest_bridge_connect_carries_data_both_ways() {
    let fake = Arc::new(FakeBackend::default());
    let path = PathBuf::from("/nonexistent/bridge.sock");
    let mut m = mux_with(bridge_cfg(1234, path, false), fake.clone());

    m.on_guest_packet(stream_pkt(5000, 1234, OP_REQUEST, &[]));
    let resp = next(&mut m);
    let (target, mut host) = fake.take_peer();
    m.on_guest_packet(stream_pkt(5000, 1234, OP_RW, b"to host"));
    let to_host = read_exact_timeout(&mut host, 7);
    host.write_all(b"to guest").unwrap();
    let to_guest = next(&mut m);

    assert_eq!(resp.hdr.op, OP_RESPONSE);
    assert_eq!(target, "/nonexistent/bridge.sock");
    assert_eq!(to_host, b"to host");
    assert_eq!(
        (to_guest.hdr.op, to_guest.data.as_slice()),
        (OP_RW, &b"to guest"[..])
    );
    assert_eq!((to_guest.hdr.src_port, to_guest.hdr.dst_port), (1234, 5000));
}

#[test]
fn guest_connect_past_the_connection_cap_gets_rst_without_a_host_connect() {
    let fake = Arc::new(FakeBackend::default());
    let mut m = mux_with(bridge_cfg(1234, "/x.sock".into(), false), fake.clone());
    m.max_conns = 2;

    let mut ops = Vec::new();
    for src in [5000, 5001, 5002] {
        m.on_guest_packet(stream_pkt(src, 1234, OP_REQUEST, &[]));
        ops.push(next(&mut m).hdr.op);
    }
    let host_connects = fake.connected.lock().unwrap().len();
    m.on_guest_packet(stream_pkt(5000, 1234, OP_RST, &[]));
    m.on_guest_packet(stream_pkt(5003, 1234, OP_REQUEST, &[]));
    let after_close = next(&mut m).hdr.op;

    assert_eq!(ops, [OP_RESPONSE, OP_RESPONSE, OP_RST]);
    assert_eq!(host_connects, 2, "the refused request reached the host");
    assert_eq!(
        after_close, OP_RESPONSE,
        "a closed connection frees its slot"
    );
    assert_eq!(m.conns.len(), 2);
}

#[test]
fn fake_backend_refused_connect_resets_the_guest() {
    let fake = Arc::new(FakeBackend {
        refuse: Some(libc::ECONNREFUSED),
        ..FakeBackend::default()
    });
    let mut m = mux_with(bridge_cfg(1234, "/x.sock".into(), false), fake);

    m.on_guest_packet(stream_pkt(5000, 1234, OP_REQUEST, &[]));

    assert_eq!(next(&mut m).hdr.op, OP_RST);
    assert!(m.conns.is_empty());
}

#[test]
fn fake_backend_host_client_of_listening_bridge_reaches_the_guest() {
    let fake = Arc::new(FakeBackend::default());
    let mut m = mux_with(bridge_cfg(5555, "/l.sock".into(), true), fake.clone());
    let clients = fake.listeners.lock().unwrap()[0].1.clone();

    let mut client = clients.connect();
    let req = next(&mut m);
    let mut resp = stream_pkt(5555, req.hdr.src_port, OP_RESPONSE, &[]);
    resp.hdr.buf_alloc = 1 << 16;
    m.on_guest_packet(resp);
    m.on_guest_packet(stream_pkt(5555, req.hdr.src_port, OP_RW, b"hello client"));

    assert_eq!((req.hdr.op, req.hdr.dst_port), (OP_REQUEST, 5555));
    assert_eq!(
        fake.listeners.lock().unwrap()[0].0,
        PathBuf::from("/l.sock")
    );
    assert_eq!(read_exact_timeout(&mut client, 12), b"hello client");
}

#[test]
fn tsi_second_connect_on_a_connected_proxy_gets_eisconn_and_keeps_the_first() {
    let fake = Arc::new(FakeBackend::default());
    let mut m = mux_with(tsi_cfg(), fake.clone());
    let dest: SocketAddr = "192.0.2.7:80".parse().unwrap();
    m.on_guest_packet(proxy_create(7000, AF_INET, SOCK_STREAM));
    m.on_guest_packet(addr_req(TSI_CONNECT, 7000, dest));
    assert_eq!(result_of(&next(&mut m), TSI_CONNECT), 0);

    m.on_guest_packet(addr_req(TSI_CONNECT, 7000, dest));
    let second = next(&mut m);
    m.on_guest_packet(stream_pkt(7000, TSI_PROXY_PORT, OP_REQUEST, &[]));
    let resp = next(&mut m);
    m.on_guest_packet(stream_pkt(7000, TSI_PROXY_PORT, OP_RW, b"one"));
    let (_, mut host) = fake.take_peer();

    assert_eq!(result_of(&second, TSI_CONNECT), -libc::EISCONN);
    assert_eq!(
        fake.connected.lock().unwrap().len(),
        0,
        "one host connect only"
    );
    assert_eq!(resp.hdr.op, OP_RESPONSE);
    assert_eq!(read_exact_timeout(&mut host, 3), b"one");
}

#[test]
fn fake_backend_tsi_connect_goes_through_the_backend() {
    let fake = Arc::new(FakeBackend::default());
    let mut m = mux_with(tsi_cfg(), fake.clone());
    let dest: SocketAddr = "192.0.2.7:80".parse().unwrap();

    m.on_guest_packet(proxy_create(7000, AF_INET, SOCK_STREAM));
    m.on_guest_packet(addr_req(TSI_CONNECT, 7000, dest));
    let reply = next(&mut m);
    let (target, mut host) = fake.take_peer();
    m.on_guest_packet(stream_pkt(7000, TSI_PROXY_PORT, OP_REQUEST, &[]));
    let resp = next(&mut m);
    m.on_guest_packet(stream_pkt(7000, TSI_PROXY_PORT, OP_RW, b"GET /"));

    assert_eq!(result_of(&reply, TSI_CONNECT), 0);
    assert_eq!(target, "192.0.2.7:80");
    assert_eq!(resp.hdr.op, OP_RESPONSE);
    assert_eq!(read_exact_timeout(&mut host, 5), b"GET /");
}

fn tsi_cfg() -> VsockConfig {
    VsockConfig {
        tsi_features: TSI_HIJACK_INET,
        ..VsockConfig::default()
    }
}

fn proxy_create(svm_port: u32, family: u16, type_: u16) -> Packet {
    let mut d = svm_port.to_le_bytes().to_vec();
    d.extend_from_slice(&family.to_le_bytes());
    d.extend_from_slice(&type_.to_le_bytes());
    dgram_pkt(9000, TSI_PROXY_CREATE, d)
}

fn addr_req(op_port: u32, svm_port: u32, a: SocketAddr) -> Packet {
    let sa = encode_sockaddr(&a);
    let mut d = svm_port.to_le_bytes().to_vec();
    d.extend_from_slice(&(sa.len() as u32).to_le_bytes());
    let mut field = vec![0u8; TSI_ADDR_LEN];
    field[..sa.len()].copy_from_slice(&sa);
    d.extend_from_slice(&field);
    dgram_pkt(9000, op_port, d)
}

fn result_of(p: &Packet, op_port: u32) -> i32 {
    assert_eq!(p.hdr.type_, TYPE_DGRAM);
    assert_eq!((p.hdr.src_port, p.hdr.dst_port), (op_port, 9000));
    i32::from_le_bytes(p.data[0..4].try_into().unwrap())
}

#[test]
fn tsi_stream_connect_to_host_tcp_listener_carries_data() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = server.local_addr().unwrap();
    let mut m = mux(tsi_cfg());
    m.on_guest_packet(proxy_create(7000, AF_INET, SOCK_STREAM));
    m.on_guest_packet(addr_req(TSI_CONNECT, 7000, target));
    assert_eq!(result_of(&next(&mut m), TSI_CONNECT), 0);
    let (mut host, _) = server.accept().unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    m.on_guest_packet(stream_pkt(7000, TSI_PROXY_PORT, OP_REQUEST, &[]));
    assert_eq!(next(&mut m).hdr.op, OP_RESPONSE);
    m.on_guest_packet(stream_pkt(7000, TSI_PROXY_PORT, OP_RW, b"GET /"));
    assert_eq!(read_exact_timeout(&mut host, 5), b"GET /");
    host.write_all(b"200 OK").unwrap();
    assert_eq!(next(&mut m).data, b"200 OK");

    let mut gn = 7000u32.to_le_bytes().to_vec();
    gn.extend_from_slice(&TSI_PROXY_PORT.to_le_bytes());
    gn.extend_from_slice(&1u32.to_le_bytes());
    m.on_guest_packet(dgram_pkt(9000, TSI_GETNAME, gn));
    let p = next(&mut m);
    assert_eq!(result_of(&p, TSI_GETNAME), 0);
    let len = u32::from_le_bytes(p.data[4..8].try_into().unwrap()) as usize;
    assert_eq!(p.data.len(), 8 + TSI_ADDR_LEN);
    assert_eq!(
        parse_sockaddr(&p.data[8..], len),
        Some(TsiAddr::Inet(target))
    );
}

#[test]
fn tsi_stream_connect_refused_reports_errno() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut m = mux(tsi_cfg());
    m.on_guest_packet(proxy_create(7001, AF_INET, SOCK_STREAM));
    m.on_guest_packet(addr_req(TSI_CONNECT, 7001, port));
    assert_eq!(result_of(&next(&mut m), TSI_CONNECT), -libc::ECONNREFUSED);
}

#[test]
fn tsi_scope_none_blocks_connect_with_eacces() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = tsi_cfg();
    cfg.tsi_scope = Some(TsiScope {
        scope: 0,
        subnet: None,
        ip: None,
    });
    let mut m = mux(cfg);
    m.on_guest_packet(proxy_create(7002, AF_INET, SOCK_STREAM));
    m.on_guest_packet(addr_req(TSI_CONNECT, 7002, server.local_addr().unwrap()));
    assert_eq!(result_of(&next(&mut m), TSI_CONNECT), -SCOPE_BLOCKED_ERRNO);
}

#[test]
fn tsi_disabled_ignores_control_messages() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut m = mux(VsockConfig::default());
    m.on_guest_packet(proxy_create(7003, AF_INET, SOCK_STREAM));
    m.on_guest_packet(addr_req(TSI_CONNECT, 7003, server.local_addr().unwrap()));
    pump(&mut m, 50);
    assert!(m.next_rx(4096).is_none());
}

#[test]
fn tsi_dgram_sendto_round_trip() {
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    echo.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut m = mux(tsi_cfg());
    m.on_guest_packet(proxy_create(7100, AF_INET, SOCK_DGRAM));
    m.on_guest_packet(addr_req(TSI_SENDTO_ADDR, 7100, echo.local_addr().unwrap()));
    m.on_guest_packet(dgram_pkt(7100, TSI_SENDTO_DATA, b"ping".to_vec()));
    let mut buf = [0u8; 16];
    let (n, from) = echo.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    echo.send_to(b"pong", from).unwrap();
    let p = next(&mut m);
    assert_eq!((p.hdr.type_, p.hdr.dst_port), (TYPE_DGRAM, 7100));
    assert_eq!(p.data, b"pong");
}

#[test]
fn tsi_dgram_connected_round_trip() {
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    echo.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut m = mux(tsi_cfg());
    m.on_guest_packet(proxy_create(7101, AF_INET, SOCK_DGRAM));
    m.on_guest_packet(addr_req(TSI_CONNECT, 7101, echo.local_addr().unwrap()));
    assert_eq!(result_of(&next(&mut m), TSI_CONNECT), 0);
    m.on_guest_packet(dgram_pkt(7101, 7101, b"abc".to_vec()));
    let mut buf = [0u8; 16];
    let (n, from) = echo.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"abc");
    echo.send_to(b"xyz", from).unwrap();
    assert_eq!(next(&mut m).data, b"xyz");
}

fn listen_req(svm_port: u32, vm_port: u32, a: SocketAddr) -> Packet {
    let sa = encode_sockaddr(&a);
    let mut d = svm_port.to_le_bytes().to_vec();
    d.extend_from_slice(&vm_port.to_le_bytes());
    d.extend_from_slice(&16u32.to_le_bytes());
    d.extend_from_slice(&(sa.len() as u32).to_le_bytes());
    let mut field = vec![0u8; TSI_ADDR_LEN];
    field[..sa.len()].copy_from_slice(&sa);
    d.extend_from_slice(&field);
    dgram_pkt(9000, TSI_LISTEN, d)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn tsi_listen_port_map_exposes_guest_port_on_host_port() {
    let host_port = free_port();
    let mut cfg = tsi_cfg();
    cfg.port_map = Some(vec![PortMapping {
        host_port,
        guest_port: 80,
    }]);
    let mut m = mux(cfg);
    m.on_guest_packet(proxy_create(7200, AF_INET, SOCK_STREAM));
    m.on_guest_packet(listen_req(7200, 3000, "127.0.0.1:80".parse().unwrap()));
    assert_eq!(result_of(&next(&mut m), TSI_LISTEN), 0);

    // A blocking accept waits for the connection.
    let mut acc = 7200u32.to_le_bytes().to_vec();
    acc.extend_from_slice(&0u32.to_le_bytes());
    m.on_guest_packet(dgram_pkt(9000, TSI_ACCEPT, acc));
    assert!(m.next_rx(4096).is_none());

    let mut client = TcpStream::connect(("127.0.0.1", host_port)).unwrap();
    let req = next(&mut m);
    assert_eq!((req.hdr.op, req.hdr.dst_port), (OP_REQUEST, 3000));
    m.on_guest_packet(stream_pkt(3000, req.hdr.src_port, OP_RESPONSE, &[]));
    assert_eq!(result_of(&next(&mut m), TSI_ACCEPT), 0);

    client.write_all(b"hi guest").unwrap();
    assert_eq!(next(&mut m).data, b"hi guest");
    let _ = client.as_raw_fd();
}

#[test]
fn tsi_listen_port_missing_from_map_gets_eperm() {
    let mut cfg = tsi_cfg();
    cfg.port_map = Some(Vec::new());
    let mut m = mux(cfg);
    m.on_guest_packet(proxy_create(7201, AF_INET, SOCK_STREAM));
    m.on_guest_packet(listen_req(7201, 3001, "0.0.0.0:80".parse().unwrap()));
    assert_eq!(result_of(&next(&mut m), TSI_LISTEN), -libc::EPERM);
}

#[test]
fn tsi_nonblocking_accept_without_connection_gets_eagain() {
    let mut m = mux(tsi_cfg());
    m.on_guest_packet(proxy_create(7202, AF_INET, SOCK_STREAM));
    let port = free_port();
    m.on_guest_packet(listen_req(
        7202,
        3002,
        SocketAddr::from(([127, 0, 0, 1], port)),
    ));
    assert_eq!(result_of(&next(&mut m), TSI_LISTEN), 0);
    let mut acc = 7202u32.to_le_bytes().to_vec();
    acc.extend_from_slice(&(libc::O_NONBLOCK as u32).to_le_bytes());
    m.on_guest_packet(dgram_pkt(9000, TSI_ACCEPT, acc));
    assert_eq!(result_of(&next(&mut m), TSI_ACCEPT), -libc::EAGAIN);
}

// ---- queue path and device lifecycle ----

fn memory() -> GuestMemory {
    crate::test_support::guest_memory(0x10_0000)
}

#[test]
fn queues_tx_request_to_unknown_port_lands_rst_in_rx_buffer() {
    let mem = memory();
    let rxq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
    let txq = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
    let evq = MockSplitQueue::create(&mem, GuestAddress(0x8000), 16);
    let req = stream_pkt(5000, 77, OP_REQUEST, &[]);
    mem.write_slice(&req.hdr.to_bytes(), GuestAddress(0x1_0000))
        .unwrap();
    let d: RawDescriptor = SplitDescriptor::new(0x1_0000, HDR_SIZE as u32, 0, 0).into();
    txq.add_desc_chains(&[d], 0).unwrap();
    let d: RawDescriptor =
        SplitDescriptor::new(0x2_0000, 4096, VRING_DESC_F_WRITE as u16, 0).into();
    rxq.add_desc_chains(&[d], 0).unwrap();
    let irq = Arc::new(crate::test_support::CountingInterrupt::default());
    let mut qs = Queues {
        mem: mem.clone(),
        rx: rxq.create_queue::<Queue>().unwrap(),
        tx: txq.create_queue::<Queue>().unwrap(),
        event: evq.create_queue::<Queue>().unwrap(),
        interrupt: irq.clone(),
    };
    let mut m = mux(VsockConfig::default());
    assert_eq!(qs.process_tx(&mut m), 1);
    assert_eq!(qs.process_rx(&mut m), 1);
    let used = rxq.used().ring().ref_at(0).unwrap().load();
    assert_eq!(used.len(), HDR_SIZE as u32);
    let mut raw = [0u8; HDR_SIZE];
    mem.read_slice(&mut raw, GuestAddress(0x2_0000)).unwrap();
    let hdr = Header::from_bytes(&raw);
    assert_eq!(
        (hdr.op, hdr.src_port, hdr.dst_port, hdr.dst_cid),
        (OP_RST, 77, 5000, 3)
    );
    assert!(irq.queues_total() >= 2);
}

#[test]
fn vsock_config_space_holds_guest_cid_3_and_features() {
    let v = Vsock::new(VsockConfig::default());
    let mut b = [0u8; 8];
    v.read_config(0, &mut b);
    assert_eq!(u64::from_le_bytes(b), 3);
    assert_eq!(v.device_type(), 19);
    assert_eq!(v.queue_max_sizes().len(), 3);
    assert_ne!(
        v.avail_features() & crate::virtio::features::VIRTIO_F_VERSION_1,
        0
    );
}

#[test]
fn vsock_activate_then_shutdown_joins_worker() {
    let mem = memory();
    let qs: Vec<_> = (0..3)
        .map(|i| MockSplitQueue::create(&mem, GuestAddress(0x4000 * i), 16))
        .collect();
    let ctx = ActivationContext {
        mem: mem.clone(),
        queues: qs
            .iter()
            .map(|q| ActiveQueue {
                queue: q.create_queue::<Queue>().unwrap(),
                notify_evt: EventFd::new(EFD_NONBLOCK).unwrap(),
            })
            .collect(),
        interrupt: Arc::new(crate::test_support::CountingInterrupt::default()),
        acked_features: crate::virtio::features::VIRTIO_F_VERSION_1,
        faults: std::sync::Arc::new(crate::virtio::NoFaultSink),
    };
    let mut v = Vsock::new(VsockConfig::default());
    v.activate(ctx).unwrap();
    v.shutdown();
    assert!(v.reset());
}

#[test]
fn tsi_listen_with_guest_ip_exposes_only_that_address_on_the_host_wildcard() {
    let mut cfg = tsi_cfg();
    cfg.tsi_scope = Some(TsiScope {
        scope: 3,
        subnet: None,
        ip: Some("10.0.2.15".parse().unwrap()),
    });
    let mut m = mux(cfg);
    m.on_guest_packet(proxy_create(7300, AF_INET, SOCK_STREAM));
    m.on_guest_packet(listen_req(7300, 3100, "10.0.2.16:80".parse().unwrap()));
    assert_eq!(result_of(&next(&mut m), TSI_LISTEN), -SCOPE_BLOCKED_ERRNO);
    // The guest's own address is not the host's: the host listens on its wildcard.
    let port = free_port();
    m.on_guest_packet(proxy_create(7301, AF_INET, SOCK_STREAM));
    m.on_guest_packet(listen_req(
        7301,
        3101,
        SocketAddr::from(([10, 0, 2, 15], port)),
    ));
    assert_eq!(result_of(&next(&mut m), TSI_LISTEN), 0);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
}

#[test]
fn tsi_scope_none_exposes_no_listener() {
    let mut cfg = tsi_cfg();
    cfg.tsi_scope = Some(TsiScope {
        scope: 0,
        subnet: None,
        ip: None,
    });
    let mut m = mux(cfg);
    m.on_guest_packet(proxy_create(7302, AF_INET, SOCK_STREAM));
    m.on_guest_packet(listen_req(7302, 3102, "0.0.0.0:80".parse().unwrap()));
    assert_eq!(result_of(&next(&mut m), TSI_LISTEN), -SCOPE_BLOCKED_ERRNO);
}
