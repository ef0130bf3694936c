//! The workload init starts in the guest: program, arguments, environment, working
//! directory, rlimits, user and group.

use std::ffi::c_char;

use crate::ctx;
use crate::ffi::{self, guard};

/// Sets the program the guest's init runs (`exec_path`, looked up in the guest), its
/// arguments `argv` (a NULL-terminated array, without the program name; NULL for none) and
/// its environment `envp` (a NULL-terminated array of `KEY=VALUE`; NULL to pass this
/// process's environment at start time). Returns 0, -ENOENT for an unknown context, -EINVAL
/// for a NULL or empty `exec_path`, non-UTF-8 text or an `envp` entry without `=`, -E2BIG
/// for an array with no NULL terminator.
///
/// # Safety
/// `exec_path` is NULL or NUL-terminated; each array is NULL or NULL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_set_exec(
    ctx_id: u32,
    exec_path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> i32 {
    guard("krun_set_exec", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        let path = unsafe { ffi::c_str(exec_path, "exec_path") }?.to_string();
        // SAFETY: NULL or NULL-terminated per this function's contract.
        let args = unsafe { ffi::opt_c_str_array(argv, "argv") }?.unwrap_or_default();
        // SAFETY: as above.
        let env = unsafe { ffi::opt_c_str_array(envp, "envp") }?;
        ctx::with(ctx_id, |c| c.set_exec(path, args, env)).map(|()| 0)
    })
}

/// Sets the workload's environment alone: `envp` is a NULL-terminated array of `KEY=VALUE`,
/// or NULL to pass this process's environment at start time. Returns 0, -ENOENT for an
/// unknown context, -EINVAL for non-UTF-8 text or an entry without `=` (or with an empty
/// KEY), -E2BIG for an array with no terminator.
///
/// # Safety
/// `envp` is NULL or a NULL-terminated array of NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn krun_set_env(ctx_id: u32, envp: *const *const c_char) -> i32 {
    guard("krun_set_env", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NULL-terminated per this function's contract.
        let env = unsafe { ffi::opt_c_str_array(envp, "envp") }?;
        ctx::with(ctx_id, |c| c.set_env(env)).map(|()| 0)
    })
}

/// Sets the workload's working directory, a path inside the guest. Returns 0, -ENOENT for
/// an unknown context, -EINVAL for a NULL, empty or non-UTF-8 path.
///
/// # Safety
/// `workdir_path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_set_workdir(ctx_id: u32, workdir_path: *const c_char) -> i32 {
    guard("krun_set_workdir", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        let dir = unsafe { ffi::c_str(workdir_path, "workdir_path") }?.to_string();
        ctx::with(ctx_id, |c| c.set_workdir(dir)).map(|()| 0)
    })
}

/// Sets resource limits for the workload from a NULL-terminated array of
/// `RESOURCE=CUR:MAX` entries, RESOURCE being a Linux resource number (`"7=1024:4096"`) or
/// name (`"RLIMIT_NOFILE=1024:4096"`) and CUR <= MAX. Replaces earlier limits. Returns 0,
/// -ENOENT for an unknown context, -EINVAL for a NULL array or a malformed entry, -E2BIG
/// for an array with no terminator.
///
/// # Safety
/// `rlimits` is NULL or a NULL-terminated array of NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn krun_set_rlimits(ctx_id: u32, rlimits: *const *const c_char) -> i32 {
    guard("krun_set_rlimits", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NULL-terminated per this function's contract.
        let entries = unsafe { ffi::c_str_array(rlimits, "rlimits") }?;
        ctx::with(ctx_id, |c| c.set_rlimits(&entries)).map(|()| 0)
    })
}

/// Makes the VMM process switch to user `uid` (as upstream) once it has opened /dev/kvm, the
/// shared directories and the console, before the guest runs; files the guest creates on a
/// share then belong to `uid` on the host. The guest workload itself still runs as root.
/// Returns 0, -ENOENT for an unknown context, -EINVAL for `(uid_t)-1` (which setuid(2)
/// treats as "unchanged", not as an id); `krun_start_enter` fails with the errno of
/// setuid(2) if the switch is refused.
#[no_mangle]
pub extern "C" fn krun_setuid(ctx_id: u32, uid: libc::uid_t) -> i32 {
    guard("krun_setuid", || {
        ctx::with(ctx_id, |c| c.set_vmm_ids(Some(uid), None)).map(|()| 0)
    })
}

/// Makes the VMM process switch to group `gid` (as upstream), at the same point as
/// `krun_setuid` and before it. Returns 0, -ENOENT for an unknown context, -EINVAL for
/// `(gid_t)-1`; `krun_start_enter` fails with the errno of setgid(2) if the switch is
/// refused.
#[no_mangle]
pub extern "C" fn krun_setgid(ctx_id: u32, gid: libc::gid_t) -> i32 {
    guard("krun_setgid", || {
        ctx::with(ctx_id, |c| c.set_vmm_ids(None, Some(gid))).map(|()| 0)
    })
}
