//! The balloon's queue work on the device worker. Only the reporting queue does real work:
//! each chain the driver queues there lists free guest ranges, handed to the backend to
//! give back to the host, then the chain is returned (5.5.6.7). The stats buffer is held
//! (returning it asks the driver for fresh stats, which it sends at once: a loop), and
//! buffers on the inflate, deflate and hint queues, which a driver only uses when the host
//! asks for pages or hints (this device never does), are returned untouched.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use log::debug;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemory as _};

use super::backend::FreePages;
use super::device::BalloonCounters;
use crate::virtio::{Interrupt, QueueHandler, Registry};
use crate::GuestMemory;

/// What a queue is for, by its place among the queues the driver set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Inflate,
    Deflate,
    Stats,
    Hint,
    Report,
}

/// The active device's queues, backend and counters.
pub(crate) struct BalloonHandler {
    mem: GuestMemory,
    queues: Vec<(Role, Queue)>,
    interrupt: Arc<dyn Interrupt>,
    backend: Box<dyn FreePages>,
    counters: Arc<BalloonCounters>,
    /// A queue this device never asks the driver to use was used (logged once).
    unasked_logged: bool,
    /// The backend failed once already (logged once, not per range).
    backend_failed: bool,
}

impl BalloonHandler {
    pub(crate) fn new(
        mem: GuestMemory,
        queues: Vec<(Role, Queue)>,
        interrupt: Arc<dyn Interrupt>,
        backend: Box<dyn FreePages>,
        counters: Arc<BalloonCounters>,
    ) -> Self {
        Self {
            mem,
            queues,
            interrupt,
            backend,
            counters,
            unasked_logged: false,
            backend_failed: false,
        }
    }

    pub(crate) fn into_backend(self) -> Box<dyn FreePages> {
        self.backend
    }

    /// Serves queue `index` (in the driver's queue order); returns how many chains were
    /// returned to the driver.
    pub(crate) fn process(&mut self, index: usize) -> usize {
        let Some(&(role, _)) = self.queues.get(index) else {
            return 0;
        };
        let used = match role {
            Role::Stats => 0,
            Role::Report => self.process_reports(index),
            Role::Inflate | Role::Deflate | Role::Hint => {
                let n = self.return_untouched(index);
                if n > 0 && !self.unasked_logged {
                    debug!(
                        "balloon0: the driver used the {role:?} queue unasked; buffers returned"
                    );
                    self.unasked_logged = true;
                }
                n
            }
        };
        if used > 0 {
            let (_, queue) = &mut self.queues[index];
            let interrupt = self.interrupt.as_ref();
            crate::virtio::signal_used(queue, &self.mem, interrupt, index as u16, "balloon0");
        }
        used
    }

    /// Every reporting chain: each of its buffers (readable or writable: Linux queues them
    /// as device-writable) is one free range.
    fn process_reports(&mut self, index: usize) -> usize {
        // The chain borrows this handle to guest memory, not the handler, which `report`
        // needs mutably.
        let mem = self.mem.clone();
        let mut used = 0;
        loop {
            let (_, queue) = &mut self.queues[index];
            let Some(chain) = queue.pop_descriptor_chain(&mem) else {
                break;
            };
            let head = chain.head_index();
            for desc in chain {
                self.report(desc.addr(), u64::from(desc.len()));
            }
            let (_, queue) = &mut self.queues[index];
            if let Err(e) = queue.add_used(&mem, head, 0) {
                debug!("balloon0: cannot return a report: {e}");
            }
            used += 1;
        }
        used
    }

    /// One range the guest reported free: checked against guest RAM, then given back.
    fn report(&mut self, addr: GuestAddress, len: u64) {
        let c = &self.counters;
        let in_ram =
            len > 0 && usize::try_from(len).is_ok_and(|len| self.mem.check_range(addr, len));
        if !in_ram {
            debug!(
                "balloon0: reported range {:#x}+{len:#x} is not in guest RAM, ignored",
                addr.0
            );
            c.rejected_ranges.fetch_add(1, Ordering::Relaxed);
            return;
        }
        c.reported_ranges.fetch_add(1, Ordering::Relaxed);
        c.reported_bytes.fetch_add(len, Ordering::Relaxed);
        match self.backend.discard(&self.mem, addr, len) {
            Ok(bytes) => {
                c.discarded_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Err(e) => {
                c.rejected_ranges.fetch_add(1, Ordering::Relaxed);
                if !self.backend_failed {
                    log::warn!(
                        "balloon0: cannot give {:#x}+{len:#x} back to the host (pages stay \
                         resident; logged once): {e}",
                        addr.0
                    );
                    self.backend_failed = true;
                }
            }
        }
    }

    fn return_untouched(&mut self, index: usize) -> usize {
        let (_, queue) = &mut self.queues[index];
        let mut used = 0;
        while let Some(chain) = queue.pop_descriptor_chain(&self.mem) {
            if let Err(e) = queue.add_used(&self.mem, chain.head_index(), 0) {
                debug!("balloon0: cannot return a buffer: {e}");
            }
            used += 1;
        }
        used
    }
}

impl QueueHandler for BalloonHandler {
    fn start(&mut self, _registry: &Registry) -> std::io::Result<()> {
        // The driver may have queued reports before it set DRIVER_OK.
        for index in 0..self.queues.len() {
            self.process(index);
        }
        Ok(())
    }

    fn queue_notified(&mut self, index: usize, _registry: &Registry) {
        self.process(index);
    }
}
