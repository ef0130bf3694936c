//! Where a virtio-net device's frames go on the host: the [`NetBackend`] trait and its
//! implementations. Every backend is non-blocking: a read that has nothing returns
//! `WouldBlock`, a send the host side cannot take right now returns [`Sent::Full`] and the
//! worker waits for the fd to become writable.
//!
//! - [`UnixStream`]: passt's qemu protocol, each frame preceded by its length as a 32-bit
//!   big-endian number; partial reads and writes are carried over between calls.
//! - [`UnixGram`]: one frame per datagram (gvproxy, vfkit-style proxies).
//! - [`Tap`]: a tap opened with `IFF_VNET_HDR` (by crates/vmm): every frame carries the
//!   12-byte virtio-net header, so offloads pass through both ways.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use nix::sys::socket::{recv, send, MsgFlags};

use super::features;

/// Length of `struct virtio_net_hdr_v1` (virtio 1.2, 5.1.6): flags, gso_type, hdr_len,
/// gso_size, csum_start, csum_offset, num_buffers.
pub const VNET_HDR_LEN: usize = 12;
/// The largest frame (without virtio-net header) any backend moves: a 64 KiB IP packet
/// behind an Ethernet header with a VLAN tag. Longer frames are dropped, never buffered.
pub const MAX_FRAME_LEN: usize = 65_535 + 14 + 4;
/// The bytes a vfkit-protocol client sends first on its datagram socket (gvproxy's
/// `--listen-vfkit` waits for them before it talks to the VM).
pub const VFKIT_MAGIC: [u8; 4] = *b"VFKT";

/// What a send did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The backend took the whole frame (perhaps to finish writing it later, see
    /// [`NetBackend::flush`]).
    Done,
    /// The backend is full and took nothing: send the same frame again once its fd is
    /// writable.
    Full,
}

/// A host endpoint of a virtio-net interface.
///
/// Lifecycle: built by crates/vmm (sockets connected, tap opened), handed to the device,
/// told the negotiated offloads at activation ([`NetBackend::set_offloads`]), then used
/// from the device's worker thread only. Returned to the device on reset.
pub trait NetBackend: Send {
    /// The fd the worker polls for readable / writable.
    fn fd(&self) -> RawFd;

    /// Whether frames cross this backend with the virtio-net header in front (tap); the
    /// others carry bare Ethernet frames.
    fn has_vnet_hdr(&self) -> bool {
        false
    }

    /// The offload feature bits (see [`features::OFFLOADS`]) this backend can honour.
    fn supported_offloads(&self) -> u64;

    /// The driver accepted `features`: configure the host side to match (a tap's
    /// TUNSETOFFLOAD). The default has nothing to configure.
    fn set_offloads(&mut self, _features: u64) -> io::Result<()> {
        Ok(())
    }

