//! The host side of each virtio-net interface, built at VM start: connects the unix
//! sockets (paths) or takes a copy of the caller's connected socket (fds), opens taps, and
//! maps the legacy `krun_set_passt_fd` / `krun_set_gvproxy_path` interface as upstream
//! does (a unix stream fd; a unix datagram path with vfkit's magic).

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use devices::net::{self, NetBackend, NetConfig, VFKIT_MAGIC};
use nix::sys::socket::{getsockopt, sockopt, SockType};

use crate::config::{self, NetBackend as Endpoint, NET_FLAG_VFKIT};
use crate::tap;

/// Why an interface's host side could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NicError {
    #[error("cannot connect to {}", config::Shown(&.0.to_string_lossy()))]
    Connect(PathBuf, #[source] io::Error),
    #[error("cannot bind the local datagram socket {}", config::Shown(&.0.to_string_lossy()))]
    Bind(PathBuf, #[source] io::Error),
    #[error("cannot send the vfkit magic to {}", config::Shown(&.0.to_string_lossy()))]
    VfkitMagic(PathBuf, #[source] io::Error),
    #[error("cannot use socket fd {0}")]
    Fd(RawFd, #[source] io::Error),
    #[error("cannot open the tap {0:?}")]
    Tap(String, #[source] io::Error),
    #[error("cannot start the custom network backend")]
    Custom(#[source] io::Error),
}

impl NicError {
    /// The OS error behind the failure.
    pub fn io(&self) -> &io::Error {
        match self {
            NicError::Connect(_, e)
            | NicError::Bind(_, e)
            | NicError::VfkitMagic(_, e)
            | NicError::Fd(_, e)
            | NicError::Tap(_, e)
            | NicError::Custom(e) => e,
        }
    }
}

/// The device configuration of interface number `index` (eth`index` in the guest).
pub fn build(index: usize, nic: &config::Net) -> Result<NetConfig, NicError> {
    let backend: Box<dyn NetBackend> = match &nic.backend {
        Endpoint::UnixStream { path: Some(p), .. } => Box::new(stream(connect_stream(p)?)?),
        Endpoint::UnixStream { fd: Some(fd), .. } | Endpoint::Passt { fd } => {
            let sock = UnixStream::from(socket_copy(*fd, SockType::Stream)?);
            Box::new(stream(sock)?)
        }
        Endpoint::UnixGram { path: Some(p), .. } => {
            let vfkit = nic.flags & NET_FLAG_VFKIT != 0;
            Box::new(connect_gram(p, vfkit)?)
        }
        Endpoint::Gvproxy { path } => Box::new(connect_gram(path, true)?),
        Endpoint::UnixGram { fd: Some(fd), .. } => {
            let sock = UnixDatagram::from(socket_copy(*fd, SockType::Datagram)?);
            Box::new(net::UnixGram::new(sock, None).map_err(|e| NicError::Fd(*fd, e))?)
        }
        Endpoint::Tap { name } => {
            let opened = tap::open(name).map_err(|e| NicError::Tap(name.clone(), e))?;
            Box::new(net::Tap::new(
                opened.file,
                opened.offloads,
                Box::new(tap::Offloads),
            ))
        }
        Endpoint::Custom(custom) => {
            let peer = custom.take().ok_or_else(|| {
                NicError::Custom(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "the peer already serves another VM's interface",
                ))
            })?;
            Box::new(net::Custom::new(peer).map_err(NicError::Custom)?)
        }
        // The config setters admit exactly one of path and fd.
        Endpoint::UnixStream { .. } | Endpoint::UnixGram { .. } => {
            return Err(NicError::Fd(-1, io::Error::from_raw_os_error(libc::EINVAL)))
        }
    };
    Ok(NetConfig {
        id: format!("net{index}"),
        mac: nic.mac,
        offloads: u64::from(nic.features),
        backend,
    })
}

fn stream(sock: UnixStream) -> Result<net::UnixStream, NicError> {
    net::UnixStream::new(sock).map_err(|e| NicError::Fd(-1, e))
}

/// A copy of the caller's socket `fd`, checked to be a socket of type `want` (ENOTSOCK for
/// a file, EPROTOTYPE for a socket of the other type).
fn socket_copy(fd: RawFd, want: SockType) -> Result<OwnedFd, NicError> {
    // SAFETY: borrowed only for the dup call; an invalid fd fails with EBADF.
    let owned = nix::unistd::dup(unsafe { BorrowedFd::borrow_raw(fd) })
        .map_err(|e| NicError::Fd(fd, e.into()))?;
    let kind = getsockopt(&owned, sockopt::SockType).map_err(|e| NicError::Fd(fd, e.into()))?;
    if kind != want {
        return Err(NicError::Fd(
            fd,
            io::Error::from_raw_os_error(libc::EPROTOTYPE),
        ));
    }
    Ok(owned)
}

fn connect_stream(path: &Path) -> Result<UnixStream, NicError> {
    UnixStream::connect(path).map_err(|e| NicError::Connect(path.to_path_buf(), e))
}

/// Local datagram sockets get distinct names within the process.
static LOCAL_SOCKETS: AtomicU32 = AtomicU32::new(0);

/// A datagram socket bound to a fresh local path (the peer needs an address to answer
/// to, so it stays until the backend ends) and connected to `path`; with `vfkit`, the
/// magic is its first datagram.
fn connect_gram(path: &Path, vfkit: bool) -> Result<net::UnixGram, NicError> {
    let local = std::env::temp_dir().join(format!(
        "krun-net-{}-{}.sock",
        std::process::id(),
        LOCAL_SOCKETS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&local);
    let sock = UnixDatagram::bind(&local).map_err(|e| NicError::Bind(local.clone(), e))?;
    // From here on the backend removes the local file when it ends.
    let backend = net::UnixGram::new(
        sock.try_clone().map_err(|e| NicError::Fd(-1, e))?,
        Some(local),
    )
    .map_err(|e| NicError::Fd(-1, e))?;
    sock.connect(path)
        .map_err(|e| NicError::Connect(path.to_path_buf(), e))?;
    if vfkit {
        // Non-blocking now, but the socket's queue is empty: the first send goes out.
        sock.send(&VFKIT_MAGIC)
            .map_err(|e| NicError::VfkitMagic(path.to_path_buf(), e))?;
    }
    Ok(backend)
}

/// The `KRUN_NET=` word telling init which interfaces to bring up and which to configure
/// by DHCP; None without interfaces.
pub fn cmdline_word(nics: &[config::Net]) -> Option<String> {
    if nics.is_empty() {
        return None;
    }
    let items: Vec<contract::nics::Nic> = nics
        .iter()
        .map(|n| contract::nics::Nic {
            mac: n.mac,
            dhcp: n.flags & config::NET_FLAG_DHCP_CLIENT != 0,
        })
        .collect();
    Some(format!(
        "{}={}",
        contract::keys::NET,
        contract::nics::format(&items)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(backend: Endpoint, flags: u32) -> config::Net {
        config::Net {
            backend,
            mac: [2, 0, 0, 0, 0, 7],
            features: 0,
            flags,
        }
    }

    #[test]
    fn cmdline_word_lists_every_nic_with_its_dhcp_flag() {
        let nics = [
            nic(
                Endpoint::Tap { name: "t0".into() },
                config::NET_FLAG_DHCP_CLIENT,
            ),
            nic(Endpoint::Passt { fd: 3 }, 0),
        ];
        assert_eq!(
            cmdline_word(&nics).as_deref(),
            Some("KRUN_NET=020000000007+dhcp,020000000007")
        );
        assert_eq!(cmdline_word(&[]), None);
    }

    #[test]
    fn build_fd_that_is_not_a_socket_enotsock_and_wrong_type_eprototype() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let err = build(0, &nic(Endpoint::Passt { fd }, 0)).err().unwrap();
        assert_eq!(err.io().raw_os_error(), Some(libc::ENOTSOCK));
        let (a, _b) = UnixDatagram::pair().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&a);
        let err = build(
            0,
            &nic(
                Endpoint::UnixStream {
                    path: None,
                    fd: Some(fd),
                },
                0,
            ),
        )
        .err()
        .unwrap();
        assert_eq!(err.io().raw_os_error(), Some(libc::EPROTOTYPE));
    }

    #[test]
    fn build_custom_starts_the_peer_once_and_refuses_a_second_vm() {
        struct Peer(std::sync::Arc<std::sync::atomic::AtomicUsize>);
        impl devices::net::FrameBackend for Peer {
            fn start(&mut self, _: devices::net::FrameSender) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
            fn receive(&mut self, _: &[u8]) {}
        }
        let starts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let custom = config::CustomNet::new(Box::new(Peer(starts.clone())));
        let nic = nic(Endpoint::Custom(custom), 0);
        let cfg = build(0, &nic).unwrap();
        assert_eq!(cfg.id, "net0");
        assert_eq!(starts.load(Ordering::Relaxed), 1);
        let err = build(0, &nic).err().unwrap();
        assert!(matches!(err, NicError::Custom(_)), "{err}");
        assert_eq!(err.io().kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn build_unconnectable_path_keeps_the_connect_errno() {
        let path = std::env::temp_dir().join(format!("krun-no-such-{}.sock", std::process::id()));
        for backend in [
            Endpoint::UnixStream {
                path: Some(path.clone()),
                fd: None,
            },
            Endpoint::UnixGram {
                path: Some(path.clone()),
                fd: None,
            },
        ] {
            let err = build(0, &nic(backend, 0)).err().unwrap();
            assert!(matches!(err, NicError::Connect(..)), "{err}");
            assert_eq!(err.io().raw_os_error(), Some(libc::ENOENT));
        }
    }

    #[test]
    fn build_unixgram_path_sends_the_vfkit_magic_first() {
        let dir = std::env::temp_dir().join(format!("krun-nics-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let peer_path = dir.join("peer.sock");
        let _ = std::fs::remove_file(&peer_path);
        let peer = UnixDatagram::bind(&peer_path).unwrap();
        let cfg = build(
            1,
            &nic(
                Endpoint::UnixGram {
                    path: Some(peer_path.clone()),
                    fd: None,
                },
                NET_FLAG_VFKIT,
            ),
        )
        .unwrap();
        assert_eq!(cfg.id, "net1");
        let mut buf = [0u8; 16];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"VFKT");
        let local = from.as_pathname().unwrap().to_path_buf();
        assert!(
            local.exists(),
            "the local socket stays while the backend lives"
        );
        drop(cfg);
        assert!(!local.exists(), "and goes with it");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
