//! The virtio-console device (virtio 1.2, section 5.3): features, config space, lifecycle,
//! and the queue work of its ports and control queues.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::Arc;

use log::{debug, error, warn};
use virtio_queue::{Queue, QueueOwnedT, QueueT};

use vmm_sys_util::eventfd::EventFd;

use super::backend::{ConsoleInput, ConsoleOutput, WindowSize};
use super::control::{ControlMsg, PortInfo, CONTROL_MSG_LEN, MAX_PENDING};
use super::worker::{ConsoleHandler, WorkerSetup};
use crate::virtio::features::VIRTIO_F_VERSION_1;
use crate::virtio::{
    device_type, read_config_bytes, ActivateError, ActivationContext, DeviceState, Interrupt,
    VirtioDevice, Worker,
};
use crate::GuestMemory;

/// Queue indices of port 0 (virtio 1.2, section 5.3.2); with VIRTIO_CONSOLE_F_MULTIPORT the
/// control queues follow at 2 and 3, then port N's receive and transmit queues at 2N+2, 2N+3.
pub const RX_QUEUE_INDEX: u16 = 0;
pub const TX_QUEUE_INDEX: u16 = 1;
pub const CONTROL_RX_QUEUE_INDEX: u16 = 2;
pub const CONTROL_TX_QUEUE_INDEX: u16 = 3;
/// Queue size offered to the driver for every queue. Upstream offers 32, which would keep
/// the guest's page buffers on the receive queues (~5 MiB of guest memory for four ports at
/// 256) smaller; but with 32, a guest writing 200 short lines to a port filled the transmit
/// queue and the lab froze on it twice in a row (e2e `console_many_runs`), where 256 never
/// did. Kept at 256 until that is understood.
pub const QUEUE_SIZE: u16 = 256;
/// Bytes moved per read or write: bounds the copy buffer whatever descriptor sizes the
/// guest uses.
const CHUNK_SIZE: usize = 16 * 1024;
/// Device features (virtio 1.2, section 5.3.3); virtio-bindings has no virtio_console.
pub const VIRTIO_CONSOLE_F_SIZE: u64 = 1 << 0;
pub const VIRTIO_CONSOLE_F_MULTIPORT: u64 = 1 << 1;
/// Ports one device may have: the driver allocates two queues per port.
pub const MAX_PORTS: usize = 31;

/// The receive and transmit queue indices of port `id` with multiport.
pub fn port_queue_indices(id: usize) -> (u16, u16) {
    if id == 0 {
        (RX_QUEUE_INDEX, TX_QUEUE_INDEX)
    } else {
        let rx = 2 * id as u16 + 2;
        (rx, rx + 1)
    }
}

/// Configuration space (virtio 1.2, section 5.3.4): cols, rows, max_nr_ports, emerg_wr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsoleConfig {
    pub cols: u16,
    pub rows: u16,
    pub max_nr_ports: u32,
}

impl ConsoleConfig {
    fn to_bytes(self) -> [u8; 12] {
        let mut bytes = [0u8; 12];
        bytes[0..2].copy_from_slice(&self.cols.to_le_bytes());
        bytes[2..4].copy_from_slice(&self.rows.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.max_nr_ports.to_le_bytes());
        // emerg_wr (8..12) is write-only and reads as zero.
        bytes
    }
}

/// A port's output with the policy for failures: the first error (EPIPE when the reader
/// went away) is logged once, later output is dropped and the guest keeps running. A port
/// without output (input only) discards what the guest writes.
pub(crate) struct OutputSink {
    output: Option<Box<dyn ConsoleOutput>>,
    failed: bool,
}

impl OutputSink {
    pub(crate) fn new(output: Box<dyn ConsoleOutput>) -> Self {
        Self {
            output: Some(output),
            failed: false,
        }
    }

    pub(crate) fn discard() -> Self {
        Self {
            output: None,
            failed: false,
        }
    }

