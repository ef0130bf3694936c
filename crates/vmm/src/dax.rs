//! virtio-fs DAX windows: a reserved host range per window, registered as a KVM memory slot
//! at a guest physical address above RAM, into which file ranges are mapped on the guest's
//! FUSE_SETUPMAPPING and which goes back to nothing on FUSE_REMOVEMAPPING.
//!
//! Unmapped parts are `PROT_NONE` anonymous memory reserved with `MAP_NORESERVE`: they cost
//! address space only, so the window never grows the VMM's RSS beyond what is mapped (file
//! pages are the page cache's). The device checks every range before it reaches
//! [`DaxRegion`]; the checks here are repeated so that no call can touch memory outside the
//! reservation.

use std::io;
use std::os::fd::RawFd;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;

/// A window's size is rounded up to this: the guest maps in 2 MiB ranges (Linux's
/// `FUSE_DAX_SZ`), and the window's memory map is built in 2 MiB subsections.
pub const DAX_ALIGN: u64 = 2 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DaxError {
    #[error("a DAX window of {0} bytes is too large")]
    TooLarge(u64),
    #[error("cannot reserve {len} bytes of address space for a DAX window")]
    Reserve {
        len: u64,
        #[source]
        source: io::Error,
    },
    #[error("cannot register the DAX window at {guest_base:#x} as KVM slot {slot}")]
    Register {
        slot: u32,
        guest_base: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// One DAX window: `len` bytes of reserved host address space at `host`, seen by the guest
/// at `guest_base`.
#[derive(Debug)]
pub struct DaxRegion {
    /// Start of the reservation (a page-aligned address returned by mmap).
    host: usize,
    len: u64,
    guest_base: u64,
}

/// `len` rounded up to [`DAX_ALIGN`], None when it does not fit.
pub fn window_len(len: u64) -> Option<u64> {
    len.checked_next_multiple_of(DAX_ALIGN)
        .filter(|&l| usize::try_from(l).is_ok() && l != 0)
}

fn mmap_error(ret: *mut libc::c_void) -> io::Result<*mut libc::c_void> {
    if ret == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Reserves `len` bytes of inaccessible address space, nothing backing them.
fn reserve(len: usize) -> io::Result<usize> {
    // SAFETY: a new anonymous mapping at an address the kernel picks; it aliases nothing.
    let ret = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    mmap_error(ret).map(|p| p as usize)
}

impl DaxRegion {
    /// Reserves a window of `len` bytes (a multiple of [`DAX_ALIGN`]) for guest address
    /// `guest_base`; nothing is registered with KVM yet.
    pub fn new(guest_base: u64, len: u64) -> Result<Self, DaxError> {
        let size = usize::try_from(len).map_err(|_| DaxError::TooLarge(len))?;
        if len == 0 || !len.is_multiple_of(DAX_ALIGN) {
            return Err(DaxError::TooLarge(len));
        }
        let host = reserve(size).map_err(|source| DaxError::Reserve { len, source })?;
        Ok(Self {
            host,
            len,
            guest_base,
        })
    }

    /// Makes the window guest memory: KVM slot `slot` maps `guest_base` to the reservation.
    pub fn register(&self, vm: &VmFd, slot: u32) -> Result<(), DaxError> {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: self.guest_base,
            memory_size: self.len,
            userspace_addr: self.host as u64,
        };
        // SAFETY: the slot covers exactly the reservation, which lives until the region is
        // dropped; the VM keeps a reference to every region until after the VM fd (and with
        // it the slot) is closed. What the guest does through the slot touches only the
        // reservation's pages.
        unsafe { vm.set_user_memory_region(region) }.map_err(|source| DaxError::Register {
            slot,
            guest_base: self.guest_base,
            source,
        })
    }

    /// The host address of `len` bytes at `offset`, if they lie inside the window.
    fn range(&self, offset: u64, len: u64) -> io::Result<(*mut libc::c_void, usize)> {
        let inside = offset.checked_add(len).is_some_and(|end| end <= self.len);
        if !inside || len == 0 || !offset.is_multiple_of(4096) || !len.is_multiple_of(4096) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // Both fit in usize: the whole window does (checked in `new`).
        Ok((
            (self.host + offset as usize) as *mut libc::c_void,
            len as usize,
        ))
    }

    /// Replaces `len` bytes at `offset` with a mapping of `fd` (or the reservation's nothing).
    fn map_fixed(
        &self,
        offset: u64,
        len: u64,
        prot: i32,
        flags: i32,
        fd: RawFd,
        file_offset: u64,
    ) -> io::Result<()> {
        let (addr, size) = self.range(offset, len)?;
        let file_offset = libc::off_t::try_from(file_offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: MAP_FIXED replaces pages of our own reservation only (`range` checked the
        // bounds); no Rust reference points into the reservation, only the guest (through
        // the KVM slot) accesses it.
        let ret = unsafe { libc::mmap(addr, size, prot, flags | libc::MAP_FIXED, fd, file_offset) };
        mmap_error(ret).map(|_| ())
    }
}

impl devices::fs::DaxWindow for DaxRegion {
    fn guest_base(&self) -> u64 {
        self.guest_base
    }

    fn size(&self) -> u64 {
        self.len
    }

    fn map(
        &self,
        offset: u64,
        fd: RawFd,
        file_offset: u64,
        len: u64,
        writable: bool,
    ) -> io::Result<()> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        self.map_fixed(offset, len, prot, libc::MAP_SHARED, fd, file_offset)
    }

    fn unmap(&self, offset: u64, len: u64) -> io::Result<()> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        self.map_fixed(offset, len, libc::PROT_NONE, flags, -1, 0)
    }
}

impl Drop for DaxRegion {
    fn drop(&mut self) {
        // SAFETY: the reservation is ours and, the VM fd being closed before the last
        // reference to the region goes (see `register`), no longer reachable by the guest.
        let ret = unsafe { libc::munmap(self.host as *mut libc::c_void, self.len as usize) };
        if ret != 0 {
            log::debug!("dax: munmap failed: {}", io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::fs::DaxWindow;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    const MIB: u64 = 1 << 20;

    /// The window's bytes at `offset`, read through the host mapping (a test-only peek).
    fn peek(region: &DaxRegion, offset: u64, len: usize) -> Vec<u8> {
        let (addr, _) = region.range(offset, 4096).unwrap();
        // SAFETY: the test mapped a file there just before, readable, at least `len` bytes.
        unsafe { std::slice::from_raw_parts(addr as *const u8, len) }.to_vec()
    }

    #[test]
    fn window_len_rounds_up_to_2_mib() {
        assert_eq!(window_len(1), Some(2 * MIB));
        assert_eq!(window_len(2 * MIB), Some(2 * MIB));
        assert_eq!(window_len(0), None);
        assert_eq!(window_len(u64::MAX), None);
    }

    #[test]
    fn dax_region_map_shows_file_bytes_unmap_and_bounds() {
        let mut file = vmm_sys_util::tempfile::TempFile::new().unwrap().into_file();
        let mut bytes = vec![0u8; 8192];
        bytes[4096..4101].copy_from_slice(b"hello");
        file.write_all(&bytes).unwrap();
        let region = DaxRegion::new(1 << 32, 4 * MIB).unwrap();

        region
            .map(2 * MIB, file.as_raw_fd(), 4096, 4096, false)
            .unwrap();
        assert_eq!(peek(&region, 2 * MIB, 5), b"hello");
        region.unmap(2 * MIB, 4096).unwrap();

        let outside = region.map(4 * MIB, file.as_raw_fd(), 0, 4096, false);
        let overflow = region.unmap(u64::MAX - 4095, 8192);
        assert_eq!(outside.unwrap_err().raw_os_error(), Some(libc::EINVAL));
        assert_eq!(overflow.unwrap_err().raw_os_error(), Some(libc::EINVAL));
    }
}
