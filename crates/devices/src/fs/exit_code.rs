//! The workload's exit status, shared between the root share's filesystem and the VMM.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Marker for "no exit code reported yet" (outside the `i32` range the guest can send).
const EXIT_CODE_UNSET: i64 = i64::MIN;

/// The workload's exit status as reported by the guest init through the exit-code ioctl.
///
/// Cheap to clone; every clone shares one value. The VMM keeps one clone and reads it after
/// the VM has ended, the root share's filesystem keeps another and writes it.
#[derive(Clone, Debug)]
pub struct ExitCode(Arc<AtomicI64>);

impl ExitCode {
    /// A handle with no exit code recorded.
    pub fn new() -> Self {
        Self(Arc::new(AtomicI64::new(EXIT_CODE_UNSET)))
    }

    /// The last exit code the guest reported, if any.
    pub fn get(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            EXIT_CODE_UNSET => None,
            code => i32::try_from(code).ok(),
        }
    }

    /// Records `code`, replacing any earlier one (the guest init reports once, last wins).
    pub fn set(&self, code: i32) {
        self.0.store(i64::from(code), Ordering::SeqCst);
    }
}

impl Default for ExitCode {
    fn default() -> Self {
        Self::new()
    }
}
