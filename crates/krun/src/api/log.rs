//! Logging setup: `krun_set_log_level` and `krun_init_log`, on `log` + `env_logger`.
//!
//! `log` accepts one logger per process, so we install a small forwarding logger once and
//! swap the env_logger behind it on every call: calling either function again reconfigures
//! logging instead of failing (upstream panics on a second call).

use std::fs::File;
use std::io::Write;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::{Once, PoisonError, RwLock};

use env_logger::{Builder, Env, Target, WriteStyle};
use log::{LevelFilter, Log, Metadata, Record};

use crate::ffi::{guard, ApiError};

/// `KRUN_LOG_TARGET_DEFAULT`: log to stderr.
pub const KRUN_LOG_TARGET_DEFAULT: i32 = -1;
/// `KRUN_LOG_OPTION_NO_ENV`: ignore `RUST_LOG` and `RUST_LOG_STYLE`.
pub const KRUN_LOG_OPTION_NO_ENV: u32 = 1;

static CURRENT: RwLock<Option<env_logger::Logger>> = RwLock::new(None);
static INSTALL: Once = Once::new();

struct Forwarder;

impl Log for Forwarder {
    fn enabled(&self, metadata: &Metadata) -> bool {
        let cur = CURRENT.read().unwrap_or_else(PoisonError::into_inner);
        cur.as_ref().is_some_and(|l| l.enabled(metadata))
    }

    fn log(&self, record: &Record) {
        let cur = CURRENT.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = cur.as_ref() {
            l.log(record);
        }
    }

    fn flush(&self) {
        let cur = CURRENT.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = cur.as_ref() {
            l.flush();
        }
    }
}

static FORWARDER: Forwarder = Forwarder;

/// Maps `KRUN_LOG_LEVEL_*` to a filter; like upstream, anything above TRACE means TRACE.
fn level_filter(level: u32) -> LevelFilter {
    match level {
        0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

fn write_style(style: u32) -> Result<WriteStyle, ApiError> {
    match style {
        0 => Ok(WriteStyle::Auto),
        1 => Ok(WriteStyle::Always),
        2 => Ok(WriteStyle::Never),
        _ => Err(ApiError::Invalid {
            what: "style",
            why: format!("{style} is not a KRUN_LOG_STYLE_* value"),
        }),
    }
}

/// Where log lines go. A caller's fd is duplicated so the caller keeps ownership of its own
/// descriptor and reconfiguring never closes it.
fn target(fd: RawFd) -> Result<Target, ApiError> {
    match fd {
        KRUN_LOG_TARGET_DEFAULT | 2 => Ok(Target::Stderr),
        1 => Ok(Target::Stdout),
        fd if fd <= 0 => Err(ApiError::Invalid {
            what: "target_fd",
            why: format!("{fd} is neither KRUN_LOG_TARGET_DEFAULT nor a writable fd"),
        }),
        fd => {
            // SAFETY: fd >= 3 is only borrowed for the duration of try_clone_to_owned, which
            // duplicates it (F_DUPFD_CLOEXEC); an invalid fd makes that call fail with EBADF.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            let owned = borrowed.try_clone_to_owned().map_err(|e| ApiError::Io {
                what: format!("target_fd {fd}"),
                source: e,
            })?;
            let sink: Box<dyn Write + Send> = Box::new(File::from(owned));
            Ok(Target::Pipe(sink))
        }
    }
}

/// Builds the env_logger for these settings and makes it the active logger.
fn install(level: u32, style: WriteStyle, target: Target, use_env: bool) {
    let default = level_filter(level);
    let mut builder = if use_env {
        Builder::from_env(Env::default().default_filter_or(default.as_str()))
    } else {
        let mut b = Builder::new();
        b.filter_level(default);
        b
    };
    if !use_env || std::env::var_os("RUST_LOG_STYLE").is_none() {
        builder.write_style(style);
    }
    let logger = builder.format_timestamp_micros().target(target).build();
    let max = logger.filter();
    *CURRENT.write().unwrap_or_else(PoisonError::into_inner) = Some(logger);
    INSTALL.call_once(|| {
        // Fails only if the host program installed its own `log` logger first; then our
        // lines go to that logger, which is what such a program wants.
        let _ = log::set_logger(&FORWARDER);
    });
    log::set_max_level(max);
}

/// Whether anyone configured logging: `krun_set_log_level` / `krun_init_log` (even to OFF),
/// or the host program's own `log` logger with a level.
pub fn configured() -> bool {
    INSTALL.is_completed() || log::max_level() != LevelFilter::Off
}

/// Flushes the active logger (before the process exits).
pub fn flush() {
    log::logger().flush();
}

/// Sets the log level (`KRUN_LOG_LEVEL_OFF` 0 .. `KRUN_LOG_LEVEL_TRACE` 5; larger values
/// mean TRACE) and logs to stderr. `RUST_LOG`, when set, overrides the level. May be called
/// again to change the level. Returns 0.
#[no_mangle]
pub extern "C" fn krun_set_log_level(level: u32) -> i32 {
    guard("krun_set_log_level", || {
        install(level, WriteStyle::Auto, Target::Stderr, true);
        Ok(0)
    })
}

/// Configures logging in full. `target_fd`: `KRUN_LOG_TARGET_DEFAULT` (-1, stderr) or a
/// writable fd (1 for stdout; other fds are duplicated, so the caller may close its own).
/// `level`: `KRUN_LOG_LEVEL_*`. `style`: `KRUN_LOG_STYLE_*` (colours). `options`: 0 or
/// `KRUN_LOG_OPTION_NO_ENV` to ignore `RUST_LOG`. May be called again to reconfigure.
/// Returns 0; -EINVAL for fd 0 or below -1, an unknown style or unknown option bits; -EBADF
/// if `target_fd` is not open.
#[no_mangle]
pub extern "C" fn krun_init_log(target_fd: i32, level: u32, style: u32, options: u32) -> i32 {
    guard("krun_init_log", || {
        let style = write_style(style)?;
        if options & !KRUN_LOG_OPTION_NO_ENV != 0 {
            return Err(ApiError::Invalid {
                what: "options",
                why: format!("unknown KRUN_LOG_OPTION_* bits {options:#x}"),
            });
        }
        let target = target(target_fd)?;
        install(level, style, target, options & KRUN_LOG_OPTION_NO_ENV == 0);
        Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_log_twice_reconfigures() {
        assert_eq!(krun_set_log_level(1), 0);
        assert_eq!(krun_init_log(-1, 2, 2, KRUN_LOG_OPTION_NO_ENV), 0);
        assert_eq!(log::max_level(), LevelFilter::Warn);
        assert_eq!(krun_set_log_level(0), 0);
    }

    #[test]
    fn init_log_bad_args_fail() {
        assert_eq!(krun_init_log(0, 1, 0, 0), -libc::EINVAL);
        assert_eq!(krun_init_log(-2, 1, 0, 0), -libc::EINVAL);
        assert_eq!(krun_init_log(-1, 1, 3, 0), -libc::EINVAL);
        assert_eq!(krun_init_log(-1, 1, 0, 2), -libc::EINVAL);
        assert_eq!(krun_init_log(999, 1, 0, 0), -libc::EBADF);
    }
}
