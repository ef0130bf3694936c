//! The workload's side of the fork: session and console, credentials, working directory and
//! `execvp`-style program search. Nothing here returns: failure ends the process with the
//! status a shell would give (127 not found, 126 found but not runnable, 125 set-up failed).

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;

use thiserror::Error;

use crate::workload::Workload;

/// Searched when the workload environment has no `PATH` (the usual distribution default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Exit status when the program does not exist (as chroot(1), podman and shells use).
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit status when the program exists but cannot be executed.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// Exit status when init could not prepare the workload (cwd, credentials, fork).
pub const EXIT_SETUP_FAILED: i32 = 125;

/// The shell a file without a known executable format is handed to, as `execvp` does.
const SCRIPT_SHELL: &CStr = c"/bin/sh";

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{what} contains a NUL byte")]
pub struct NulError {
    what: &'static str,
}

/// A workload converted to C strings before `fork`, so the child only makes system calls.
#[derive(Debug)]
pub struct PreparedExec {
    program: String,
    candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    workdir: Option<CString>,
    uid: Option<u32>,
    gid: Option<u32>,
}

impl PreparedExec {
    pub fn new(workload: &Workload) -> Result<Self, NulError> {
        let cstring = |text: &str, what| CString::new(text).map_err(|_| NulError { what });
        let program = workload.argv.first().cloned().unwrap_or_default();
        let path = workload
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
        Ok(PreparedExec {
            candidates: candidates(&program, path)
                .iter()
                .map(|c| cstring(c, "the program path"))
                .collect::<Result<_, _>>()?,
            argv: workload
                .argv
                .iter()
                .map(|a| cstring(a, "an argument"))
                .collect::<Result<_, _>>()?,
            envp: workload
                .env
                .iter()
                .map(|(k, v)| cstring(&format!("{k}={v}"), "an environment variable"))
                .collect::<Result<_, _>>()?,
            workdir: workload
                .workdir
                .as_deref()
                .map(|w| cstring(w, "the working directory"))
                .transpose()?,
            uid: workload.uid,
            gid: workload.gid,
            program,
        })
    }

    /// Turns the calling process into the workload. Call in the forked child (or in PID 1
    /// itself for `KRUN_INIT_PID1`).
    pub fn run(&self) -> ! {
        // Rust's runtime ignores SIGPIPE in init; ignored signals survive exec, and a
        // workload must see the default (`yes | head` ends by SIGPIPE).
        sys::default_sigpipe();
        take_console();
        redirect_virtio_ports();
        if let Some(dir) = &self.workdir {
            if let Err(err) = sys::chdir(dir) {
                fail(&format!(
                    "cannot change directory to {dir:?}: {}",
                    describe(&err)
                ));
            }
        }
        if let Err(err) = self.drop_credentials() {
            fail(&format!("cannot switch credentials: {}", describe(&err)));
        }
        let errno = self.search_and_exec();
        crate::diag!(
            "cannot execute '{}': {}",
            self.program,
            describe(&io::Error::from_raw_os_error(errno))
        );
        std::process::exit(exit_code_for_exec_errno(errno));
    }

    fn drop_credentials(&self) -> io::Result<()> {
        if let Some(gid) = self.gid {
            sys::clear_supplementary_groups()?;
            sys::setgid(gid)?;
        }
        if let Some(uid) = self.uid {
            sys::setuid(uid)?;
        }
        Ok(())
    }

    /// Tries each candidate like glibc's `execvp`: keeps going past "not there" errors,
    /// remembers EACCES, runs `ENOEXEC` files with `/bin/sh`. Returns the errno to report.
    fn search_and_exec(&self) -> i32 {
        let argv = pointers(&self.argv);
        let envp = pointers(&self.envp);
        let mut saw_eacces = false;
        let mut last = libc::ENOENT;
        for path in &self.candidates {
            let errno = sys::execve(path, &argv, &envp);
            match errno {
                libc::ENOEXEC => {
                    let mut script_argv = vec![SCRIPT_SHELL.to_owned(), path.clone()];
                    script_argv.extend(self.argv.iter().skip(1).cloned());
                    sys::execve(SCRIPT_SHELL, &pointers(&script_argv), &envp);
                    return libc::ENOEXEC;
                }
                libc::EACCES => saw_eacces = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                other => return other,
            }
            last = errno;
        }
        if saw_eacces {
            libc::EACCES
        } else {
            last
        }
    }
}

