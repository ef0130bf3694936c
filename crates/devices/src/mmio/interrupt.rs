//! The transport's [`Interrupt`]: InterruptStatus bits plus a write to the irqfd.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use super::regs::interrupt::{CONFIG_CHANGE, USED_BUFFER};
use crate::virtio::Interrupt;

/// Raises the device's interrupt line: the bit is set before the eventfd is written so the
/// guest's handler, which reads InterruptStatus, never sees the interrupt without its cause.
///
/// The VMM registers the eventfd as a KVM irqfd; the transport shares `status` and
/// `config_generation` to serve the InterruptStatus and ConfigGeneration registers.
pub struct MmioInterrupt {
    status: Arc<AtomicU32>,
    config_generation: Arc<AtomicU32>,
    irq_evt: EventFd,
}

impl MmioInterrupt {
    pub(crate) fn new(
        status: Arc<AtomicU32>,
        config_generation: Arc<AtomicU32>,
        irq_evt: EventFd,
    ) -> Self {
        Self {
            status,
            config_generation,
            irq_evt,
        }
    }

    fn raise(&self, bit: u32) -> io::Result<()> {
        self.status.fetch_or(bit, Ordering::SeqCst);
        self.irq_evt.write(1)
    }
}

impl Interrupt for MmioInterrupt {
    fn signal_queue(&self, _queue_index: u16) -> io::Result<()> {
        // virtio-mmio has one interrupt line for all queues; the driver scans every queue.
        self.raise(USED_BUFFER)
    }

    fn signal_config(&self) -> io::Result<()> {
        // A config change bumps the generation so a driver reading a multi-word field
        // across the change retries (virtio 1.2, section 2.5.1).
        self.config_generation.fetch_add(1, Ordering::SeqCst);
        self.raise(CONFIG_CHANGE)
    }
}
