//! The zero page (`struct boot_params`, Linux x86 boot protocol) with the e820 memory map.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryRegion};

use crate::kernel::BootKernel;
use crate::layout::{
    BIOS_AREA_END, BIOS_AREA_START, CMDLINE_START, EBDA_START, FIRST_ADDR_PAST_32BITS, HIMEM_START,
    MMIO_GAP_START, ZERO_PAGE_START,
};

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;
/// "HdrS": the boot protocol header magic.
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
/// Boot sector signature the kernel checks.
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// `type_of_loader` for a boot loader without an assigned id.
const KERNEL_LOADER_OTHER: u8 = 0xff;
/// The kernel is built to run at 16 MiB alignment.
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;

#[derive(Debug, thiserror::Error)]
pub enum ZeroPageError {
    #[error("guest memory has {0} RAM ranges, more than the e820 table holds")]
    TooManyE820Entries(usize),
    #[error("cannot write the zero page")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// The e820 map for the guest's RAM regions: low RAM up to the EBDA, the BIOS area (MP and
/// SMBIOS tables) reserved, then everything from 1 MiB, split around the 32-bit MMIO gap
/// (which lies between the regions already). Entries are in address order.
pub fn e820_map<M: GuestMemory>(mem: &M) -> Vec<boot_e820_entry> {
    let mut map = vec![
        boot_e820_entry {
            addr: 0,
            size: EBDA_START,
            type_: E820_RAM,
        },
        boot_e820_entry {
            addr: BIOS_AREA_START,
            size: BIOS_AREA_END - BIOS_AREA_START,
            type_: E820_RESERVED,
        },
    ];
    for region in mem.iter() {
        let start = region.start_addr().raw_value().max(HIMEM_START);
        let end = region.last_addr().raw_value() + 1;
        if end > start {
            map.push(boot_e820_entry {
                addr: start,
                size: end - start,
                type_: E820_RAM,
            });
        }
    }
    debug_assert!(map
        .iter()
        .all(|e| e.addr + e.size <= MMIO_GAP_START || e.addr >= FIRST_ADDR_PAST_32BITS));
    map
}

/// Fills `boot_params` for a kernel loaded by us (no real-mode setup code ran) with the
/// command line of `cmdline_size` bytes (NUL included) at [`CMDLINE_START`]. A bzImage's
/// setup header is the starting point (its decompressor reads `init_size`, `kernel_alignment`
/// and the load flags from it), and the initramfs, if any, is described in it.
pub fn build_boot_params<M: GuestMemory>(
    mem: &M,
    cmdline_size: usize,
    kernel: &BootKernel,
) -> Result<boot_params, ZeroPageError> {
    let mut params = boot_params::default();
    if let Some(hdr) = kernel.setup_header {
        params.hdr = hdr;
    }
    if let Some((addr, size)) = kernel.initramfs {
        // Both fit in 32 bits: the initramfs lies below initrd_addr_max (< 4 GiB).
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_size as u32;
    if kernel.setup_header.is_none() {
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    let map = e820_map(mem);
    if map.len() > params.e820_table.len() {
        return Err(ZeroPageError::TooManyE820Entries(map.len()));
    }
    params.e820_table[..map.len()].copy_from_slice(&map);
    params.e820_entries = map.len() as u8;
    Ok(params)
}

/// Builds the zero page and writes it at [`ZERO_PAGE_START`]; returns its address for `rsi`.
pub fn write_zero_page<M: GuestMemory>(
    mem: &M,
    cmdline_size: usize,
    kernel: &BootKernel,
) -> Result<u64, ZeroPageError> {
    let params = build_boot_params(mem, cmdline_size, kernel)?;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(ZeroPageError::Write)?;
    Ok(ZERO_PAGE_START)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem(ranges: &[(u64, u64)]) -> GuestMemoryMmap<()> {
        let r: Vec<_> = ranges
            .iter()
            .map(|&(a, s)| (GuestAddress(a), s as usize))
            .collect();
        GuestMemoryMmap::from_ranges(&r).unwrap()
    }

    #[test]
    fn e820_map_small_ram_low_and_high_entries() {
        let m = mem(&[(0, 256 << 20)]);
        let map = e820_map(&m);
        assert_eq!(map.len(), 3);
        assert_eq!(
            (map[0].addr, map[0].size, map[0].type_),
            (0, EBDA_START, E820_RAM)
        );
        assert_eq!(
            (map[1].addr, map[1].size, map[1].type_),
            (0xf0000, 0x10000, E820_RESERVED),
            "the BIOS area with the MP and SMBIOS tables"
        );
        assert_eq!(
            (map[2].addr, map[2].size, map[2].type_),
            (HIMEM_START, (256 << 20) - HIMEM_START, E820_RAM)
        );
        assert!(map.windows(2).all(|w| w[0].addr + w[0].size <= w[1].addr));
    }

    #[test]
    fn e820_map_ram_above_gap_third_entry() {
        // Sparse: the high region is tiny, so the test needs no 4 GiB of address space.
        let m = mem(&[(0, 8 << 20), (FIRST_ADDR_PAST_32BITS, 2 << 20)]);
        let map = e820_map(&m);
        assert_eq!(map.len(), 4);
        assert_eq!(
            (map[3].addr, map[3].size),
            (FIRST_ADDR_PAST_32BITS, 2 << 20)
        );
    }

    #[test]
    fn write_zero_page_header_and_e820_readable_back() {
        let m = mem(&[(0, 64 << 20)]);
        let addr = write_zero_page(&m, 100, &BootKernel::default()).unwrap();
        assert_eq!(addr, ZERO_PAGE_START);
        let p: boot_params = m.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ p.hdr.header }, KERNEL_HDR_MAGIC);
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ p.hdr.cmdline_size }, 100);
        assert_eq!(p.e820_entries, 3);
        let high = p.e820_table[2];
        assert_eq!(
            ({ high.addr }, { high.size }),
            (HIMEM_START, (64 << 20) - HIMEM_START)
        );
    }

    #[test]
    fn build_boot_params_bzimage_header_kept_and_initramfs_described() {
        let m = mem(&[(0, 64 << 20)]);
        let hdr = linux_loader::loader::bootparam::setup_header {
            version: 0x020f,
            init_size: 0x123_4000,
            kernel_alignment: 0x20_0000,
            ..Default::default()
        };
        let kernel = BootKernel {
            entry_addr: 0x10_0200,
            setup_header: Some(hdr),
            initramfs: Some((0x300_0000, 0x1234)),
            has_8250: None,
        };
        let p = build_boot_params(&m, 10, &kernel).unwrap();
        assert_eq!(
            ({ p.hdr.version }, { p.hdr.init_size }),
            (0x020f, 0x123_4000)
        );
        assert_eq!(
            { p.hdr.kernel_alignment },
            0x20_0000,
            "the kernel's own alignment"
        );
        assert_eq!(
            ({ p.hdr.ramdisk_image }, { p.hdr.ramdisk_size }),
            (0x300_0000, 0x1234)
        );
        assert_eq!(
            ({ p.hdr.type_of_loader }, { p.hdr.cmd_line_ptr }),
            (0xff, CMDLINE_START as u32)
        );
    }
}
