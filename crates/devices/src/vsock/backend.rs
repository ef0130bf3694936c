//! The host side of the muxer: how it reaches host sockets. [`VsockBackend`] opens the
//! streams a guest connects to (a `listen = false` bridge, a TSI stream connect) and the
//! listeners of `listen = true` bridges; [`HostBackend`] does it with real unix and TCP
//! sockets, the tests' fake with socketpairs it hands back to the test.
//!
//! TSI's listening and datagram sockets are opened by `tsi/` directly (their addresses and
//! options come from the guest's socket calls, one to one).

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::connection::HostStream;
use super::tsi::TsiAddr;

/// How long a TSI connect to an unreachable host may take before the guest gets the error.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A stream connect as [`VsockBackend::connect_start`] left it.
pub enum Connecting {
    /// Connected (or, for unix sockets, refused) at once.
    Done(Box<dyn HostStream>),
    /// Under way: the stream becomes writable when the connect ends, and then
    /// [`HostStream::take_error`] says whether it failed.
    InProgress(Box<dyn HostStream>),
}

/// A listening socket of a `listen = true` bridge, polled for readability by the muxer.
pub trait HostListener: Send {
    /// The fd that becomes readable when a client waits.
    fn raw_fd(&self) -> RawFd;
    /// The next waiting client, non-blocking; `Ok(None)` when there is none.
    fn accept(&mut self) -> io::Result<Option<Box<dyn HostStream>>>;
}

/// How the muxer opens host sockets. Every call runs on the device's worker, so none may
/// block for long.
pub trait VsockBackend: Send + Sync {
    /// A non-blocking stream to `addr`, connected on return (bridges: unix sockets, which
    /// connect at once or fail).
    fn connect(&self, addr: &TsiAddr) -> io::Result<Box<dyn HostStream>>;
    /// A TSI connect: starts it and returns without waiting for a remote host, so a slow or
    /// unreachable one holds up nothing else (and no thread outlives the VM waiting for it).
    /// By default the same as [`connect`](Self::connect).
    fn connect_start(&self, addr: &TsiAddr) -> io::Result<Connecting> {
        self.connect(addr).map(Connecting::Done)
    }
    /// A listener at `path` for a `listen = true` bridge; a stale socket file there is
    /// replaced.
    fn listen_unix(&self, path: &Path) -> io::Result<Box<dyn HostListener>>;
}

/// The real host: unix and TCP sockets.
#[derive(Debug, Default)]
pub struct HostBackend;

impl VsockBackend for HostBackend {
    fn connect_start(&self, addr: &TsiAddr) -> io::Result<Connecting> {
        match addr {
            TsiAddr::Inet(a) => tcp_connect_start(a),
            TsiAddr::Unix(_) => self.connect(addr).map(Connecting::Done),
        }
    }

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

/// A non-blocking TCP connect to `addr`. The kernel gives up on it after [`CONNECT_TIMEOUT`]
/// (TCP_USER_TIMEOUT bounds the SYN retries too), so the guest gets ETIMEDOUT then.
fn tcp_connect_start(addr: &SocketAddr) -> io::Result<Connecting> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::setsockopt(
        &fd,
        sockopt::TcpUserTimeout,
        &(CONNECT_TIMEOUT.as_millis() as u32),
    )?;
    let started = socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(*addr));
    let stream = Box::new(TcpStream::from(fd));
    match started {
        Ok(()) => Ok(Connecting::Done(stream)),
        Err(nix::errno::Errno::EINPROGRESS) => Ok(Connecting::InProgress(stream)),
        Err(e) => Err(e.into()),
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
