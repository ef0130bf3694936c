//! virtio-net interfaces: unix-socket and tap backends, and the legacy single interface.

use std::ffi::{c_char, c_int};
use std::path::PathBuf;

use vmm::config::{Net, NetBackend};

use crate::ctx;
use crate::ffi::{self, guard, ApiError};

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
    let path = unsafe { ffi::opt_c_str(c_path, "c_path") }?.map(PathBuf::from);
    // SAFETY: NULL or 6 readable bytes per the caller's contract.
    let mac = unsafe { ffi::mac(c_mac, "c_mac") }?;
    let fd = (fd >= 0).then_some(fd);
    let backend = if stream {
        NetBackend::UnixStream { path, fd }
    } else {
        NetBackend::UnixGram { path, fd }
    };
    let net = Net {
        backend,
        mac,
        features,
        flags,
    };
    ctx::with(ctx_id, |c| c.add_net(net)).map(|()| 0)
}

/// Adds a virtio-net interface whose frames travel over a unix stream socket (passt or
/// socket_vmnet style): give either the socket path `c_path` (fd -1) or a connected socket
/// `fd` (`c_path` NULL). `c_mac` is the 6-byte MAC, `features` a mask of `NET_FEATURE_*`,
/// `flags` 0 or `NET_FLAG_DHCP_CLIENT`. Interfaces are eth0, eth1, ... in call order.
/// Returns 0, -ENOENT for an unknown context, -EINVAL for both or neither of path and fd, a
/// NULL or group MAC, unknown feature or flag bits, non-UTF-8 path, -EBUSY if
/// `krun_set_passt_fd`/`krun_set_gvproxy_path` configured the legacy interface.
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

/// As `krun_add_net_unixstream` over a unix datagram socket (gvproxy, vmnet-helper);
/// `flags` may also hold `NET_FLAG_VFKIT` (only with a path) to send vfkit's handshake.
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

/// Adds a virtio-net interface backed by the host tap device `c_tap_name`. Guest offloads
/// (GUEST_TSO4/TSO6/UFO) require NET_FEATURE_GUEST_CSUM. Same returns as
/// `krun_add_net_unixstream`, with -EINVAL for a NULL or empty tap name.
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
        let name = unsafe { ffi::c_str(c_tap_name, "c_tap_name") }?.to_string();
        // SAFETY: NULL or 6 readable bytes per this function's contract.
        let mac = unsafe { ffi::mac(c_mac, "c_mac") }?;
        let net = Net {
            backend: NetBackend::Tap { name },
            mac,
            features,
            flags,
        };
        ctx::with(ctx_id, |c| c.add_net(net)).map(|()| 0)
    })
}

/// Legacy single interface: a connected passt socket `fd` (replaces the implicit TSI
/// network). Returns 0, -ENOENT for an unknown context, -EINVAL for a negative fd, -EBUSY if
/// `krun_add_net_*` interfaces exist.
#[no_mangle]
pub extern "C" fn krun_set_passt_fd(ctx_id: u32, fd: c_int) -> i32 {
    guard("krun_set_passt_fd", || {
        ctx::check(ctx_id)?;
        let fd = ffi::fd(fd, "fd")?;
        ctx::with(ctx_id, |c| c.set_legacy_net(NetBackend::Passt { fd })).map(|()| 0)
    })
}

/// Legacy single interface: gvproxy's unix datagram socket at `c_path`. Returns 0, -ENOENT
/// for an unknown context, -EINVAL for a NULL, empty or non-UTF-8 path, -EBUSY if
/// `krun_add_net_*` interfaces exist.
///
/// # Safety
/// `c_path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_set_gvproxy_path(ctx_id: u32, c_path: *mut c_char) -> i32 {
    guard("krun_set_gvproxy_path", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        let path = PathBuf::from(unsafe { ffi::c_str(c_path, "c_path") }?);
        ctx::with(ctx_id, |c| c.set_legacy_net(NetBackend::Gvproxy { path })).map(|()| 0)
    })
}

/// Sets the MAC of the legacy interface (`krun_set_passt_fd`/`krun_set_gvproxy_path`),
/// before or after it is configured. Returns 0, -ENOENT for an unknown context, -EINVAL for
/// a NULL, all-zero or group (multicast) MAC.
///
/// # Safety
/// `c_mac` is NULL or points to 6 bytes.
#[no_mangle]
pub unsafe extern "C" fn krun_set_net_mac(ctx_id: u32, c_mac: *mut u8) -> i32 {
    guard("krun_set_net_mac", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or 6 readable bytes per this function's contract.
        let mac = unsafe { ffi::mac(c_mac, "c_mac") }?;
        ctx::with(ctx_id, |c| c.set_legacy_net_mac(mac)).map(|()| 0)
    })
}
