//! Guest RAM: anonymous, lazily faulted mappings (vm-memory) registered as KVM memory slots,
//! and the kernel image: mapped from libkrunfw's file where it can be, copied otherwise.

use devices::GuestMemory;
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory as _, GuestMemoryRegion};

use crate::layout::ram_ranges;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot map {mib} MiB of guest RAM")]
    Map {
        mib: u32,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("cannot register guest RAM slot {slot} with KVM")]
    Register {
        slot: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("the kernel ({len} bytes at {addr:#x}) does not fit in guest RAM")]
    KernelOutOfRam {
        addr: u64,
        len: usize,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// Maps `ram_mib` MiB of guest RAM (split around the 32-bit MMIO gap). Nothing is touched:
/// pages are faulted in by the guest.
pub fn create_guest_memory(ram_mib: u32) -> Result<GuestMemory, MemoryError> {
    let ranges: Vec<(GuestAddress, usize)> = ram_ranges(u64::from(ram_mib) << 20)
        .into_iter()
        .map(|(start, size)| (GuestAddress(start), size as usize))
        .collect();
    GuestMemory::from_ranges(&ranges).map_err(|source| MemoryError::Map {
        mib: ram_mib,
        source,
    })
}

/// Registers every region of `mem` as a KVM memory slot.
pub fn register_with_kvm(vm: &VmFd, mem: &GuestMemory) -> Result<(), MemoryError> {
    for (slot, region) in mem.iter().enumerate() {
        let slot = slot as u32;
        let host =
            mem.get_host_address(region.start_addr())
                .map_err(|_| MemoryError::Register {
                    slot,
                    source: kvm_ioctls::Error::new(libc::EFAULT),
                })?;
        let kvm_region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mapping of exactly `memory_size` bytes owned by `mem`,
        // which the VM keeps alive until after the VM fd (and with it the slot) is closed.
        unsafe { vm.set_user_memory_region(kvm_region) }
            .map_err(|source| MemoryError::Register { slot, source })?;
    }
    Ok(())
}

/// Maps the whole pages of a kernel image that lies at `file_offset` in `file` straight into
/// guest RAM at `load_addr`, private and copy-on-write, instead of copying it: pages the
/// guest never touches are never resident, and those it only reads are the page cache's.
/// Returns how many leading bytes of the image are now in guest RAM (0 when the offsets
/// are not page-aligned or the range is not in one RAM region); the caller copies the rest.
pub fn map_kernel_file(
    mem: &GuestMemory,
    file: &std::fs::File,
    file_offset: u64,
    len: usize,
    load_addr: u64,
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let page = crate::krunfw::page_size();
    let whole = len / page * page;
    if whole == 0 || (file_offset | load_addr) & (page as u64 - 1) != 0 {
        return Ok(0);
    }
    let Some(region) = mem.find_region(GuestAddress(load_addr)) else {
        return Ok(0);
    };
    let region_end = region.start_addr().raw_value() + region.len();
    if load_addr.saturating_add(whole as u64) > region_end {
        return Ok(0);
    }
    let Ok(host) = mem.get_host_address(GuestAddress(load_addr)) else {
        return Ok(0);
    };
    let offset = libc::off_t::try_from(file_offset)
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    // SAFETY: [host, host + whole) lies inside one guest RAM mapping owned by `mem` (checked
    // above) that the guest has not run on yet; MAP_FIXED replaces those pages with a private
    // mapping of the file, which vm-memory's munmap of the whole region later removes too.
    // No Rust reference points into guest RAM (vm-memory accesses it through raw pointers).
    let rc = unsafe {
        libc::mmap(
            host.cast(),
            whole,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
            file.as_raw_fd(),
            offset,
        )
    };
    if rc == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(whole)
}

/// Copies the kernel image to `load_addr`: the only time the VMM writes it.
pub fn load_kernel(
    mem: &GuestMemory,
    bytes: &[u8],
    load_addr: u64,
    mut copied: impl FnMut(&[u8]),
) -> Result<(), MemoryError> {
    let err = |source| MemoryError::KernelOutOfRam {
        addr: load_addr,
        len: bytes.len(),
        source,
    };
    // The whole range first, so a kernel that does not fit fails before anything is copied.
    let end = load_addr
        .checked_add(bytes.len() as u64)
        .and_then(|end| end.checked_sub(1));
    match end {
        Some(end) if mem.address_in_range(GuestAddress(end)) || bytes.is_empty() => {}
        _ => {
            return Err(err(vm_memory::GuestMemoryError::InvalidGuestAddress(
                GuestAddress(load_addr),
            )))
        }
    }
    // In pieces, each handed to `copied` once it is in guest memory: the caller lets go of
    // the source pages as it goes, so the image is never resident twice.
    const PIECE: usize = 2 << 20;
    for (i, piece) in bytes.chunks(PIECE).enumerate() {
        let addr = load_addr + (i * PIECE) as u64;
        mem.write_slice(piece, GuestAddress(addr)).map_err(err)?;
        copied(piece);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_guest_memory_small_one_region() {
        let mem = create_guest_memory(16).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(mem.last_addr().raw_value(), (16 << 20) - 1);
    }

    #[test]
    fn map_kernel_file_maps_whole_pages_copy_on_write() {
        use std::io::Write;
        let page = crate::krunfw::page_size();
        let image: Vec<u8> = (0..3 * page + 100).map(|i| (i % 251) as u8).collect();
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = dir.as_path().join("img");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(&vec![0xee; page]).unwrap(); // the image starts one page in
        file.write_all(&image).unwrap();
        drop(file);
        let file = std::fs::File::open(&path).unwrap();
        let mem = create_guest_memory(16).unwrap();
        let load = 1 << 20;
        let mapped = map_kernel_file(&mem, &file, page as u64, image.len(), load).unwrap();
        assert_eq!(mapped, 3 * page);
        load_kernel(&mem, &image[mapped..], load + mapped as u64, |_| ()).unwrap();
        let mut back = vec![0; image.len()];
        mem.read_slice(&mut back, GuestAddress(load)).unwrap();
        assert_eq!(back, image);
        // The guest's writes stay in guest RAM.
        mem.write_slice(&[0u8; 8], GuestAddress(load)).unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[page..page + 8], &image[..8]);
        // Unaligned offsets are left to the copy.
        assert_eq!(
            map_kernel_file(&mem, &file, 1, image.len(), load).unwrap(),
            0
        );
    }

    #[test]
    fn load_kernel_past_end_error() {
        let mem = create_guest_memory(2).unwrap();
        let err = load_kernel(&mem, &[1, 2, 3], (2 << 20) - 1, |_| ()).unwrap_err();
        assert!(matches!(err, MemoryError::KernelOutOfRam { .. }));
    }
}
