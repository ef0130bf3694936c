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
    /// Explicit virtio consoles (`krun_add_virtio_console_*`), in creation order: the index
    /// is the console id the C API hands out.
    pub virtio_consoles: Vec<VirtioConsole>,
    /// Explicit legacy serial ports (`krun_add_serial_console_default`).
    pub serial_consoles: Vec<SerialConsole>,
}

/// A virtio console the caller configured explicitly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VirtioConsole {
    /// One port wired to three host fds (stdin, stdout, stderr).
    Default {
        input_fd: i32,
        output_fd: i32,
        err_fd: i32,
    },
    /// A multiport console whose ports are added one by one.
    Multiport(Vec<ConsolePort>),
}

/// A named port of a multiport virtio console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsolePort {
    Tty {
        name: String,
        fd: i32,
    },
    InOut {
        name: String,
        input_fd: i32,
        output_fd: i32,
    },
}

/// A legacy serial port (8250) wired to host fds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SerialConsole {
    pub input_fd: i32,
    pub output_fd: i32,
}

/// A virtual file or directory shown at `path` inside a virtio-fs share
/// (`krun_fs_add_overlay_*`); it is served from memory, not from the host directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsOverlay {
    pub tag: String,
    /// Path inside the share, without a leading `/`.
    pub path: String,
    pub mode: u32,
    pub kind: FsOverlayKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FsOverlayKind {
    Dir,
    File {
        data: Vec<u8>,
        /// Removed after the guest first reads it.
        one_shot: bool,
    },
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
    /// Virtual entries added to virtio-fs shares, in the order they were added.
    pub fs_overlays: Vec<FsOverlay>,
    /// MAC of the legacy single interface (`krun_set_net_mac`), applied to the passt or
    /// gvproxy interface whenever it is configured.
    pub legacy_net_mac: Option<[u8; 6]>,
    /// Layers of an overlayfs root, lowest first (`krun_set_overlayfs_root`).
    pub root_layers: Option<Vec<PathBuf>>,
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
            fs_overlays: Vec::new(),
            legacy_net_mac: None,
            root_layers: None,
        }
    }
}

impl VmConfig {
    /// The share the guest mounts as `/`, if any.
    pub fn root_share(&self) -> Option<&FsShare> {
        self.fs_shares.iter().find(|s| s.tag == ROOT_FS_TAG)
    }
}

/// Why a setting was refused. Each variant names what was wrong so the C layer can log one
/// clear line and pick an errno from [`ConfigError::errno`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("vCPU count {requested} is outside 1..={max}")]
    VcpuCount { requested: u8, max: u32 },
    #[error("RAM size must be greater than 0 MiB")]
    ZeroRam,
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("a virtio-fs share tagged {0:?} already exists")]
    DuplicateFsTag(String),
    #[error("a disk with id {0:?} already exists")]
    DuplicateDiskId(String),
    #[error("the root is already a {existing}; it cannot also be a {requested}")]
    RootConflict {
        existing: &'static str,
        requested: &'static str,
    },
    #[error("a block root remount needs a disk added first")]
    NoDisks,
    #[error("unknown disk format {0} (KRUN_DISK_FORMAT_*)")]
    DiskFormat(u32),
    #[error("unknown sync mode {0} (KRUN_SYNC_*)")]
    SyncMode(u32),
    #[error("unknown kernel format {0} (KRUN_KERNEL_FORMAT_*)")]
    KernelFormat(u32),
    #[error("port map entry {0:?} is not HOST:GUEST with two ports in 0..=65535")]
    PortMapEntry(String),
    #[error("port {0} appears twice in the port map")]
    DuplicatePort(u16),
    #[error(
        "rlimit {0:?} is not RESOURCE=CUR:MAX (RESOURCE a number or RLIMIT_* name, CUR <= MAX)"
    )]
    Rlimit(String),
    #[error("unknown TSI feature bits {0:#x} (KRUN_TSI_HIJACK_*)")]
    TsiFeatures(u32),
    #[error("the vsock device is disabled (krun_disable_implicit_vsock without krun_add_vsock)")]
    VsockDisabled,
    #[error("an explicit vsock device was already added")]
    VsockExists,
    #[error("vsock port {0} is already mapped")]
    DuplicateVsockPort(u32),
    #[error("unknown network feature bits {0:#x} (NET_FEATURE_*)")]
    NetFeatures(u32),
    #[error("unknown network flag bits {0:#x} for this backend (NET_FLAG_*)")]
    NetFlags(u32),
    #[error("GUEST_TSO4/GUEST_TSO6/GUEST_UFO need GUEST_CSUM on a tap backend")]
    TapNeedsGuestCsum,
    #[error("exactly one of a socket path and a file descriptor must be given")]
    NetEndpoint,
    #[error("the legacy single-interface network call conflicts with {0} configured interface(s)")]
    LegacyNet(usize),
    #[error("invalid file descriptor {0}")]
    Fd(i32),
    #[error("the console output file is already set")]
    ConsoleOutputSet,
    #[error("console {0} does not exist or is not a multiport console")]
    NoSuchConsole(u32),
    #[error("TSI scope {0} is not in 0..=3")]
    TsiScope(u8),
    #[error("{what} {value:?} is not a valid address")]
    Address { what: &'static str, value: String },
    #[error("overlay path {0:?} is not a relative or absolute path of named components")]
    OverlayPath(String),
    #[error("no virtio-fs share tagged {0:?}")]
    NoSuchFsTag(String),
    #[error("overlay parent directory {0:?} does not exist")]
    OverlayParentMissing(String),
    #[error("overlay parent {0:?} is a file, not a directory")]
    OverlayParentNotDir(String),
    #[error("overlay entry {0:?} already exists")]
    OverlayExists(String),
}

