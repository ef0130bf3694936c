//! The contract between the virtio-mmio transport and a virtio device.
//!
//! Lifecycle of a device (virtio 1.2, section 3.1):
//!
//! ```text
//!   new() ──▶ Inactive ──(driver sets DRIVER_OK)──▶ activate(ActivationContext) ──▶ Active
//!                ▲                                                                  │
//!                └──────────────────── reset() (driver writes status 0) ◀───────────┘
//!   shutdown(): from any state, when the VM ends; flushes output and joins workers.
//! ```
//!
//! A device never sees an MMIO offset: the transport decodes registers and calls these
//! methods. An active device usually runs a worker thread that waits on the queue eventfds
//! (ioeventfds registered by the VMM) and on its backend's fds.

use std::io;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use crate::GuestMemory;

mod worker;
pub use worker::{QueueHandler, Registry, Worker, MAX_HANDLER_TOKEN};

/// Where a device reports that it failed for good while the VM runs (its worker thread
/// panicked): the VMM's implementation stops the VM and makes the run return an error naming
/// the device. Called from the failing device's worker thread, once per failure.
pub trait FaultSink: Send + Sync {
    /// `device` (the worker's name, e.g. `net0`) stopped serving; `reason` says why.
    fn device_failed(&self, device: &str, reason: &str);
}

/// A [`FaultSink`] that takes no action: the worker's own error line is all that happens
/// (for tests, and transports that no VM watches).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFaultSink;

impl FaultSink for NoFaultSink {
    fn device_failed(&self, _device: &str, _reason: &str) {}
}

/// Virtio device ids (virtio 1.2, section 5).
pub mod device_type {
    use virtio_bindings::virtio_ids;

    pub const CONSOLE: u32 = virtio_ids::VIRTIO_ID_CONSOLE;
    pub const RNG: u32 = virtio_ids::VIRTIO_ID_RNG;
    pub const BLOCK: u32 = virtio_ids::VIRTIO_ID_BLOCK;
    pub const NET: u32 = virtio_ids::VIRTIO_ID_NET;
    pub const VSOCK: u32 = virtio_ids::VIRTIO_ID_VSOCK;
    pub const FS: u32 = virtio_ids::VIRTIO_ID_FS;
    pub const BALLOON: u32 = virtio_ids::VIRTIO_ID_BALLOON;
}

/// Feature bits shared by every device (virtio 1.2, section 6), as masks of the bit numbers
/// virtio-bindings gives.
pub mod features {
    use virtio_bindings::{virtio_config, virtio_ring};

    pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_config::VIRTIO_F_VERSION_1;
    pub const VIRTIO_F_ACCESS_PLATFORM: u64 = 1 << virtio_config::VIRTIO_F_ACCESS_PLATFORM;
    pub const VIRTIO_F_IN_ORDER: u64 = 1 << virtio_config::VIRTIO_F_IN_ORDER;
    pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << virtio_ring::VIRTIO_RING_F_EVENT_IDX;
    pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;

    #[cfg(test)]
    mod tests {
        #[test]
        fn masks_match_the_spec() {
            assert_eq!(super::VIRTIO_F_VERSION_1, 1 << 32);
            assert_eq!(super::VIRTIO_F_ACCESS_PLATFORM, 1 << 33);
            assert_eq!(super::VIRTIO_F_IN_ORDER, 1 << 35);
            assert_eq!(super::VIRTIO_RING_F_EVENT_IDX, 1 << 29);
            assert_eq!(super::VIRTIO_RING_F_INDIRECT_DESC, 1 << 28);
            assert_eq!(
                (
                    super::super::device_type::CONSOLE,
                    super::super::device_type::FS
                ),
                (3, 26)
            );
            assert_eq!(super::super::device_type::VSOCK, 19);
        }
    }
}

/// How a device raises an interrupt in the guest.
///
/// The production implementation sets the transport's interrupt status bits and writes an
/// eventfd the VMM registered as a KVM irqfd; tests count the calls.
pub trait Interrupt: Send + Sync {
    /// The device has put buffers in the used ring of queue `queue_index`.
    fn signal_queue(&self, queue_index: u16) -> io::Result<()>;
    /// The device's configuration space changed.
    fn signal_config(&self) -> io::Result<()>;
}

/// Interrupts the guest for queue `index` after the device put buffers in its used ring,
/// unless the driver suppressed the notification (EVENT_IDX or NO_INTERRUPT). When the
/// suppression check itself fails, the guest is interrupted anyway: a spurious interrupt
/// costs little, a lost one can stall the driver. `id` names the device in log lines.
pub fn signal_used(
    queue: &mut Queue,
    mem: &GuestMemory,
    interrupt: &dyn Interrupt,
    index: u16,
    id: &str,
) {
    let notify = queue.needs_notification(mem).unwrap_or_else(|e| {
        log::debug!("{id}: needs_notification failed ({e}), interrupting");
        true
    });
    if notify {
        if let Err(e) = interrupt.signal_queue(index) {
            log::error!("{id}: cannot interrupt the guest: {e}");
        }
    }
}

/// One queue handed to a device at activation: the negotiated queue state and the eventfd
/// that becomes readable whenever the driver notifies that queue.
pub struct ActiveQueue {
    pub queue: Queue,
    pub notify_evt: EventFd,
}

