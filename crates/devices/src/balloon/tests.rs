//! virtio-balloon tests: mock queues play the driver, a fake backend records what it was
//! asked to give back.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::GuestAddress;

use super::worker::{BalloonHandler, Role};
use super::*;
use crate::test_support::{active_queue, add_chain, guest_memory, wait_until, CountingInterrupt};
use crate::virtio::{ActivateError, ActivationContext, VirtioDevice};
use crate::GuestMemory;

const MEM_SIZE: usize = 0x80_0000;
const PAGE: u64 = 0x1000;
const FREE: u64 = 0x20_0000;

/// Records every range it is asked to discard; fails them all when `fail` is set.
#[derive(Clone, Default)]
struct FakeFreePages {
    calls: Arc<Mutex<Vec<(u64, u64)>>>,
    fail: bool,
}

impl FakeFreePages {
    fn calls(&self) -> Vec<(u64, u64)> {
        self.calls.lock().unwrap().clone()
    }
}

impl FreePages for FakeFreePages {
    fn discard(
        &mut self,
        _mem: &GuestMemory,
        addr: GuestAddress,
        len: u64,
    ) -> std::io::Result<u64> {
        self.calls.lock().unwrap().push((addr.0, len));
        if self.fail {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(len)
    }
}

/// A handler serving `roles`, one mock queue each (laid out 64 KiB apart from address 0).
struct Harness<'a> {
    mocks: Vec<MockSplitQueue<'a, GuestMemory>>,
    handler: BalloonHandler,
    irq: Arc<CountingInterrupt>,
    counters: Arc<BalloonCounters>,
}

impl<'a> Harness<'a> {
    fn new(mem: &'a GuestMemory, roles: &[Role], backend: FakeFreePages) -> Self {
        let mocks: Vec<_> = (0..roles.len())
            .map(|i| MockSplitQueue::create(mem, GuestAddress(i as u64 * 0x1_0000), 16))
            .collect();
        let queues: Vec<(Role, Queue)> = roles
            .iter()
            .zip(&mocks)
            .map(|(&role, mq)| (role, active_queue(mq).0.queue))
            .collect();
        let irq = Arc::new(CountingInterrupt::default());
        let counters = Arc::new(BalloonCounters::default());
        let handler = BalloonHandler::new(
            mem.clone(),
            queues,
            irq.clone(),
            Box::new(backend),
            counters.clone(),
        );
        Self {
            mocks,
            handler,
            irq,
            counters,
        }
    }

    fn used_idx(&self, queue: usize) -> u16 {
        self.mocks[queue].used().idx().load()
    }

    fn used_len(&self, queue: usize, slot: usize) -> u32 {
        self.mocks[queue]
            .used()
            .ring()
            .ref_at(slot)
            .unwrap()
            .load()
            .len()
    }
}

#[test]
fn roles_follow_the_negotiated_features_in_queue_order() {
    let all = features::STATS_VQ | features::FREE_PAGE_HINT | features::REPORTING;
    assert_eq!(
        Balloon::roles(all),
        [
            Role::Inflate,
            Role::Deflate,
            Role::Stats,
            Role::Hint,
            Role::Report
        ]
    );
    // Without stats and hints the reporting queue is the third one the driver creates.
    assert_eq!(
        Balloon::roles(features::REPORTING),
        [Role::Inflate, Role::Deflate, Role::Report]
    );
    assert_eq!(Balloon::roles(0), [Role::Inflate, Role::Deflate]);
}

#[test]
fn report_chain_discards_every_buffer_and_is_returned_with_zero_length() {
    let mem = guest_memory(MEM_SIZE);
    let backend = FakeFreePages::default();
    let mut h = Harness::new(&mem, &[Role::Report], backend.clone());
    // Linux queues its scatterlist as device-writable buffers; readable ones count too.
    add_chain(
        &h.mocks[0],
        0,
        &[(FREE, 0x20_0000, true), (2 * FREE, 0x40_0000, false)],
    );

    assert_eq!(h.handler.process(0), 1);

    assert_eq!(backend.calls(), [(FREE, 0x20_0000), (2 * FREE, 0x40_0000)]);
    assert_eq!((h.used_idx(0), h.used_len(0, 0)), (1, 0));
    assert_eq!(h.irq.queue(0), 1);
    assert_eq!(h.counters.reported_ranges.load(Ordering::SeqCst), 2);
    assert_eq!(h.counters.reported_bytes.load(Ordering::SeqCst), 0x60_0000);
    assert_eq!(h.counters.discarded_bytes.load(Ordering::SeqCst), 0x60_0000);
}

