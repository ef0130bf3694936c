//! virtio-vsock under a hostile driver: garbage transmit chains (bad ops, types, lying
//! lengths, huge credit) and garbage receive buffers never panic the muxer, nor do floods of
//! malformed TSI control messages with bad addresses; a good request after them is answered.

use std::io::{self, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};

use super::backend::{Connecting, HostListener, VsockBackend};
use super::connection::HostStream;
use super::muxer::Muxer;
use super::packet::*;
use super::tsi::*;
use super::worker::Queues;
use super::VsockConfig;
use crate::fuzz_support::{self, mutated, Driver, Garbage, GOOD, MEM_SIZE, QUEUE_SIZE};
use crate::test_support::{guest_memory, CountingInterrupt};

const GUEST: u64 = 3;
/// The good request's source port: its RST comes back to it.
const GOOD_PORT: u32 = 0xbeef;

/// Opens nothing: every connect is refused, so no input reaches a real host socket.
struct Refusing;

impl VsockBackend for Refusing {
    fn connect(&self, _addr: &TsiAddr) -> io::Result<Box<dyn HostStream>> {
        Err(io::Error::from_raw_os_error(libc::ECONNREFUSED))
    }
    fn listen_unix(&self, _path: &Path) -> io::Result<Box<dyn HostListener>> {
        Err(io::Error::from_raw_os_error(libc::EACCES))
    }
}

/// TSI on, but scoped to nothing and with no port exposed: messages are parsed and
/// answered, and no socket reaches anywhere.
fn cfg(tsi: bool) -> VsockConfig {
    VsockConfig {
        guest_cid: GUEST,
        tsi_features: if tsi {
            TSI_HIJACK_INET | TSI_HIJACK_UNIX
        } else {
            0
        },
        port_map: Some(Vec::new()),
        tsi_scope: Some(TsiScope {
            scope: 0,
            subnet: None,
            ip: None,
        }),
        ..VsockConfig::default()
    }
}

fn hdr(src_port: u32, dst_port: u32, type_: u16, op: u16, len: u32) -> Header {
    Header {
        src_cid: GUEST,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len,
        type_,
        op,
        flags: 0,
        buf_alloc: 64 * 1024,
        fwd_cnt: 0,
    }
}

/// Takes packets for the guest until one is the RST for [`GOOD_PORT`]; false if none
/// comes within `tries` packets.
fn rst_for_good_port(m: &mut Muxer, tries: usize) -> bool {
    (0..tries).any(|_| {
        m.next_rx(4096).is_some_and(|p| {
            p.hdr.op == OP_RST && p.hdr.dst_port == GOOD_PORT && p.hdr.dst_cid == GUEST
        })
    })
}

fn run_queues(tx_g: &Garbage, rx_g: &Garbage) {
    let mem = guest_memory(MEM_SIZE as usize);
    let rx = MockSplitQueue::create(&mem, GuestAddress(0), QUEUE_SIZE);
    let tx = MockSplitQueue::create(&mem, GuestAddress(0x1000), QUEUE_SIZE);
    let ev = MockSplitQueue::create(&mem, GuestAddress(0x2000), QUEUE_SIZE);
    let mut qs = Queues {
        mem: mem.clone(),
        rx: rx.create_queue::<Queue>().unwrap(),
        tx: tx.create_queue::<Queue>().unwrap(),
        event: ev.create_queue::<Queue>().unwrap(),
        interrupt: Arc::new(CountingInterrupt::default()),
    };
    let mut m = Muxer::new(cfg(true), Arc::new(Refusing)).unwrap();
    let (mut txd, mut rxd) = (Driver::new(&mem, &tx), Driver::new(&mem, &rx));
    let mut rx_garbage = rx_g.clone();
    rx_garbage.heads.truncate(usize::from(QUEUE_SIZE) - 1);

    txd.scribble(tx_g);
    rxd.scribble(&rx_garbage);
    qs.process_tx(&mut m);
    qs.process_rx(&mut m);
    txd.repair();
    rxd.repair();
    qs.process_tx(&mut m);
    qs.process_rx(&mut m);

    if [&rx, &tx]
        .iter()
        .any(|q| tx_g.clobbers_avail(q) || rx_garbage.clobbers_avail(q))
    {
        return;
    }
    // A request to a port nobody serves, through the transmit queue: the muxer answers
    // with a RST for it (behind whatever the garbage earned; garbage receive buffers still
    // on the ring would take those first, so the answer is taken from the muxer).
    let req = hdr(GOOD_PORT, 9999, TYPE_STREAM, OP_REQUEST, 0).to_bytes();
    mem.write_slice(&req, GuestAddress(GOOD)).unwrap();
    let head = txd.push(&[(GOOD, HDR_SIZE as u32, false)]);
    qs.process_tx(&mut m);
    assert!(
        txd.last_used(head).is_some(),
        "the good request is returned"
    );
    assert!(
        rst_for_good_port(&mut m, 4096),
        "the muxer answers the good request"
    );
}

