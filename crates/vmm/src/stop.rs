//! `StopHandle`: asks a running [`Vm`](crate::Vm) to stop from another thread.
//!
//! The request does not go through the guest: `Vm::run` is waiting for the first vCPU to
//! report the end of the VM, and a request is one more message on that channel, after which
//! `run` stops and joins the vCPUs and the devices exactly as when the guest ends by itself.
//! A request made before `run` starts is kept and honoured as soon as it starts; one made
//! after `run` returned does nothing.
//!
//! The same channel carries a device's failure ([`StopHandle::fault_sink`]): a device worker
//! that panicked reports itself, `run` stops the VM the same way and returns
//! `VmError::DeviceFailed` naming the device.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, PoisonError};

use devices::virtio::FaultSink;

use crate::vcpu::VcpuEnd;

/// What `Vm::run`'s wait loop receives: a vCPU's end, a stop request, or a device failure.
#[derive(Debug)]
pub(crate) enum RunEvent {
    Vcpu(u8, VcpuEnd),
    StopRequested,
    DeviceFailed,
}

/// A device that failed while the VM ran: its name and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DeviceFault {
    pub device: String,
    pub reason: String,
}

struct State {
    requested: AtomicBool,
    /// Set while `run` waits; None before it starts and after it has stopped waiting.
    waiter: Mutex<Option<Sender<RunEvent>>>,
    /// The first device failure; later ones are only logged (by their worker).
    fault: Mutex<Option<DeviceFault>>,
}

impl State {
    fn send(&self, event: RunEvent) {
        let waiter = self.waiter.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = waiter.as_ref() {
            // The receiver is gone only after `run` stopped waiting: nothing left to stop.
            let _ = tx.send(event);
        }
    }
}

/// The [`FaultSink`] the VM's devices report to: records the failure, stops the VM.
struct Faults(Arc<State>);

impl FaultSink for Faults {
    fn device_failed(&self, device: &str, reason: &str) {
        {
            let mut fault = self.0.fault.lock().unwrap_or_else(PoisonError::into_inner);
            if fault.is_some() {
                return;
            }
            *fault = Some(DeviceFault {
                device: device.to_string(),
                reason: reason.to_string(),
            });
        }
        self.0.send(RunEvent::DeviceFailed);
    }
}

/// A cloneable, `Send + Sync` handle that asks one VM to stop.
#[derive(Clone)]
pub struct StopHandle(Arc<State>);

impl std::fmt::Debug for StopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopHandle")
            .field("requested", &self.requested())
            .finish()
    }
}

impl Default for StopHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl StopHandle {
    /// A handle of no VM yet: `Vm::new` makes the one `Vm::stop_handle` returns.
    pub fn new() -> Self {
        StopHandle(Arc::new(State {
            requested: AtomicBool::new(false),
            waiter: Mutex::new(None),
            fault: Mutex::new(None),
        }))
    }

    /// Asks the VM to stop: its vCPUs are kicked out of the guest and `Vm::run` returns
    /// (the guest gets no chance to flush anything). Idempotent; never blocks on the VM.
    pub fn request_stop(&self) {
        self.0.requested.store(true, Ordering::SeqCst);
        self.0.send(RunEvent::StopRequested);
    }

    /// The sink this VM's devices report a fatal failure to: it stops the VM as
    /// [`Self::request_stop`] does, and `run` then returns the failure.
    pub(crate) fn fault_sink(&self) -> Arc<dyn FaultSink> {
        Arc::new(Faults(self.0.clone()))
    }

    /// The first device failure reported, if any (taken: reported once).
    pub(crate) fn take_fault(&self) -> Option<DeviceFault> {
        self.0
            .fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Whether a stop was requested (before or while the VM ran).
    pub fn requested(&self) -> bool {
        self.0.requested.load(Ordering::SeqCst)
    }

    /// `run` starts waiting on `tx`; a request made earlier is delivered at once.
    pub(crate) fn attach(&self, tx: Sender<RunEvent>) {
        let mut waiter = self.0.waiter.lock().unwrap_or_else(PoisonError::into_inner);
        if self.requested() {
            let _ = tx.send(RunEvent::StopRequested);
        }
        let failed = self
            .0
            .fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if failed {
            let _ = tx.send(RunEvent::DeviceFailed);
        }
        *waiter = Some(tx);
    }

    /// `run` no longer waits: later requests are no-ops, and the channel can close.
    pub(crate) fn detach(&self) {
        self.0
            .waiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn request_before_attach_delivered_on_attach() {
        let stop = StopHandle::new();
        stop.request_stop();
        let (tx, rx) = mpsc::channel();
        stop.attach(tx);
        assert!(matches!(rx.try_recv(), Ok(RunEvent::StopRequested)));
    }

    #[test]
    fn request_while_attached_reaches_waiter() {
        let stop = StopHandle::new();
        let (tx, rx) = mpsc::channel();
        stop.attach(tx);
        assert!(rx.try_recv().is_err());
        stop.clone().request_stop();
        assert!(matches!(rx.try_recv(), Ok(RunEvent::StopRequested)));
        assert!(stop.requested());
    }

    #[test]
    fn device_failure_stops_the_run_and_is_kept_once() {
        let stop = StopHandle::new();
        let (tx, rx) = mpsc::channel();
        stop.attach(tx);
        let sink = stop.fault_sink();
        sink.device_failed("net0", "the device worker panicked: boom");
        sink.device_failed("fs-root", "a second failure");
        assert!(matches!(rx.try_recv(), Ok(RunEvent::DeviceFailed)));
        assert!(
            rx.try_recv().is_err(),
            "only the first failure stops the run"
        );
        assert!(!stop.requested(), "a failure is not a stop request");
        assert_eq!(
            stop.take_fault(),
            Some(DeviceFault {
                device: "net0".into(),
                reason: "the device worker panicked: boom".into(),
            })
        );
        assert_eq!(stop.take_fault(), None);
    }

    #[test]
    fn device_failure_before_attach_delivered_on_attach() {
        let stop = StopHandle::new();
        stop.fault_sink().device_failed("rng0", "broken");
        let (tx, rx) = mpsc::channel();
        stop.attach(tx);
        assert!(matches!(rx.try_recv(), Ok(RunEvent::DeviceFailed)));
    }

    #[test]
    fn request_after_detach_closes_channel_and_is_noop() {
        let stop = StopHandle::new();
        let (tx, rx) = mpsc::channel::<RunEvent>();
        stop.attach(tx);
        stop.detach();
        stop.request_stop();
        assert!(matches!(
            rx.try_recv(),
            Err(mpsc::TryRecvError::Disconnected)
        ));
    }
}
