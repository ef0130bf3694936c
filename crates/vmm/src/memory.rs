//! Guest RAM: anonymous, lazily faulted mappings (vm-memory) registered as KVM memory slots,
//! and the one copy of the kernel image into it.

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

/// Copies the kernel image to `load_addr`: the only time the VMM writes it.
pub fn load_kernel(mem: &GuestMemory, bytes: &[u8], load_addr: u64) -> Result<(), MemoryError> {
    mem.write_slice(bytes, GuestAddress(load_addr))
        .map_err(|source| MemoryError::KernelOutOfRam {
            addr: load_addr,
            len: bytes.len(),
            source,
        })
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
    fn load_kernel_past_end_error() {
        let mem = create_guest_memory(2).unwrap();
        let err = load_kernel(&mem, &[1, 2, 3], (2 << 20) - 1).unwrap_err();
        assert!(matches!(err, MemoryError::KernelOutOfRam { .. }));
    }
}