/// One TSI control message: a mutated form of each kind the guest sends.
fn tsi_message() -> impl Strategy<Value = Packet> {
    let port = prop_oneof![Just(TSI_PROXY_PORT), 1024u32..1032, any::<u32>()];
    let templates = vec![
        [
            7000u32.to_le_bytes().as_slice(),
            &AF_INET.to_le_bytes(),
            &SOCK_STREAM.to_le_bytes(),
        ]
        .concat(),
        {
            let mut d = 7000u32.to_le_bytes().to_vec();
            d.extend_from_slice(&16u32.to_le_bytes());
            let mut a = vec![0u8; TSI_ADDR_LEN];
            a[0..2].copy_from_slice(&AF_INET.to_le_bytes());
            a[2..4].copy_from_slice(&80u16.to_be_bytes());
            a[4..8].copy_from_slice(&[127, 0, 0, 1]);
            d.extend_from_slice(&a);
            d
        },
        {
            let mut d = 7000u32.to_le_bytes().to_vec();
            d.extend_from_slice(&110u32.to_le_bytes());
            let mut a = vec![0u8; TSI_ADDR_LEN];
            a[0..2].copy_from_slice(&AF_UNIX.to_le_bytes());
            a[2..12].copy_from_slice(b"/tmp/nowhe");
            d.extend_from_slice(&a);
            d
        },
        [
            7000u32.to_le_bytes(),
            TSI_PROXY_PORT.to_le_bytes(),
            1u32.to_le_bytes(),
        ]
        .concat(),
    ];
    (
        prop::sample::select(templates).prop_flat_map(mutated),
        port,
        prop_oneof![Just(TYPE_DGRAM), Just(TYPE_STREAM), any::<u16>()],
        prop_oneof![Just(OP_RW), Just(OP_REQUEST), 0u16..9],
        any::<u32>(),
    )
        .prop_map(|(data, dst_port, type_, op, src_port)| Packet {
            hdr: hdr(src_port % 0x1_0000, dst_port, type_, op, data.len() as u32),
            data,
        })
}

fn run_tsi(msgs: Vec<Packet>) {
    let mut m = Muxer::new(cfg(true), Arc::new(Refusing)).unwrap();
    for p in msgs {
        m.on_guest_packet(p);
        m.process_host_events(16);
        while m.next_rx(4096).is_some() {}
    }
    m.on_guest_packet(Packet {
        hdr: hdr(GOOD_PORT, 9999, TYPE_STREAM, OP_REQUEST, 0),
        data: Vec::new(),
    });
    assert!(rst_for_good_port(&mut m, 4096), "the muxer still answers");
}

proptest! {
    #![proptest_config(fuzz_support::config())]

    #[test]
    fn vsock_garbage_chains_then_good_request_gets_rst(
        tx in fuzz_support::garbage(mutated(hdr(5000, 1234, TYPE_STREAM, OP_RW, 16).to_bytes().to_vec())),
        rx in fuzz_support::garbage(prop::collection::vec(any::<u8>(), 0..8).boxed()),
    ) {
        run_queues(&tx, &rx);
    }

    #[test]
    fn vsock_malformed_tsi_messages_then_good_request_gets_rst(
        msgs in prop::collection::vec(tsi_message(), 1..32)
    ) {
        run_tsi(msgs);
    }
}

/// A backend whose connects stay under way: their streams never become writable.
struct Stalling;

/// A socket whose send buffer is full and whose peer never reads.
struct NeverWritable {
    ours: UnixStream,
    _peer: UnixStream,
}

impl NeverWritable {
    fn new() -> io::Result<Self> {
        let (ours, peer) = UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let chunk = [0u8; 65536];
        loop {
            match (&ours).write(&chunk) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(NeverWritable { ours, _peer: peer })
    }
}

impl io::Read for NeverWritable {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.ours).read(buf)
    }
}

impl io::Write for NeverWritable {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&self.ours).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl HostStream for NeverWritable {
    fn raw_fd(&self) -> std::os::fd::RawFd {
        self.ours.as_raw_fd()
    }
    fn shutdown_write(&self) -> io::Result<()> {
        Ok(())
    }
}

impl VsockBackend for Stalling {
    fn connect(&self, _addr: &TsiAddr) -> io::Result<Box<dyn HostStream>> {
        Err(io::Error::from_raw_os_error(libc::ECONNREFUSED))
    }
    fn connect_start(&self, _addr: &TsiAddr) -> io::Result<Connecting> {
        Ok(Connecting::InProgress(Box::new(NeverWritable::new()?)))
    }
    fn listen_unix(&self, _path: &Path) -> io::Result<Box<dyn HostListener>> {
        Err(io::Error::from_raw_os_error(libc::EACCES))
    }
}

