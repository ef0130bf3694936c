//! The virtio-balloon device: features, the 16-byte configuration space, and which queue
//! serves which purpose once the driver has chosen its features.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use log::{debug, error};

use super::backend::FreePages;
use super::worker::{BalloonHandler, Role};
use crate::virtio::features::VIRTIO_F_VERSION_1;
use crate::virtio::{
    device_type, read_config_bytes, ActivateError, ActivationContext, DeviceState, VirtioDevice,
    Worker,
};

/// Feature bits of virtio-balloon (virtio 1.2, section 5.5.3), as masks.
pub mod features {
    /// The driver must tell the host before using pages it gave to the balloon.
    pub const MUST_TELL_HOST: u64 = 1 << 0;
    /// A stats queue exists.
    pub const STATS_VQ: u64 = 1 << 1;
    /// The driver deflates the balloon when the guest runs out of memory.
    pub const DEFLATE_ON_OOM: u64 = 1 << 2;
    /// A free page hinting queue exists (hints are sent only when the host asks).
    pub const FREE_PAGE_HINT: u64 = 1 << 3;
    /// The driver poisons pages: `poison_val` in the config space is valid.
    pub const PAGE_POISON: u64 = 1 << 4;
    /// A free page reporting queue exists.
    pub const REPORTING: u64 = 1 << 5;
}

/// Size of every queue, as upstream.
pub const QUEUE_SIZE: u16 = 256;
/// Five queues at most: inflate, deflate, stats, free page hints, reporting (5.5.2).
const QUEUE_SIZES: &[u16] = &[QUEUE_SIZE; 5];
/// `num_pages`, `actual`, `free_page_hint_cmd_id`, `poison_val`: four le32 (5.5.4).
pub const CONFIG_SIZE: usize = 16;
const ACTUAL_OFFSET: u64 = 4;

/// What upstream libkrun offers. Not `DEFLATE_ON_OOM`: the target stays 0 pages, so the
/// balloon never holds pages the guest could need back.
const AVAIL_FEATURES: u64 =
    VIRTIO_F_VERSION_1 | features::STATS_VQ | features::FREE_PAGE_HINT | features::REPORTING;

/// What the device did with the guest's reports, for the log and for tests; shared with
/// the worker.
#[derive(Debug, Default)]
pub struct BalloonCounters {
    /// Ranges reported free that lay in guest RAM.
    pub reported_ranges: AtomicU64,
    /// Their bytes.
    pub reported_bytes: AtomicU64,
    /// Bytes the backend gave back to the host.
    pub discarded_bytes: AtomicU64,
    /// Ranges refused: outside guest RAM, empty, or the backend failed.
    pub rejected_ranges: AtomicU64,
}

/// virtio-balloon with its [`FreePages`] backend; a "balloon0" worker serves it while
/// active. The backend moves into the worker at activation and comes back on reset.
pub struct Balloon {
    backend: Option<Box<dyn FreePages>>,
    acked_features: u64,
    /// Pages the driver says the balloon holds (the only field it writes).
    actual: u32,
    counters: Arc<BalloonCounters>,
    state: DeviceState<Worker<BalloonHandler>>,
}

impl Balloon {
    pub fn new(backend: Box<dyn FreePages>) -> Self {
        Self {
            backend: Some(backend),
            acked_features: 0,
            actual: 0,
            counters: Arc::default(),
            state: DeviceState::Inactive,
        }
    }

    /// The counters of what the guest reported and what went back to the host.
    pub fn counters(&self) -> Arc<BalloonCounters> {
        self.counters.clone()
    }

    /// The queues the driver sets up for `acked` features, in queue order: inflate and
    /// deflate always, then stats, hints and reporting when negotiated. A queue of a feature
    /// not negotiated takes no index (Linux numbers the ones it creates consecutively).
    pub(crate) fn roles(acked: u64) -> Vec<Role> {
        let mut roles = vec![Role::Inflate, Role::Deflate];
        for (feature, role) in [
            (features::STATS_VQ, Role::Stats),
            (features::FREE_PAGE_HINT, Role::Hint),
            (features::REPORTING, Role::Report),
        ] {
            if acked & feature != 0 {
                roles.push(role);
            }
        }
        roles
    }

    /// Stops the worker (if any) and takes the backend back from it.
    fn stop_worker(&mut self) {
        if let Some(mut worker) = self.state.take_active() {
            match worker.stop() {
                Some(handler) => self.backend = Some(handler.into_backend()),
                None => error!("balloon0: the worker did not hand the backend back"),
            }
        }
    }

    fn config(&self) -> [u8; CONFIG_SIZE] {
        // num_pages, free_page_hint_cmd_id (0: no hinting asked for) and poison_val stay 0.
        let mut config = [0u8; CONFIG_SIZE];
        config[4..8].copy_from_slice(&self.actual.to_le_bytes());
        config
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        device_type::BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        AVAIL_FEATURES
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & AVAIL_FEATURES;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config(), offset, data);
    }

    /// The driver may write `actual` (all four bytes at once); anything else is ignored.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        match (offset, <[u8; 4]>::try_from(data)) {
            (ACTUAL_OFFSET, Ok(bytes)) => self.actual = u32::from_le_bytes(bytes),
            _ => debug!(
                "balloon0: config write of {} bytes at {offset} ignored",
                data.len()
            ),
        }
    }

    fn activate(&mut self, mut ctx: ActivationContext) -> Result<(), ActivateError> {
        if self.state.is_activated() {
            return Err(ActivateError::Backend(std::io::Error::other(
                "balloon already active",
            )));
        }
        let roles = Self::roles(ctx.acked_features & AVAIL_FEATURES);
        let queues = std::mem::take(&mut ctx.queues);
        if queues.len() != roles.len() {
            return Err(ActivateError::QueueCount {
                need: roles.len(),
                got: queues.len(),
            });
        }
        let Some(backend) = self.backend.take() else {
            self.state = DeviceState::Failed;
            return Err(ActivateError::Backend(std::io::Error::other(
                "the free page backend was lost when an earlier worker failed",
            )));
        };
        let mut evts = Vec::with_capacity(queues.len());
        let mut served = Vec::with_capacity(queues.len());
        for (index, (active, role)) in queues.into_iter().zip(roles).enumerate() {
            evts.push((index, active.notify_evt));
            served.push((role, active.queue));
        }
        let handler = BalloonHandler::new(
            ctx.mem,
            served,
            ctx.interrupt,
            backend,
            self.counters.clone(),
        );
        self.state
            .start_worker("balloon0", evts, handler, ctx.faults)
    }

    fn reset(&mut self) -> bool {
        self.stop_worker();
        self.state = DeviceState::Inactive;
        self.acked_features = 0;
        self.actual = 0;
        self.backend.is_some()
    }

    fn shutdown(&mut self) {
        self.stop_worker();
        let c = &self.counters;
        debug!(
            "balloon0: the guest reported {} free ranges ({} MiB), {} MiB returned to the \
             host, {} ranges refused",
            c.reported_ranges.load(Ordering::Relaxed),
            c.reported_bytes.load(Ordering::Relaxed) >> 20,
            c.discarded_bytes.load(Ordering::Relaxed) >> 20,
            c.rejected_ranges.load(Ordering::Relaxed)
        );
    }
}
