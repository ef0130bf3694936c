//! Queries about the host's KVM that need no VM: vCPU limits, nested virtualization.

use std::path::Path;

/// Why a host query failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot open /dev/kvm: {0}")]
    Kvm(#[source] kvm_ioctls::Error),
}

/// The most vCPUs this VMM builds, whatever KVM allows: the MP table gives each vCPU an APIC
/// id below 255 (the broadcast id).
pub const VMM_MAX_VCPUS: u32 = 254;

/// The most vCPUs one VM may have on this host: KVM's `KVM_CAP_MAX_VCPUS` (which KVM itself
/// falls back to `KVM_CAP_NR_VCPUS` or 4 when the capability is missing), capped at
/// [`VMM_MAX_VCPUS`]. `krun_set_vm_config`, `krun_get_max_vcpus` and `Vm::new` all use this.
pub fn max_vcpus() -> Result<u32, HostError> {
    let kvm = kvm_ioctls::Kvm::new().map_err(HostError::Kvm)?;
    Ok(vcpu_limit(&kvm))
}

/// [`max_vcpus`] for an open `/dev/kvm`.
pub fn vcpu_limit(kvm: &kvm_ioctls::Kvm) -> u32 {
    (kvm.get_max_vcpus() as u32).min(VMM_MAX_VCPUS)
}

/// sysfs files where the Intel and AMD KVM modules report nested virtualization.
const NESTED_PARAMS: [&str; 2] = [
    "/sys/module/kvm_intel/parameters/nested",
    "/sys/module/kvm_amd/parameters/nested",
];

/// Whether KVM lets guests run their own hypervisor: a loaded kvm_intel or kvm_amd module
/// reports `nested` as `1` or `Y`.
pub fn nested_virt_supported() -> bool {
    NESTED_PARAMS
        .iter()
        .any(|p| nested_param_enabled(Path::new(p)))
}

fn nested_param_enabled(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|v| {
        let v = v.trim();
        v == "1" || v.eq_ignore_ascii_case("y")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_param_values_parse() {
        let dir = std::env::temp_dir().join(format!("vmm-host-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (content, want) in [("Y\n", true), ("1\n", true), ("N\n", false), ("0", false)] {
            let f = dir.join("nested");
            std::fs::write(&f, content).unwrap();
            assert_eq!(nested_param_enabled(&f), want, "{content:?}");
        }
        assert!(!nested_param_enabled(&dir.join("missing")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
