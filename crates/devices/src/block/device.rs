//! The virtio-blk device (virtio 1.2, 5.2): features, configuration space, activation of
//! its one request queue on the shared worker, reset and shutdown.

use std::io;
use std::sync::Arc;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES,
};

use super::backend::DiskBackend;
use super::request::{Policy, ID_BYTES, MAX_RANGES, MAX_RANGE_SECTORS, SECTOR_SIZE};
use super::worker::{BlockHandler, HandlerSetup, IO_THREADS};
use crate::virtio::{
    device_type, features, read_config_bytes, ActivateError, ActivationContext, DeviceState,
    VirtioDevice, Worker,
};

const QUEUE_SIZE: u16 = 256;
/// The configuration space up to `write_zeroes_may_unmap` and its padding (5.2.4).
const CONFIG_LEN: usize = 60;
/// Discard granularity the guest is told, in sectors: one 4 KiB page, what a hole can be.
const DISCARD_ALIGN_SECTORS: u32 = 8;

/// How the guest's flushes are honoured (`KRUN_SYNC_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// No VIRTIO_BLK_F_FLUSH: the guest sends no flushes; the disk is flushed only when
    /// the VM ends.
    None,
    /// Flushes reach the host disk (fdatasync; for images also the metadata caches).
    Relaxed,
    /// As `Relaxed`, and every write is durable before the guest sees it complete.
    Full,
}

/// A disk as the VMM hands it over.
pub struct BlockConfig {
    /// `block_id`: what VIRTIO_BLK_T_GET_ID returns (the guest's `/sys/block/vdX/serial`).
    pub id: String,
    pub disk: Arc<dyn DiskBackend>,
    pub read_only: bool,
    pub sync: SyncMode,
}

pub struct Block {
    name: String,
    id: [u8; ID_BYTES],
    disk: Arc<dyn DiskBackend>,
    read_only: bool,
    sync: SyncMode,
    avail_features: u64,
    acked_features: u64,
    config_space: [u8; CONFIG_LEN],
    queue_sizes: [u16; 1],
    state: DeviceState<Worker<BlockHandler>>,
}

impl Block {
    pub fn new(cfg: BlockConfig) -> Block {
        let mut id = [0u8; ID_BYTES];
        let n = cfg.id.len().min(ID_BYTES);
        id[..n].copy_from_slice(&cfg.id.as_bytes()[..n]);
        let can_discard = cfg.disk.can_discard() && !cfg.read_only;
        let mut avail_features =
            features::VIRTIO_F_VERSION_1 | 1 << VIRTIO_BLK_F_SEG_MAX | 1 << VIRTIO_BLK_F_BLK_SIZE;
        if cfg.read_only {
            avail_features |= 1 << VIRTIO_BLK_F_RO;
        } else {
            avail_features |= 1 << VIRTIO_BLK_F_WRITE_ZEROES;
        }
        if can_discard {
            avail_features |= 1 << VIRTIO_BLK_F_DISCARD;
        }
        if cfg.sync != SyncMode::None {
            avail_features |= 1 << VIRTIO_BLK_F_FLUSH;
        }
        let config_space = config_space(cfg.disk.size(), can_discard);
        Block {
            name: format!("blk-{}", cfg.id),
            id,
            disk: cfg.disk,
            read_only: cfg.read_only,
            sync: cfg.sync,
            avail_features,
            acked_features: 0,
            config_space,
            queue_sizes: [QUEUE_SIZE],
            state: DeviceState::Inactive,
        }
    }

    fn stop_worker(&mut self) {
        if let Some(mut worker) = self.state.take_active() {
            worker.stop();
        }
    }
}

/// `struct virtio_blk_config`, little-endian.
fn config_space(size: u64, can_discard: bool) -> [u8; CONFIG_LEN] {
    let mut c = [0u8; CONFIG_LEN];
    let mut put = |at: usize, bytes: &[u8]| c[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, &(size / SECTOR_SIZE).to_le_bytes());
    // seg_max: a chain also carries the header and the status descriptors.
    put(12, &u32::from(QUEUE_SIZE - 2).to_le_bytes());
    put(20, &(SECTOR_SIZE as u32).to_le_bytes());
    put(34, &1u16.to_le_bytes());
    if can_discard {
        put(36, &MAX_RANGE_SECTORS.to_le_bytes());
        put(40, &MAX_RANGES.to_le_bytes());
        put(44, &DISCARD_ALIGN_SECTORS.to_le_bytes());
    }
    put(48, &MAX_RANGE_SECTORS.to_le_bytes());
    put(52, &MAX_RANGES.to_le_bytes());
    put(56, &[u8::from(can_discard)]);
    c
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space, offset, data);
    }

    fn activate(&mut self, mut ctx: ActivationContext) -> Result<(), ActivateError> {
        let [queue] = ctx.take_queues::<1>()?;
        let flush_acked = self.acked_features & (1 << VIRTIO_BLK_F_FLUSH) != 0;
        let handler = BlockHandler::new(HandlerSetup {
            name: self.name.clone(),
            disk: self.disk.clone(),
            mem: ctx.mem,
            queue: queue.queue,
            interrupt: ctx.interrupt,
            id: self.id,
            policy: Policy {
                read_only: self.read_only,
                flush: flush_acked,
                write_through: self.sync == SyncMode::Full,
            },
            io_threads: IO_THREADS,
        })
        .map_err(ActivateError::Worker)?;
        self.state.start_worker(
            self.name.clone(),
            vec![(0, queue.notify_evt)],
            handler,
            ctx.faults,
        )
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

impl Drop for Block {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

/// Opens a backend and wraps it for [`BlockConfig::disk`].
pub fn open_disk(opts: &super::backend::DiskOptions) -> io::Result<Arc<dyn DiskBackend>> {
    super::backend::open(opts).map(Arc::from)
}
