//! virtio-blk disks and booting from a disk.

use std::ffi::c_char;
use std::path::PathBuf;

use vmm::config::{Disk, DiskFormat, RootDiskRemount, SyncMode};

use crate::ctx;
use crate::ffi::{self, guard, ApiError};

/// The common body of `krun_add_disk*`.
///
/// # Safety
/// `block_id` and `disk_path` are NULL or NUL-terminated.
unsafe fn add(
    ctx_id: u32,
    block_id: *const c_char,
    disk_path: *const c_char,
    format: u32,
    read_only: bool,
    direct_io: bool,
    sync: u32,
) -> Result<i32, ApiError> {
    ctx::check(ctx_id)?;
    // SAFETY: NULL or NUL-terminated per the caller's contract.
    let id = unsafe { ffi::c_str(block_id, "block_id") }?.to_string();
    // SAFETY: as above.
    let path = unsafe { ffi::c_str(disk_path, "disk_path") }?;
    let disk = Disk {
        id,
        path: PathBuf::from(path),
        format: DiskFormat::from_raw(format)?,
        read_only,
        direct_io,
        sync: SyncMode::from_raw(sync)?,
    };
    ctx::with(ctx_id, |c| c.add_disk(disk)).map(|()| 0)
}

/// Adds a raw disk image `disk_path` as a virtio-blk device identified by `block_id`
/// (read-only if `read_only`). Returns 0, -ENOENT for an unknown context, -EINVAL for NULL,
/// empty or non-UTF-8 strings, -EEXIST for a `block_id` already in use.
///
/// # Safety
/// `block_id` and `disk_path` are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_add_disk(
    ctx_id: u32,
    block_id: *const c_char,
    disk_path: *const c_char,
    read_only: bool,
) -> i32 {
    // SAFETY: forwarded contract.
    guard("krun_add_disk", || unsafe {
        add(ctx_id, block_id, disk_path, 0, read_only, false, 2)
    })
}

/// As `krun_add_disk` with an image format, `KRUN_DISK_FORMAT_*`; an unknown format
/// returns -EINVAL.
///
/// # Safety
/// `block_id` and `disk_path` are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_add_disk2(
    ctx_id: u32,
    block_id: *const c_char,
    disk_path: *const c_char,
    disk_format: u32,
    read_only: bool,
) -> i32 {
    guard("krun_add_disk2", || {
        // SAFETY: forwarded contract.
        unsafe {
            add(
                ctx_id,
                block_id,
                disk_path,
                disk_format,
                read_only,
                false,
                2,
            )
        }
    })
}

/// As `krun_add_disk2`, plus `direct_io` (bypass the host page cache) and how flushes are
/// honoured, `sync_mode` (`KRUN_SYNC_*`); an unknown mode returns -EINVAL.
///
/// # Safety
/// `block_id` and `disk_path` are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_add_disk3(
    ctx_id: u32,
    block_id: *const c_char,
    disk_path: *const c_char,
    disk_format: u32,
    read_only: bool,
    direct_io: bool,
    sync_mode: u32,
) -> i32 {
    guard("krun_add_disk3", || {
        // SAFETY: forwarded contract.
        unsafe {
            add(
                ctx_id,
                block_id,
                disk_path,
                disk_format,
                read_only,
                direct_io,
                sync_mode,
            )
        }
    })
}

/// Boots from the raw disk image `disk_path` (block id `root`) instead of a root directory.
/// Returns 0, -ENOENT for an unknown context, -EINVAL for a NULL, empty or non-UTF-8 path,
/// -EBUSY if a root directory or overlay root is set, -EEXIST if a root disk is set.
///
/// # Safety
/// `disk_path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_set_root_disk(ctx_id: u32, disk_path: *const c_char) -> i32 {
    guard("krun_set_root_disk", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        let path = unsafe { ffi::c_str(disk_path, "disk_path") }?;
        ctx::with(ctx_id, |c| c.set_root_disk(PathBuf::from(path))).map(|()| 0)
    })
}

/// Adds the raw disk image `disk_path` with block id `data`. Returns 0, -ENOENT for an
/// unknown context, -EINVAL for a NULL, empty or non-UTF-8 path, -EEXIST if already set.
///
/// # Safety
/// `disk_path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_set_data_disk(ctx_id: u32, disk_path: *const c_char) -> i32 {
    // SAFETY: forwarded contract.
    guard("krun_set_data_disk", || unsafe {
        add(ctx_id, c"data".as_ptr(), disk_path, 0, false, false, 2)
    })
}

/// Makes init mount the guest block device `device` (e.g. `/dev/vda`) as the root and
/// switch to it. `fstype` may be NULL or "auto" to detect it; `options` may be NULL. A disk
/// must have been added first. Returns 0, -ENOENT for an unknown context, -EINVAL for a
/// NULL, empty or non-UTF-8 device, non-UTF-8 fstype/options, or no disk added, -EBUSY if a
/// root directory or overlay root is set.
///
/// # Safety
/// Each string is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_set_root_disk_remount(
    ctx_id: u32,
    device: *const c_char,
    fstype: *const c_char,
    options: *const c_char,
) -> i32 {
    guard("krun_set_root_disk_remount", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NUL-terminated per this function's contract (all three).
        let device = unsafe { ffi::c_str(device, "device") }?.to_string();
        // SAFETY: as above.
        let fstype = unsafe { ffi::opt_c_str(fstype, "fstype") }?
            .filter(|f| *f != "auto")
            .map(str::to_string);
        // SAFETY: as above.
        let options = unsafe { ffi::opt_c_str(options, "options") }?.map(str::to_string);
        let remount = RootDiskRemount {
            device,
            fstype,
            options,
        };
        ctx::with(ctx_id, |c| c.set_root_disk_remount(remount)).map(|()| 0)
    })
}
