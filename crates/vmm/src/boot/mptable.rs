//! The Intel MultiProcessor Specification 1.4 tables that tell Linux how many CPUs exist and
//! how ISA IRQs reach the IOAPIC. Without ACPI tables this is how secondary vCPUs come up.
//!
//! Layout at [`MPTABLE_START`]: the 16-byte floating pointer, then the configuration table
//! (header, one processor entry per vCPU, the ISA bus, the IOAPIC, one I/O interrupt entry per
//! IOAPIC pin, local interrupt entries for LINT0/LINT1).

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::layout::{APIC_START, IOAPIC_START, MPTABLE_END, MPTABLE_START};

const FLOATING_POINTER_LEN: usize = 16;
const HEADER_LEN: usize = 44;
/// MP spec revision 1.4.
const SPEC_REV: u8 = 4;
/// Local APIC version reported for every vCPU (integrated APIC).
const APIC_VERSION: u8 = 0x14;
/// IOAPIC version of KVM's in-kernel IOAPIC.
const IOAPIC_VERSION: u8 = 0x11;
/// Pins of the in-kernel IOAPIC.
pub const IOAPIC_PINS: u8 = 24;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
/// CPU signature (family 6) and feature flags (FPU, APIC) in processor entries.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    #[error("an MP table needs 1 to 254 vCPUs, got {0}")]
    VcpuCount(u8),
    #[error("the MP table ({0} bytes) does not fit its window")]
    TooLarge(usize),
    #[error("cannot write the MP table")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// Byte sum that makes a structure's bytes add up to zero.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b)))
}

/// The IOAPIC's id: the first APIC id after the vCPUs'.
pub fn ioapic_id(vcpus: u8) -> u8 {
    vcpus
}

/// Builds the floating pointer and configuration table as placed at `base`.
pub fn build(vcpus: u8, base: u64) -> Result<Vec<u8>, MpTableError> {
    if vcpus == 0 || vcpus == u8::MAX {
        return Err(MpTableError::VcpuCount(vcpus));
    }
    let ioapic = ioapic_id(vcpus);
    let mut entries = Vec::new();
    for cpu in 0..vcpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTSTRAP } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, cpu, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0u8; 8]);
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    // ISA IRQ n on IOAPIC pin n, polarity and trigger as the bus defines (edge, active high).
    for pin in 0..IOAPIC_PINS {
        entries.extend_from_slice(&[ENTRY_IO_INTERRUPT, INT_TYPE_INT, 0, 0, 0, pin, ioapic, pin]);
    }
    // LINT0 of every local APIC: ExtINT (the PIC); LINT1: NMI.
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INT_TYPE_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);
    let entry_count = u16::from(vcpus) + 1 + 1 + u16::from(IOAPIC_PINS) + 2;

    let table_len = HEADER_LEN + entries.len();
    let total = FLOATING_POINTER_LEN + table_len;
    if total as u64 > MPTABLE_END - base {
        return Err(MpTableError::TooLarge(total));
    }
    let table_addr = base + FLOATING_POINTER_LEN as u64;

    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&(table_len as u16).to_le_bytes());
    header.extend_from_slice(&[SPEC_REV, 0]); // checksum patched below
    header.extend_from_slice(b"KRUN    "); // OEM id, 8 bytes
    header.extend_from_slice(b"MICROVM     "); // product id, 12 bytes
    header.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    header.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    header.extend_from_slice(&entry_count.to_le_bytes());
    header.extend_from_slice(&(APIC_START as u32).to_le_bytes());
    header.extend_from_slice(&[0u8; 4]); // extended table length, checksum, reserved
    debug_assert_eq!(header.len(), HEADER_LEN);

    let mut table = header;
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut fp = Vec::with_capacity(FLOATING_POINTER_LEN);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&(table_addr as u32).to_le_bytes());
    fp.extend_from_slice(&[1, SPEC_REV, 0, 0, 0, 0, 0, 0]); // length in 16-byte units
    fp[10] = checksum(&fp);

    fp.extend_from_slice(&table);
    Ok(fp)
}

/// Writes the MP tables for `vcpus` vCPUs at [`MPTABLE_START`].
pub fn write<M: GuestMemory>(mem: &M, vcpus: u8) -> Result<(), MpTableError> {
    let bytes = build(vcpus, MPTABLE_START)?;
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(MpTableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    #[test]
    fn build_two_vcpus_checksums_zero() {
        let bytes = build(2, MPTABLE_START).unwrap();
        assert_eq!(&bytes[0..4], b"_MP_");
        assert_eq!(sum(&bytes[..16]), 0);
        let table = &bytes[16..];
        assert_eq!(&table[0..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(sum(table), 0);
    }

    #[test]
    fn build_pointer_points_at_table() {
        let bytes = build(1, MPTABLE_START).unwrap();
        let ptr = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
        assert_eq!(u64::from(ptr), MPTABLE_START + 16);
    }

    #[test]
    fn build_processor_entries_one_per_vcpu_first_is_bsp() {
        let bytes = build(3, MPTABLE_START).unwrap();
        let table = &bytes[16..];
        let count = u16::from_le_bytes([table[34], table[35]]);
        assert_eq!(count, 3 + 1 + 1 + 24 + 2);
        let cpus: Vec<_> = (0..3)
            .map(|i| &table[44 + i * 20..44 + (i + 1) * 20])
            .collect();
        assert_eq!(cpus[0][..4], [0, 0, APIC_VERSION, 3]);
        assert_eq!(cpus[2][..4], [0, 2, APIC_VERSION, 1]);
        let ioapic = &table[44 + 60 + 8..44 + 60 + 16];
        assert_eq!(ioapic[..3], [ENTRY_IOAPIC, 3, IOAPIC_VERSION]);
    }

    #[test]
    fn build_max_vcpus_fits_window() {
        assert!(build(254, MPTABLE_START).is_ok());
        assert!(matches!(
            build(0, MPTABLE_START),
            Err(MpTableError::VcpuCount(0))
        ));
    }
}