    fn write_all(&mut self, buf: &[u8]) {
        let Some(output) = self.output.as_mut().filter(|_| !self.failed) else {
            return;
        };
        if let Err(e) = output.write_all(buf) {
            warn!("console: output failed, dropping further console output: {e}");
            self.failed = true;
        }
    }

    pub(crate) fn flush(&mut self) {
        let Some(output) = self.output.as_mut().filter(|_| !self.failed) else {
            return;
        };
        if let Err(e) = output.flush() {
            warn!("console: output flush failed, dropping further console output: {e}");
            self.failed = true;
        }
    }
}

/// What the console owns on the host side; it moves into the worker at activation and
/// comes back when the worker stops, so a reset device can be activated again.
pub(crate) struct PortBackend {
    pub(crate) info: PortInfo,
    pub(crate) input: Option<Box<dyn ConsoleInput>>,
    pub(crate) output: OutputSink,
}

/// Every port's host side, in port id order.
pub(crate) type Backends = Vec<PortBackend>;

/// Why [`PortQueues::process_rx`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RxStatus {
    /// The input has nothing more right now.
    Drained,
    /// The guest has no receive buffers left; input waits for the next rx notification.
    NoBuffers,
    /// The input ended (or failed); it will not be read again.
    Eof,
}

/// The queues of one port once the driver activated the device.
pub(crate) struct PortQueues {
    pub(crate) mem: GuestMemory,
    pub(crate) rx: Queue,
    pub(crate) tx: Queue,
    /// The queues' indices, for interrupts.
    pub(crate) rx_index: u16,
    pub(crate) tx_index: u16,
    pub(crate) interrupt: Arc<dyn Interrupt>,
}

impl PortQueues {
    /// Writes every chain the guest queued on the transmit queue to `output`, returns them
    /// used, and interrupts once if any were used. Returns the number of chains used.
    pub(crate) fn process_tx(&mut self, output: &mut OutputSink) -> usize {
        let mut used = 0;
        let mut buf = vec![0u8; CHUNK_SIZE];
        while let Some(chain) = self.tx.pop_descriptor_chain(&self.mem) {
            let head = chain.head_index();
            match chain.reader(&self.mem) {
                Ok(mut reader) => loop {
                    match io::Read::read(&mut reader, &mut buf) {
                        Ok(0) => break,
                        Ok(n) => output.write_all(&buf[..n]),
                        Err(e) => {
                            debug!("console: bad transmit buffer: {e}");
                            break;
                        }
                    }
                },
                Err(e) => debug!("console: bad transmit chain: {e}"),
            }
            if let Err(e) = self.tx.add_used(&self.mem, head, 0) {
                error!("console: cannot return a transmit buffer: {e}");
            }
            used += 1;
        }
        if used > 0 {
            output.flush();
            self.signal(self.tx_index);
        }
        used
    }

    /// Moves what `input` has available into the guest's receive buffers, one read per
    /// buffer, until the input has nothing more or the guest has no buffers left.
    pub(crate) fn process_rx(&mut self, input: &mut dyn ConsoleInput) -> RxStatus {
        let mut used = false;
        let mut buf = vec![0u8; CHUNK_SIZE];
        let status = loop {
            let Some(chain) = self.rx.pop_descriptor_chain(&self.mem) else {
                break RxStatus::NoBuffers;
            };
            let head = chain.head_index();
            let mut writer = match chain.writer(&self.mem) {
                Ok(writer) if writer.available_bytes() > 0 => writer,
                Ok(_) | Err(_) => {
                    debug!("console: unusable receive buffer returned empty");
                    self.add_rx_used(head, 0);
                    used = true;
                    continue;
                }
            };
            let len = writer.available_bytes().min(CHUNK_SIZE);
            match input.read(&mut buf[..len]) {
                Ok(0) => {
                    self.rx.go_to_previous_position();
                    debug!("console: input reached end of file");
                    break RxStatus::Eof;
                }
                Ok(n) => {
                    // n <= available_bytes, so the writer takes all of it.
                    let written = match writer.write_all(&buf[..n]) {
                        Ok(()) => n,
                        Err(e) => {
                            debug!("console: bad receive buffer: {e}");
                            writer.bytes_written()
                        }
                    };
                    self.add_rx_used(head, written as u32);
                    used = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.rx.go_to_previous_position();
                    break RxStatus::Drained;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    self.rx.go_to_previous_position();
                }
                Err(e) => {
                    self.rx.go_to_previous_position();
                    warn!("console: input failed, no more console input: {e}");
                    break RxStatus::Eof;
                }
            }
        };
        if used {
            self.signal(self.rx_index);
        }
        status
    }

