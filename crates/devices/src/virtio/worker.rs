//! The one worker thread every device serves its queues on.
//!
//! A device hands [`Worker::spawn`] its queue notification eventfds and a [`QueueHandler`]:
//! the queue processing and the backend. The worker owns what every device needs and nobody
//! should write twice: the epoll set, the kill eventfd, draining the notification counters,
//! EINTR, and joining the thread when the device stops or is dropped. The handler never sees
//! an epoll token of the worker's own; it registers its backend fds through a [`Registry`]
//! with tokens of its choosing below [`MAX_HANDLER_TOKEN`].
//!
//! ```text
//!   guest notify ─▶ ioeventfd ─▶ epoll ─▶ handler.queue_notified(i) ─▶ used ring ─▶ irq
//!   backend fd ready ──────────▶ epoll ─▶ handler.backend_ready(token, events)
//!   Worker::stop ─▶ kill eventfd ─▶ handler.stop() (drains) ─▶ thread ends ─▶ handler back
//!   handler panics ─▶ caught on the thread ─▶ one error line ─▶ FaultSink ─▶ thread ends
//! ```
//!
//! A panic on the worker (a bug in the device, or a user's backend callback that is not
//! wrapped per request) is caught on the thread: the handler is dropped, the device serves
//! nothing more, and the [`FaultSink`] the worker was spawned with is told, so the VMM can
//! stop the VM and return an error naming the device instead of leaving the guest waiting.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{FaultSink, NoFaultSink};

/// The largest token a handler may register a backend fd under; the tokens above it are the
/// worker's own (queue notifications and the kill eventfd).
pub const MAX_HANDLER_TOKEN: u64 = (1 << 62) - 1;
const QUEUE_TOKEN_BASE: u64 = 1 << 62;
const KILL_TOKEN: u64 = u64::MAX;
/// Events taken from the kernel per wait; more ready fds are simply served on the next one.
const EVENTS_PER_WAIT: usize = 32;

/// A device's queue work, run on the worker thread.
pub trait QueueHandler: Send + 'static {
    /// Runs once on the worker thread before the first wait: register backend fds and serve
    /// what the guest queued before activation. An error ends the worker before it serves
    /// anything (logged by the worker).
    fn start(&mut self, _registry: &Registry) -> io::Result<()> {
        Ok(())
    }

    /// The driver notified queue `index` (its eventfd counter is already reset).
    fn queue_notified(&mut self, index: usize, registry: &Registry);

    /// A backend fd the handler registered under `token` is ready with `events`.
    fn backend_ready(&mut self, _token: u64, _events: EventSet, _registry: &Registry) {}

    /// How long the next wait may last, asked before every wait; `None` waits until an fd is
    /// ready. For handlers that retry later (rate limits, a backend that was full).
    fn next_timeout(&mut self) -> Option<Duration> {
        None
    }

    /// The wait `next_timeout` asked for ended with nothing ready.
    fn timed_out(&mut self, _registry: &Registry) {}

    /// The device is stopping: finish what the guest already submitted (flush output, sync
    /// files). The thread ends right after.
    fn stop(&mut self) {}
}

/// The handler's view of the worker's epoll set: its backend fds only.
pub struct Registry {
    epoll: Epoll,
}

impl Registry {
    /// Watches `fd` for `events`, reported as `token` to [`QueueHandler::backend_ready`].
    pub fn add(&self, fd: RawFd, events: EventSet, token: u64) -> io::Result<()> {
        self.ctl(ControlOperation::Add, fd, events, token)
    }

    /// Changes the events (and token) `fd` is watched for.
    pub fn modify(&self, fd: RawFd, events: EventSet, token: u64) -> io::Result<()> {
        self.ctl(ControlOperation::Modify, fd, events, token)
    }

    /// Stops watching `fd`.
    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        self.epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default())
    }

    fn ctl(&self, op: ControlOperation, fd: RawFd, events: EventSet, token: u64) -> io::Result<()> {
        if token > MAX_HANDLER_TOKEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("epoll token {token:#x} is reserved for the worker"),
            ));
        }
        self.epoll.ctl(op, fd, EpollEvent::new(events, token))
    }

    fn add_reserved(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, token),
        )
    }
}

