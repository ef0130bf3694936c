//! Every `VmConfig` field accounted for: used by `Vm::new`, refused because the feature is
//! not built, or ignored with a log line. Nothing a setter stores is silently dropped.
//!
//! [`account`] destructures `VmConfig` without `..`: adding a field breaks the build here
//! until it is given a consumer below (or is refused or logged as ignored). Keep it that way.

use crate::config::{VmConfig, ROOT_SHM_SIZE};
use crate::vm::VmError;

/// Checks a config before `Vm::new` builds anything: Err names the first setting this VMM
/// cannot honour (a guest would miss something it cannot work without); settings a guest
/// works without, that we do not implement, are logged at info (the C setters already
/// warned when they were called).
pub(crate) fn account(config: &VmConfig) -> Result<(), VmError> {
    let VmConfig {
        // Used by Vm::new: KVM vCPUs, boot structures, guest RAM.
        vcpus: _,
        ram_mib: _,
        // Used by Vm::new: virtio-fs devices (the root and extra shares).
        fs_shares,
        // Refused: no virtio-blk yet.
        disks,
        root_disk_remount,
        // Used by Vm::new: the command line or /.krun_exec.json.
        exec: _,
        // Refused: no virtio-net yet.
        nets,
        legacy_net_mac,
        // Used by vsock_plan::plan.
        vsock,
        // Used by DeviceManager::add_console and the command line.
        console: _,
        // Refused: only libkrunfw's kernel boots.
        kernel,
        // Used by Vm::new: the kernel image.
        krunfw: _,
        // Used by crates/krun (it sets init_binary accordingly) and by Vm::new.
        implicit_init_disabled: _,
        init_binary: _,
        // Used by Vm::run: the id switch before the guest starts.
        vmm_uid: _,
        vmm_gid: _,
        // The guest CPUID's VMX/SVM bits (issue 10 item 0, the machine branch).
        nested_virt: _,
        // Ignored, logged below.
        split_irqchip,
        smbios_oem_strings,
        // Refused: no virtual overlay entries or overlayfs root yet.
        fs_overlays,
        root_layers,
    } = config;

    let refused = [
        (!disks.is_empty(), "virtio-blk disks"),
        (root_disk_remount.is_some(), "a block-device root"),
        (!nets.is_empty(), "virtio-net interfaces"),
        (
            legacy_net_mac.is_some(),
            "the MAC of a virtio-net interface",
        ),
        (kernel.is_some(), "booting a kernel from a file"),
        (
            !fs_overlays.is_empty(),
            "virtual overlay files and directories",
        ),
        (root_layers.is_some(), "an overlayfs root"),
    ];
    if let Some((_, what)) = refused.iter().find(|(set, _)| *set) {
        return Err(VmError::Unsupported(what));
    }

    if *split_irqchip {
        log::info!("ignored: split irqchip (the IOAPIC and PIC stay in KVM)");
    }
    if !smbios_oem_strings.is_empty() {
        log::info!("ignored: SMBIOS OEM strings (this VMM writes no SMBIOS tables)");
    }
    for share in fs_shares
        .iter()
        .filter(|s| s.shm_size != 0 && s.shm_size != ROOT_SHM_SIZE)
    {
        log::info!(
            "ignored: DAX window of {} bytes for virtio-fs {:?} (no DAX)",
            share.shm_size,
            share.tag
        );
    }
    if let Some(ip) = vsock.tsi_scope.as_ref().and_then(|s| s.ip.as_ref()) {
        log::info!("ignored: TSI scope IP {ip:?} (only the subnet and scope limit guests)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KernelFile, KernelFormat, Net, NetBackend};

    #[test]
    fn account_default_config_ok() {
        assert!(account(&VmConfig::default()).is_ok());
    }

    #[test]
    fn account_net_refused_enotsup() {
        let mut c = VmConfig::default();
        c.nets.push(Net {
            backend: NetBackend::Passt { fd: 3 },
            mac: [2, 0, 0, 0, 0, 1],
            features: 0,
            flags: 0,
        });
        let err = account(&c).unwrap_err();
        assert!(matches!(err, VmError::Unsupported("virtio-net interfaces")));
    }

    #[test]
    fn account_kernel_file_refused_enotsup() {
        let c = VmConfig {
            kernel: Some(KernelFile {
                path: "/k".into(),
                format: KernelFormat::Elf,
                initramfs: None,
                cmdline: None,
            }),
            ..VmConfig::default()
        };
        assert!(matches!(account(&c).unwrap_err(), VmError::Unsupported(_)));
    }

    #[test]
    fn account_ignored_settings_ok() {
        let c = VmConfig {
            split_irqchip: true,
            smbios_oem_strings: vec!["a".into()],
            ..VmConfig::default()
        };
        assert!(account(&c).is_ok());
    }
}