/// Everything a device needs to start serving its queues.
pub struct ActivationContext {
    pub mem: GuestMemory,
    /// Queues in the device's queue order, only those the driver marked ready.
    pub queues: Vec<ActiveQueue>,
    pub interrupt: Arc<dyn Interrupt>,
    /// The features the driver acknowledged (also given earlier to `set_acked_features`).
    pub acked_features: u64,
    /// Where the device's worker reports a failure that ends it (see [`FaultSink`]).
    pub faults: Arc<dyn FaultSink>,
}

impl ActivationContext {
    /// Takes the queues out of the context, checking the driver enabled exactly the `N`
    /// queues the device serves; they come back in the device's queue order.
    pub fn take_queues<const N: usize>(&mut self) -> Result<[ActiveQueue; N], ActivateError> {
        std::mem::take(&mut self.queues)
            .try_into()
            .map_err(|queues: Vec<ActiveQueue>| ActivateError::QueueCount {
                need: N,
                got: queues.len(),
            })
    }
}

/// Serves a read of a device configuration space laid out in `config`: copies from `offset`
/// on, and bytes past the end (or an offset past it) read as zero, as drivers may read any
/// width at any offset.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Some(src) = usize::try_from(offset)
        .ok()
        .and_then(|start| config.get(start..))
    else {
        return;
    };
    let n = src.len().min(data.len());
    data[..n].copy_from_slice(&src[..n]);
}

/// Where a device is in its lifecycle; every device keeps one. `A` is what an active device
/// owns (usually its [`Worker`]).
#[derive(Debug, Default)]
pub enum DeviceState<A> {
    /// Not activated yet, or reset by the driver.
    #[default]
    Inactive,
    /// Serving its queues.
    Activated(A),
    /// Activation failed, or the device stopped on an error: it serves nothing until the
    /// driver resets it.
    Failed,
}

impl<A> DeviceState<A> {
    pub fn is_activated(&self) -> bool {
        matches!(self, Self::Activated(_))
    }

    /// Leaves `Inactive` behind and returns what the active device owned, if it was active.
    pub fn take_active(&mut self) -> Option<A> {
        match std::mem::take(self) {
            Self::Activated(active) => Some(active),
            _ => None,
        }
    }
}

impl<H: QueueHandler> DeviceState<Worker<H>> {
    /// Starts `handler` on a worker thread called `name`, woken by `queue_evts` (see
    /// [`Worker::spawn`]), and records the outcome: Activated, or Failed when the thread
    /// could not start (the handler, and the backend in it, went down with it). A panic on
    /// the worker is reported to `faults`.
    pub fn start_worker(
        &mut self,
        name: impl Into<String>,
        queue_evts: Vec<(usize, EventFd)>,
        handler: H,
        faults: Arc<dyn FaultSink>,
    ) -> Result<(), ActivateError> {
        match Worker::spawn_reporting(name, queue_evts, handler, faults) {
            Ok(worker) => {
                *self = Self::Activated(worker);
                Ok(())
            }
            Err(e) => {
                *self = Self::Failed;
                Err(ActivateError::Worker(e))
            }
        }
    }
}

/// Why a device could not be activated; the transport then sets DEVICE_NEEDS_RESET.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("the driver enabled {got} queues, the device needs {need}")]
    QueueCount { need: usize, got: usize },
    #[error("could not start the device worker")]
    Worker(#[source] io::Error),
    #[error("the device backend failed")]
    Backend(#[source] io::Error),
}

/// A virtio device as the transport sees it.
pub trait VirtioDevice: Send {
    /// The virtio device id (see [`device_type`]).
    fn device_type(&self) -> u32;
    /// The maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Features the device offers, `VIRTIO_F_VERSION_1` included.
    fn avail_features(&self) -> u64;
    /// The subset of `avail_features` the driver accepted (FEATURES_OK).
    fn set_acked_features(&mut self, features: u64);
    /// Reads the device configuration space at `offset`; bytes past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space; ignored by devices without writable fields.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Starts serving the queues.
    fn activate(&mut self, ctx: ActivationContext) -> Result<(), ActivateError>;
    /// Stops serving the queues and returns to the inactive state. Returns false when the
    /// device cannot be reset (the transport then reports DEVICE_NEEDS_RESET).
    fn reset(&mut self) -> bool {
        false
    }
    /// The VM is ending: finish what the guest already submitted (flush output, sync files),
    /// stop and join every worker. Called once; the device is dropped right after.
    fn shutdown(&mut self) {}
    /// The shared memory region with this id (virtio 1.2, 2.10), if the device has one.
    fn shm_region(&self, _id: u32) -> Option<ShmRegion> {
        None
    }
}

/// One shared memory region of a device (virtio 1.2, 2.10): guest physical memory the
/// device and driver share outside the queues (virtio-fs's DAX window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShmRegion {
    /// Guest physical address of the region.
    pub base: u64,
    /// Size in bytes.
    pub len: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_config_bytes_past_end_reads_zero() {
        let config = [1u8, 2, 3, 4];
        let mut data = [0xffu8; 4];
        read_config_bytes(&config, 2, &mut data);
        assert_eq!(data, [3, 4, 0, 0]);
        read_config_bytes(&config, 9, &mut data);
        assert_eq!(data, [0, 0, 0, 0]);
        read_config_bytes(&config, u64::MAX, &mut data);
        assert_eq!(data, [0, 0, 0, 0]);
    }
}