    /// Reads one frame into `buf` (with the header first if [`Self::has_vnet_hdr`]).
    /// Ok(0): the peer is gone for good. `WouldBlock`: nothing to read now. A frame that
    /// does not fit `buf` is dropped by the backend and reading goes on.
    fn recv_frame(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Sends one frame (with the header first if [`Self::has_vnet_hdr`]).
    fn send_frame(&mut self, frame: &[u8]) -> io::Result<Sent>;

    /// Whether an accepted frame is still partly unwritten (then the worker polls for
    /// writable and calls [`Self::flush`]).
    fn has_pending_write(&self) -> bool {
        false
    }

    /// Writes what is left of a partly written frame; Ok(true) when nothing is left.
    fn flush(&mut self) -> io::Result<bool> {
        Ok(true)
    }
}

/// Socket backends move bare frames: the device fills in checksums the guest left to it
/// (CSUM) and never hands them segmentation work, and the guest may receive frames as
/// large as the peer sends (the GUEST_* bits only promise the guest can take them).
const SOCKET_OFFLOADS: u64 = features::CSUM
    | features::GUEST_CSUM
    | features::GUEST_TSO4
    | features::GUEST_TSO6
    | features::GUEST_UFO;

fn would_block(e: nix::Error) -> bool {
    e == nix::Error::EAGAIN || e == nix::Error::EWOULDBLOCK
}

/// passt's protocol over a connected unix stream socket.
pub struct UnixStream {
    sock: std::os::unix::net::UnixStream,
    /// Bytes read but not yet handed out: `rbuf[rstart..rend]`.
    rbuf: Box<[u8]>,
    rstart: usize,
    rend: usize,
    /// Bytes of an oversized frame still to be skipped.
    skip: usize,
    /// The unwritten tail of the frame being sent: `wbuf[wstart..]`.
    wbuf: Vec<u8>,
    wstart: usize,
}

/// Stream read buffer: room for one whole largest frame with its length, and then some
/// so that many small frames arrive per read.
const STREAM_RBUF_LEN: usize = 4 + MAX_FRAME_LEN + 64 * 1024;

impl UnixStream {
    /// Takes a connected socket; switches it to non-blocking.
    pub fn new(sock: std::os::unix::net::UnixStream) -> io::Result<Self> {
        sock.set_nonblocking(true)?;
        Ok(UnixStream {
            sock,
            rbuf: vec![0; STREAM_RBUF_LEN].into_boxed_slice(),
            rstart: 0,
            rend: 0,
            skip: 0,
            wbuf: Vec::with_capacity(4 + MAX_FRAME_LEN),
            wstart: 0,
        })
    }

    /// A whole frame at the front of the read buffer, if there is one: (start, len).
    fn buffered_frame(&mut self) -> Option<(usize, usize)> {
        loop {
            let have = self.rend - self.rstart;
            if self.skip > 0 {
                let n = self.skip.min(have);
                self.skip -= n;
                self.rstart += n;
                if self.skip > 0 {
                    return None;
                }
                continue;
            }
            if have < 4 {
                return None;
            }
            let len_bytes: [u8; 4] = self.rbuf[self.rstart..self.rstart + 4]
                .try_into()
                .unwrap_or_default();
            let len = u32::from_be_bytes(len_bytes) as usize;
            if len > MAX_FRAME_LEN {
                log::debug!("unixstream: skipping a {len}-byte frame (longest {MAX_FRAME_LEN})");
                self.rstart += 4;
                self.skip = len;
                continue;
            }
            if have < 4 + len {
                return None;
            }
            let start = self.rstart + 4;
            self.rstart = start + len;
            return Some((start, len));
        }
    }
}

impl NetBackend for UnixStream {
    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn supported_offloads(&self) -> u64 {
        SOCKET_OFFLOADS
    }

