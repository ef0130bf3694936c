//! virtio-net tests: mock queues play the guest driver, fake backends play the host.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use super::backend::{NetBackend, Sent, UnixStream, MAX_FRAME_LEN, VNET_HDR_LEN};
use super::features;
use super::worker::{complete_checksum, NetHandler};
use super::{Net, NetConfig};
use crate::test_support::{active_queue, add_chain, guest_memory, wait_until, CountingInterrupt};
use crate::virtio::features::VIRTIO_F_VERSION_1;
use crate::virtio::{ActivationContext, VirtioDevice};
use crate::GuestMemory;

const RX_RING: GuestAddress = GuestAddress(0x0);
const TX_RING: GuestAddress = GuestAddress(0x8000);
const DATA: u64 = 0x2_0000;
const RING_LEN: u16 = 16;

/// What a fake backend saw and will give.
#[derive(Default)]
struct FakeState {
    sent: Vec<Vec<u8>>,
    to_guest: VecDeque<Vec<u8>>,
    /// Sends left before the backend reports full (None: never full).
    room: Option<usize>,
    closed: bool,
}

#[derive(Clone, Default)]
struct FakeBackend {
    state: Arc<Mutex<FakeState>>,
    vnet_hdr: bool,
}

impl FakeBackend {
    /// A frame for the guest: the next `recv_frame` returns it.
    fn queue_to_guest(&self, frame: Vec<u8>) {
        self.state.lock().unwrap().to_guest.push_back(frame);
    }
}

impl NetBackend for FakeBackend {
    fn fd(&self) -> RawFd {
        // Never polled: these tests drive the handler directly.
        -1
    }
    fn has_vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }
    fn supported_offloads(&self) -> u64 {
        features::CSUM | features::GUEST_CSUM
    }
    fn recv_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.state.lock().unwrap();
        match s.to_guest.pop_front() {
            Some(f) => {
                buf[..f.len()].copy_from_slice(&f);
                Ok(f.len())
            }
            None if s.closed => Ok(0),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
    fn send_frame(&mut self, frame: &[u8]) -> io::Result<Sent> {
        let mut s = self.state.lock().unwrap();
        if let Some(room) = s.room.as_mut() {
            if *room == 0 {
                return Ok(Sent::Full);
            }
            *room -= 1;
        }
        s.sent.push(frame.to_vec());
        Ok(Sent::Done)
    }
}

fn used_entries(mq: &MockSplitQueue<GuestMemory>) -> Vec<(u32, u32)> {
    let count = mq.used().idx().load();
    (0..count)
        .map(|i| {
            let elem = mq.used().ring().ref_at(i as usize).unwrap().load();
            (elem.id(), elem.len())
        })
        .collect()
}

fn hdr(flags: u8, gso: u8, csum_start: u16, csum_offset: u16) -> [u8; VNET_HDR_LEN] {
    let mut h = [0u8; VNET_HDR_LEN];
    h[0] = flags;
    h[1] = gso;
    h[6..8].copy_from_slice(&csum_start.to_le_bytes());
    h[8..10].copy_from_slice(&csum_offset.to_le_bytes());
    h
}

struct Harness<'a> {
    mem: GuestMemory,
    rx: MockSplitQueue<'a, GuestMemory>,
    tx: MockSplitQueue<'a, GuestMemory>,
    irq: Arc<CountingInterrupt>,
}

impl<'a> Harness<'a> {
    fn new(mem: &'a GuestMemory) -> Self {
        Harness {
            mem: mem.clone(),
            rx: MockSplitQueue::create(mem, RX_RING, RING_LEN),
            tx: MockSplitQueue::create(mem, TX_RING, RING_LEN),
            irq: Arc::new(CountingInterrupt::default()),
        }
    }

    fn handler(&self, backend: FakeBackend, acked: u64) -> NetHandler {
        self.handler_on(self.rx.create_queue().unwrap(), backend, acked)
    }

