//! The one place where errors become errnos: every typed error of `vmm` (and, through it,
//! of `devices`) maps here to the most precise positive errno upstream's docs allow; the C
//! exports return it negated (`ffi::ApiError::errno`). Neither `vmm` nor `devices` spells
//! an errno of its own.
//!
//! Upstream libkrun answers -EINVAL for almost every bad argument; we keep EINVAL for
//! malformed values and use a more telling errno where a caller can act on it.

use std::io;

use vmm::cmdline::CmdlineError;
use vmm::config::ConfigError;
use vmm::host::HostError;
use vmm::krunfw::KrunfwError;
use vmm::process::IdError;
use vmm::{DaxError, DeviceError, MemoryError, VcpuError, VirtualEntryError, VmError};

/// An OS error's own errno, else `fallback`.
fn os(source: &io::Error, fallback: i32) -> i32 {
    source.raw_os_error().unwrap_or(fallback)
}

/// A configuration call refused its arguments.
pub fn config(e: &ConfigError) -> i32 {
    use ConfigError::*;
    match e {
        DuplicateFsTag(_)
        | DuplicateDiskId(_)
        | VsockExists
        | DuplicateVsockPort(_)
        | DuplicatePort(_)
        | ConsoleOutputSet
        | OverlayExists(_) => libc::EEXIST,
        RootConflict { .. } | LegacyNet(_) => libc::EBUSY,
        VsockDisabled | NoSuchConsole(_) => libc::ENODEV,
        NoSuchFsTag(_) | OverlayParentMissing(_) => libc::ENOENT,
        OverlayParentNotDir(_) => libc::ENOTDIR,
        VcpuCount { .. }
        | ZeroRam
        | RamTooSmall { .. }
        | FsTagLength { .. }
        | EnvEntry(_)
        | IdMinusOne { .. }
        | Empty(_)
        | NoDisks
        | DiskFormat(_)
        | SyncMode(_)
        | KernelFormat(_)
        | PortMapEntry(_)
        | Rlimit(_)
        | TsiFeatures(_)
        | NetFeatures(_)
        | NetFlags(_)
        | TapNeedsGuestCsum
        | NetEndpoint
        | TapName(_)
        | Fd(_)
        | TsiScope(_)
        | Address { .. }
        | OverlayPath(_)
        | FsSemantics(_)
        | KernelConsole(_) => libc::EINVAL,
    }
}

/// A query about the host's KVM failed.
pub fn host(e: &HostError) -> i32 {
    match e {
        HostError::Kvm(e) => e.errno(),
    }
}

/// The VM could not be built or run.
pub fn vm(e: &VmError) -> i32 {
    match e {
        VmError::VcpuCount { .. } => libc::EINVAL,
        VmError::Krunfw(KrunfwError::Open(_)) => libc::ENOENT,
        VmError::Krunfw(_) => libc::EINVAL,
        VmError::Kernel(e) => kernel(e),
        VmError::KvmOpen(e)
        | VmError::CreateVm(e)
        | VmError::TssAddress(e)
        | VmError::IdentityMap(e)
        | VmError::IrqChip(e)
        | VmError::Pit(e)
        | VmError::SplitIrqChip(e)
        | VmError::SupportedCpuid(e)
        | VmError::CreateVcpu { source: e, .. } => e.errno(),
        VmError::Memory(e) => memory(e),
        VmError::Device(e) => device(e),
        VmError::Cmdline(CmdlineError::TooLong { .. }) => libc::E2BIG,
        VmError::Cmdline(CmdlineError::Invalid { .. }) => libc::EINVAL,
        VmError::LoadCmdline(_) | VmError::Boot(_) => libc::EINVAL,
        VmError::ConfigureVcpu { source, .. } | VmError::Vcpu { source, .. } => vcpu(source),
        VmError::KickHandler(e) => e.errno(),
        VmError::Serial(e) => os(e, libc::EIO),
        VmError::SerialIrq(e) => e.errno(),
        VmError::Ids(e) => ids(e),
        VmError::Vsock(_) => libc::EINVAL,
        VmError::VirtualEntry(VirtualEntryError::Exists(_)) => libc::EEXIST,
        VmError::VirtualEntry(_) => libc::EINVAL,
        VmError::SpawnVcpu { source, .. } => os(source, libc::EAGAIN),
        VmError::DeviceFailed { .. } => libc::EIO,
    }
}

/// A kernel file that cannot be read keeps its errno (ENOENT, EACCES); one that is not in
/// its declared format, or does not fit, is EINVAL.
fn kernel(e: &vmm::kernel::KernelError) -> i32 {
    use vmm::kernel::KernelError;
    match e {
        KernelError::Read { source, .. } | KernelError::Initramfs { source, .. } => {
            os(source, libc::EIO)
        }
        KernelError::UnsupportedFormat(_) => libc::ENOTSUP,
        KernelError::NotInFormat { .. }
        | KernelError::Decompress { .. }
        | KernelError::TooLarge { .. }
        | KernelError::Load { .. }
        | KernelError::InitramfsTooLarge { .. } => libc::EINVAL,
    }
}

fn memory(e: &MemoryError) -> i32 {
    match e {
        MemoryError::Map { .. } => libc::ENOMEM,
        MemoryError::Register { source, .. } => source.errno(),
        MemoryError::KernelOutOfRam { .. } => libc::EINVAL,
    }
}