    fn add_rx_used(&mut self, head: u16, len: u32) {
        if let Err(e) = self.rx.add_used(&self.mem, head, len) {
            error!("console: cannot return a receive buffer: {e}");
        }
    }

    fn signal(&mut self, index: u16) {
        let queue = if index == self.rx_index {
            &mut self.rx
        } else {
            &mut self.tx
        };
        crate::virtio::signal_used(queue, &self.mem, self.interrupt.as_ref(), index, "console");
    }
}

/// The control queues (multiport only): driver messages in, device messages out.
pub(crate) struct ControlQueues {
    pub(crate) mem: GuestMemory,
    /// Device to driver.
    pub(crate) rx: Queue,
    /// Driver to device.
    pub(crate) tx: Queue,
    pub(crate) interrupt: Arc<dyn Interrupt>,
    /// Messages waiting for a control receive buffer, bounded by [`MAX_PENDING`].
    pending: VecDeque<Vec<u8>>,
}

impl ControlQueues {
    pub(crate) fn new(
        mem: GuestMemory,
        rx: Queue,
        tx: Queue,
        interrupt: Arc<dyn Interrupt>,
    ) -> Self {
        Self {
            mem,
            rx,
            tx,
            interrupt,
            pending: VecDeque::new(),
        }
    }

    /// Takes every message the driver queued; short or unreadable ones are dropped.
    pub(crate) fn take_driver_messages(&mut self) -> Vec<ControlMsg> {
        let mut msgs = Vec::new();
        let mut used = false;
        while let Some(chain) = self.tx.pop_descriptor_chain(&self.mem) {
            let head = chain.head_index();
            let mut buf = [0u8; CONTROL_MSG_LEN];
            match chain.reader(&self.mem) {
                Ok(mut reader) => match io::Read::read_exact(&mut reader, &mut buf) {
                    Ok(()) => msgs.extend(ControlMsg::parse(&buf)),
                    Err(e) => debug!("console: short control message: {e}"),
                },
                Err(e) => debug!("console: bad control chain: {e}"),
            }
            if let Err(e) = self.tx.add_used(&self.mem, head, 0) {
                error!("console: cannot return a control buffer: {e}");
            }
            used = true;
        }
        if used {
            self.signal(CONTROL_TX_QUEUE_INDEX);
        }
        msgs
    }

    /// Queues `msg` for the driver and delivers what fits in its buffers.
    pub(crate) fn send(&mut self, msg: Vec<u8>) {
        if self.pending.len() >= MAX_PENDING {
            debug!("console: driver is not reading control messages; dropping one");
        } else {
            self.pending.push_back(msg);
        }
        self.deliver();
    }

    /// Moves pending messages into the driver's control receive buffers, one per buffer.
    pub(crate) fn deliver(&mut self) {
        let mut used = false;
        while let Some(msg) = self.pending.front() {
            let Some(chain) = self.rx.pop_descriptor_chain(&self.mem) else {
                break;
            };
            let head = chain.head_index();
            let len = match chain.writer(&self.mem) {
                Ok(mut writer) if writer.available_bytes() >= msg.len() => {
                    match writer.write_all(msg) {
                        Ok(()) => msg.len() as u32,
                        Err(e) => {
                            debug!("console: cannot write a control message: {e}");
                            0
                        }
                    }
                }
                Ok(_) | Err(_) => {
                    debug!("console: control receive buffer too small, message dropped");
                    0
                }
            };
            self.pending.pop_front();
            if let Err(e) = self.rx.add_used(&self.mem, head, len) {
                error!("console: cannot return a control buffer: {e}");
            }
            used = true;
        }
        if used {
            self.signal(CONTROL_RX_QUEUE_INDEX);
        }
    }

