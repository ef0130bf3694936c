//! virtio-net interfaces (unix-socket and tap backends, the legacy single interface): not
//! built yet, so every call checks its arguments and then fails with -ENOTSUP, and the
//! implicit TSI network stays as it was (a guest is never left without any network).
//! `krun_has_feature(KRUN_FEATURE_NET)` is false.

use std::ffi::{c_char, c_int};

use vmm::config::ConfigError;

use crate::ctx;
use crate::ffi::{self, guard, ApiError};

/// What the refusal's log line names.
const NO_NET: &str = "virtio-net (passt, gvproxy, tap and unix-socket interfaces)";

/// The common body of the unix-socket backends: exactly one of path and fd.
///
/// # Safety
/// `c_path` is NULL or NUL-terminated; `c_mac` is NULL or points to 6 bytes.
unsafe fn add_unix(
    ctx_id: u32,
    c_path: *const c_char,
    fd: c_int,
    c_mac: *const u8,
    features: u32,
    flags: u32,
    stream: bool,
) -> Result<i32, ApiError> {
    ctx::check(ctx_id)?;
    // SAFETY: NULL or NUL-terminated per the caller's contract.
    let path = unsafe { ffi::opt_c_str(c_path, "c_path") }?;
    // SAFETY: NULL or 6 readable bytes per the caller's contract.
    unsafe { ffi::mac(c_mac, "c_mac") }?;
    if path.is_some() == (fd >= 0) {
        return Err(ConfigError::NetEndpoint.into());
    }
    let _ = (features, flags, stream);
    Err(ApiError::Unsupported(NO_NET))
}

/// Would add a virtio-net interface whose frames travel over a unix stream socket (passt or
/// socket_vmnet style): the socket path `c_path` (fd -1) or a connected socket `fd`
/// (`c_path` NULL), the 6-byte MAC `c_mac`, `NET_FEATURE_*` `features`, `NET_FLAG_*`
/// `flags`. Not supported by this build yet: returns -ENOENT for an unknown context,
/// -EINVAL for a NULL MAC, a non-UTF-8 path, or both or neither of path and fd, else
/// -ENOTSUP.
///
/// # Safety
/// `c_path` is NULL or NUL-terminated; `c_mac` is NULL or points to 6 bytes.
#[no_mangle]
pub unsafe extern "C" fn krun_add_net_unixstream(
    ctx_id: u32,
    c_path: *const c_char,
    fd: c_int,
    c_mac: *mut u8,
    features: u32,
    flags: u32,
) -> i32 {
    guard("krun_add_net_unixstream", || {
        // SAFETY: forwarded contract.
        unsafe { add_unix(ctx_id, c_path, fd, c_mac, features, flags, true) }
    })
}

/// As `krun_add_net_unixstream` over a unix datagram socket (gvproxy, vmnet-helper). Not
/// supported yet: -ENOTSUP after the same argument checks.
///
/// # Safety
/// `c_path` is NULL or NUL-terminated; `c_mac` is NULL or points to 6 bytes.
#[no_mangle]
pub unsafe extern "C" fn krun_add_net_unixgram(
    ctx_id: u32,
    c_path: *const c_char,
    fd: c_int,
    c_mac: *mut u8,
    features: u32,
    flags: u32,
) -> i32 {
    guard("krun_add_net_unixgram", || {
        // SAFETY: forwarded contract.
        unsafe { add_unix(ctx_id, c_path, fd, c_mac, features, flags, false) }
    })
}

/// Would add a virtio-net interface backed by the host tap device `c_tap_name`. Not
/// supported yet: returns -ENOENT for an unknown context, -EINVAL for a NULL or non-UTF-8
/// name or a NULL MAC, else -ENOTSUP.
///
/// # Safety
/// `c_tap_name` is NULL or NUL-terminated; `c_mac` is NULL or points to 6 bytes.
#[no_mangle]
pub unsafe extern "C" fn krun_add_net_tap(
    ctx_id: u32,
    c_tap_name: *mut c_char,
    c_mac: *mut u8,
    features: u32,
    flags: u32,
) -> i32 {
    guard("krun_add_net_tap", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        unsafe { ffi::c_str(c_tap_name, "c_tap_name") }?;
        // SAFETY: NULL or 6 readable bytes per this function's contract.
        unsafe { ffi::mac(c_mac, "c_mac") }?;
        let _ = (features, flags);
        Err(ApiError::Unsupported(NO_NET))
    })
}

/// Legacy single interface: would use the connected passt socket `fd` instead of the
/// implicit TSI network. Not supported yet: returns -ENOENT for an unknown context, -EINVAL
/// for a negative fd, else -ENOTSUP (TSI stays on).
#[no_mangle]
pub extern "C" fn krun_set_passt_fd(ctx_id: u32, fd: c_int) -> i32 {
    guard("krun_set_passt_fd", || {
        ctx::check(ctx_id)?;
        ffi::fd(fd, "fd")?;
        Err(ApiError::Unsupported(NO_NET))
    })
}

/// Legacy single interface: would use gvproxy's unix datagram socket at `c_path`. Not
/// supported yet: returns -ENOENT for an unknown context, -EINVAL for a NULL or non-UTF-8
/// path, else -ENOTSUP (TSI stays on).
///
/// # Safety
/// `c_path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_set_gvproxy_path(ctx_id: u32, c_path: *mut c_char) -> i32 {
    guard("krun_set_gvproxy_path", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        unsafe { ffi::c_str(c_path, "c_path") }?;
        Err(ApiError::Unsupported(NO_NET))
    })
}

/// Would set the MAC of the legacy interface (`krun_set_passt_fd`/`krun_set_gvproxy_path`).
/// Not supported yet: returns -ENOENT for an unknown context, -EINVAL for a NULL MAC, else
/// -ENOTSUP.
///
/// # Safety
/// `c_mac` is NULL or points to 6 bytes.
#[no_mangle]
pub unsafe extern "C" fn krun_set_net_mac(ctx_id: u32, c_mac: *mut u8) -> i32 {
    guard("krun_set_net_mac", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or 6 readable bytes per this function's contract.
        unsafe { ffi::mac(c_mac, "c_mac") }?;
        Err(ApiError::Unsupported(NO_NET))
    })
}