/// A running worker thread. Stopping or dropping it asks the handler to drain, then joins.
pub struct Worker<H: QueueHandler> {
    name: String,
    kill_evt: EventFd,
    thread: Option<JoinHandle<Option<H>>>,
}

impl<H: QueueHandler> Worker<H> {
    /// Starts `handler` on a thread called `name`, woken by `queue_evts`: pairs of a queue
    /// index (what `queue_notified` receives) and the eventfd the driver's notifications of
    /// that queue write. A panic on the thread is only logged (see [`Self::spawn_reporting`]).
    pub fn spawn(
        name: impl Into<String>,
        queue_evts: Vec<(usize, EventFd)>,
        handler: H,
    ) -> io::Result<Self> {
        Self::spawn_reporting(name, queue_evts, handler, Arc::new(NoFaultSink))
    }

    /// As [`Self::spawn`]; a panic on the thread is caught, logged as one error line and
    /// reported to `faults` under the worker's name, and the thread ends.
    pub fn spawn_reporting(
        name: impl Into<String>,
        queue_evts: Vec<(usize, EventFd)>,
        handler: H,
        faults: Arc<dyn FaultSink>,
    ) -> io::Result<Self> {
        let name = name.into();
        let kill_evt = EventFd::new(EFD_NONBLOCK)?;
        let registry = Registry {
            epoll: Epoll::new()?,
        };
        registry.add_reserved(kill_evt.as_raw_fd(), KILL_TOKEN)?;
        for (index, evt) in &queue_evts {
            let token = QUEUE_TOKEN_BASE.saturating_add(*index as u64);
            registry.add_reserved(evt.as_raw_fd(), token)?;
        }
        let thread_kill_evt = kill_evt.try_clone()?;
        let thread_name = name.clone();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let event_loop = EventLoop {
                    name: thread_name.clone(),
                    registry,
                    queue_evts,
                    kill_evt: thread_kill_evt,
                    handler,
                };
                // AssertUnwindSafe: the loop and its handler are owned by this closure and
                // dropped by the unwind; nothing of theirs is used after a panic.
                match catch_unwind(AssertUnwindSafe(move || event_loop.run())) {
                    Ok(handler) => handler,
                    Err(payload) => {
                        let reason =
                            format!("the device worker panicked: {}", panic_text(&*payload));
                        log::error!("{thread_name}: {reason}; asking the VM to stop");
                        faults.device_failed(&thread_name, &reason);
                        None
                    }
                }
            })?;
        Ok(Self {
            name,
            kill_evt,
            thread: Some(thread),
        })
    }

    /// Asks the handler to finish what the guest submitted, waits for the thread and returns
    /// the handler (None when it was already stopped, the thread panicked or could not start).
    pub fn stop(&mut self) -> Option<H> {
        let thread = self.thread.take()?;
        if let Err(e) = self.kill_evt.write(1) {
            // Without the kill event the thread would never end: do not wait for it.
            log::error!("{}: cannot signal the worker to stop: {e}", self.name);
            return None;
        }
        match thread.join() {
            Ok(handler) => handler,
            Err(_) => {
                log::error!("{}: the worker thread panicked", self.name);
                None
            }
        }
    }

    /// Whether the thread still runs (false after `stop`, or when it ended on an error).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl<H: QueueHandler> Drop for Worker<H> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The message of a caught panic.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a panic without a message"
    }
}

struct EventLoop<H> {
    name: String,
    registry: Registry,
    queue_evts: Vec<(usize, EventFd)>,
    kill_evt: EventFd,
    handler: H,
}

