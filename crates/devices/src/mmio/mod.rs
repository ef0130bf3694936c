//! The virtio-mmio transport (virtio 1.2, section 4.2), version 2 registers.
//!
//! [`MmioTransport`] owns a device's register state and turns guest register accesses into
//! [`VirtioDevice`](crate::virtio::VirtioDevice) calls; queue notifications and interrupts
//! travel through eventfds the VMM wires to KVM (ioeventfd, irqfd).

mod interrupt;
pub mod regs;
mod transport;

pub use interrupt::MmioInterrupt;
pub use transport::MmioTransport;

/// Size of one device's MMIO region: registers up to 0x100, then configuration space.
pub const MMIO_REGION_SIZE: u64 = 0x1000;
/// Offset of QueueNotify, where the VMM registers the per-queue ioeventfds.
pub const QUEUE_NOTIFY_OFFSET: u64 = regs::QUEUE_NOTIFY;

#[cfg(test)]
mod tests;
