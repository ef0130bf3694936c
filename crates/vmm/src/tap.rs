//! Opening a tap interface for virtio-net: `/dev/net/tun` with IFF_TAP | IFF_NO_PI |
//! IFF_VNET_HDR, a 12-byte vnet header (virtio 1.x's `virtio_net_hdr_v1`), and
//! TUNSETOFFLOAD from the features the guest driver accepted. The ioctls are the only
//! unsafe code; the device only ever reads and writes the fd.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use devices::net::{features, TapOffloads, VNET_HDR_LEN};

const TUN_PATH: &str = "/dev/net/tun";
/// The longest interface name (IFNAMSIZ - 1).
pub const MAX_TAP_NAME_LEN: usize = libc::IFNAMSIZ - 1;

// <linux/if_tun.h>: _IOW('T', 202, int), _IOW('T', 208, unsigned int), _IOW('T', 216, int).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: u32 = 0x01;
const TUN_F_TSO4: u32 = 0x02;
const TUN_F_TSO6: u32 = 0x04;
const TUN_F_UFO: u32 = 0x10;

/// An open tap and the offload bits it can honour.
pub struct OpenTap {
    pub file: File,
    pub offloads: u64,
}

/// Opens (creating if needed) the tap `name`.
pub fn open(name: &str) -> io::Result<OpenTap> {
    if name.is_empty() || name.len() > MAX_TAP_NAME_LEN || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tap name {name:?} must have 1 to {MAX_TAP_NAME_LEN} bytes"),
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_PATH)?;
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    // SAFETY: TUNSETIFF reads (and updates) one struct ifreq, which `req` is.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut libc::ifreq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let hdr_len = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int, which `hdr_len` is.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETVNETHDRSZ, &hdr_len as *const _) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // Segmentation the guest hands us, the tap's kernel side does: always honoured.
    let mut offloads = features::CSUM | features::HOST_TSO4 | features::HOST_TSO6;
    offloads |= features::HOST_UFO;
    // What the tap may hand the guest depends on what TUNSETOFFLOAD takes here.
    if set_offload(&file, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6).is_ok() {
        offloads |= features::GUEST_CSUM | features::GUEST_TSO4 | features::GUEST_TSO6;
    } else if set_offload(&file, TUN_F_CSUM).is_ok() {
        offloads |= features::GUEST_CSUM;
    }
    if set_offload(&file, TUN_F_CSUM | TUN_F_UFO).is_ok() {
        offloads |= features::GUEST_UFO;
    }
    // Nothing is offloaded towards the guest until it has accepted it.
    set_offload(&file, 0)?;
    Ok(OpenTap { file, offloads })
}

fn set_offload(file: &File, flags: u32) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its flags by value, no memory is passed.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETOFFLOAD, flags as libc::c_ulong) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The TUN_F_* flags for the negotiated virtio-net features: what the tap may hand the
/// guest (checksums left partial, large segments).
pub fn tun_flags(features: u64) -> u32 {
    if features & features::GUEST_CSUM == 0 {
        return 0;
    }
    let mut flags = TUN_F_CSUM;
    for (bit, flag) in [
        (features::GUEST_TSO4, TUN_F_TSO4),
        (features::GUEST_TSO6, TUN_F_TSO6),
        (features::GUEST_UFO, TUN_F_UFO),
    ] {
        if features & bit != 0 {
            flags |= flag;
        }
    }
    flags
}

/// TUNSETOFFLOAD for the device's [`devices::net::Tap`] backend.
pub struct Offloads;

impl TapOffloads for Offloads {
    fn set(&self, tap: &File, features: u64) -> io::Result<()> {
        set_offload(tap, tun_flags(features))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tun_flags_follow_the_guest_features() {
        assert_eq!(
            tun_flags(features::GUEST_TSO4),
            0,
            "no offload without GUEST_CSUM"
        );
        assert_eq!(
            tun_flags(features::GUEST_CSUM | features::GUEST_TSO4 | features::GUEST_UFO),
            TUN_F_CSUM | TUN_F_TSO4 | TUN_F_UFO
        );
    }

    #[test]
    fn open_long_name_invalid_input() {
        let err = open("a-name-of-16-byt").err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn ioctl_numbers_match_linux() {
        // _IOW('T', nr, 4 bytes) = 0x40000000 | 4 << 16 | 'T' << 8 | nr.
        let iow = |nr: libc::c_ulong| 0x4000_0000 | (4 << 16) | (0x54 << 8) | nr;
        assert_eq!(
            (TUNSETIFF, TUNSETOFFLOAD, TUNSETVNETHDRSZ),
            (iow(202), iow(208), iow(216))
        );
    }
}
