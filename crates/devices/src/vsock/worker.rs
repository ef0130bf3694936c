//! The vsock queue work on the shared worker ("vsock0"): the queues, and the muxer's host
//! sockets as one nested interest set.

use std::io;
use std::sync::Arc;

use log::{debug, error};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::EventSet;

use super::device::{RX_QUEUE_INDEX, TX_QUEUE_INDEX};
use super::muxer::Muxer;
use super::packet::{read_tx, rx_capacity, write_rx};
use crate::virtio::{Interrupt, QueueHandler, Registry};
use crate::GuestMemory;

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
        crate::virtio::signal_used(q, &self.mem, self.interrupt.as_ref(), index, "vsock0");
    }
}

/// Epoll token of the handler's one fd in the worker: the muxer's interest set.
const MUX_TOKEN: u64 = 0;
/// Host socket events handled per wakeup; more stay ready and wake the worker again.
const HOST_EVENTS_PER_WAKEUP: usize = 64;

/// The device's queue work and its muxer, run on the shared worker ("vsock0").
pub struct VsockHandler {
    pub queues: Queues,
    pub mux: Muxer,
}

impl VsockHandler {
    /// Moves packets both ways after any event: the guest's transmissions to the muxer,
    /// the muxer's packets into receive buffers.
    fn pump(&mut self) {
        self.queues.process_tx(&mut self.mux);
        self.queues.process_rx(&mut self.mux);
    }
}

impl QueueHandler for VsockHandler {
    fn start(&mut self, registry: &Registry) -> io::Result<()> {
        registry.add(self.mux.epoll_fd(), EventSet::IN, MUX_TOKEN)?;
        // Buffers the guest queued before activation.
        self.pump();
        Ok(())
    }

    /// Any queue: the event queue only holds buffers (the device sends no events), the
    /// receive queue got buffers, the transmit queue got packets.
    fn queue_notified(&mut self, _index: usize, _registry: &Registry) {
        self.pump();
    }

    fn backend_ready(&mut self, token: u64, _events: EventSet, _registry: &Registry) {
        if token == MUX_TOKEN {
            self.mux.process_host_events(HOST_EVENTS_PER_WAKEUP);
        }
        self.pump();
    }
}
