//! Where console bytes come from and go to: the input and output traits and their
//! fd-backed implementations (the caller's stdin/stdout, a file).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use log::{debug, warn};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::{fstat, stat};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

/// Bytes typed into the console, delivered to the guest's receive queue.
///
/// The worker polls [`fd`](Self::fd) for readability and then calls [`read`](Self::read),
/// which must never block: the same thread serves the guest's output.
pub trait ConsoleInput: Send {
    /// The fd to poll for readability.
    fn fd(&self) -> RawFd;
    /// Reads what is available now into `buf`. `Ok(0)` is end of input (the worker stops
    /// polling); `ErrorKind::WouldBlock` means nothing is available yet.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Undoes what the input changed on the host (the terminal mode). Called when the VM
    /// ends, where `Drop` may never run because the process exits; must be idempotent.
    fn restore(&mut self) {}
}

/// Where the guest's console output goes.
pub trait ConsoleOutput: Send {
    /// Writes all of `buf`, waiting for a slow reader rather than dropping bytes.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Pushes buffered bytes to their destination.
    fn flush(&mut self) -> io::Result<()>;
}

/// Input from any pollable fd (a tty, a pipe, a socket, a regular file). When built for a
/// terminal it puts the terminal in raw mode, so keys reach the guest unprocessed, and puts
/// the saved mode back in [`restore`](ConsoleInput::restore) and on drop.
pub struct FdInput {
    fd: OwnedFd,
    saved_termios: Option<Termios>,
}

impl FdInput {
    /// Reads `fd` as it is; its terminal mode, if any, is left alone.
    pub fn new(fd: OwnedFd) -> Self {
        Self {
            fd,
            saved_termios: None,
        }
    }

    /// Reads the terminal `fd` in raw mode until restored.
    pub fn new_raw_tty(fd: OwnedFd) -> io::Result<Self> {
        let saved = tcgetattr(&fd)?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&fd, SetArg::TCSANOW, &raw)?;
        Ok(Self {
            fd,
            saved_termios: Some(saved),
        })
    }
}

impl ConsoleInput for FdInput {
    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Poll first instead of setting O_NONBLOCK: the fd may share its open file
        // description with the caller's shell, which must not inherit a non-blocking stdin.
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::ZERO)? == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(nix::unistd::read(&self.fd, buf)?)
    }

    fn restore(&mut self) {
        if let Some(saved) = self.saved_termios.take() {
            if let Err(e) = tcsetattr(&self.fd, SetArg::TCSANOW, &saved) {
                warn!("console: cannot restore the terminal mode: {e}");
            }
        }
    }
}

impl Drop for FdInput {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Output to a file or any writable fd (a dup of stdout, a pipe).
pub struct FdOutput {
    file: File,
}

impl FdOutput {
    pub fn new(fd: OwnedFd) -> Self {
        Self { file: fd.into() }
    }

    /// Waits until the fd can take more bytes; only reached when someone else made the
    /// (possibly shared) fd non-blocking.
    fn wait_writable(&self) -> io::Result<()> {
        let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLOUT)];
        poll(&mut fds, PollTimeout::NONE)?;
        Ok(())
    }
}

impl ConsoleOutput for FdOutput {
    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.file.write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_writable()?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The size of the terminal console ports follow, as (columns, rows).
pub trait WindowSize: Send {
    /// The size now; `None` when it cannot be read (the port keeps the last one).
    fn size(&self) -> Option<(u16, u16)>;
}

/// A size that never changes (0x0 when no terminal is involved, as upstream reports).
pub struct FixedSize(pub u16, pub u16);

impl WindowSize for FixedSize {
    fn size(&self) -> Option<(u16, u16)> {
        Some((self.0, self.1))
    }
}

/// The last lines a [`LogOutput`] logged, shared with whoever wants them after the fact:
/// the VMM shows them when the guest ended without reporting a status (a kernel panic, an
/// init that died), which the log's default level would otherwise hide.
#[derive(Clone, Default)]
pub struct ConsoleTail(Arc<Mutex<VecDeque<String>>>);

impl ConsoleTail {
    /// Lines kept; older ones are dropped.
    pub const LINES: usize = 20;

    fn push(&self, line: &str) {
        let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == Self::LINES {
            lines.pop_front();
        }
        lines.push_back(line.to_owned());
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        let lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        lines.iter().cloned().collect()
    }
}

/// Console output as log lines (the kernel console when no stdio fd is a terminal): one
/// info record per line under the `guest_console` target, long lines split; the last lines
/// also go to a [`ConsoleTail`].
#[derive(Default)]
pub struct LogOutput {
    line: Vec<u8>,
    tail: ConsoleTail,
}

impl LogOutput {
    /// Longest line kept before it is logged in pieces: bounds the buffer.
    const MAX_LINE: usize = 4096;

    /// Logs lines and keeps the last ones in `tail`.
    pub fn with_tail(tail: ConsoleTail) -> Self {
        Self {
            line: Vec::new(),
            tail,
        }
    }

