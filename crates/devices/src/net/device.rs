//! The virtio-net device state machine: features, config space, activate and reset.

use std::sync::Arc;

use super::backend::NetBackend;
use super::features;
use super::worker::NetHandler;
use crate::virtio::features::VIRTIO_F_VERSION_1;
use crate::virtio::{
    device_type, read_config_bytes, ActivateError, ActivationContext, DeviceState, VirtioDevice,
    Worker,
};

pub const RX_QUEUE_INDEX: u16 = 0;
pub const TX_QUEUE_INDEX: u16 = 1;
pub const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: &[u16] = &[QUEUE_SIZE, QUEUE_SIZE];
/// `VIRTIO_NET_S_LINK_UP` in the status field.
const LINK_UP: u16 = 1;

/// What the VMM configures an interface with.
pub struct NetConfig {
    /// Log prefix and worker thread name (`net0`, `net1`, ...).
    pub id: String,
    pub mac: [u8; 6],
    /// The offload bits (see [`features::OFFLOADS`]) the caller asked for.
    pub offloads: u64,
    pub backend: Box<dyn NetBackend>,
}

/// A virtio-net interface with one rx/tx queue pair.
pub struct Net {
    id: String,
    mac: [u8; 6],
    avail_features: u64,
    acked_features: u64,
    /// The backend while the device is inactive; the worker owns it while active.
    backend: Option<Box<dyn NetBackend>>,
    state: DeviceState<Worker<NetHandler>>,
}

impl Net {
    /// The device offers the asked-for offloads the backend can honour (one warning names
    /// those it cannot), plus MAC, STATUS and MRG_RXBUF.
    pub fn new(cfg: NetConfig) -> Net {
        let asked = cfg.offloads & features::OFFLOADS;
        let offered = features::consistent(asked & cfg.backend.supported_offloads());
        if offered != asked {
            log::warn!(
                "{}: offload features {:#x} not offered: the backend cannot honour them \
                 (or their checksum prerequisite is missing)",
                cfg.id,
                asked & !offered
            );
        }
        Net {
            id: cfg.id,
            mac: cfg.mac,
            avail_features: VIRTIO_F_VERSION_1
                | features::MAC
                | features::STATUS
                | features::MRG_RXBUF
                | offered,
            acked_features: 0,
            backend: Some(cfg.backend),
            state: DeviceState::Inactive,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops the worker and takes the backend back from it.
    fn stop_worker(&mut self) {
        if let Some(mut worker) = self.state.take_active() {
            if let Some(handler) = worker.stop() {
                self.backend = Some(handler.into_backend());
            }
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features;
    }

    /// Config space (5.1.4): mac[6], status le16. No MQ and no MTU, so nothing follows.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&self.mac);
        config[6..8].copy_from_slice(&LINK_UP.to_le_bytes());
        read_config_bytes(&config, offset, data);
    }

    fn activate(&mut self, mut ctx: ActivationContext) -> Result<(), ActivateError> {
        let [rx, tx] = ctx.take_queues::<{ QUEUE_SIZES.len() }>()?;
        let Some(mut backend) = self.backend.take() else {
            self.state = DeviceState::Failed;
            return Err(ActivateError::Backend(std::io::Error::other(
                "the backend was lost when the device last stopped",
            )));
        };
        let acked = ctx.acked_features & self.avail_features;
        if let Err(e) = backend.set_offloads(acked) {
            self.backend = Some(backend);
            self.state = DeviceState::Failed;
            return Err(ActivateError::Backend(e));
        }
        log::debug!("{}: active with features {acked:#x}", self.id);
        let handler = NetHandler::new(
            self.id.clone(),
            ctx.mem,
            rx.queue,
            tx.queue,
            Arc::clone(&ctx.interrupt),
            backend,
            acked,
        );
        let evts = vec![
            (usize::from(RX_QUEUE_INDEX), rx.notify_evt),
            (usize::from(TX_QUEUE_INDEX), tx.notify_evt),
        ];
        self.state
            .start_worker(self.id.clone(), evts, handler, ctx.faults)
    }

    fn reset(&mut self) -> bool {
        self.stop_worker();
        self.acked_features = 0;
        if self.backend.is_none() {
            self.state = DeviceState::Failed;
            return false;
        }
        self.state = DeviceState::Inactive;
        true
    }

    fn shutdown(&mut self) {
        self.stop_worker();
    }
}