/// Paths to try for `program`: itself when it has a `/`, else each `PATH` entry joined with it
/// (an empty entry means the working directory, as POSIX says). Empty program: none.
pub fn candidates(program: &str, path: &str) -> Vec<String> {
    if program.is_empty() {
        return Vec::new();
    }
    if program.contains('/') {
        return vec![program.to_string()];
    }
    path.split(':')
        .map(|dir| match dir {
            "" => program.to_string(),
            dir => format!("{}/{program}", dir.trim_end_matches('/')),
        })
        .collect()
}

/// 127 when nothing was found, 126 for every other reason the exec failed.
pub fn exit_code_for_exec_errno(errno: i32) -> i32 {
    if errno == libc::ENOENT {
        EXIT_NOT_FOUND
    } else {
        EXIT_NOT_EXECUTABLE
    }
}

/// An OS error as `strerror` words, without std's "(os error N)" suffix.
pub fn describe(err: &io::Error) -> String {
    let text = err.to_string();
    match err.raw_os_error() {
        Some(code) => text
            .strip_suffix(&format!(" (os error {code})"))
            .map_or(text.clone(), str::to_string),
        None => text,
    }
}

fn fail(message: &str) -> ! {
    crate::diag!("{message}");
    std::process::exit(EXIT_SETUP_FAILED)
}

fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Makes the workload a session leader with `/dev/console` (hvc0) as its controlling
/// terminal, so ^C on the console reaches it and job control works. Best effort: a missing
/// or non-tty console only costs job control.
fn take_console() {
    // Fails only when already a session leader, which is fine.
    let _ = sys::setsid();
    if let Ok(console) = sys::open(c"/dev/console", libc::O_RDWR | libc::O_NOCTTY) {
        let _ = sys::set_controlling_tty(console);
        if console > 2 {
            sys::close(console);
        }
    }
}

/// Upstream's console-port convention: virtio-console ports named `krun-stdin`,
/// `krun-stdout` and `krun-stderr` replace the workload's standard streams.
fn redirect_virtio_ports() {
    let Ok(ports) = std::fs::read_dir("/sys/class/virtio-ports") else {
        return;
    };
    for port in ports.flatten() {
        let Ok(name) = std::fs::read_to_string(port.path().join("name")) else {
            continue;
        };
        let (target, flags) = match name.trim_end() {
            contract::PORT_STDIN => (0, libc::O_RDONLY),
            contract::PORT_STDOUT => (1, libc::O_WRONLY),
            contract::PORT_STDERR => (2, libc::O_WRONLY),
            _ => continue,
        };
        let mut dev = b"/dev/".to_vec();
        dev.extend_from_slice(port.file_name().as_bytes());
        let Ok(dev) = CString::new(dev) else {
            continue;
        };
        if let Ok(fd) = sys::open(&dev, flags) {
            if fd != target {
                let _ = sys::dup2(fd, target);
                sys::close(fd);
            }
        }
    }
}

/// Thin wrappers over the libc calls above, one `unsafe` each.
mod sys {
    use std::ffi::CStr;
    use std::io;

    fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    }

    pub fn chdir(dir: &CStr) -> io::Result<()> {
        // SAFETY: `dir` is a valid NUL-terminated string for the duration of the call.
        check(unsafe { libc::chdir(dir.as_ptr()) }).map(drop)
    }

    pub fn default_sigpipe() {
        // SAFETY: installs the default disposition; no handler code is involved.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }

    pub fn setsid() -> io::Result<()> {
        // SAFETY: no arguments; only changes this process's session.
        check(unsafe { libc::setsid() }).map(drop)
    }

    pub fn open(path: &CStr, flags: libc::c_int) -> io::Result<libc::c_int> {
        // SAFETY: `path` is NUL-terminated; the returned fd is owned by the caller.
        check(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })
    }

    pub fn close(fd: libc::c_int) {
        // SAFETY: the caller owns `fd` and does not use it afterwards.
        unsafe { libc::close(fd) };
    }

    pub fn dup2(from: libc::c_int, to: libc::c_int) -> io::Result<()> {
        // SAFETY: plain descriptor numbers; dup2 clears FD_CLOEXEC on `to`.
        check(unsafe { libc::dup2(from, to) }).map(drop)
    }

    pub fn set_controlling_tty(fd: libc::c_int) -> io::Result<()> {
        // SAFETY: TIOCSCTTY takes an int by value (1: take it even from another session).
        check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 1 as libc::c_int) }).map(drop)
    }

    pub fn clear_supplementary_groups() -> io::Result<()> {
        // SAFETY: a zero-length list; the pointer is not read.
        check(unsafe { libc::setgroups(0, std::ptr::null()) }).map(drop)
    }

    pub fn setgid(gid: u32) -> io::Result<()> {
        // SAFETY: plain integer argument.
        check(unsafe { libc::setgid(gid) }).map(drop)
    }

    pub fn setuid(uid: u32) -> io::Result<()> {
        // SAFETY: plain integer argument.
        check(unsafe { libc::setuid(uid) }).map(drop)
    }

    /// Returns only on failure, with the errno.
    pub fn execve(path: &CStr, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> i32 {
        // SAFETY: `argv` and `envp` are NULL-terminated arrays (built by `pointers`) of
        // pointers into CStrings that the caller keeps alive across the call.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENOEXEC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_name_is_searched_in_path_order() {
        assert_eq!(
            candidates("ls", "/usr/bin:/bin/:"),
            vec!["/usr/bin/ls", "/bin/ls", "ls"]
        );
    }

    #[test]
    fn candidates_path_with_slash_is_used_as_is() {
        assert_eq!(candidates("./run", "/bin"), vec!["./run"]);
        assert_eq!(candidates("/bin/echo", "/x"), vec!["/bin/echo"]);
    }

    #[test]
    fn candidates_empty_program_has_none() {
        assert!(candidates("", DEFAULT_PATH).is_empty());
    }

    #[test]
    fn exit_code_for_exec_errno_enoent_is_127() {
        assert_eq!(exit_code_for_exec_errno(libc::ENOENT), 127);
    }

    #[test]
    fn exit_code_for_exec_errno_other_errors_are_126() {
        for errno in [
            libc::EACCES,
            libc::ENOEXEC,
            libc::ENOTDIR,
            libc::ELOOP,
            libc::E2BIG,
        ] {
            assert_eq!(exit_code_for_exec_errno(errno), 126, "errno {errno}");
        }
    }

    #[test]
    fn describe_os_error_drops_suffix() {
        let err = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(describe(&err), "No such file or directory");
    }

    fn workload(argv: &[&str], env: &[(&str, &str)]) -> Workload {
        Workload {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            workdir: None,
            rlimits: Vec::new(),
            uid: None,
            gid: None,
            hostname: "h".into(),
            exec_as_pid1: false,
            tmpfs: Vec::new(),
        }
    }

    #[test]
    fn prepared_exec_uses_workload_path() {
        let p = PreparedExec::new(&workload(&["sh"], &[("PATH", "/a:/b")])).unwrap();
        assert_eq!(p.candidates, vec![c"/a/sh".to_owned(), c"/b/sh".to_owned()]);
    }

    #[test]
    fn prepared_exec_defaults_path() {
        let p = PreparedExec::new(&workload(&["sh"], &[])).unwrap();
        assert_eq!(p.candidates.len(), DEFAULT_PATH.split(':').count());
        assert_eq!(p.candidates[0], c"/usr/local/sbin/sh".to_owned());
    }

    #[test]
    fn prepared_exec_nul_byte_is_error() {
        let err = PreparedExec::new(&workload(&["a\0b"], &[])).unwrap_err();
        assert_eq!(err.what, "the program path");
    }

    #[test]
    fn search_and_exec_missing_program_reports_enoent() {
        let p = PreparedExec::new(&workload(
            &["krun-no-such-program"],
            &[("PATH", "/nonexistent:/")],
        ))
        .unwrap();
        assert_eq!(p.search_and_exec(), libc::ENOENT);
    }

    #[test]
    fn search_and_exec_non_executable_file_reports_eacces() {
        let dir = std::env::temp_dir().join(format!("krun-init-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("prog"), b"data").unwrap();
        let path = format!("/nonexistent:{}", dir.display());
        let p = PreparedExec::new(&workload(&["prog"], &[("PATH", &path)])).unwrap();
        let errno = p.search_and_exec();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(errno, libc::EACCES);
        assert_eq!(exit_code_for_exec_errno(errno), 126);
    }
}
