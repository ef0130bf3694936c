//! virtio-net interfaces: unix stream (passt), unix datagram (gvproxy, vfkit), tap, and the
//! legacy single interface (`krun_set_passt_fd`, `krun_set_gvproxy_path`,
//! `krun_set_net_mac`). Each added interface becomes eth0, eth1, ... in call order; with
//! any interface the implicit vsock device stops hijacking inet sockets (upstream's rule),
//! so the guest's network is the interfaces'.

use std::ffi::{c_char, c_int};
use std::path::PathBuf;

use vmm::config::{ConfigError, Net, NetBackend};

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
    if path.is_some() == (fd >= 0) {
        return Err(ConfigError::NetEndpoint.into());
    }
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

/// Adds a virtio-net interface whose frames travel over a unix stream socket with passt's
/// protocol (each frame after its 32-bit big-endian length): the socket path `c_path`
/// (`fd` -1; connected when the VM starts) or a connected socket `fd` (`c_path` NULL; the
/// VMM uses a copy), the 6-byte MAC `c_mac`, `NET_FEATURE_*` `features` (offered to the
/// guest where the backend can honour them), `NET_FLAG_*` `flags` (`NET_FLAG_DHCP_CLIENT`:
/// init configures the interface by DHCP). Returns 0, -ENOENT for an unknown context,
/// -EINVAL for a NULL or multicast or all-zero MAC, a non-UTF-8 path, both or neither of
/// path and fd, unknown feature or flag bits, -EBUSY after `krun_set_passt_fd` /
/// `krun_set_gvproxy_path`. A path that cannot be connected fails `krun_start_enter`
/// with connect's errno.
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

/// As `krun_add_net_unixstream` over a unix datagram socket, one frame per datagram
/// (gvproxy, vmnet-helper). With a path the VMM binds a local socket in the temporary
/// directory for the peer to answer to, and with `NET_FLAG_VFKIT` sends vfkit's magic
/// (`VFKT`) first; `NET_FLAG_VFKIT` with an fd is -EINVAL.
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

/// Adds a virtio-net interface backed by the host tap device `c_tap_name` (created if it
/// does not exist; opened with a virtio-net header, offloads set from what the guest
/// accepts). Returns 0, -ENOENT for an unknown context, -EINVAL for a NULL, empty,
/// non-UTF-8 or longer than 15 bytes name, a bad MAC, unknown feature or flag bits, or
/// guest offloads without `NET_FEATURE_GUEST_CSUM`. A tap that cannot be opened fails
/// `krun_start_enter` with the open's errno (e.g. -EPERM without CAP_NET_ADMIN).
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

/// Legacy single interface: the connected passt socket `fd` (a unix stream with passt's
/// framing, `COMPAT_NET_FEATURES`, no DHCP by init) replaces the implicit TSI network.
/// Returns 0, -ENOENT for an unknown context, -EINVAL for a negative fd, -EBUSY when
/// `krun_add_net_*` interfaces exist.
#[no_mangle]
pub extern "C" fn krun_set_passt_fd(ctx_id: u32, fd: c_int) -> i32 {
    guard("krun_set_passt_fd", || {
        ctx::check(ctx_id)?;
        ffi::fd(fd, "fd")?;
        ctx::with(ctx_id, |c| c.set_legacy_net(NetBackend::Passt { fd })).map(|()| 0)
    })
}

/// Legacy single interface: gvproxy's unix datagram socket at `c_path` (vfkit protocol:
/// the magic is sent first), `COMPAT_NET_FEATURES`, replacing the implicit TSI network.
/// Returns 0, -ENOENT for an unknown context, -EINVAL for a NULL, empty or non-UTF-8
/// path, -EBUSY when `krun_add_net_*` interfaces exist.
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
/// before or after it is configured (default 5a:94:ef:e4:0c:ee). Returns 0, -ENOENT for
/// an unknown context, -EINVAL for a NULL, multicast or all-zero MAC.
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
