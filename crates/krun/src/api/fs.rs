//! virtio-fs: the root directory, extra shares, overlay roots, virtual overlay entries.

use std::ffi::c_char;
use std::path::PathBuf;

use vmm::config::{FsOverlay, FsOverlayKind, FsSemantics, FsShare};

use crate::ctx;
use crate::ffi::{self, guard, ApiError};

/// Serves the host directory `root_path` as the guest's `/` over virtio-fs (tag
/// `KRUN_FS_ROOT_TAG`), with upstream's 512 MiB DAX window (the kernel mounts the root
/// without `dax`, so the window holds no mapping unless the guest asks for one). Returns 0, -ENOENT for an unknown context or a missing directory,
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

/// The common body of `krun_add_virtiofs*`. A NULL `c_path` is upstream's NullFs: a share
/// with no host directory, showing only the virtual entries `krun_fs_add_overlay_*` adds.
///
/// # Safety
/// `c_tag` and `c_path` are NULL or NUL-terminated.
unsafe fn add_share(
    ctx_id: u32,
    (c_tag, c_path): (*const c_char, *const c_char),
    shm_size: u64,
    read_only: bool,
    semantics: FsSemantics,
) -> Result<i32, ApiError> {
    ctx::check(ctx_id)?;
    // SAFETY: NULL or NUL-terminated per the caller's contract.
    let tag = unsafe { ffi::c_str(c_tag, "c_tag") }?;
    // SAFETY: as above.
    let path = unsafe { ffi::opt_c_str(c_path, "c_path") }?;
    if let Some(path) = path {
        ffi::existing_dir(path, "c_path")?;
    }
    let share = FsShare {
        tag: tag.to_string(),
        path: path.map(PathBuf::from),
        shm_size,
        read_only,
        semantics,
        layers: Vec::new(),
        backend: None,
    };
    ctx::with(ctx_id, |c| c.add_fs_share(share))?;
    Ok(0)
}

/// Shares the host directory `c_path` with the guest over virtio-fs under the mount tag
/// `c_tag`; the tag `KRUN_FS_ROOT_TAG` makes it the root. No DAX window, read-write.
/// Returns 0, -ENOENT for an unknown context or a missing directory, -ENOTDIR if `c_path`
/// is not a directory, -EINVAL for a NULL tag, a tag that is empty or longer than 36 bytes,
/// or non-UTF-8 text, -EEXIST for a tag already in use. A NULL `c_path` shares no host
/// directory (NullFs): the guest sees an empty read-only directory holding only the virtual
/// entries of `krun_fs_add_overlay_*`.
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
        add_share(
            ctx_id,
            (c_tag, c_path),
            0,
            false,
            FsSemantics::LinuxComplete,
        )
    })
}

/// As `krun_add_virtiofs`, with a DAX window of `shm_size` bytes (0: none), rounded up to
/// 2 MiB, which the guest uses when it mounts the share with `-o dax`; the root share
/// (`/dev/root`) gets its window too.
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
        add_share(
            ctx_id,
            (c_tag, c_path),
            shm_size,
            false,
            FsSemantics::LinuxComplete,
        )
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
            ctx_id,
            (c_tag, c_path),
            shm_size,
            read_only,
            FsSemantics::LinuxComplete,
        )
    })
}

/// As `krun_add_virtiofs3`, with upstream's permission `semantics`: 0
/// (`KRUN_SEMANTICS_LINUX_COMPLETE`) serves the host's owners and permission bits as the
/// other calls do; 1 (`KRUN_SEMANTICS_LINUX_SIMPLIFIED`) keeps permission bits on the host
/// but ignores ownership: each file is reported as owned by the guest process asking, and
/// chown/chgrp leave the host file's owner alone. Returns what `krun_add_virtiofs3` returns,
/// and -EINVAL for any other `semantics`.
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
        ctx::check(ctx_id)?;
        let semantics = FsSemantics::from_raw(semantics)?;
        // SAFETY: forwarded contract.
        unsafe { add_share(ctx_id, (c_tag, c_path), shm_size, read_only, semantics) }
    })
}

/// Makes the guest's root the union of the host directories `root_layers` (microsandbox's
/// extension), given lowest first: the last one is the top layer, where every change lands;
/// the others are never modified. A lower file is copied up before it is written or its
/// attributes change; deleting a lower entry leaves an OCI whiteout `.wh.NAME` in the top
/// layer, and a top directory holding `.wh..wh..opq` hides the layers below it. Returns 0,
/// -ENOENT for an unknown context or a missing directory, -ENOTDIR for a layer that is not a
/// directory, -EINVAL for a NULL or empty array (or more than 128 layers), empty or non-UTF-8
/// text, -E2BIG for an array with no terminator, -EBUSY if another kind of root is set,
/// -EEXIST if a virtio-fs root is set.
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
        if layers.len() > MAX_ROOT_LAYERS {
            return Err(ApiError::Invalid {
                what: "root_layers",
                why: format!("{} layers, at most {MAX_ROOT_LAYERS}", layers.len()),
            });
        }
        for layer in &layers {
            ffi::existing_dir(layer, "root_layers")?;
        }
        let layers = layers.iter().map(PathBuf::from).collect();
        ctx::with(ctx_id, |c| c.set_root_layers(layers)).map(|()| 0)
    })
}

/// As microsandbox's fork.
const MAX_ROOT_LAYERS: usize = 128;

/// Shows a read-only file at `path` in the share tagged `fs_tag`, with contents
/// `data[0..data_len]` (copied now: the caller's buffer may go away after the call) and
/// permission bits `mode` (file type bits are ignored: `0100644` and `0644` are the same).
/// It hides a host file of the same name without touching it; opening it for writing fails
/// with `EACCES`, changing or removing it with `EPERM`. `one_shot`: the entry leaves its
/// directory after the guest's first lookup (an open descriptor keeps reading it).
/// Every directory on the way must exist: a virtual one added before, or one of the share's
/// host directory. Returns 0, -ENOENT for an unknown context or tag or a missing directory
/// on the way, -ENOTDIR when one on the way is a file, -EEXIST for a path given twice,
/// -EINVAL for NULL strings, an empty path or `.`/`..`/empty components, non-UTF-8 text or
/// NULL `data` with a non-zero length.
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
        let tag = unsafe { ffi::c_str(fs_tag, "fs_tag") }?;
        // SAFETY: as above.
        let path = unsafe { ffi::c_str(path, "path") }?;
        // SAFETY: NULL or `data_len` readable bytes per this function's contract.
        let data = unsafe { ffi::bytes(data, data_len, "data") }?;
        let overlay = FsOverlay {
            tag: tag.to_string(),
            path: path.to_string(),
            mode,
            kind: FsOverlayKind::File { data, one_shot },
        };
        ctx::with(ctx_id, |c| c.add_fs_overlay(overlay)).map(|()| 0)
    })
}

/// Shows an empty read-only directory at `path` in the share tagged `fs_tag` with
/// permission bits `mode` (a mount point such as `dev`, or the parent of later overlay
/// entries); a host entry of the same name is hidden, not touched. Returns what
/// `krun_fs_add_overlay_file` returns.
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
        let tag = unsafe { ffi::c_str(fs_tag, "fs_tag") }?;
        // SAFETY: as above.
        let path = unsafe { ffi::c_str(path, "path") }?;
        let overlay = FsOverlay {
            tag: tag.to_string(),
            path: path.to_string(),
            mode,
            kind: FsOverlayKind::Dir,
        };
        ctx::with(ctx_id, |c| c.add_fs_overlay(overlay)).map(|()| 0)
    })
}
