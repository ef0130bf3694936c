//! Devices of the krun VMM: the virtio-mmio transport and the virtio devices behind it.
//!
//! Nothing here talks to KVM. Interrupts leave a device through the [`virtio::Interrupt`]
//! trait and queue notifications arrive as eventfds, so every device can be driven in unit
//! tests with mock queues and a plain `GuestMemoryMmap`.
#![forbid(unsafe_code)]

pub mod balloon;
pub mod block;
pub mod console;
pub mod fs;
pub mod legacy;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod virtio;
pub mod vsock;

#[cfg(test)]
pub(crate) mod fuzz_support;
#[cfg(test)]
pub(crate) mod test_support;

pub use console::Console;
pub use mmio::{MmioTransport, MMIO_REGION_SIZE, QUEUE_NOTIFY_OFFSET};

/// Guest memory as every device sees it: one mmap-backed collection of regions, cheap to
/// clone (regions are reference counted).
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;