impl ConfigError {
    /// The errno the C ABI returns for this error (positive; crates/krun negates it).
    ///
    /// Upstream libkrun answers -EINVAL for almost every bad argument; we keep EINVAL for
    /// malformed values and use a more telling errno where a caller can act on it.
    pub fn errno(&self) -> i32 {
        use ConfigError::*;
        match self {
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
            | Fd(_)
            | TsiScope(_)
            | Address { .. }
            | OverlayPath(_) => libc::EINVAL,
        }
    }
}

/// Size of the DAX window upstream gives the root share of `krun_set_root` (512 MiB).
pub const ROOT_SHM_SIZE: u64 = 1 << 29;

/// MAC of the legacy interface when the caller sets none (upstream's default).
pub const DEFAULT_LEGACY_MAC: [u8; 6] = [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee];

/// `NET_FLAG_VFKIT`: send vfkit's magic after connecting (unixgram paths only).
pub const NET_FLAG_VFKIT: u32 = 1 << 0;
/// `NET_FLAG_DHCP_CLIENT`: init runs a DHCP client on the interface.
pub const NET_FLAG_DHCP_CLIENT: u32 = 1 << 1;
/// Every `NET_FEATURE_*` bit (virtio-net feature bits libkrun lets callers request).
pub const NET_ALL_FEATURES: u32 =
    1 << 0 | 1 << 1 | 1 << 7 | 1 << 8 | 1 << 10 | 1 << 11 | 1 << 12 | 1 << 14;
/// Features of the legacy passt/gvproxy interface (`COMPAT_NET_FEATURES`).
pub const NET_COMPAT_FEATURES: u32 = 1 << 0 | 1 << 1 | 1 << 7 | 1 << 10 | 1 << 11 | 1 << 14;
const NET_FEATURE_GUEST_CSUM: u32 = 1 << 1;
const NET_GUEST_OFFLOADS: u32 = 1 << 7 | 1 << 8 | 1 << 10;
/// Every `KRUN_TSI_HIJACK_*` bit.
pub const TSI_ALL_FEATURES: u32 = 1 << 0 | 1 << 1;

/// Resource names accepted in rlimits, at the index of their Linux resource number.
const RLIMIT_NAMES: [&str; 16] = [
    "CPU",
    "FSIZE",
    "DATA",
    "STACK",
    "CORE",
    "RSS",
    "NPROC",
    "NOFILE",
    "MEMLOCK",
    "AS",
    "LOCKS",
    "SIGPENDING",
    "MSGQUEUE",
    "NICE",
    "RTPRIO",
    "RTTIME",
];

