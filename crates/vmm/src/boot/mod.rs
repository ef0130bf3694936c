//! x86_64 boot: everything written into guest memory and vCPU registers so the kernel starts
//! at its 64-bit entry point, one file per structure.

pub mod cpuid;
pub mod gdt;
pub mod mptable;
pub mod msr;
pub mod paging;
pub mod regs;
pub mod smbios;
pub mod zeropage;

use vm_memory::GuestMemory;

/// Why the boot structures could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot write the page tables")]
    PageTables(#[source] vm_memory::GuestMemoryError),
    #[error("cannot write the GDT/IDT")]
    Gdt(#[source] vm_memory::GuestMemoryError),
    #[error("cannot write the zero page")]
    ZeroPage(#[source] zeropage::ZeroPageError),
    #[error("cannot write the MP table")]
    MpTable(#[source] mptable::MpTableError),
    #[error("cannot write the SMBIOS tables")]
    Smbios(#[source] smbios::SmbiosError),
}

/// Writes page tables, GDT/IDT, zero page, MP table and, when `smbios_oem` is not empty,
/// the SMBIOS tables (the command line is written by the caller); returns `cr3`.
pub fn write_boot_structures<M: GuestMemory>(
    mem: &M,
    vcpus: u8,
    cmdline_size: usize,
    kernel: &crate::kernel::BootKernel,
    smbios_oem: &[String],
) -> Result<u64, BootError> {
    let cr3 = paging::write_identity_tables(mem).map_err(BootError::PageTables)?;
    regs::write_gdt_idt(mem).map_err(BootError::Gdt)?;
    zeropage::write_zero_page(mem, cmdline_size, kernel).map_err(BootError::ZeroPage)?;
    mptable::write(mem, vcpus).map_err(BootError::MpTable)?;
    smbios::write(mem, smbios_oem).map_err(BootError::Smbios)?;
    Ok(cr3)
}
