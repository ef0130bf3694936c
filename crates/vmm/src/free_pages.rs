//! Giving guest pages back to the host: the balloon's [`FreePages`] backend, madvise(2) on
//! the guest RAM mapping.
//!
//! Guest RAM is anonymous private memory (vm-memory), so `MADV_DONTNEED` frees the pages
//! at once and the next guest access faults in a zero page; a shared mapping (memfd-backed
//! RAM, none today) would need `MADV_REMOVE` to free the backing, and gets it. KVM's MMU
//! notifier drops the guest's view of the pages in the same call.
//!
//! The kernel image is different: [`crate::memory::map_kernel_file`] maps it from
//! libkrunfw's file, private and copy-on-write. `MADV_DONTNEED` there drops the guest's
//! copied pages and the range reads as the file again, not as zeros. That is correct for
//! this operation only because the guest reported those pages free (e.g. the kernel's init
//! sections after boot): a driver may not expect any content in a reported page (virtio
//! 1.2, 5.5.6.7; `PAGE_POISON` is not offered), so file bytes are as good as zeros, and
//! the page cache, not the VMM, holds them. Pages the guest still uses are never reported.

use std::io;

use devices::balloon::FreePages;
use devices::GuestMemory;
use vm_memory::{GuestAddress, GuestMemory as _, GuestMemoryRegion, MemoryRegionAddress};

/// madvise on guest RAM, in whole host pages.
#[derive(Debug)]
pub struct Madvise {
    page: usize,
}

impl Madvise {
    pub fn new() -> Self {
        Self {
            page: crate::krunfw::page_size(),
        }
    }
}

impl Default for Madvise {
    fn default() -> Self {
        Self::new()
    }
}

impl FreePages for Madvise {
    /// Gives back the whole host pages inside `[addr, addr + len)`, region by region; a
    /// range that leaves guest RAM is refused with `EFAULT` before anything is discarded.
    fn discard(&mut self, mem: &GuestMemory, addr: GuestAddress, len: u64) -> io::Result<u64> {
        let efault = || io::Error::from_raw_os_error(libc::EFAULT);
        let end = addr.0.checked_add(len).ok_or_else(efault)?;
        let fits = usize::try_from(len).is_ok_and(|len| mem.check_range(addr, len));
        if !fits {
            return Err(efault());
        }
        let mut done = 0;
        let mut at = addr.0;
        while at < end {
            let region = mem.find_region(GuestAddress(at)).ok_or_else(efault)?;
            let start = region.start_addr().0;
            let piece_end = end.min(start + region.len());
            let offset = MemoryRegionAddress(at - start);
            let host = region.get_host_address(offset).map_err(|_| efault())? as usize;
            let host_end = host + (piece_end - at) as usize;
            // Whole pages only: a partial page may hold data the guest still uses.
            let first = host.next_multiple_of(self.page);
            let last = host_end / self.page * self.page;
            if last > first {
                let advice = if region.flags() & libc::MAP_SHARED != 0 {
                    libc::MADV_REMOVE
                } else {
                    libc::MADV_DONTNEED
                };
                // SAFETY: [first, last) lies inside this region's mapping (it is within
                // [host, host_end), the host view of a guest range the region contains),
                // which `mem` keeps mapped. No Rust reference points into guest RAM
                // (vm-memory and the devices reach it through raw pointers and volatile
                // copies), and the guest reported these pages free, so dropping their
                // content breaks nothing; later accesses fault in fresh pages.
                let rc = unsafe { libc::madvise(first as *mut libc::c_void, last - first, advice) };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                done += (last - first) as u64;
            }
            at = piece_end;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::Bytes;

    use super::*;

    #[test]
    fn discard_zeroes_anonymous_ram_in_whole_pages() {
        let page = crate::krunfw::page_size();
        let mem = crate::memory::create_guest_memory(4).unwrap();
        let base = GuestAddress(1 << 20);
        mem.write_slice(&vec![0xab; 3 * page], base).unwrap();

        // Half a page in: only the two whole pages after it go.
        let from = GuestAddress(base.0 + page as u64 / 2);
        let given = Madvise::new()
            .discard(&mem, from, 2 * page as u64 + page as u64 / 2)
            .unwrap();

        assert_eq!(given, 2 * page as u64);
        let mut back = vec![0u8; 3 * page];
        mem.read_slice(&mut back, base).unwrap();
        assert!(back[..page].iter().all(|&b| b == 0xab), "partial page kept");
        assert!(back[page..].iter().all(|&b| b == 0), "whole pages zero");
    }

    #[test]
    fn discard_outside_guest_ram_fails_without_touching_it() {
        let page = crate::krunfw::page_size() as u64;
        let mem = crate::memory::create_guest_memory(2).unwrap();
        let last = GuestAddress((2 << 20) - page);
        mem.write_slice(&[0xcd; 8], last).unwrap();

        let err = Madvise::new().discard(&mem, last, 2 * page).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EFAULT));
        let err = Madvise::new()
            .discard(&mem, GuestAddress(u64::MAX - 10), 100)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EFAULT));

        let mut back = [0u8; 8];
        mem.read_slice(&mut back, last).unwrap();
        assert_eq!(back, [0xcd; 8]);
    }

    #[test]
    fn discard_in_the_kernel_file_mapping_reads_the_file_again() {
        use std::io::Write;
        let page = crate::krunfw::page_size();
        let image: Vec<u8> = (0..2 * page).map(|i| (i % 251) as u8).collect();
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = dir.as_path().join("img");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&image)
            .unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let mem = crate::memory::create_guest_memory(4).unwrap();
        let load = GuestAddress(1 << 20);
        crate::memory::map_kernel_file(&mem, &file, 0, image.len(), load.0).unwrap();
        mem.write_slice(&vec![0u8; 2 * page], load).unwrap(); // the guest's copies

        Madvise::new().discard(&mem, load, 2 * page as u64).unwrap();

        let mut back = vec![0u8; 2 * page];
        mem.read_slice(&mut back, load).unwrap();
        assert_eq!(
            back, image,
            "a reported page of the image reverts to the file"
        );
    }
}
