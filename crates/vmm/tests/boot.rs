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
fn vm_new_kernel_file_not_supported_enotsup() {
    let config = VmConfig {
        kernel: Some(KernelFile {
            path: "/nonexistent/vmlinux".into(),
            format: KernelFormat::Raw,
            initramfs: None,
            cmdline: None,
        }),
        ..VmConfig::default()
    };
    let err = Vm::new(config)
        .err()
        .expect("a kernel file must be refused for now");
    assert!(matches!(err, VmError::Unsupported(_)), "{err:?}");
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
