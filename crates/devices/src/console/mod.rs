//! virtio-console: the implicit console (`console=hvc0`), one port for now.
//!
//! `device` holds the virtio state machine and the queue work, `backend` the host side
//! (stdin/stdout, a file), `worker` the thread that connects them while the device is active.

mod backend;
mod device;
mod worker;

pub use backend::{
    file_output, stdin_input, stdout_output, ConsoleInput, ConsoleOutput, FdInput, FdOutput,
};
pub use device::{Console, ConsoleConfig, QUEUE_SIZE, RX_QUEUE_INDEX, TX_QUEUE_INDEX};

#[cfg(test)]
mod tests;
