//! virtio-blk: disks from raw files, block devices and qcow2/vmdk images.
//!
//! [`Block`] is the device (features, config space, activation); `worker` serves its request
//! queue on the shared [`crate::virtio::Worker`] with a pool of I/O threads; `request` parses
//! and runs one request; [`DiskBackend`] is what a disk is stored in.

mod backend;
mod device;
mod request;
mod worker;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

pub use backend::{open, DiskBackend, DiskOptions, Format, ImageFile, RawFile};
pub use device::{open_disk, Block, BlockConfig, SyncMode};
