//! End-to-end tests of `Vm`. Booting needs a /dev/kvm that can run a Linux guest and
//! libkrunfw.so.5, so those tests only run when `KRUN_KVM_BOOT_TESTS=1` (set it in the KVM
//! lab); elsewhere they skip, saying so.

use vmm::config::{KernelFile, KernelFormat};
use vmm::{Vm, VmConfig, VmError};

fn boot_tests_enabled(name: &str) -> bool {
    let on = std::env::var("KRUN_KVM_BOOT_TESTS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("{name}: skipped (set KRUN_KVM_BOOT_TESTS=1 on a host whose KVM boots Linux)");
    }
    on
}

#[test]
fn vm_new_missing_kernel_file_read_error_before_kvm() {
    let config = VmConfig {
        kernel: Some(KernelFile {
            path: "/nonexistent/vmlinux".into(),
            format: KernelFormat::Raw,
            initramfs: None,
            cmdline: None,
        }),
        ..VmConfig::default()
    };
    let err = Vm::new(config).err().expect("a missing kernel file fails");
    let VmError::Kernel(vmm::kernel::KernelError::Read { source, .. }) = &err else {
        panic!("expected a kernel read error, got {err:?}");
    };
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn vm_new_kernel_not_in_declared_format_names_file_and_format() {
    let path = std::env::temp_dir().join(format!("krun-not-elf-{}", std::process::id()));
    std::fs::write(&path, b"this is not a kernel").unwrap();
    let config = VmConfig {
        kernel: Some(KernelFile {
            path: path.clone(),
            format: KernelFormat::Elf,
            initramfs: None,
            cmdline: None,
        }),
        ..VmConfig::default()
    };
    let err = Vm::new(config).err().expect("a file that is not ELF fails");
    std::fs::remove_file(&path).unwrap();
    let VmError::Kernel(inner) = &err else {
        panic!("expected a kernel error, got {err:?}");
    };
    let text = inner.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("KRUN_KERNEL_FORMAT_ELF"), "{text}");
}

fn boot(vcpus: u8) {
    let config = VmConfig {
        vcpus,
        ram_mib: 256,
        ..VmConfig::default()
    };
    let status = Vm::new(config).and_then(Vm::run).expect("the VM runs");
    // No root filesystem yet: the kernel panics and panic=-1 reboots; no exit code.
    assert_ne!(status, 0);
}

#[test]
fn vm_run_one_vcpu_kernel_panics_nonzero_status() {
    if boot_tests_enabled("vm_run_one_vcpu_kernel_panics_nonzero_status") {
        boot(1);
    }
}

#[test]
fn vm_run_two_vcpus_kernel_panics_nonzero_status() {
    if boot_tests_enabled("vm_run_two_vcpus_kernel_panics_nonzero_status") {
        boot(2);
    }
}
