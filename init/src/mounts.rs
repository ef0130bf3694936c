//! The guest's kernel filesystems, as upstream's init mounts them, plus the tmpfs mounts the
//! container config asks for.
//!
//! Every step tolerates an already-mounted target (EBUSY) and creates a missing mount point;
//! failures are logged and skipped so a read-only or unusual root still runs its workload.

use std::ffi::CString;
use std::io;

/// `MS_*` flags upstream uses for the pseudo filesystems.
const NOSUID_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_RELATIME;

struct Mount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: libc::c_ulong,
}

/// In order: devtmpfs first so the console exists, cgroup2 after /sys, /dev/* after /dev.
const KERNEL_MOUNTS: [Mount; 6] = [
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: libc::MS_RELATIME,
    },
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: libc::MS_NODEV | NOSUID_NOEXEC,
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: libc::MS_NODEV | NOSUID_NOEXEC,
    },
    Mount {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: libc::MS_NODEV | NOSUID_NOEXEC,
    },
    Mount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: NOSUID_NOEXEC,
    },
    Mount {
        source: "tmpfs",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: NOSUID_NOEXEC,
    },
];

/// Mounts /dev, /proc, /sys, cgroup2, /dev/pts and /dev/shm, then makes sure fds 0-2 exist.
pub fn mount_kernel_filesystems() {
    for mount in &KERNEL_MOUNTS {
        if let Err(err) = mount_one(mount.source, mount.target, mount.fstype, mount.flags) {
            crate::diag!(
                "mount {} ({}): {}",
                mount.target,
                mount.fstype,
                crate::exec::describe(&err)
            );
        }
        if mount.target == "/dev" {
            open_missing_stdio();
            // Upstream: let unprivileged workloads use nested KVM. Absent is normal.
            if let Err(err) = std::fs::set_permissions("/dev/kvm", mode(0o666)) {
                if err.kind() != io::ErrorKind::NotFound {
                    crate::diag!("chmod /dev/kvm: {}", crate::exec::describe(&err));
                }
            }
        }
    }
    // Already there on most roots; only bash-style `<(...)` needs it.
    let _ = std::os::unix::fs::symlink("/proc/self/fd", "/dev/fd");
}

/// Upstream sets the root mount shared so mounts made inside propagate (podman relies on it).
pub fn make_root_shared() {
    if let Err(err) = sys::mount(None, c"/", None, libc::MS_REC | libc::MS_SHARED) {
        crate::diag!(
            "cannot make / a shared mount: {}",
            crate::exec::describe(&err)
        );
    }
}

/// Mounts a tmpfs on each destination the container config lists that is not yet a mount
/// point (checked through /proc/mounts: stat could trigger podman's auto-mounts).
pub fn mount_config_tmpfs(destinations: &[String]) {
    let mounted = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let flags = libc::MS_NODEV | NOSUID_NOEXEC;
    for dest in destinations {
        if is_mount_point(&mounted, dest) {
            continue;
        }
        if let Err(err) = mount_one("tmpfs", dest, "tmpfs", flags) {
            crate::diag!("mount tmpfs on {dest}: {}", crate::exec::describe(&err));
        }
    }
}

/// Whether `path` is the mount point of a line of `/proc/mounts`-formatted `table`.
pub fn is_mount_point(table: &str, path: &str) -> bool {
    table
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .any(|mount_point| unescape_mount_field(mount_point) == path)
}

/// /proc/mounts writes space, tab, newline and backslash as three-digit octal escapes.
fn unescape_mount_field(field: &str) -> String {
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if let Some(&[b'\\', a, b, c]) = bytes.get(i..i + 4) {
            if [a, b, c].iter().all(|d| (b'0'..=b'7').contains(d)) {
                // Three octal digits fit in u16; /proc only escapes bytes below 0o400.
                let value =
                    (u16::from(a - b'0') << 6) | (u16::from(b - b'0') << 3) | u16::from(c - b'0');
                out.push(value as u8);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mount_one(source: &str, target: &str, fstype: &str, flags: libc::c_ulong) -> io::Result<()> {
    if let Err(err) = std::fs::create_dir_all(target) {
        // A dangling mount point is not fatal when the path already exists as something else.
        if err.kind() != io::ErrorKind::AlreadyExists {
            return Err(err);
        }
    }
    let invalid = |_| io::Error::from(io::ErrorKind::InvalidInput);
    let source = CString::new(source).map_err(invalid)?;
    let target = CString::new(target).map_err(invalid)?;
    let fstype = CString::new(fstype).map_err(invalid)?;
    match sys::mount(Some(&source), &target, Some(&fstype), flags) {
        Err(err) if err.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        other => other,
    }
}

fn mode(bits: u32) -> std::fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(bits)
}

/// If the kernel could not open /dev/console for us (the root had no /dev), fds 0-2 are
/// missing: open the console now, before anything writes diagnostics.
fn open_missing_stdio() {
    for fd in 0..=2 {
        if sys::fd_is_open(fd) {
            continue;
        }
        match sys::open_console() {
            Ok(console) if console == fd => {}
            Ok(console) => {
                sys::dup2(console, fd);
                sys::close(console);
            }
            Err(_) => return,
        }
    }
}

mod sys {
    use std::ffi::CStr;
    use std::io;

    pub fn mount(
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
    ) -> io::Result<()> {
        let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
        // SAFETY: all strings are NUL-terminated or null where mount(2) allows it; no data.
        let ret = unsafe {
            libc::mount(
                ptr(source),
                target.as_ptr(),
                ptr(fstype),
                flags,
                std::ptr::null(),
            )
        };
        if ret == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn fd_is_open(fd: libc::c_int) -> bool {
        // SAFETY: F_GETFD only queries the descriptor table.
        unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
    }

    /// Opens the console without making it init's controlling terminal.
    pub fn open_console() -> io::Result<libc::c_int> {
        // SAFETY: constant NUL-terminated path; the caller owns the fd.
        let fd = unsafe { libc::open(c"/dev/console".as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
        if fd < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(fd)
        }
    }

    pub fn dup2(from: libc::c_int, to: libc::c_int) {
        // SAFETY: plain descriptor numbers.
        unsafe { libc::dup2(from, to) };
    }

    pub fn close(fd: libc::c_int) {
        // SAFETY: the caller owns `fd`.
        unsafe { libc::close(fd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "proc /proc proc rw 0 0\n\
                         tmpfs /my\\040dir tmpfs rw 0 0\n\
                         /dev/root / virtiofs rw 0 0\n";

    #[test]
    fn is_mount_point_listed_path_is_true() {
        assert!(is_mount_point(TABLE, "/proc"));
        assert!(is_mount_point(TABLE, "/"));
    }

    #[test]
    fn is_mount_point_escaped_space_is_decoded() {
        assert!(is_mount_point(TABLE, "/my dir"));
    }

    #[test]
    fn is_mount_point_unlisted_or_prefix_is_false() {
        assert!(!is_mount_point(TABLE, "/tmp"));
        assert!(!is_mount_point(TABLE, "/pro"));
        assert!(!is_mount_point("", "/"));
    }
}
