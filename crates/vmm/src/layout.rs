//! The x86_64 guest physical address map: every fixed guest address the VMM uses, in one place.
//!
//! ```text
//!   0x0000_0500  GDT (4 entries)                 0x0000_0520  IDT (empty, limit 7)
//!   0x0000_7000  zero page (boot_params)         0x0000_8ff0  initial stack pointer
//!   0x0000_9000  PML4   0x0000_a000  PDPT   0x0000_b000  PD (first 1 GiB, 2 MiB pages)
//!   0x0002_0000  kernel command line (COMMAND_LINE_SIZE bytes)
//!   0x0009_fc00  EBDA: end of low RAM in the e820 map
//!   0x000f_0000  BIOS area (reserved in e820, scanned by Linux): MP floating pointer + MP
//!                configuration table; 0x000f_2000  SMBIOS entry point + tables
//!   0x0010_0000  high RAM starts (the kernel loads at libkrunfw's address, 16 MiB)
//!   0xd000_0000  32-bit MMIO gap: virtio-mmio slots, one 4 KiB page each, then up to
//!   0xfec0_0000  IOAPIC, 0xfee0_0000 LAPIC ... 4 GiB. RAM above the gap resumes at 4 GiB.
//!   past RAM     virtio-fs DAX windows, from the first GiB boundary at or above 4 GiB that
//!                no RAM reaches (upstream libkrun's placement), one after another
//! ```

/// Where the GDT is written; the guest replaces it early in boot.
pub const BOOT_GDT_START: u64 = 0x500;
/// Where an empty IDT is written (interrupts stay off until the kernel installs its own).
pub const BOOT_IDT_START: u64 = 0x520;
/// `struct boot_params`, passed to the kernel in `rsi`.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial `rsp`/`rbp`: top of the page below the page tables.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Level 4 page table (`cr3`).
pub const PML4_START: u64 = 0x9000;
/// Page directory pointer table: one entry, covering the first 1 GiB.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory: 512 entries of 2 MiB pages.
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// The x86 kernel's `COMMAND_LINE_SIZE`, terminating NUL included.
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area: low RAM in the e820 map ends here.
pub const EBDA_START: u64 = 0x9fc00;
/// The BIOS area Linux scans for MP and SMBIOS anchors (0xf0000..0x100000): outside e820
/// RAM, marked reserved in the e820 map.
pub const BIOS_AREA_START: u64 = 0xf0000;
/// End of the BIOS area.
pub const BIOS_AREA_END: u64 = 0x10_0000;
/// MP tables go first in the BIOS area; 8 KiB leave room for a processor entry per vCPU
/// even at 254 vCPUs (5364 bytes).
pub const MPTABLE_START: u64 = BIOS_AREA_START;
/// End of the MP table window.
pub const MPTABLE_END: u64 = SMBIOS_START;
/// SMBIOS entry point (16-byte aligned, as the anchor scan needs) and structure table.
pub const SMBIOS_START: u64 = 0xf2000;
/// End of the SMBIOS window.
pub const SMBIOS_END: u64 = BIOS_AREA_END;
/// High RAM starts at 1 MiB.
pub const HIMEM_START: u64 = 0x10_0000;
/// The 32-bit MMIO gap: RAM stops here and resumes at [`FIRST_ADDR_PAST_32BITS`].
pub const MMIO_GAP_START: u64 = 0xd000_0000;
/// First address above 4 GiB.
pub const FIRST_ADDR_PAST_32BITS: u64 = 1 << 32;
/// Size of the 32-bit MMIO gap (768 MiB).
pub const MMIO_GAP_SIZE: u64 = FIRST_ADDR_PAST_32BITS - MMIO_GAP_START;
/// The first virtio-mmio device's base address.
pub const MMIO_DEVICES_START: u64 = MMIO_GAP_START;
/// Each virtio-mmio device gets one page of registers.
pub const MMIO_DEVICE_SIZE: u64 = 0x1000;
/// The first virtio-mmio device's IRQ (GSI); later devices count up. IRQs 0-4 are taken by
/// the PIT, keyboard, cascade and serial ports.
pub const MMIO_FIRST_IRQ: u32 = 5;
/// The last IRQ the in-kernel IOAPIC routes (24 pins).
pub const MMIO_LAST_IRQ: u32 = 23;
/// KVM's TSS (3 pages) and identity map page, just below the BIOS area at the top of 4 GiB.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// KVM's identity map page (one page below the TSS).
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;
/// The IOAPIC's MMIO base.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// The local APICs' MMIO base.
pub const APIC_START: u64 = 0xfee0_0000;

