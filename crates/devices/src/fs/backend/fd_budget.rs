//! The share's share of the process's file descriptors.
//!
//! `PassthroughFs` keeps one `O_PATH` fd per inode the guest looked up and one fd per open
//! file or directory, for as long as the guest keeps them. Without a bound a guest that
//! opens (or merely looks up) files without end takes every fd the process may have, and
//! the VMM's own eventfds, sockets and vsock connections start failing. [`FdBudget`] leaves
//! the top of RLIMIT_NOFILE to the VMM: a request that would create an fd fails with
//! `EMFILE` (what the guest's open(2) gets for a full table) once the fds below the cap are
//! all in use.
//!
//! The check costs three syscalls (getrlimit, dup, close): `dup` returns the lowest free fd
//! number, and when that is at or above the cap, every fd below it is taken.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::resource::{getrlimit, Resource};

/// The fds RLIMIT_NOFILE's soft limit keeps from the guest: an eighth, at least this many.
pub const MIN_RESERVED_FDS: u64 = 128;

/// The cap under a soft RLIMIT_NOFILE of `soft`: fds the guest's requests may bring the
/// process to.
pub fn cap_for(soft: u64) -> u64 {
    soft.saturating_sub((soft / 8).max(MIN_RESERVED_FDS))
}

pub struct FdBudget {
    probe: OwnedFd,
    /// A lower cap than RLIMIT_NOFILE's (tests).
    max: u64,
}

impl FdBudget {
    pub fn new() -> io::Result<Self> {
        Self::with_max(u64::MAX)
    }

    fn with_max(max: u64) -> io::Result<Self> {
        let probe = std::fs::File::open("/dev/null")?.into();
        Ok(Self { probe, max })
    }

    /// Ok when a request may create another fd; `EMFILE` when the fds below the cap are all
    /// in use (or the check itself cannot run: no fd left to probe with).
    pub fn check(&self) -> io::Result<()> {
        let emfile = || io::Error::from_raw_os_error(libc::EMFILE);
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
        let cap = cap_for(soft).min(self.max);
        let lowest_free = nix::unistd::dup(&self.probe).map_err(|_| emfile())?;
        let over = u64::try_from(lowest_free.as_raw_fd()).unwrap_or(u64::MAX) >= cap;
        drop(lowest_free);
        if over {
            log::debug!("virtio-fs: the guest holds every fd below {cap}: EMFILE");
            return Err(emfile());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_keeps_an_eighth_and_at_least_the_minimum() {
        assert_eq!(cap_for(1024), 1024 - 128);
        assert_eq!(cap_for(1 << 20), (1 << 20) - (1 << 17));
        assert_eq!(cap_for(100), 0);
    }

    #[test]
    fn check_passes_with_fds_to_spare() {
        FdBudget::new().unwrap().check().unwrap();
    }

    #[test]
    fn check_fails_emfile_when_every_fd_below_the_cap_is_taken() {
        // A cap of zero: whatever fd is lowest free, it is at or above the cap.
        let err = FdBudget::with_max(0).unwrap().check().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EMFILE));
    }
}
