//! The host side of the muxer: how it reaches host sockets. [`VsockBackend`] opens the
//! streams a guest connects to (a `listen = false` bridge, a TSI stream connect) and the
//! listeners of `listen = true` bridges; [`HostBackend`] does it with real unix and TCP
//! sockets, the tests' fake with socketpairs it hands back to the test.
//!
//! TSI's listening and datagram sockets are opened by `tsi/` directly (their addresses and
//! options come from the guest's socket calls, one to one).

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::connection::HostStream;
use super::tsi::TsiAddr;

/// How long a TSI connect to an unreachable host may take before the guest gets the error.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A listening socket of a `listen = true` bridge, polled for readability by the muxer.
pub trait HostListener: Send {
    /// The fd that becomes readable when a client waits.
    fn raw_fd(&self) -> RawFd;
    /// The next waiting client, non-blocking; `Ok(None)` when there is none.
    fn accept(&mut self) -> io::Result<Option<Box<dyn HostStream>>>;
}

/// How the muxer opens host sockets. Shared with the threads that run TSI connects, so the
/// methods take `&self`.
pub trait VsockBackend: Send + Sync {
    /// A non-blocking stream to `addr`. May block for up to [`CONNECT_TIMEOUT`]: TSI calls it
    /// on a thread of its own, bridges (unix sockets, immediate) on the worker.
    fn connect(&self, addr: &TsiAddr) -> io::Result<Box<dyn HostStream>>;
    /// A listener at `path` for a `listen = true` bridge; a stale socket file there is
    /// replaced.
    fn listen_unix(&self, path: &Path) -> io::Result<Box<dyn HostListener>>;
}

/// The real host: unix and TCP sockets.
#[derive(Debug, Default)]
pub struct HostBackend;

impl VsockBackend for HostBackend {
    fn connect(&self, addr: &TsiAddr) -> io::Result<Box<dyn HostStream>> {
        Ok(match addr {
            TsiAddr::Inet(a) => {
                let s = TcpStream::connect_timeout(a, CONNECT_TIMEOUT)?;
                s.set_nonblocking(true)?;
                Box::new(s)
            }
            TsiAddr::Unix(p) => {
                let s = UnixStream::connect(p)?;
                s.set_nonblocking(true)?;
                Box::new(s)
            }
        })
    }

    fn listen_unix(&self, path: &Path) -> io::Result<Box<dyn HostListener>> {
        // A stale socket file from an earlier run would make bind fail.
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        Ok(Box::new(BridgeListener {
            listener,
            path: path.to_owned(),
        }))
    }
}

/// A bound unix listener; its socket file is removed when it is dropped.
struct BridgeListener {
    listener: UnixListener,
    path: PathBuf,
}

impl HostListener for BridgeListener {
    fn raw_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    fn accept(&mut self) -> io::Result<Option<Box<dyn HostStream>>> {
        match self.listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(true)?;
                Ok(Some(Box::new(stream)))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Drop for BridgeListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
