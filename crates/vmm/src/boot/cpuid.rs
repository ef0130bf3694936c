//! Per-vCPU CPUID: KVM's supported set, patched as upstream libkrun does: this vCPU's APIC id
//! and the VM's topology (one socket, one thread per core, `vcpus` cores) so Linux counts
//! CPUs right, the hypervisor bit, the TSC-deadline timer when KVM emulates it (KVM reports
//! it only through `KVM_CAP_TSC_DEADLINE_TIMER`, never in the supported CPUID), and VMX/SVM
//! hidden unless nested virtualization was asked for. KVM's paravirt leaves (0x4000_0000..)
//! come from the supported set unchanged: they give the guest kvm-clock and the PV features.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// Leaf 1 ECX: VMX (Intel virtualization).
const LEAF1_ECX_VMX: u32 = 1 << 5;
/// Leaf 1 ECX: the local APIC timer has TSC-deadline mode.
const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
/// Leaf 1 ECX: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX: the logical processor count in EBX is valid.
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// Leaf 0x8000_0001 ECX: SVM (AMD virtualization).
const EXT1_ECX_SVM: u32 = 1 << 2;
/// Leaf 0x8000_0001 ECX: topology extensions (leaves 0x8000_001D/0x8000_001E).
const EXT1_ECX_TOPOEXT: u32 = 1 << 22;
/// AMD's extended APIC id, core and node id leaf.
const AMD_EXT_APIC_ID: u32 = 0x8000_001e;
/// "Auth" of "AuthenticAMD", leaf 0 EBX.
const AMD_VENDOR_EBX: u32 = 0x6874_7541;
/// CLFLUSH line size in 8-byte units (64 bytes).
const CLFLUSH_LINE: u32 = 8;
/// Leaf 0xB/0x1F level types.
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;
/// KVM's paravirt signature leaf and the features leaf that follows it.
pub const KVM_CPUID_SIGNATURE: u32 = 0x4000_0000;
pub const KVM_CPUID_FEATURES: u32 = 0x4000_0001;

/// What one vCPU's CPUID is patched for.
#[derive(Clone, Copy, Debug)]
pub struct CpuidSpec {
    pub apic_id: u8,
    pub vcpus: u8,
    /// Expose VMX/SVM (when KVM's supported set has them: the host allows nesting).
    pub nested_virt: bool,
    /// KVM emulates the TSC-deadline timer (`KVM_CAP_TSC_DEADLINE_TIMER`).
    pub tsc_deadline: bool,
}

/// Bits needed to number `count` items (ceil(log2(count))).
fn id_bits(count: u32) -> u32 {
    if count <= 1 {
        0
    } else {
        32 - (count - 1).leading_zeros()
    }
}

/// Whether the CPU is AMD's (leaf 0's vendor string).
pub fn is_amd(entries: &[kvm_cpuid_entry2]) -> bool {
    entries
        .iter()
        .any(|e| e.function == 0 && e.ebx == AMD_VENDOR_EBX)
}

/// The extended topology leaf (0xB) and its successor (0x1F).
const LEAF_EXT_TOPO: u32 = 0xb;
const LEAF_EXT_TOPO_V2: u32 = 0x1f;
/// Sub-leaves of 0xB/0x1F that [`patch_entries`] fills: SMT, core and the terminating one.
const EXT_TOPO_SUBLEAVES: u32 = 3;

