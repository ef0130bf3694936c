//! `Vm`: a built microVM; `run` returns its exit status, `VmHandle` stops and awaits it.

use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{panic_text, VmError};

/// How the guest ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// The workload ended and init reported its status: its exit code (0 to 255), 128 + N
    /// when signal N killed it, 127 when the program could not be run.
    Exited(i32),
    /// The guest ended without reporting a status (a kernel panic, a reboot or power-off
    /// before the workload ended).
    Unreported,
    /// A [`VmHandle::stop`] ended the VM before the workload reported a status.
    Stopped,
}

impl ExitStatus {
    /// The status a process running this VM would exit with (what `krun_start_enter` does):
    /// the reported code, else 1.
    pub fn code(&self) -> i32 {
        match self {
            ExitStatus::Exited(code) => *code,
            ExitStatus::Unreported | ExitStatus::Stopped => vmm::vm::NO_EXIT_CODE_STATUS,
        }
    }

    /// The workload reported status 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Exited(0)
    }

    fn from_end(end: vmm::RunEnd) -> Self {
        match end.reported {
            Some(code) => ExitStatus::Exited(code),
            None if end.stop_requested => ExitStatus::Stopped,
            None => ExitStatus::Unreported,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exited with status {code}"),
            ExitStatus::Unreported => f.write_str("ended without reporting a status"),
            ExitStatus::Stopped => f.write_str("stopped on request"),
        }
    }
}

/// What a [`VmHandle`] learns when the VM is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `run` returned this status.
    Ended(ExitStatus),
    /// `run` returned an error (the caller of `run` has it).
    Failed,
    /// The `Vm` was dropped without being run.
    NotRun,
}

#[derive(Default)]
struct Done {
    outcome: Mutex<Option<Outcome>>,
    cond: Condvar,
}

impl Done {
    fn set(&self, outcome: Outcome) {
        let mut slot = self.outcome.lock().unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert(outcome);
        self.cond.notify_all();
    }
}

/// Stops a VM and waits for it, from any thread. Cheap to clone; outlives the VM.
#[derive(Clone)]
pub struct VmHandle {
    stop: vmm::StopHandle,
    done: Arc<Done>,
    /// The shutdown eventfd (`machine.shutdown_requests`), if the VM has the port.
    shutdown: Option<Arc<OwnedFd>>,
}

impl std::fmt::Debug for VmHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmHandle")
            .field("stop_requested", &self.stop.requested())
            .field("outcome", &self.outcome())
            .finish()
    }
}

impl VmHandle {
    /// Asks the VM to stop now: its vCPUs leave the guest and `run` returns
    /// [`ExitStatus::Stopped`] (or the status, if the workload reported one first) once every
    /// thread is joined. The guest is not asked first, so it cannot flush or clean up. Works
    /// before `run` starts too (then `run` stops at once); does nothing after it returned.
    pub fn stop(&self) {
        self.stop.request_stop();
    }

