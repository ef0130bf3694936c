//! The exit-code ioctl: how the guest init hands the workload's status to the VMM
//! (`ioctl(root, EXIT_CODE_IOCTL, status)` on the root share, as upstream's init does), and
//! the [`ExitCode`] the VMM reads it from after the VM ended.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use contract::EXIT_CODE_IOCTL;
use fuse_backend_rs::abi::fuse_abi::{InHeader, IoctlIn, Opcode};
use fuse_backend_rs::transport::Reader;
use vm_memory::bitmap::BitmapSlice;

use super::forward::{forward, prelude::*};

/// Marker for "no exit code reported yet" (outside the `i32` range the guest can send).
const EXIT_CODE_UNSET: i64 = i64::MIN;

/// The workload's exit status as reported by the guest init through the exit-code ioctl.
///
/// Cheap to clone; every clone shares one value. The VMM keeps one clone and reads it after
/// the VM has ended, the root share's filesystem keeps another and writes it.
#[derive(Clone, Debug)]
pub struct ExitCode(Arc<AtomicI64>);

impl ExitCode {
    /// A handle with no exit code recorded.
    pub fn new() -> Self {
        Self(Arc::new(AtomicI64::new(EXIT_CODE_UNSET)))
    }

    /// The last exit code the guest reported, if any.
    pub fn get(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            EXIT_CODE_UNSET => None,
            code => i32::try_from(code).ok(),
        }
    }

    /// Records `code`, replacing any earlier one (the guest init reports once, last wins).
    pub fn set(&self, code: i32) {
        self.0.store(i64::from(code), Ordering::SeqCst);
    }
}

impl Default for ExitCode {
    fn default() -> Self {
        Self::new()
    }
}

/// The exit-code ioctl layer: answers `EXIT_CODE_IOCTL` on the root share (the value itself
/// is taken from the raw request by [`ExitCodeFs::intercept`]); every other ioctl, and every
/// other request, goes to the layer below.
pub struct ExitCodeFs<F> {
    inner: F,
    exit_code: Option<ExitCode>,
}

impl<F> ExitCodeFs<F> {
    /// `exit_code` is where the status is recorded; `None` leaves the ioctl to `inner`
    /// (which answers `ENOTTY`).
    pub fn new(inner: F, exit_code: Option<ExitCode>) -> Self {
        Self { inner, exit_code }
    }

    /// Looks for the exit-code ioctl in a FUSE request before it reaches `Server`.
    ///
    /// fuse-backend-rs's `Server` drops `fuse_ioctl_in.arg`, and the guest init passes the
    /// status by value in exactly that field, so it has to be read here. The request still
    /// goes to `Server` afterwards, which answers it through [`FileSystem::ioctl`].
    pub fn intercept<S: BitmapSlice>(&self, r: &Reader<'_, S>) {
        let mut r = r.clone();
        let Ok(header) = r.read_obj::<InHeader>() else {
            return;
        };
        if header.opcode != Opcode::Ioctl as u32 {
            return;
        }
        let Ok(ioctl) = r.read_obj::<IoctlIn>() else {
            return;
        };
        if ioctl.cmd == EXIT_CODE_IOCTL {
            self.record(ioctl.arg);
        }
    }

    /// Records the exit-code ioctl's argument: the guest's `int` widened to `unsigned long`,
    /// so the low 32 bits are the status.
    pub fn record(&self, arg: u64) {
        if let Some(exit_code) = &self.exit_code {
            #[allow(clippy::cast_possible_truncation)] // the guest sent an int: keep its bits
            let code = arg as u32 as i32;
            log::debug!("guest reported exit code {code}");
            exit_code.set(code);
        }
    }
}

impl<F: FileSystem<Inode = u64, Handle = u64>> FileSystem for ExitCodeFs<F> {
    type Inode = u64;
    type Handle = u64;

    fn ioctl(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        flags: u32,
        cmd: u32,
        data: IoctlData,
        out_size: u32,
    ) -> io::Result<IoctlData<'_>> {
        if cmd == EXIT_CODE_IOCTL && self.exit_code.is_some() {
            return Ok(IoctlData::default());
        }
        self.inner
            .ioctl(ctx, inode, handle, flags, cmd, data, out_size)
    }

    forward!(inner; init, destroy, lookup, forget, batch_forget, getattr, setattr, readlink,
        symlink, mknod, mkdir, unlink, rmdir, rename, link, open, create, read, write, flush,
        fsync, fallocate, release, statfs, setxattr, getxattr, listxattr, removexattr, opendir,
        readdir, readdirplus, fsyncdir, releasedir, setupmapping, removemapping, access, lseek,
        getlk, setlk, setlkw, bmap, poll, notify_reply, id_remap);
}