/// Base address of the `index`-th virtio-mmio slot.
pub fn mmio_slot_base(index: u32) -> u64 {
    MMIO_DEVICES_START + u64::from(index) * MMIO_DEVICE_SIZE
}

/// The CMOS RTC's IRQ. The guest's rtc_cmos driver takes it, unshared, even though our
/// clock never raises it, so a virtio-mmio device there fails to probe (-EBUSY).
pub const RTC_IRQ: u32 = 8;

/// IRQ of the `index`-th virtio-mmio slot: the IOAPIC pins from [`MMIO_FIRST_IRQ`] on,
/// past the legacy [`RTC_IRQ`]; None when the IOAPIC has no pin left.
pub fn mmio_slot_irq(index: u32) -> Option<u32> {
    (MMIO_FIRST_IRQ..=MMIO_LAST_IRQ)
        .filter(|&irq| irq != RTC_IRQ)
        .nth(usize::try_from(index).ok()?)
}

/// The guest RAM ranges for `ram_bytes` of memory: one range below the MMIO gap, and a
/// second one from 4 GiB when RAM does not fit below the gap.
pub fn ram_ranges(ram_bytes: u64) -> Vec<(u64, u64)> {
    if ram_bytes <= MMIO_GAP_START {
        vec![(0, ram_bytes)]
    } else {
        vec![
            (0, MMIO_GAP_START),
            (FIRST_ADDR_PAST_32BITS, ram_bytes - MMIO_GAP_START),
        ]
    }
}

/// Where the first DAX window goes for `ram_bytes` of RAM: 4 GiB when RAM fits below the
/// MMIO gap, else the GiB boundary past the end of the RAM above 4 GiB.
pub fn dax_windows_start(ram_bytes: u64) -> u64 {
    const GIB: u64 = 1 << 30;
    match ram_ranges(ram_bytes).last() {
        Some(&(start, size)) if start >= FIRST_ADDR_PAST_32BITS => {
            (start + size).div_ceil(GIB) * GIB
        }
        _ => FIRST_ADDR_PAST_32BITS,
    }
}

// The boot structures must not overlap; checked at compile time.
const _: () = {
    assert!(BOOT_IDT_START + 8 <= ZERO_PAGE_START);
    assert!(ZERO_PAGE_START + 0x1000 <= BOOT_STACK_POINTER);
    assert!(BOOT_STACK_POINTER < PML4_START);
    assert!(PDE_START + 0x1000 <= CMDLINE_START);
    assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
    assert!(EBDA_START <= BIOS_AREA_START);
    assert!(MPTABLE_START < MPTABLE_END && MPTABLE_END <= SMBIOS_START);
    assert!(SMBIOS_START.is_multiple_of(16) && SMBIOS_END <= BIOS_AREA_END);
    assert!(BIOS_AREA_END <= HIMEM_START);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dax_windows_start_above_ram_on_a_gib_boundary() {
        assert_eq!(dax_windows_start(512 << 20), 1 << 32);
        assert_eq!(dax_windows_start(4 << 30), 5 << 30);
        assert_eq!(dax_windows_start((3 << 30) + MMIO_GAP_START), 7 << 30);
    }

    #[test]
    fn ram_ranges_small_ram_single_range() {
        assert_eq!(ram_ranges(256 << 20), vec![(0, 256 << 20)]);
    }

    #[test]
    fn ram_ranges_large_ram_skips_mmio_gap() {
        let ranges = ram_ranges(4 << 30);
        assert_eq!(ranges[0], (0, MMIO_GAP_START));
        assert_eq!(ranges[1], (1 << 32, (4 << 30) - MMIO_GAP_START));
    }

    #[test]
    fn mmio_slot_irq_past_ioapic_pins_none() {
        assert_eq!(mmio_slot_irq(0), Some(5));
        assert_eq!(mmio_slot_irq(2), Some(7));
        assert_eq!(mmio_slot_irq(3), Some(9), "IRQ 8 is the RTC's");
        assert_eq!(mmio_slot_irq(17), Some(23));
        assert_eq!(mmio_slot_irq(18), None);
    }
}
