//! Process-wide settings the VMM changes for the VM's sake: the open-file limit and, with
//! `krun_setuid`/`krun_setgid`, the process's ids; and the caller's fds the VMM keeps.

/// A descriptor of our own for the caller's `fd` (stdio, a console or serial fd), so the
/// caller may close theirs; an invalid fd fails with EBADF.
pub fn dup_fd(fd: std::os::fd::RawFd) -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: borrowed only for the dup call; an invalid fd makes dup fail with EBADF.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    Ok(nix::unistd::dup(borrowed)?)
}

/// Why the process ids could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum IdError {
    #[error("cannot switch the VMM process to gid {gid}")]
    Gid {
        gid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot switch the VMM process to uid {uid}")]
    Uid {
        uid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// Raises the soft RLIMIT_NOFILE to the hard limit: the virtio-fs passthrough keeps one fd
/// per inode the guest knows. Failure only costs head room, so it is logged, not returned.
pub fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the live local it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        log::warn!(
            "cannot read RLIMIT_NOFILE: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    if lim.rlim_cur >= lim.rlim_max {
        return;
    }
    let old = lim.rlim_cur;
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit only reads the live local it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        log::warn!(
            "cannot raise RLIMIT_NOFILE from {old}: {}",
            std::io::Error::last_os_error()
        );
    } else {
        log::debug!("RLIMIT_NOFILE raised from {old} to {}", lim.rlim_max);
    }
}

/// Switches the whole process (every thread: glibc broadcasts the change) to `gid`, then
/// `uid`, as upstream libkrun does for `krun_setgid`/`krun_setuid`. The gid goes first: after
/// the uid change the process may no longer change it.
pub fn switch_ids(uid: Option<u32>, gid: Option<u32>) -> Result<(), IdError> {
    if let Some(gid) = gid {
        // SAFETY: setgid takes a plain integer and touches no memory of ours.
        if unsafe { libc::setgid(gid) } != 0 {
            return Err(IdError::Gid {
                gid,
                source: std::io::Error::last_os_error(),
            });
        }
        log::debug!("VMM process now runs as gid {gid}");
    }
    if let Some(uid) = uid {
        // SAFETY: setuid takes a plain integer and touches no memory of ours.
        if unsafe { libc::setuid(uid) } != 0 {
            return Err(IdError::Uid {
                uid,
                source: std::io::Error::last_os_error(),
            });
        }
        log::debug!("VMM process now runs as uid {uid}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_nofile_limit_soft_reaches_hard() {
        raise_nofile_limit();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: writes into a live local.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
    }

    #[test]
    fn switch_ids_none_is_noop() {
        switch_ids(None, None).unwrap();
    }
}
