//! The virtio-net queue work, run on the shared [`Worker`](crate::virtio::Worker).
//!
//! ```text
//!   backend readable ─▶ one frame into `rx_frame` ─▶ guest rx buffers ─▶ irq
//!        (no guest buffers: the frame waits, the backend is not read until rx notify)
//!   tx notify ─▶ chain copied out, returned used ─▶ backend send
//!        (backend full: the frame waits in `tx_frame`, tx is not popped until writable)
//! ```
//!
//! At most one frame waits in each direction, so a guest that stops reading, or a peer that
//! stops taking frames, costs no memory beyond two frame buffers; no frame is dropped while
//! the guest still has receive buffers.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};
use vmm_sys_util::epoll::EventSet;

use super::backend::{NetBackend, Sent, MAX_FRAME_LEN, VNET_HDR_LEN};
use super::device::{RX_QUEUE_INDEX, TX_QUEUE_INDEX};
use super::features;
use crate::virtio::{Interrupt, QueueHandler, Registry};
use crate::GuestMemory;

/// The backend fd's token in the worker's epoll set.
const BACKEND_TOKEN: u64 = 0;
/// Frames moved per direction before the worker looks at its other fds again.
const BUDGET: usize = 256;
/// A frame with its header, the largest the device handles in either direction.
const MAX_PACKET_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;

/// virtio_net_hdr flags and gso types (5.1.6).
const HDR_F_NEEDS_CSUM: u8 = 1;
const HDR_GSO_NONE: u8 = 0;

pub(crate) struct NetHandler {
    id: String,
    mem: GuestMemory,
    rx: Queue,
    tx: Queue,
    interrupt: Arc<dyn Interrupt>,
    backend: Box<dyn NetBackend>,
    mrg_rxbuf: bool,
    /// The frame read from the backend that waits for guest buffers: header + frame.
    rx_frame: Vec<u8>,
    /// Bytes of `rx_frame` in use while `rx_waiting`.
    rx_len: usize,
    rx_waiting: bool,
    /// The guest had no receive buffers: do not read the backend until it adds some.
    rx_paused: bool,
    /// A frame the backend was too full to take, to send again once it is writable.
    tx_frame: Vec<u8>,
    tx_waiting: bool,
    /// A copy of the chain being transmitted.
    tx_buf: Vec<u8>,
    /// A frame went out in several buffers since the last rx interrupt. publish_rx moves
    /// the used index itself, which virtio-queue's EVENT_IDX bookkeeping (`num_added`) does
    /// not see, so its answer could wrongly be "no interrupt": interrupt regardless.
    rx_force_signal: bool,
    /// The backend ended or failed: it is out of the epoll set for good.
    backend_gone: bool,
    /// The events the backend fd is registered for (empty: not registered).
    interest: EventSet,
    stats: Stats,
}

/// Counters logged when the worker stops (debug), to tell a stalled direction apart.
#[derive(Debug, Default)]
struct Stats {
    rx_frames: u64,
    rx_dropped: u64,
    rx_waits: u64,
    tx_frames: u64,
    tx_dropped: u64,
    tx_waits: u64,
}

impl NetHandler {
    pub(crate) fn new(
        id: String,
        mem: GuestMemory,
        rx: Queue,
        tx: Queue,
        interrupt: Arc<dyn Interrupt>,
        backend: Box<dyn NetBackend>,
        acked_features: u64,
    ) -> Self {
        NetHandler {
            id,
            mem,
            rx,
            tx,
            interrupt,
            backend,
            mrg_rxbuf: acked_features & features::MRG_RXBUF != 0,
            rx_frame: vec![0; MAX_PACKET_LEN],
            rx_len: 0,
            rx_waiting: false,
            rx_paused: false,
            tx_frame: Vec::with_capacity(MAX_PACKET_LEN),
            tx_waiting: false,
            tx_buf: Vec::with_capacity(MAX_PACKET_LEN),
            rx_force_signal: false,
            backend_gone: false,
            interest: EventSet::empty(),
            stats: Stats::default(),
        }
    }

