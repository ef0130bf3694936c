//! The remount root (`krun_set_root_disk_remount`): the kernel boots on an empty virtio-fs
//! root (NullFs: only `/init.krun`, the exec file and the mount points of
//! [`contract::REMOUNT_DIRS`]); init mounts the block device there, moves the kernel
//! filesystems into it, makes it `/` and starts the workload in it.
//!
//! The workload's exit status still reaches the VMM: before the switch init opens the
//! virtio-fs root and keeps that descriptor ([`crate::report::keep_root`]); the old root
//! stays mounted beneath the new one, unreachable by path, and the exit-code ioctl goes to
//! the kept descriptor (close-on-exec, so the workload never holds it).

use std::ffi::CString;
use std::io;

use contract::keys;
use thiserror::Error;

use crate::exec::describe;

/// What the VMM asked for, from the `KRUN_BLOCK_ROOT_*` keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRoot {
    pub device: String,
    pub fstype: Option<String>,
    pub options: Option<String>,
}

#[derive(Debug, Error)]
pub enum RemountError {
    #[error("{0} contains a NUL byte")]
    Nul(&'static str),
    #[error("cannot read /proc/filesystems to probe the type of {device}: {}", describe(.source))]
    Probe {
        device: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot mount {device} ({tried}): {}", describe(.source))]
    Mount {
        device: String,
        tried: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot make {device} the root ({step}): {}", describe(.source))]
    Switch {
        device: String,
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

/// The block root the kernel command line asks for, if any.
pub fn requested(env: &[(String, String)]) -> Option<BlockRoot> {
    let var = |key: &str| {
        env.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    Some(BlockRoot {
        device: var(keys::BLOCK_ROOT_DEVICE)?,
        fstype: var(keys::BLOCK_ROOT_FSTYPE).filter(|t| t != "auto"),
        options: var(keys::BLOCK_ROOT_OPTIONS),
    })
}

/// The filesystem types a block device may hold, from /proc/filesystems (those not marked
/// `nodev`), in the kernel's order.
pub fn block_fstypes(proc_filesystems: &str) -> Vec<String> {
    proc_filesystems
        .lines()
        .filter(|line| !line.starts_with("nodev"))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// Mounts `root.device` on the mount point and makes it `/`. The kernel filesystems move
/// with it where it has their mount points; elsewhere they are detached (init mounts them
/// again after the switch).
pub fn switch(root: &BlockRoot) -> Result<(), RemountError> {
    let target = format!("/{}", contract::REMOUNT_TARGET);
    let c = |s: &str, what| CString::new(s).map_err(|_| RemountError::Nul(what));
    let device = c(&root.device, "the device")?;
    let target_c = c(&target, "the mount point")?;
    let options = root
        .options
        .as_deref()
        .map(|o| c(o, "the mount options"))
        .transpose()?;
    let types = match &root.fstype {
        Some(t) => vec![t.clone()],
        None => {
            let text = std::fs::read_to_string("/proc/filesystems").map_err(|source| {
                RemountError::Probe {
                    device: root.device.clone(),
                    source,
                }
            })?;
            block_fstypes(&text)
        }
    };
    let mut last = io::Error::from_raw_os_error(libc::ENODEV);
    let mut mounted = false;
    for fstype in &types {
        let fstype_c = c(fstype, "the filesystem type")?;
        match sys::mount(
            Some(&device),
            &target_c,
            Some(&fstype_c),
            0,
            options.as_deref(),
        ) {
            Ok(()) => {
                mounted = true;
                break;
            }
            Err(e) => last = e,
        }
    }
    if !mounted {
        return Err(RemountError::Mount {
            device: root.device.clone(),
            tried: types.join(", "),
            source: last,
        });
    }
    for fs in ["/dev", "/proc", "/sys"] {
        let to = format!("{target}{fs}");
        let moved = std::path::Path::new(&to).is_dir()
            && sys::mount(
                Some(&c(fs, "a path")?),
                &c(&to, "a path")?,
                None,
                libc::MS_MOVE,
                None,
            )
            .is_ok();
        if !moved {
            // No mount point in the new root: leave it to the mounts after the switch.
            let _ = sys::umount_detach(&c(fs, "a path")?);
        }
    }
    let step = |step: &'static str| {
        move |source| RemountError::Switch {
            device: root.device.clone(),
            step,
            source,
        }
    };
    std::env::set_current_dir(&target).map_err(step("chdir"))?;
    sys::mount(Some(c"."), c"/", None, libc::MS_MOVE, None).map_err(step("move"))?;
    sys::chroot(c".").map_err(step("chroot"))?;
    std::env::set_current_dir("/").map_err(step("chdir /"))?;
    Ok(())
}

mod sys {
    use std::ffi::CStr;
    use std::io;

    fn check(ret: libc::c_int) -> io::Result<()> {
        if ret == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn mount(
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> io::Result<()> {
        let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
        // SAFETY: every string is NUL-terminated or null where mount(2) allows it; `data` is
        // a NUL-terminated option string, what filesystems of block devices expect.
        check(unsafe {
            libc::mount(
                ptr(source),
                target.as_ptr(),
                ptr(fstype),
                flags,
                ptr(data).cast(),
            )
        })
    }

    pub fn umount_detach(target: &CStr) -> io::Result<()> {
        // SAFETY: NUL-terminated path.
        check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) })
    }

    pub fn chroot(path: &CStr) -> io::Result<()> {
        // SAFETY: NUL-terminated path.
        check(unsafe { libc::chroot(path.as_ptr()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn requested_without_device_is_none() {
        assert_eq!(requested(&env(&[("KRUN_BLOCK_ROOT_FSTYPE", "ext4")])), None);
        assert_eq!(requested(&env(&[("KRUN_BLOCK_ROOT_DEVICE", "")])), None);
    }

    #[test]
    fn requested_reads_device_type_and_options() {
        let root = requested(&env(&[
            ("KRUN_BLOCK_ROOT_DEVICE", "/dev/vda"),
            ("KRUN_BLOCK_ROOT_FSTYPE", "auto"),
            ("KRUN_BLOCK_ROOT_OPTIONS", "noatime"),
        ]))
        .unwrap();
        assert_eq!(root.device, "/dev/vda");
        assert_eq!(root.fstype, None, "auto means probe");
        assert_eq!(root.options.as_deref(), Some("noatime"));
    }

    #[test]
    fn block_fstypes_skips_nodev_types() {
        let text = "nodev\tsysfs\nnodev\ttmpfs\n\text4\n\tvfat\nnodev\tvirtiofs\n";
        assert_eq!(block_fstypes(text), vec!["ext4", "vfat"]);
    }
}