impl<H: QueueHandler> EventLoop<H> {
    /// Serves until the kill event; returns the handler after its `stop`, or None when the
    /// worker ended on an error (already logged).
    fn run(mut self) -> Option<H> {
        if let Err(e) = self.handler.start(&self.registry) {
            log::error!("{}: the device worker could not start: {e}", self.name);
            return None;
        }
        let mut events = [EpollEvent::default(); EVENTS_PER_WAIT];
        loop {
            let timeout = self.handler.next_timeout();
            let timeout_ms = timeout.map_or(-1, |t| {
                // Round up, so a short timeout does not become a busy zero-length wait.
                i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
            });
            let count = match self.registry.epoll.wait(timeout_ms, &mut events) {
                Ok(count) => count,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("{}: epoll_wait failed, the device stops: {e}", self.name);
                    return None;
                }
            };
            if count == 0 && timeout.is_some() {
                self.handler.timed_out(&self.registry);
                continue;
            }
            for event in &events[..count] {
                match event.data() {
                    KILL_TOKEN => {
                        let _ = self.kill_evt.read();
                        self.handler.stop();
                        return Some(self.handler);
                    }
                    token if token >= QUEUE_TOKEN_BASE => self.queue_ready(token),
                    token => self
                        .handler
                        .backend_ready(token, event.event_set(), &self.registry),
                }
            }
        }
    }

    fn queue_ready(&mut self, token: u64) {
        let Some((index, evt)) = self
            .queue_evts
            .iter()
            .find(|(index, _)| QUEUE_TOKEN_BASE.saturating_add(*index as u64) == token)
        else {
            return;
        };
        // The counter only says "look at the queue": reset it, then let the handler drain.
        if let Err(e) = evt.read() {
            if e.kind() != io::ErrorKind::WouldBlock {
                log::debug!("{}: reading queue {index}'s eventfd: {e}", self.name);
            }
        }
        self.handler.queue_notified(*index, &self.registry);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;

    use super::*;

    /// Records what the worker calls, so the test can check order and arguments.
    struct Recorder {
        calls: mpsc::Sender<String>,
        stream: Option<UnixStream>,
        timeouts_left: u32,
    }

    impl QueueHandler for Recorder {
        fn start(&mut self, registry: &Registry) -> io::Result<()> {
            if let Some(s) = &self.stream {
                registry.add(s.as_raw_fd(), EventSet::IN, 7)?;
            }
            self.calls.send("start".into()).unwrap();
            Ok(())
        }
        fn queue_notified(&mut self, index: usize, _registry: &Registry) {
            self.calls.send(format!("queue {index}")).unwrap();
        }
        fn backend_ready(&mut self, token: u64, _events: EventSet, registry: &Registry) {
            let s = self.stream.take().unwrap();
            registry.remove(s.as_raw_fd()).unwrap();
            self.calls.send(format!("backend {token}")).unwrap();
        }
        fn next_timeout(&mut self) -> Option<Duration> {
            (self.timeouts_left > 0).then_some(Duration::from_millis(1))
        }
        fn timed_out(&mut self, _registry: &Registry) {
            self.timeouts_left -= 1;
            self.calls.send("timeout".into()).unwrap();
        }
        fn stop(&mut self) {
            self.calls.send("stop".into()).unwrap();
        }
    }

    fn recv(rx: &mpsc::Receiver<String>) -> String {
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    }

    #[test]
    fn serves_queues_backends_and_timeouts_then_drains_on_stop() {
        let (tx, rx) = mpsc::channel();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let q0 = EventFd::new(EFD_NONBLOCK).unwrap();
        let q3 = EventFd::new(EFD_NONBLOCK).unwrap();
        let handler = Recorder {
            calls: tx,
            stream: Some(ours),
            timeouts_left: 1,
        };
        let mut worker = Worker::spawn(
            "test-worker",
            vec![(0, q0.try_clone().unwrap()), (3, q3.try_clone().unwrap())],
            handler,
        )
        .unwrap();
        assert_eq!(recv(&rx), "start");
        assert_eq!(recv(&rx), "timeout");
        q3.write(5).unwrap();
        assert_eq!(recv(&rx), "queue 3");
        // The worker reset the counter it was woken by.
        assert_eq!(q3.read().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        q0.write(1).unwrap();
        assert_eq!(recv(&rx), "queue 0");
        std::io::Write::write_all(&mut &theirs, b"x").unwrap();
        assert_eq!(recv(&rx), "backend 7");
        let handler = worker.stop().expect("the handler comes back");
        assert!(handler.stream.is_none());
        assert_eq!(recv(&rx), "stop");
        assert!(!worker.is_running());
        assert!(worker.stop().is_none(), "a second stop is a no-op");
    }

    #[test]
    fn reserved_tokens_are_refused() {
        let registry = Registry {
            epoll: Epoll::new().unwrap(),
        };
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let err = registry
            .add(evt.as_raw_fd(), EventSet::IN, MAX_HANDLER_TOKEN + 1)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        registry
            .add(evt.as_raw_fd(), EventSet::IN, MAX_HANDLER_TOKEN)
            .unwrap();
    }

    struct FailsToStart;
    impl QueueHandler for FailsToStart {
        fn start(&mut self, _registry: &Registry) -> io::Result<()> {
            Err(io::Error::other("backend gone"))
        }
        fn queue_notified(&mut self, _index: usize, _registry: &Registry) {
            unreachable!("a worker that failed to start serves nothing");
        }
    }

    #[test]
    fn a_handler_that_fails_to_start_ends_the_thread_and_stop_returns_none() {
        let mut worker = Worker::spawn("test-fail", Vec::new(), FailsToStart).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while worker.is_running() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!worker.is_running());
        assert!(worker.stop().is_none());
    }

    /// Panics on the first notification of queue 1; serves queue 0.
    struct PanicsOnQueue1(mpsc::Sender<String>);
    impl QueueHandler for PanicsOnQueue1 {
        fn queue_notified(&mut self, index: usize, _registry: &Registry) {
            assert_ne!(index, 1, "queue 1 is broken");
            self.0.send(format!("queue {index}")).unwrap();
        }
    }

    /// Records every failure reported to it.
    #[derive(Default)]
    struct FakeFaults(std::sync::Mutex<Vec<(String, String)>>);
    impl FaultSink for FakeFaults {
        fn device_failed(&self, device: &str, reason: &str) {
            self.0.lock().unwrap().push((device.into(), reason.into()));
        }
    }

    #[test]
    fn worker_panic_is_reported_once_and_the_thread_ends() {
        let (tx, rx) = mpsc::channel();
        let faults = Arc::new(FakeFaults::default());
        let q0 = EventFd::new(EFD_NONBLOCK).unwrap();
        let q1 = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut worker = Worker::spawn_reporting(
            "test-panic",
            vec![(0, q0.try_clone().unwrap()), (1, q1.try_clone().unwrap())],
            PanicsOnQueue1(tx),
            faults.clone(),
        )
        .unwrap();
        q0.write(1).unwrap();
        assert_eq!(recv(&rx), "queue 0");
        assert!(faults.0.lock().unwrap().is_empty());
        q1.write(1).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while worker.is_running() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!worker.is_running(), "the panicking worker ended");
        let reported = faults.0.lock().unwrap().clone();
        assert_eq!(reported.len(), 1);
        assert_eq!(reported[0].0, "test-panic");
        assert!(
            reported[0].1.starts_with(
                "the device worker panicked: assertion `left != right` failed: queue 1 is broken"
            ),
            "{reported:?}"
        );
        // Joining a worker that panicked neither blocks nor panics; the handler is gone.
        assert!(worker.stop().is_none());
        assert_eq!(faults.0.lock().unwrap().len(), 1, "reported once");
    }

    #[test]
    fn dropping_the_worker_stops_and_joins_it() {
        let (tx, rx) = mpsc::channel();
        let handler = Recorder {
            calls: tx,
            stream: None,
            timeouts_left: 0,
        };
        let worker = Worker::spawn("test-drop", Vec::new(), handler).unwrap();
        assert_eq!(recv(&rx), "start");
        drop(worker);
        assert_eq!(recv(&rx), "stop");
    }
}
