//! The one errno check every raw libc call in init goes through.

use std::io;

/// Turns a libc return value into a result: negative means failure with `errno`, anything
/// else is the call's result (an fd, a pid, a signal number, or 0).
pub fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}
