//! The virtio-fs device (virtio 1.2, section 5.11) as the transport sees it.
//!
//! Config space: the mount tag (36 bytes, NUL padded) and `num_request_queues` (le32).
//! Queues: 0 is the high-priority queue (FORGET, INTERRUPT), 1 the only request queue.
//! Both are served by one worker thread started at activation.

use std::io;
use std::path::PathBuf;

use super::exit_code::ExitCode;
use super::filesystem::{ShareFs, ShareOptions, VirtualFile};
use super::worker::{Worker, WorkerHandle};
use crate::virtio::{
    device_type, features, read_config_bytes, ActivateError, ActivationContext, VirtioDevice,
};

/// Length of the tag field of the config space (virtio 1.2, 5.11.4).
pub const TAG_LEN: usize = 36;
/// We serve one request queue (plus the hiprio queue).
const NUM_REQUEST_QUEUES: u32 = 1;
const NUM_QUEUES: usize = 1 + NUM_REQUEST_QUEUES as usize;
/// Same queue size as upstream libkrun's fs device.
const QUEUE_SIZE: u16 = 1024;
const CONFIG_SPACE_LEN: usize = TAG_LEN + 4;

/// What the VMM gives to create one virtio-fs device.
#[derive(Clone, Debug)]
pub struct FsConfig {
    /// Mount tag the guest uses (`mount -t virtiofs TAG /mnt`); 1 to 36 bytes, no NUL.
    pub tag: String,
    /// Host directory to share; symlinks in it are resolved once, here, on the host.
    pub path: PathBuf,
    /// Every mutating request fails with `EROFS`.
    pub read_only: bool,
    /// Virtual read-only files at the top level (the root share's `init.krun` and
    /// `.krun_exec.json`).
    pub root_files: Vec<VirtualFile>,
    /// Where the guest's exit-code ioctl is recorded (the root share's).
    pub exit_code: Option<ExitCode>,
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

enum State {
    Inactive,
    Active(WorkerHandle),
}

/// A virtio-fs device serving one host directory.
pub struct Fs {
    tag: String,
    root: PathBuf,
    opts: ShareOptions,
    config_space: [u8; CONFIG_SPACE_LEN],
    queue_sizes: [u16; NUM_QUEUES],
    acked_features: u64,
    /// The filesystem for the next activation, built early so that `new` reports errors.
    /// Each activation serves a fresh one: a reset guest starts over with FUSE_INIT.
    prepared: Option<ShareFs>,
    state: State,
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
        // The passthrough opens the root with O_NOFOLLOW: hand it a path without symlinks.
        let root = std::fs::canonicalize(&cfg.path).map_err(|source| FsError::ResolvePath {
            path: cfg.path.clone(),
            source,
        })?;
        if !root.is_dir() {
            return Err(FsError::NotADirectory(root));
        }
        let opts = ShareOptions {
            read_only: cfg.read_only,
            root_files: cfg.root_files,
            exit_code: cfg.exit_code,
        };
        let prepared =
            ShareFs::new(&root, opts.clone()).map_err(|source| FsError::Passthrough {
                path: root.clone(),
                source,
            })?;

        let mut config_space = [0u8; CONFIG_SPACE_LEN];
        config_space[..tag_bytes.len()].copy_from_slice(tag_bytes);
        config_space[TAG_LEN..].copy_from_slice(&NUM_REQUEST_QUEUES.to_le_bytes());

        Ok(Fs {
            tag: cfg.tag,
            root,
            opts,
            config_space,
            queue_sizes: [QUEUE_SIZE; NUM_QUEUES],
            acked_features: 0,
            prepared: Some(prepared),
            state: State::Inactive,
        })
    }

    /// The guest's mount tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    fn stop_worker(&mut self) {
        if let State::Active(mut worker) = std::mem::replace(&mut self.state, State::Inactive) {
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
        let fs = match self.prepared.take() {
            Some(fs) => fs,
            None => ShareFs::new(&self.root, self.opts.clone()).map_err(ActivateError::Backend)?,
        };
        let id = format!("fs({})", self.tag);
        let worker = Worker::new(id, ctx.mem, queues.into(), ctx.interrupt, fs);
        let handle = WorkerHandle::spawn(format!("fs-{}", self.tag), worker)
            .map_err(ActivateError::Worker)?;
        self.state = State::Active(handle);
        log::debug!("fs({}): active, serving {}", self.tag, self.root.display());
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
}

#[cfg(test)]
mod tests;
