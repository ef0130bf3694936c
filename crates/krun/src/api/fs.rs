//! virtio-fs: the root directory, extra shares, overlay roots, virtual overlay entries.

use std::ffi::c_char;
use std::path::PathBuf;

use vmm::config::{FsOverlay, FsOverlayKind, FsShare};

use crate::ctx;
use crate::ffi::{self, guard, ApiError};

/// Serves the host directory `root_path` as the guest's `/` over virtio-fs (tag
/// `KRUN_FS_ROOT_TAG`, 512 MiB DAX window). Returns 0, -ENOENT for an unknown context,
/// -EINVAL for a NULL, empty or non-UTF-8 path, -EEXIST if a root share exists, -EBUSY if
/// the root is already a disk (`krun_set_root_disk`) or an overlay root.
///
/// # Safety
/// `root_path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_set_root(ctx_id: u32, root_path: *const c_char) -> i32 {
    guard("krun_set_root", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        let path = unsafe { ffi::c_str(root_path, "root_path") }?;
        ctx::with(ctx_id, |c| c.set_root_dir(PathBuf::from(path))).map(|()| 0)
    })
}

/// The common body of `krun_add_virtiofs*`.
///
/// # Safety
/// `c_tag` and `c_path` are NULL or NUL-terminated.
unsafe fn add_share(
    ctx_id: u32,
    c_tag: *const c_char,
    c_path: *const c_char,
    shm_size: u64,
    read_only: bool,
) -> Result<i32, ApiError> {
    ctx::check(ctx_id)?;
    // SAFETY: NULL or NUL-terminated per the caller's contract.
    let tag = unsafe { ffi::c_str(c_tag, "c_tag") }?;
    // SAFETY: as above.
    let path = unsafe { ffi::opt_c_str(c_path, "c_path") }?.ok_or(ApiError::Unsupported(
        "virtio-fs shares without a host directory (c_path NULL)",
    ))?;
    let share = FsShare {
        tag: tag.to_string(),
        path: PathBuf::from(path),
        shm_size,
        read_only,
    };
    ctx::with(ctx_id, |c| c.add_fs_share(share)).map(|()| 0)
}

/// Shares the host directory `c_path` with the guest over virtio-fs under the mount tag
/// `c_tag`; the tag `KRUN_FS_ROOT_TAG` makes it the root. No DAX window, read-write.
/// Returns 0, -ENOENT for an unknown context, -EINVAL for a NULL, empty or non-UTF-8 tag or
/// a non-UTF-8 path, -ENOTSUP for a NULL path (directory-less shares), -EEXIST for a tag
/// already in use, -EBUSY for a root tag when the root is a disk or overlay.
///
/// # Safety
/// `c_tag` and `c_path` are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_add_virtiofs(
    ctx_id: u32,
    c_tag: *const c_char,
    c_path: *const c_char,
) -> i32 {
    // SAFETY: forwarded contract.
    guard("krun_add_virtiofs", || unsafe {
        add_share(ctx_id, c_tag, c_path, 0, false)
    })
}

/// As `krun_add_virtiofs`, with a DAX window of `shm_size` bytes (0: none).
///
/// # Safety
/// `c_tag` and `c_path` are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_add_virtiofs2(
    ctx_id: u32,
    c_tag: *const c_char,
    c_path: *const c_char,
    shm_size: u64,
) -> i32 {
    // SAFETY: forwarded contract.
    guard("krun_add_virtiofs2", || unsafe {
        add_share(ctx_id, c_tag, c_path, shm_size, false)
    })
}

/// As `krun_add_virtiofs2`; `read_only` true makes the guest unable to modify the share.
///
/// # Safety
/// `c_tag` and `c_path` are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_add_virtiofs3(
    ctx_id: u32,
    c_tag: *const c_char,
    c_path: *const c_char,
    shm_size: u64,
    read_only: bool,
) -> i32 {
    // SAFETY: forwarded contract.
    guard("krun_add_virtiofs3", || unsafe {
        add_share(ctx_id, c_tag, c_path, shm_size, read_only)
    })
}

