//! PID 1's job while the workload runs: reap every zombie, pass termination signals on to the
//! workload, and turn its wait status into the exit code the VMM reports.
//!
//! The signals are blocked and taken with `sigwaitinfo`, so no handler runs in PID 1. The
//! kernel drops default-action signals sent to init, but blocked ones stay pending, which is
//! what makes this work without handlers.

use std::io;

use crate::exec::{PreparedExec, EXIT_SETUP_FAILED};

/// Signals PID 1 forwards to the workload instead of acting on them.
pub const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// The blocked set, and the mask to give back to the workload before it execs.
pub struct SignalMask {
    blocked: libc::sigset_t,
    previous: libc::sigset_t,
}

impl SignalMask {
    /// Blocks SIGCHLD and the forwarded signals in the calling (single-threaded) process.
    pub fn block() -> io::Result<Self> {
        let mut blocked = sys::empty_set();
        for sig in FORWARDED.iter().chain(&[libc::SIGCHLD]) {
            sys::add_signal(&mut blocked, *sig);
        }
        let previous = sys::set_mask(libc::SIG_BLOCK, &blocked)?;
        Ok(SignalMask { blocked, previous })
    }

    /// Restores the original mask (the child inherits the blocked one across fork and exec).
    fn restore(&self) {
        let _ = sys::set_mask(libc::SIG_SETMASK, &self.previous);
    }
}

/// Forks; the child becomes the workload and never returns. Returns the child's pid.
pub fn spawn(prepared: &PreparedExec, mask: &SignalMask) -> io::Result<libc::pid_t> {
    match sys::fork()? {
        0 => {
            mask.restore();
            prepared.run()
        }
        child => Ok(child),
    }
}

/// Waits until `child` ends, reaping any other process meanwhile, and returns its exit code.
pub fn supervise(child: libc::pid_t, mask: &SignalMask) -> i32 {
    loop {
        if let Some(code) = reap(child) {
            return code;
        }
        match sys::wait_signal(&mask.blocked) {
            Ok(libc::SIGCHLD) => {}
            Ok(sig) => {
                if let Err(err) = sys::kill(child, sig) {
                    crate::diag!(
                        "cannot forward signal {sig} to the workload: {}",
                        crate::exec::describe(&err)
                    );
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                crate::diag!(
                    "sigwaitinfo failed ({}); waiting without forwarding",
                    crate::exec::describe(&err)
                );
                return wait_blocking(child);
            }
        }
    }
}

/// Reaps every exited child without blocking; `Some(code)` once `child` is among them.
fn reap(child: libc::pid_t) -> Option<i32> {
    let mut result = None;
    loop {
        match sys::wait_any(libc::WNOHANG) {
            Ok(Some((pid, status))) if pid == child => {
                result = exit_code_from_status(status).or(result);
            }
            Ok(Some(_)) => {}
            Ok(None) => return result,
            // No children left at all: the workload is gone without us seeing its status.
            Err(_) => return result.or(Some(EXIT_SETUP_FAILED)),
        }
    }
}

fn wait_blocking(child: libc::pid_t) -> i32 {
    loop {
        match sys::wait_any(0) {
            Ok(Some((pid, status))) if pid == child => {
                if let Some(code) = exit_code_from_status(status) {
                    return code;
                }
            }
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return EXIT_SETUP_FAILED,
        }
    }
}

/// Shell convention: the exit status, or 128 + the signal that killed it. `None` for
/// stop/continue notifications, which are not an end.
pub fn exit_code_from_status(status: libc::c_int) -> Option<i32> {
    if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Some(128 + libc::WTERMSIG(status))
    } else {
        None
    }
}

/// One `unsafe` call each.
mod sys {
    use std::io;

    pub fn empty_set() -> libc::sigset_t {
        // SAFETY: sigset_t is plain data; sigemptyset fully initialises the zeroed value.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable sigset_t.
        unsafe { libc::sigemptyset(&mut set) };
        set
    }

    pub fn add_signal(set: &mut libc::sigset_t, sig: libc::c_int) {
        // SAFETY: `set` is an initialised sigset_t and `sig` a valid signal number.
        unsafe { libc::sigaddset(set, sig) };
    }

    /// Changes the mask, returning the previous one.
    pub fn set_mask(how: libc::c_int, set: &libc::sigset_t) -> io::Result<libc::sigset_t> {
        let mut previous = empty_set();
        // SAFETY: both pointers refer to valid sigset_t values for the duration of the call.
        let ret = unsafe { libc::sigprocmask(how, set, &mut previous) };
        if ret == 0 {
            Ok(previous)
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn wait_signal(set: &libc::sigset_t) -> io::Result<libc::c_int> {
        // SAFETY: `set` is valid; a null siginfo pointer is allowed.
        let sig = unsafe { libc::sigwaitinfo(set, std::ptr::null_mut()) };
        if sig < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(sig)
        }
    }

    pub fn fork() -> io::Result<libc::pid_t> {
        // SAFETY: PID 1 is single-threaded, so the child may keep running Rust code.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(pid)
        }
    }

    pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
        // SAFETY: plain integers; `pid` is our own child.
        if unsafe { libc::kill(pid, sig) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `waitpid(-1)`: `Ok(None)` when children exist but none has changed state (WNOHANG).
    pub fn wait_any(flags: libc::c_int) -> io::Result<Option<(libc::pid_t, libc::c_int)>> {
        let mut status = 0;
        // SAFETY: `status` is a valid, writable int.
        let pid = unsafe { libc::waitpid(-1, &mut status, flags) };
        match pid {
            0 => Ok(None),
            pid if pid > 0 => Ok(Some((pid, status))),
            _ => Err(io::Error::last_os_error()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wait statuses as the kernel encodes them (exit code in bits 8-15, signal in 0-6).
    fn exited(code: i32) -> i32 {
        code << 8
    }

    #[test]
    fn exit_code_from_status_exit_codes_pass_through() {
        for code in [0, 1, 7, 126, 127, 255] {
            assert_eq!(exit_code_from_status(exited(code)), Some(code));
        }
    }

    #[test]
    fn exit_code_from_status_signal_is_128_plus_n() {
        assert_eq!(exit_code_from_status(libc::SIGKILL), Some(137));
        assert_eq!(exit_code_from_status(libc::SIGTERM | 0x80), Some(143)); // core dumped
    }

    #[test]
    fn exit_code_from_status_stopped_is_none() {
        assert_eq!(exit_code_from_status((libc::SIGSTOP << 8) | 0x7f), None);
        assert_eq!(exit_code_from_status(0xffff), None); // continued
    }
}
