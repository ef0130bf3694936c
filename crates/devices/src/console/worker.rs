//! The console's event loop: one thread waiting on the queue notifications, the input fd
//! and a kill eventfd, calling the port's queue work.

use std::io;
use std::os::fd::AsRawFd;
use std::thread::JoinHandle;

use log::{debug, error, warn};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::device::{Backends, PortQueues, RxStatus};

/// How the worker reads the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputState {
    /// Polled and read when readable.
    Armed,
    /// Out of the epoll set until the guest adds receive buffers.
    Paused,
    /// Cannot be polled (a regular file): read whenever the guest has buffers.
    Unpollable,
    /// None, ended, or failed: never read again.
    Off,
}

/// The loop's state, owned by the worker thread.
struct EventLoop {
    epoll: Epoll,
    port: PortQueues,
    backends: Backends,
    rx_evt: EventFd,
    tx_evt: EventFd,
    kill_evt: EventFd,
    input_state: InputState,
}

impl EventLoop {
    const RX_QUEUE: u64 = 0;
    const TX_QUEUE: u64 = 1;
    const INPUT: u64 = 2;
    const KILL: u64 = 3;

    fn new(
        port: PortQueues,
        backends: Backends,
        rx_evt: EventFd,
        tx_evt: EventFd,
        kill_evt: EventFd,
    ) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        for (fd, token) in [
            (&rx_evt, Self::RX_QUEUE),
            (&tx_evt, Self::TX_QUEUE),
            (&kill_evt, Self::KILL),
        ] {
            epoll.ctl(
                ControlOperation::Add,
                fd.as_raw_fd(),
                EpollEvent::new(EventSet::IN, token),
            )?;
        }
        let mut event_loop = Self {
            epoll,
            port,
            backends,
            rx_evt,
            tx_evt,
            kill_evt,
            input_state: InputState::Off,
        };
        if event_loop.backends.input.is_some() {
            event_loop.input_state = InputState::Paused;
            event_loop.arm_input();
        }
        Ok(event_loop)
    }

    /// Serves the queues until the kill eventfd fires, then hands the transmit queue one
    /// last pass so everything the guest queued before the VM ended reaches the output.
    fn run(mut self) -> Backends {
        // Buffers and input may both be there already (input typed before activation).
        self.handle_input();
        self.process_tx();
        let mut events = vec![EpollEvent::default(); 8];
        'serve: loop {
            let count = match self.epoll.wait(-1, &mut events) {
                Ok(count) => count,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    error!("console: epoll failed, stopping the console: {e}");
                    break;
                }
            };
            let mut kill = false;
            for event in &events[..count] {
                match event.data() {
                    Self::RX_QUEUE => {
                        drain(&self.rx_evt);
                        if self.input_state == InputState::Paused {
                            self.arm_input();
                        }
                        self.handle_input();
                    }
                    Self::TX_QUEUE => {
                        drain(&self.tx_evt);
                        self.process_tx();
                    }
                    Self::INPUT => self.handle_input(),
                    Self::KILL => {
                        drain(&self.kill_evt);
                        kill = true;
                    }
                    other => debug!("console: spurious epoll event {other}"),
                }
            }
            if kill {
                break 'serve;
            }
        }
        self.process_tx();
        self.backends.output.flush();
        self.backends
    }

    fn process_tx(&mut self) {
        self.port.process_tx(&mut self.backends.output);
    }

    fn handle_input(&mut self) {
        if !matches!(self.input_state, InputState::Armed | InputState::Unpollable) {
            return;
        }
        let Some(input) = self.backends.input.as_mut() else {
            return;
        };
        match self.port.process_rx(input.as_mut()) {
            RxStatus::Drained => {}
            RxStatus::NoBuffers => {
                if self.input_state == InputState::Armed {
                    // Readable input with nowhere to put it would wake us forever.
                    self.set_input_interest(ControlOperation::Delete);
                    self.input_state = InputState::Paused;
                }
            }
            RxStatus::Eof => {
                if self.input_state == InputState::Armed {
                    self.set_input_interest(ControlOperation::Delete);
                }
                self.input_state = InputState::Off;
            }
        }
    }

    /// Puts a paused input back in the epoll set; an fd epoll refuses (a regular file) is
    /// always readable, so it is read whenever the guest has buffers.
    fn arm_input(&mut self) {
        let Some(fd) = self.backends.input.as_ref().map(|input| input.fd()) else {
            return;
        };
        let event = EpollEvent::new(EventSet::IN, Self::INPUT);
        self.input_state = match self.epoll.ctl(ControlOperation::Add, fd, event) {
            Ok(()) => InputState::Armed,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => InputState::Unpollable,
            Err(e) => {
                warn!("console: cannot poll the input, no console input: {e}");
                InputState::Off
            }
        };
    }

    fn set_input_interest(&mut self, op: ControlOperation) {
        if let Some(input) = self.backends.input.as_ref() {
            let event = EpollEvent::new(EventSet::IN, Self::INPUT);
            if let Err(e) = self.epoll.ctl(op, input.fd(), event) {
                debug!("console: epoll_ctl on the input failed: {e}");
            }
        }
    }
}

/// Clears a notification eventfd; a spurious wakeup leaves it empty, which is fine.
fn drain(evt: &EventFd) {
    let _ = evt.read();
}

/// The running worker thread; stopping it returns the backends.
pub(crate) struct Worker {
    kill_evt: EventFd,
    handle: Option<JoinHandle<Backends>>,
}

impl Worker {
    /// Starts the "console0" thread serving `port`. On error the backends are dropped.
    pub(crate) fn spawn(
        port: PortQueues,
        backends: Backends,
        rx_evt: EventFd,
        tx_evt: EventFd,
    ) -> io::Result<Self> {
        let kill_evt = EventFd::new(EFD_NONBLOCK)?;
        let event_loop = EventLoop::new(port, backends, rx_evt, tx_evt, kill_evt.try_clone()?)?;
        let handle = std::thread::Builder::new()
            .name("console0".into())
            .spawn(move || event_loop.run())?;
        Ok(Self {
            kill_evt,
            handle: Some(handle),
        })
    }

    /// Asks the thread to finish (it drains the transmit queue first) and joins it.
    /// Returns `None` if the thread panicked.
    pub(crate) fn stop(mut self) -> Option<Backends> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Option<Backends> {
        let handle = self.handle.take()?;
        if let Err(e) = self.kill_evt.write(1) {
            // Without the kill event the join below would hang forever.
            error!("console: cannot stop the worker: {e}");
            return None;
        }
        handle.join().ok()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