    /// A handler whose receive queue the test prepared itself (EVENT_IDX, say).
    fn handler_on(&self, rx: virtio_queue::Queue, backend: FakeBackend, acked: u64) -> NetHandler {
        NetHandler::new(
            "net-test".into(),
            self.mem.clone(),
            rx,
            self.tx.create_queue().unwrap(),
            self.irq.clone(),
            Box::new(backend),
            acked,
        )
    }

    /// A transmit chain of one descriptor holding `bytes` at `addr`.
    fn tx_chain(&self, first: u16, addr: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
        add_chain(&self.tx, first, &[(addr, bytes.len() as u32, false)]);
    }
}

#[test]
fn tx_socket_backend_gets_the_bare_frame() {
    let mem = guest_memory(0x10_0000);
    let h = Harness::new(&mem);
    let fake = FakeBackend::default();
    let mut handler = h.handler(fake.clone(), 0);
    let mut packet = hdr(0, 0, 0, 0).to_vec();
    packet.extend_from_slice(b"frame-bytes-0123");
    h.tx_chain(0, DATA, &packet);

    handler.process_tx();

    assert_eq!(
        fake.state.lock().unwrap().sent,
        vec![b"frame-bytes-0123".to_vec()]
    );
    assert_eq!(used_entries(&h.tx), vec![(0, 0)]);
    assert_eq!(h.irq.queue(1), 1);
}

#[test]
fn tx_tap_backend_gets_header_and_frame() {
    let mem = guest_memory(0x10_0000);
    let h = Harness::new(&mem);
    let fake = FakeBackend {
        vnet_hdr: true,
        ..Default::default()
    };
    let mut handler = h.handler(fake.clone(), 0);
    let mut packet = hdr(1, 1, 34, 16).to_vec();
    packet.extend_from_slice(&[7u8; 60]);
    h.tx_chain(0, DATA, &packet);

    handler.process_tx();

    assert_eq!(fake.state.lock().unwrap().sent, vec![packet]);
}

#[test]
fn tx_needs_csum_is_completed_for_socket_backends() {
    let mem = guest_memory(0x10_0000);
    let h = Harness::new(&mem);
    let fake = FakeBackend::default();
    let mut handler = h.handler(fake.clone(), features::CSUM);
    // 4 bytes of "header", then a checksummed region: 0x0001 0xf203 [csum 0x0000] 0x00.
    let frame = [
        0xaa, 0xbb, 0xcc, 0xdd, 0x00, 0x01, 0xf2, 0x03, 0x00, 0x00, 0x01,
    ];
    let mut packet = hdr(1, 0, 4, 4).to_vec();
    packet.extend_from_slice(&frame);
    h.tx_chain(0, DATA, &packet);

    handler.process_tx();

    // sum = 0x0001 + 0xf203 + 0x0000 + 0x0100 = 0xf304; !sum = 0x0cfb.
    let mut expect = frame;
    expect[8..10].copy_from_slice(&[0x0c, 0xfb]);
    assert_eq!(fake.state.lock().unwrap().sent, vec![expect.to_vec()]);
}

#[test]
fn complete_checksum_out_of_range_offsets_refused_without_panic() {
    let mut frame = [0u8; 20];
    assert!(!complete_checksum(&mut frame, 20, 0));
    assert!(!complete_checksum(&mut frame, 10, 9));
    assert!(!complete_checksum(&mut frame, usize::MAX, usize::MAX));
    assert!(complete_checksum(&mut frame, 10, 8));
    assert_eq!(&frame[18..], &[0xff, 0xff]);
}

