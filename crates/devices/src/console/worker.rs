//! The console's event loop: one thread waiting on the queue notifications, the ports'
//! input fds, the terminal's resize eventfd and a kill eventfd, calling the queue work.

use std::io;
use std::os::fd::AsRawFd;
use std::thread::JoinHandle;

use log::{debug, error, warn};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::control::{self, ControlMsg, PortEvent, PORT_OPEN};
use super::device::{
    Backends, ControlQueues, PortQueues, RxStatus, Terminal, CONTROL_RX_QUEUE_INDEX,
    CONTROL_TX_QUEUE_INDEX,
};

/// How the worker reads a port's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputState {
    /// Polled and read when readable.
    Armed,
    /// Out of the epoll set until the guest adds receive buffers (or opens the port).
    Paused,
    /// Cannot be polled (a regular file): read whenever the guest has buffers.
    Unpollable,
    /// None, ended, or failed: never read again.
    Off,
}

/// Everything the worker thread takes over at activation.
pub(crate) struct WorkerSetup {
    /// The active ports' queues, in port id order (port 0 only without multiport).
    pub(crate) ports: Vec<PortQueues>,
    pub(crate) control: Option<ControlQueues>,
    /// Every configured port's host side (more than `ports` when the driver did not
    /// negotiate multiport; the extra ones stay idle).
    pub(crate) backends: Backends,
    /// Notification eventfds by queue index.
    pub(crate) evts: Vec<(u16, EventFd)>,
    pub(crate) terminal: Option<Terminal>,
}

/// The loop's state, owned by the worker thread.
struct EventLoop {
    epoll: Epoll,
    ports: Vec<PortQueues>,
    control: Option<ControlQueues>,
    backends: Backends,
    evts: Vec<(u16, EventFd)>,
    terminal: Option<Terminal>,
    kill_evt: EventFd,
    input_state: Vec<InputState>,
    /// Whether the guest has the port open (always, without multiport).
    guest_open: Vec<bool>,
}

impl EventLoop {
    const KILL: u64 = u64::MAX;
    const RESIZE: u64 = u64::MAX - 1;
    /// Port N's input is token INPUT_BASE + N; queue notifications are their index.
    const INPUT_BASE: u64 = 1 << 32;