    pub(crate) fn into_backend(self) -> Box<dyn NetBackend> {
        self.backend
    }

    /// Interrupts the guest for `index` unless the driver suppressed it.
    fn signal(&mut self, index: u16) {
        if index == RX_QUEUE_INDEX && std::mem::take(&mut self.rx_force_signal) {
            // Resets the queue's EVENT_IDX count for the next answer; this one is ignored.
            let _ = self.rx.needs_notification(&self.mem);
            if let Err(e) = self.interrupt.signal_queue(index) {
                log::error!("{}: cannot interrupt the guest: {e}", self.id);
            }
            return;
        }
        let queue = if index == RX_QUEUE_INDEX {
            &mut self.rx
        } else {
            &mut self.tx
        };
        crate::virtio::signal_used(queue, &self.mem, self.interrupt.as_ref(), index, &self.id);
    }

    fn backend_failed(&mut self, what: &str, e: &io::Error) {
        if !self.backend_gone {
            log::warn!(
                "{}: backend {what}: {e}; the interface carries no more traffic",
                self.id
            );
        }
        self.backend_gone = true;
        self.rx_waiting = false;
        self.tx_waiting = false;
    }

    /// Registers the backend fd for what the worker waits for now.
    fn update_interest(&mut self, registry: &Registry) {
        let mut want = EventSet::empty();
        if !self.backend_gone {
            if !self.rx_paused && !self.rx_waiting {
                want |= EventSet::IN;
            }
            if self.tx_waiting || self.backend.has_pending_write() {
                want |= EventSet::OUT;
            }
        }
        if want == self.interest {
            return;
        }
        let fd = self.backend.fd();
        let result = if want.is_empty() {
            registry.remove(fd)
        } else if self.interest.is_empty() {
            registry.add(fd, want, BACKEND_TOKEN)
        } else {
            registry.modify(fd, want, BACKEND_TOKEN)
        };
        match result {
            Ok(()) => self.interest = want,
            Err(e) => {
                log::error!("{}: cannot watch the backend: {e}", self.id);
                self.backend_gone = true;
                let _ = registry.remove(fd);
                self.interest = EventSet::empty();
            }
        }
    }

    // ---- receive: backend -> guest ------------------------------------------------------

    /// Moves frames from the backend to the guest until either side has nothing more.
    pub(super) fn process_rx(&mut self) {
        let mut used = false;
        for _ in 0..BUDGET {
            if !self.rx_waiting && !self.read_frame() {
                break;
            }
            match self.deliver() {
                Delivery::Used => used = true,
                Delivery::NoBuffers => {
                    self.stats.rx_waits += 1;
                    self.rx_paused = true;
                    break;
                }
            }
        }
        if used {
            self.signal(RX_QUEUE_INDEX);
        }
    }