impl DiskFormat {
    /// Decodes `KRUN_DISK_FORMAT_*`.
    pub fn from_raw(raw: u32) -> Result<Self, ConfigError> {
        match raw {
            0 => Ok(DiskFormat::Raw),
            1 => Ok(DiskFormat::Qcow2),
            2 => Ok(DiskFormat::Vmdk),
            _ => Err(ConfigError::DiskFormat(raw)),
        }
    }
}

impl SyncMode {
    /// Decodes `KRUN_SYNC_*`.
    pub fn from_raw(raw: u32) -> Result<Self, ConfigError> {
        match raw {
            0 => Ok(SyncMode::None),
            1 => Ok(SyncMode::Relaxed),
            2 => Ok(SyncMode::Full),
            _ => Err(ConfigError::SyncMode(raw)),
        }
    }
}

impl KernelFormat {
    /// Decodes `KRUN_KERNEL_FORMAT_*`.
    pub fn from_raw(raw: u32) -> Result<Self, ConfigError> {
        Ok(match raw {
            0 => KernelFormat::Raw,
            1 => KernelFormat::Elf,
            2 => KernelFormat::PeGz,
            3 => KernelFormat::ImageBz2,
            4 => KernelFormat::ImageGz,
            5 => KernelFormat::ImageZstd,
            _ => return Err(ConfigError::KernelFormat(raw)),
        })
    }
}

/// Parses one `RESOURCE=CUR:MAX` rlimit into the numeric form init reads (`7=1024:4096`).
/// RESOURCE is a Linux resource number (0..=15) or a name with or without `RLIMIT_`.
pub fn parse_rlimit(entry: &str) -> Result<String, ConfigError> {
    let bad = || ConfigError::Rlimit(entry.to_string());
    let (resource, limits) = entry.split_once('=').ok_or_else(bad)?;
    let (cur, max) = limits.split_once(':').ok_or_else(bad)?;
    let id = match resource.parse::<usize>() {
        Ok(n) if n < RLIMIT_NAMES.len() => n,
        Ok(_) => return Err(bad()),
        Err(_) => {
            let name = resource.strip_prefix("RLIMIT_").unwrap_or(resource);
            RLIMIT_NAMES
                .iter()
                .position(|n| n.eq_ignore_ascii_case(name))
                .ok_or_else(bad)?
        }
    };
    let cur: u64 = cur.parse().map_err(|_| bad())?;
    let max: u64 = max.parse().map_err(|_| bad())?;
    if cur > max {
        return Err(bad());
    }
    Ok(format!("{id}={cur}:{max}"))
}

/// Parses `HOST:GUEST`.
pub fn parse_port_map(entry: &str) -> Result<PortMap, ConfigError> {
    let bad = || ConfigError::PortMapEntry(entry.to_string());
    let (host, guest) = entry.split_once(':').ok_or_else(bad)?;
    Ok(PortMap {
        host: host.parse().map_err(|_| bad())?,
        guest: guest.parse().map_err(|_| bad())?,
    })
}

/// A MAC usable by a NIC: not all zeros and not a group (multicast/broadcast) address.
fn check_mac(mac: [u8; 6]) -> Result<(), ConfigError> {
    if mac == [0; 6] || mac[0] & 1 != 0 {
        return Err(ConfigError::Address {
            what: "MAC",
            value: format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
            ),
        });
    }
    Ok(())
}

fn non_empty(value: &str, what: &'static str) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::Empty(what));
    }
    Ok(())
}

fn check_fd(fd: i32) -> Result<(), ConfigError> {
    if fd < 0 {
        return Err(ConfigError::Fd(fd));
    }
    Ok(())
}

/// Validating setters, one per C call (or family of calls). Each leaves the config unchanged
/// when it returns an error.
impl VmConfig {
    /// `krun_set_vm_config`. `max_vcpus` is the host's limit (KVM_CAP_MAX_VCPUS).
    pub fn set_vm_config(
        &mut self,
        vcpus: u8,
        ram_mib: u32,
        max_vcpus: u32,
    ) -> Result<(), ConfigError> {
        if vcpus == 0 || u32::from(vcpus) > max_vcpus {
            return Err(ConfigError::VcpuCount {
                requested: vcpus,
                max: max_vcpus,
            });
        }
        if ram_mib == 0 {
            return Err(ConfigError::ZeroRam);
        }
        self.vcpus = vcpus;
        self.ram_mib = ram_mib;
        Ok(())
    }

