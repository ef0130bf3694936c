//! virtio-balloon (virtio 1.2, section 5.5) with free page reporting: pages the guest's
//! allocator reports free are handed back to the host, so the VMM's resident memory falls
//! after the guest frees memory.
//!
//! Offered as upstream libkrun offers it, attached to every VM: `STATS_VQ`,
//! `FREE_PAGE_HINT` and `REPORTING`, a target of 0 pages (the host never asks for memory,
//! so inflate and deflate stay idle) and no stats requests. `device` holds features, config
//! space and lifecycle, `worker` the queue work, `backend` the "give these guest pages back"
//! operation (madvise, implemented in crates/vmm: this crate has no unsafe).

mod backend;
mod device;
mod worker;

pub use backend::FreePages;
pub use device::{features, Balloon, BalloonCounters, CONFIG_SIZE, QUEUE_SIZE};

#[cfg(test)]
mod tests;
