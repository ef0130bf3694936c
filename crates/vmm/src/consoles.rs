//! Which ports each console gets and what their host sides are: the implicit console as
//! upstream libkrun builds it (`autoconfigure_console_ports`), `krun_add_virtio_console_*`
//! and their terminals.

use std::io;
use std::os::fd::RawFd;

use devices::console::{
    Console, ConsoleInput, ConsoleOutput, ConsoleTail, FdInput, FdOutput, FixedSize, LogOutput,
    Port, SigintInput, Terminal,
};

use crate::config::{self, ConsolePort};
use crate::terminal::{self, RawMode, SignalHandlers, TtySize};

/// A console device ready to add, the raw terminals to restore when the VM ends, and the
/// signal handlers its SIGINT forwarding and resize events need while the VM runs.
pub struct BuiltConsole {
    pub device: Console,
    pub raw_modes: Vec<RawMode>,
    pub signals: Vec<SignalHandlers>,
    /// The last lines of port 0's output when it goes to the log.
    pub log_tail: Option<ConsoleTail>,
}

/// What the consoles hold on the host side while the VM runs.
pub struct HostTerminal {
    pub raw_modes: Vec<RawMode>,
    pub signals: Vec<SignalHandlers>,
    pub console_tails: Vec<ConsoleTail>,
}

fn input(fd: RawFd) -> io::Result<Box<dyn ConsoleInput>> {
    Ok(Box::new(FdInput::new(crate::process::dup_fd(fd)?)))
}

fn output(fd: RawFd) -> io::Result<Box<dyn ConsoleOutput>> {
    Ok(Box::new(FdOutput::new(crate::process::dup_fd(fd)?)))
}

/// Whether `fd` is open (a closed stdio fd gets no port, as if it were -1).
fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only inspects the descriptor table.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0
}

/// The implicit console (stdio, or `krun_set_console_output`'s file) or a
/// `krun_add_virtio_console_default` one (`fds`).
///
/// With an output file, port 0 writes to it and reads nothing. Otherwise port 0 (hvc0) is
/// wired to the first of in/out/err that is a terminal (raw mode), its output to the log
/// when stdout is not a terminal; each of in/out/err that is not a terminal gets the port
/// `krun-stdin`/`krun-stdout`/`krun-stderr` with the bytes unchanged.
pub fn default_console(
    output_file: Option<&std::path::Path>,
    fds: (RawFd, RawFd, RawFd),
) -> io::Result<BuiltConsole> {
    if let Some(path) = output_file {
        let file = devices::console::file_output(path)?;
        let mut device = Console::new(vec![Port::console(None, Some(file))]);
        let size: Box<dyn devices::console::WindowSize> = if terminal::is_tty(0) {
            Box::new(TtySize::new(0)?)
        } else {
            Box::new(FixedSize(0, 0))
        };
        device.set_terminal(Terminal {
            size,
            resize_evt: None,
        });
        return Ok(BuiltConsole {
            device,
            raw_modes: Vec::new(),
            signals: Vec::new(),
            log_tail: None,
        });
    }
    let (in_fd, out_fd, err_fd) = fds;
    let (in_tty, out_tty, err_tty) = (
        terminal::is_tty(in_fd),
        terminal::is_tty(out_fd),
        terminal::is_tty(err_fd),
    );
    let term_fd = [(in_tty, in_fd), (out_tty, out_fd), (err_tty, err_fd)]
        .into_iter()
        .find(|(tty, _)| *tty)
        .map(|(_, fd)| fd);

    let forwarding_sigint = !in_tty;
    let mut signals = Vec::new();
    let console_input: Option<Box<dyn ConsoleInput>> = if in_tty {
        Some(input(in_fd)?)
    } else {
        let (evt, handlers) = terminal::forward_sigint()?;
        signals.push(handlers);
        Some(Box::new(SigintInput::new(evt)))
    };
    let mut log_tail = None;
    let console_output: Box<dyn ConsoleOutput> = if out_tty {
        output(out_fd)?
    } else {
        let tail = ConsoleTail::default();
        log_tail = Some(tail.clone());
        Box::new(LogOutput::with_tail(tail))
    };
    let mut raw_modes = Vec::new();
    let terminal = match term_fd {
        Some(fd) => {
            match RawMode::enable(fd, forwarding_sigint) {
                Ok(raw) => raw_modes.push(raw),
                Err(e) => log::error!("cannot put the terminal in raw mode: {e}"),
            }
            let (resize_evt, handlers) = terminal::sigwinch_evt()?;
            signals.push(handlers);
            Terminal {
                size: Box::new(TtySize::new(fd)?),
                resize_evt: Some(resize_evt),
            }
        }
        None => Terminal {
            size: Box::new(FixedSize(0, 0)),
            resize_evt: None,
        },
    };

    let mut ports = vec![Port::console(console_input, Some(console_output))];
    if is_open(in_fd) && !in_tty {
        ports.push(Port::named(contract::PORT_STDIN, Some(input(in_fd)?), None));
    }
    if is_open(out_fd) && !out_tty {
        ports.push(Port::named(
            contract::PORT_STDOUT,
            None,
            Some(output(out_fd)?),
        ));
    }
    if is_open(err_fd) && !err_tty {
        ports.push(Port::named(
            contract::PORT_STDERR,
            None,
            Some(output(err_fd)?),
        ));
    }
    log::debug!(
        "console: {} ports (stdin tty {in_tty}, stdout tty {out_tty}, stderr tty {err_tty})",
        ports.len()
    );
    let mut device = Console::new(ports);
    device.set_terminal(terminal);
    Ok(BuiltConsole {
        device,
        raw_modes,
        signals,
        log_tail,
    })
}

