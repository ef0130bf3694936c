//! Ending the VM: hand the workload's exit code to the VMM, flush, and reboot.
//!
//! The code travels as a FUSE ioctl on the virtio-fs root: init opens `/` read-only and calls
//! `ioctl(fd, KRUN_EXIT_CODE_IOCTL, code)` with the code as the integer argument, exactly as upstream's init
//! does; the VMM's fs device records it. The kernel runs with `reboot=k panic=-1`, so
//! `reboot(RB_AUTOBOOT)` makes the vCPU leave and the VMM exit with the recorded code.

use std::ffi::CStr;
use std::io;

use thiserror::Error;

/// `_IO('v', 2)`: no direction and no size, so the kernel passes the argument through as is.
pub const KRUN_EXIT_CODE_IOCTL: libc::c_ulong = contract::EXIT_CODE_IOCTL as libc::c_ulong;
/// `statfs` type of FUSE mounts, virtio-fs included.
pub const FUSE_SUPER_MAGIC: libc::c_long = 0x6573_5546;

#[derive(Debug, Error)]
pub enum ReportError {
    #[error("statfs(/) failed: {}", crate::exec::describe(.0))]
    Statfs(#[source] io::Error),
    #[error("the root is not virtio-fs (type {0:#x}), nobody to report to")]
    NotVirtiofs(i64),
    #[error("cannot open /: {}", crate::exec::describe(.0))]
    Open(#[source] io::Error),
    #[error("exit-code ioctl {KRUN_EXIT_CODE_IOCTL:#x} failed: {}", crate::exec::describe(.0))]
    Ioctl(#[source] io::Error),
}

/// The virtio-fs root init opened before a remount root replaced it (see
/// [`crate::remount`]): the exit code goes there, as `/` is then the block device.
static KEPT_ROOT: std::sync::OnceLock<libc::c_int> = std::sync::OnceLock::new();

/// Opens the current (virtio-fs) root and keeps it for [`report_exit_code`]; call before
/// the root is replaced. The descriptor is close-on-exec: the workload never holds it.
pub fn keep_root() -> Result<(), ReportError> {
    let fs_type = sys::statfs_type(c"/").map_err(ReportError::Statfs)?;
    if fs_type != FUSE_SUPER_MAGIC {
        return Err(ReportError::NotVirtiofs(fs_type));
    }
    let root = sys::open_dir(c"/").map_err(ReportError::Open)?;
    if KEPT_ROOT.set(root).is_err() {
        sys::close(root);
    }
    Ok(())
}

/// Tells the VMM the workload's status. Failure changes nothing about shutting down.
pub fn report_exit_code(code: i32) -> Result<(), ReportError> {
    if let Some(&root) = KEPT_ROOT.get() {
        return sys::ioctl_value(root, KRUN_EXIT_CODE_IOCTL, code).map_err(ReportError::Ioctl);
    }
    let fs_type = sys::statfs_type(c"/").map_err(ReportError::Statfs)?;
    if fs_type != FUSE_SUPER_MAGIC {
        return Err(ReportError::NotVirtiofs(fs_type));
    }
    let root = sys::open_dir(c"/").map_err(ReportError::Open)?;
    let result = sys::ioctl_value(root, KRUN_EXIT_CODE_IOCTL, code).map_err(ReportError::Ioctl);
    sys::close(root);
    result
}

/// Reports `code`, syncs and reboots. If reboot is refused (not really PID 1, no
/// CAP_SYS_BOOT, as in a container smoke test), exits with `code` instead.
pub fn finish(code: i32) -> ! {
    if let Err(err) = report_exit_code(code) {
        crate::diag!("cannot report exit status {code}: {err}");
    }
    sys::sync();
    if let Err(err) = sys::reboot(libc::RB_AUTOBOOT) {
        crate::diag!(
            "reboot failed: {}; exiting with status {code}",
            crate::exec::describe(&err)
        );
    }
    std::process::exit(code)
}

mod sys {
    use super::CStr;
    use std::io;

    fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    }

    pub fn statfs_type(path: &CStr) -> io::Result<libc::c_long> {
        // SAFETY: libc::statfs is plain data, fully written by a successful statfs call.
        let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is NUL-terminated and `buf` is valid and writable.
        check(unsafe { libc::statfs(path.as_ptr(), &mut buf) })?;
        Ok(buf.f_type)
    }

    pub fn open_dir(path: &CStr) -> io::Result<libc::c_int> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        // SAFETY: `path` is NUL-terminated; the fd is closed by the caller.
        check(unsafe { libc::open(path.as_ptr(), flags) })
    }

    pub fn close(fd: libc::c_int) {
        // SAFETY: the caller owns `fd` and drops it here.
        unsafe { libc::close(fd) };
    }

    /// An ioctl whose argument is a plain integer, not a pointer.
    pub fn ioctl_value(fd: libc::c_int, request: libc::c_ulong, value: i32) -> io::Result<()> {
        // SAFETY: this request carries its argument by value; the kernel reads no memory.
        check(unsafe { libc::ioctl(fd, request, value as libc::c_ulong) }).map(drop)
    }

    pub fn sync() {
        // SAFETY: no arguments, cannot fail.
        unsafe { libc::sync() };
    }

    pub fn reboot(how: libc::c_int) -> io::Result<()> {
        // SAFETY: plain integer command; on success the call does not return.
        check(unsafe { libc::reboot(how) }).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_exit_code_on_host_root_is_refused() {
        // The test host's root is not virtio-fs: nothing may be sent anywhere.
        match report_exit_code(0) {
            Err(ReportError::NotVirtiofs(_)) | Err(ReportError::Statfs(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn ioctl_number_matches_io_encoding() {
        // _IO(type, nr) = type << 8 | nr with no direction or size bits.
        assert_eq!(KRUN_EXIT_CODE_IOCTL, ((b'v' as libc::c_ulong) << 8) | 2);
    }
}
