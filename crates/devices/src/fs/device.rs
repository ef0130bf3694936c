//! The virtio-fs device (virtio 1.2, section 5.11) as the transport sees it.
//!
//! Config space: the mount tag (36 bytes, NUL padded) and `num_request_queues` (le32).
//! Queues: 0 is the high-priority queue (FORGET, INTERRUPT), 1 the only request queue.
//! Both are served by one worker thread started at activation.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::backend::{ExitCode, ShareFs, ShareOptions, ShareRoot, SharedBackend, VirtualEntries};
use super::dax::{DaxWindow, CACHE_SHM_ID};
use super::worker::FsHandler;
use crate::virtio::{
    device_type, features, read_config_bytes, ActivateError, ActivationContext, DeviceState,
    ShmRegion, VirtioDevice, Worker,
};

/// Length of the tag field of the config space (virtio 1.2, 5.11.4).
pub const TAG_LEN: usize = 36;
/// We serve one request queue (plus the hiprio queue).
const NUM_REQUEST_QUEUES: u32 = 1;
const NUM_QUEUES: usize = 1 + NUM_REQUEST_QUEUES as usize;
/// Same queue size as upstream libkrun's fs device.
const QUEUE_SIZE: u16 = 1024;
pub(super) const CONFIG_SPACE_LEN: usize = TAG_LEN + 4;

/// What the VMM gives to create one virtio-fs device.
#[derive(Clone, Debug)]
pub struct FsConfig {
    /// Mount tag the guest uses (`mount -t virtiofs TAG /mnt`); 1 to 36 bytes, no NUL.
    pub tag: String,
    /// Host directory to share; symlinks in it are resolved once, here, on the host. `None`
    /// shares no host directory (NullFs): the guest sees only the virtual entries.
    pub path: Option<PathBuf>,
    /// Every mutating request fails with `EROFS`.
    pub read_only: bool,
    /// Virtual read-only files and directories (the root share's `init.krun` and
    /// `.krun_exec.json`, overlay entries). The VMM may keep a clone and add to it until the
    /// driver activates the device.
    pub entries: VirtualEntries,
    /// Where the guest's exit-code ioctl is recorded (the root share's).
    pub exit_code: Option<ExitCode>,
    /// Upstream's `LinuxSimplified` semantics (see [`ShareOptions::simplified`]).
    pub simplified: bool,
    /// An overlay root: the union of these layer directories, lowest first (then `path` is
    /// `None`).
    pub layers: Vec<PathBuf>,
    /// The program's own filesystem serves the share (then `path` is `None` and `layers`
    /// empty).
    pub custom: Option<SharedBackend>,
    /// The share's DAX window, offered as shared memory region 0 (the cache); `None`
    /// offers no window and mapping requests fail with EINVAL.
    pub dax: Option<Arc<dyn DaxWindow>>,
}

