//! virtio-rng under a hostile driver: garbage request chains never panic the worker, and a
//! good request after them still gets its bytes.

use std::sync::Arc;
use std::time::Instant;

use proptest::prelude::*;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use super::worker::RngHandler;
use super::{Entropy, RateLimit};
use crate::fuzz_support::{self, Driver, Garbage, GOOD, MEM_SIZE, QUEUE_SIZE};
use crate::test_support::{active_queue, guest_memory, CountingInterrupt};

/// Bytes `i ^ 0xa5`, so the good buffer's contents are known.
struct Pattern;

impl Entropy for Pattern {
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = i as u8 ^ 0xa5;
        }
        Ok(())
    }
}

fn run(g: &Garbage) {
    let mem = guest_memory(MEM_SIZE as usize);
    let mq = MockSplitQueue::create(&mem, GuestAddress(0), QUEUE_SIZE);
    let (active, _kick) = active_queue(&mq);
    let rate = RateLimit {
        bytes_per_sec: 1 << 40,
        burst: 1 << 40,
    };
    let irq = Arc::new(CountingInterrupt::default());
    let mut h = RngHandler::new(mem.clone(), active.queue, irq, Box::new(Pattern), rate);
    let mut driver = Driver::new(&mem, &mq);

    driver.scribble(g);
    h.process(Instant::now());
    // Garbage buffers may overlap the rings: the device writes where the guest said, even
    // over the avail ring, so the good chain is only queued once the garbage is consumed.
    driver.repair();
    h.process(Instant::now());
    driver.fill_good(0);
    let head = driver.push(&[(GOOD, 64, true)]);
    h.process(Instant::now());
    if g.clobbers_avail(&mq) {
        return;
    }

    assert_eq!(
        driver.last_used(head),
        Some(64),
        "the good request is answered"
    );
    let mut got = [0u8; 64];
    mem.read_slice(&mut got, GuestAddress(GOOD)).unwrap();
    let want: Vec<u8> = (0..64).map(|i| i as u8 ^ 0xa5).collect();
    assert_eq!(got.as_slice(), want.as_slice());
}

proptest! {
    #![proptest_config(fuzz_support::config())]

    #[test]
    fn rng_garbage_chains_then_good_request_served(
        g in fuzz_support::garbage(prop::collection::vec(any::<u8>(), 0..16).boxed())
    ) {
        run(&g);
    }
}

/// `make fuzz`'s first find (a harness matter, not a device bug): a device-writable buffer
/// over the avail ring gets random bytes over the avail index, so the device rightly
/// follows phantom heads and the driver's next chain is not where the device looks. The
/// device must still not panic; the harness then skips the good-request check.
#[test]
fn rng_buffer_over_the_avail_ring_does_not_panic() {
    let mut table = vec![(fuzz_support::GARBAGE, 0, 0, 0); usize::from(QUEUE_SIZE)];
    table[3] = (61, 198, 0x5f02, 4);
    let g = Garbage {
        table,
        heads: vec![3, 3],
        bogus_avail: Some(17),
        payloads: vec![Vec::new(); usize::from(QUEUE_SIZE)],
    };
    let mem = guest_memory(MEM_SIZE as usize);
    let mq = MockSplitQueue::create(&mem, GuestAddress(0), QUEUE_SIZE);
    assert!(g.clobbers_avail(&mq));
    run(&g);
}