fn proxy_create(svm_port: u32, family: u16, type_: u16) -> Packet {
    let mut d = svm_port.to_le_bytes().to_vec();
    d.extend_from_slice(&family.to_le_bytes());
    d.extend_from_slice(&type_.to_le_bytes());
    Packet {
        hdr: hdr(9000, TSI_PROXY_CREATE, TYPE_DGRAM, OP_RW, d.len() as u32),
        data: d,
    }
}

fn connect_req(svm_port: u32) -> Packet {
    let mut d = svm_port.to_le_bytes().to_vec();
    d.extend_from_slice(&16u32.to_le_bytes());
    let mut a = vec![0u8; TSI_ADDR_LEN];
    a[0..2].copy_from_slice(&AF_INET.to_le_bytes());
    a[2..4].copy_from_slice(&80u16.to_be_bytes());
    a[4..8].copy_from_slice(&[192, 0, 2, 1]);
    d.extend_from_slice(&a);
    Packet {
        hdr: hdr(9000, TSI_CONNECT, TYPE_DGRAM, OP_RW, d.len() as u32),
        data: d,
    }
}

fn release_req(svm_port: u32) -> Packet {
    let d = svm_port.to_le_bytes().to_vec();
    Packet {
        hdr: hdr(9000, TSI_PROXY_RELEASE, TYPE_DGRAM, OP_RW, d.len() as u32),
        data: d,
    }
}

fn connect_results(m: &mut Muxer) -> Vec<i32> {
    std::iter::from_fn(|| m.next_rx(4096))
        .filter(|p| p.hdr.src_port == TSI_CONNECT)
        .map(|p| i32::from_le_bytes(p.data[0..4].try_into().unwrap()))
        .collect()
}

#[test]
fn tsi_connects_past_the_in_flight_cap_get_eagain() {
    let mut cfg = cfg(true);
    cfg.tsi_scope = None;
    let mut m = Muxer::new(cfg, Arc::new(Stalling)).unwrap();
    let n = MAX_PENDING_CONNECTS as u32 + 3;
    for port in 0..n {
        m.on_guest_packet(proxy_create(7000 + port, AF_INET, SOCK_STREAM));
        m.on_guest_packet(connect_req(7000 + port));
    }

    let early = connect_results(&mut m);

    assert_eq!(
        early,
        vec![-libc::EAGAIN; 3],
        "only the connects past the cap answered"
    );
}

#[test]
fn tsi_connects_released_or_replaced_while_under_way_free_their_slots() {
    let mut cfg = cfg(true);
    cfg.tsi_scope = None;
    let mut m = Muxer::new(cfg, Arc::new(Stalling)).unwrap();
    for port in 0..MAX_PENDING_CONNECTS as u32 {
        m.on_guest_packet(proxy_create(7000 + port, AF_INET, SOCK_STREAM));
        m.on_guest_packet(connect_req(7000 + port));
    }
    // A second connect on a proxy whose first is under way is refused, not restarted.
    m.on_guest_packet(connect_req(7000));
    assert_eq!(connect_results(&mut m), vec![-libc::EALREADY]);

    // Half released, half re-created over: every slot is free again, and nothing of theirs
    // stays in the muxer's interest set.
    for port in 0..MAX_PENDING_CONNECTS as u32 {
        if port % 2 == 0 {
            m.on_guest_packet(release_req(7000 + port));
        } else {
            m.on_guest_packet(proxy_create(7000 + port, AF_INET, SOCK_STREAM));
        }
    }
    assert_eq!(m.tsi.connecting, 0);
    let mut events = [vmm_sys_util::epoll::EpollEvent::default(); 4];
    assert_eq!(m.epoll.wait(0, &mut events).unwrap(), 0);
    m.on_guest_packet(proxy_create(9999, AF_INET, SOCK_STREAM));
    m.on_guest_packet(connect_req(9999));
    assert_eq!(
        connect_results(&mut m),
        Vec::<i32>::new(),
        "under way, not refused"
    );
    assert_eq!(m.tsi.connecting, 1);
}

#[test]
fn tsi_proxies_past_the_cap_are_not_created() {
    let mut cfg = cfg(true);
    cfg.tsi_scope = None;
    let mut m = Muxer::new(cfg, Arc::new(Stalling)).unwrap();
    for port in 0..MAX_TSI_PROXIES as u32 + 1 {
        m.on_guest_packet(proxy_create(10_000 + port, AF_INET, SOCK_STREAM));
    }

    // A proxy that exists starts a connect that stays under way (answered later); the one
    // past the cap was never created, so its connect is refused at once.
    m.on_guest_packet(connect_req(10_000));
    m.on_guest_packet(connect_req(10_000 + MAX_TSI_PROXIES as u32));
    let at_once = connect_results(&mut m);

    assert_eq!(at_once, vec![-libc::ECONNREFUSED]);
}
