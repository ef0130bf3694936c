//! The virtio-console device (virtio 1.2, section 5.3): features, config space, lifecycle,
//! and the queue work of its single port.

use std::io::{self, Write};
use std::sync::Arc;

use log::{debug, error, warn};
use virtio_queue::{Queue, QueueOwnedT, QueueT};

use super::backend::{ConsoleInput, ConsoleOutput};
use super::worker::Worker;
use crate::virtio::features::VIRTIO_F_VERSION_1;
use crate::virtio::{
    device_type, read_config_bytes, ActivateError, ActivationContext, Interrupt, VirtioDevice,
};
use crate::GuestMemory;

/// Queue indices of port 0 (virtio 1.2, section 5.3.2). With VIRTIO_CONSOLE_F_MULTIPORT,
/// control queues and further ports would follow at 2, 3, 4...
pub const RX_QUEUE_INDEX: u16 = 0;
pub const TX_QUEUE_INDEX: u16 = 1;
/// Queue size offered to the driver for both queues.
pub const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: &[u16] = &[QUEUE_SIZE, QUEUE_SIZE];
/// Bytes moved per read or write: bounds the copy buffer whatever descriptor sizes the
/// guest uses.
const CHUNK_SIZE: usize = 16 * 1024;

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

/// The console's output with the policy for failures: the first error (EPIPE when the
/// reader went away) is logged once, later output is dropped and the guest keeps running.
pub(crate) struct OutputSink {
    output: Box<dyn ConsoleOutput>,
    failed: bool,
}

impl OutputSink {
    pub(crate) fn new(output: Box<dyn ConsoleOutput>) -> Self {
        Self {
            output,
            failed: false,
        }
    }

    fn write_all(&mut self, buf: &[u8]) {
        if self.failed {
            return;
        }
        if let Err(e) = self.output.write_all(buf) {
            warn!("console: output failed, dropping further console output: {e}");
            self.failed = true;
        }
    }

    pub(crate) fn flush(&mut self) {
        if self.failed {
            return;
        }
        if let Err(e) = self.output.flush() {
            warn!("console: output flush failed, dropping further console output: {e}");
            self.failed = true;
        }
    }
}

/// What the console owns on the host side; it moves into the worker at activation and
/// comes back when the worker stops, so a reset device can be activated again.
pub(crate) struct Backends {
    pub(crate) input: Option<Box<dyn ConsoleInput>>,
    pub(crate) output: OutputSink,
}

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

/// The queues of port 0 once the driver activated the device.
pub(crate) struct PortQueues {
    pub(crate) mem: GuestMemory,
    pub(crate) rx: Queue,
    pub(crate) tx: Queue,
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
            self.signal(TX_QUEUE_INDEX);
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
            self.signal(RX_QUEUE_INDEX);
        }
        status
    }

    fn add_rx_used(&mut self, head: u16, len: u32) {
        if let Err(e) = self.rx.add_used(&self.mem, head, len) {
            error!("console: cannot return a receive buffer: {e}");
        }
    }

    fn signal(&mut self, index: u16) {
        let queue = if index == RX_QUEUE_INDEX {
            &mut self.rx
        } else {
            &mut self.tx
        };
        if !queue.needs_notification(&self.mem).unwrap_or(true) {
            return;
        }
        if let Err(e) = self.interrupt.signal_queue(index) {
            error!("console: cannot interrupt the guest: {e}");
        }
    }
}

enum State {
    Inactive(Backends),
    Active(Worker),
    /// The backends are gone: the worker died, or the VM shut down.
    Gone,
}

/// virtio-console with one port, the guest's hvc0.
///
/// Input and output are trait objects so the VMM picks the caller's stdio or a file and
/// tests pass fakes; a worker thread serves the queues while the device is active.
pub struct Console {
    config: ConsoleConfig,
    acked_features: u64,
    state: State,
}

impl Console {
    /// A console reading `input` (none: the guest sees no input) and writing `output`.
    pub fn new(input: Option<Box<dyn ConsoleInput>>, output: Box<dyn ConsoleOutput>) -> Self {
        Self {
            config: ConsoleConfig {
                cols: 0,
                rows: 0,
                max_nr_ports: 1,
            },
            acked_features: 0,
            state: State::Inactive(Backends {
                input,
                output: OutputSink::new(output),
            }),
        }
    }

    /// Records the terminal size for the config space. The guest reads it only with
    /// VIRTIO_CONSOLE_F_SIZE, which is not offered yet, so this is informational.
    pub fn set_window_size(&mut self, cols: u16, rows: u16) {
        self.config.cols = cols;
        self.config.rows = rows;
    }

    /// Stops the worker, if any, and takes the backends back.
    fn stop_worker(&mut self) {
        if let State::Active(worker) = std::mem::replace(&mut self.state, State::Gone) {
            match worker.stop() {
                Some(backends) => self.state = State::Inactive(backends),
                None => error!("console: worker panicked; console input and output lost"),
            }
        }
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        device_type::CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config.to_bytes(), offset, data);
    }

    fn activate(&mut self, mut ctx: ActivationContext) -> Result<(), ActivateError> {
        let [rx, tx] = ctx.take_queues::<{ QUEUE_SIZES.len() }>()?;
        let backends = match std::mem::replace(&mut self.state, State::Gone) {
            State::Inactive(backends) => backends,
            other => {
                self.state = other;
                return Err(ActivateError::Backend(io::Error::other(
                    "console backends unavailable (already active or lost)",
                )));
            }
        };
        let port = PortQueues {
            mem: ctx.mem,
            rx: rx.queue,
            tx: tx.queue,
            interrupt: ctx.interrupt,
        };
        let worker = Worker::spawn(port, backends, rx.notify_evt, tx.notify_evt)
            .map_err(ActivateError::Worker)?;
        self.state = State::Active(worker);
        Ok(())
    }

    fn reset(&mut self) -> bool {
        self.stop_worker();
        self.acked_features = 0;
        matches!(self.state, State::Inactive(_))
    }

    fn shutdown(&mut self) {
        self.stop_worker();
        if let State::Inactive(backends) = &mut self.state {
            backends.output.flush();
            if let Some(input) = backends.input.as_mut() {
                input.restore();
            }
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.stop_worker();
    }
}
