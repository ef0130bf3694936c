//! virtio-rng tests: mock queues play the driver, a fake backend gives known bytes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use super::worker::{RngHandler, TokenBucket};
use super::*;
use crate::test_support::{active_queue, guest_memory, wait_until, CountingInterrupt};
use crate::virtio::{ActivationContext, QueueHandler, VirtioDevice};
use crate::GuestMemory;

const DATA: u64 = 0x1_0000;

/// Counts up from a seed, one byte at a time, and counts its calls.
#[derive(Clone, Default)]
struct FakeEntropy {
    calls: Arc<AtomicUsize>,
}

impl Entropy for FakeEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = i as u8 ^ 0x5a;
        }
        Ok(())
    }
}

struct FailingEntropy;

impl Entropy for FailingEntropy {
    fn fill(&mut self, _buf: &mut [u8]) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(libc::EIO))
    }
}

/// Queues `count` one-descriptor device-writable chains of `len` bytes each.
fn add_requests(mq: &MockSplitQueue<GuestMemory>, count: u16, len: u32) {
    let descs: Vec<RawDescriptor> = (0..count)
        .map(|i| {
            SplitDescriptor::new(
                DATA + u64::from(i) * u64::from(len),
                len,
                VRING_DESC_F_WRITE as u16,
                0,
            )
            .into()
        })
        .collect();
    mq.add_desc_chains(&descs, 0).unwrap();
}

fn used_len(mq: &MockSplitQueue<GuestMemory>, index: usize) -> u32 {
    mq.used().ring().ref_at(index).unwrap().load().len()
}

fn handler(
    mem: &GuestMemory,
    mq: &MockSplitQueue<GuestMemory>,
    backend: Box<dyn Entropy>,
    rate: RateLimit,
) -> (RngHandler, Arc<CountingInterrupt>) {
    let irq = Arc::new(CountingInterrupt::default());
    let (active, _kick) = active_queue(mq);
    (
        RngHandler::new(mem.clone(), active.queue, irq.clone(), backend, rate),
        irq,
    )
}

#[test]
fn process_fills_each_request_with_backend_bytes() {
    let mem = guest_memory(0x10_0000);
    let mq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
    add_requests(&mq, 2, 100);
    let (mut h, irq) = handler(
        &mem,
        &mq,
        Box::new(FakeEntropy::default()),
        RateLimit::default(),
    );

    assert_eq!(h.process(Instant::now()), 2);

    assert_eq!(mq.used().idx().load(), 2);
    assert_eq!((used_len(&mq, 0), used_len(&mq, 1)), (100, 100));
    let mut got = [0u8; 100];
    mem.read_slice(&mut got, GuestAddress(DATA + 100)).unwrap();
    let want: Vec<u8> = (0..100).map(|i| i as u8 ^ 0x5a).collect();
    assert_eq!(got.as_slice(), want.as_slice());
    assert_eq!(irq.queue(0), 1, "one interrupt for the batch");
}

#[test]
fn process_huge_buffer_gets_at_most_max_request_bytes() {
    let mem = guest_memory(0x40_0000);
    let mq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
    add_requests(&mq, 1, 0x20_0000);
    let (mut h, _irq) = handler(
        &mem,
        &mq,
        Box::new(FakeEntropy::default()),
        RateLimit::default(),
    );

    h.process(Instant::now());

    assert_eq!(used_len(&mq, 0), MAX_REQUEST_BYTES as u32);
}

#[test]
fn process_read_only_buffer_used_with_zero_bytes() {
    let mem = guest_memory(0x10_0000);
    let mq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
    let desc: RawDescriptor = SplitDescriptor::new(DATA, 64, 0, 0).into();
    mq.add_desc_chains(&[desc], 0).unwrap();
    let (mut h, _irq) = handler(
        &mem,
        &mq,
        Box::new(FakeEntropy::default()),
        RateLimit::default(),
    );

    assert_eq!(h.process(Instant::now()), 1);

    assert_eq!((mq.used().idx().load(), used_len(&mq, 0)), (1, 0));
}

