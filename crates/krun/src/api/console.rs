//! Consoles: the implicit console, output file, kernel console, explicit virtio consoles and
//! serial ports.

use std::ffi::{c_char, c_int};
use std::os::fd::BorrowedFd;
use std::path::PathBuf;

use vmm::config::{ConsolePort, SerialConsole, VirtioConsole};

use crate::ctx;
use crate::ffi::{self, guard, ApiError};

/// Writes the guest console's output to the file `c_filepath` instead of this process's
/// stdout. Returns 0, -ENOENT for an unknown context, -EINVAL for a NULL, empty or non-UTF-8
/// path, -EEXIST if already set.
///
/// # Safety
/// `c_filepath` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_set_console_output(ctx_id: u32, c_filepath: *const c_char) -> i32 {
    guard("krun_set_console_output", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        let path = PathBuf::from(unsafe { ffi::c_str(c_filepath, "c_filepath") }?);
        ctx::with(ctx_id, |c| c.set_console_output(path)).map(|()| 0)
    })
}

/// Removes the console libkrun adds by default (wired to this process's stdio). Returns 0
/// or -ENOENT for an unknown context.
#[no_mangle]
pub extern "C" fn krun_disable_implicit_console(ctx_id: u32) -> i32 {
    guard("krun_disable_implicit_console", || {
        ctx::with(ctx_id, |c| {
            c.console.implicit_disabled = true;
            Ok(0)
        })
    })
}

/// Sets the kernel's `console=` device (e.g. `hvc0`, `ttyS0`). Returns 0, -ENOENT for an
/// unknown context, -EINVAL for a NULL or non-UTF-8 string or one that is not a single
/// device name (empty, spaces, options such as `,115200`, other kernel arguments).
///
/// # Safety
/// `console_id` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_set_kernel_console(ctx_id: u32, console_id: *const c_char) -> i32 {
    guard("krun_set_kernel_console", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        let id = unsafe { ffi::c_str(console_id, "console_id") }?;
        ctx::with(ctx_id, |c| c.set_kernel_console(id)).map(|()| 0)
    })
}

/// Adds a virtio console with upstream's automatic ports applied to `input_fd`, `output_fd`
/// and `err_fd`: port 0 (a console) on the first of them that is a terminal, and a
/// `krun-stdin`/`krun-stdout`/`krun-stderr` port for each that is not. A negative fd gets
/// no port. Returns 0 or -ENOENT for an unknown context.
#[no_mangle]
pub extern "C" fn krun_add_virtio_console_default(
    ctx_id: u32,
    input_fd: c_int,
    output_fd: c_int,
    err_fd: c_int,
) -> i32 {
    guard("krun_add_virtio_console_default", || {
        let console = VirtioConsole::Default {
            input_fd,
            output_fd,
            err_fd,
        };
        ctx::with(ctx_id, |c| c.add_virtio_console(console)).map(|_| 0)
    })
}

/// Adds a legacy serial port wired to `input_fd` and `output_fd`. Returns 0, -ENOENT for
/// an unknown context, -EINVAL for a negative fd.
#[no_mangle]
pub extern "C" fn krun_add_serial_console_default(
    ctx_id: u32,
    input_fd: c_int,
    output_fd: c_int,
) -> i32 {
    guard("krun_add_serial_console_default", || {
        let serial = SerialConsole {
            input_fd,
            output_fd,
        };
        ctx::with(ctx_id, |c| c.add_serial_console(serial)).map(|()| 0)
    })
}

/// Adds a virtio console with no ports yet and returns its console id (>= 0) for
/// `krun_add_console_port_*`, or -ENOENT for an unknown context.
#[no_mangle]
pub extern "C" fn krun_add_virtio_console_multiport(ctx_id: u32) -> i32 {
    guard("krun_add_virtio_console_multiport", || {
        let id = ctx::with(ctx_id, |c| {
            c.add_virtio_console(VirtioConsole::Multiport(Vec::new()))
        })?;
        Ok(id as i32)
    })
}

/// Adds a port named `name` (NULL: unnamed) wired to the terminal `tty_fd` (raw mode while
/// the VM runs) to multiport console `console_id`; the guest sees a console port, an hvc
/// tty. Returns 0, -ENOENT for an unknown context, -EINVAL for a negative
/// fd or non-UTF-8 name, -ENOTTY if `tty_fd` is not a terminal, -ENODEV if `console_id` is
/// not a multiport console.
///
/// # Safety
/// `name` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_add_console_port_tty(
    ctx_id: u32,
    console_id: u32,
    name: *const c_char,
    tty_fd: c_int,
) -> i32 {
    guard("krun_add_console_port_tty", || {
        ctx::check(ctx_id)?;
        let fd = ffi::fd(tty_fd, "tty_fd")?;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        let name = unsafe { ffi::opt_c_str(name, "name") }?
            .unwrap_or("")
            .to_string();
        if !is_terminal(fd) {
            return Err(ApiError::Io {
                what: format!("tty_fd {fd}"),
                source: std::io::Error::from_raw_os_error(libc::ENOTTY),
            });
        }
        let port = ConsolePort::Tty { name, fd };
        ctx::with(ctx_id, |c| c.add_console_port(console_id, port)).map(|()| 0)
    })
}

fn is_terminal(fd: c_int) -> bool {
    use std::io::IsTerminal;
    // SAFETY: the fd is only borrowed for one isatty() call; an invalid fd yields false.
    unsafe { BorrowedFd::borrow_raw(fd) }.is_terminal()
}

/// Adds a port named `name` (NULL: unnamed) reading guest input from `input_fd` and
/// writing guest output to `output_fd` to multiport console `console_id`; a negative fd
/// means no input (or no output). Returns 0, -ENOENT for an unknown context, -EINVAL for a
/// non-UTF-8 name, -ENODEV if `console_id` is not a multiport console.
///
/// # Safety
/// `name` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_add_console_port_inout(
    ctx_id: u32,
    console_id: u32,
    name: *const c_char,
    input_fd: c_int,
    output_fd: c_int,
) -> i32 {
    guard("krun_add_console_port_inout", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        let name = unsafe { ffi::opt_c_str(name, "name") }?
            .unwrap_or("")
            .to_string();
        let port = ConsolePort::InOut {
            name,
            input_fd,
            output_fd,
        };
        ctx::with(ctx_id, |c| c.add_console_port(console_id, port)).map(|()| 0)
    })
}