#[test]
fn report_outside_guest_ram_is_refused_and_the_rest_still_served() {
    let mem = guest_memory(MEM_SIZE);
    let backend = FakeFreePages::default();
    let mut h = Harness::new(&mem, &[Role::Report], backend.clone());
    let end = MEM_SIZE as u64;
    add_chain(
        &h.mocks[0],
        0,
        &[
            (0xf000_0000, 0x1000, true),         // past the end of RAM
            (end - PAGE, 2 * PAGE as u32, true), // straddles the end
            (FREE, 0, true),                     // empty
            (u64::MAX - 0xfff, 0x1000, true),    // wraps around
            (FREE, PAGE as u32, true),           // fine
        ],
    );

    assert_eq!(h.handler.process(0), 1);

    assert_eq!(backend.calls(), [(FREE, PAGE)]);
    assert_eq!(h.counters.rejected_ranges.load(Ordering::SeqCst), 4);
    assert_eq!((h.used_idx(0), h.used_len(0, 0)), (1, 0));
}

#[test]
fn report_looping_chain_ends_after_queue_size_descriptors() {
    let mem = guest_memory(MEM_SIZE);
    let backend = FakeFreePages::default();
    let mut h = Harness::new(&mem, &[Role::Report], backend.clone());
    add_chain(
        &h.mocks[0],
        0,
        &[(FREE, 0x1000, true), (FREE, 0x2000, true)],
    );
    // Descriptor 1 now points back at descriptor 0.
    let flags = (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16;
    h.mocks[0]
        .desc_table()
        .store(1, SplitDescriptor::new(FREE, 0x2000, flags, 0).into())
        .unwrap();

    assert_eq!(h.handler.process(0), 1);

    let calls = backend.calls().len();
    assert!((1..=16).contains(&calls), "{calls} discards for a loop");
    assert_eq!(h.used_idx(0), 1);
}

#[test]
fn report_chain_with_bad_indirect_table_is_returned_without_discards() {
    let mem = guest_memory(MEM_SIZE);
    let backend = FakeFreePages::default();
    let mut h = Harness::new(&mem, &[Role::Report], backend.clone());
    // An indirect descriptor whose table lies outside guest memory.
    let indirect = virtio_bindings::bindings::virtio_ring::VRING_DESC_F_INDIRECT as u16;
    h.mocks[0]
        .add_desc_chains(
            &[SplitDescriptor::new(0xf000_0000, 16 * 4, indirect, 0).into()],
            0,
        )
        .unwrap();

    assert_eq!(h.handler.process(0), 1);

    assert!(backend.calls().is_empty());
    assert_eq!(h.used_idx(0), 1);
}

#[test]
fn report_failing_backend_still_returns_the_chain() {
    let mem = guest_memory(MEM_SIZE);
    let backend = FakeFreePages {
        fail: true,
        ..Default::default()
    };
    let mut h = Harness::new(&mem, &[Role::Report], backend.clone());
    add_chain(&h.mocks[0], 0, &[(FREE, 0x1000, true)]);
    add_chain(&h.mocks[0], 1, &[(FREE, 0x1000, true)]);

    assert_eq!(h.handler.process(0), 2);

    assert_eq!(backend.calls().len(), 2);
    assert_eq!(h.counters.rejected_ranges.load(Ordering::SeqCst), 2);
    assert_eq!(h.counters.discarded_bytes.load(Ordering::SeqCst), 0);
    assert_eq!(h.used_idx(0), 2);
}

#[test]
fn stats_buffer_is_held_and_inflate_buffers_returned_untouched() {
    let mem = guest_memory(MEM_SIZE);
    let backend = FakeFreePages::default();
    let roles = [Role::Inflate, Role::Deflate, Role::Stats];
    let mut h = Harness::new(&mem, &roles, backend.clone());
    // A page frame number on the inflate queue, a stats buffer on the stats queue.
    add_chain(&h.mocks[0], 0, &[(FREE, 4, false)]);
    add_chain(&h.mocks[2], 0, &[(FREE + 0x100, 60, false)]);

    assert_eq!(h.handler.process(0), 1);
    assert_eq!(h.handler.process(2), 0);

    assert!(backend.calls().is_empty(), "the host never asked for pages");
    assert_eq!((h.used_idx(0), h.used_len(0, 0)), (1, 0));
    assert_eq!(
        h.used_idx(2),
        0,
        "returning the stats buffer would ask for more"
    );
    assert_eq!((h.irq.queue(0), h.irq.queue(2)), (1, 0));
    assert_eq!(h.handler.process(7), 0, "no such queue");
}

#[test]
fn config_space_reads_target_zero_and_the_actual_the_driver_wrote() {
    let mut b = Balloon::new(Box::new(FakeFreePages::default()));
    assert_eq!(b.device_type(), 5);
    assert_eq!(b.queue_max_sizes(), &[QUEUE_SIZE; 5]);
    let want = crate::virtio::features::VIRTIO_F_VERSION_1
        | features::STATS_VQ
        | features::FREE_PAGE_HINT
        | features::REPORTING;
    assert_eq!(b.avail_features(), want);

    b.write_config(4, &7u32.to_le_bytes());
    b.write_config(0, &9u32.to_le_bytes()); // num_pages is the host's: ignored
    b.write_config(5, &[1]); // a partial write: ignored

    let mut config = [0xffu8; CONFIG_SIZE];
    b.read_config(0, &mut config);
    assert_eq!(config, [0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut past = [0xffu8; 4];
    b.read_config(CONFIG_SIZE as u64, &mut past);
    assert_eq!(past, [0; 4]);
}

fn context(mem: &GuestMemory, queues: Vec<crate::virtio::ActiveQueue>) -> ActivationContext {
    ActivationContext {
        mem: mem.clone(),
        queues,
        interrupt: Arc::new(CountingInterrupt::default()),
        acked_features: crate::virtio::features::VIRTIO_F_VERSION_1 | features::REPORTING,
        faults: std::sync::Arc::new(crate::virtio::NoFaultSink),
    }
}

#[test]
fn activated_device_serves_reports_and_reset_returns_the_backend() {
    let mem = guest_memory(MEM_SIZE);
    let backend = FakeFreePages::default();
    let mut b = Balloon::new(Box::new(backend.clone()));
    let counters = b.counters();
    // Inflate, deflate, reporting: what a driver that took only REPORTING sets up.
    let mocks: Vec<_> = (0..3)
        .map(|i| MockSplitQueue::create(&mem, GuestAddress(i * 0x1_0000), 16))
        .collect();
    let (queues, kicks): (Vec<_>, Vec<_>) = mocks.iter().map(active_queue).unzip();
    b.activate(context(&mem, queues)).unwrap();

    add_chain(&mocks[2], 0, &[(FREE, 0x20_0000, true)]);
    kicks[2].write(1).unwrap();

    assert!(wait_until(Duration::from_secs(5), || mocks[2]
        .used()
        .idx()
        .load()
        == 1));
    assert_eq!(backend.calls(), [(FREE, 0x20_0000)]);
    assert_eq!(counters.discarded_bytes.load(Ordering::SeqCst), 0x20_0000);
    assert!(b.reset(), "the backend came back from the worker");
    b.shutdown();
}

#[test]
fn activate_with_queues_not_matching_the_features_fails() {
    let mem = guest_memory(MEM_SIZE);
    let mut b = Balloon::new(Box::new(FakeFreePages::default()));
    let mock = MockSplitQueue::create(&mem, GuestAddress(0), 16);
    let err = b
        .activate(context(&mem, vec![active_queue(&mock).0]))
        .unwrap_err();
    assert!(matches!(err, ActivateError::QueueCount { need: 3, got: 1 }));
}
