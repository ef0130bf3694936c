//! virtio-net under a hostile driver: garbage transmit chains (lying headers, checksum
//! offsets, segmentation requests) and garbage receive buffers never panic the handler, and
//! a good frame after them goes through in each direction.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use super::backend::{NetBackend, Sent, VNET_HDR_LEN};
use super::features;
use super::worker::NetHandler;
use crate::fuzz_support::{self, mutated, Driver, Garbage, GOOD, MEM_SIZE, QUEUE_SIZE};
use crate::test_support::{guest_memory, CountingInterrupt};

const FRAME: [u8; 60] = [0x42; 60];

#[derive(Clone, Default)]
struct Fake {
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
    to_guest: Arc<Mutex<VecDeque<Vec<u8>>>>,
}

impl NetBackend for Fake {
    fn fd(&self) -> RawFd {
        -1
    }
    fn has_vnet_hdr(&self) -> bool {
        false
    }
    fn supported_offloads(&self) -> u64 {
        features::CSUM | features::GUEST_CSUM
    }
    fn recv_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.to_guest.lock().unwrap().pop_front() {
            Some(f) => {
                let n = f.len().min(buf.len());
                buf[..n].copy_from_slice(&f[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
    fn send_frame(&mut self, frame: &[u8]) -> io::Result<Sent> {
        self.sent.lock().unwrap().push(frame.to_vec());
        Ok(Sent::Done)
    }
}

fn header_and_frame() -> Vec<u8> {
    let mut b = vec![0u8; VNET_HDR_LEN];
    b[0] = 1; // NEEDS_CSUM, so the checksum offsets get parsed
    b[6..8].copy_from_slice(&14u16.to_le_bytes());
    b[8..10].copy_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(&FRAME);
    b
}

fn run(tx_garbage: &Garbage, rx_garbage: &Garbage, acked: u64) {
    // Receive buffers the device cannot fill (with MRG_RXBUF) stay on the ring: leave room
    // for the two good ones, as a driver never has more buffers out than the ring holds.
    let mut rx_garbage = rx_garbage.clone();
    rx_garbage.heads.truncate(usize::from(QUEUE_SIZE) - 2);
    let rx_garbage = &rx_garbage;
    let mem = guest_memory(MEM_SIZE as usize);
    let rx = MockSplitQueue::create(&mem, GuestAddress(0), QUEUE_SIZE);
    let tx = MockSplitQueue::create(&mem, GuestAddress(0x1000), QUEUE_SIZE);
    let fake = Fake::default();
    // More frames than garbage buffers: every garbage chain the device can take is taken.
    for _ in 0..2 * QUEUE_SIZE {
        fake.to_guest.lock().unwrap().push_back(FRAME.to_vec());
    }
    let mut h = NetHandler::new(
        "net-fuzz".into(),
        mem.clone(),
        rx.create_queue().unwrap(),
        tx.create_queue().unwrap(),
        Arc::new(CountingInterrupt::default()),
        Box::new(fake.clone()),
        acked,
    );
    let (mut txd, mut rxd) = (Driver::new(&mem, &tx), Driver::new(&mem, &rx));

    txd.scribble(tx_garbage);
    rxd.scribble(rx_garbage);
    h.process_tx();
    h.process_rx();
    txd.repair();
    rxd.repair();
    h.process_tx();
    h.process_rx();

    if [&rx, &tx]
        .iter()
        .any(|q| tx_garbage.clobbers_avail(q) || rx_garbage.clobbers_avail(q))
    {
        return;
    }
    // Transmit: the good frame reaches the backend, bare (a socket backend).
    txd.fill_good(0);
    mem.write_slice(&header_and_frame(), GuestAddress(GOOD))
        .unwrap();
    fake.sent.lock().unwrap().clear();
    let head = txd.push(&[(GOOD, (VNET_HDR_LEN + FRAME.len()) as u32, false)]);
    h.process_tx();
    assert!(txd.last_used(head).is_some(), "the good frame is returned");
    let sent = fake.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "exactly the good frame is sent");
    assert_eq!(&sent[0][..14], &FRAME[..14]);

    // Receive: buffers the garbage left on the ring (MRG_RXBUF) may take the head of the
    // next frame, so a good buffer gets the whole frame or its tail, byte for byte.
    let first = GOOD + 0x4000;
    rxd.push(&[(first, 2048, true)]);
    h.process_rx();
    let second = GOOD + 0x8000;
    let head = rxd.push(&[(second, 2048, true)]);
    h.process_rx();
    let whole = VNET_HDR_LEN + FRAME.len();
    let n = rxd.last_used(head).expect("the good buffer gets a frame") as usize;
    assert!((1..=whole).contains(&n), "{n} bytes");
    let tail = n.min(FRAME.len());
    let mut got = vec![0u8; tail];
    mem.read_slice(&mut got, GuestAddress(second + (n - tail) as u64))
        .unwrap();
    assert_eq!(got, &FRAME[FRAME.len() - tail..]);
}

proptest! {
    #![proptest_config(fuzz_support::config())]

    #[test]
    fn net_garbage_chains_then_good_frames_pass(
        tx in fuzz_support::garbage(mutated(header_and_frame())),
        rx in fuzz_support::garbage(prop::collection::vec(any::<u8>(), 0..8).boxed()),
        acked in prop::sample::select(vec![0, features::CSUM, features::MRG_RXBUF | features::CSUM]),
    ) {
        run(&tx, &rx, acked);
    }
}
