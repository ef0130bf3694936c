//! The virtio-rng device: one request queue, no device features, no config space.

use log::error;

use super::backend::Entropy;
use super::worker::{RateLimit, RngHandler};
use crate::virtio::features::VIRTIO_F_VERSION_1;
use crate::virtio::{
    device_type, ActivateError, ActivationContext, DeviceState, VirtioDevice, Worker,
};

/// Size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: &[u16] = &[QUEUE_SIZE];

/// virtio-rng with its entropy backend; an "rng0" worker serves it while active. The
/// backend moves into the worker at activation and comes back on reset.
pub struct Rng {
    backend: Option<Box<dyn Entropy>>,
    rate: RateLimit,
    acked_features: u64,
    state: DeviceState<Worker<RngHandler>>,
}

impl Rng {
    pub fn new(backend: Box<dyn Entropy>, rate: RateLimit) -> Self {
        Self {
            backend: Some(backend),
            rate,
            acked_features: 0,
            state: DeviceState::Inactive,
        }
    }

    /// Stops the worker (if any) and takes the backend back from it.
    fn stop_worker(&mut self) {
        if let Some(mut worker) = self.state.take_active() {
            match worker.stop() {
                Some(handler) => self.backend = Some(handler.into_backend()),
                None => error!("rng0: the worker did not hand the backend back"),
            }
        }
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        device_type::RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features();
    }

    /// virtio-rng has no configuration space (5.4.4): everything reads as zero.
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, mut ctx: ActivationContext) -> Result<(), ActivateError> {
        let [request] = ctx.take_queues::<1>()?;
        if self.state.is_activated() {
            return Err(ActivateError::Backend(std::io::Error::other(
                "rng already active",
            )));
        }
        let Some(backend) = self.backend.take() else {
            self.state = DeviceState::Failed;
            return Err(ActivateError::Backend(std::io::Error::other(
                "the entropy backend was lost when an earlier worker failed",
            )));
        };
        let handler = RngHandler::new(ctx.mem, request.queue, ctx.interrupt, backend, self.rate);
        self.state
            .start_worker("rng0", vec![(0, request.notify_evt)], handler, ctx.faults)
    }

    fn reset(&mut self) -> bool {
        self.stop_worker();
        self.state = DeviceState::Inactive;
        self.acked_features = 0;
        self.backend.is_some()
    }

    fn shutdown(&mut self) {
        self.stop_worker();
    }
}