/// A `krun_add_virtio_console_multiport` console: its ports in the order they were added.
/// Tty ports are console ports (hvc ttys in the guest) in raw mode; in/out ports carry
/// bytes unchanged, a negative fd meaning no input or no output.
pub fn multiport_console(ports: &[ConsolePort]) -> io::Result<BuiltConsole> {
    let mut raw_modes = Vec::new();
    let mut signals = Vec::new();
    let mut terminal = None;
    let mut built = Vec::with_capacity(ports.len());
    for port in ports {
        match port {
            ConsolePort::Tty { name, fd } => {
                raw_modes.push(RawMode::enable(*fd, false)?);
                if terminal.is_none() {
                    let (resize_evt, handlers) = terminal::sigwinch_evt()?;
                    signals.push(handlers);
                    terminal = Some(Terminal {
                        size: Box::new(TtySize::new(*fd)?),
                        resize_evt: Some(resize_evt),
                    });
                }
                built.push(Port {
                    name: name.clone(),
                    console: true,
                    input: Some(input(*fd)?),
                    output: Some(output(*fd)?),
                });
            }
            ConsolePort::InOut {
                name,
                input_fd,
                output_fd,
            } => {
                let port_input = if *input_fd >= 0 {
                    Some(input(*input_fd)?)
                } else {
                    None
                };
                let port_output = if *output_fd >= 0 {
                    Some(output(*output_fd)?)
                } else {
                    None
                };
                built.push(Port::named(name.clone(), port_input, port_output));
            }
        }
    }
    let mut device = Console::new(built);
    if let Some(terminal) = terminal {
        device.set_terminal(terminal);
    }
    Ok(BuiltConsole {
        device,
        raw_modes,
        signals,
        log_tail: None,
    })
}

/// The console described by `console` (an explicit one).
pub fn explicit_console(console: &config::VirtioConsole) -> io::Result<BuiltConsole> {
    match console {
        config::VirtioConsole::Default {
            input_fd,
            output_fd,
            err_fd,
        } => default_console(None, (*input_fd, *output_fd, *err_fd)),
        config::VirtioConsole::Multiport(ports) => multiport_console(ports),
    }
}
