//! The boot GDT: flat 64-bit code, data and TSS descriptors, and their `kvm_segment` forms.

use kvm_bindings::kvm_segment;

/// Flags of a 64-bit code segment: present, DPL 0, execute/read, accessed, L=1, G=1.
const CODE64_FLAGS: u16 = 0xa09b;
/// Flags of a data segment: present, DPL 0, read/write, accessed, D/B=1, G=1.
const DATA_FLAGS: u16 = 0xc093;
/// Flags of a 32-bit busy TSS: present, type 0xb, G=1.
const TSS_FLAGS: u16 = 0x808b;

/// Index of the code segment; its selector is `CODE_INDEX * 8`.
pub const CODE_INDEX: u16 = 1;
/// Index of the data segment.
pub const DATA_INDEX: u16 = 2;
/// Index of the TSS.
pub const TSS_INDEX: u16 = 3;

/// The four boot descriptors: null, code, data, TSS.
pub fn boot_gdt() -> [u64; 4] {
    [
        0,
        gdt_entry(CODE64_FLAGS, 0, 0xfffff),
        gdt_entry(DATA_FLAGS, 0, 0xfffff),
        gdt_entry(TSS_FLAGS, 0, 0xfffff),
    ]
}

/// Encodes a segment descriptor (Intel SDM vol. 3, 3.4.5). `flags` holds access byte (bits
/// 0-7) and the G/DB/L/AVL nibble (bits 12-15) as they sit in the descriptor's high dword.
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = u64::from(base);
    let limit = u64::from(limit);
    let flags = u64::from(flags);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

/// Decodes descriptor `entry` at GDT index `index` into the form `KVM_SET_SREGS` takes.
pub fn kvm_segment_from_gdt(entry: u64, index: u16) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = (entry & 0xffff) | ((entry >> 32) & 0x000f_0000);
    let g = bit(55);
    // With G=1 the limit counts 4 KiB pages; KVM wants it in bytes.
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    kvm_segment {
        base,
        limit: limit as u32,
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: bit(47),
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g,
        avl: bit(52),
        unusable: if bit(47) == 1 { 0 } else { 1 },
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entry_code64_known_encoding() {
        assert_eq!(gdt_entry(CODE64_FLAGS, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(DATA_FLAGS, 0, 0xfffff), 0x00cf_9300_0000_ffff);
    }

    #[test]
    fn kvm_segment_from_gdt_code64_long_mode_flat() {
        let seg = kvm_segment_from_gdt(boot_gdt()[1], CODE_INDEX);
        assert_eq!(seg.selector, 0x8);
        assert_eq!(seg.base, 0);
        assert_eq!(seg.limit, 0xffff_ffff);
        assert_eq!((seg.l, seg.db, seg.g, seg.present, seg.s), (1, 0, 1, 1, 1));
        assert_eq!(seg.type_, 0xb);
    }

    #[test]
    fn kvm_segment_from_gdt_base_and_limit_roundtrip() {
        let seg = kvm_segment_from_gdt(gdt_entry(0x0093, 0x1234_5678, 0xabcde), 2);
        assert_eq!(seg.base, 0x1234_5678);
        assert_eq!(seg.limit, 0xabcde);
        assert_eq!(seg.g, 0);
        assert_eq!(seg.selector, 16);
    }

    #[test]
    fn kvm_segment_from_gdt_null_unusable() {
        assert_eq!(kvm_segment_from_gdt(0, 0).unusable, 1);
    }
}
