//! Creates, configures and frees a libkrun context through krun-sys, the way Rust FFI
//! consumers (microsandbox, boxlite) do, and checks every return value. Run by
//! tests/abi/run.sh with PKG_CONFIG_PATH pointing at the installed libkrun.pc.

use std::ffi::{c_char, CString};
use std::process::ExitCode;
use std::ptr;

use krun_sys as k;

/// Prints one line for a check; returns 1 if it failed.
fn check(what: &str, got: i32, want: i32) -> u32 {
    if got == want {
        println!("ok   {what} = {got}");
        0
    } else {
        println!("FAIL {what} = {got}, expected {want}");
        1
    }
}

fn main() -> ExitCode {
    let mut failures = 0u32;
    let root = CString::new("/").expect("no NUL");
    let exec = CString::new("/bin/true").expect("no NUL");
    let arg = CString::new("--version").expect("no NUL");
    let env = CString::new("HOME=/root").expect("no NUL");
    let workdir = CString::new("/tmp").expect("no NUL");
    let argv: [*const c_char; 2] = [arg.as_ptr(), ptr::null()];
    let envp: [*const c_char; 2] = [env.as_ptr(), ptr::null()];

    // SAFETY: every pointer passed below is NULL or points to a live, NUL-terminated
    // string or NULL-terminated array owned by this function.
    unsafe {
        failures += check("krun_set_log_level(0)", k::krun_set_log_level(0), 0);
        let ctx = k::krun_create_ctx();
        if ctx < 0 {
            println!("FAIL krun_create_ctx = {ctx}");
            return ExitCode::FAILURE;
        }
        let ctx = ctx as u32;
        failures += check("krun_set_vm_config", k::krun_set_vm_config(ctx, 1, 256), 0);
        failures += check("krun_set_root", k::krun_set_root(ctx, root.as_ptr()), 0);
        failures += check(
            "krun_set_exec",
            k::krun_set_exec(ctx, exec.as_ptr(), argv.as_ptr(), envp.as_ptr()),
            0,
        );
        failures += check("krun_set_env", k::krun_set_env(ctx, envp.as_ptr()), 0);
        failures += check(
            "krun_set_workdir",
            k::krun_set_workdir(ctx, workdir.as_ptr()),
            0,
        );
        failures += check(
            "krun_set_workdir(NULL)",
            k::krun_set_workdir(ctx, ptr::null()),
            -libc_einval(),
        );
        failures += check("krun_free_ctx", k::krun_free_ctx(ctx), 0);
        failures += check(
            "krun_free_ctx(again)",
            k::krun_free_ctx(ctx),
            -libc_enoent(),
        );
    }
    if failures == 0 {
        println!("krun-sys consumer: all checks passed");
        ExitCode::SUCCESS
    } else {
        println!("krun-sys consumer: {failures} failed");
        ExitCode::FAILURE
    }
}

/// EINVAL and ENOENT on Linux (kept local so the crate needs only krun-sys).
const fn libc_einval() -> i32 {
    22
}

const fn libc_enoent() -> i32 {
    2
}
