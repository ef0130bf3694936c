//! Consoles: the implicit virtio console, explicit virtio consoles and serial ports.

use std::path::PathBuf;

use super::{check_fd, non_empty, ConfigError, VmConfig};

/// Console settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Console {
    /// `krun_set_console_output`: guest console output goes to this file, not stdout.
    pub output: Option<PathBuf>,
    /// `krun_disable_implicit_console`.
    pub implicit_disabled: bool,
    /// `krun_set_kernel_console`: the `console=` value on the kernel command line.
    pub kernel_console: Option<String>,
    /// Explicit virtio consoles (`krun_add_virtio_console_*`), in creation order: the index
    /// is the console id the C API hands out.
    pub virtio_consoles: Vec<VirtioConsole>,
    /// Explicit legacy serial ports (`krun_add_serial_console_default`).
    pub serial_consoles: Vec<SerialConsole>,
}

/// A virtio console the caller configured explicitly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VirtioConsole {
    /// One port wired to three host fds (stdin, stdout, stderr).
    Default {
        input_fd: i32,
        output_fd: i32,
        err_fd: i32,
    },
    /// A multiport console whose ports are added one by one.
    Multiport(Vec<ConsolePort>),
}

/// A named port of a multiport virtio console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsolePort {
    Tty {
        name: String,
        fd: i32,
    },
    InOut {
        name: String,
        input_fd: i32,
        output_fd: i32,
    },
}

/// A legacy serial port (8250) wired to host fds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SerialConsole {
    pub input_fd: i32,
    pub output_fd: i32,
}

impl VmConfig {
    /// `krun_set_console_output`: may be set once.
    pub fn set_console_output(&mut self, path: PathBuf) -> Result<(), ConfigError> {
        non_empty(&path.to_string_lossy(), "console output path")?;
        if self.console.output.is_some() {
            return Err(ConfigError::ConsoleOutputSet);
        }
        self.console.output = Some(path);
        Ok(())
    }

    /// `krun_add_virtio_console_default` / `_multiport`; returns the new console's id. A
    /// negative fd of a default console means none (as upstream: no port for it).
    pub fn add_virtio_console(&mut self, console: VirtioConsole) -> Result<u32, ConfigError> {
        let id = self.console.virtio_consoles.len() as u32;
        self.console.virtio_consoles.push(console);
        Ok(id)
    }

    /// `krun_add_console_port_*`: a port on a multiport console.
    pub fn add_console_port(
        &mut self,
        console_id: u32,
        port: ConsolePort,
    ) -> Result<(), ConfigError> {
        match &port {
            ConsolePort::Tty { fd, .. } => check_fd(*fd)?,
            // A negative fd is no input (or no output), as upstream.
            ConsolePort::InOut { .. } => {}
        }
        match self.console.virtio_consoles.get_mut(console_id as usize) {
            Some(VirtioConsole::Multiport(ports)) => {
                ports.push(port);
                Ok(())
            }
            _ => Err(ConfigError::NoSuchConsole(console_id)),
        }
    }

    /// `krun_set_kernel_console`: one device name (`hvc0`, `ttyS0`), nothing else, since
    /// it becomes `console=NAME` on the kernel command line.
    pub fn set_kernel_console(&mut self, name: &str) -> Result<(), ConfigError> {
        let valid = !name.is_empty()
            && name.len() <= 32
            && !name.starts_with('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
        if !valid {
            return Err(ConfigError::KernelConsole(name.to_string()));
        }
        self.console.kernel_console = Some(name.to_string());
        Ok(())
    }

    /// `krun_add_serial_console_default`.
    pub fn add_serial_console(&mut self, serial: SerialConsole) -> Result<(), ConfigError> {
        check_fd(serial.input_fd)?;
        check_fd(serial.output_fd)?;
        self.console.serial_consoles.push(serial);
        Ok(())
    }
}
