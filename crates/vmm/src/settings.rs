//! Every `VmConfig` field accounted for: used by `Vm::new`, refused because the feature is
//! not built, or ignored with a log line. Nothing a setter stores is silently dropped.
//!
//! [`account`] destructures `VmConfig` without `..`: adding a field breaks the build here
//! until it is given a consumer below (or is refused or logged as ignored). Keep it that way.

use crate::config::VmConfig;
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
        // Used by Vm::new: virtio-fs devices (the root and extra shares, DAX windows).
        fs_shares: _,
        // Used by Vm::new: virtio-blk devices, and the disk root (crate::block_root).
        disks: _,
        root_disk_remount: _,
        // Used by Vm::new: the command line or /.krun_exec.json.
        exec: _,
        // Used by Vm::new: the virtio-net devices and init's KRUN_NET word.
        nets: _,
        // Used by the config setters: already applied to the legacy interface.
        legacy_net_mac: _,
        // Used by vsock_plan::plan (the scope's IP too: init's KRUN_TSI_IP word).
        vsock: _,
        // Used by DeviceManager::add_console and the command line.
        console: _,
        // Used by Vm::new: kernel::load instead of libkrunfw's image.
        kernel: _,
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
        // Used by Vm::new: boot::smbios (checked here).
        smbios_oem_strings,
        // Used by Vm::new: crate::irqchip.
        split_irqchip: _,
        // Used by Vm::new: the virtual entries of each share.
        fs_overlays: _,
        // Used by Vm::new through the root share they are copied into (`FsShare::layers`).
        root_layers: _,
        // Used by Vm::new: the krun-shutdown console port.
        shutdown_eventfd: _,
    } = config;

    crate::boot::smbios::check_oem_strings(smbios_oem_strings)
        .map_err(|e| VmError::Boot(crate::boot::BootError::Smbios(e)))?;
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
    fn account_net_accepted() {
        let mut c = VmConfig::default();
        c.nets.push(Net {
            backend: NetBackend::Passt { fd: 3 },
            mac: [2, 0, 0, 0, 0, 1],
            features: 0,
            flags: 0,
        });
        c.legacy_net_mac = Some([2, 0, 0, 0, 0, 1]);
        assert!(account(&c).is_ok());
    }

    #[test]
    fn account_kernel_file_accepted() {
        let c = VmConfig {
            kernel: Some(KernelFile {
                path: "/k".into(),
                format: KernelFormat::Elf,
                initramfs: None,
                cmdline: None,
            }),
            ..VmConfig::default()
        };
        assert!(account(&c).is_ok());
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

    #[test]
    fn account_empty_smbios_oem_string_refused() {
        let c = VmConfig {
            smbios_oem_strings: vec!["a".into(), String::new()],
            ..VmConfig::default()
        };
        assert!(matches!(account(&c), Err(VmError::Boot(_))));
    }
}