/// Adds what [`patch_entries`] fills but KVM's set may lack: on AMD the extended APIC id leaf
/// 0x8000_001E, which Linux reads for every CPU's APIC and core id once TOPOEXT is set; and
/// the SMT, core and terminating sub-leaves of 0xB (and of 0x1F when KVM offers it). KVM
/// copies only the sub-leaves the host enumerates: a host (the lab's QEMU TCG CPU) whose 0xB
/// has no core level gives sub-leaf 0 alone, and Linux, which trusts 0xB over 0x8000_0008
/// once TOPOEXT is set, then took the SMT level for the last one and put every vCPU in a
/// package of its own.
pub fn add_missing_leaves(cpuid: &mut CpuId) -> Result<(), vmm_sys_util::fam::Error> {
    let entries = cpuid.as_slice();
    let mut missing = Vec::new();
    if is_amd(entries) && !entries.iter().any(|e| e.function == AMD_EXT_APIC_ID) {
        missing.push(kvm_cpuid_entry2 {
            function: AMD_EXT_APIC_ID,
            ..Default::default()
        });
    }
    for function in [LEAF_EXT_TOPO, LEAF_EXT_TOPO_V2] {
        // 0xB always (the basic max leaf is raised to it); 0x1F only where KVM offers it.
        if function == LEAF_EXT_TOPO_V2 && !entries.iter().any(|e| e.function == function) {
            continue;
        }
        for index in 0..EXT_TOPO_SUBLEAVES {
            if !entries
                .iter()
                .any(|e| e.function == function && e.index == index)
            {
                missing.push(kvm_cpuid_entry2 {
                    function,
                    index,
                    flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                    ..Default::default()
                });
            }
        }
    }
    for e in missing {
        cpuid.push(e)?;
    }
    Ok(())
}

