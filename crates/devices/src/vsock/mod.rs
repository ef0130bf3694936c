//! virtio-vsock (virtio 1.2, section 5.10) with unix-socket bridges and TSI.
//!
//! `device.rs` is the virtio face (queues, config, lifecycle), `worker.rs` the queue work on
//! the shared worker ("vsock0"), `backend.rs` how host sockets are opened (the
//! [`VsockBackend`] trait and the real one), `muxer.rs` routes packets between the guest and
//! host sockets, `connection.rs` holds one stream's state and credit, `tsi/` impersonates
//! guest inet/unix sockets, `tests.rs` drives the muxer and the device.

mod backend;
mod connection;
mod device;
mod muxer;
mod packet;
mod tsi;
mod worker;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;

pub use backend::{Connecting, HostBackend, HostListener, VsockBackend, CONNECT_TIMEOUT};
pub use connection::{HostStream, BUF_ALLOC};
pub use device::{Vsock, EVENT_QUEUE_INDEX, QUEUE_SIZE, RX_QUEUE_INDEX, TX_QUEUE_INDEX};
pub use packet::{Header, HDR_SIZE, HOST_CID};
pub use tsi::{TsiAddr, TsiScope, SCOPE_BLOCKED_ERRNO, TSI_HIJACK_INET, TSI_HIJACK_UNIX};

/// The guest CID upstream libkrun gives every VM.
pub const DEFAULT_GUEST_CID: u64 = 3;

/// A vsock port bridged to a host unix socket (`krun_add_vsock_port2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockPort {
    pub port: u32,
    pub path: PathBuf,
    /// true: the device listens on `path` and connects each client to the guest's
    /// listener on `port`; false: guest connections to `port` reach a socket at `path`.
    pub listen: bool,
}

/// A host port where a guest TSI listener is exposed (`krun_set_port_map` "host:guest").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub guest_port: u16,
}

/// Everything the device needs; plain data the VMM fills from its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    pub guest_cid: u64,
    /// `TSI_HIJACK_INET | TSI_HIJACK_UNIX`; 0: plain vsock only, TSI messages ignored.
    pub tsi_features: u32,
    pub ports: Vec<VsockPort>,
    /// None: every guest TSI listener is exposed on the same host port; Some: only the
    /// listed guest ports, on their host ports (empty: none).
    pub port_map: Option<Vec<PortMapping>>,
    /// None: TSI sockets may reach any destination.
    pub tsi_scope: Option<TsiScope>,
}

impl Default for VsockConfig {
    fn default() -> Self {
        VsockConfig {
            guest_cid: DEFAULT_GUEST_CID,
            tsi_features: 0,
            ports: Vec::new(),
            port_map: None,
            tsi_scope: None,
        }
    }
}

/// Why the vsock backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("cannot create the vsock epoll set")]
    Epoll(#[source] io::Error),
    #[error("cannot listen on vsock bridge socket {0}")]
    Bind(PathBuf, #[source] io::Error),
}
