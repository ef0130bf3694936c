//! The "vsock0" worker: one epoll loop over the queue eventfds, the kill eventfd and every
//! host socket of the muxer.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;

use log::{debug, error};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::{ControlOperation, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::device::{RX_QUEUE_INDEX, TX_QUEUE_INDEX};
use super::muxer::Muxer;
use super::packet::{read_tx, rx_capacity, write_rx};
use crate::virtio::Interrupt;
use crate::GuestMemory;

const TOKEN_KILL: u64 = 0;
const TOKEN_RX: u64 = 1;
const TOKEN_TX: u64 = 2;
const TOKEN_EVENT: u64 = 3;
const TOKEN_CONNECT: u64 = 4;

/// The device's queues once the driver activated it.
pub struct Queues {
    pub mem: GuestMemory,
    pub rx: Queue,
    pub tx: Queue,
    /// The event queue: held so the driver's buffers stay posted; the device sends no
    /// events (it never migrates or resets its transport under a live guest).
    #[allow(dead_code)]
    pub event: Queue,
    pub interrupt: Arc<dyn Interrupt>,
}

impl Queues {
    /// Hands every guest packet on the transmit queue to the muxer.
    pub fn process_tx(&mut self, mux: &mut Muxer) -> usize {
        let mut used = 0;
        while let Some(chain) = self.tx.pop_descriptor_chain(&self.mem) {
            let head = chain.head_index();
            match read_tx(chain, &self.mem) {
                Ok(pkt) => mux.on_guest_packet(pkt),
                Err(e) => debug!("vsock0: bad transmit packet: {e}"),
            }
            if let Err(e) = self.tx.add_used(&self.mem, head, 0) {
                error!("vsock0: cannot return a transmit buffer: {e}");
            }
            used += 1;
        }
        if used > 0 {
            self.signal(TX_QUEUE_INDEX);
        }
        used
    }

    /// Fills guest receive buffers with the muxer's packets until either runs out.
    pub fn process_rx(&mut self, mux: &mut Muxer) -> usize {
        let mut used = 0;
        while mux.has_rx() {
            let Some(chain) = self.rx.pop_descriptor_chain(&self.mem) else {
                break;
            };
            let head = chain.head_index();
            let Some(cap) = rx_capacity(&chain, &self.mem) else {
                debug!("vsock0: receive buffer smaller than a header, returned empty");
                let _ = self.rx.add_used(&self.mem, head, 0);
                used += 1;
                continue;
            };
            let Some(pkt) = mux.next_rx(cap) else {
                self.rx.go_to_previous_position();
                break;
            };
            match write_rx(chain, &self.mem, &pkt) {
                Ok(len) => {
                    if let Err(e) = self.rx.add_used(&self.mem, head, len) {
                        error!("vsock0: cannot return a receive buffer: {e}");
                    }
                    used += 1;
                }
                Err(e) => {
                    debug!("vsock0: receive buffer unusable ({e}), packet kept");
                    mux.unread_ctrl(pkt);
                    let _ = self.rx.add_used(&self.mem, head, 0);
                    used += 1;
                }
            }
        }
        if used > 0 {
            self.signal(RX_QUEUE_INDEX);
        }
        used
    }

    fn signal(&mut self, index: u16) {
        let q = if index == RX_QUEUE_INDEX {
            &mut self.rx
        } else {
            &mut self.tx
        };
        if !q.needs_notification(&self.mem).unwrap_or(true) {
            return;
        }
        if let Err(e) = self.interrupt.signal_queue(index) {
            error!("vsock0: cannot interrupt the guest: {e}");
        }
    }
}

/// The event loop state: queues, muxer and the eventfds it waits on.
pub struct Looper {
    pub queues: Queues,
    pub mux: Muxer,
    pub rx_evt: EventFd,
    pub tx_evt: EventFd,
    pub event_evt: EventFd,
    pub kill_evt: EventFd,
}

impl Looper {
    pub fn register(&self) -> io::Result<()> {
        let ep = &self.mux.epoll;
        for (fd, token) in [
            (self.kill_evt.as_raw_fd(), TOKEN_KILL),
            (self.rx_evt.as_raw_fd(), TOKEN_RX),
            (self.tx_evt.as_raw_fd(), TOKEN_TX),
            (self.event_evt.as_raw_fd(), TOKEN_EVENT),
            (self.mux.connect_evt_fd(), TOKEN_CONNECT),
        ] {
            ep.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )?;
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` (-1: forever) and handles what arrived. Returns false
    /// once the kill eventfd fired.
    pub fn run_once(&mut self, timeout_ms: i32) -> bool {
        let mut events = [EpollEvent::default(); 64];
        let n = match self.mux.epoll.wait(timeout_ms, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => {
                error!("vsock0: epoll failed, stopping: {e}");
                return false;
            }
        };
        for ev in &events[..n] {
            match ev.data() {
                TOKEN_KILL => return false,
                TOKEN_RX => drop(self.rx_evt.read()),
                TOKEN_TX => drop(self.tx_evt.read()),
                TOKEN_EVENT => drop(self.event_evt.read()),
                TOKEN_CONNECT => self.mux.on_connect_done(),
                token => self.mux.on_host_event(token, ev.event_set()),
            }
        }
        self.queues.process_tx(&mut self.mux);
        self.queues.process_rx(&mut self.mux);
        true
    }
}

/// The running worker thread and the eventfd that stops it.
pub struct Worker {
    kill_evt: EventFd,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    pub fn spawn(
        queues: Queues,
        mux: Muxer,
        rx_evt: EventFd,
        tx_evt: EventFd,
        event_evt: EventFd,
    ) -> io::Result<Self> {
        let kill_evt = EventFd::new(EFD_NONBLOCK)?;
        let mut looper = Looper {
            queues,
            mux,
            rx_evt,
            tx_evt,
            event_evt,
            kill_evt: kill_evt.try_clone()?,
        };
        looper.register()?;
        let handle = std::thread::Builder::new()
            .name("vsock0".into())
            .spawn(move || {
                // Buffers the guest queued before activation.
                looper.queues.process_tx(&mut looper.mux);
                looper.queues.process_rx(&mut looper.mux);
                while looper.run_once(-1) {}
            })?;
        Ok(Worker {
            kill_evt,
            handle: Some(handle),
        })
    }

    /// Stops and joins the thread; its sockets close with it.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(h) = self.handle.take() {
            if let Err(e) = self.kill_evt.write(1) {
                error!("vsock0: cannot stop the worker: {e}");
                return;
            }
            if h.join().is_err() {
                error!("vsock0: worker panicked");
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop_inner();
    }
}
