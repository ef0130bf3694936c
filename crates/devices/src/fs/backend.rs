//! The host side of a virtio-fs share: the FUSE filesystem the worker's `Server` calls.
//!
//! A share is a stack of small layers, each one concern, each a fuse-backend-rs
//! `FileSystem` over the one below:
//!
//! ```text
//!   ExitCodeFs   the exit-code ioctl of the root share          (exit_code.rs)
//!   ReadOnly     EROFS for every mutation of a read-only share  (read_only.rs)
//!   Overlay      virtual files and directories at any path      (overlay.rs, entries.rs)
//!   Simplified   LinuxSimplified ownership, when asked for      (simplified.rs)
//!   HostFs       the host directory through PassthroughFs       (passthrough.rs)
//!    or NullFs   no host directory: an empty root               (null.rs)
//!    or UnionFs  the union of layer directories (overlay root)  (union.rs)
//!    or CustomFs the embedding program's FsBackend               (custom.rs)
//! ```
//!
//! [`ShareFs`] is that stack, built from a [`ShareRoot`] and [`ShareOptions`].

use std::path::PathBuf;

mod custom;
mod entries;
mod exit_code;
mod fd_budget;
mod forward;
mod null;
mod overlay;
mod passthrough;
mod read_only;
mod simplified;
mod union;

pub use custom::{DirItem, FsBackend, NodeAttr, NodeKind, SharedBackend, ROOT_NODE};
#[cfg(test)]
pub(crate) use entries::FIRST_VIRTUAL_INODE;
pub use entries::{VirtualEntries, VirtualEntry, VirtualEntryError, VirtualKind};
pub use exit_code::ExitCode;

use custom::CustomFs;
use entries::Tree;
use exit_code::ExitCodeFs;
use forward::{forward, prelude::*};
use null::NullFs;
use overlay::Overlay;
use passthrough::HostFs;
use read_only::ReadOnly;
use simplified::Simplified;
use union::UnionFs;

/// What a share serves below its virtual entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShareRoot {
    /// A host directory: absolute, without symlinks (the device canonicalizes it).
    Host(PathBuf),
    /// No host directory (NullFs): the root is an empty directory and the share shows only
    /// its virtual entries.
    Null,
    /// The union of these layer directories, lowest first; the last is the writable top.
    Layers(Vec<PathBuf>),
    /// The program's own filesystem code.
    Custom(SharedBackend),
}

/// The krun policy a share is served with.
#[derive(Clone, Debug, Default)]
pub struct ShareOptions {
    /// Every mutating request fails with `EROFS`.
    pub read_only: bool,
    /// Virtual read-only files and directories.
    pub entries: Vec<VirtualEntry>,
    /// Where the exit-code ioctl records its value; `None` answers it with `ENOTTY`.
    pub exit_code: Option<ExitCode>,
    /// Upstream's `LinuxSimplified` semantics for the host directory: files are reported as
    /// owned by the guest process asking and ownership changes are dropped.
    pub simplified: bool,
}

/// The filesystem under the overlay: a host directory or nothing.
struct Backing {
    fs: Box<dyn FileSystem<Inode = u64, Handle = u64> + Send + Sync>,
}

impl FileSystem for Backing {
    type Inode = u64;
    type Handle = u64;

    forward!(fs; init, destroy, lookup, forget, batch_forget, getattr, setattr, readlink,
        symlink, mknod, mkdir, unlink, rmdir, rename, link, open, create, read, write, flush,
        fsync, fallocate, release, statfs, setxattr, getxattr, listxattr, removexattr, opendir,
        readdir, readdirplus, fsyncdir, releasedir, setupmapping, removemapping, access, lseek,
        getlk, setlk, setlkw, ioctl, bmap, poll, notify_reply, id_remap);
}

/// The `FileSystem` a virtio-fs device serves: the layers above over one share root.
pub struct ShareFs {
    stack: ExitCodeFs<ReadOnly<Overlay<Backing>>>,
}

impl ShareFs {
    /// Builds the stack. A host directory is opened at FUSE_INIT, not here; `id` prefixes
    /// log lines (`fs(<tag>)`).
    pub fn new(root: &ShareRoot, opts: ShareOptions, id: &str) -> io::Result<Self> {
        let (fs, host): (
            Box<dyn FileSystem<Inode = u64, Handle = u64> + Send + Sync>,
            bool,
        ) = match root {
            ShareRoot::Host(path) if opts.simplified => {
                (Box::new(Simplified::new(HostFs::new(path)?)), true)
            }
            ShareRoot::Host(path) => (Box::new(HostFs::new(path)?), true),
            ShareRoot::Null => (Box::new(NullFs), false),
            ShareRoot::Layers(layers) => (Box::new(UnionFs::new(layers)?), true),
            ShareRoot::Custom(backend) => (Box::new(CustomFs::new(backend.0.clone())), true),
        };
        let tree = Tree::new(opts.entries, host, id);
        let overlay = Overlay::new(Backing { fs }, tree);
        let read_only = ReadOnly::new(overlay, opts.read_only);
        Ok(Self {
            stack: ExitCodeFs::new(read_only, opts.exit_code),
        })
    }

    /// Takes the exit-code ioctl's argument from a raw request (see [`ExitCodeFs::intercept`]).
    pub fn intercept_exit_code<S: vm_memory::bitmap::BitmapSlice>(
        &self,
        r: &fuse_backend_rs::transport::Reader<'_, S>,
    ) {
        self.stack.intercept(r)
    }

    /// Records an exit-code ioctl argument, as an intercepted request would.
    #[cfg(test)]
    pub fn record_exit_code(&self, arg: u64) {
        self.stack.record(arg)
    }
}

impl FileSystem for ShareFs {
    type Inode = u64;
    type Handle = u64;

    forward!(stack; init, destroy, lookup, forget, batch_forget, getattr, setattr, readlink,
        symlink, mknod, mkdir, unlink, rmdir, rename, link, open, create, read, write, flush,
        fsync, fallocate, release, statfs, setxattr, getxattr, listxattr, removexattr, opendir,
        readdir, readdirplus, fsyncdir, releasedir, setupmapping, removemapping, access, lseek,
        getlk, setlk, setlkw, ioctl, bmap, poll, notify_reply, id_remap);
}

#[cfg(test)]
mod tests;
