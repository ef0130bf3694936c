//! virtio-fs: a host directory served to the guest over FUSE.
