//! SMBIOS (DMTF DSP0134 3.x) tables carrying the OEM strings of `krun_set_smbios_oem_strings`.
//!
//! A Linux guest booted without EFI finds them by scanning the BIOS area 0xf0000..0x100000
//! for a 16-byte-aligned "_SM3_" anchor (`dmi_scan_machine`). Layout at [`SMBIOS_START`]:
//! the 24-byte SMBIOS 3.0 entry point, then at [`TABLE_OFFSET`] the structure table:
//! type 0 (BIOS), type 1 (system), type 11 (OEM strings, one string per entry, in order)
//! and type 127 (end of table). Each structure is its formatted area followed by its
//! string set (NUL-terminated strings, then one more NUL; a set without strings is two
//! NULs). Nothing is written when no OEM strings are given, as upstream's x86_64 VMM never
//! writes SMBIOS.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::layout::{SMBIOS_END, SMBIOS_START};

/// Most OEM strings: the type 11 structure counts them in one byte.
pub const MAX_OEM_STRINGS: usize = 255;
/// Most bytes all OEM strings take together, each counted with its NUL terminator; with
/// the fixed structures the tables then fit the window below 1 MiB.
pub const MAX_OEM_STRINGS_BYTES: usize = 48 * 1024;

/// Where the structure table starts, relative to the entry point.
pub const TABLE_OFFSET: usize = 32;
const ENTRY_POINT_LEN: u8 = 24;

const TYPE_BIOS: u8 = 0;
const TYPE_SYSTEM: u8 = 1;
const TYPE_OEM_STRINGS: u8 = 11;
const TYPE_END: u8 = 127;
/// Formatted-area lengths: type 0 as of SMBIOS 2.4, type 1 as of 2.4, type 11, type 127.
const BIOS_LEN: u8 = 24;
const SYSTEM_LEN: u8 = 27;
const OEM_STRINGS_LEN: u8 = 5;
const END_LEN: u8 = 4;

/// Type 0 characteristics: bit 3, "BIOS characteristics are not supported".
const BIOS_CHARACTERISTICS_NOT_SUPPORTED: u64 = 1 << 3;
/// Type 0 characteristics extension byte 2: bit 4, "the system is a virtual machine".
const BIOS_EXT2_VIRTUAL_MACHINE: u8 = 1 << 4;
/// Type 1 wake-up type "power switch".
const WAKE_UP_POWER_SWITCH: u8 = 6;

// The strings upstream libkrun's SMBIOS tables carry (aarch64), so guests that match on
// them see the same machine.
const BIOS_VENDOR: &str = "libkrun";
const BIOS_VERSION: &str = "0";
const BIOS_RELEASE_DATE: &str = "01/05/2024";
const SYSTEM_MANUFACTURER: &str = "Libkrun";
const SYSTEM_PRODUCT: &str = "libkrun Virtual Machine";

#[derive(Debug, thiserror::Error)]
pub enum SmbiosError {
    #[error("{0} SMBIOS OEM strings, at most {MAX_OEM_STRINGS} fit the type 11 structure")]
    TooMany(usize),
    #[error("SMBIOS OEM string {0} is empty (an SMBIOS string set cannot hold an empty string)")]
    Empty(usize),
    #[error(
        "the SMBIOS OEM strings take {0} bytes with their NULs, at most {MAX_OEM_STRINGS_BYTES}"
    )]
    TooLarge(usize),
    #[error("cannot write the SMBIOS tables")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// Checks that `strings` fit the type 11 structure and the SMBIOS window: at most
/// [`MAX_OEM_STRINGS`] strings, none empty, [`MAX_OEM_STRINGS_BYTES`] bytes in all.
pub fn check_oem_strings(strings: &[String]) -> Result<(), SmbiosError> {
    if strings.len() > MAX_OEM_STRINGS {
        return Err(SmbiosError::TooMany(strings.len()));
    }
    if let Some(i) = strings.iter().position(|s| s.is_empty()) {
        return Err(SmbiosError::Empty(i));
    }
    let bytes: usize = strings.iter().map(|s| s.len() + 1).sum();
    if bytes > MAX_OEM_STRINGS_BYTES {
        return Err(SmbiosError::TooLarge(bytes));
    }
    Ok(())
}

