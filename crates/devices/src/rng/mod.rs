//! virtio-rng (virtio 1.2, section 5.4): the guest's `/dev/hwrng` filled from the host's
//! getrandom, at a bounded rate.
//!
//! `device` holds features and lifecycle, `worker` the queue work and its token bucket,
//! `backend` where the bytes come from.

mod backend;
mod device;
mod worker;

pub use backend::{Entropy, GetRandom};
pub use device::{Rng, QUEUE_SIZE};
pub use worker::{RateLimit, MAX_REQUEST_BYTES};

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
