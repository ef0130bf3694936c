//! The legacy 8250 UART at COM1 (I/O port 0x3f8, IRQ 4: the kernel's ttyS0), vm-superio's
//! `Serial`: `krun_add_serial_console_default`'s fds, or the debug log under
//! `KRUN_DEBUG_CMDLINE`. Output is written as the guest writes it; input is read by a thread
//! that feeds the receive FIFO as the guest drains it.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// COM1's base port and register count, and the IRQ the kernel expects for it.
pub const COM1_BASE: u16 = 0x3f8;
pub const COM1_LEN: u16 = 8;
pub const COM1_IRQ: u32 = 4;

/// The name the kernel's 8250 driver registers its platform driver and devices under: in the
/// image of every kernel built with `CONFIG_SERIAL_8250`, absent otherwise.
const DRIVER_NAME: &[u8] = b"serial8250";

/// Whether an uncompressed kernel image has the 8250 driver built in, i.e. whether the guest
/// can have a ttyS0 at all. libkrunfw's x86_64 kernel has not (its config leaves
/// `CONFIG_SERIAL_8250` unset), so a UART at COM1 is there but no guest driver binds it.
pub fn kernel_has_driver(image: &[u8]) -> bool {
    image
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == DRIVER_NAME[0])
        .any(|(i, _)| image[i..].starts_with(DRIVER_NAME))
}

/// Raises the UART's interrupt through an eventfd KVM has as an irqfd.
pub struct EventFdTrigger(EventFd);

impl Trigger for EventFdTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

type Uart = Serial<EventFdTrigger, NoEvents, Box<dyn Write + Send>>;

/// Collects UART output into lines and logs each at debug level (`KRUN_DEBUG_CMDLINE`).
#[derive(Default)]
pub struct LogLineWriter {
    line: Vec<u8>,
}

impl Write for LogLineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            if b == b'\n' || self.line.len() >= 4096 {
                self.flush()?;
            }
            if b != b'\n' && b != b'\r' {
                self.line.push(b);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.line.is_empty() {
            log::debug!("serial: {}", String::from_utf8_lossy(&self.line));
            self.line.clear();
        }
        Ok(())
    }
}

/// Output to an fd, waiting for a slow reader rather than dropping bytes; after a failure
/// (the reader went away) output is dropped with one warning.
struct FdWriter {
    file: std::fs::File,
    failed: bool,
}

impl Write for FdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.failed {
            if let Err(e) = self.file.write_all(buf) {
                log::warn!("serial: output failed, dropping further serial output: {e}");
                self.failed = true;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The UART and its input thread.
pub struct SerialDevice {
    uart: Arc<Mutex<Uart>>,
    irq_evt: EventFd,
    kill_evt: EventFd,
    input: Mutex<Option<JoinHandle<()>>>,
}

fn lock(uart: &Mutex<Uart>) -> MutexGuard<'_, Uart> {
    uart.lock().unwrap_or_else(|p| p.into_inner())
}

impl SerialDevice {
    /// A UART writing to `output_fd` and reading `input_fd` (negative: none).
    pub fn with_fds(input_fd: RawFd, output_fd: RawFd) -> io::Result<SerialDevice> {
        let out: Box<dyn Write + Send> = if output_fd >= 0 {
            Box::new(FdWriter {
                file: crate::process::dup_fd(output_fd)?.into(),
                failed: false,
            })
        } else {
            Box::new(io::sink())
        };
        let input = if input_fd >= 0 {
            Some(crate::process::dup_fd(input_fd)?)
        } else {
            None
        };
        Self::new(out, input)
    }

    /// The debug UART: output to the log, no input.
    pub fn debug_log() -> io::Result<SerialDevice> {
        Self::new(Box::new(LogLineWriter::default()), None)
    }

    fn new(out: Box<dyn Write + Send>, input: Option<OwnedFd>) -> io::Result<SerialDevice> {
        let irq_evt = EventFd::new(EFD_NONBLOCK)?;
        let uart = Arc::new(Mutex::new(Serial::new(
            EventFdTrigger(irq_evt.try_clone()?),
            out,
        )));
        let kill_evt = EventFd::new(EFD_NONBLOCK)?;
        let input = match input {
            Some(fd) => {
                let uart = uart.clone();
                let kill = kill_evt.try_clone()?;
                Some(
                    std::thread::Builder::new()
                        .name("serial-in".into())
                        .spawn(move || feed_input(&uart, fd, &kill))?,
                )
            }
            None => None,
        };
        Ok(SerialDevice {
            uart,
            irq_evt,
            kill_evt,
            input: Mutex::new(input),
        })
    }

    /// The eventfd to register as the irqfd of [`COM1_IRQ`].
    pub fn irq_evt(&self) -> &EventFd {
        &self.irq_evt
    }

    /// A guest read of register `offset`.
    pub fn read(&self, offset: u8) -> u8 {
        lock(&self.uart).read(offset)
    }

    /// A guest write of register `offset`.
    pub fn write(&self, offset: u8, value: u8) {
        if let Err(e) = lock(&self.uart).write(offset, value) {
            log::debug!("serial: write failed: {e:?}");
        }
    }

    /// Stops the input thread and flushes the output.
    pub fn shutdown(&self) {
        let handle = self.input.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            if self.kill_evt.write(1).is_ok() {
                let _ = handle.join();
            }
        }
        let _ = lock(&self.uart).writer_mut().flush();
    }
}

impl Drop for SerialDevice {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Moves input into the UART's receive FIFO as room appears (the guest reads it), so the
/// host never buffers more than one read.
fn feed_input(uart: &Mutex<Uart>, fd: OwnedFd, kill: &EventFd) {
    let mut buf = [0u8; 64];
    // SAFETY: `kill` is borrowed from the caller for this whole function.
    let kill_fd = unsafe { BorrowedFd::borrow_raw(kill.as_raw_fd()) };
    loop {
        let mut fds = [
            PollFd::new(fd.as_fd(), PollFlags::POLLIN),
            PollFd::new(kill_fd, PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::warn!("serial: cannot poll the input: {e}");
                return;
            }
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return;
        }
        let room = loop {
            let room = lock(uart).fifo_capacity();
            if room > 0 {
                break room;
            }
            // The guest has not drained the FIFO yet; the kill event still ends us.
            if kill.read().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let n = match nix::unistd::read(&fd, &mut buf[..room.min(64)]) {
            Ok(0) => return,
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
            Err(e) => {
                log::warn!("serial: input failed, no more serial input: {e}");
                return;
            }
        };
        if let Err(e) = lock(uart).enqueue_raw_bytes(&buf[..n]) {
            log::debug!("serial: input dropped: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_has_driver_finds_the_name_anywhere() {
        assert!(kernel_has_driver(b"serial8250"));
        assert!(kernel_has_driver(b"\0\0sserial8250\0"));
        assert!(!kernel_has_driver(b"serial825"));
        assert!(!kernel_has_driver(b"virtio_console ttyS%s serial_core"));
        assert!(!kernel_has_driver(b""));
    }
}
