//! Features this libkrun does not implement (GPU, displays, input, sound, vhost-user, TEE,
//! EFI firmware): the symbols exist with upstream's prototypes so every client links and
//! loads, and check their arguments. Those that upstream's own builds without the feature
//! accept (the GPU options, sound) return 0 with one warning line, since clients such as
//! muvm call them unconditionally; the rest fail with -ENOTSUP.

use std::ffi::{c_char, c_int, c_void};

use crate::ctx;
use crate::ffi::{self, guard, ApiError};

/// The shared tail of every unsupported call: the context must exist, then -ENOTSUP.
/// The guard logs one line naming `feature`.
fn unsupported(ctx_id: u32, feature: &'static str) -> Result<i32, ApiError> {
    ctx::check(ctx_id)?;
    Err(ApiError::Unsupported(feature))
}

/// Why the GPU settings are accepted and ignored.
const NO_GPU: &str = "this build has no virtio-gpu, as upstream built without GPU support";

/// Ignored: this build has no virtio-gpu; like upstream's builds without GPU support it
/// returns 0 (with one warning line), so the guest simply has no GPU. Returns -ENOENT for an
/// unknown context.
#[no_mangle]
pub extern "C" fn krun_set_gpu_options(ctx_id: u32, virgl_flags: u32) -> i32 {
    guard("krun_set_gpu_options", || {
        ctx::check(ctx_id)?;
        let what = format!("GPU options (virgl flags {virgl_flags:#x})");
        ffi::ignored("krun_set_gpu_options", &what, NO_GPU);
        Ok(0)
    })
}

/// Ignored as `krun_set_gpu_options` (returns 0 with one warning line). Returns -ENOENT for
/// an unknown context.
#[no_mangle]
pub extern "C" fn krun_set_gpu_options2(ctx_id: u32, virgl_flags: u32, shm_size: u64) -> i32 {
    guard("krun_set_gpu_options2", || {
        ctx::check(ctx_id)?;
        let what = format!("GPU options (virgl flags {virgl_flags:#x}, shm_size {shm_size})");
        ffi::ignored("krun_set_gpu_options2", &what, NO_GPU);
        Ok(0)
    })
}

/// Ignored as `krun_set_gpu_options` (returns 0 with one warning line; the fd is neither
/// used nor closed). Returns -ENOENT for an unknown context, -EINVAL for a negative fd.
#[no_mangle]
pub extern "C" fn krun_set_gpu_render_server_fd(ctx_id: u32, render_server_fd: i32) -> i32 {
    guard("krun_set_gpu_render_server_fd", || {
        ctx::check(ctx_id)?;
        ffi::fd(render_server_fd, "render_server_fd")?;
        let what = format!("GPU render server fd {render_server_fd}");
        ffi::ignored("krun_set_gpu_render_server_fd", &what, NO_GPU);
        Ok(0)
    })
}

/// Not supported: this build has no displays. Returns -ENOENT for an unknown context, else
/// -ENOTSUP.
#[no_mangle]
pub extern "C" fn krun_add_display(ctx_id: u32, width: u32, height: u32) -> i32 {
    let _ = (width, height);
    guard("krun_add_display", || unsupported(ctx_id, "displays"))
}

/// Not supported: this build has no displays. Returns -ENOENT for an unknown context,
/// -EINVAL if `edid_blob` is NULL, else -ENOTSUP.
///
/// # Safety
/// `edid_blob` is NULL or points to `blob_size` bytes (they are not read).
#[no_mangle]
pub unsafe extern "C" fn krun_display_set_edid(
    ctx_id: u32,
    display_id: u32,
    edid_blob: *const u8,
    blob_size: usize,
) -> i32 {
    let _ = (display_id, blob_size);
    guard("krun_display_set_edid", || {
        ctx::check(ctx_id)?;
        ffi::non_null(edid_blob, "edid_blob")?;
        unsupported(ctx_id, "displays")
    })
}

/// Not supported: this build has no displays. Returns -ENOENT for an unknown context, else
/// -ENOTSUP.
#[no_mangle]
pub extern "C" fn krun_display_set_dpi(ctx_id: u32, display_id: u32, dpi: u32) -> i32 {
    let _ = (display_id, dpi);
    guard("krun_display_set_dpi", || unsupported(ctx_id, "displays"))
}

/// Not supported: this build has no displays. Returns -ENOENT for an unknown context, else
/// -ENOTSUP.
#[no_mangle]
pub extern "C" fn krun_display_set_physical_size(
    ctx_id: u32,
    display_id: u32,
    width_mm: u16,
    height_mm: u16,
) -> i32 {
    let _ = (display_id, width_mm, height_mm);
    guard("krun_display_set_physical_size", || {
        unsupported(ctx_id, "displays")
    })
}

/// Not supported: this build has no displays. Returns -ENOENT for an unknown context, else
/// -ENOTSUP.
#[no_mangle]
pub extern "C" fn krun_display_set_refresh_rate(
    ctx_id: u32,
    display_id: u32,
    refresh_rate: u32,
) -> i32 {
    let _ = (display_id, refresh_rate);
    guard("krun_display_set_refresh_rate", || {
        unsupported(ctx_id, "displays")
    })
}