    fn recv_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((start, len)) = self.buffered_frame() {
                if len == 0 {
                    continue;
                }
                if len > buf.len() {
                    log::debug!("unixstream: dropping a {len}-byte frame");
                    continue;
                }
                buf[..len].copy_from_slice(&self.rbuf[start..start + len]);
                return Ok(len);
            }
            // Keep the partial frame, move it to the front, read more behind it.
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
            match (&self.sock).read(&mut self.rbuf[self.rend..]) {
                Ok(0) => return Ok(0),
                Ok(n) => self.rend += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn send_frame(&mut self, frame: &[u8]) -> io::Result<Sent> {
        if self.has_pending_write() && !self.flush()? {
            return Ok(Sent::Full);
        }
        let len = u32::try_from(frame.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too long"))?;
        self.wbuf.clear();
        self.wbuf.extend_from_slice(&len.to_be_bytes());
        self.wbuf.extend_from_slice(frame);
        self.wstart = 0;
        match self.flush() {
            Ok(_) => Ok(Sent::Done),
            // Nothing of it went out yet: the caller may keep it instead.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Sent::Done),
            Err(e) => Err(e),
        }
    }

    fn has_pending_write(&self) -> bool {
        self.wstart < self.wbuf.len()
    }

    fn flush(&mut self) -> io::Result<bool> {
        while self.wstart < self.wbuf.len() {
            // MSG_NOSIGNAL: a peer that went away is an EPIPE here, not a SIGPIPE that
            // would kill the host process (crun included).
            match send(
                self.sock.as_raw_fd(),
                &self.wbuf[self.wstart..],
                MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => self.wstart += n,
                Err(nix::Error::EINTR) => {}
                Err(e) if would_block(e) => return Ok(false),
                Err(e) => {
                    self.wbuf.clear();
                    self.wstart = 0;
                    return Err(e.into());
                }
            }
        }
        Ok(true)
    }
}

/// One frame per datagram over a connected unix datagram socket.
pub struct UnixGram {
    sock: std::os::unix::net::UnixDatagram,
    /// The path the socket is bound to, removed when the backend is dropped (the peer
    /// sends to it, so it must exist while the interface does).
    local_path: Option<std::path::PathBuf>,
}

impl UnixGram {
    /// Takes a connected socket; switches it to non-blocking. `local_path` is the file
    /// it is bound to, if the backend should remove it when it ends.
    pub fn new(
        sock: std::os::unix::net::UnixDatagram,
        local_path: Option<std::path::PathBuf>,
    ) -> io::Result<Self> {
        sock.set_nonblocking(true)?;
        Ok(UnixGram { sock, local_path })
    }
}

impl Drop for UnixGram {
    fn drop(&mut self) {
        if let Some(path) = &self.local_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl NetBackend for UnixGram {
    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn supported_offloads(&self) -> u64 {
        SOCKET_OFFLOADS
    }

    fn recv_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // MSG_TRUNC: the datagram's real length, so a frame longer than `buf` is seen
            // (and dropped) instead of delivered cut short.
            match recv(self.sock.as_raw_fd(), buf, MsgFlags::MSG_TRUNC) {
                Ok(0) => continue,
                Ok(n) if n > buf.len() => {
                    log::debug!("unixgram: dropping a {n}-byte datagram");
                }
                Ok(n) => return Ok(n),
                Err(nix::Error::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn send_frame(&mut self, frame: &[u8]) -> io::Result<Sent> {
        loop {
            match send(self.sock.as_raw_fd(), frame, MsgFlags::MSG_NOSIGNAL) {
                Ok(_) => return Ok(Sent::Done),
                Err(nix::Error::EINTR) => {}
                // A full peer queue: EAGAIN, or ENOBUFS on some kernels.
                Err(e) if would_block(e) || e == nix::Error::ENOBUFS => return Ok(Sent::Full),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Sets a tap's offloads (TUNSETOFFLOAD); implemented by crates/vmm, which owns the ioctl.
pub trait TapOffloads: Send {
    /// Configures the tap for the negotiated virtio-net `features`.
    fn set(&self, tap: &File, features: u64) -> io::Result<()>;
}

/// A tap opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and a 12-byte vnet header size.
pub struct Tap {
    file: File,
    offloads: u64,
    control: Box<dyn TapOffloads>,
}

impl Tap {
    /// `file` is the open, non-blocking tap; `offloads` the feature bits it can honour
    /// (crates/vmm probed which TUNSETOFFLOAD flags the kernel takes).
    pub fn new(file: File, offloads: u64, control: Box<dyn TapOffloads>) -> Self {
        Tap {
            file,
            offloads,
            control,
        }
    }
}

impl NetBackend for Tap {
    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn has_vnet_hdr(&self) -> bool {
        true
    }

    fn supported_offloads(&self) -> u64 {
        self.offloads
    }

    fn set_offloads(&mut self, features: u64) -> io::Result<()> {
        self.control.set(&self.file, features)
    }

    fn recv_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.file.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    fn send_frame(&mut self, frame: &[u8]) -> io::Result<Sent> {
        loop {
            match self.file.write(frame) {
                Ok(_) => return Ok(Sent::Done),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Sent::Full),
                Err(e) => return Err(e),
            }
        }
    }
}

/// A network peer written in Rust: the far end of a virtio-net interface, fed the guest's
/// frames and sending frames to it (the Rust API's custom network backend).
///
/// Frames are bare Ethernet frames (no virtio-net header) in both directions; the device
/// completes checksums the guest left to it before [`receive`](Self::receive) sees a frame,
/// and hands it no segmentation work.
///
/// Lifecycle: [`start`](Self::start) is called once, when the VM is built, with the
/// [`FrameSender`] that carries frames to the guest (keep it; it may be cloned and used from
/// any thread). [`receive`](Self::receive) is then called on the device's worker thread for
/// each frame the guest transmits. The peer is dropped with the VM.
pub trait FrameBackend: Send {
    /// Called once before the guest runs: `to_guest` delivers frames to the interface.
    fn start(&mut self, to_guest: FrameSender);

    /// The guest transmitted `frame`. Runs on the device's worker thread while the queue
    /// waits: do not block; a frame the peer cannot take is for it to drop. A panic here is
    /// a failure of the device, not of one frame (the peer's state is no longer known): the
    /// worker catches it, logs it, and the VM stops; `Vm::run` returns an error naming the
    /// interface (e.g. `net0`). The process goes on.
    fn receive(&mut self, frame: &[u8]);
}

/// The most frames waiting for the guest; [`FrameSender::send`] refuses more.
pub const FRAME_QUEUE_LEN: usize = 256;
/// The shortest frame [`FrameSender::send`] takes: an Ethernet header.
pub const MIN_FRAME_LEN: usize = 14;

/// Why [`FrameSender::send`] did not queue a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// The frame is shorter than an Ethernet header or longer than [`MAX_FRAME_LEN`].
    #[error("a {0}-byte frame is not {MIN_FRAME_LEN} to {MAX_FRAME_LEN} bytes")]
    Length(usize),
    /// [`FRAME_QUEUE_LEN`] frames already wait for the guest to take them.
    #[error("{FRAME_QUEUE_LEN} frames already wait for the guest")]
    Full,
    /// The VM has ended: the interface is gone.
    #[error("the interface is gone")]
    Closed,
}

/// Frames waiting for the guest, and the eventfd that tells the worker about them.
struct Link {
    frames: std::sync::Mutex<std::collections::VecDeque<Vec<u8>>>,
    evt: vmm_sys_util::eventfd::EventFd,
    closed: std::sync::atomic::AtomicBool,
}

impl Link {
    fn frames(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Vec<u8>>> {
        self.frames
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Sends frames to the guest through a [`FrameBackend`]'s interface. Clone it freely; it
/// never blocks.
#[derive(Clone)]
pub struct FrameSender {
    link: std::sync::Arc<Link>,
}

impl std::fmt::Debug for FrameSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameSender").finish_non_exhaustive()
    }
}

impl FrameSender {
    /// Queues `frame` (a bare Ethernet frame) for the guest; it is delivered as soon as
    /// the guest has receive buffers. At most [`FRAME_QUEUE_LEN`] frames wait.
    pub fn send(&self, frame: &[u8]) -> Result<(), SendError> {
        use std::sync::atomic::Ordering;
        if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&frame.len()) {
            return Err(SendError::Length(frame.len()));
        }
        if self.link.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        {
            let mut frames = self.link.frames();
            if frames.len() >= FRAME_QUEUE_LEN {
                return Err(SendError::Full);
            }
            frames.push_back(frame.to_vec());
        }
        // After the push: a worker that cleared the eventfd before it looks at the queue
        // again finds the frame; one that looked already is woken by this write.
        self.link.evt.write(1).map_err(|_| SendError::Closed)
    }
}

/// The [`NetBackend`] over a [`FrameBackend`]: the worker polls the link's eventfd.
pub struct Custom {
    peer: Box<dyn FrameBackend>,
    link: std::sync::Arc<Link>,
}

impl Custom {
    /// Makes the link and calls the peer's [`FrameBackend::start`].
    pub fn new(mut peer: Box<dyn FrameBackend>) -> io::Result<Self> {
        let evt = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?;
        let link = std::sync::Arc::new(Link {
            frames: std::sync::Mutex::new(std::collections::VecDeque::new()),
            evt,
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        peer.start(FrameSender { link: link.clone() });
        Ok(Custom { peer, link })
    }
}

impl Drop for Custom {
    fn drop(&mut self) {
        self.link
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.link.frames().clear();
    }
}

impl NetBackend for Custom {
    fn fd(&self) -> RawFd {
        self.link.evt.as_raw_fd()
    }

    fn supported_offloads(&self) -> u64 {
        SOCKET_OFFLOADS
    }

    fn recv_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut cleared = false;
        loop {
            let next = self.link.frames().pop_front();
            match next {
                Some(frame) if frame.len() > buf.len() => {
                    log::debug!("custom net: dropping a {}-byte frame", frame.len());
                }
                Some(frame) => {
                    buf[..frame.len()].copy_from_slice(&frame);
                    return Ok(frame.len());
                }
                None if cleared => return Err(io::ErrorKind::WouldBlock.into()),
                None => {
                    // Clear the count, then look once more (see FrameSender::send).
                    let _ = self.link.evt.read();
                    cleared = true;
                }
            }
        }
    }

    fn send_frame(&mut self, frame: &[u8]) -> io::Result<Sent> {
        // Not caught here: a panicking peer fails the device (see FrameBackend::receive).
        self.peer.receive(frame);
        Ok(Sent::Done)
    }
}

#[cfg(test)]
mod custom_tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Keeps the sender and records what the guest sent.
    struct FakePeer {
        sender: Arc<Mutex<Option<FrameSender>>>,
        seen: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl FrameBackend for FakePeer {
        fn start(&mut self, to_guest: FrameSender) {
            *self.sender.lock().unwrap() = Some(to_guest);
        }
        fn receive(&mut self, frame: &[u8]) {
            assert_ne!(frame, b"panic please");
            self.seen.lock().unwrap().push(frame.to_vec());
        }
    }

    fn custom() -> (Custom, FrameSender, Arc<Mutex<Vec<Vec<u8>>>>) {
        let sender = Arc::new(Mutex::new(None));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let backend = Custom::new(Box::new(FakePeer {
            sender: sender.clone(),
            seen: seen.clone(),
        }))
        .unwrap();
        let sender = sender.lock().unwrap().take().expect("start was called");
        (backend, sender, seen)
    }

    #[test]
    fn custom_frames_both_ways_then_would_block() {
        let (mut backend, sender, seen) = custom();
        let frame = [7u8; 60];
        sender.send(&frame).unwrap();
        let mut buf = [0u8; 100];
        assert_eq!(backend.recv_frame(&mut buf).unwrap(), 60);
        assert_eq!(&buf[..60], &frame);
        let e = backend.recv_frame(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(backend.send_frame(&[1; 42]).unwrap(), Sent::Done);
        assert_eq!(*seen.lock().unwrap(), vec![vec![1u8; 42]]);
    }

    #[test]
    fn custom_send_refuses_bad_lengths_a_full_queue_and_a_dropped_interface() {
        let (backend, sender, _) = custom();
        assert_eq!(sender.send(&[0; 13]), Err(SendError::Length(13)));
        assert_eq!(
            sender.send(&vec![0; MAX_FRAME_LEN + 1]),
            Err(SendError::Length(MAX_FRAME_LEN + 1))
        );
        for _ in 0..FRAME_QUEUE_LEN {
            sender.send(&[0; 14]).unwrap();
        }
        assert_eq!(sender.send(&[0; 14]), Err(SendError::Full));
        drop(backend);
        assert_eq!(sender.send(&[0; 14]), Err(SendError::Closed));
    }

    #[test]
    fn custom_peer_panic_reaches_the_worker() {
        let (mut backend, _sender, seen) = custom();
        backend.send_frame(&[0; 20]).unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            backend.send_frame(b"panic please")
        }));
        assert!(caught.is_err(), "the peer's panic is the device's");
        assert_eq!(*seen.lock().unwrap(), vec![vec![0u8; 20]]);
    }
}
