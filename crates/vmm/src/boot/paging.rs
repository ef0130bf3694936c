//! Identity page tables for the boot CPU: the first 1 GiB mapped with 2 MiB pages, enough for
//! the kernel's entry code until it builds its own tables.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::layout::{PDE_START, PDPTE_START, PML4_START};

/// Present | writable.
const TABLE_FLAGS: u64 = 0x3;
/// Present | writable | page size (2 MiB).
const HUGE_PAGE_FLAGS: u64 = 0x83;

/// Writes PML4, PDPT and PD; returns the value for `cr3`.
pub fn write_identity_tables<M: GuestMemory>(mem: &M) -> Result<u64, vm_memory::GuestMemoryError> {
    mem.write_obj(PDPTE_START | TABLE_FLAGS, GuestAddress(PML4_START))?;
    mem.write_obj(PDE_START | TABLE_FLAGS, GuestAddress(PDPTE_START))?;
    let mut pd = [0u8; 512 * 8];
    for (i, entry) in pd.chunks_exact_mut(8).enumerate() {
        let value = ((i as u64) << 21) | HUGE_PAGE_FLAGS;
        entry.copy_from_slice(&value.to_le_bytes());
    }
    mem.write_slice(&pd, GuestAddress(PDE_START))?;
    Ok(PML4_START)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn write_identity_tables_maps_first_gib_identity() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let cr3 = write_identity_tables(&mem).unwrap();
        assert_eq!(cr3, PML4_START);
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        let pdpte: u64 = mem.read_obj(GuestAddress(PDPTE_START)).unwrap();
        assert_eq!(pdpte, PDE_START | 3);
        let first: u64 = mem.read_obj(GuestAddress(PDE_START)).unwrap();
        assert_eq!(first, 0x83);
        let last: u64 = mem.read_obj(GuestAddress(PDE_START + 511 * 8)).unwrap();
        assert_eq!(last, (511 << 21) | 0x83);
    }
}