    /// What already claims the guest's root, if anything.
    fn root_kind(&self) -> Option<&'static str> {
        if self.root_share().is_some() {
            Some("virtio-fs root")
        } else if self.root_layers.is_some() {
            Some("overlayfs root")
        } else if self.disks.iter().any(|d| d.id == "root") || self.root_disk_remount.is_some() {
            Some("block-device root")
        } else {
            None
        }
    }

    fn claim_root(&self, requested: &'static str) -> Result<(), ConfigError> {
        match self.root_kind() {
            Some(existing) => Err(ConfigError::RootConflict {
                existing,
                requested,
            }),
            None => Ok(()),
        }
    }

    /// `krun_add_virtiofs*`. A share tagged [`ROOT_FS_TAG`] becomes the root.
    pub fn add_fs_share(&mut self, share: FsShare) -> Result<(), ConfigError> {
        non_empty(&share.tag, "virtio-fs tag")?;
        if self.fs_shares.iter().any(|s| s.tag == share.tag) {
            return Err(ConfigError::DuplicateFsTag(share.tag));
        }
        if share.tag == ROOT_FS_TAG {
            self.claim_root("virtio-fs root")?;
        }
        self.fs_shares.push(share);
        Ok(())
    }

    /// `krun_set_root`: the host directory becomes the guest's `/` over virtio-fs.
    pub fn set_root_dir(&mut self, path: PathBuf) -> Result<(), ConfigError> {
        non_empty(&path.to_string_lossy(), "root path")?;
        self.claim_root("virtio-fs root")?;
        self.add_fs_share(FsShare {
            tag: ROOT_FS_TAG.to_string(),
            path,
            shm_size: ROOT_SHM_SIZE,
            read_only: false,
        })
    }

    /// `krun_set_overlayfs_root`: the root is an overlay of these host directories.
    pub fn set_root_layers(&mut self, layers: Vec<PathBuf>) -> Result<(), ConfigError> {
        if layers.is_empty() {
            return Err(ConfigError::Empty("root layer list"));
        }
        self.claim_root("overlayfs root")?;
        self.root_layers = Some(layers);
        Ok(())
    }

    /// `krun_add_disk*`.
    pub fn add_disk(&mut self, disk: Disk) -> Result<(), ConfigError> {
        non_empty(&disk.id, "disk id")?;
        non_empty(&disk.path.to_string_lossy(), "disk path")?;
        if self.disks.iter().any(|d| d.id == disk.id) {
            return Err(ConfigError::DuplicateDiskId(disk.id));
        }
        self.disks.push(disk);
        Ok(())
    }

    /// `krun_set_root_disk`: a raw disk with id `root` the guest boots from.
    pub fn set_root_disk(&mut self, path: PathBuf) -> Result<(), ConfigError> {
        if self.disks.iter().any(|d| d.id == "root") {
            return Err(ConfigError::DuplicateDiskId("root".to_string()));
        }
        self.claim_root("block-device root")?;
        self.add_disk(Disk {
            id: "root".to_string(),
            path,
            format: DiskFormat::Raw,
            read_only: false,
            direct_io: false,
            sync: SyncMode::Full,
        })
    }

    /// `krun_set_root_disk_remount`: init mounts `device` as the root and pivots to it.
    pub fn set_root_disk_remount(&mut self, remount: RootDiskRemount) -> Result<(), ConfigError> {
        non_empty(&remount.device, "root device")?;
        if self.disks.is_empty() {
            return Err(ConfigError::NoDisks);
        }
        if let Some(existing) = self.root_kind().filter(|k| *k != "block-device root") {
            return Err(ConfigError::RootConflict {
                existing,
                requested: "block-device root",
            });
        }
        self.root_disk_remount = Some(remount);
        Ok(())
    }

    /// `krun_set_exec`. `env` None: the caller's environment at start time.
    pub fn set_exec(
        &mut self,
        path: String,
        args: Vec<String>,
        env: Option<Vec<String>>,
    ) -> Result<(), ConfigError> {
        non_empty(&path, "executable path")?;
        self.exec.path = Some(path);
        self.exec.args = args;
        self.exec.env = env;
        Ok(())
    }

    /// `krun_set_workdir`.
    pub fn set_workdir(&mut self, workdir: String) -> Result<(), ConfigError> {
        non_empty(&workdir, "working directory")?;
        self.exec.workdir = Some(workdir);
        Ok(())
    }

    /// `krun_set_rlimits`: every entry is checked before any is kept.
    pub fn set_rlimits(&mut self, entries: &[String]) -> Result<(), ConfigError> {
        let parsed = entries
            .iter()
            .map(|e| parse_rlimit(e))
            .collect::<Result<Vec<_>, _>>()?;
        self.exec.rlimits = parsed;
        Ok(())
    }

    fn vsock_enabled(&self) -> Result<(), ConfigError> {
        if !self.vsock.enabled {
            return Err(ConfigError::VsockDisabled);
        }
        Ok(())
    }

    /// `krun_set_port_map`: no host port and no guest port may appear twice.
    pub fn set_port_map(&mut self, entries: &[String]) -> Result<(), ConfigError> {
        let mut map: Vec<PortMap> = Vec::with_capacity(entries.len());
        for entry in entries {
            let pm = parse_port_map(entry)?;
            if let Some(dup) = map
                .iter()
                .find(|m| m.host == pm.host || m.guest == pm.guest)
            {
                let port = if dup.host == pm.host {
                    pm.host
                } else {
                    pm.guest
                };
                return Err(ConfigError::DuplicatePort(port));
            }
            map.push(pm);
        }
        self.vsock_enabled()?;
        self.vsock.port_map = Some(map);
        Ok(())
    }

    /// `krun_add_vsock_port*`.
    pub fn add_vsock_port(&mut self, port: VsockPort) -> Result<(), ConfigError> {
        non_empty(&port.path.to_string_lossy(), "vsock socket path")?;
        self.vsock_enabled()?;
        if self.vsock.ports.iter().any(|p| p.port == port.port) {
            return Err(ConfigError::DuplicateVsockPort(port.port));
        }
        self.vsock.ports.push(port);
        Ok(())
    }

    /// `krun_disable_implicit_vsock`.
    pub fn disable_implicit_vsock(&mut self) {
        self.vsock.enabled = false;
        self.vsock.tsi_features = None;
    }

    /// `krun_add_vsock`: only after `krun_disable_implicit_vsock`, and only once.
    pub fn add_vsock(&mut self, tsi_features: u32) -> Result<(), ConfigError> {
        if tsi_features & !TSI_ALL_FEATURES != 0 {
            return Err(ConfigError::TsiFeatures(tsi_features));
        }
        if self.vsock.enabled {
            return Err(ConfigError::VsockExists);
        }
        self.vsock.enabled = true;
        self.vsock.tsi_features = Some(tsi_features);
        Ok(())
    }

    /// `krun_set_tsi_scope`: `ip` an address, `subnet` an `ADDR/PREFIX` network.
    pub fn set_tsi_scope(&mut self, scope: TsiScope) -> Result<(), ConfigError> {
        if scope.scope > 3 {
            return Err(ConfigError::TsiScope(scope.scope));
        }
        if let Some(ip) = &scope.ip {
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(ConfigError::Address {
                    what: "TSI IP",
                    value: ip.clone(),
                });
            }
        }
        if let Some(subnet) = &scope.subnet {
            let ok = subnet.split_once('/').is_some_and(|(addr, prefix)| {
                match (addr.parse::<std::net::IpAddr>(), prefix.parse::<u8>()) {
                    (Ok(std::net::IpAddr::V4(_)), Ok(p)) => p <= 32,
                    (Ok(std::net::IpAddr::V6(_)), Ok(p)) => p <= 128,
                    _ => false,
                }
            });
            if !ok {
                return Err(ConfigError::Address {
                    what: "TSI subnet",
                    value: subnet.clone(),
                });
            }
        }
        self.vsock.tsi_scope = Some(scope);
        Ok(())
    }

    fn is_legacy(net: &Net) -> bool {
        matches!(
            net.backend,
            NetBackend::Passt { .. } | NetBackend::Gvproxy { .. }
        )
    }

    /// `krun_add_net_*`: one more virtio-net interface (eth0, eth1, ... in call order).
    pub fn add_net(&mut self, net: Net) -> Result<(), ConfigError> {
        if net.features & !NET_ALL_FEATURES != 0 {
            return Err(ConfigError::NetFeatures(net.features & !NET_ALL_FEATURES));
        }
        let allowed = match &net.backend {
            NetBackend::UnixGram { path: Some(_), .. } => NET_FLAG_VFKIT | NET_FLAG_DHCP_CLIENT,
            _ => NET_FLAG_DHCP_CLIENT,
        };
        if net.flags & !allowed != 0 {
            return Err(ConfigError::NetFlags(net.flags & !allowed));
        }
        match &net.backend {
            NetBackend::UnixStream { path, fd } | NetBackend::UnixGram { path, fd } => {
                if path.is_some() == fd.is_some() {
                    return Err(ConfigError::NetEndpoint);
                }
                if let Some(fd) = fd {
                    check_fd(*fd)?;
                }
            }
            NetBackend::Tap { name } => {
                non_empty(name, "tap name")?;
                if net.features & NET_GUEST_OFFLOADS != 0
                    && net.features & NET_FEATURE_GUEST_CSUM == 0
                {
                    return Err(ConfigError::TapNeedsGuestCsum);
                }
            }
            NetBackend::Passt { .. } | NetBackend::Gvproxy { .. } => {}
        }
        check_mac(net.mac)?;
        if self.nets.iter().any(Self::is_legacy) {
            return Err(ConfigError::LegacyNet(self.nets.len()));
        }
        self.nets.push(net);
        Ok(())
    }

    /// `krun_set_passt_fd` / `krun_set_gvproxy_path`: the single legacy interface. It
    /// replaces an earlier legacy interface and conflicts with `krun_add_net_*` ones.
    pub fn set_legacy_net(&mut self, backend: NetBackend) -> Result<(), ConfigError> {
        match &backend {
            NetBackend::Passt { fd } => check_fd(*fd)?,
            NetBackend::Gvproxy { path } => non_empty(&path.to_string_lossy(), "gvproxy path")?,
            _ => return Err(ConfigError::NetEndpoint),
        }
        if self.nets.iter().any(|n| !Self::is_legacy(n)) {
            return Err(ConfigError::LegacyNet(self.nets.len()));
        }
        self.nets = vec![Net {
            backend,
            mac: self.legacy_net_mac.unwrap_or(DEFAULT_LEGACY_MAC),
            features: NET_COMPAT_FEATURES,
            flags: 0,
        }];
        Ok(())
    }

    /// `krun_set_net_mac`: the MAC of the legacy interface, set before or after it.
    pub fn set_legacy_net_mac(&mut self, mac: [u8; 6]) -> Result<(), ConfigError> {
        check_mac(mac)?;
        self.legacy_net_mac = Some(mac);
        for net in self.nets.iter_mut().filter(|n| Self::is_legacy(n)) {
            net.mac = mac;
        }
        Ok(())
    }

    /// `krun_set_console_output`: may be set once.
    pub fn set_console_output(&mut self, path: PathBuf) -> Result<(), ConfigError> {
        non_empty(&path.to_string_lossy(), "console output path")?;
        if self.console.output.is_some() {
            return Err(ConfigError::ConsoleOutputSet);
        }
        self.console.output = Some(path);
        Ok(())
    }

    /// `krun_add_virtio_console_default` / `_multiport`; returns the new console's id.
    pub fn add_virtio_console(&mut self, console: VirtioConsole) -> Result<u32, ConfigError> {
        if let VirtioConsole::Default {
            input_fd,
            output_fd,
            err_fd,
        } = console
        {
            for fd in [input_fd, output_fd, err_fd] {
                check_fd(fd)?;
            }
        }
        let id = self.console.virtio_consoles.len() as u32;
        self.console.virtio_consoles.push(console);
        Ok(id)
    }

    /// `krun_add_console_port_*`: a port on a multiport console.
    pub fn add_console_port(
        &mut self,
        console_id: u32,
        port: ConsolePort,
    ) -> Result<(), ConfigError> {
        match &port {
            ConsolePort::Tty { fd, .. } => check_fd(*fd)?,
            ConsolePort::InOut {
                input_fd,
                output_fd,
                ..
            } => {
                check_fd(*input_fd)?;
                check_fd(*output_fd)?;
            }
        }
        match self.console.virtio_consoles.get_mut(console_id as usize) {
            Some(VirtioConsole::Multiport(ports)) => {
                ports.push(port);
                Ok(())
            }
            _ => Err(ConfigError::NoSuchConsole(console_id)),
        }
    }

    /// `krun_add_serial_console_default`.
    pub fn add_serial_console(&mut self, serial: SerialConsole) -> Result<(), ConfigError> {
        check_fd(serial.input_fd)?;
        check_fd(serial.output_fd)?;
        self.console.serial_consoles.push(serial);
        Ok(())
    }

    /// `krun_set_kernel`: boot this kernel instead of libkrunfw's.
    pub fn set_kernel(&mut self, kernel: KernelFile) -> Result<(), ConfigError> {
        non_empty(&kernel.path.to_string_lossy(), "kernel path")?;
        self.kernel = Some(kernel);
        Ok(())
    }

    /// `krun_fs_add_overlay_*`: the parent of `path` must be the share's top level or an
    /// overlay directory added before.
    pub fn add_fs_overlay(&mut self, overlay: FsOverlay) -> Result<(), ConfigError> {
        let path = overlay.path.trim_start_matches('/').to_string();
        if path.is_empty()
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(ConfigError::OverlayPath(overlay.path));
        }
        let share_exists = self.fs_shares.iter().any(|s| s.tag == overlay.tag)
            || (overlay.tag == ROOT_FS_TAG && self.root_kind().is_some());
        if !share_exists {
            return Err(ConfigError::NoSuchFsTag(overlay.tag));
        }
        let same_tag = |p: &str| {
            self.fs_overlays
                .iter()
                .find(|o| o.tag == overlay.tag && o.path == p)
        };
        if same_tag(&path).is_some() {
            return Err(ConfigError::OverlayExists(path));
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            match same_tag(parent) {
                None => return Err(ConfigError::OverlayParentMissing(parent.to_string())),
                Some(FsOverlay {
                    kind: FsOverlayKind::File { .. },
                    ..
                }) => return Err(ConfigError::OverlayParentNotDir(parent.to_string())),
                Some(_) => {}
            }
        }
        self.fs_overlays.push(FsOverlay { path, ..overlay });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_vm_config_out_of_range_fails() {
        let mut c = VmConfig::default();
        assert_eq!(
            c.set_vm_config(0, 512, 8).unwrap_err().errno(),
            libc::EINVAL
        );
        assert_eq!(
            c.set_vm_config(9, 512, 8).unwrap_err().errno(),
            libc::EINVAL
        );
        assert_eq!(c.set_vm_config(2, 0, 8), Err(ConfigError::ZeroRam));
        c.set_vm_config(8, 1024, 8).unwrap();
        assert_eq!((c.vcpus, c.ram_mib), (8, 1024));
    }

    #[test]
    fn root_dir_and_root_disk_exclusive() {
        let mut c = VmConfig::default();
        c.set_root_dir("/r".into()).unwrap();
        assert_eq!(
            c.set_root_disk("/d.img".into()).unwrap_err().errno(),
            libc::EBUSY
        );
        let mut c = VmConfig::default();
        c.set_root_disk("/d.img".into()).unwrap();
        assert_eq!(
            c.set_root_dir("/r".into()).unwrap_err().errno(),
            libc::EBUSY
        );
        assert_eq!(
            c.set_root_disk("/e.img".into()).unwrap_err().errno(),
            libc::EEXIST
        );
    }

    #[test]
    fn duplicate_fs_tag_and_disk_id_fail_eexist() {
        let mut c = VmConfig::default();
        let share = FsShare {
            tag: "data".into(),
            path: "/d".into(),
            shm_size: 0,
            read_only: false,
        };
        c.add_fs_share(share.clone()).unwrap();
        assert_eq!(c.add_fs_share(share).unwrap_err().errno(), libc::EEXIST);
        let disk = Disk {
            id: "vdb".into(),
            path: "/x.img".into(),
            format: DiskFormat::Raw,
            read_only: true,
            direct_io: false,
            sync: SyncMode::Full,
        };
        c.add_disk(disk.clone()).unwrap();
        assert_eq!(c.add_disk(disk).unwrap_err().errno(), libc::EEXIST);
    }

    #[test]
    fn rlimits_numeric_and_named_normalized() {
        assert_eq!(parse_rlimit("6=4096:8192").unwrap(), "6=4096:8192");
        assert_eq!(
            parse_rlimit("RLIMIT_NOFILE=1024:4096").unwrap(),
            "7=1024:4096"
        );
        assert_eq!(parse_rlimit("nofile=1:2").unwrap(), "7=1:2");
        for bad in ["6=10:5", "16=1:2", "NOPE=1:2", "6=1", "6:1:2", "6=a:b", ""] {
            assert!(parse_rlimit(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn port_map_rejects_malformed_and_duplicates() {
        let mut c = VmConfig::default();
        c.set_port_map(&["8080:80".into(), "8443:443".into()])
            .unwrap();
        assert_eq!(c.vsock.port_map.as_ref().unwrap().len(), 2);
        for bad in ["80", "a:80", "80:70000", "1:2:3"] {
            assert_eq!(
                c.set_port_map(&[bad.into()]).unwrap_err().errno(),
                libc::EINVAL
            );
        }
        let dup = ["1:2".to_string(), "1:3".to_string()];
        assert_eq!(c.set_port_map(&dup).unwrap_err().errno(), libc::EEXIST);
        c.disable_implicit_vsock();
        assert_eq!(c.set_port_map(&[]).unwrap_err().errno(), libc::ENODEV);
    }

    #[test]
    fn add_vsock_needs_disabled_implicit() {
        let mut c = VmConfig::default();
        assert_eq!(c.add_vsock(0).unwrap_err().errno(), libc::EEXIST);
        c.disable_implicit_vsock();
        assert_eq!(c.add_vsock(4).unwrap_err().errno(), libc::EINVAL);
        c.add_vsock(TSI_ALL_FEATURES).unwrap();
        assert_eq!(c.vsock.tsi_features, Some(3));
    }

    #[test]
    fn net_validation_cases() {
        let mut c = VmConfig::default();
        let mac = DEFAULT_LEGACY_MAC;
        let net = |backend, mac, features, flags| Net {
            backend,
            mac,
            features,
            flags,
        };
        let both = NetBackend::UnixStream {
            path: Some("/s".into()),
            fd: Some(3),
        };
        assert_eq!(
            c.add_net(net(both, mac, 0, 0)),
            Err(ConfigError::NetEndpoint)
        );
        let gram = || NetBackend::UnixGram {
            path: Some("/g".into()),
            fd: None,
        };
        let group = [1, 0, 0, 0, 0, 1];
        assert!(c.add_net(net(gram(), group, 0, 0)).is_err());
        assert!(c.add_net(net(gram(), mac, 1 << 2, 0)).is_err());
        assert!(c.add_net(net(gram(), mac, 0, 1 << 4)).is_err());
        let tap = NetBackend::Tap {
            name: "tap0".into(),
        };
        assert_eq!(
            c.add_net(net(tap, mac, 1 << 7, 0)),
            Err(ConfigError::TapNeedsGuestCsum)
        );
        c.add_net(net(gram(), mac, NET_COMPAT_FEATURES, NET_FLAG_VFKIT))
            .unwrap();
        let passt = NetBackend::Passt { fd: 3 };
        assert_eq!(c.set_legacy_net(passt).unwrap_err().errno(), libc::EBUSY);
    }

    #[test]
    fn overlay_parents_must_exist() {
        let mut c = VmConfig::default();
        c.set_root_dir("/r".into()).unwrap();
        let ov = |path: &str, kind| FsOverlay {
            tag: ROOT_FS_TAG.into(),
            path: path.into(),
            mode: 0o755,
            kind,
        };
        let file = || FsOverlayKind::File {
            data: b"x".to_vec(),
            one_shot: false,
        };
        assert_eq!(
            c.add_fs_overlay(ov("a/b", file())).unwrap_err().errno(),
            libc::ENOENT
        );
        c.add_fs_overlay(ov("/a", FsOverlayKind::Dir)).unwrap();
        c.add_fs_overlay(ov("a/b", file())).unwrap();
        assert_eq!(
            c.add_fs_overlay(ov("a/b/c", file())).unwrap_err().errno(),
            libc::ENOTDIR
        );
        assert_eq!(
            c.add_fs_overlay(ov("a/../x", file())).unwrap_err().errno(),
            libc::EINVAL
        );
    }
}
