//! The console's queue work on the shared worker: queue notifications, the ports' input
//! fds and the terminal's resize eventfd, connected to the ports and the control queues.

use std::io;
use std::os::fd::AsRawFd;

use log::{debug, warn};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::control::{self, ControlMsg, PortEvent, PORT_OPEN};
use super::device::{
    Backends, ControlQueues, PortQueues, RxStatus, Terminal, CONTROL_RX_QUEUE_INDEX,
    CONTROL_TX_QUEUE_INDEX,
};
use crate::virtio::{QueueHandler, Registry};

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
    pub(crate) terminal: Option<Terminal>,
}

/// The console's state on the worker thread.
pub(crate) struct ConsoleHandler {
    ports: Vec<PortQueues>,
    control: Option<ControlQueues>,
    backends: Backends,
    terminal: Option<Terminal>,
    input_state: Vec<InputState>,
    /// Whether the guest has the port open (always, without multiport).
    guest_open: Vec<bool>,
}

/// Epoll token of the terminal's resize eventfd; port N's input is `INPUT_BASE + N`.
const RESIZE: u64 = 0;
const INPUT_BASE: u64 = 1;

impl ConsoleHandler {
    pub(crate) fn new(setup: WorkerSetup) -> Self {
        let count = setup.ports.len();
        let multiport = setup.control.is_some();
        Self {
            ports: setup.ports,
            control: setup.control,
            backends: setup.backends,
            terminal: setup.terminal,
            input_state: vec![InputState::Off; count],
            guest_open: vec![!multiport; count],
        }
    }

    /// The host side back, after the worker stopped.
    pub(crate) fn into_backends(self) -> (Backends, Option<Terminal>) {
        (self.backends, self.terminal)
    }
}

impl QueueHandler for ConsoleHandler {
    fn start(&mut self, registry: &Registry) -> io::Result<()> {
        if let Some(evt) = self.terminal.as_ref().and_then(|t| t.resize_evt.as_ref()) {
            registry.add(evt.as_raw_fd(), EventSet::IN, RESIZE)?;
        }
        for id in 0..self.ports.len() {
            if self.backends[id].input.is_some() {
                self.input_state[id] = InputState::Paused;
                if self.guest_open[id] {
                    self.arm_input(id, registry);
                }
            }
        }
        // Buffers and input may both be there already (input typed before activation).
        self.process_control(registry);
        for id in 0..self.ports.len() {
            self.handle_input(id, registry);
            self.process_tx(id);
        }
        Ok(())
    }

    fn queue_notified(&mut self, index: usize, registry: &Registry) {
        match u16::try_from(index) {
            Ok(index) => self.handle_queue(index, registry),
            Err(_) => debug!("console: notification for unknown queue {index}"),
        }
    }

    fn backend_ready(&mut self, token: u64, _events: EventSet, registry: &Registry) {
        match token {
            RESIZE => self.handle_resize(),
            token => self.handle_input((token - INPUT_BASE) as usize, registry),
        }
    }

    /// One last pass over the transmit queues, so everything the guest queued before the VM
    /// ended reaches the outputs.
    fn stop(&mut self) {
        for id in 0..self.ports.len() {
            self.process_tx(id);
        }
        for port in &mut self.backends {
            port.output.flush();
        }
    }
}

impl ConsoleHandler {
    fn handle_queue(&mut self, index: u16, registry: &Registry) {
        match index {
            CONTROL_RX_QUEUE_INDEX if self.control.is_some() => {
                if let Some(control) = self.control.as_mut() {
                    control.deliver();
                }
            }
            CONTROL_TX_QUEUE_INDEX if self.control.is_some() => self.process_control(registry),
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
                        self.arm_input(id, registry);
                    }
                    self.handle_input(id, registry);
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
    fn process_control(&mut self, registry: &Registry) {
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
                Some(PortEvent::GuestOpened(id)) => self.guest_opened(id as usize, registry),
                Some(PortEvent::GuestClosed(id)) => self.guest_closed(id as usize, registry),
                None => {}
            }
        }
    }

    fn guest_opened(&mut self, id: usize, registry: &Registry) {
        let Some(open) = self.guest_open.get_mut(id) else {
            return;
        };
        *open = true;
        if self.input_state[id] == InputState::Paused {
            self.arm_input(id, registry);
        }
        self.handle_input(id, registry);
    }

    /// The guest closed the port: what it wrote before closing is already queued, so it is
    /// written out now; input stays where it is until the port is opened again (Linux
    /// discards data that reaches a closed port).
    fn guest_closed(&mut self, id: usize, registry: &Registry) {
        if id >= self.guest_open.len() {
            return;
        }
        self.process_tx(id);
        if self.backends[id].info.console {
            return;
        }
        self.guest_open[id] = false;
        if self.input_state[id] == InputState::Armed {
            self.unwatch_input(id, registry);
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

    fn handle_input(&mut self, id: usize, registry: &Registry) {
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
                    self.unwatch_input(id, registry);
                    self.input_state[id] = InputState::Paused;
                }
            }
            RxStatus::Eof => {
                if self.input_state[id] == InputState::Armed {
                    self.unwatch_input(id, registry);
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
    fn arm_input(&mut self, id: usize, registry: &Registry) {
        let Some(fd) = self.backends[id].input.as_ref().map(|input| input.fd()) else {
            return;
        };
        self.input_state[id] = match registry.add(fd, EventSet::IN, INPUT_BASE + id as u64) {
            Ok(()) => InputState::Armed,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => InputState::Unpollable,
            Err(e) => {
                warn!("console: cannot poll the input of port {id}, no input there: {e}");
                InputState::Off
            }
        };
    }

    fn unwatch_input(&mut self, id: usize, registry: &Registry) {
        if let Some(input) = self.backends[id].input.as_ref() {
            if let Err(e) = registry.remove(input.fd()) {
                debug!("console: epoll_ctl on the input of port {id} failed: {e}");
            }
        }
    }
}

/// Clears a notification eventfd; a spurious wakeup leaves it empty, which is fine.
fn drain(evt: &EventFd) {
    let _ = evt.read();
}
