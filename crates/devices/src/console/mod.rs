//! virtio-console: the implicit console (hvc0 plus the named `krun-stdin`/`krun-stdout`/
//! `krun-stderr` ports) and explicit multiport consoles.
//!
//! `device` holds the virtio state machine and the queue work, `control` the multiport
//! control protocol, `backend` the host side (fds, files, the log), `worker` the thread that
//! connects them while the device is active.

mod backend;
mod control;
mod device;
mod worker;

pub use backend::{
    file_output, stdin_input, stdout_output, ConsoleInput, ConsoleOutput, ConsoleTail, FdInput,
    FdOutput, FixedSize, LogOutput, SigintInput, WindowSize,
};
pub use device::{
    port_queue_indices, Console, ConsoleConfig, Port, Terminal, MAX_PORTS, QUEUE_SIZE,
    RX_QUEUE_INDEX, TX_QUEUE_INDEX, VIRTIO_CONSOLE_F_MULTIPORT, VIRTIO_CONSOLE_F_SIZE,
};

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