    fn signal(&mut self, index: u16) {
        let queue = if index == CONTROL_RX_QUEUE_INDEX {
            &mut self.rx
        } else {
            &mut self.tx
        };
        crate::virtio::signal_used(queue, &self.mem, self.interrupt.as_ref(), index, "console");
    }
}

/// One port as the VMM describes it: a name (empty: unnamed), whether it is a console port
/// (an hvc tty in the guest, port 0 of the implicit console), and its host side.
pub struct Port {
    pub name: String,
    pub console: bool,
    pub input: Option<Box<dyn ConsoleInput>>,
    pub output: Option<Box<dyn ConsoleOutput>>,
}

impl Port {
    /// The console port: the kernel's hvc0 when it is port 0.
    pub fn console(
        input: Option<Box<dyn ConsoleInput>>,
        output: Option<Box<dyn ConsoleOutput>>,
    ) -> Self {
        Self {
            name: String::new(),
            console: true,
            input,
            output,
        }
    }

    /// A named generic port (`/dev/vportNpM` in the guest).
    pub fn named(
        name: impl Into<String>,
        input: Option<Box<dyn ConsoleInput>>,
        output: Option<Box<dyn ConsoleOutput>>,
    ) -> Self {
        Self {
            name: name.into(),
            console: false,
            input,
            output,
        }
    }
}

/// virtio-console with one or more ports (VIRTIO_CONSOLE_F_MULTIPORT): port 0 is usually
/// the console (hvc0), named ports carry bytes unchanged.
///
/// Inputs and outputs are trait objects so the VMM picks the caller's stdio, a file or a
/// socket and tests pass fakes; a worker thread serves the queues while the device is active.
pub struct Console {
    config: ConsoleConfig,
    queue_sizes: Vec<u16>,
    acked_features: u64,
    terminal: Option<Terminal>,
    /// The ports' host side while the device is inactive (the worker owns it while active);
    /// None once lost (the worker died).
    backends: Option<Backends>,
    state: DeviceState<Worker<ConsoleHandler>>,
}

/// The terminal the console ports follow: its size now, and an eventfd signalled when it
/// changes (SIGWINCH).
pub struct Terminal {
    pub size: Box<dyn WindowSize>,
    pub resize_evt: Option<EventFd>,
}

impl Console {
    /// A console with `ports` (at least one, at most [`MAX_PORTS`]; more are dropped with
    /// a warning).
    pub fn new(mut ports: Vec<Port>) -> Self {
        if ports.len() > MAX_PORTS {
            warn!(
                "console: {} ports configured, only {MAX_PORTS} are supported; ignoring the rest",
                ports.len()
            );
            ports.truncate(MAX_PORTS);
        }
        if ports.is_empty() {
            ports.push(Port::named("", None, None));
        }
        let backends: Backends = ports
            .into_iter()
            .map(|port| PortBackend {
                info: PortInfo {
                    name: port.name,
                    console: port.console,
                },
                input: port.input,
                output: port
                    .output
                    .map_or_else(OutputSink::discard, OutputSink::new),
            })
            .collect();
        let queue_count = 2 * (backends.len() + 1);
        Self {
            config: ConsoleConfig {
                cols: 0,
                rows: 0,
                max_nr_ports: backends.len() as u32,
            },
            queue_sizes: vec![QUEUE_SIZE; queue_count],
            acked_features: 0,
            terminal: None,
            backends: Some(backends),
            state: DeviceState::Inactive,
        }
    }

    /// The single-port console of old: port 0 only, the console.
    pub fn single(input: Option<Box<dyn ConsoleInput>>, output: Box<dyn ConsoleOutput>) -> Self {
        Self::new(vec![Port::console(input, Some(output))])
    }

