//! virtio-fs: a host directory served to the guest over FUSE.
//!
//! [`Fs`] is the virtio device (config space, queues, activation), `worker` the thread that
//! turns descriptor chains into FUSE requests for fuse-backend-rs's `Server`, and
//! `filesystem` the passthrough of the host directory with krun's additions (virtual root files such as `/init.krun`,
//! the exit-code ioctl, read-only shares).

mod device;
mod exit_code;
mod filesystem;
mod worker;

pub use device::{Fs, FsConfig, FsError, TAG_LEN};
pub use exit_code::ExitCode;
pub use filesystem::{VirtualFile, INIT_NAME, KRUN_EXIT_CODE_IOCTL};
