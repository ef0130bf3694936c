//! The two error types: what a builder refused ([`BuildError`]) and why a run failed
//! ([`VmError`]).

use std::io;
use std::path::PathBuf;

/// Why [`VmBuilder::build`](crate::VmBuilder::build) did not return a VM.
///
/// The first invalid setting is the one reported: a setter that fails leaves the
/// configuration as it was, and later setters still run, but `build` returns this error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting's value is wrong (out of range, malformed, a duplicate, in conflict with an
    /// earlier one). `setting` names the builder method, e.g. `machine.vcpus`.
    #[error("{setting}: {source}")]
    Invalid {
        /// The builder method, as `section.method`.
        setting: &'static str,
        /// What is wrong with the value.
        source: vmm::config::ConfigError,
    },
    /// A value the builder checks itself is wrong (a NUL byte, a key with `=`, an id of -1).
    #[error("{setting}: {reason}")]
    Value {
        /// The builder method, as `section.method`.
        setting: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
    /// A host directory a share names cannot be used.
    #[error("{setting}: {}: {source}", path.display())]
    Path {
        /// The builder method, as `section.method`.
        setting: &'static str,
        /// The path as given.
        path: PathBuf,
        /// Why it cannot be used (`NotFound`, `NotADirectory`, `PermissionDenied`, ...).
        source: io::Error,
    },
    /// The builder has no root filesystem: the guest would have nothing to run.
    #[error("no root filesystem: set one with .fs(|fs| fs.root(DIR))")]
    NoRoot,
    /// libkrunfw (the guest kernel bundle, `libkrunfw.so.5`) cannot be loaded.
    #[error("cannot load the guest kernel")]
    Kernel(#[source] vmm::krunfw::KrunfwError),
    /// The VM could not be created: KVM, guest memory, a device, the boot structures.
    #[error("cannot create the VM")]
    Create(#[source] vmm::VmError),
    /// The VMM panicked while creating the VM; the process is unharmed.
    #[error("the VMM panicked while creating the VM: {0}")]
    Panicked(String),
}

/// Why [`Vm::run`](crate::Vm::run) did not return an exit status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmError {
    /// The guest could not run (a KVM entry failure, an internal KVM error, a vCPU thread
    /// that could not start or that panicked, the privilege switch).
    #[error("the VM failed")]
    Run(#[source] vmm::VmError),
    /// A device failed for good while the VM ran (its worker thread panicked, e.g. in a
    /// [`FrameBackend::receive`](crate::FrameBackend::receive)): the VM was stopped, every
    /// thread joined, and the process is unharmed.
    #[error("device {device} failed, the VM was stopped: {reason}")]
    Device {
        /// The device's worker name: `net0`, `fs-<tag>`, `vsock0`, `console`, `rng0`, ...
        device: String,
        /// Why, e.g. `the device worker panicked: <message>`.
        reason: String,
    },
    /// The VMM panicked while running the VM; its threads were joined and the process is
    /// unharmed.
    #[error("the VMM panicked while running the VM: {0}")]
    Panicked(String),
}

/// The text of a caught panic.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}