    fn new(setup: WorkerSetup, kill_evt: EventFd) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        for (index, evt) in &setup.evts {
            epoll.ctl(
                ControlOperation::Add,
                evt.as_raw_fd(),
                EpollEvent::new(EventSet::IN, u64::from(*index)),
            )?;
        }
        epoll.ctl(
            ControlOperation::Add,
            kill_evt.as_raw_fd(),
            EpollEvent::new(EventSet::IN, Self::KILL),
        )?;
        if let Some(evt) = setup.terminal.as_ref().and_then(|t| t.resize_evt.as_ref()) {
            epoll.ctl(
                ControlOperation::Add,
                evt.as_raw_fd(),
                EpollEvent::new(EventSet::IN, Self::RESIZE),
            )?;
        }
        let count = setup.ports.len();
        let multiport = setup.control.is_some();
        let mut event_loop = Self {
            epoll,
            ports: setup.ports,
            control: setup.control,
            backends: setup.backends,
            evts: setup.evts,
            terminal: setup.terminal,
            kill_evt,
            input_state: vec![InputState::Off; count],
            guest_open: vec![!multiport; count],
        };
        for id in 0..count {
            if event_loop.backends[id].input.is_some() {
                event_loop.input_state[id] = InputState::Paused;
                if event_loop.guest_open[id] {
                    event_loop.arm_input(id);
                }
            }
        }
        Ok(event_loop)
    }

    /// Serves the queues until the kill eventfd fires, then hands the transmit queues one
    /// last pass so everything the guest queued before the VM ended reaches the outputs.
    fn run(mut self) -> (Backends, Option<Terminal>) {
        // Buffers and input may both be there already (input typed before activation).
        self.process_control();
        for id in 0..self.ports.len() {
            self.handle_input(id);
            self.process_tx(id);
        }
        let mut events = vec![EpollEvent::default(); 16];
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
                    Self::KILL => {
                        drain(&self.kill_evt);
                        kill = true;
                    }
                    Self::RESIZE => self.handle_resize(),
                    token if token >= Self::INPUT_BASE => {
                        self.handle_input((token - Self::INPUT_BASE) as usize)
                    }
                    token => self.handle_queue(token as u16),
                }
            }
            if kill {
                break 'serve;
            }
        }
        for id in 0..self.ports.len() {
            self.process_tx(id);
        }
        for port in &mut self.backends {
            port.output.flush();
        }
        (self.backends, self.terminal)
    }

    fn handle_queue(&mut self, index: u16) {
        if let Some((_, evt)) = self.evts.iter().find(|(i, _)| *i == index) {
            drain(evt);
        }
        match index {
            CONTROL_RX_QUEUE_INDEX if self.control.is_some() => {
                if let Some(control) = self.control.as_mut() {
                    control.deliver();
                }
            }
            CONTROL_TX_QUEUE_INDEX if self.control.is_some() => self.process_control(),
            _ => {
                let Some(id) = self
                    .ports
                    .iter()
                    .position(|p| p.rx_index == index || p.tx_index == index)
                else {
                    debug!("console: notification for unknown queue {index}");
                    return;
                };
                if self.ports[id].rx_index == index {
                    if self.input_state[id] == InputState::Paused && self.guest_open[id] {
                        self.arm_input(id);
                    }
                    self.handle_input(id);
                } else {
                    self.process_tx(id);
                }
            }
        }
    }

    fn process_tx(&mut self, id: usize) {
        self.ports[id].process_tx(&mut self.backends[id].output);
    }

    fn terminal_size(&self) -> (u16, u16) {
        self.terminal
            .as_ref()
            .and_then(|t| t.size.size())
            .unwrap_or((0, 0))
    }

    /// Answers the driver's control messages and starts or stops port input accordingly.
    fn process_control(&mut self) {
        let Some(control) = self.control.as_mut() else {
            return;
        };
        let msgs = control.take_driver_messages();
        if msgs.is_empty() {
            return;
        }
        let infos: Vec<_> = self.backends.iter().map(|b| b.info.clone()).collect();
        let size = self.terminal_size();
        for msg in msgs {
            let answer = control::answer(msg, &infos, size);
            if let Some(control) = self.control.as_mut() {
                for reply in answer.replies {
                    control.send(reply);
                }
            }
            match answer.event {
                Some(PortEvent::GuestOpened(id)) => self.guest_opened(id as usize),
                Some(PortEvent::GuestClosed(id)) => self.guest_closed(id as usize),
                None => {}
            }
        }
    }

    fn guest_opened(&mut self, id: usize) {
        let Some(open) = self.guest_open.get_mut(id) else {
            return;
        };
        *open = true;
        if self.input_state[id] == InputState::Paused {
            self.arm_input(id);
        }
        self.handle_input(id);
    }

    /// The guest closed the port: what it wrote before closing is already queued, so it is
    /// written out now; input stays where it is until the port is opened again (Linux
    /// discards data that reaches a closed port).
    fn guest_closed(&mut self, id: usize) {
        if id >= self.guest_open.len() {
            return;
        }
        self.process_tx(id);
        if self.backends[id].info.console {
            return;
        }
        self.guest_open[id] = false;
        if self.input_state[id] == InputState::Armed {
            self.set_input_interest(id, ControlOperation::Delete);
            self.input_state[id] = InputState::Paused;
        } else if self.input_state[id] == InputState::Unpollable {
            self.input_state[id] = InputState::Paused;
        }
    }

    fn handle_resize(&mut self) {
        if let Some(evt) = self.terminal.as_ref().and_then(|t| t.resize_evt.as_ref()) {
            drain(evt);
        }
        let (cols, rows) = self.terminal_size();
        let Some(control) = self.control.as_mut() else {
            return;
        };
        for (id, port) in self.backends.iter().enumerate() {
            if port.info.console {
                control.send(control::resize_msg(id as u32, cols, rows));
            }
        }
    }

    fn handle_input(&mut self, id: usize) {
        if !matches!(
            self.input_state.get(id),
            Some(InputState::Armed | InputState::Unpollable)
        ) || !self.guest_open[id]
        {
            return;
        }
        let Some(input) = self.backends[id].input.as_mut() else {
            return;
        };
        match self.ports[id].process_rx(input.as_mut()) {
            RxStatus::Drained => {}
            RxStatus::NoBuffers => {
                if self.input_state[id] == InputState::Armed {
                    // Readable input with nowhere to put it would wake us forever.
                    self.set_input_interest(id, ControlOperation::Delete);
                    self.input_state[id] = InputState::Paused;
                }
            }
            RxStatus::Eof => {
                if self.input_state[id] == InputState::Armed {
                    self.set_input_interest(id, ControlOperation::Delete);
                }
                self.input_state[id] = InputState::Off;
                // The host side is gone: the guest's reads end (virtio 1.2, 5.3.6.2).
                if let Some(control) = self.control.as_mut() {
                    control.send(ControlMsg::new(id as u32, PORT_OPEN, 0).to_bytes());
                }
            }
        }
    }

    /// Puts a paused input back in the epoll set; an fd epoll refuses (a regular file) is
    /// always readable, so it is read whenever the guest has buffers.
    fn arm_input(&mut self, id: usize) {
        let Some(fd) = self.backends[id].input.as_ref().map(|input| input.fd()) else {
            return;
        };
        let event = EpollEvent::new(EventSet::IN, Self::INPUT_BASE + id as u64);
        self.input_state[id] = match self.epoll.ctl(ControlOperation::Add, fd, event) {
            Ok(()) => InputState::Armed,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => InputState::Unpollable,
            Err(e) => {
                warn!("console: cannot poll the input of port {id}, no input there: {e}");
                InputState::Off
            }
        };
    }

    fn set_input_interest(&mut self, id: usize, op: ControlOperation) {
        if let Some(input) = self.backends[id].input.as_ref() {
            let event = EpollEvent::new(EventSet::IN, Self::INPUT_BASE + id as u64);
            if let Err(e) = self.epoll.ctl(op, input.fd(), event) {
                debug!("console: epoll_ctl on the input of port {id} failed: {e}");
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
    handle: Option<JoinHandle<(Backends, Option<Terminal>)>>,
}

impl Worker {
    /// Starts the "console" thread. On error the backends are dropped.
    pub(crate) fn spawn(setup: WorkerSetup) -> io::Result<Self> {
        let kill_evt = EventFd::new(EFD_NONBLOCK)?;
        let event_loop = EventLoop::new(setup, kill_evt.try_clone()?)?;
        let handle = std::thread::Builder::new()
            .name("console".into())
            .spawn(move || event_loop.run())?;
        Ok(Self {
            kill_evt,
            handle: Some(handle),
        })
    }

    /// Asks the thread to finish (it drains the transmit queues first) and joins it.
    /// Returns `None` if the thread panicked.
    pub(crate) fn stop(mut self) -> Option<(Backends, Option<Terminal>)> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Option<(Backends, Option<Terminal>)> {
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
