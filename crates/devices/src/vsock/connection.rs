//! One vsock stream connection bridged to a host stream socket: its state machine and the
//! credit accounting of virtio 1.2, section 5.10.6.3, in both directions.
//!
//! Guest to host: the guest may have at most `BUF_ALLOC` bytes in flight that the device has
//! not yet written to the host socket, so the per-connection buffer is bounded by the
//! credit the device advertises. Host to guest: the device reads the host socket only when
//! the guest has credit and a receive buffer is ready, straight into the packet it sends,
//! so a slow guest reader stops the host reads instead of growing a buffer.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use super::packet::{
    Header, Packet, HOST_CID, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST,
    OP_RW, OP_SHUTDOWN, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};

/// Receive space the device advertises to the guest per connection (`buf_alloc`): the most
/// guest data one connection ever holds in the VMM.
pub const BUF_ALLOC: u32 = 256 * 1024;

/// A host stream socket as a connection sees it; socketpairs in tests, unix and TCP
/// sockets in production. Must be non-blocking.
pub trait HostStream: Read + Write + Send {
    fn raw_fd(&self) -> RawFd;
    /// Half-closes the write side (the guest sent SHUTDOWN with SEND).
    fn shutdown_write(&self) -> io::Result<()>;
    /// The remote address, for TSI getpeername; None for unix sockets.
    fn peer_inet(&self) -> Option<SocketAddr> {
        None
    }
    /// The socket's pending error (SO_ERROR): how a non-blocking connect ended.
    fn take_error(&self) -> io::Result<Option<io::Error>> {
        Ok(None)
    }
}

