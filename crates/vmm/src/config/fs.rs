//! Root and shared directories, disks, virtual entries in shares.

use std::path::PathBuf;

use super::{non_empty, ConfigError, VmConfig, ROOT_FS_TAG};

/// A host directory served to the guest over virtio-fs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsShare {
    pub tag: String,
    /// The host directory; `None` is upstream's NullFs, a share with no host directory whose
    /// root is an empty virtual directory and which shows only its virtual entries (the
    /// initial root of a disk-remount boot, `krun_add_virtiofs3` with a NULL path).
    pub path: Option<PathBuf>,
    /// Size of the DAX window in bytes (0: none).
    pub shm_size: u64,
    pub read_only: bool,
    /// How ownership and permission bits are served (`krun_add_virtiofs4`'s `semantics`).
    pub semantics: FsSemantics,
    /// The layer directories of an overlay root (`krun_set_overlayfs_root`), lowest first,
    /// the last one writable; then `path` is `None`. Empty for every other share.
    pub layers: Vec<PathBuf>,
    /// The embedding program's own filesystem serves the share (the Rust API's
    /// `fs.backend`); then `path` is `None` and `layers` empty.
    pub backend: Option<devices::fs::SharedBackend>,
}

/// The permission semantics of a share (upstream's `KRUN_SEMANTICS_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsSemantics {
    /// 0, `KRUN_SEMANTICS_LINUX_COMPLETE`: the host's owners and permission bits, as every
    /// other `krun_add_virtiofs*` share.
    #[default]
    LinuxComplete,
    /// 1, `KRUN_SEMANTICS_LINUX_SIMPLIFIED`: permission bits stay on the host inode, but
    /// ownership is ignored: every file is reported as owned by the guest process asking
    /// (so attributes cannot be cached), and chown/chgrp change nothing on the host.
    LinuxSimplified,
}

impl FsSemantics {
    /// Decodes `KRUN_SEMANTICS_*`; anything else is `EINVAL`, as upstream.
    pub fn from_raw(raw: u32) -> Result<Self, ConfigError> {
        match raw {
            0 => Ok(FsSemantics::LinuxComplete),
            1 => Ok(FsSemantics::LinuxSimplified),
            _ => Err(ConfigError::FsSemantics(raw)),
        }
    }
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

/// Longest virtio-fs mount tag: the `tag` field of the device's config space (virtio 1.2,
/// 5.11.4) holds 36 bytes.
pub const FS_TAG_MAX_LEN: usize = 36;

/// Size of the DAX window upstream gives the root share of `krun_set_root` (512 MiB).
pub const ROOT_SHM_SIZE: u64 = 1 << 29;

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

impl VmConfig {
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
        if share.tag.len() > FS_TAG_MAX_LEN {
            return Err(ConfigError::FsTagLength {
                len: share.tag.len(),
                tag: share.tag,
            });
        }
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
        if self.root_share().is_some() {
            // The header documents -EEXIST for a second krun_set_root.
            return Err(ConfigError::DuplicateFsTag(ROOT_FS_TAG.to_string()));
        }
        self.claim_root("virtio-fs root")?;
        self.add_fs_share(FsShare {
            tag: ROOT_FS_TAG.to_string(),
            path: Some(path),
            shm_size: ROOT_SHM_SIZE,
            read_only: false,
            semantics: FsSemantics::LinuxComplete,
            layers: Vec::new(),
            backend: None,
        })
    }

    /// `krun_set_overlayfs_root`: the root is an overlay of these host directories.
    pub fn set_root_layers(&mut self, layers: Vec<PathBuf>) -> Result<(), ConfigError> {
        if layers.is_empty() {
            return Err(ConfigError::Empty("root layer list"));
        }
        if self.root_share().is_some() {
            // microsandbox's header documents -EEXIST for a root already set.
            return Err(ConfigError::DuplicateFsTag(ROOT_FS_TAG.to_string()));
        }
        self.claim_root("overlayfs root")?;
        self.add_fs_share(FsShare {
            tag: ROOT_FS_TAG.to_string(),
            path: None,
            shm_size: 0,
            read_only: false,
            semantics: FsSemantics::LinuxComplete,
            layers: layers.clone(),
            backend: None,
        })?;
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

    /// `krun_fs_add_overlay_*`: every directory on the way to `path` must exist when the
    /// call is made, as upstream's header asks: a virtual directory added before, or (in a
    /// share with a host directory, for a parent that is no virtual entry) a directory of the
    /// host, found now (`ENOENT` / `ENOTDIR`) and by name again when the guest walks to it.
    pub fn add_fs_overlay(&mut self, overlay: FsOverlay) -> Result<(), ConfigError> {
        let path = overlay.path.trim_start_matches('/').to_string();
        if path.is_empty()
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(ConfigError::OverlayPath(overlay.path));
        }
        let Some(share) = self.fs_shares.iter().find(|s| s.tag == overlay.tag) else {
            return Err(ConfigError::NoSuchFsTag(overlay.tag));
        };
        let same_tag = |p: &str| {
            self.fs_overlays
                .iter()
                .find(|o| o.tag == overlay.tag && o.path == p)
        };
        if same_tag(&path).is_some() {
            return Err(ConfigError::OverlayExists(path));
        }
        // Walk up to the nearest virtual ancestor: the parents below it must be host
        // directories, which a virtual directory (it has only virtual children) cannot hold.
        let mut host_parent = None;
        let mut ancestor = path.as_str();
        let mut below_virtual_dir = false;
        while let Some((parent, _)) = ancestor.rsplit_once('/') {
            match same_tag(parent) {
                Some(FsOverlay {
                    kind: FsOverlayKind::File { .. },
                    ..
                }) => return Err(ConfigError::OverlayParentNotDir(parent.to_string())),
                Some(_) => {
                    below_virtual_dir = true;
                    break;
                }
                None => {
                    host_parent.get_or_insert(parent);
                }
            }
            ancestor = parent;
        }
        match host_parent {
            Some(parent) if below_virtual_dir => {
                return Err(ConfigError::OverlayParentMissing(parent.to_string()))
            }
            Some(parent) => {
                let dirs: Vec<&std::path::Path> = match &share.path {
                    Some(p) => vec![p.as_path()],
                    None => share.layers.iter().map(PathBuf::as_path).collect(),
                };
                check_host_parent(&dirs, parent, &path)?
            }
            None => {}
        }
        self.fs_overlays.push(FsOverlay { path, ..overlay });
        Ok(())
    }
}

/// The deepest non-virtual parent `parent` of the overlay entry `path` must be a directory
/// in the share's host directory, or in one of its layers (a NullFs share has none).
fn check_host_parent(
    dirs: &[&std::path::Path],
    parent: &str,
    path: &str,
) -> Result<(), ConfigError> {
    let mut not_dir = false;
    for dir in dirs {
        match std::fs::metadata(dir.join(parent)) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => not_dir = true,
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => not_dir = true,
            Err(_) => {}
        }
    }
    log::debug!("overlay {path:?}: no host directory {parent:?} in {dirs:?}");
    if not_dir {
        Err(ConfigError::OverlayParentNotDir(parent.to_string()))
    } else {
        Err(ConfigError::OverlayParentMissing(parent.to_string()))
    }
}
