//! virtio-blk disks (`krun_add_disk*`, `krun_set_data_disk`) and booting from a disk
//! (`krun_set_root_disk`, `krun_set_root_disk_remount`).
//!
//! The image file is opened once here, so a missing file (-ENOENT) or a read-only file
//! asked for read-write (-EACCES) fails the call that named it; the format itself (a
//! corrupt qcow2 header, -EINVAL) is checked when `krun_start_enter` opens the image.

use std::ffi::c_char;
use std::fs::OpenOptions;
use std::path::PathBuf;

use vmm::config::{Disk, DiskFormat, RootDiskRemount, Shown, SyncMode};

use crate::ctx;
use crate::ffi::{self, guard, ApiError};

/// The sync mode of `krun_add_disk`/`krun_add_disk2`: flushes honoured, as upstream's
/// default does on Linux.
const DEFAULT_SYNC: u32 = 1;

/// Opens `path` as the disk will be opened (read-write unless `read_only`) and closes it:
/// the caller learns now that it cannot be.
fn check_file(path: &str, read_only: bool) -> Result<(), ApiError> {
    OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(path)
        .map(drop)
        .map_err(|source| ApiError::Io {
            what: format!(
                "disk image {} (opened {})",
                Shown(path),
                if read_only { "read-only" } else { "read-write" }
            ),
            source,
        })
}

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
    let id = unsafe { ffi::c_str(block_id, "block_id") }?;
    // SAFETY: as above.
    let path = unsafe { ffi::c_str(disk_path, "disk_path") }?;
    let disk = Disk {
        id: id.to_string(),
        path: PathBuf::from(path),
        format: DiskFormat::from_raw(format)?,
        read_only,
        direct_io,
        sync: SyncMode::from_raw(sync)?,
    };
    if !path.is_empty() {
        check_file(path, read_only)?;
    }
    ctx::with(ctx_id, |c| c.add_disk(disk)).map(|()| 0)
}

/// Adds the raw disk image (or host block device) `disk_path` as a virtio-blk device whose
/// serial (`VIRTIO_BLK_T_GET_ID`) is `block_id`, read-only if `read_only`; flushes are
/// honoured (`KRUN_SYNC_RELAXED`). Disks appear in the guest in the order they are added
/// (`/dev/vda`, `/dev/vdb`, ...). Returns 0, -ENOENT for an unknown context or a missing
/// file, -EACCES when the file cannot be opened as asked (read-write on a read-only
/// file), -EINVAL for NULL, empty or non-UTF-8 strings, -EEXIST for a `block_id` in use.
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
        add(
            ctx_id,
            block_id,
            disk_path,
            0,
            read_only,
            false,
            DEFAULT_SYNC,
        )
    })
}

/// As `krun_add_disk` with an image format, `KRUN_DISK_FORMAT_*` (raw, qcow2 with its
/// backing chain, vmdk served read-only); an unknown format returns -EINVAL. An image whose
/// header is corrupt makes `krun_start_enter` fail with -EINVAL, naming the file.
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
                DEFAULT_SYNC,
            )
        }
    })
}

/// As `krun_add_disk2`, plus `direct_io` (open with O_DIRECT, bypassing the host page
/// cache; where the host filesystem refuses O_DIRECT the disk is opened cached, with one
/// warning) and `sync_mode`: `KRUN_SYNC_NONE` offers the guest no flush (nothing is synced
/// until the VM ends), `KRUN_SYNC_RELAXED` makes each guest flush an fdatasync (the image's
/// metadata first), `KRUN_SYNC_FULL` does that and also makes every write durable before
/// the guest sees it complete. Every disk is flushed when the VM ends, whatever the mode.
/// An unknown mode returns -EINVAL.
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

/// Boots from the raw disk image `disk_path` (added read-write as block id `root`) instead
/// of a root directory: init mounts it (its filesystem type probed) and runs the workload
/// there, as with `krun_set_root_disk_remount`. Returns 0, -ENOENT for an unknown context or
/// a missing file, -EACCES for a file that cannot be opened read-write, -EINVAL for a NULL,
/// empty or non-UTF-8 path, -EEXIST if a `root` disk exists, -EBUSY if another root is set.
///
/// # Safety
/// `disk_path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_set_root_disk(ctx_id: u32, disk_path: *const c_char) -> i32 {
    guard("krun_set_root_disk", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        let path = unsafe { ffi::c_str(disk_path, "disk_path") }?;
        if !path.is_empty() {
            check_file(path, false)?;
        }
        ctx::with(ctx_id, |c| c.set_root_disk(PathBuf::from(path))).map(|()| 0)
    })
}

/// Adds the raw disk image `disk_path` read-write with block id `data` (as `krun_add_disk`).
/// Returns 0, -ENOENT for an unknown context or a missing file, -EACCES for a file that
/// cannot be opened read-write, -EINVAL for a NULL or non-UTF-8 path, -EEXIST if a `data`
/// disk exists.
///
/// # Safety
/// `disk_path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_set_data_disk(ctx_id: u32, disk_path: *const c_char) -> i32 {
    // SAFETY: forwarded contract.
    guard("krun_set_data_disk", || unsafe {
        add(
            ctx_id,
            c"data".as_ptr(),
            disk_path,
            0,
            false,
            false,
            DEFAULT_SYNC,
        )
    })
}

/// Makes the guest's root the block device `device` (e.g. `/dev/vda`, a disk added
/// before): the kernel boots on an empty virtual root holding only init, init mounts the
/// device with `fstype` (NULL or "auto": each block filesystem type the guest kernel has is
/// tried) and `options` (the mount data string, may be NULL), makes it `/` and runs the
/// workload there; its exit status still reaches the host, through the initial root init
/// keeps open. Returns 0, -ENOENT for an unknown context, -EINVAL for a NULL, empty or
/// non-UTF-8 device, non-UTF-8 fstype/options, text with spaces or quotes (it travels on
/// the kernel command line), or when no disk was added yet, -EBUSY if a root directory is
/// set.
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
        let device = unsafe { ffi::c_str(device, "device") }?;
        // SAFETY: as above.
        let fstype = unsafe { ffi::opt_c_str(fstype, "fstype") }?;
        // SAFETY: as above.
        let options = unsafe { ffi::opt_c_str(options, "options") }?;
        for (what, text) in [
            ("device", Some(device)),
            ("fstype", fstype),
            ("options", options),
        ] {
            if let Some(bad) = text.and_then(|t| t.chars().find(|c| c.is_whitespace() || *c == '"'))
            {
                return Err(ApiError::Invalid {
                    what,
                    why: format!("{bad:?} cannot travel on the kernel command line"),
                });
            }
        }
        let remount = RootDiskRemount {
            device: device.to_string(),
            fstype: fstype.filter(|t| !t.is_empty()).map(str::to_string),
            options: options.filter(|o| !o.is_empty()).map(str::to_string),
        };
        ctx::with(ctx_id, |c| c.set_root_disk_remount(remount)).map(|()| 0)
    })
}
