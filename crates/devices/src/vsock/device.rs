//! The virtio-vsock device (virtio 1.2, section 5.10): features, config space, lifecycle.

use std::sync::Arc;

use super::backend::{HostBackend, VsockBackend};
use super::muxer::Muxer;
use super::worker::{Queues, VsockHandler};
use super::VsockConfig;
use crate::virtio::features::VIRTIO_F_VERSION_1;
use crate::virtio::{
    device_type, read_config_bytes, ActivateError, ActivationContext, DeviceState, VirtioDevice,
    Worker,
};

pub const RX_QUEUE_INDEX: u16 = 0;
pub const TX_QUEUE_INDEX: u16 = 1;
pub const EVENT_QUEUE_INDEX: u16 = 2;
pub const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: &[u16] = &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE];
/// VIRTIO_VSOCK_F_DGRAM (bit 3, libkrunfw's datagram patches): TSI's control messages and
/// datagram sockets travel as vsock datagrams.
pub const VIRTIO_VSOCK_F_DGRAM: u64 = 1 << 3;

/// virtio-vsock with the muxer behind it; a "vsock0" worker serves it while active.
pub struct Vsock {
    cfg: VsockConfig,
    backend: Arc<dyn VsockBackend>,
    acked_features: u64,
    state: DeviceState<Worker<VsockHandler>>,
}

impl Vsock {
    /// A device whose muxer reaches the real host sockets.
    pub fn new(cfg: VsockConfig) -> Self {
        Self::with_backend(cfg, Arc::new(HostBackend))
    }

    /// A device whose muxer opens host sockets through `backend`.
    pub fn with_backend(cfg: VsockConfig, backend: Arc<dyn VsockBackend>) -> Self {
        Vsock {
            cfg,
            backend,
            acked_features: 0,
            state: DeviceState::Inactive,
        }
    }

    pub fn guest_cid(&self) -> u64 {
        self.cfg.guest_cid
    }

    fn stop_worker(&mut self) {
        if let Some(mut worker) = self.state.take_active() {
            // The handler, its muxer and every host socket close with it.
            drop(worker.stop());
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_VSOCK_F_DGRAM
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features();
    }

    /// Config space (5.10.4): guest_cid, le64.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.cfg.guest_cid.to_le_bytes(), offset, data);
    }

    fn activate(&mut self, mut ctx: ActivationContext) -> Result<(), ActivateError> {
        let [rx, tx, ev] = ctx.take_queues::<{ QUEUE_SIZES.len() }>()?;
        if self.state.is_activated() {
            return Err(ActivateError::Backend(std::io::Error::other(
                "vsock already active",
            )));
        }
        let mux = Muxer::new(self.cfg.clone(), self.backend.clone()).map_err(|e| {
            self.state = DeviceState::Failed;
            ActivateError::Backend(std::io::Error::other(e))
        })?;
        let queues = Queues {
            mem: ctx.mem,
            rx: rx.queue,
            tx: tx.queue,
            event: ev.queue,
            interrupt: ctx.interrupt,
        };
        let evts = vec![
            (usize::from(RX_QUEUE_INDEX), rx.notify_evt),
            (usize::from(TX_QUEUE_INDEX), tx.notify_evt),
            (usize::from(EVENT_QUEUE_INDEX), ev.notify_evt),
        ];
        let handler = VsockHandler { queues, mux };
        self.state.start_worker("vsock0", evts, handler, ctx.faults)
    }

    fn reset(&mut self) -> bool {
        self.stop_worker();
        self.acked_features = 0;
        true
    }

    fn shutdown(&mut self) {
        self.stop_worker();
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        if self.state.is_activated() {
            log::error!("vsock0: dropped while active; stopping the worker");
        }
        self.stop_worker();
    }
}
