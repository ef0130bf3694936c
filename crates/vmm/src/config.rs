//! `VmConfig`: everything a microVM is built from, as plain validated data.
//!
//! crates/krun fills one per context from the C calls; Rust users fill it directly. Nothing
//! here touches KVM, files or the guest: `Vm::new` (vm.rs) turns a config into a machine.

use std::path::PathBuf;
use std::sync::Arc;

use crate::krunfw::Krunfw;

/// Virtio-fs tag of the guest's root filesystem (`KRUN_FS_ROOT_TAG`).
pub const ROOT_FS_TAG: &str = "/dev/root";

/// A host directory served to the guest over virtio-fs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsShare {
    pub tag: String,
    pub path: PathBuf,
    /// Size of the DAX window in bytes (0: none).
    pub shm_size: u64,
    pub read_only: bool,
}

/// Disk image formats (`KRUN_DISK_FORMAT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
    Vmdk,
}

/// How a disk honours the guest's flush requests (`KRUN_SYNC_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    None,
    Relaxed,
    Full,
}

/// A virtio-blk disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    pub id: String,
    pub path: PathBuf,
    pub format: DiskFormat,
    pub read_only: bool,
    pub direct_io: bool,
    pub sync: SyncMode,
}

/// Remount of a block root (`krun_set_root_disk_remount`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootDiskRemount {
    pub device: String,
    pub fstype: Option<String>,
    pub options: Option<String>,
}

/// The workload init runs in the guest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exec {
    /// Program to run (KRUN_INIT); None: init reads `/.krun_config.json`.
    pub path: Option<String>,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// `KEY=VALUE` environment; None: the caller's environment at start time.
    pub env: Option<Vec<String>>,
    pub workdir: Option<String>,
    /// `RESOURCE=CUR:MAX` entries, already validated.
    pub rlimits: Vec<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// A virtio-net device backed by a host socket or tap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetBackend {
    UnixStream {
        path: Option<PathBuf>,
        fd: Option<i32>,
    },
    UnixGram {
        path: Option<PathBuf>,
        fd: Option<i32>,
    },
    Tap {
        name: String,
    },
    /// `krun_set_passt_fd`.
    Passt {
        fd: i32,
    },
    /// `krun_set_gvproxy_path`.
    Gvproxy {
        path: PathBuf,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Net {
    pub backend: NetBackend,
    pub mac: [u8; 6],
    pub features: u32,
    pub flags: u32,
}

/// A host port forwarded to a guest port by TSI (`krun_set_port_map`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMap {
    pub host: u16,
    pub guest: u16,
}

/// A vsock port bridged to a host unix socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockPort {
    pub port: u32,
    pub path: PathBuf,
    /// true: the VMM listens on `path` and connects to the guest; false: the guest connects.
    pub listen: bool,
}

/// TSI destinations guest sockets may reach (`krun_set_tsi_scope`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TsiScope {
    pub ip: Option<String>,
    pub subnet: Option<String>,
    pub scope: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vsock {
    /// false after `krun_disable_implicit_vsock` without `krun_add_vsock`.
    pub enabled: bool,
    /// `KRUN_TSI_HIJACK_*` bits; None: the implicit device's heuristics (upstream: INET
    /// hijack unless a virtio-net device is configured).
    pub tsi_features: Option<u32>,
    pub ports: Vec<VsockPort>,
    /// None: every guest listener is exposed; Some(empty): none.
    pub port_map: Option<Vec<PortMap>>,
    pub tsi_scope: Option<TsiScope>,
}

impl Default for Vsock {
    fn default() -> Self {
        Vsock {
            enabled: true,
            tsi_features: None,
            ports: Vec::new(),
            port_map: None,
            tsi_scope: None,
        }
    }
}

/// Console settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Console {
    /// `krun_set_console_output`: guest console output goes to this file, not stdout.
    pub output: Option<PathBuf>,
    /// `krun_disable_implicit_console`.
    pub implicit_disabled: bool,
    /// `krun_set_kernel_console`: the `console=` value on the kernel command line.
    pub kernel_console: Option<String>,
}

/// Kernel image formats (`KRUN_KERNEL_FORMAT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    Raw,
    Elf,
    PeGz,
    ImageBz2,
    ImageGz,
    ImageZstd,
}

/// A kernel from a file instead of libkrunfw (`krun_set_kernel`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelFile {
    pub path: PathBuf,
    pub format: KernelFormat,
    pub initramfs: Option<PathBuf>,
    pub cmdline: Option<String>,
}

/// Everything a VM is built from.
#[derive(Clone, Debug)]
pub struct VmConfig {
    pub vcpus: u8,
    pub ram_mib: u32,
    /// virtio-fs shares; the root is the one tagged [`ROOT_FS_TAG`].
    pub fs_shares: Vec<FsShare>,
    pub disks: Vec<Disk>,
    pub root_disk_remount: Option<RootDiskRemount>,
    pub exec: Exec,
    pub nets: Vec<Net>,
    pub vsock: Vsock,
    pub console: Console,
    pub kernel: Option<KernelFile>,
    /// The libkrunfw bundle, opened early (crun chroots before `krun_start_enter`). None:
    /// `Vm::new` opens it when no `kernel` is set.
    pub krunfw: Option<Arc<Krunfw>>,
    /// Serve the root without the virtual `/init.krun` (`krun_disable_implicit_init`).
    pub implicit_init_disabled: bool,
    pub nested_virt: bool,
    pub split_irqchip: bool,
    pub smbios_oem_strings: Vec<String>,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            vcpus: 1,
            ram_mib: 512,
            fs_shares: Vec::new(),
            disks: Vec::new(),
            root_disk_remount: None,
            exec: Exec::default(),
            nets: Vec::new(),
            vsock: Vsock::default(),
            console: Console::default(),
            kernel: None,
            krunfw: None,
            implicit_init_disabled: false,
            nested_virt: false,
            split_irqchip: false,
            smbios_oem_strings: Vec::new(),
        }
    }
}

impl VmConfig {
    /// The share the guest mounts as `/`, if any.
    pub fn root_share(&self) -> Option<&FsShare> {
        self.fs_shares.iter().find(|s| s.tag == ROOT_FS_TAG)
    }
}
