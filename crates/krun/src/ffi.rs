//! The FFI boundary: the panic guard every export runs in, C argument decoding, and the one
//! function that turns an error into a negative errno (with [`crate::errno`] for the VMM's
//! errors).

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use vmm::config::{ConfigError, Shown};

/// Longest NULL-terminated array we read before deciding the terminator is missing
/// (upstream reads at most 4096 entries).
pub const MAX_ARRAY_LEN: usize = 4096;

/// Why a C call failed. Every variant names the argument or object concerned.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0} is NULL")]
    Null(&'static str),
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("{0} has no NULL terminator within {MAX_ARRAY_LEN} entries")]
    TooLong(&'static str),
    #[error("no context with id {0}")]
    NoContext(u32),
    #[error("context ids are exhausted")]
    IdsExhausted,
    #[error("{0} is not supported by this libkrun build")]
    Unsupported(&'static str),
    #[error("{what} is invalid: {why}")]
    Invalid { what: &'static str, why: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} already exists")]
    Exists { what: String },
    #[error("{0} is not available on this host")]
    NotAvailable(&'static str),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Host(#[from] vmm::host::HostError),
    #[error("cannot start the VM: {0}")]
    Vm(#[from] vmm::VmError),
    /// A failure of a run that had started (a device that failed, a panic in the VMM).
    #[error(transparent)]
    Run(krun_vm::VmError),
    #[error("the VMM panicked while creating the VM: {0}")]
    BuildPanicked(String),
}

impl From<krun_vm::BuildError> for ApiError {
    fn from(e: krun_vm::BuildError) -> Self {
        match e {
            krun_vm::BuildError::Create(e) => ApiError::Vm(e),
            krun_vm::BuildError::Panicked(text) => ApiError::BuildPanicked(text),
            // Vm::from_config reports only the two above; a builder error is a bad value.
            other => ApiError::Invalid {
                what: "the VM configuration",
                why: other.to_string(),
            },
        }
    }
}

impl From<krun_vm::VmError> for ApiError {
    fn from(e: krun_vm::VmError) -> Self {
        match e {
            krun_vm::VmError::Run(e) => ApiError::Vm(e),
            other => ApiError::Run(other),
        }
    }
}

impl ApiError {
    /// The errno (positive) a C caller sees, negated, for this error; the VMM's own errors
    /// are mapped in [`crate::errno`].
    pub fn errno(&self) -> i32 {
        match self {
            ApiError::Null(_) | ApiError::NotUtf8(_) | ApiError::Invalid { .. } => libc::EINVAL,
            ApiError::TooLong(_) => libc::E2BIG,
            ApiError::NoContext(_) => libc::ENOENT,
            ApiError::IdsExhausted => libc::ENOSPC,
            ApiError::Unsupported(_) => libc::ENOTSUP,
            ApiError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            ApiError::Exists { .. } => libc::EEXIST,
            ApiError::NotAvailable(_) => libc::ENODEV,
            ApiError::Config(e) => crate::errno::config(e),
            ApiError::Host(e) => crate::errno::host(e),
            ApiError::Vm(e) => crate::errno::vm(e),
            ApiError::Run(krun_vm::VmError::Device { .. }) => libc::EIO,
            ApiError::Run(_) | ApiError::BuildPanicked(_) => libc::EINVAL,
        }
    }
}

/// The error and every `source()` below it, joined by ": ", for a single log line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

/// Runs one export's body: logs the call at debug, turns an error into `-errno` with one
/// error line naming the function, and turns a panic into -EINVAL (a panic unwinding into C
/// would abort the caller's process, crun included).
pub fn guard(func: &'static str, body: impl FnOnce() -> Result<i32, ApiError>) -> i32 {
    run_guarded(func, body, false)
}

/// As [`guard`], but when the caller configured no logging (no `krun_set_log_level` or
/// `krun_init_log`, no `log` logger of its own) the error line still goes to stderr, as
/// upstream prints its start errors: for `krun_start_enter`.
pub fn guard_loud(func: &'static str, body: impl FnOnce() -> Result<i32, ApiError>) -> i32 {
    run_guarded(func, body, true)
}

fn run_guarded(
    func: &'static str,
    body: impl FnOnce() -> Result<i32, ApiError>,
    loud: bool,
) -> i32 {
    log::debug!(target: "krun::api", "{func}");
    let (line, errno) = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(ret)) => return ret,
        Ok(Err(err)) => (format!("{func}: {}", error_chain(&err)), err.errno()),
        Err(_) => (
            format!("{func}: internal error (panic caught at the C boundary)"),
            libc::EINVAL,
        ),
    };
    if loud && !crate::api::log::configured() {
        eprintln!("libkrun: {line}");
    } else {
        log::error!("{line}");
    }
    -errno
}

/// The one warning line of a setting this build accepts and ignores (what upstream's own
/// builds without the feature do; clients set these unconditionally and abort on errors).
pub fn ignored(func: &'static str, what: &str, why: &str) {
    log::warn!("{func}: ignored: {what} ({why})");
}

/// Requires `path` to be an existing directory: -ENOENT (or the lookup's errno) if it
/// cannot be found, -ENOTDIR if it is something else.
pub fn existing_dir(path: &str, what: &'static str) -> Result<(), ApiError> {
    let io = |source: std::io::Error| ApiError::Io {
        what: format!("{what} {}", Shown(path)),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_dir() {
        return Err(io(std::io::Error::from_raw_os_error(libc::ENOTDIR)));
    }
    Ok(())
}

/// Reads a required C string.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays valid for `'a`.
pub unsafe fn c_str<'a>(ptr: *const c_char, what: &'static str) -> Result<&'a str, ApiError> {
    // SAFETY: forwarded to the caller's contract.
    unsafe { opt_c_str(ptr, what) }?.ok_or(ApiError::Null(what))
}

/// Reads an optional C string (NULL is None).
///
/// # Safety
/// As [`c_str`].
pub unsafe fn opt_c_str<'a>(
    ptr: *const c_char,
    what: &'static str,
) -> Result<Option<&'a str>, ApiError> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str().map(Some).map_err(|_| ApiError::NotUtf8(what))
}