#[test]
fn process_failing_backend_answers_with_zero_bytes() {
    let mem = guest_memory(0x10_0000);
    let mq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
    add_requests(&mq, 1, 64);
    let (mut h, _irq) = handler(&mem, &mq, Box::new(FailingEntropy), RateLimit::default());

    h.process(Instant::now());

    assert_eq!((mq.used().idx().load(), used_len(&mq, 0)), (1, 0));
}

#[test]
fn process_empty_bucket_leaves_requests_queued_until_refilled() {
    let mem = guest_memory(0x10_0000);
    let mq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
    add_requests(&mq, 4, 1000);
    let rate = RateLimit {
        bytes_per_sec: 1000,
        burst: 1200,
    };
    let (mut h, _irq) = handler(&mem, &mq, Box::new(FakeEntropy::default()), rate);
    let start = Instant::now();

    // The burst covers one request (1000 bytes + its cost), part of a second.
    let first = h.process(start);
    assert_eq!(first, 2);
    assert_eq!(used_len(&mq, 0), 1000);
    assert!(used_len(&mq, 1) < 1000);
    let wait = h
        .next_timeout()
        .expect("throttled: the worker must come back");
    assert!(wait >= Duration::from_millis(1), "no busy wait: {wait:?}");
    assert_eq!(h.process(start), 0, "no time passed, no tokens");

    // Two seconds later the bucket is full again.
    assert!(h.process(start + Duration::from_secs(2)) >= 1);
    assert!(mq.used().idx().load() >= 3);
}

#[test]
fn token_bucket_refills_at_rate_up_to_burst() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(
        RateLimit {
            bytes_per_sec: 1000,
            burst: 500,
        },
        t0,
    );
    b.take(500);
    assert_eq!(b.available(), 0);
    assert_eq!(b.wait_for(100), Duration::from_millis(100));
    b.refill(t0 + Duration::from_millis(250));
    assert_eq!(b.available(), 250);
    b.refill(t0 + Duration::from_secs(10));
    assert_eq!(b.available(), 500);
    assert_eq!(b.wait_for(100), Duration::ZERO);
}

#[test]
fn activated_device_serves_notifications_and_reset_returns_backend() {
    let mem = guest_memory(0x10_0000);
    let mq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
    let backend = FakeEntropy::default();
    let calls = backend.calls.clone();
    let mut rng = Rng::new(Box::new(backend), RateLimit::default());
    assert_eq!(rng.device_type(), 4);
    assert_eq!(rng.queue_max_sizes(), &[QUEUE_SIZE]);
    let irq = Arc::new(CountingInterrupt::default());
    let (active, kick) = active_queue(&mq);
    rng.activate(ActivationContext {
        mem: mem.clone(),
        queues: vec![active],
        interrupt: irq.clone(),
        acked_features: rng.avail_features(),
        faults: std::sync::Arc::new(crate::virtio::NoFaultSink),
    })
    .unwrap();

    add_requests(&mq, 1, 32);
    kick.write(1).unwrap();
    assert!(wait_until(Duration::from_secs(5), || mq
        .used()
        .idx()
        .load()
        == 1));
    assert_eq!(used_len(&mq, 0), 32);
    assert!(calls.load(Ordering::SeqCst) >= 1);

    assert!(rng.reset(), "the backend came back from the worker");
    rng.shutdown();
}

#[test]
fn activate_wrong_queue_count_fails() {
    let mem = guest_memory(0x10_0000);
    let mut rng = Rng::new(Box::new(FakeEntropy::default()), RateLimit::default());
    let err = rng
        .activate(ActivationContext {
            mem,
            queues: Vec::new(),
            interrupt: Arc::new(CountingInterrupt::default()),
            acked_features: 0,
            faults: std::sync::Arc::new(crate::virtio::NoFaultSink),
        })
        .unwrap_err();
    assert!(matches!(
        err,
        crate::virtio::ActivateError::QueueCount { need: 1, got: 0 }
    ));
}

#[test]
fn getrandom_fills_different_bytes_each_time() {
    let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
    GetRandom.fill(&mut a).unwrap();
    GetRandom.fill(&mut b).unwrap();
    assert_ne!(a, b);
}
