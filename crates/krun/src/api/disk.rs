//! virtio-blk disks and booting from a disk: not built yet, so every call checks its
//! arguments and then fails with -ENOTSUP (a guest without the disk it asked for cannot
//! work). `krun_has_feature(KRUN_FEATURE_BLK)` is false.

use std::ffi::c_char;

use vmm::config::{DiskFormat, SyncMode};

use crate::ctx;
use crate::ffi::{self, guard, ApiError};

/// What the refusal's log line names.
const NO_BLK: &str = "virtio-blk (disks)";

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
    unsafe { ffi::c_str(block_id, "block_id") }?;
    // SAFETY: as above.
    unsafe { ffi::c_str(disk_path, "disk_path") }?;
    DiskFormat::from_raw(format)?;
    SyncMode::from_raw(sync)?;
    let _ = (read_only, direct_io);
    Err(ApiError::Unsupported(NO_BLK))
}

/// Would add a raw disk image `disk_path` as a virtio-blk device identified by `block_id`
/// (read-only if `read_only`). Not supported by this build yet: returns -ENOENT for an
/// unknown context, -EINVAL for NULL or non-UTF-8 strings, else -ENOTSUP.
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
/// returns -EINVAL. Not supported yet: -ENOTSUP.
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
/// honoured, `sync_mode` (`KRUN_SYNC_*`); an unknown mode returns -EINVAL. Not supported
/// yet: -ENOTSUP.
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

/// Would boot from the raw disk image `disk_path` (block id `root`) instead of a root
/// directory. Not supported yet: returns -ENOENT for an unknown context, -EINVAL for a
/// NULL or non-UTF-8 path, else -ENOTSUP.
///
/// # Safety
/// `disk_path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_set_root_disk(ctx_id: u32, disk_path: *const c_char) -> i32 {
    guard("krun_set_root_disk", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        unsafe { ffi::c_str(disk_path, "disk_path") }?;
        Err(ApiError::Unsupported(NO_BLK))
    })
}

/// Would add the raw disk image `disk_path` with block id `data`. Not supported yet:
/// returns -ENOENT for an unknown context, -EINVAL for a NULL or non-UTF-8 path, else
/// -ENOTSUP.
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

/// Would make init mount the guest block device `device` (e.g. `/dev/vda`) as the root and
/// switch to it (`fstype` NULL or "auto" to detect it; `options` may be NULL). Not
/// supported yet: returns -ENOENT for an unknown context, -EINVAL for a NULL or non-UTF-8
/// device or non-UTF-8 fstype/options, else -ENOTSUP.
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
        unsafe { ffi::c_str(device, "device") }?;
        // SAFETY: as above.
        unsafe { ffi::opt_c_str(fstype, "fstype") }?;
        // SAFETY: as above.
        unsafe { ffi::opt_c_str(options, "options") }?;
        Err(ApiError::Unsupported("a block-device root (virtio-blk)"))
    })
}