#[test]
fn tx_malformed_chains_are_returned_and_dropped_without_panic() {
    let mem = guest_memory(0x10_0000);
    let h = Harness::new(&mem);
    let fake = FakeBackend::default();
    let mut handler = h.handler(fake.clone(), features::CSUM);
    // Shorter than the header.
    h.tx_chain(0, DATA, &[1, 2, 3]);
    // Longer than any frame.
    add_chain(
        &h.tx,
        1,
        &[(
            DATA + 0x1000,
            (VNET_HDR_LEN + MAX_FRAME_LEN + 1) as u32,
            false,
        )],
    );
    // A segmentation frame the device never offered for a socket backend.
    let mut gso = hdr(0, 1, 0, 0).to_vec();
    gso.extend_from_slice(&[0u8; 40]);
    h.tx_chain(2, DATA + 0x2_0000, &gso);
    // Checksum offsets past the end.
    let mut bad_csum = hdr(1, 0, 60000, 60000).to_vec();
    bad_csum.extend_from_slice(&[0u8; 40]);
    h.tx_chain(3, DATA + 0x3_0000, &bad_csum);
    // A descriptor outside guest memory.
    add_chain(&h.tx, 4, &[(0xfff_0000, 64, false)]);
    // Only device-writable buffers: nothing to read.
    add_chain(&h.tx, 5, &[(DATA + 0x4_0000, 64, true)]);

    handler.process_tx();

    assert!(fake.state.lock().unwrap().sent.is_empty());
    let heads: Vec<u32> = used_entries(&h.tx).iter().map(|e| e.0).collect();
    assert_eq!(heads, vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn tx_full_backend_keeps_one_frame_and_stops_taking_chains() {
    let mem = guest_memory(0x10_0000);
    let h = Harness::new(&mem);
    let fake = FakeBackend::default();
    fake.state.lock().unwrap().room = Some(1);
    let mut handler = h.handler(fake.clone(), 0);
    for i in 0..4u16 {
        let mut packet = hdr(0, 0, 0, 0).to_vec();
        packet.extend_from_slice(&[i as u8; 20]);
        h.tx_chain(i, DATA + u64::from(i) * 0x100, &packet);
    }

    handler.process_tx();
    // One sent, one waiting in the device, two still in the ring.
    assert_eq!(fake.state.lock().unwrap().sent.len(), 1);
    assert_eq!(used_entries(&h.tx).len(), 2);

    fake.state.lock().unwrap().room = None;
    handler.process_tx();
    let sent = fake.state.lock().unwrap().sent.clone();
    assert_eq!(
        sent,
        (0..4u8).map(|i| vec![i; 20]).collect::<Vec<_>>(),
        "every frame, in order"
    );
    assert_eq!(used_entries(&h.tx).len(), 4);
}

#[test]
fn rx_mrg_spreads_a_frame_over_buffers_and_counts_them() {
    let mem = guest_memory(0x10_0000);
    let h = Harness::new(&mem);
    let fake = FakeBackend::default();
    let frame: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    fake.queue_to_guest(frame.clone());
    for i in 0..4u16 {
        add_chain(&h.rx, i, &[(DATA + u64::from(i) * 0x1000, 1500, true)]);
    }
    let mut handler = h.handler(fake, features::MRG_RXBUF);

    handler.process_rx();

    assert_eq!(used_entries(&h.rx), vec![(0, 1500), (1, 1500), (2, 12)]);
    let mut got = vec![0u8; 3012];
    for (i, chunk) in got.chunks_mut(1500).enumerate() {
        mem.read_slice(chunk, GuestAddress(DATA + i as u64 * 0x1000))
            .unwrap();
    }
    assert_eq!(&got[..10], &[0u8; 10], "a plain header");
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 3, "num_buffers");
    assert_eq!(&got[12..], &frame[..]);
    assert_eq!(h.irq.queue(0), 1);
}

#[test]
fn rx_frame_over_several_buffers_interrupts_a_driver_using_event_idx() {
    use virtio_queue::QueueT;
    use vm_memory::Address;
    let mem = guest_memory(0x10_0000);
    let h = Harness::new(&mem);
    let fake = FakeBackend::default();
    fake.queue_to_guest(vec![7u8; 2000]);
    for i in 0..2u16 {
        add_chain(&h.rx, i, &[(DATA + u64::from(i) * 0x1000, 1500, true)]);
    }
    // used_event 0: the driver wants an interrupt once the used index passes 0.
    let used_event = h.rx.avail_addr().raw_value() + 4 + 2 * u64::from(RING_LEN);
    mem.write_obj(0u16, GuestAddress(used_event)).unwrap();
    let mut rx = h.rx.create_queue::<virtio_queue::Queue>().unwrap();
    rx.set_event_idx(true);
    let mut handler = h.handler_on(rx, fake, features::MRG_RXBUF);

    handler.process_rx();

    assert_eq!(used_entries(&h.rx), vec![(0, 1500), (1, 512)]);
    assert_eq!(h.irq.queue(0), 1, "the used index passed used_event");
}

#[test]
fn rx_without_enough_buffers_keeps_the_frame_until_the_guest_adds_some() {
    let mem = guest_memory(0x10_0000);
    let h = Harness::new(&mem);
    let fake = FakeBackend::default();
    fake.queue_to_guest(vec![9u8; 2000]);
    fake.queue_to_guest(vec![8u8; 100]);
    add_chain(&h.rx, 0, &[(DATA, 1500, true)]);
    let mut handler = h.handler(fake.clone(), features::MRG_RXBUF);

    handler.process_rx();
    assert!(used_entries(&h.rx).is_empty(), "nothing half-delivered");
    assert_eq!(
        fake.state.lock().unwrap().to_guest.len(),
        1,
        "one frame waits, one unread"
    );

    add_chain(&h.rx, 1, &[(DATA + 0x1000, 1500, true)]);
    add_chain(&h.rx, 2, &[(DATA + 0x2000, 1500, true)]);
    handler.process_rx();
    assert_eq!(used_entries(&h.rx), vec![(0, 1500), (1, 512), (2, 112)]);
}

#[test]
fn rx_without_mrg_drops_a_frame_too_big_for_the_buffer() {
    let mem = guest_memory(0x10_0000);
    let h = Harness::new(&mem);
    let fake = FakeBackend::default();
    fake.queue_to_guest(vec![1u8; 2000]);
    fake.queue_to_guest(vec![2u8; 100]);
    add_chain(&h.rx, 0, &[(DATA, 1500, true)]);
    add_chain(&h.rx, 1, &[(DATA + 0x1000, 1500, true)]);
    let mut handler = h.handler(fake, 0);

    handler.process_rx();

    assert_eq!(used_entries(&h.rx), vec![(0, 0), (1, 112)]);
}

#[test]
fn rx_backend_closed_stops_reading() {
    let mem = guest_memory(0x10_0000);
    let h = Harness::new(&mem);
    let fake = FakeBackend::default();
    fake.state.lock().unwrap().closed = true;
    add_chain(&h.rx, 0, &[(DATA, 1500, true)]);
    let mut handler = h.handler(fake, 0);
    handler.process_rx();
    handler.process_rx();
    assert!(used_entries(&h.rx).is_empty());
}

#[test]
fn device_offers_only_what_the_backend_honours_and_shows_mac_and_link() {
    let net = Net::new(NetConfig {
        id: "net0".into(),
        mac: [2, 1, 2, 3, 4, 5],
        offloads: features::OFFLOADS,
        backend: Box::new(FakeBackend::default()),
    });
    let f = net.avail_features();
    assert_eq!(
        f,
        VIRTIO_F_VERSION_1
            | features::MAC
            | features::STATUS
            | features::MRG_RXBUF
            | features::CSUM
            | features::GUEST_CSUM
    );
    let mut config = [0u8; 10];
    net.read_config(0, &mut config);
    assert_eq!(config, [2, 1, 2, 3, 4, 5, 1, 0, 0, 0]);
}

/// The stream peer's end, with the framing done by hand.
fn stream_pair() -> (UnixStream, std::os::unix::net::UnixStream) {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    (UnixStream::new(ours).unwrap(), theirs)
}

#[test]
fn unixstream_short_reads_reassemble_frames() {
    let (mut backend, mut peer) = stream_pair();
    let mut wire = Vec::new();
    for frame in [&b"first"[..], &b""[..], &b"second!"[..]] {
        wire.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        wire.extend_from_slice(frame);
    }
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    for byte in wire {
        peer.write_all(&[byte]).unwrap();
        match backend.recv_frame(&mut buf) {
            Ok(n) => got.push(buf[..n].to_vec()),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
        }
    }
    assert_eq!(got, vec![b"first".to_vec(), b"second!".to_vec()]);
    drop(peer);
    assert_eq!(backend.recv_frame(&mut buf).unwrap(), 0);
}

#[test]
fn unixstream_oversized_length_is_skipped_and_the_stream_goes_on() {
    let (mut backend, mut peer) = stream_pair();
    let huge = MAX_FRAME_LEN + 10;
    let writer = std::thread::spawn(move || {
        peer.write_all(&(huge as u32).to_be_bytes()).unwrap();
        peer.write_all(&vec![0xee; huge]).unwrap();
        peer.write_all(&3u32.to_be_bytes()).unwrap();
        peer.write_all(b"ok!").unwrap();
        peer
    });
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    let mut got = None;
    assert!(wait_until(Duration::from_secs(10), || {
        match backend.recv_frame(&mut buf) {
            Ok(n) => {
                got = Some(buf[..n].to_vec());
                true
            }
            Err(_) => false,
        }
    }));
    assert_eq!(got.unwrap(), b"ok!");
    let _peer = writer.join().unwrap();
}

#[test]
fn unixstream_partial_writes_finish_on_flush() {
    let (mut backend, mut peer) = stream_pair();
    let frame = vec![0x5a; MAX_FRAME_LEN];
    let mut accepted = 0;
    // Fill the socket until a frame stays partly unwritten or is refused.
    while accepted < 64 {
        match backend.send_frame(&frame).unwrap() {
            Sent::Done => accepted += 1,
            Sent::Full => break,
        }
        if backend.has_pending_write() {
            break;
        }
    }
    assert!(accepted < 64, "the socket buffer filled up");
    let reader = std::thread::spawn(move || {
        let mut total = 0;
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = peer.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    assert!(wait_until(Duration::from_secs(10), || backend
        .flush()
        .unwrap()));
    drop(backend);
    assert_eq!(reader.join().unwrap(), accepted * (4 + MAX_FRAME_LEN));
}

#[test]
fn activated_device_moves_frames_both_ways_over_a_unix_stream() {
    let mem = guest_memory(0x10_0000);
    let rx_mock = MockSplitQueue::create(&mem, RX_RING, RING_LEN);
    let tx_mock = MockSplitQueue::create(&mem, TX_RING, RING_LEN);
    let (backend, mut peer) = stream_pair();
    let mut net = Net::new(NetConfig {
        id: "net0".into(),
        mac: [2, 0, 0, 0, 0, 1],
        offloads: 0,
        backend: Box::new(backend),
    });
    add_chain(&rx_mock, 0, &[(DATA, 2048, true)]);
    let mut packet = hdr(0, 0, 0, 0).to_vec();
    packet.extend_from_slice(b"to-the-host");
    mem.write_slice(&packet, GuestAddress(DATA + 0x1_0000))
        .unwrap();
    add_chain(
        &tx_mock,
        0,
        &[(DATA + 0x1_0000, packet.len() as u32, false)],
    );
    let (rx, _rx_kick) = active_queue(&rx_mock);
    let (tx, _tx_kick) = active_queue(&tx_mock);
    let irq = Arc::new(CountingInterrupt::default());
    let acked = net.avail_features();
    net.set_acked_features(acked);
    net.activate(ActivationContext {
        mem: mem.clone(),
        queues: vec![rx, tx],
        interrupt: irq.clone(),
        acked_features: acked,
        faults: std::sync::Arc::new(crate::virtio::NoFaultSink),
    })
    .unwrap();

    // The guest's frame reaches the peer with its length in front.
    let mut wire = [0u8; 15];
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    peer.read_exact(&mut wire).unwrap();
    assert_eq!(&wire[..4], &11u32.to_be_bytes());
    assert_eq!(&wire[4..], b"to-the-host");

    // The peer's frame lands in the guest's buffer behind a header.
    peer.write_all(&5u32.to_be_bytes()).unwrap();
    peer.write_all(b"hello").unwrap();
    assert!(wait_until(Duration::from_secs(10), || !used_entries(
        &rx_mock
    )
    .is_empty()));
    assert_eq!(used_entries(&rx_mock), vec![(0, 17)]);
    let mut got = [0u8; 17];
    mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(&got[12..], b"hello");
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1);

    assert!(net.reset(), "the backend comes back on reset");
    net.shutdown();
    let _ = AsRawFd::as_raw_fd(&peer);
}

#[test]
fn unixgram_full_peer_gets_every_frame_once_it_reads() {
    let mem = guest_memory(0x100_0000);
    let rx_mock = MockSplitQueue::create(&mem, RX_RING, RING_LEN);
    let tx_mock = MockSplitQueue::create(&mem, GuestAddress(0x10_0000), 256);
    let (ours, peer) = std::os::unix::net::UnixDatagram::pair().unwrap();
    // A small send buffer: the socket is full after a few frames.
    nix::sys::socket::setsockopt(&ours, nix::sys::socket::sockopt::SndBuf, &8192).unwrap();
    let mut net = Net::new(NetConfig {
        id: "net0".into(),
        mac: [2, 0, 0, 0, 0, 1],
        offloads: 0,
        backend: Box::new(super::UnixGram::new(ours, None).unwrap()),
    });
    // Fewer than the ring holds: MockSplitQueue lays a 256-entry used ring over the avail
    // ring's entries past ~130.
    const FRAMES: u16 = 100;
    for i in 0..FRAMES {
        let mut packet = hdr(0, 0, 0, 0).to_vec();
        packet.extend_from_slice(&i.to_be_bytes());
        packet.extend_from_slice(&[0x33; 1498]);
        let addr = 0x20_0000 + u64::from(i) * 0x1000;
        mem.write_slice(&packet, GuestAddress(addr)).unwrap();
        add_chain(&tx_mock, i, &[(addr, packet.len() as u32, false)]);
    }
    let (rx, _rx_kick) = active_queue(&rx_mock);
    let (tx, tx_kick) = active_queue(&tx_mock);
    let irq = Arc::new(CountingInterrupt::default());
    net.activate(ActivationContext {
        mem: mem.clone(),
        queues: vec![rx, tx],
        interrupt: irq.clone(),
        acked_features: 0,
        faults: std::sync::Arc::new(crate::virtio::NoFaultSink),
    })
    .unwrap();
    tx_kick.write(1).unwrap();
    // The socket fills after a few frames; only then does the peer read.
    std::thread::sleep(Duration::from_millis(200));
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 2000];
    let mut ids = Vec::new();
    for _ in 0..FRAMES {
        let n = peer.recv(&mut buf).unwrap();
        assert_eq!(n, 1500);
        ids.push(u16::from_be_bytes([buf[0], buf[1]]));
    }
    assert_eq!(
        ids,
        (0..FRAMES).collect::<Vec<_>>(),
        "frames in order, none lost"
    );
    assert!(wait_until(Duration::from_secs(10), || used_entries(
        &tx_mock
    )
    .len()
        == usize::from(FRAMES)));
    net.shutdown();
}
