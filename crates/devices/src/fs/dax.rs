//! The DAX window of a share: the virtio-fs cache region (virtio 1.2, 5.11.5, shared memory
//! region id 0) into which FUSE_SETUPMAPPING maps ranges of host files for the guest to
//! access directly, and FUSE_REMOVEMAPPING takes them away again.
//!
//! The device only checks the guest's numbers and says what to map where; the mapping
//! itself (mmap into a reserved host range that is a KVM memory slot) is the VMM's, behind
//! [`DaxWindow`].

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use fuse_backend_rs::abi::virtio_fs::{RemovemappingOne, SetupmappingFlags};
use fuse_backend_rs::transport::FsCacheReqHandler;

/// `VIRTIO_FS_SHMCAP_ID_CACHE`: the shared memory region id of the DAX window.
pub const CACHE_SHM_ID: u32 = 0;

/// Mappings are made in whole host pages; offsets and lengths must be multiples of this.
pub const DAX_PAGE_SIZE: u64 = 4096;

/// The host side of a DAX window: a range of guest physical addresses backed by a host
/// range the VMM owns.
///
/// `map` and `unmap` are only called with ranges the device has checked: page-aligned,
/// non-empty and inside `[0, size())`.
pub trait DaxWindow: Send + Sync + fmt::Debug {
    /// The window's first guest physical address.
    fn guest_base(&self) -> u64;
    /// The window's size in bytes (a multiple of [`DAX_PAGE_SIZE`]).
    fn size(&self) -> u64;
    /// Maps `len` bytes of the open file `fd` from `file_offset` at `offset` in the window,
    /// shared (the guest's stores reach the file), writable or read-only. `fd` may be closed
    /// once this returns: the mapping keeps its own reference to the file.
    fn map(
        &self,
        offset: u64,
        fd: RawFd,
        file_offset: u64,
        len: u64,
        writable: bool,
    ) -> io::Result<()>;
    /// Takes `len` bytes at `offset` back to the window's unmapped state (nothing behind it).
    fn unmap(&self, offset: u64, len: u64) -> io::Result<()>;
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// Checks that `len` bytes at `offset` are a non-empty, page-aligned range inside a window of
/// `size` bytes; EINVAL otherwise.
pub(crate) fn check_range(size: u64, offset: u64, len: u64) -> io::Result<()> {
    let aligned = offset.is_multiple_of(DAX_PAGE_SIZE) && len.is_multiple_of(DAX_PAGE_SIZE);
    match offset.checked_add(len) {
        Some(end) if aligned && len != 0 && end <= size => Ok(()),
        _ => Err(einval()),
    }
}

/// The `FsCacheReqHandler` fuse-backend-rs's server hands to SETUPMAPPING/REMOVEMAPPING:
/// bounds checks in front of the device's [`DaxWindow`].
pub(crate) struct DaxRequests {
    id: String,
    window: Arc<dyn DaxWindow>,
}

impl DaxRequests {
    pub(crate) fn new(id: String, window: Arc<dyn DaxWindow>) -> Self {
        Self { id, window }
    }
}

impl FsCacheReqHandler for DaxRequests {
    fn map(
        &mut self,
        foffset: u64,
        moffset: u64,
        len: u64,
        flags: u64,
        fd: RawFd,
    ) -> io::Result<()> {
        check_range(self.window.size(), moffset, len)?;
        if !foffset.is_multiple_of(DAX_PAGE_SIZE) || foffset.checked_add(len).is_none() {
            return Err(einval());
        }
        let writable = flags & SetupmappingFlags::WRITE.bits() != 0;
        log::trace!(
            "{}: map {len:#x} bytes of file offset {foffset:#x} at {moffset:#x} (write {writable})",
            self.id
        );
        self.window.map(moffset, fd, foffset, len, writable)
    }

    fn unmap(&mut self, requests: Vec<RemovemappingOne>) -> io::Result<()> {
        // All or nothing: one bad entry fails the request before anything is unmapped.
        let size = self.window.size();
        for r in &requests {
            check_range(size, r.moffset, r.len)?;
        }
        for r in &requests {
            log::trace!("{}: unmap {:#x} bytes at {:#x}", self.id, r.len, r.moffset);
            self.window.unmap(r.moffset, r.len)?;
        }
        Ok(())
    }
}

/// A window that records what it is asked, for the device's tests.
#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use std::sync::Mutex;