/// Patches `entries` (from `KVM_GET_SUPPORTED_CPUID`, after [`add_missing_leaves`]) for one
/// vCPU.
///
/// On AMD, TOPOEXT is set as upstream does: without it Linux ignores leaf 0xB and (seen in
/// the lab, with the libkrunfw kernel) put each vCPU in a package of its own.
pub fn patch_entries(entries: &mut [kvm_cpuid_entry2], spec: &CpuidSpec) {
    let amd = is_amd(entries);
    let id = u32::from(spec.apic_id);
    let count = u32::from(spec.vcpus).max(1);
    // Logical processor ids the package reserves: a power of two, as the APIC id shifts of
    // leaf 0xB imply.
    let per_package = 1u32 << id_bits(count);
    for e in entries.iter_mut() {
        match e.function {
            // The basic max leaf reaches 0xB, which [`add_missing_leaves`] provides.
            0x0 => e.eax = e.eax.max(LEAF_EXT_TOPO),
            0x1 => {
                e.ebx = (id << 24) | ((per_package & 0xff) << 16) | (CLFLUSH_LINE << 8);
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                set_bit(&mut e.ecx, LEAF1_ECX_TSC_DEADLINE, spec.tsc_deadline);
                if !spec.nested_virt {
                    e.ecx &= !LEAF1_ECX_VMX;
                }
                set_bit(&mut e.edx, LEAF1_EDX_HTT, count > 1);
            }
            // Deterministic cache parameters (Intel, and AMD's 0x8000_001D): cores per package
            // in 31:26 (Intel only), threads sharing the cache in 25:14 (L3 shared by all,
            // L1/L2 private: one thread per core).
            0x4 | 0x8000_001d if e.eax & 0x1f != 0 => {
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                e.eax = (e.eax & !(0xfff << 14)) | ((sharing & 0xfff) << 14);
                if e.function == 0x4 {
                    e.eax = (e.eax & 0x03ff_ffff) | ((count - 1) << 26);
                }
            }
            LEAF_EXT_TOPO | LEAF_EXT_TOPO_V2 => {
                e.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
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
            KVM_CPUID_SIGNATURE => {
                // The highest paravirt leaf: KVM_CPUID_FEATURES at least.
                e.eax = e.eax.max(KVM_CPUID_FEATURES);
            }
            0x8000_0000 if amd => e.eax = e.eax.max(AMD_EXT_APIC_ID),
            0x8000_0001 => {
                if amd {
                    e.ecx |= EXT1_ECX_TOPOEXT;
                }
                if !spec.nested_virt {
                    e.ecx &= !EXT1_ECX_SVM;
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

/// Whether KVM's supported set offers VMX or SVM: the host allows nested virtualization.
pub fn offers_virtualization(entries: &[kvm_cpuid_entry2]) -> bool {
    entries.iter().any(|e| {
        (e.function == 0x1 && e.ecx & LEAF1_ECX_VMX != 0)
            || (e.function == 0x8000_0001 && e.ecx & EXT1_ECX_SVM != 0)
    })
}

fn set_bit(reg: &mut u32, bit: u32, on: bool) {
    if on {
        *reg |= bit;
    } else {
        *reg &= !bit;
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

    fn spec(apic_id: u8, vcpus: u8) -> CpuidSpec {
        CpuidSpec {
            apic_id,
            vcpus,
            nested_virt: false,
            tsc_deadline: true,
        }
    }

    #[test]
    fn patch_entries_leaf1_apic_id_count_hypervisor() {
        let mut e = [entry(1, 0)];
        patch_entries(&mut e, &spec(3, 4));
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_ne!(e[0].ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(e[0].edx & LEAF1_EDX_HTT, 0);
    }

    #[test]
    fn patch_entries_leaf1_count_rounded_to_power_of_two() {
        let mut e = [entry(1, 0)];
        patch_entries(&mut e, &spec(0, 3));
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
    }

    #[test]
    fn patch_entries_one_vcpu_no_htt() {
        let mut e = [entry(1, 0)];
        e[0].edx = LEAF1_EDX_HTT;
        patch_entries(&mut e, &spec(0, 1));
        assert_eq!(e[0].edx & LEAF1_EDX_HTT, 0);
        assert_eq!((e[0].ebx >> 16) & 0xff, 1);
    }

    #[test]
    fn patch_entries_tsc_deadline_follows_capability() {
        let mut e = [entry(1, 0)];
        patch_entries(&mut e, &spec(0, 1));
        assert_ne!(e[0].ecx & LEAF1_ECX_TSC_DEADLINE, 0);
        let mut without = spec(0, 1);
        without.tsc_deadline = false;
        patch_entries(&mut e, &without);
        assert_eq!(e[0].ecx & LEAF1_ECX_TSC_DEADLINE, 0);
    }

    #[test]
    fn patch_entries_default_vmx_svm_hidden() {
        let mut e = [entry(1, 0), entry(0x8000_0001, 0)];
        e[0].ecx = LEAF1_ECX_VMX;
        e[1].ecx = EXT1_ECX_SVM | 1;
        patch_entries(&mut e, &spec(0, 1));
        assert_eq!(e[0].ecx & LEAF1_ECX_VMX, 0);
        assert_eq!(e[1].ecx, 1);
    }

    #[test]
    fn patch_entries_nested_vmx_svm_kept() {
        let mut e = [entry(1, 0), entry(0x8000_0001, 0)];
        e[0].ecx = LEAF1_ECX_VMX;
        e[1].ecx = EXT1_ECX_SVM;
        let mut nested = spec(0, 1);
        nested.nested_virt = true;
        patch_entries(&mut e, &nested);
        assert_ne!(e[0].ecx & LEAF1_ECX_VMX, 0);
        assert_eq!(e[1].ecx, EXT1_ECX_SVM);
    }

    fn amd_vendor() -> kvm_cpuid_entry2 {
        let mut e = entry(0, 0);
        e.ebx = AMD_VENDOR_EBX;
        e
    }

    #[test]
    fn patch_entries_amd_topoext_and_extended_max_leaf() {
        let mut e = [amd_vendor(), entry(0x8000_0000, 0), entry(0x8000_0001, 0)];
        e[1].eax = 0x8000_000a;
        patch_entries(&mut e, &spec(0, 2));
        assert_eq!(e[1].eax, AMD_EXT_APIC_ID);
        assert_eq!(e[2].ecx, EXT1_ECX_TOPOEXT);
    }

    #[test]
    fn patch_entries_intel_no_topoext() {
        let mut e = [entry(0, 0), entry(0x8000_0001, 0)];
        patch_entries(&mut e, &spec(0, 2));
        assert_eq!(e[1].ecx, 0);
    }

    #[test]
    fn add_missing_leaves_amd_adds_ext_apic_id_once() {
        let mut cpuid = CpuId::from_entries(&[amd_vendor()]).unwrap();
        add_missing_leaves(&mut cpuid).unwrap();
        add_missing_leaves(&mut cpuid).unwrap();
        let n = cpuid
            .as_slice()
            .iter()
            .filter(|e| e.function == AMD_EXT_APIC_ID)
            .count();
        assert_eq!(n, 1);
        patch_entries(cpuid.as_mut_slice(), &spec(1, 2));
        let leaf = cpuid.as_slice()[1];
        assert_eq!((leaf.eax, leaf.ebx, leaf.ecx), (1, 1, 0));
    }

    #[test]
    fn add_missing_leaves_ext_topo_core_level_when_host_has_smt_only() {
        // What KVM offers on a host whose 0xB enumerates no core level: sub-leaf 0 alone.
        let mut smt_only = entry(0xb, 0);
        smt_only.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
        let mut basic = amd_vendor();
        basic.eax = 0x7;
        let mut cpuid = CpuId::from_entries(&[basic, smt_only]).unwrap();
        add_missing_leaves(&mut cpuid).unwrap();
        add_missing_leaves(&mut cpuid).unwrap();
        patch_entries(cpuid.as_mut_slice(), &spec(1, 2));
        let leaf = |f: u32, i: u32| {
            let v: Vec<_> = cpuid
                .as_slice()
                .iter()
                .filter(|e| e.function == f && e.index == i)
                .copied()
                .collect();
            assert_eq!(v.len(), 1, "leaf {f:#x}.{i}");
            v[0]
        };
        assert_eq!(leaf(0, 0).eax, 0xb);
        let (s0, s1, s2) = (leaf(0xb, 0), leaf(0xb, 1), leaf(0xb, 2));
        assert_eq!((s0.eax, s0.ebx, s0.ecx, s0.edx), (0, 1, 0x100, 1));
        assert_eq!((s1.eax, s1.ebx, s1.ecx, s1.edx), (1, 2, 0x201, 1));
        assert_eq!((s2.eax, s2.ebx, s2.ecx & 0xff00), (0, 0, 0));
        for e in [s0, s1, s2] {
            assert_eq!(e.flags, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
        }
        // No 0x1F where KVM offered none.
        assert!(!cpuid.as_slice().iter().any(|e| e.function == 0x1f));
    }

    #[test]
    fn add_missing_leaves_leaf_1f_completed_when_offered() {
        let mut cpuid = CpuId::from_entries(&[entry(0x1f, 0)]).unwrap();
        add_missing_leaves(&mut cpuid).unwrap();
        let n = cpuid
            .as_slice()
            .iter()
            .filter(|e| e.function == 0x1f)
            .count();
        assert_eq!(n, 3);
    }

    #[test]
    fn offers_virtualization_svm_or_vmx() {
        let mut e = [entry(1, 0), entry(0x8000_0001, 0)];
        assert!(!offers_virtualization(&e));
        e[1].ecx = EXT1_ECX_SVM;
        assert!(offers_virtualization(&e));
        e[1].ecx = 0;
        e[0].ecx = LEAF1_ECX_VMX;
        assert!(offers_virtualization(&e));
    }

    #[test]
    fn patch_entries_nested_host_without_svm_stays_hidden() {
        let mut e = [entry(0x8000_0001, 0)];
        let mut nested = spec(0, 1);
        nested.nested_virt = true;
        patch_entries(&mut e, &nested);
        assert_eq!(e[0].ecx & EXT1_ECX_SVM, 0);
    }

    #[test]
    fn patch_entries_amd_cache_l3_shared_l1_private() {
        let mut e = [entry(0x8000_001d, 0), entry(0x8000_001d, 3)];
        e[0].eax = (1 << 5) | 1 | (1 << 14);
        e[1].eax = (3 << 5) | 3 | (7 << 14);
        patch_entries(&mut e, &spec(1, 2));
        assert_eq!(e[0].eax, (1 << 5) | 1);
        assert_eq!(e[1].eax, (3 << 5) | 3 | (1 << 14));
    }

    #[test]
    fn patch_entries_kvm_signature_max_leaf_kept() {
        let mut e = [entry(KVM_CPUID_SIGNATURE, 0)];
        e[0].eax = KVM_CPUID_FEATURES;
        e[0].ebx = 0x4b4d_564b;
        patch_entries(&mut e, &spec(0, 1));
        assert_eq!((e[0].eax, e[0].ebx), (KVM_CPUID_FEATURES, 0x4b4d_564b));
    }

    #[test]
    fn patch_entries_leaf_b_topology_levels() {
        let mut e = [entry(0xb, 0), entry(0xb, 1), entry(0xb, 2)];
        patch_entries(&mut e, &spec(2, 3));
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
