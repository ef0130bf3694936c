//! Register state of a vCPU at the kernel's 64-bit entry point, and its local APIC wiring.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::gdt::{boot_gdt, kvm_segment_from_gdt, CODE_INDEX, DATA_INDEX, TSS_INDEX};
use crate::layout::{BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, ZERO_PAGE_START};

const CR0_PE: u64 = 1;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// x87 control word and MXCSR after FNINIT / reset (all exceptions masked).
const FPU_FCW: u16 = 0x37f;
const FPU_MXCSR: u32 = 0x1f80;
/// Local APIC LVT registers and delivery modes (Intel SDM vol. 3, 11.5.1).
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// Writes the boot GDT and an empty IDT into guest memory.
pub fn write_gdt_idt<M: GuestMemory>(mem: &M) -> Result<(), vm_memory::GuestMemoryError> {
    for (i, entry) in boot_gdt().iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_START + i as u64 * 8))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
}

/// General registers: `rip` at the kernel's 64-bit entry, `rsi` the zero page.
pub fn boot_regs(entry_addr: u64) -> kvm_regs {
    kvm_regs {
        rflags: 0x2,
        rip: entry_addr,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START,
        ..Default::default()
    }
}

/// Special registers: `sregs` (as KVM reports them) switched to 64-bit long mode with paging
/// through the identity tables at `cr3`.
pub fn boot_sregs(mut sregs: kvm_sregs, cr3: u64) -> kvm_sregs {
    let gdt = boot_gdt();
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    let code = kvm_segment_from_gdt(gdt[usize::from(CODE_INDEX)], CODE_INDEX);
    let data = kvm_segment_from_gdt(gdt[usize::from(DATA_INDEX)], DATA_INDEX);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment_from_gdt(gdt[usize::from(TSS_INDEX)], TSS_INDEX);
    sregs.cr0 |= CR0_PE | CR0_PG;
    sregs.cr3 = cr3;
    sregs.cr4 |= CR4_PAE;
    sregs.efer |= EFER_LME | EFER_LMA;
    sregs
}

/// FPU state after reset.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: FPU_FCW,
        mxcsr: FPU_MXCSR,
        ..Default::default()
    }
}

fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let b = &lapic.regs[offset..offset + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (dst, src) in lapic.regs[offset..offset + 4]
        .iter_mut()
        .zip(value.to_le_bytes())
    {
        *dst = src as _;
    }
}

fn with_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// LINT0 delivers the PIC's interrupts (ExtINT), LINT1 NMIs, as the MP table says.
pub fn wire_lapic_lints(lapic: &mut kvm_lapic_state) {
    let lvt0 = lapic_reg(lapic, APIC_LVT0);
    set_lapic_reg(lapic, APIC_LVT0, with_delivery_mode(lvt0, APIC_MODE_EXTINT));
    let lvt1 = lapic_reg(lapic, APIC_LVT1);
    set_lapic_reg(lapic, APIC_LVT1, with_delivery_mode(lvt1, APIC_MODE_NMI));
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn boot_sregs_long_mode_paging_enabled() {
        let s = boot_sregs(kvm_sregs::default(), 0x9000);
        assert_eq!(s.cr3, 0x9000);
        assert_ne!(s.cr0 & CR0_PG, 0);
        assert_ne!(s.cr4 & CR4_PAE, 0);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!((s.cs.selector, s.cs.l), (8, 1));
        assert_eq!(s.ss.selector, 16);
        assert_eq!(s.gdt.limit, 31);
    }

    #[test]
    fn boot_regs_entry_and_zero_page() {
        let r = boot_regs(0x0100_0200);
        assert_eq!((r.rip, r.rsi, r.rflags), (0x0100_0200, ZERO_PAGE_START, 2));
    }

    #[test]
    fn wire_lapic_lints_sets_extint_and_nmi_keeps_other_bits() {
        let mut l = kvm_lapic_state::default();
        set_lapic_reg(&mut l, APIC_LVT0, 0x1_0700);
        wire_lapic_lints(&mut l);
        assert_eq!(lapic_reg(&l, APIC_LVT0), 0x1_0700);
        assert_eq!(lapic_reg(&l, APIC_LVT1), 0x400);
    }

    #[test]
    fn write_gdt_idt_entries_in_memory() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        write_gdt_idt(&mem).unwrap();
        let code: u64 = mem.read_obj(GuestAddress(BOOT_GDT_START + 8)).unwrap();
        assert_eq!(code, boot_gdt()[1]);
    }
}