    /// One call the fake window saw.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Call {
        Map {
            offset: u64,
            file_offset: u64,
            len: u64,
            writable: bool,
        },
        Unmap {
            offset: u64,
            len: u64,
        },
    }

    #[derive(Debug, Default)]
    pub struct FakeWindow {
        pub size: u64,
        pub calls: Mutex<Vec<Call>>,
    }

    impl FakeWindow {
        pub fn new(size: u64) -> Arc<Self> {
            Arc::new(Self {
                size,
                calls: Mutex::new(Vec::new()),
            })
        }

        pub fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl DaxWindow for FakeWindow {
        fn guest_base(&self) -> u64 {
            0x1_0000_0000
        }

        fn size(&self) -> u64 {
            self.size
        }

        fn map(
            &self,
            offset: u64,
            fd: RawFd,
            file_offset: u64,
            len: u64,
            writable: bool,
        ) -> io::Result<()> {
            assert!(fd >= 0, "the device passed no file");
            assert!(
                offset + len <= self.size,
                "an unchecked range reached the window"
            );
            self.calls.lock().unwrap().push(Call::Map {
                offset,
                file_offset,
                len,
                writable,
            });
            Ok(())
        }

        fn unmap(&self, offset: u64, len: u64) -> io::Result<()> {
            assert!(
                offset + len <= self.size,
                "an unchecked range reached the window"
            );
            self.calls.lock().unwrap().push(Call::Unmap { offset, len });
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{Call, FakeWindow};
    use super::*;

    const MIB: u64 = 1 << 20;

    fn requests(window: &Arc<FakeWindow>) -> DaxRequests {
        DaxRequests::new("fs(t)".into(), window.clone())
    }

    #[test]
    fn check_range_inside_window_ok() {
        assert!(check_range(4 * MIB, 0, 2 * MIB).is_ok());
        assert!(check_range(4 * MIB, 2 * MIB, 2 * MIB).is_ok());
    }

    #[test]
    fn check_range_past_end_or_unaligned_or_empty_einval() {
        let cases = [
            (2 * MIB + 4096, 2 * MIB),
            (4 * MIB, 4096),
            (0, 4 * MIB + 4096),
            (100, 4096),
            (0, 100),
            (0, 0),
            (u64::MAX - 4095, 8192),
            (4096, u64::MAX - 4095),
        ];
        for (offset, len) in cases {
            let e = check_range(4 * MIB, offset, len).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{offset:#x}+{len:#x}");
        }
    }

    #[test]
    fn map_inside_window_reaches_window_with_write_flag() {
        let window = FakeWindow::new(4 * MIB);
        let mut r = requests(&window);
        r.map(2 * MIB, 2 * MIB, 2 * MIB, 0x3, 0).unwrap();
        r.map(0, 0, 4096, 0x2, 0).unwrap();
        assert_eq!(
            window.calls(),
            vec![
                Call::Map {
                    offset: 2 * MIB,
                    file_offset: 2 * MIB,
                    len: 2 * MIB,
                    writable: true
                },
                Call::Map {
                    offset: 0,
                    file_offset: 0,
                    len: 4096,
                    writable: false
                },
            ]
        );
    }

    #[test]
    fn map_outside_window_einval_and_window_untouched() {
        let window = FakeWindow::new(4 * MIB);
        let mut r = requests(&window);
        for (moffset, foffset, len) in [
            (4 * MIB, 0, 2 * MIB),
            (3 * MIB, 0, 2 * MIB),
            (0, 123, 4096),
            (0, u64::MAX - 4095, 8192),
        ] {
            let e = r.map(foffset, moffset, len, 0x2, 0).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        }
        assert!(window.calls().is_empty());
    }

    #[test]
    fn unmap_one_bad_entry_unmaps_nothing() {
        let window = FakeWindow::new(4 * MIB);
        let mut r = requests(&window);
        let good = RemovemappingOne {
            moffset: 0,
            len: 2 * MIB,
        };
        let bad = RemovemappingOne {
            moffset: 4 * MIB,
            len: 2 * MIB,
        };
        let e = r.unmap(vec![good, bad]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        assert!(window.calls().is_empty());
        r.unmap(vec![good]).unwrap();
        assert_eq!(
            window.calls(),
            vec![Call::Unmap {
                offset: 0,
                len: 2 * MIB
            }]
        );
    }
}
