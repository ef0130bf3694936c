//! The virtio-net device (virtio 1.2, section 5.1): one interface whose frames travel to a
//! host backend (passt's unix stream, a unix datagram proxy such as gvproxy, or a tap).
//!
//! - [`device`]: features, config space (MAC, link status), activation and reset;
//! - [`worker`]: the queue work on the shared [`crate::virtio::Worker`], with back-pressure
//!   both ways and at most one frame buffered per direction;
//! - [`backend`]: the [`NetBackend`] trait, the virtio-net header and the real backends,
//!   and [`FrameBackend`], a peer in the embedding program's own code.

mod backend;
mod device;
pub(crate) mod worker;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

pub use backend::{
    Custom, FrameBackend, FrameSender, NetBackend, SendError, Sent, Tap, TapOffloads, UnixGram,
    UnixStream, FRAME_QUEUE_LEN, MAX_FRAME_LEN, MIN_FRAME_LEN, VFKIT_MAGIC, VNET_HDR_LEN,
};
pub use device::{Net, NetConfig};

/// Virtio-net feature bits (virtio 1.2, section 5.1.3), as masks.
pub mod features {
    use virtio_bindings::virtio_net as n;

    pub const CSUM: u64 = 1 << n::VIRTIO_NET_F_CSUM;
    pub const GUEST_CSUM: u64 = 1 << n::VIRTIO_NET_F_GUEST_CSUM;
    pub const MAC: u64 = 1 << n::VIRTIO_NET_F_MAC;
    pub const GUEST_TSO4: u64 = 1 << n::VIRTIO_NET_F_GUEST_TSO4;
    pub const GUEST_TSO6: u64 = 1 << n::VIRTIO_NET_F_GUEST_TSO6;
    pub const GUEST_UFO: u64 = 1 << n::VIRTIO_NET_F_GUEST_UFO;
    pub const HOST_TSO4: u64 = 1 << n::VIRTIO_NET_F_HOST_TSO4;
    pub const HOST_TSO6: u64 = 1 << n::VIRTIO_NET_F_HOST_TSO6;
    pub const HOST_UFO: u64 = 1 << n::VIRTIO_NET_F_HOST_UFO;
    pub const MRG_RXBUF: u64 = 1 << n::VIRTIO_NET_F_MRG_RXBUF;
    pub const STATUS: u64 = 1 << n::VIRTIO_NET_F_STATUS;

    /// The offloads a caller may ask for (libkrun's `NET_FEATURE_*` are these bits).
    pub const OFFLOADS: u64 =
        CSUM | GUEST_CSUM | GUEST_TSO4 | GUEST_TSO6 | GUEST_UFO | HOST_TSO4 | HOST_TSO6 | HOST_UFO;
    /// Offloads the device performs towards the guest (it may receive such frames).
    pub const GUEST_OFFLOADS: u64 = GUEST_TSO4 | GUEST_TSO6 | GUEST_UFO;
    /// Offloads the guest may hand the device (segmentation the host side must do).
    pub const HOST_OFFLOADS: u64 = HOST_TSO4 | HOST_TSO6 | HOST_UFO;

    /// Drops offloads whose prerequisite is missing (5.1.3.1: the TSO/UFO bits need the
    /// matching checksum bit).
    pub fn consistent(features: u64) -> u64 {
        let mut f = features;
        if f & GUEST_CSUM == 0 {
            f &= !GUEST_OFFLOADS;
        }
        if f & CSUM == 0 {
            f &= !HOST_OFFLOADS;
        }
        f
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn bits_match_the_spec_and_libkrun() {
            assert_eq!((CSUM, GUEST_CSUM, MAC), (1, 2, 1 << 5));
            assert_eq!(
                (GUEST_TSO4, GUEST_TSO6, GUEST_UFO),
                (1 << 7, 1 << 8, 1 << 10)
            );
            assert_eq!(
                (HOST_TSO4, HOST_TSO6, HOST_UFO),
                (1 << 11, 1 << 12, 1 << 14)
            );
            assert_eq!((MRG_RXBUF, STATUS), (1 << 15, 1 << 16));
        }

        #[test]
        fn consistent_drops_offloads_without_checksums() {
            assert_eq!(consistent(GUEST_TSO4 | HOST_TSO4), 0);
            assert_eq!(
                consistent(GUEST_CSUM | GUEST_TSO4 | HOST_UFO),
                GUEST_CSUM | GUEST_TSO4
            );
        }
    }
}
