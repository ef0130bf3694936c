//! `Vm`: a microVM built from a `VmConfig`, run until the guest ends.

use crate::config::VmConfig;

/// Why a VM could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("the VMM is not implemented yet")]
    NotImplemented,
}

impl VmError {
    /// The errno that best describes this error, for the C ABI.
    pub fn errno(&self) -> i32 {
        match self {
            VmError::NotImplemented => libc::ENOSYS,
        }
    }
}

/// A built microVM, ready to run.
pub struct Vm {
    _config: VmConfig,
}

impl Vm {
    /// Builds the VM: KVM, guest memory, kernel, devices, vCPUs (not yet running).
    pub fn new(config: VmConfig) -> Result<Vm, VmError> {
        let _ = config;
        Err(VmError::NotImplemented)
    }

    /// Runs the guest until it ends; returns its exit status after every thread is joined.
    pub fn run(self) -> Result<i32, VmError> {
        Err(VmError::NotImplemented)
    }
}