    /// Reads the next frame into `rx_frame`, behind a header when the backend has none.
    /// False when there is none.
    fn read_frame(&mut self) -> bool {
        let hdr = if self.backend.has_vnet_hdr() {
            0
        } else {
            VNET_HDR_LEN
        };
        while !self.backend_gone {
            match self.backend.recv_frame(&mut self.rx_frame[hdr..]) {
                Ok(0) => {
                    let closed = io::Error::from(io::ErrorKind::UnexpectedEof);
                    self.backend_failed("closed", &closed);
                }
                Ok(n) => {
                    let len = hdr + n;
                    if len < VNET_HDR_LEN {
                        log::debug!("{}: dropping a {len}-byte frame from the backend", self.id);
                        continue;
                    }
                    if hdr > 0 {
                        // A socket peer gives no offload information: a plain frame whose
                        // checksums the guest checks itself.
                        self.rx_frame[..VNET_HDR_LEN].fill(0);
                    }
                    self.rx_len = len;
                    self.rx_waiting = true;
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => self.backend_failed("read failed", &e),
            }
        }
        false
    }

    /// Writes the waiting frame into guest receive buffers: one chain, or with MRG_RXBUF
    /// as many as it takes (their count goes into the header's num_buffers). A frame that
    /// cannot fit the one chain a driver without MRG_RXBUF gives is dropped, its chain
    /// returned empty.
    fn deliver(&mut self) -> Delivery {
        let len = self.rx_len;
        let mut chains: Vec<(u16, DescriptorChain<&GuestMemory>)> = Vec::new();
        let mut capacity = 0usize;
        while capacity < len && chains.len() < usize::from(QUEUE_SIZE_LIMIT) {
            let Some(chain) = self.rx.pop_descriptor_chain(&self.mem) else {
                break;
            };
            let room = chain
                .clone()
                .writer(&self.mem)
                .map(|w| w.available_bytes())
                .unwrap_or(0);
            capacity += room;
            chains.push((chain.head_index(), chain));
            if !self.mrg_rxbuf {
                break;
            }
        }
        if chains.is_empty() || (self.mrg_rxbuf && capacity < len) {
            // Not enough buffers yet: put back what was taken; the frame waits.
            for _ in 0..chains.len() {
                self.rx.go_to_previous_position();
            }
            return Delivery::NoBuffers;
        }
        self.rx_waiting = false;
        if capacity < len {
            log::debug!(
                "{}: dropping a {len}-byte frame: the receive buffer holds {capacity}",
                self.id
            );
            let (head, _) = chains[0];
            self.add_used_rx(head, 0);
            self.stats.rx_dropped += 1;
            return Delivery::Used;
        }
        let count = u16::try_from(chains.len()).unwrap_or(u16::MAX);
        self.rx_frame[10..12].copy_from_slice(&count.to_le_bytes());
        let mut offset = 0;
        let mut used = Vec::with_capacity(chains.len());
        for (head, chain) in chains {
            let written = match chain.writer(&self.mem) {
                Ok(mut w) => {
                    let n = w.available_bytes().min(len - offset);
                    match io::Write::write_all(&mut w, &self.rx_frame[offset..offset + n]) {
                        Ok(()) => n,
                        Err(e) => {
                            log::debug!("{}: bad receive buffer: {e}", self.id);
                            w.bytes_written()
                        }
                    }
                }
                Err(e) => {
                    log::debug!("{}: bad receive chain: {e}", self.id);
                    0
                }
            };
            offset += written;
            used.push((head, written));
        }
        self.publish_rx(&used);
        self.stats.rx_frames += 1;
        Delivery::Used
    }

    /// Returns the buffers of one frame to the guest at once: every used element is
    /// written before the used index moves past all of them, so a driver polling the ring
    /// never sees fewer buffers than the header's num_buffers says (Linux drops such a
    /// frame as "buffers missing").
    fn publish_rx(&mut self, used: &[(u16, usize)]) {
        if let [(head, len)] = used {
            self.add_used_rx(*head, *len as u32);
            return;
        }
        let size = self.rx.size();
        if size == 0 || used.iter().any(|(head, _)| *head >= size) {
            // Not reachable with heads the queue handed out; keep add_used's own checks.
            for (head, len) in used {
                self.add_used_rx(*head, *len as u32);
            }
            return;
        }
        let start = self.rx.next_used();
        let ring = GuestAddress(self.rx.used_ring());
        for (k, (head, len)) in used.iter().enumerate() {
            let pos = u64::from(start.wrapping_add(k as u16) % size);
            let mut elem = [0u8; 8];
            elem[..4].copy_from_slice(&u32::from(*head).to_le_bytes());
            elem[4..].copy_from_slice(&(*len as u32).to_le_bytes());
            let written = ring
                .checked_add(USED_RING_HEADER + pos * USED_ELEM_LEN)
                .map(|addr| self.mem.write_slice(&elem, addr));
            if !matches!(written, Some(Ok(()))) {
                log::error!("{}: cannot return receive buffers: bad used ring", self.id);
                return;
            }
        }
        let next = start.wrapping_add(used.len() as u16);
        self.rx.set_next_used(next);
        self.rx_force_signal = true;
        // Release: the elements are visible before the index that covers them.
        let stored = ring
            .checked_add(2)
            .map(|addr| self.mem.store(next.to_le(), addr, Ordering::Release));
        if !matches!(stored, Some(Ok(()))) {
            log::error!("{}: cannot publish receive buffers: bad used ring", self.id);
        }
    }

    fn add_used_rx(&mut self, head: u16, len: u32) {
        if let Err(e) = self.rx.add_used(&self.mem, head, len) {
            log::error!("{}: cannot return a receive buffer: {e}", self.id);
        }
    }

    // ---- transmit: guest -> backend -----------------------------------------------------

    /// Sends what the guest queued until the queue is empty or the backend full.
    pub(super) fn process_tx(&mut self) {
        if !self.flush_backend() {
            return;
        }
        let mut used = false;
        let mem = self.mem.clone();
        for _ in 0..BUDGET {
            let Some(chain) = self.tx.pop_descriptor_chain(&mem) else {
                break;
            };
            let head = chain.head_index();
            let copied = self.copy_chain(&mem, chain);
            if let Err(e) = self.tx.add_used(&self.mem, head, 0) {
                log::error!("{}: cannot return a transmit buffer: {e}", self.id);
            }
            used = true;
            if !copied || self.backend_gone {
                self.stats.tx_dropped += 1;
                continue;
            }
            match self.prepare_tx() {
                Some(range) => {
                    self.stats.tx_frames += 1;
                    if !self.send(range) {
                        break;
                    }
                }
                None => self.stats.tx_dropped += 1,
            }
        }
        if used {
            self.signal(TX_QUEUE_INDEX);
        }
    }

    /// Copies the chain into `tx_buf`; false (logged) when it is malformed or too long.
    fn copy_chain(&mut self, mem: &GuestMemory, chain: DescriptorChain<&GuestMemory>) -> bool {
        let mut reader = match chain.reader(mem) {
            Ok(r) => r,
            Err(e) => {
                log::debug!("{}: bad transmit chain: {e}", self.id);
                return false;
            }
        };
        let len = reader.available_bytes();
        if !(VNET_HDR_LEN..=MAX_PACKET_LEN).contains(&len) {
            log::debug!("{}: dropping a {len}-byte transmit chain", self.id);
            return false;
        }
        self.tx_buf.resize(len, 0);
        if let Err(e) = io::Read::read_exact(&mut reader, &mut self.tx_buf) {
            log::debug!("{}: bad transmit buffer: {e}", self.id);
            return false;
        }
        true
    }

    /// Turns `tx_buf` into what the backend takes; the byte range to send, or None when
    /// the frame is dropped. A tap gets header and frame as they are; a socket gets the
    /// bare frame, its checksum completed when the guest left that to the device.
    fn prepare_tx(&mut self) -> Option<std::ops::Range<usize>> {
        if self.backend.has_vnet_hdr() {
            return Some(0..self.tx_buf.len());
        }
        let hdr: [u8; VNET_HDR_LEN] = self.tx_buf[..VNET_HDR_LEN].try_into().ok()?;
        if hdr[1] != HDR_GSO_NONE {
            log::debug!(
                "{}: dropping a segmentation frame (gso type {})",
                self.id,
                hdr[1]
            );
            return None;
        }
        let frame = &mut self.tx_buf[VNET_HDR_LEN..];
        if hdr[0] & HDR_F_NEEDS_CSUM != 0 {
            let start = usize::from(u16::from_le_bytes([hdr[6], hdr[7]]));
            let offset = usize::from(u16::from_le_bytes([hdr[8], hdr[9]]));
            if !complete_checksum(frame, start, offset) {
                log::debug!(
                    "{}: dropping a frame with checksum offsets out of range",
                    self.id
                );
                return None;
            }
        }
        Some(VNET_HDR_LEN..self.tx_buf.len())
    }

    /// Sends `tx_buf[range]`; false when the backend is full (the frame then waits).
    fn send(&mut self, range: std::ops::Range<usize>) -> bool {
        match self.backend.send_frame(&self.tx_buf[range.clone()]) {
            Ok(Sent::Done) => !self.backend.has_pending_write(),
            Ok(Sent::Full) => {
                self.stats.tx_waits += 1;
                self.tx_frame.clear();
                self.tx_frame.extend_from_slice(&self.tx_buf[range]);
                self.tx_waiting = true;
                false
            }
            Err(e) => {
                self.backend_failed("send failed", &e);
                true
            }
        }
    }

    /// Finishes a partial write and sends the waiting frame; false while the backend is
    /// still full.
    fn flush_backend(&mut self) -> bool {
        if self.backend_gone {
            return true;
        }
        if self.backend.has_pending_write() {
            match self.backend.flush() {
                Ok(true) => {}
                Ok(false) => return false,
                Err(e) => {
                    self.backend_failed("send failed", &e);
                    return true;
                }
            }
        }
        if self.tx_waiting {
            match self.backend.send_frame(&self.tx_frame) {
                Ok(Sent::Done) => self.tx_waiting = false,
                Ok(Sent::Full) => return false,
                Err(e) => {
                    self.backend_failed("send failed", &e);
                    return true;
                }
            }
            return !self.backend.has_pending_write();
        }
        true
    }
}

/// Used ring layout (virtio 1.2, 2.7.8): flags and idx (le16 each), then (id, len) le32 pairs.
const USED_RING_HEADER: u64 = 4;
const USED_ELEM_LEN: u64 = 8;

/// The most chains one received frame may take (the queue size).
const QUEUE_SIZE_LIMIT: u16 = super::device::QUEUE_SIZE;

enum Delivery {
    /// Buffers were used (the frame delivered, or dropped because it could not fit).
    Used,
    /// The guest has not enough receive buffers; the frame still waits.
    NoBuffers,
}

/// Fills in the checksum the guest left to the device (VIRTIO_NET_HDR_F_NEEDS_CSUM): the
/// 16-bit ones' complement sum of `frame[start..]`, stored at `start + offset`. The field
/// holds the pseudo-header sum already, so summing over it is what the spec asks. False
/// when the offsets fall outside the frame.
pub(crate) fn complete_checksum(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let Some(field) = start.checked_add(offset) else {
        return false;
    };
    if start >= frame.len() || field.saturating_add(2) > frame.len() {
        return false;
    }
    let mut sum: u32 = 0;
    let mut words = frame[start..].chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let csum = !(sum as u16);
    frame[field..field + 2].copy_from_slice(&csum.to_be_bytes());
    true
}

impl QueueHandler for NetHandler {
    fn start(&mut self, registry: &Registry) -> io::Result<()> {
        self.process_tx();
        self.process_rx();
        self.update_interest(registry);
        Ok(())
    }

    fn queue_notified(&mut self, index: usize, registry: &Registry) {
        if index == usize::from(RX_QUEUE_INDEX) {
            self.rx_paused = false;
            self.process_rx();
        } else {
            self.process_tx();
        }
        self.update_interest(registry);
    }

    fn backend_ready(&mut self, _token: u64, events: EventSet, registry: &Registry) {
        if events.intersects(EventSet::OUT | EventSet::HANG_UP | EventSet::ERROR) {
            self.process_tx();
        }
        if events.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR) {
            self.process_rx();
        }
        self.update_interest(registry);
    }

    fn stop(&mut self) {
        // What the guest queued goes out if the backend takes it now; nothing waits.
        self.process_tx();
        log::debug!(
            "{}: {:?}; rx waiting {}, paused {}, tx waiting {}, backend gone {}",
            self.id,
            self.stats,
            self.rx_waiting,
            self.rx_paused,
            self.tx_waiting,
            self.backend_gone
        );
    }
}