/// As `krun_add_virtiofs3`, with a caching/consistency `semantics` selector. Only 0 (the
/// default semantics) is supported; other values return -ENOTSUP.
///
/// # Safety
/// `c_tag` and `c_path` are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_add_virtiofs4(
    ctx_id: u32,
    c_tag: *const c_char,
    c_path: *const c_char,
    shm_size: u64,
    read_only: bool,
    semantics: u32,
) -> i32 {
    guard("krun_add_virtiofs4", || {
        if semantics != 0 {
            ctx::check(ctx_id)?;
            return Err(ApiError::Unsupported("virtio-fs semantics other than 0"));
        }
        // SAFETY: forwarded contract.
        unsafe { add_share(ctx_id, c_tag, c_path, shm_size, read_only) }
    })
}

/// Makes the root an overlay of host directories, given lowest layer first in a
/// NULL-terminated array (microsandbox's extension). Returns 0, -ENOENT for an unknown
/// context, -EINVAL for a NULL or empty array or non-UTF-8 text, -E2BIG for an array with no
/// terminator, -EBUSY if a root is already set.
///
/// # Safety
/// `root_layers` is NULL or a NULL-terminated array of NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn krun_set_overlayfs_root(
    ctx_id: u32,
    root_layers: *const *const c_char,
) -> i32 {
    guard("krun_set_overlayfs_root", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NULL-terminated per this function's contract.
        let layers = unsafe { ffi::c_str_array(root_layers, "root_layers") }?;
        let layers = layers.into_iter().map(PathBuf::from).collect();
        ctx::with(ctx_id, |c| c.set_root_layers(layers)).map(|()| 0)
    })
}

/// Shows a file at `path` in the share tagged `fs_tag`, with contents `data[0..data_len]`
/// (copied now) and permission bits `mode`; `one_shot` true removes it after the guest
/// first reads it. Its parent must be the share's top or an overlay directory added before.
/// Returns 0, -ENOENT for an unknown context, tag or parent, -ENOTDIR if the parent is an
/// overlay file, -EEXIST for a path already added, -EINVAL for NULL strings, non-UTF-8, an
/// empty or `..` path, or NULL `data` with a non-zero length.
///
/// # Safety
/// The strings are NULL or NUL-terminated; `data` is NULL or points to `data_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn krun_fs_add_overlay_file(
    ctx_id: u32,
    fs_tag: *const c_char,
    path: *const c_char,
    data: *const u8,
    data_len: usize,
    mode: u32,
    one_shot: bool,
) -> i32 {
    guard("krun_fs_add_overlay_file", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        let tag = unsafe { ffi::c_str(fs_tag, "fs_tag") }?.to_string();
        // SAFETY: as above.
        let path = unsafe { ffi::c_str(path, "path") }?.to_string();
        // SAFETY: NULL or `data_len` readable bytes per this function's contract.
        let data = unsafe { ffi::bytes(data, data_len, "data") }?;
        let overlay = FsOverlay {
            tag,
            path,
            mode,
            kind: FsOverlayKind::File { data, one_shot },
        };
        ctx::with(ctx_id, |c| c.add_fs_overlay(overlay)).map(|()| 0)
    })
}

/// Shows an empty directory at `path` in the share tagged `fs_tag` with permission bits
/// `mode`. Same rules and errors as `krun_fs_add_overlay_file`.
///
/// # Safety
/// The strings are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_fs_add_overlay_dir(
    ctx_id: u32,
    fs_tag: *const c_char,
    path: *const c_char,
    mode: u32,
) -> i32 {
    guard("krun_fs_add_overlay_dir", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        let tag = unsafe { ffi::c_str(fs_tag, "fs_tag") }?.to_string();
        // SAFETY: as above.
        let path = unsafe { ffi::c_str(path, "path") }?.to_string();
        let overlay = FsOverlay {
            tag,
            path,
            mode,
            kind: FsOverlayKind::Dir,
        };
        ctx::with(ctx_id, |c| c.add_fs_overlay(overlay)).map(|()| 0)
    })
}
