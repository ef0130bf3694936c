//! `VmConfig`: everything a microVM is built from, as plain validated data.
//!
//! crates/krun fills one per context from the C calls; Rust users fill it directly. Nothing
//! here touches KVM, files or the guest: `Vm::new` (vm.rs) turns a config into a machine.
//!
//! The types and setters live in submodules by area (`exec`, `fs`, `net`, `console`); they
//! are all re-exported here, so users write `vmm::config::FsShare`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::krunfw::Krunfw;

mod console;
mod exec;
mod fs;
mod net;

pub use console::*;
pub use exec::*;
pub use fs::*;
pub use net::*;

/// Virtio-fs tag of the guest's root filesystem (`KRUN_FS_ROOT_TAG`).
pub const ROOT_FS_TAG: &str = "/dev/root";

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
///
/// A new field must also be listed in `settings::account` (crates/vmm/src/settings.rs),
/// which destructures this struct without `..`: the build fails until the field is used,
/// refused, or logged as ignored.
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
    /// The guest init served read-only as `/init.krun` on the root share (crates/krun sets
    /// its embedded init unless `implicit_init_disabled`). None: the root must bring its own.
    pub init_binary: Option<&'static [u8]>,
    /// `krun_setuid` / `krun_setgid`: the VMM process switches to these ids after it has
    /// opened what needs privileges and before the guest runs, so files the guest creates on
    /// a share belong to them on the host.
    pub vmm_uid: Option<u32>,
    pub vmm_gid: Option<u32>,
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
    /// `krun_get_shutdown_eventfd`: created when first asked for (never at context
    /// creation: crun closes the fds it does not know between create and start). A write
    /// to it reaches the guest init as a shutdown request on the `krun-shutdown` port.
    pub shutdown_eventfd: Option<Arc<std::os::fd::OwnedFd>>,
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
            init_binary: None,
            vmm_uid: None,
            vmm_gid: None,
            nested_virt: false,
            split_irqchip: false,
            smbios_oem_strings: Vec::new(),
            fs_overlays: Vec::new(),
            legacy_net_mac: None,
            root_layers: None,
            shutdown_eventfd: None,
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
    #[error("{ram_mib} MiB of RAM cannot hold the guest kernel, which ends at {need_mib} MiB")]
    RamTooSmall { ram_mib: u32, need_mib: u64 },
    #[error("virtio-fs tag {} is {len} bytes; it must be 1 to {FS_TAG_MAX_LEN}", Shown(.tag))]
    FsTagLength { tag: String, len: usize },
    #[error("environment entry {} has no '=' (KEY=VALUE)", Shown(.0))]
    EnvEntry(String),
    #[error("{what} -1 is not an id (it means \"unchanged\" to setuid/setgid)")]
    IdMinusOne { what: &'static str },
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("a virtio-fs share tagged {} already exists", Shown(.0))]
    DuplicateFsTag(String),
    #[error("a disk with id {} already exists", Shown(.0))]
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
    #[error("port map entry {} is not HOST:GUEST with two ports in 0..=65535", Shown(.0))]
    PortMapEntry(String),
    #[error("port {0} appears twice in the port map")]
    DuplicatePort(u16),
    #[error(
        "rlimit {} is not RESOURCE=CUR:MAX (RESOURCE a number or RLIMIT_* name, CUR <= MAX)",
        Shown(.0)
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
    #[error("tap name {} is longer than 15 bytes (IFNAMSIZ)", Shown(.0))]
    TapName(String),
    #[error("the legacy single-interface network call conflicts with {0} configured interface(s)")]
    LegacyNet(usize),
    #[error("invalid file descriptor {0}")]
    Fd(i32),
    #[error("the console output file is already set")]
    ConsoleOutputSet,
    #[error("console {0} does not exist or is not a multiport console")]
    NoSuchConsole(u32),
    #[error("kernel console {0:?} is not a single device name (like hvc0 or ttyS0)")]
    KernelConsole(String),
    #[error("TSI scope {0} is not in 0..=3")]
    TsiScope(u8),
    #[error("{what} {} is not a valid address", Shown(.value))]
    Address { what: &'static str, value: String },
    #[error("overlay path {} is not a relative or absolute path of named components", Shown(.0))]
    OverlayPath(String),
    #[error("no virtio-fs share tagged {}", Shown(.0))]
    NoSuchFsTag(String),
    #[error("overlay parent directory {} does not exist", Shown(.0))]
    OverlayParentMissing(String),
    #[error("overlay parent {} is a file, not a directory", Shown(.0))]
    OverlayParentNotDir(String),
    #[error("overlay entry {} already exists", Shown(.0))]
    OverlayExists(String),
    #[error("virtio-fs semantics {0} is not KRUN_SEMANTICS_LINUX_COMPLETE (0) or _SIMPLIFIED (1)")]
    FsSemantics(u32),
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

/// Longest text of a caller's argument a log line shows.
pub const SHOWN_MAX_CHARS: usize = 200;

/// A caller's argument as log lines show it: quoted like `{:?}`, cut after
/// [`SHOWN_MAX_CHARS`] characters with the full length noted, so a 1 MiB argument does not
/// become a 1 MiB log line.
pub struct Shown<'a>(pub &'a str);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.char_indices().nth(SHOWN_MAX_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}... ({} bytes in all)", &self.0[..cut], self.0.len()),
        }
    }
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
        if let Some(fw) = &self.krunfw {
            let kernel = fw.kernel();
            let end = kernel.load_addr + kernel.bytes.len() as u64;
            let need_mib = end.div_ceil(1 << 20);
            if u64::from(ram_mib) < need_mib {
                return Err(ConfigError::RamTooSmall { ram_mib, need_mib });
            }
        }
        self.vcpus = vcpus;
        self.ram_mib = ram_mib;
        Ok(())
    }

    /// `krun_get_shutdown_eventfd`: the eventfd that asks the guest to shut down, created
    /// on the first call (later calls return the same fd). The caller writes to it and must
    /// not close it.
    pub fn shutdown_eventfd(&mut self) -> std::io::Result<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        if let Some(fd) = &self.shutdown_eventfd {
            return Ok(fd.as_raw_fd());
        }
        let evt = vmm_sys_util::eventfd::EventFd::new(libc::EFD_CLOEXEC)?;
        let raw = std::os::fd::IntoRawFd::into_raw_fd(evt);
        // SAFETY: into_raw_fd gave up ownership of `raw`, an open eventfd; nothing else
        // owns or closes it.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        let raw = fd.as_raw_fd();
        self.shutdown_eventfd = Some(Arc::new(fd));
        Ok(raw)
    }

    /// `krun_set_kernel`: boot this kernel instead of libkrunfw's.
    pub fn set_kernel(&mut self, kernel: KernelFile) -> Result<(), ConfigError> {
        non_empty(&kernel.path.to_string_lossy(), "kernel path")?;
        self.kernel = Some(kernel);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
