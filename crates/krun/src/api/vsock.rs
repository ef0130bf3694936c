//! vsock and TSI: port maps, host-socket ports, the explicit vsock device, TSI scope.

use std::ffi::c_char;
use std::path::PathBuf;

use vmm::config::{TsiScope, VsockPort};

use crate::ctx;
use crate::ffi::{self, guard, ApiError};

/// Exposes guest ports on the host through TSI, from a NULL-terminated array of
/// `"HOST:GUEST"` entries; an empty array exposes none (by default every guest listener is
/// exposed). Returns 0, -ENOENT for an unknown context, -EINVAL for a NULL array or a
/// malformed entry, -EEXIST for a host or guest port given twice, -E2BIG for an array with
/// no terminator, -ENODEV if the vsock device is disabled.
///
/// # Safety
/// `port_map` is NULL or a NULL-terminated array of NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn krun_set_port_map(ctx_id: u32, port_map: *const *const c_char) -> i32 {
    guard("krun_set_port_map", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NULL-terminated per this function's contract.
        let entries = unsafe { ffi::c_str_array(port_map, "port_map") }?;
        ctx::with(ctx_id, |c| c.set_port_map(&entries)).map(|()| 0)
    })
}

/// Bridges guest vsock port `port` to the host unix socket `c_filepath`; the guest
/// connects to it. Same as `krun_add_vsock_port2` with `listen` false.
///
/// # Safety
/// `c_filepath` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_add_vsock_port(
    ctx_id: u32,
    port: u32,
    c_filepath: *const c_char,
) -> i32 {
    // SAFETY: forwarded contract.
    guard("krun_add_vsock_port", || unsafe {
        add_port(ctx_id, port, c_filepath, false)
    })
}

/// Bridges guest vsock port `port` to the host unix socket `c_filepath`. With `listen`
/// true the VMM creates and listens on `c_filepath` and connects host clients to the guest
/// port (the file must not exist yet); with false the guest connects out to it. Returns 0,
/// -ENOENT for an unknown context, -EINVAL for a NULL, empty or non-UTF-8 path, -EEXIST if
/// the port is already mapped or (listen) the file exists, -ENODEV if vsock is disabled.
///
/// # Safety
/// `c_filepath` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_add_vsock_port2(
    ctx_id: u32,
    port: u32,
    c_filepath: *const c_char,
    listen: bool,
) -> i32 {
    // SAFETY: forwarded contract.
    guard("krun_add_vsock_port2", || unsafe {
        add_port(ctx_id, port, c_filepath, listen)
    })
}

/// # Safety
/// `c_filepath` is NULL or NUL-terminated.
unsafe fn add_port(
    ctx_id: u32,
    port: u32,
    c_filepath: *const c_char,
    listen: bool,
) -> Result<i32, ApiError> {
    ctx::check(ctx_id)?;
    // SAFETY: NULL or NUL-terminated per the caller's contract.
    let path = PathBuf::from(unsafe { ffi::c_str(c_filepath, "c_filepath") }?);
    if listen {
        let exists = path.try_exists().map_err(|source| ApiError::Io {
            what: format!("c_filepath {}", vmm::config::Shown(&path.to_string_lossy())),
            source,
        })?;
        if exists {
            return Err(ApiError::Exists {
                what: format!(
                    "listening socket path {}",
                    vmm::config::Shown(&path.to_string_lossy())
                ),
            });
        }
    }
    let port = VsockPort { port, path, listen };
    ctx::with(ctx_id, |c| c.add_vsock_port(port)).map(|()| 0)
}

/// Removes the implicit vsock device (and with it TSI networking); `krun_add_vsock` may
/// add an explicit one. Returns 0 or -ENOENT for an unknown context.
#[no_mangle]
pub extern "C" fn krun_disable_implicit_vsock(ctx_id: u32) -> i32 {
    guard("krun_disable_implicit_vsock", || {
        ctx::with(ctx_id, |c| {
            c.disable_implicit_vsock();
            Ok(0)
        })
    })
}

/// Adds an explicit vsock device with the given TSI features (`KRUN_TSI_HIJACK_*`, 0 for
/// plain vsock), after `krun_disable_implicit_vsock`. Returns 0, -ENOENT for an unknown
/// context, -EINVAL for unknown feature bits, -EEXIST if a vsock device (implicit or
/// explicit) is already configured.
#[no_mangle]
pub extern "C" fn krun_add_vsock(ctx_id: u32, tsi_features: u32) -> i32 {
    guard("krun_add_vsock", || {
        ctx::with(ctx_id, |c| c.add_vsock(tsi_features)).map(|()| 0)
    })
}

/// Limits which destinations guest sockets may reach through TSI (microsandbox's
/// extension): `c_ip` the guest's IPv4 address or NULL, `c_subnet` an `ADDR/PREFIX` network
/// or NULL, `scope` 0 to 3 (none, group, public, any). The guest's TSI interface carries
/// `c_ip` (with the subnet's prefix when it lies in it, else /32), and guest listeners are
/// then exposed only when bound to it or to the wildcard; scope 0 exposes none. Returns 0,
/// -ENOENT for an unknown context, -EINVAL for non-UTF-8 text, a malformed or non-IPv4
/// address, a malformed subnet, or a scope above 3.
///
/// # Safety
/// `c_ip` and `c_subnet` are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_set_tsi_scope(
    ctx_id: u32,
    c_ip: *const c_char,
    c_subnet: *const c_char,
    scope: u8,
) -> i32 {
    guard("krun_set_tsi_scope", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        let ip = unsafe { ffi::opt_c_str(c_ip, "c_ip") }?.map(str::to_string);
        // SAFETY: as above.
        let subnet = unsafe { ffi::opt_c_str(c_subnet, "c_subnet") }?.map(str::to_string);
        ctx::with(ctx_id, |c| c.set_tsi_scope(TsiScope { ip, subnet, scope }))?;
        Ok(0)
    })
}