/// Byte that makes `bytes` sum to zero (mod 256).
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b)))
}

/// Appends one structure: header (type, length, handle), the rest of its formatted area,
/// then its string set.
fn push_structure(out: &mut Vec<u8>, kind: u8, len: u8, handle: u16, rest: &[u8], strs: &[&str]) {
    out.extend_from_slice(&[kind, len]);
    out.extend_from_slice(&handle.to_le_bytes());
    out.extend_from_slice(rest);
    debug_assert_eq!(rest.len() + 4, usize::from(len));
    for s in strs {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    if strs.is_empty() {
        out.push(0);
    }
    out.push(0);
}

/// The structure table: types 0, 1, 11 (with `oem`) and 127.
fn build_table(oem: &[&str]) -> Vec<u8> {
    let mut t = Vec::new();
    let mut bios = vec![1, 2]; // vendor, version: strings 1 and 2
    bios.extend_from_slice(&0u16.to_le_bytes()); // BIOS starting address segment: none
    bios.extend_from_slice(&[3, 0]); // release date: string 3; ROM size
    bios.extend_from_slice(&BIOS_CHARACTERISTICS_NOT_SUPPORTED.to_le_bytes());
    bios.extend_from_slice(&[0, BIOS_EXT2_VIRTUAL_MACHINE]);
    bios.extend_from_slice(&[0, 0, 0xff, 0xff]); // BIOS release 0.0, no embedded controller
    push_structure(
        &mut t,
        TYPE_BIOS,
        BIOS_LEN,
        0,
        &bios,
        &[BIOS_VENDOR, BIOS_VERSION, BIOS_RELEASE_DATE],
    );

    let mut system = vec![1, 2, 0, 0]; // manufacturer, product; no version, serial
    system.extend_from_slice(&[0u8; 16]); // UUID: not present
    system.extend_from_slice(&[WAKE_UP_POWER_SWITCH, 0, 0]); // no SKU, family
    push_structure(
        &mut t,
        TYPE_SYSTEM,
        SYSTEM_LEN,
        1,
        &system,
        &[SYSTEM_MANUFACTURER, SYSTEM_PRODUCT],
    );

    // check_oem_strings bounds the count to one byte.
    let count = u8::try_from(oem.len()).unwrap_or(u8::MAX);
    push_structure(&mut t, TYPE_OEM_STRINGS, OEM_STRINGS_LEN, 2, &[count], oem);
    push_structure(&mut t, TYPE_END, END_LEN, 3, &[], &[]);
    t
}

/// The SMBIOS 3.0 entry point for a table of `table_len` bytes at `table_addr`.
fn entry_point(table_len: u32, table_addr: u64) -> Vec<u8> {
    let mut ep = Vec::with_capacity(usize::from(ENTRY_POINT_LEN));
    ep.extend_from_slice(b"_SM3_");
    ep.push(0); // checksum, patched below
    ep.push(ENTRY_POINT_LEN);
    ep.extend_from_slice(&[3, 0, 0]); // SMBIOS 3.0.0
    ep.extend_from_slice(&[1, 0]); // entry point revision 1 (3.0), reserved
    ep.extend_from_slice(&table_len.to_le_bytes()); // structure table maximum size
    ep.extend_from_slice(&table_addr.to_le_bytes());
    debug_assert_eq!(ep.len(), usize::from(ENTRY_POINT_LEN));
    ep[5] = checksum(&ep);
    ep
}

/// Builds the entry point and structure table for `oem`, as placed at `base`.
pub fn build(oem: &[String], base: u64) -> Result<Vec<u8>, SmbiosError> {
    check_oem_strings(oem)?;
    let strs: Vec<&str> = oem.iter().map(String::as_str).collect();
    let table = build_table(&strs);
    let total = TABLE_OFFSET + table.len();
    if total as u64 > SMBIOS_END.saturating_sub(base) {
        return Err(SmbiosError::TooLarge(total));
    }
    // `total` fits the window below 1 MiB, so its length fits 32 bits.
    let mut bytes = entry_point(table.len() as u32, base + TABLE_OFFSET as u64);
    bytes.resize(TABLE_OFFSET, 0);
    bytes.extend_from_slice(&table);
    Ok(bytes)
}

/// Writes the SMBIOS tables for `oem` at [`SMBIOS_START`]; nothing when `oem` is empty.
pub fn write<M: GuestMemory>(mem: &M, oem: &[String]) -> Result<(), SmbiosError> {
    if oem.is_empty() {
        return Ok(());
    }
    let bytes = build(oem, SMBIOS_START)?;
    mem.write_slice(&bytes, GuestAddress(SMBIOS_START))
        .map_err(SmbiosError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Splits a structure table into (type, formatted area, string set) per structure, as
    /// a guest's DMI walker does.
    fn structures(mut t: &[u8]) -> Vec<(u8, Vec<u8>, Vec<Vec<u8>>)> {
        let mut out = Vec::new();
        while !t.is_empty() {
            let len = usize::from(t[1]);
            let formatted = t[..len].to_vec();
            let mut rest = &t[len..];
            let mut strs = Vec::new();
            if rest[0] == 0 {
                rest = &rest[2..];
            } else {
                while rest[0] != 0 {
                    let n = rest.iter().position(|&b| b == 0).unwrap();
                    strs.push(rest[..n].to_vec());
                    rest = &rest[n + 1..];
                }
                rest = &rest[1..];
            }
            out.push((t[0], formatted, strs));
            t = rest;
        }
        out
    }

    #[test]
    fn build_entry_point_checksum_zero_and_points_at_table() {
        let bytes = build(&strings(&["a", "bc"]), SMBIOS_START).unwrap();
        let ep = &bytes[..24];
        assert_eq!(&ep[..5], b"_SM3_");
        assert_eq!(ep[6], 24, "entry point length");
        assert_eq!(ep[7..10], [3, 0, 0], "SMBIOS 3.0.0");
        assert_eq!(ep[10], 1, "entry point revision");
        assert_eq!(sum(ep), 0);
        let len = u32::from_le_bytes(ep[12..16].try_into().unwrap()) as usize;
        let addr = u64::from_le_bytes(ep[16..24].try_into().unwrap());
        assert_eq!(addr, SMBIOS_START + TABLE_OFFSET as u64);
        assert_eq!(len, bytes.len() - TABLE_OFFSET);
        assert!(
            SMBIOS_START.is_multiple_of(16),
            "the anchor must be 16-byte aligned"
        );
    }

    #[test]
    fn build_table_types_0_1_11_127_in_order_with_their_strings() {
        let bytes = build(
            &strings(&["io.systemd.credential:x=y", "two", "3"]),
            SMBIOS_START,
        )
        .unwrap();
        let s = structures(&bytes[TABLE_OFFSET..]);
        let kinds: Vec<u8> = s.iter().map(|x| x.0).collect();
        assert_eq!(kinds, [0, 1, 11, 127]);
        let lens: Vec<usize> = s.iter().map(|x| x.1.len()).collect();
        assert_eq!(lens, [24, 27, 5, 4]);
        let handles: Vec<u16> = s
            .iter()
            .map(|x| u16::from_le_bytes([x.1[2], x.1[3]]))
            .collect();
        assert_eq!(handles, [0, 1, 2, 3], "handles are unique");
        assert_eq!(
            s[0].2,
            [b"libkrun".to_vec(), b"0".to_vec(), b"01/05/2024".to_vec()]
        );
        assert_eq!(s[0].1[4..6], [1, 2], "vendor and version string numbers");
        assert_eq!(s[0].1[8], 3, "release date string number");
        assert_eq!(
            s[1].2,
            [b"Libkrun".to_vec(), b"libkrun Virtual Machine".to_vec()]
        );
        assert_eq!(
            s[1].1[4..6],
            [1, 2],
            "manufacturer and product string numbers"
        );
        assert_eq!(s[2].1[4], 3, "OEM string count");
        assert_eq!(
            s[2].2,
            [
                b"io.systemd.credential:x=y".to_vec(),
                b"two".to_vec(),
                b"3".to_vec()
            ]
        );
        assert!(s[3].2.is_empty());
    }

    #[test]
    fn build_type_11_raw_bytes_exact() {
        let bytes = build(&strings(&["ab", "c"]), SMBIOS_START).unwrap();
        let t = &bytes[TABLE_OFFSET..];
        let at = t.windows(2).position(|w| w == [11, 5]).unwrap();
        assert_eq!(
            &t[at..at + 12],
            [11, 5, 2, 0, 2, b'a', b'b', 0, b'c', 0, 0, 127]
        );
        assert_eq!(
            &t[t.len() - 6..],
            [127, 4, 3, 0, 0, 0],
            "end of table, no strings"
        );
    }

    #[test]
    fn build_utf8_strings_kept_byte_for_byte() {
        let bytes = build(&strings(&["é ü ☃"]), SMBIOS_START).unwrap();
        let s = structures(&bytes[TABLE_OFFSET..]);
        assert_eq!(s[2].2, ["é ü ☃".as_bytes().to_vec()]);
    }

    #[test]
    fn check_oem_strings_limits() {
        assert!(check_oem_strings(&[]).is_ok());
        let many = vec!["x".to_string(); MAX_OEM_STRINGS];
        assert!(check_oem_strings(&many).is_ok());
        let too_many = vec!["x".to_string(); MAX_OEM_STRINGS + 1];
        assert!(matches!(
            check_oem_strings(&too_many),
            Err(SmbiosError::TooMany(256))
        ));
        assert!(matches!(
            check_oem_strings(&strings(&["a", ""])),
            Err(SmbiosError::Empty(1))
        ));
        let exact = vec!["y".repeat(MAX_OEM_STRINGS_BYTES - 1)];
        assert!(check_oem_strings(&exact).is_ok());
        let over = vec!["y".repeat(MAX_OEM_STRINGS_BYTES)];
        assert!(matches!(
            check_oem_strings(&over),
            Err(SmbiosError::TooLarge(n)) if n == MAX_OEM_STRINGS_BYTES + 1
        ));
    }

    #[test]
    fn build_largest_accepted_strings_fit_window() {
        let big: Vec<String> = (0..MAX_OEM_STRINGS)
            .map(|_| "z".repeat(MAX_OEM_STRINGS_BYTES / MAX_OEM_STRINGS - 1))
            .collect();
        let bytes = build(&big, SMBIOS_START).unwrap();
        assert!(SMBIOS_START + bytes.len() as u64 <= SMBIOS_END);
    }

    #[test]
    fn write_empty_writes_nothing_else_the_built_bytes() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write(&mem, &[]).unwrap();
        let mut anchor = [0u8; 5];
        mem.read_slice(&mut anchor, GuestAddress(SMBIOS_START))
            .unwrap();
        assert_eq!(anchor, [0; 5]);
        let oem = strings(&["k=v"]);
        write(&mem, &oem).unwrap();
        let want = build(&oem, SMBIOS_START).unwrap();
        let mut got = vec![0u8; want.len()];
        mem.read_slice(&mut got, GuestAddress(SMBIOS_START))
            .unwrap();
        assert_eq!(got, want);
    }
}
