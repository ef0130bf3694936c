//! virtio-fs: a host directory (or none) and virtual entries served to the guest over FUSE.
//!
//! [`Fs`] is the virtio device (config space, queues, activation), `worker` the thread that
//! turns descriptor chains into FUSE requests for fuse-backend-rs's `Server`, and `backend`
//! the filesystem it serves, `dax` the checks in front of a share's DAX window: the passthrough of the host directory or NullFs, under the
//! virtual-entry overlay, the read-only decorator and the exit-code ioctl.

mod backend;
mod dax;
mod device;
mod worker;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

pub use backend::{
    DirItem, ExitCode, FsBackend, NodeAttr, NodeKind, ShareRoot, SharedBackend, VirtualEntries,
    VirtualEntry, VirtualEntryError, VirtualKind, ROOT_NODE,
};
pub use dax::{DaxWindow, CACHE_SHM_ID, DAX_PAGE_SIZE};
pub use device::{Fs, FsConfig, FsError, TAG_LEN};

/// Name of the virtual guest init in the root directory of the root share.
pub const INIT_NAME: &[u8] = contract::INIT_FILE_NAME.as_bytes();

/// ioctl the guest init issues to report the workload's exit status (see the contract crate).
pub use contract::EXIT_CODE_IOCTL as KRUN_EXIT_CODE_IOCTL;