    fn emit(&mut self) {
        if !self.line.is_empty() {
            let text = String::from_utf8_lossy(&self.line);
            let text = text.trim_end_matches('\r');
            log::info!(target: "guest_console", "{text}");
            self.tail.push(text);
            self.line.clear();
        }
    }
}

impl ConsoleOutput for LogOutput {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        for &b in buf {
            if b == b'\n' {
                self.emit();
            } else {
                self.line.push(b);
                if self.line.len() >= Self::MAX_LINE {
                    self.emit();
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogOutput {
    fn drop(&mut self) {
        self.emit();
    }
}

/// Console input that is one ^C (ETX) per signal of an eventfd: the VMM's SIGINT handler
/// writes the eventfd, the guest's tty turns the byte into SIGINT for its foreground job
/// (upstream's forwarding when stdin is not a terminal).
pub struct SigintInput {
    evt: vmm_sys_util::eventfd::EventFd,
}

impl SigintInput {
    /// Reads `evt`, which must be non-blocking.
    pub fn new(evt: vmm_sys_util::eventfd::EventFd) -> Self {
        Self { evt }
    }
}

impl ConsoleInput for SigintInput {
    fn fd(&self) -> RawFd {
        self.evt.as_raw_fd()
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.evt.read()?;
        buf[0] = 0x03;
        Ok(1)
    }
}

fn is_dev_null(fd: BorrowedFd<'_>) -> bool {
    match (fstat(fd), stat("/dev/null")) {
        (Ok(fd_stat), Ok(null_stat)) => {
            fd_stat.st_mode & libc::S_IFMT == libc::S_IFCHR && fd_stat.st_rdev == null_stat.st_rdev
        }
        _ => false,
    }
}

/// The caller's stdin as console input: `None` when stdin is closed or `/dev/null`, raw
/// mode when it is a terminal.
pub fn stdin_input() -> io::Result<Option<Box<dyn ConsoleInput>>> {
    let stdin = io::stdin();
    let fd = match nix::unistd::dup(stdin.as_fd()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::EBADF) => {
            debug!("console: stdin is closed, no console input");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    if is_dev_null(fd.as_fd()) {
        debug!("console: stdin is /dev/null, no console input");
        return Ok(None);
    }
    let input = if nix::unistd::isatty(&fd).unwrap_or(false) {
        FdInput::new_raw_tty(fd)?
    } else {
        FdInput::new(fd)
    };
    Ok(Some(Box::new(input)))
}

/// The caller's stdout as console output (a dup, so closing it never closes fd 1).
pub fn stdout_output() -> io::Result<Box<dyn ConsoleOutput>> {
    let fd = nix::unistd::dup(io::stdout().as_fd())?;
    Ok(Box::new(FdOutput::new(fd)))
}

/// A file, created or truncated, as console output (`krun_set_console_output`).
pub fn file_output(path: impl AsRef<Path>) -> io::Result<Box<dyn ConsoleOutput>> {
    let file = File::create(path)?;
    Ok(Box::new(FdOutput::new(file.into())))
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn fd_input_empty_socket_would_block() {
        let (_peer, ours) = UnixStream::pair().unwrap();
        let mut input = FdInput::new(ours.into());
        let mut buf = [0u8; 8];
        let err = input.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn fd_input_reads_available_bytes_then_eof() {
        let (mut peer, ours) = UnixStream::pair().unwrap();
        let mut input = FdInput::new(ours.into());
        peer.write_all(b"hi").unwrap();
        drop(peer);
        let mut buf = [0u8; 8];
        assert_eq!(input.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"hi");
        assert_eq!(input.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn fd_output_writes_everything() {
        let (mut peer, ours) = UnixStream::pair().unwrap();
        let mut output = FdOutput::new(ours.into());
        output.write_all(b"hello").unwrap();
        output.flush().unwrap();
        drop(output);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hello");
    }

    #[test]
    fn fd_output_non_blocking_peer_waits_instead_of_dropping() {
        let (mut peer, ours) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut output = FdOutput::new(ours.into());
        let data = vec![0x5au8; 1 << 20];
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).unwrap();
            got
        });
        output.write_all(&data).unwrap();
        drop(output);
        assert_eq!(reader.join().unwrap(), data);
    }

    #[test]
    fn file_output_truncates_and_writes() {
        let dir = std::env::temp_dir().join(format!("devices-console-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.txt");
        std::fs::write(&path, b"old contents that must go").unwrap();
        let mut output = file_output(&path).unwrap();
        output.write_all(b"new").unwrap();
        output.flush().unwrap();
        drop(output);
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn is_dev_null_detects_only_dev_null() {
        let null = File::open("/dev/null").unwrap();
        assert!(is_dev_null(null.as_fd()));
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(!is_dev_null(a.as_fd()));
    }
}

#[cfg(test)]
mod log_tail_tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_lines_without_carriage_returns() {
        let tail = ConsoleTail::default();
        let mut out = LogOutput::with_tail(tail.clone());
        for i in 0..30 {
            out.write_all(format!("line {i}\r\n").as_bytes()).unwrap();
        }
        out.write_all(b"Kernel panic - not syncing: half a line")
            .unwrap();
        drop(out);
        let lines = tail.lines();
        assert_eq!(lines.len(), ConsoleTail::LINES);
        assert_eq!(lines[0], "line 11");
        assert_eq!(lines[18], "line 29");
        assert_eq!(lines[19], "Kernel panic - not syncing: half a line");
    }
}