/// Not supported: this build has no display backends. Returns -ENOENT for an unknown
/// context, -EINVAL if `display_backend` is NULL, else -ENOTSUP.
///
/// # Safety
/// `display_backend` is NULL or points to `backend_size` bytes (they are not read).
#[no_mangle]
pub unsafe extern "C" fn krun_set_display_backend(
    ctx_id: u32,
    display_backend: *const c_void,
    backend_size: usize,
) -> i32 {
    let _ = backend_size;
    guard("krun_set_display_backend", || {
        ctx::check(ctx_id)?;
        ffi::non_null(display_backend, "display_backend")?;
        unsupported(ctx_id, "display backends")
    })
}

/// Not supported: this build has no virtio-input. Returns -ENOENT for an unknown context,
/// -EINVAL if a backend pointer is NULL, else -ENOTSUP.
///
/// # Safety
/// The backend pointers are NULL or point to the given number of bytes (they are not read).
#[no_mangle]
pub unsafe extern "C" fn krun_add_input_device(
    ctx_id: u32,
    config_backend: *const c_void,
    config_backend_size: usize,
    events_backend: *const c_void,
    events_backend_size: usize,
) -> c_int {
    let _ = (config_backend_size, events_backend_size);
    guard("krun_add_input_device", || {
        ctx::check(ctx_id)?;
        ffi::non_null(config_backend, "config_backend")?;
        ffi::non_null(events_backend, "events_backend")?;
        unsupported(ctx_id, "virtio-input")
    })
}

/// Not supported: this build has no virtio-input. Returns -ENOENT for an unknown context,
/// -EINVAL for a negative fd, else -ENOTSUP.
#[no_mangle]
pub extern "C" fn krun_add_input_device_fd(ctx_id: u32, input_fd: c_int) -> c_int {
    guard("krun_add_input_device_fd", || {
        ctx::check(ctx_id)?;
        ffi::fd(input_fd, "input_fd")?;
        unsupported(ctx_id, "virtio-input")
    })
}

/// Not supported: this build has no vhost-user devices. Returns -ENOENT for an unknown
/// context, -EINVAL if `socket_path` is NULL or not UTF-8, if `name` is not UTF-8, or if
/// `queue_sizes` is NULL while `num_queues` is not 0; else -ENOTSUP.
///
/// # Safety
/// The strings are NULL or NUL-terminated; `queue_sizes` is NULL or points to `num_queues`
/// values (they are not read).
#[no_mangle]
pub unsafe extern "C" fn krun_add_vhost_user_device(
    ctx_id: u32,
    device_type: u32,
    socket_path: *const c_char,
    name: *const c_char,
    num_queues: u16,
    queue_sizes: *const u16,
) -> i32 {
    let _ = device_type;
    guard("krun_add_vhost_user_device", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        unsafe { ffi::c_str(socket_path, "socket_path") }?;
        // SAFETY: as above.
        unsafe { ffi::opt_c_str(name, "name") }?;
        if num_queues != 0 {
            ffi::non_null(queue_sizes, "queue_sizes")?;
        }
        unsupported(ctx_id, "vhost-user devices")
    })
}

/// Sound: this build has no virtio-snd. Like upstream's builds without sound support it
/// returns 0; `enable` true is ignored with one warning line (the guest has no sound
/// card). Returns -ENOENT for an unknown context.
#[no_mangle]
pub extern "C" fn krun_set_snd_device(ctx_id: u32, enable: bool) -> i32 {
    guard("krun_set_snd_device", || {
        ctx::check(ctx_id)?;
        if enable {
            ffi::ignored(
                "krun_set_snd_device",
                "a virtio-snd device",
                "this build has no sound support, as upstream built without it",
            );
        }
        Ok(0)
    })
}

/// Not supported: this build has no confidential-computing (TEE) support. Returns -ENOENT
/// for an unknown context, -EINVAL if `filepath` is NULL or not UTF-8, else -ENOTSUP.
///
/// # Safety
/// `filepath` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_set_tee_config_file(ctx_id: u32, filepath: *const c_char) -> i32 {
    guard("krun_set_tee_config_file", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        unsafe { ffi::c_str(filepath, "filepath") }?;
        unsupported(ctx_id, "TEE (SEV/TDX)")
    })
}

/// Not supported: this build boots Linux directly, without EFI firmware. Returns -ENOENT
/// for an unknown context, -EINVAL if `firmware_path` is NULL or not UTF-8, else -ENOTSUP.
///
/// # Safety
/// `firmware_path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_set_firmware(ctx_id: u32, firmware_path: *const c_char) -> i32 {
    guard("krun_set_firmware", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        unsafe { ffi::c_str(firmware_path, "firmware_path") }?;
        unsupported(ctx_id, "EFI firmware")
    })
}

/// Deprecated upstream and not supported: mapped volumes were replaced by
/// `krun_add_virtiofs`. Returns -ENOENT for an unknown context, -EINVAL if the array is NULL
/// or holds a non-UTF-8 string, -E2BIG if it has no NULL terminator, else -ENOTSUP.
///
/// # Safety
/// `mapped_volumes` is NULL or a NULL-terminated array of NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn krun_set_mapped_volumes(
    ctx_id: u32,
    mapped_volumes: *const *const c_char,
) -> i32 {
    guard("krun_set_mapped_volumes", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or a NULL-terminated array per this function's contract.
        unsafe { ffi::c_str_array(mapped_volumes, "mapped_volumes") }?;
        unsupported(ctx_id, "mapped volumes (use krun_add_virtiofs)")
    })
}