    /// Asks the guest to end its workload: init sends it SIGTERM (SIGKILL 10 s later) and
    /// the VM ends with the workload's status, e.g. `Exited(143)`. Needs
    /// [`MachineBuilder::shutdown_requests`](crate::MachineBuilder::shutdown_requests), else
    /// `ErrorKind::Unsupported`. A request made before the guest's init listens waits for it.
    pub fn request_shutdown(&self) -> std::io::Result<()> {
        let Some(fd) = &self.shutdown else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "the VM was built without machine.shutdown_requests(true)",
            ));
        };
        // An eventfd takes one 8-byte counter increment per write.
        std::fs::File::from(fd.try_clone()?).write_all(&1u64.to_ne_bytes())
    }

    /// Waits until `run` has returned (every thread joined, every fd closed) or the `Vm` was
    /// dropped, at most `timeout`; None if it is still going.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Outcome> {
        let deadline = Instant::now() + timeout;
        let mut slot = self
            .done
            .outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(outcome) = *slot {
                return Some(outcome);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            slot = self
                .done
                .cond
                .wait_timeout(slot, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until `run` has returned or the `Vm` was dropped.
    pub fn wait(&self) -> Outcome {
        let mut slot = self
            .done
            .outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(outcome) = *slot {
                return outcome;
            }
            slot = self
                .done
                .cond
                .wait(slot)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The outcome if the VM is over, without waiting.
    pub fn outcome(&self) -> Option<Outcome> {
        *self
            .done
            .outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A microVM ready to run, from [`VmBuilder::build`](crate::VmBuilder::build).
///
/// Dropping it without running releases everything it holds (KVM fds, guest memory,
/// devices, terminal modes).
pub struct Vm {
    inner: Option<vmm::Vm>,
    handle: VmHandle,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm").field("handle", &self.handle).finish()
    }
}

impl Vm {
    pub(crate) fn new(inner: vmm::Vm, shutdown: Option<Arc<OwnedFd>>) -> Self {
        let handle = VmHandle {
            stop: inner.stop_handle(),
            done: Arc::new(Done::default()),
            shutdown,
        };
        Vm {
            inner: Some(inner),
            handle,
        }
    }

    /// Creates a VM from a configuration assembled elsewhere, with no builder checks: what
    /// `libkrun.so.1` does with a C context (`krun_start_enter`, `krunrs_start_return`),
    /// for programs that fill a [`vmm::VmConfig`] the way the C API does. Set
    /// `config.init_binary` (e.g. to [`GUEST_INIT`](crate::GUEST_INIT)) yourself; a missing
    /// root or kernel is not refused here (the guest kernel then panics). Prefer
    /// [`VmBuilder`](crate::VmBuilder).
    pub fn from_config(config: vmm::VmConfig) -> Result<Vm, crate::BuildError> {
        let shutdown = config.shutdown_eventfd.clone();
        // AssertUnwindSafe: the config is consumed; a custom backend's state is the
        // caller's own type, which vmm::Vm::new only stores (and whose `start` it calls): a
        // panic leaves it no less consistent than the backend's own code left it.
        match catch_unwind(AssertUnwindSafe(move || vmm::Vm::new(config))) {
            Ok(Ok(vm)) => Ok(Vm::new(vm, shutdown)),
            Ok(Err(e)) => Err(crate::BuildError::Create(e)),
            Err(payload) => Err(crate::BuildError::Panicked(panic_text(&*payload))),
        }
    }

    /// What explains a run that ends without a reported status (the guest console's last
    /// lines); still readable after [`run`](Self::run) consumed the VM.
    pub fn end_report(&self) -> Option<vmm::GuestEndReport> {
        self.inner.as_ref().map(vmm::Vm::end_report)
    }

    /// A handle to stop this VM or wait for it from other threads.
    pub fn handle(&self) -> VmHandle {
        self.handle.clone()
    }

    /// Runs the guest until it ends (or a [`VmHandle`] stops it) and returns how it ended.
    ///
    /// Never exits the process. When it returns, every thread it started is joined, and
    /// every fd, mapping and terminal mode of the VM is released or restored; a panic inside
    /// the VMM comes back as [`VmError::Panicked`], and a device whose worker panicked stops
    /// the VM and comes back as [`VmError::Device`] naming it.
    pub fn run(mut self) -> Result<ExitStatus, VmError> {
        let Some(inner) = self.inner.take() else {
            // Only `run` and `drop` take it, and `run` consumes `self`.
            unreachable!("a Vm is run at most once");
        };
        let result = match catch_unwind(AssertUnwindSafe(move || inner.run_to_end())) {
            Ok(Ok(end)) => Ok(ExitStatus::from_end(end)),
            Ok(Err(vmm::VmError::DeviceFailed { device, reason })) => {
                Err(VmError::Device { device, reason })
            }
            Ok(Err(e)) => Err(VmError::Run(e)),
            Err(payload) => Err(VmError::Panicked(panic_text(&*payload))),
        };
        match &result {
            Ok(status) => {
                log::debug!("VM {status}");
                self.handle.done.set(Outcome::Ended(*status));
            }
            Err(e) => {
                log::debug!("VM failed: {e}");
                self.handle.done.set(Outcome::Failed);
            }
        }
        result
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            drop(inner);
            self.handle.done.set(Outcome::NotRun);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_code_reported_else_one() {
        assert_eq!(ExitStatus::Exited(7).code(), 7);
        assert_eq!(ExitStatus::Unreported.code(), 1);
        assert_eq!(ExitStatus::Stopped.code(), 1);
        assert!(ExitStatus::Exited(0).success());
        assert!(!ExitStatus::Stopped.success());
    }

    #[test]
    fn exit_status_reported_wins_over_stop() {
        let end = |reported, stop_requested| vmm::RunEnd {
            reported,
            stop_requested,
        };
        assert_eq!(
            ExitStatus::from_end(end(Some(3), true)),
            ExitStatus::Exited(3)
        );
        assert_eq!(ExitStatus::from_end(end(None, true)), ExitStatus::Stopped);
        assert_eq!(
            ExitStatus::from_end(end(None, false)),
            ExitStatus::Unreported
        );
    }

    #[test]
    fn done_wait_timeout_none_then_outcome() {
        let done = Arc::new(Done::default());
        let handle = VmHandle {
            stop: vmm::StopHandle::new(),
            done: done.clone(),
            shutdown: None,
        };
        assert_eq!(handle.wait_timeout(Duration::from_millis(20)), None);
        let setter = std::thread::spawn(move || done.set(Outcome::Ended(ExitStatus::Exited(4))));
        assert_eq!(
            handle.wait_timeout(Duration::from_secs(10)),
            Some(Outcome::Ended(ExitStatus::Exited(4)))
        );
        setter.join().unwrap();
        assert_eq!(handle.wait(), Outcome::Ended(ExitStatus::Exited(4)));
        let err = handle.request_shutdown().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::Unsupported);
    }
}
