//! What every device's tests need: guest memory, a counting interrupt, mock queues turned
//! into the [`ActiveQueue`]s an activation hands over, and waiting for a worker thread.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::virtio::{ActiveQueue, Interrupt};
use crate::GuestMemory;

/// Queue interrupts are counted per queue index up to this many queues; the rest share the
/// last counter.
const COUNTED_QUEUES: usize = 16;

/// An interrupt that counts what the device raised, per queue and for config changes.
#[derive(Default)]
pub struct CountingInterrupt {
    queues: [AtomicUsize; COUNTED_QUEUES],
    config: AtomicUsize,
}

impl CountingInterrupt {
    /// Interrupts raised for queue `index`.
    pub fn queue(&self, index: u16) -> usize {
        self.queues[usize::from(index).min(COUNTED_QUEUES - 1)].load(Ordering::SeqCst)
    }

    /// Queue interrupts raised for any queue.
    pub fn queues_total(&self) -> usize {
        self.queues.iter().map(|c| c.load(Ordering::SeqCst)).sum()
    }

    /// Configuration change interrupts raised.
    pub fn config(&self) -> usize {
        self.config.load(Ordering::SeqCst)
    }
}

impl Interrupt for CountingInterrupt {
    fn signal_queue(&self, queue_index: u16) -> io::Result<()> {
        self.queues[usize::from(queue_index).min(COUNTED_QUEUES - 1)]
            .fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn signal_config(&self) -> io::Result<()> {
        self.config.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Guest memory of `size` bytes from address 0.
pub fn guest_memory(size: usize) -> GuestMemory {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), size)]).expect("test guest memory")
}

/// The queue `mock` plays the driver of, ready as an activation hands it over, with a
/// non-blocking notify eventfd the test keeps a clone of (the second value) to notify.
pub fn active_queue(mock: &MockSplitQueue<'_, GuestMemory>) -> (ActiveQueue, EventFd) {
    let notify_evt = EventFd::new(EFD_NONBLOCK).expect("eventfd");
    let kick = notify_evt.try_clone().expect("eventfd clone");
    let queue = mock.create_queue::<Queue>().expect("queue from mock");
    (ActiveQueue { queue, notify_evt }, kick)
}

/// Adds one chain of `(addr, len, device_writable)` buffers to `mq` at descriptor `first`,
/// the descriptors linked in order.
pub fn add_chain(mq: &MockSplitQueue<'_, GuestMemory>, first: u16, bufs: &[(u64, u32, bool)]) {
    let descs: Vec<RawDescriptor> = bufs
        .iter()
        .enumerate()
        .map(|(i, &(addr, len, writable))| {
            let mut flags = if writable { VRING_DESC_F_WRITE } else { 0 } as u16;
            let last = i == bufs.len() - 1;
            if !last {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let next = if last { 0 } else { first + i as u16 + 1 };
            SplitDescriptor::new(addr, len, flags, next).into()
        })
        .collect();
    mq.add_desc_chains(&descs, first)
        .expect("chain fits the mock queue");
}

/// Polls `done` until it holds or `timeout` passes; returns whether it held. For waiting on
/// a device's worker thread without a fixed sleep.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_queue_and_config() {
        let irq = CountingInterrupt::default();
        irq.signal_queue(1).unwrap();
        irq.signal_queue(1).unwrap();
        irq.signal_queue(u16::MAX).unwrap();
        irq.signal_config().unwrap();
        assert_eq!((irq.queue(0), irq.queue(1)), (0, 2));
        assert_eq!((irq.queues_total(), irq.config()), (3, 1));
    }

    #[test]
    fn active_queue_notifies_through_the_kept_eventfd() {
        let mem = guest_memory(0x1_0000);
        let mock = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        let (active, kick) = active_queue(&mock);
        kick.write(1).unwrap();
        assert_eq!(active.notify_evt.read().unwrap(), 1);
        let mut polls = 0;
        assert!(wait_until(Duration::from_secs(1), || {
            polls += 1;
            polls == 3
        }));
        assert!(!wait_until(Duration::from_millis(5), || false));
    }
}