impl HostStream for UnixStream {
    fn raw_fd(&self) -> RawFd {
        self.as_raw_fd()
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl HostStream for TcpStream {
    fn raw_fd(&self) -> RawFd {
        self.as_raw_fd()
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn peer_inet(&self) -> Option<SocketAddr> {
        self.peer_addr().ok()
    }
    fn take_error(&self) -> io::Result<Option<io::Error>> {
        TcpStream::take_error(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// The device sent OP_REQUEST (host-initiated) and waits for OP_RESPONSE.
    AwaitingResponse,
    Established,
}

/// What the muxer must do after a guest packet reached a connection.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Packets to queue for the guest, in order.
    pub replies: Vec<Packet>,
    /// The connection is finished: drop it (and its host socket).
    pub close: bool,
    /// The guest acknowledged a host-initiated connection.
    pub established: bool,
}

/// Result of one read of the host socket for the guest.
pub enum HostRead {
    Packet(Packet),
    /// Nothing to read now, or no credit: wait for epoll.
    Idle,
    /// The connection is finished; send this packet (RST) and drop it.
    Closed(Packet),
}

pub struct Connection {
    pub guest_cid: u64,
    /// Host-side port (the guest's peer port).
    pub local_port: u32,
    /// Guest-side port.
    pub peer_port: u32,
    pub state: ConnState,
    stream: Box<dyn HostStream>,
    /// Guest data not yet written to the host socket; at most BUF_ALLOC by credit.
    tx_buf: VecDeque<u8>,
    /// Bytes of guest data written to the host (our fwd_cnt).
    fwd_cnt: u32,
    /// fwd_cnt as last told to the guest.
    fwd_cnt_sent: u32,
    /// Bytes of guest data received (written or buffered).
    guest_tx_total: u32,
    /// Bytes sent to the guest (rx_cnt).
    rx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    pub host_eof: bool,
    guest_shut_send: bool,
    guest_shut_rcv: bool,
    credit_requested: bool,
    /// The host socket reported hang-up: it is no longer polled, reads run until EOF.
    pub hup: bool,
    /// epoll interest currently registered (bits of EventSet).
    pub armed: u32,
    /// Token of the host fd in the muxer's epoll.
    pub token: u64,
}

impl Connection {
    pub fn new(
        guest_cid: u64,
        local_port: u32,
        peer_port: u32,
        stream: Box<dyn HostStream>,
        state: ConnState,
        token: u64,
    ) -> Self {
        Connection {
            guest_cid,
            local_port,
            peer_port,
            state,
            stream,
            tx_buf: VecDeque::new(),
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            guest_tx_total: 0,
            rx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            host_eof: false,
            guest_shut_send: false,
            guest_shut_rcv: false,
            credit_requested: false,
            hup: false,
            armed: 0,
            token,
        }
    }

    pub fn fd(&self) -> RawFd {
        self.stream.raw_fd()
    }

    pub fn peer_inet(&self) -> Option<SocketAddr> {
        self.stream.peer_inet()
    }

    /// A control packet of this connection, carrying our current credit.
    pub fn packet(&mut self, op: u16, flags: u32, data: Vec<u8>) -> Packet {
        self.fwd_cnt_sent = self.fwd_cnt;
        Packet {
            hdr: Header {
                src_cid: HOST_CID,
                dst_cid: self.guest_cid,
                src_port: self.local_port,
                dst_port: self.peer_port,
                len: data.len() as u32,
                type_: TYPE_STREAM,
                op,
                flags,
                buf_alloc: BUF_ALLOC,
                fwd_cnt: self.fwd_cnt,
            },
            data,
        }
    }

    /// OP_REQUEST for a host-initiated connection.
    pub fn request(&mut self) -> Packet {
        self.packet(OP_REQUEST, 0, Vec::new())
    }

    /// Bytes the guest can still accept (virtio 1.2 5.10.6.3).
    pub fn peer_credit(&self) -> u32 {
        self.peer_buf_alloc
            .wrapping_sub(self.rx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }

    /// Whether the host socket should be polled for reading.
    pub fn wants_read(&self) -> bool {
        self.state == ConnState::Established
            && !self.host_eof
            && !self.guest_shut_rcv
            && self.peer_credit() > 0
    }

    /// Whether buffered guest data waits for the host socket to become writable.
    pub fn wants_write(&self) -> bool {
        !self.tx_buf.is_empty()
    }

    /// Records the guest's credit from any packet header of this connection.
    pub fn note_peer_credit(&mut self, hdr: &Header) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = hdr.fwd_cnt;
        if self.peer_credit() > 0 {
            self.credit_requested = false;
        }
    }

    /// Handles one guest packet addressed to this connection.
    pub fn on_guest(&mut self, pkt: Packet) -> Outcome {
        let mut out = Outcome::default();
        self.note_peer_credit(&pkt.hdr);
        match pkt.hdr.op {
            OP_RESPONSE if self.state == ConnState::AwaitingResponse => {
                self.state = ConnState::Established;
                out.established = true;
            }
            OP_RW if self.state == ConnState::Established && !self.guest_shut_send => {
                let len = pkt.data.len() as u32;
                let in_flight = self.guest_tx_total.wrapping_sub(self.fwd_cnt);
                if in_flight.saturating_add(len) > BUF_ALLOC {
                    log::debug!(
                        "vsock0: guest overran credit on {}:{}, resetting",
                        self.local_port,
                        self.peer_port
                    );
                    return self.reset(out);
                }
                self.guest_tx_total = self.guest_tx_total.wrapping_add(len);
                self.buffer(pkt.data);
                if self.flush().is_err() {
                    return self.reset(out);
                }
                self.maybe_credit_update(&mut out);
            }
            OP_CREDIT_UPDATE => {}
            OP_CREDIT_REQUEST => out
                .replies
                .push(self.packet(OP_CREDIT_UPDATE, 0, Vec::new())),
            OP_SHUTDOWN => {
                self.guest_shut_send |= pkt.hdr.flags & SHUTDOWN_SEND != 0;
                self.guest_shut_rcv |= pkt.hdr.flags & SHUTDOWN_RCV != 0;
                if self.flush().is_err() {
                    return self.reset(out);
                }
                if self.guest_shut_send && self.guest_shut_rcv {
                    // The guest closed: Linux waits for our RST to finish the close.
                    if self.tx_buf.is_empty() {
                        return self.reset(out);
                    }
                } else if self.guest_shut_send && self.tx_buf.is_empty() {
                    let _ = self.stream.shutdown_write();
                }
            }
            OP_RST => out.close = true,
            op => {
                log::debug!(
                    "vsock0: unexpected op {op} on {}:{}",
                    self.local_port,
                    self.peer_port
                );
                return self.reset(out);
            }
        }
        out
    }

    /// Appends guest data to `tx_buf`, growing it by doubling but never past `BUF_ALLOC`:
    /// the credit check keeps its length within `BUF_ALLOC`, and this keeps its allocation
    /// there too (a plain `extend` may double past it, to almost 2 x `BUF_ALLOC` per
    /// connection under odd-sized packets, twice the bound docs/limits.md gives).
    fn buffer(&mut self, data: Vec<u8>) {
        let need = self.tx_buf.len() + data.len();
        if need > self.tx_buf.capacity() {
            let cap = BUF_ALLOC as usize;
            let target = need.max(self.tx_buf.capacity() * 2).min(cap).max(need);
            self.tx_buf.reserve_exact(target - self.tx_buf.len());
        }
        self.tx_buf.extend(data);
    }

    /// Bytes `tx_buf` has allocated (tests check it stays within `BUF_ALLOC`).
    #[cfg(test)]
    pub fn tx_buf_capacity(&self) -> usize {
        self.tx_buf.capacity()
    }

    fn reset(&mut self, mut out: Outcome) -> Outcome {
        out.replies.push(self.packet(OP_RST, 0, Vec::new()));
        out.close = true;
        out
    }

    /// Tells the guest about freed space once it has used half of its credit, so it keeps
    /// sending without a CREDIT_UPDATE per packet.
    fn maybe_credit_update(&mut self, out: &mut Outcome) {
        let guest_view_used = self.guest_tx_total.wrapping_sub(self.fwd_cnt_sent);
        if self.fwd_cnt != self.fwd_cnt_sent && guest_view_used >= BUF_ALLOC / 2 {
            out.replies
                .push(self.packet(OP_CREDIT_UPDATE, 0, Vec::new()));
        }
    }

    /// Writes buffered guest data to the host socket until it would block.
    fn flush(&mut self) -> io::Result<()> {
        while !self.tx_buf.is_empty() {
            let (front, _) = self.tx_buf.as_slices();
            match self.stream.write(front) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The host socket became writable: flush, and finish a pending close or half-close.
    pub fn on_writable(&mut self) -> Outcome {
        let mut out = Outcome::default();
        if self.flush().is_err() {
            return self.reset(out);
        }
        if self.tx_buf.is_empty() && self.guest_shut_send {
            if self.guest_shut_rcv {
                return self.reset(out);
            }
            let _ = self.stream.shutdown_write();
        }
        self.maybe_credit_update(&mut out);
        out
    }

    /// Reads at most `cap` bytes (and no more than the guest's credit) for the guest.
    pub fn read_host(&mut self, cap: usize) -> HostRead {
        if !self.wants_read() {
            if self.state == ConnState::Established
                && self.peer_credit() == 0
                && !self.credit_requested
            {
                self.credit_requested = true;
                return HostRead::Packet(self.packet(OP_CREDIT_REQUEST, 0, Vec::new()));
            }
            return HostRead::Idle;
        }
        let len = cap
            .min(self.peer_credit() as usize)
            .min(super::packet::MAX_PKT_DATA);
        if len == 0 {
            return HostRead::Idle;
        }
        let mut buf = vec![0u8; len];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.host_eof = true;
                    if self.guest_shut_send && self.tx_buf.is_empty() {
                        let rst = self.packet(OP_RST, 0, Vec::new());
                        return HostRead::Closed(rst);
                    }
                    // The host will send nothing more; the guest may still write.
                    return HostRead::Packet(self.packet(OP_SHUTDOWN, SHUTDOWN_SEND, Vec::new()));
                }
                Ok(n) => {
                    buf.truncate(n);
                    self.rx_cnt = self.rx_cnt.wrapping_add(n as u32);
                    return HostRead::Packet(self.packet(OP_RW, 0, buf));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return HostRead::Idle,
                Err(e) => {
                    log::debug!("vsock0: host read failed on {}: {e}", self.local_port);
                    return HostRead::Closed(self.packet(OP_RST, 0, Vec::new()));
                }
            }
        }
    }
}