    /// Console ports follow `terminal`'s size (config space without multiport, RESIZE
    /// messages with it).
    pub fn set_terminal(&mut self, terminal: Terminal) {
        if let Some((cols, rows)) = terminal.size.size() {
            self.config.cols = cols;
            self.config.rows = rows;
        }
        self.terminal = Some(terminal);
    }

    /// Records a fixed terminal size for the config space.
    pub fn set_window_size(&mut self, cols: u16, rows: u16) {
        self.config.cols = cols;
        self.config.rows = rows;
    }

    /// Stops the worker, if any, and takes the backends back.
    fn stop_worker(&mut self) {
        if let Some(mut worker) = self.state.take_active() {
            match worker.stop() {
                Some(handler) => {
                    let (backends, terminal) = handler.into_backends();
                    self.terminal = terminal;
                    self.backends = Some(backends);
                }
                None => {
                    error!("console: worker failed; console input and output lost");
                    self.state = DeviceState::Failed;
                }
            }
        }
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        device_type::CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_CONSOLE_F_SIZE | VIRTIO_CONSOLE_F_MULTIPORT
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config.to_bytes(), offset, data);
    }

    fn activate(&mut self, ctx: ActivationContext) -> Result<(), ActivateError> {
        let multiport = ctx.acked_features & VIRTIO_CONSOLE_F_MULTIPORT != 0;
        let need = if multiport { self.queue_sizes.len() } else { 2 };
        if ctx.queues.len() != need {
            return Err(ActivateError::QueueCount {
                need,
                got: ctx.queues.len(),
            });
        }
        let backends = match (&self.state, self.backends.take()) {
            (DeviceState::Inactive, Some(backends)) => backends,
            (_, backends) => {
                self.backends = backends;
                return Err(ActivateError::Backend(io::Error::other(
                    "console backends unavailable (already active or lost)",
                )));
            }
        };
        let (mem, interrupt) = (ctx.mem, ctx.interrupt);
        let mut queues = ctx.queues.into_iter().map(Some).collect::<Vec<_>>();
        let mut take = |index: u16| {
            queues[usize::from(index)]
                .take()
                .expect("each queue index is taken once and exists (checked above)")
        };
        let port_count = if multiport { backends.len() } else { 1 };
        let mut ports = Vec::with_capacity(port_count);
        let mut evts = Vec::new();
        for id in 0..port_count {
            let (rx_index, tx_index) = port_queue_indices(id);
            let (rx, tx) = (take(rx_index), take(tx_index));
            evts.push((rx_index, rx.notify_evt));
            evts.push((tx_index, tx.notify_evt));
            ports.push(PortQueues {
                mem: mem.clone(),
                rx: rx.queue,
                tx: tx.queue,
                rx_index,
                tx_index,
                interrupt: interrupt.clone(),
            });
        }
        let control = if multiport {
            let (rx, tx) = (take(CONTROL_RX_QUEUE_INDEX), take(CONTROL_TX_QUEUE_INDEX));
            evts.push((CONTROL_RX_QUEUE_INDEX, rx.notify_evt));
            evts.push((CONTROL_TX_QUEUE_INDEX, tx.notify_evt));
            Some(ControlQueues::new(mem, rx.queue, tx.queue, interrupt))
        } else {
            None
        };
        let handler = ConsoleHandler::new(WorkerSetup {
            ports,
            control,
            backends,
            terminal: self.terminal.take(),
        });
        let evts = evts
            .into_iter()
            .map(|(i, evt)| (usize::from(i), evt))
            .collect();
        self.state
            .start_worker("console", evts, handler, ctx.faults)
    }

    fn reset(&mut self) -> bool {
        self.stop_worker();
        self.acked_features = 0;
        self.backends.is_some()
    }

    fn shutdown(&mut self) {
        self.stop_worker();
        if let Some(backends) = &mut self.backends {
            for port in backends.iter_mut() {
                port.output.flush();
                if let Some(input) = port.input.as_mut() {
                    input.restore();
                }
            }
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.stop_worker();
    }
}
