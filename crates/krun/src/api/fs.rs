//! virtio-fs: the root directory, extra shares, overlay roots, virtual overlay entries.

use std::ffi::c_char;
use std::path::PathBuf;

use vmm::config::{FsShare, Shown};

use crate::ctx;
use crate::ffi::{self, guard, ApiError};

/// Serves the host directory `root_path` as the guest's `/` over virtio-fs (tag
/// `KRUN_FS_ROOT_TAG`). Returns 0, -ENOENT for an unknown context or a missing directory,
/// -ENOTDIR if `root_path` is not a directory, -EINVAL for a NULL, empty or non-UTF-8 path,
/// -EEXIST if a root is already set.
///
/// # Safety
/// `root_path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_set_root(ctx_id: u32, root_path: *const c_char) -> i32 {
    guard("krun_set_root", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        let path = unsafe { ffi::c_str(root_path, "root_path") }?;
        if !path.is_empty() {
            ffi::existing_dir(path, "root_path")?;
        }
        ctx::with(ctx_id, |c| c.set_root_dir(PathBuf::from(path))).map(|()| 0)
    })
}

/// The common body of `krun_add_virtiofs*`.
///
/// # Safety
/// `c_tag` and `c_path` are NULL or NUL-terminated.
unsafe fn add_share(
    func: &'static str,
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
    ffi::existing_dir(path, "c_path")?;
    let share = FsShare {
        tag: tag.to_string(),
        path: PathBuf::from(path),
        shm_size,
        read_only,
    };
    ctx::with(ctx_id, |c| c.add_fs_share(share))?;
    if shm_size != 0 {
        ffi::ignored(
            func,
            &format!("DAX window of {shm_size} bytes for tag {}", Shown(tag)),
            "virtio-fs has no DAX here; the share works through FUSE reads and writes",
        );
    }
    Ok(0)
}

/// Shares the host directory `c_path` with the guest over virtio-fs under the mount tag
/// `c_tag`; the tag `KRUN_FS_ROOT_TAG` makes it the root. No DAX window, read-write.
/// Returns 0, -ENOENT for an unknown context or a missing directory, -ENOTDIR if `c_path`
/// is not a directory, -EINVAL for a NULL tag, a tag that is empty or longer than 36 bytes,
/// or non-UTF-8 text, -ENOTSUP for a NULL path (directory-less shares), -EEXIST for a tag
/// already in use.
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
        add_share("krun_add_virtiofs", ctx_id, c_tag, c_path, 0, false)
    })
}

/// As `krun_add_virtiofs`, with a DAX window of `shm_size` bytes (0: none). This build has
/// no DAX: a non-zero `shm_size` is ignored with a warning (the share works without it).
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
        add_share("krun_add_virtiofs2", ctx_id, c_tag, c_path, shm_size, false)
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
        add_share(
            "krun_add_virtiofs3",
            ctx_id,
            c_tag,
            c_path,
            shm_size,
            read_only,
        )
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
        unsafe {
            add_share(
                "krun_add_virtiofs4",
                ctx_id,
                c_tag,
                c_path,
                shm_size,
                read_only,
            )
        }
    })
}

/// Would make the root an overlay of host directories, given lowest layer first in a
/// NULL-terminated array (microsandbox's extension). Not supported by this build yet:
/// returns -ENOENT for an unknown context, -EINVAL for a NULL array or non-UTF-8 text,
/// -E2BIG for an array with no terminator, else -ENOTSUP.
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
        unsafe { ffi::c_str_array(root_layers, "root_layers") }?;
        Err(ApiError::Unsupported("an overlayfs root"))
    })
}

/// Would show a file at `path` in the share tagged `fs_tag`, with contents
/// `data[0..data_len]` and permission bits `mode` (`one_shot`: removed after the guest first
/// reads it). Not supported by this build yet: returns -ENOENT for an unknown context,
/// -EINVAL for NULL strings, non-UTF-8 text or NULL `data` with a non-zero length, else
/// -ENOTSUP.
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
        unsafe { ffi::c_str(fs_tag, "fs_tag") }?;
        // SAFETY: as above.
        unsafe { ffi::c_str(path, "path") }?;
        if data_len != 0 {
            ffi::non_null(data, "data")?;
        }
        let _ = (mode, one_shot);
        Err(ApiError::Unsupported(
            "virtual overlay files in virtio-fs shares",
        ))
    })
}

/// Would show an empty directory at `path` in the share tagged `fs_tag` with permission
/// bits `mode`. Not supported by this build yet: returns -ENOENT for an unknown context,
/// -EINVAL for NULL or non-UTF-8 strings, else -ENOTSUP.
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
        unsafe { ffi::c_str(fs_tag, "fs_tag") }?;
        // SAFETY: as above.
        unsafe { ffi::c_str(path, "path") }?;
        let _ = mode;
        Err(ApiError::Unsupported(
            "virtual overlay directories in virtio-fs shares",
        ))
    })
}
