//! Per-vCPU CPUID: KVM's supported set, patched with this vCPU's APIC id and the VM's
//! topology (one socket, one thread per core, `vcpus` cores) so Linux counts CPUs right.

use kvm_bindings::kvm_cpuid_entry2;

/// Leaf 1 ECX: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX: the logical processor count in EBX is valid.
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// CLFLUSH line size in 8-byte units (64 bytes).
const CLFLUSH_LINE: u32 = 8;
/// Leaf 0xB/0x1F level types.
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Bits needed to number `count` items (ceil(log2(count))).
fn id_bits(count: u32) -> u32 {
    if count <= 1 {
        0
    } else {
        32 - (count - 1).leading_zeros()
    }
}

/// Patches `entries` (from `KVM_GET_SUPPORTED_CPUID`) for vCPU `apic_id` of `vcpus`.
pub fn patch_entries(entries: &mut [kvm_cpuid_entry2], apic_id: u8, vcpus: u8) {
    let id = u32::from(apic_id);
    let count = u32::from(vcpus);
    for e in entries.iter_mut() {
        match e.function {
            0x1 => {
                e.ebx = (id << 24) | (count << 16) | (CLFLUSH_LINE << 8);
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                if count > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                } else {
                    e.edx &= !LEAF1_EDX_HTT;
                }
            }
            // Deterministic cache parameters (Intel): cores per package in 31:26, threads
            // sharing the cache in 25:14 (L3 shared by all, L1/L2 private).
            0x4 if e.eax & 0x1f != 0 => {
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | ((sharing & 0xfff) << 14) | ((count - 1) << 26);
            }
            0xb | 0x1f => {
                e.edx = id;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = LEVEL_TYPE_SMT << 8;
                    }
                    1 => {
                        e.eax = id_bits(count);
                        e.ebx = count;
                        e.ecx = (LEVEL_TYPE_CORE << 8) | 1;
                    }
                    n => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = n & 0xff;
                    }
                }
            }
            0x8000_0008 => {
                // AMD: number of cores - 1 in ECX 7:0; APIC id size 0 means "derive it".
                e.ecx = (e.ecx & !0xf0ff) | ((count - 1) & 0xff);
            }
            0x8000_001e => {
                // AMD extended APIC id, core id (one thread per core), node 0 of 1.
                e.eax = id;
                e.ebx = id & 0xff;
                e.ecx = 0;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    #[test]
    fn patch_entries_leaf1_apic_id_count_hypervisor() {
        let mut e = [entry(1, 0)];
        patch_entries(&mut e, 3, 4);
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_ne!(e[0].ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(e[0].edx & LEAF1_EDX_HTT, 0);
    }

    #[test]
    fn patch_entries_leaf_b_topology_levels() {
        let mut e = [entry(0xb, 0), entry(0xb, 1), entry(0xb, 2)];
        patch_entries(&mut e, 2, 3);
        assert_eq!((e[0].eax, e[0].ebx, e[0].ecx, e[0].edx), (0, 1, 0x100, 2));
        assert_eq!((e[1].eax, e[1].ebx, e[1].ecx, e[1].edx), (2, 3, 0x201, 2));
        assert_eq!((e[2].eax, e[2].ebx, e[2].ecx), (0, 0, 2));
    }

    #[test]
    fn id_bits_powers_and_between() {
        assert_eq!(id_bits(1), 0);
        assert_eq!(id_bits(2), 1);
        assert_eq!(id_bits(3), 2);
        assert_eq!(id_bits(8), 3);
        assert_eq!(id_bits(9), 4);
    }
}