/// Why a virtio-fs device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("virtio-fs tag {0:?} must be 1 to {TAG_LEN} bytes without NUL")]
    InvalidTag(String),
    #[error("cannot resolve shared directory {path}")]
    ResolvePath {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("shared path {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("cannot set up the passthrough filesystem for {path}")]
    Passthrough {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl From<FsError> for io::Error {
    fn from(e: FsError) -> Self {
        let kind = match &e {
            FsError::InvalidTag(_) => io::ErrorKind::InvalidInput,
            FsError::NotADirectory(_) => io::ErrorKind::NotADirectory,
            FsError::ResolvePath { source, .. } | FsError::Passthrough { source, .. } => {
                source.kind()
            }
        };
        io::Error::new(kind, e)
    }
}

/// A virtio-fs device serving one host directory (or none, NullFs) and virtual entries.
pub struct Fs {
    tag: String,
    root: ShareRoot,
    read_only: bool,
    entries: VirtualEntries,
    exit_code: Option<ExitCode>,
    simplified: bool,
    dax: Option<Arc<dyn DaxWindow>>,
    config_space: [u8; CONFIG_SPACE_LEN],
    queue_sizes: [u16; NUM_QUEUES],
    acked_features: u64,
    state: DeviceState<Worker<FsHandler>>,
}

impl Fs {
    /// Checks the tag and the directory and prepares the filesystem; no thread runs until
    /// the driver activates the device.
    pub fn new(cfg: FsConfig) -> io::Result<Fs> {
        Ok(Self::build(cfg)?)
    }

    fn build(cfg: FsConfig) -> Result<Fs, FsError> {
        let tag_bytes = cfg.tag.as_bytes();
        if tag_bytes.is_empty() || tag_bytes.len() > TAG_LEN || tag_bytes.contains(&0) {
            return Err(FsError::InvalidTag(cfg.tag));
        }
        let root = match (&cfg.custom, &cfg.path) {
            (Some(backend), _) => ShareRoot::Custom(backend.clone()),
            (None, Some(path)) => ShareRoot::Host(Self::resolve(path)?),
            (None, None) if !cfg.layers.is_empty() => ShareRoot::Layers(
                cfg.layers
                    .iter()
                    .map(|l| Self::resolve(l))
                    .collect::<Result<_, _>>()?,
            ),
            (None, None) => ShareRoot::Null,
        };
        // Settings the passthrough refuses are reported now, not at the guest's activation.
        let id = format!("fs({})", cfg.tag);
        ShareFs::new(&root, ShareOptions::default(), &id).map_err(|source| {
            FsError::Passthrough {
                path: cfg.path.clone().unwrap_or_default(),
                source,
            }
        })?;

        let mut config_space = [0u8; CONFIG_SPACE_LEN];
        config_space[..tag_bytes.len()].copy_from_slice(tag_bytes);
        config_space[TAG_LEN..].copy_from_slice(&NUM_REQUEST_QUEUES.to_le_bytes());

        Ok(Fs {
            tag: cfg.tag,
            root,
            read_only: cfg.read_only,
            entries: cfg.entries,
            exit_code: cfg.exit_code,
            simplified: cfg.simplified,
            dax: cfg.dax,
            config_space,
            queue_sizes: [QUEUE_SIZE; NUM_QUEUES],
            acked_features: 0,
            state: DeviceState::Inactive,
        })
    }

    /// The passthrough opens the root with O_NOFOLLOW: hand it a path without symlinks.
    fn resolve(path: &std::path::Path) -> Result<PathBuf, FsError> {
        let root = std::fs::canonicalize(path).map_err(|source| FsError::ResolvePath {
            path: path.to_owned(),
            source,
        })?;
        if !root.is_dir() {
            return Err(FsError::NotADirectory(root));
        }
        Ok(root)
    }

    /// The share's virtual entries: what is added before the driver activates the device is
    /// what the guest sees.
    pub fn entries(&self) -> VirtualEntries {
        self.entries.clone()
    }

    /// The guest's mount tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    fn stop_worker(&mut self) {
        if let Some(mut worker) = self.state.take_active() {
            worker.stop();
        }
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        device_type::FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        features::VIRTIO_F_VERSION_1
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space, offset, data);
    }

    fn activate(&mut self, mut ctx: ActivationContext) -> Result<(), ActivateError> {
        let queues = ctx.take_queues::<NUM_QUEUES>()?;
        self.stop_worker();
        let id = format!("fs({})", self.tag);
        // Each activation serves a fresh filesystem: a reset guest starts over with FUSE_INIT.
        let opts = ShareOptions {
            read_only: self.read_only,
            entries: self.entries.snapshot(),
            exit_code: self.exit_code.clone(),
            simplified: self.simplified,
        };
        let fs = ShareFs::new(&self.root, opts, &id).map_err(ActivateError::Backend)?;
        let mut queue_evts = Vec::with_capacity(NUM_QUEUES);
        let mut queue_states = Vec::with_capacity(NUM_QUEUES);
        for (index, active) in queues.into_iter().enumerate() {
            queue_evts.push((index, active.notify_evt));
            queue_states.push(active.queue);
        }
        let handler =
            FsHandler::new(id, ctx.mem, queue_states, ctx.interrupt, fs).with_dax(self.dax.clone());
        self.state
            .start_worker(format!("fs-{}", self.tag), queue_evts, handler, ctx.faults)?;
        log::debug!("fs({}): active, serving {:?}", self.tag, self.root);
        Ok(())
    }

    fn reset(&mut self) -> bool {
        self.stop_worker();
        self.acked_features = 0;
        true
    }

    fn shutdown(&mut self) {
        self.stop_worker();
    }

    fn shm_region(&self, id: u32) -> Option<ShmRegion> {
        let window = self.dax.as_ref().filter(|_| id == CACHE_SHM_ID)?;
        Some(ShmRegion {
            base: window.guest_base(),
            len: window.size(),
        })
    }
}