/// Reads a required NULL-terminated array of C strings.
///
/// # Safety
/// `ptr` is NULL or points to an array of C string pointers ending with NULL.
pub unsafe fn c_str_array(
    ptr: *const *const c_char,
    what: &'static str,
) -> Result<Vec<String>, ApiError> {
    // SAFETY: forwarded to the caller's contract.
    unsafe { opt_c_str_array(ptr, what) }?.ok_or(ApiError::Null(what))
}

/// Reads an optional NULL-terminated array of C strings (NULL is None).
///
/// # Safety
/// As [`c_str_array`].
pub unsafe fn opt_c_str_array(
    ptr: *const *const c_char,
    what: &'static str,
) -> Result<Option<Vec<String>>, ApiError> {
    if ptr.is_null() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for i in 0..MAX_ARRAY_LEN {
        // SAFETY: the array is readable up to and including its NULL terminator, and we
        // stop at the first NULL.
        let item = unsafe { *ptr.add(i) };
        if item.is_null() {
            return Ok(Some(out));
        }
        // SAFETY: each non-NULL entry is a NUL-terminated string per the contract.
        out.push(unsafe { c_str(item, what) }?.to_string());
    }
    Err(ApiError::TooLong(what))
}

/// Reads a 6-byte MAC address.
///
/// # Safety
/// `ptr` is NULL or points to at least 6 readable bytes.
pub unsafe fn mac(ptr: *const u8, what: &'static str) -> Result<[u8; 6], ApiError> {
    if ptr.is_null() {
        return Err(ApiError::Null(what));
    }
    let mut mac = [0u8; 6];
    // SAFETY: 6 readable bytes per the contract; `mac` is a distinct local.
    unsafe { std::ptr::copy_nonoverlapping(ptr, mac.as_mut_ptr(), 6) };
    Ok(mac)
}

/// Copies `len` bytes from `ptr` (NULL allowed only when `len` is 0).
///
/// # Safety
/// `ptr` is NULL or points to at least `len` readable bytes.
pub unsafe fn bytes(ptr: *const u8, len: usize, what: &'static str) -> Result<Vec<u8>, ApiError> {
    if len == 0 {
        return Ok(Vec::new());
    }
    if ptr.is_null() {
        return Err(ApiError::Null(what));
    }
    // SAFETY: `len` readable bytes per the contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec())
}

/// Requires a non-NULL pointer whose target we do not read (out-of-scope features).
pub fn non_null<T>(ptr: *const T, what: &'static str) -> Result<(), ApiError> {
    if ptr.is_null() {
        return Err(ApiError::Null(what));
    }
    Ok(())
}

/// Stores `value` through an out-pointer.
///
/// # Safety
/// `ptr` is NULL or valid for a write of `T`.
pub unsafe fn write_out<T>(ptr: *mut T, value: T, what: &'static str) -> Result<(), ApiError> {
    if ptr.is_null() {
        return Err(ApiError::Null(what));
    }
    // SAFETY: non-NULL and writable per the contract.
    unsafe { ptr.write(value) };
    Ok(())
}

/// Rejects a negative file descriptor.
pub fn fd(fd: i32, what: &'static str) -> Result<i32, ApiError> {
    if fd < 0 {
        return Err(ApiError::Invalid {
            what,
            why: format!("{fd} is not a file descriptor"),
        });
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_panic_returns_einval() {
        assert_eq!(guard("t", || panic!("boom")), -libc::EINVAL);
    }

    #[test]
    fn guard_error_returns_negative_errno() {
        assert_eq!(guard("t", || Err(ApiError::NoContext(3))), -libc::ENOENT);
        assert_eq!(guard("t", || Ok(7)), 7);
    }

    #[test]
    fn c_str_array_null_terminated_reads_all() {
        let a = c"a";
        let b = c"bc";
        let arr = [a.as_ptr(), b.as_ptr(), std::ptr::null()];
        // SAFETY: a NULL-terminated array of live C strings.
        let v = unsafe { c_str_array(arr.as_ptr(), "arr") }.unwrap();
        assert_eq!(v, ["a", "bc"]);
    }

    #[test]
    fn c_str_non_utf8_fails_einval() {
        let bad = [0xffu8, 0];
        // SAFETY: a NUL-terminated buffer.
        let err = unsafe { c_str(bad.as_ptr().cast(), "s") }.unwrap_err();
        assert_eq!(err.errno(), libc::EINVAL);
    }

    #[test]
    fn c_str_array_missing_terminator_fails_e2big() {
        let s = c"x";
        let arr = vec![s.as_ptr(); MAX_ARRAY_LEN];
        // SAFETY: MAX_ARRAY_LEN readable entries; the reader stops there.
        let err = unsafe { c_str_array(arr.as_ptr(), "arr") }.unwrap_err();
        assert_eq!(err.errno(), libc::E2BIG);
    }
}