fn device(e: &DeviceError) -> i32 {
    match e {
        DeviceError::NoIrq(_) => libc::ENOSPC,
        DeviceError::Transport { source, .. }
        | DeviceError::ConsoleIo { source, .. }
        | DeviceError::Fs { source, .. } => os(source, libc::EIO),
        DeviceError::IoEvent { source, .. } | DeviceError::IrqFd { source, .. } => source.errno(),
        DeviceError::Block { source, .. } => match source.raw_os_error() {
            Some(errno) => errno,
            // imago's verdict on the image itself: a corrupt header, an unknown format.
            None => match source.kind() {
                io::ErrorKind::Unsupported => libc::ENOTSUP,
                io::ErrorKind::NotFound => libc::ENOENT,
                io::ErrorKind::PermissionDenied => libc::EACCES,
                _ => libc::EINVAL,
            },
        },
        DeviceError::Net { source, .. } => os(source.io(), libc::EIO),
        DeviceError::Dax { source, .. } => match source {
            DaxError::TooLarge(_) => libc::EINVAL,
            DaxError::Reserve { source, .. } => os(source, libc::ENOMEM),
            DaxError::Register { source, .. } => source.errno(),
        },
    }
}

fn vcpu(e: &VcpuError) -> i32 {
    match e {
        VcpuError::Cpuid(e)
        | VcpuError::MsrsIoctl(e)
        | VcpuError::Sregs(e)
        | VcpuError::Regs(e)
        | VcpuError::Fpu(e)
        | VcpuError::Lapic(e)
        | VcpuError::Run(e) => e.errno(),
        _ => libc::EIO,
    }
}

fn ids(e: &IdError) -> i32 {
    match e {
        IdError::Gid { source, .. } | IdError::Uid { source, .. } => os(source, libc::EPERM),
    }
}

#[cfg(test)]
mod tests {
    use vmm::config::{Disk, DiskFormat, FsShare, SyncMode, VmConfig};

    use super::*;

    fn cfg<T: std::fmt::Debug>(r: Result<T, ConfigError>) -> i32 {
        config(&r.unwrap_err())
    }

    #[test]
    fn config_errors_keep_their_errnos() {
        let mut c = VmConfig::default();
        assert_eq!(cfg(c.set_vm_config(0, 512, 8)), libc::EINVAL);
        assert_eq!(cfg(c.set_vm_config(9, 512, 8)), libc::EINVAL);
        assert_eq!(cfg(c.set_vm_config(2, 0, 8)), libc::EINVAL);

        c.set_root_dir("/r".into()).unwrap();
        assert_eq!(cfg(c.set_root_disk("/d.img".into())), libc::EBUSY);
        assert_eq!(cfg(c.set_root_dir("/s".into())), libc::EEXIST);
        let mut c = VmConfig::default();
        c.set_root_disk("/d.img".into()).unwrap();
        assert_eq!(cfg(c.set_root_dir("/r".into())), libc::EBUSY);
        assert_eq!(cfg(c.set_root_disk("/e.img".into())), libc::EEXIST);

        let share = FsShare {
            tag: "data".into(),
            path: Some("/d".into()),
            shm_size: 0,
            read_only: false,
            semantics: vmm::config::FsSemantics::LinuxComplete,
            layers: Vec::new(),
            backend: None,
        };
        c.add_fs_share(share.clone()).unwrap();
        assert_eq!(cfg(c.add_fs_share(share)), libc::EEXIST);
        let disk = Disk {
            id: "vdb".into(),
            path: "/x.img".into(),
            format: DiskFormat::Raw,
            read_only: true,
            direct_io: false,
            sync: SyncMode::Full,
        };
        c.add_disk(disk.clone()).unwrap();
        assert_eq!(cfg(c.add_disk(disk)), libc::EEXIST);

        assert_eq!(cfg(c.set_port_map(&["80".into()])), libc::EINVAL);
        let dup = ["8080:80".to_string(), "8080:81".to_string()];
        assert_eq!(cfg(c.set_port_map(&dup)), libc::EEXIST);
        assert_eq!(cfg(c.add_vsock(0)), libc::EEXIST);
        assert_eq!(cfg(c.set_vmm_ids(Some(u32::MAX), None)), libc::EINVAL);
        assert_eq!(cfg(c.set_vmm_ids(None, Some(u32::MAX))), libc::EINVAL);
    }

    #[test]
    fn config_variants_map_as_documented() {
        assert_eq!(config(&ConfigError::VsockDisabled), libc::ENODEV);
        assert_eq!(config(&ConfigError::NoSuchFsTag("x".into())), libc::ENOENT);
        assert_eq!(
            config(&ConfigError::OverlayParentNotDir("a".into())),
            libc::ENOTDIR
        );
        assert_eq!(config(&ConfigError::ZeroRam), libc::EINVAL);
    }

    #[test]
    fn vm_errors_keep_their_errnos() {
        assert_eq!(vm(&VmError::VcpuCount { got: 0, max: 8 }), libc::EINVAL);
        let e = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(vm(&VmError::Serial(e)), libc::EMFILE);
        let e = io::Error::other("no os errno");
        assert_eq!(vm(&VmError::SpawnVcpu { id: 0, source: e }), libc::EAGAIN);
        let e = IdError::Uid {
            uid: 5,
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert_eq!(vm(&VmError::Ids(e)), libc::EPERM);
        assert_eq!(
            vm(&VmError::Vcpu {
                id: 0,
                source: VcpuError::Panicked
            }),
            libc::EIO
        );
    }

    #[test]
    fn kernel_errors_einval_unless_the_file_cannot_be_read() {
        use vmm::kernel::KernelError;
        let not_elf = KernelError::NotInFormat {
            path: "/k".into(),
            format: "ELF",
            why: "x".into(),
        };
        assert_eq!(vm(&VmError::Kernel(not_elf)), libc::EINVAL);
        let missing = KernelError::Read {
            path: "/k".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(vm(&VmError::Kernel(missing)), libc::ENOENT);
        assert_eq!(
            vm(&VmError::Kernel(KernelError::UnsupportedFormat("PE_GZ"))),
            libc::ENOTSUP
        );
    }
}
