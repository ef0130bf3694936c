//! The builder sections for block and network devices (`disk`, `net`) and the `fs` setters
//! beyond host directories: virtual files, the overlay root, shares served by Rust code.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vmm::config::{
    CustomNet, Disk, FsOverlay, FsOverlayKind, FsShare, Net, NetBackend, RootDiskRemount,
    NET_FLAG_DHCP_CLIENT, NET_FLAG_VFKIT,
};

use super::{check_dir, Draft, FsBuilder};
use crate::error::BuildError;
use crate::{FrameBackend, FsBackend};

/// The virtio-fs tag of the guest's root filesystem: give it to
/// [`FsBuilder::virtual_file`] and [`FsBuilder::virtual_dir`] to add entries to the root.
pub const ROOT_TAG: &str = vmm::config::ROOT_FS_TAG;

impl FsBuilder {
    /// Serve the share `tag` from `backend`, the program's own filesystem code (see
    /// [`FsBackend`]); with [`ROOT_TAG`] it is the guest's root (the embedded init is
    /// still served as `/init.krun` on top of it). The guest mounts another tag with
    /// `mount -t virtiofs TAG DIR`.
    pub fn backend(mut self, tag: &str, backend: Arc<dyn FsBackend>) -> Self {
        let setting = "fs.backend";
        if self.draft.text(setting, tag) {
            let r = self.draft.config.add_fs_share(FsShare {
                tag: tag.to_string(),
                path: None,
                shm_size: 0,
                read_only: false,
                semantics: Default::default(),
                layers: Vec::new(),
                backend: Some(devices::fs::SharedBackend(backend)),
            });
            self.draft.keep(setting, r);
        }
        self
    }

    /// [`share`](Self::share) with options: read-only, how ownership is served, a DAX
    /// window size.
    pub fn share_with(mut self, tag: &str, dir: impl AsRef<Path>, options: ShareOptions) -> Self {
        let setting = "fs.share_with";
        if !self.draft.text(setting, tag) {
            return self;
        }
        let path = match check_dir(setting, dir.as_ref()) {
            Ok(path) => path,
            Err(e) => {
                self.draft.fail(e);
                return self;
            }
        };
        if options.dax_window_bytes != 0 && tag == vmm::config::ROOT_FS_TAG {
            log::warn!(
                "{setting}: ignored: a DAX window of {} bytes for {tag:?} (the root has none)",
                options.dax_window_bytes
            );
        }
        let r = self.draft.config.add_fs_share(FsShare {
            tag: tag.to_string(),
            path: Some(path),
            shm_size: options.dax_window_bytes,
            read_only: options.read_only,
            semantics: match options.ownership {
                Ownership::Host => vmm::config::FsSemantics::LinuxComplete,
                Ownership::Caller => vmm::config::FsSemantics::LinuxSimplified,
            },
            layers: Vec::new(),
            backend: None,
        });
        self.draft.keep(setting, r);
        self
    }

    /// The root is the union of these host directories, lowest first; the last one is the
    /// writable top layer (copy-up on write, `.wh.` whiteouts, as in OCI image layers).
    /// Instead of [`root`](Self::root).
    pub fn overlay_root<I, P>(mut self, layers: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<Path>,
    {
        let setting = "fs.overlay_root";
        let mut dirs = Vec::new();
        for layer in layers {
            match check_dir(setting, layer.as_ref()) {
                Ok(dir) => dirs.push(dir),
                Err(e) => {
                    self.draft.fail(e);
                    return self;
                }
            }
        }
        let r = self.draft.config.set_root_layers(dirs);
        self.draft.keep(setting, r);
        self
    }

    /// A read-only file with these bytes at `path` (relative to the share's root) in share
    /// `tag`, served from memory; it hides a host file of the same name. Every directory on
    /// the way must exist (in the host directory, or added with
    /// [`virtual_dir`](Self::virtual_dir) before). `mode` holds the permission bits.
    pub fn virtual_file(
        mut self,
        tag: &str,
        path: &str,
        data: impl Into<Vec<u8>>,
        mode: u32,
    ) -> Self {
        let kind = FsOverlayKind::File {
            data: data.into(),
            one_shot: false,
        };
        self.add_overlay("fs.virtual_file", tag, path, mode, kind);
        self
    }

    /// A read-only, initially empty directory at `path` in share `tag`, to put virtual
    /// files in.
    pub fn virtual_dir(mut self, tag: &str, path: &str, mode: u32) -> Self {
        self.add_overlay("fs.virtual_dir", tag, path, mode, FsOverlayKind::Dir);
        self
    }

    fn add_overlay(
        &mut self,
        setting: &'static str,
        tag: &str,
        path: &str,
        mode: u32,
        kind: FsOverlayKind,
    ) {
        if !self.draft.text(setting, tag) || !self.draft.text(setting, path) {
            return;
        }
        let r = self.draft.config.add_fs_overlay(FsOverlay {
            tag: tag.to_string(),
            path: path.to_string(),
            mode: mode & 0o7777,
            kind,
        });
        self.draft.keep(setting, r);
    }
}

/// How a share serves owners and permission bits ([`ShareOptions::ownership`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ownership {
    /// The host's owners and modes, as every plain share (`KRUN_SEMANTICS_LINUX_COMPLETE`).
    #[default]
    Host,
    /// Files look owned by the guest process asking; chown/chgrp change nothing on the
    /// host; modes stay on the host (`KRUN_SEMANTICS_LINUX_SIMPLIFIED`).
    Caller,
}

/// How a host directory is shared ([`FsBuilder::share_with`]). `Default`: writable, host
/// ownership, no DAX window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShareOptions {
    /// Every write the guest tries fails with `EROFS`.
    pub read_only: bool,
    /// How owners and modes are served.
    pub ownership: Ownership,
    /// Size of the share's DAX window in bytes (0: none), rounded up to 2 MiB; the guest
    /// uses it when it mounts the share with `-o dax`. Ignored, with a warning, for the root.
    pub dax_window_bytes: u64,
}

/// The format of a disk image ([`DiskOptions::format`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiskFormat {
    /// A raw image file or a block device.
    #[default]
    Raw,
    /// A qcow2 image (with its backing chain).
    Qcow2,
    /// A vmdk image (read-only).
    Vmdk,
}

/// How a disk honours the guest's flushes ([`DiskOptions::sync`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiskSync {
    /// Flushes are not offered to the guest: fastest, nothing durable until the VM ends.
    None,
    /// Each guest flush becomes an fdatasync (`krun_add_disk`'s default).
    #[default]
    Relaxed,
    /// Every write is durable before the guest sees it complete.
    Full,
}

/// How a disk is attached ([`DiskBuilder::add`]). `Default`: raw, read-write, buffered,
/// flushes honoured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskOptions {
    /// The image format.
    pub format: DiskFormat,
    /// The guest cannot write (the image is opened read-only).
    pub read_only: bool,
    /// Open the image with `O_DIRECT` (falls back, with one warning, where the host
    /// filesystem refuses it).
    pub direct_io: bool,
    /// What a guest flush does.
    pub sync: DiskSync,
}

/// The virtio-blk disks ([`VmBuilder::disk`](crate::VmBuilder::disk)): `/dev/vda`,
/// `/dev/vdb`, ... in the order they are added; each `id` is the disk's serial
/// (`/sys/block/vdX/serial`).
#[derive(Debug)]
pub struct DiskBuilder {
    pub(super) draft: Draft,
}

impl DiskBuilder {
    /// A disk from the image at `path` (which must open as `options` asks), with the
    /// unique serial `id`.
    pub fn add(mut self, id: &str, path: impl AsRef<Path>, options: DiskOptions) -> Self {
        let setting = "disk.add";
        if !self.draft.text(setting, id) {
            return self;
        }
        let path = path.as_ref();
        if let Err(e) = check_image(setting, path, options.read_only) {
            self.draft.fail(e);
            return self;
        }
        let r = self.draft.config.add_disk(Disk {
            id: id.to_string(),
            path: path.to_path_buf(),
            format: match options.format {
                DiskFormat::Raw => vmm::config::DiskFormat::Raw,
                DiskFormat::Qcow2 => vmm::config::DiskFormat::Qcow2,
                DiskFormat::Vmdk => vmm::config::DiskFormat::Vmdk,
            },
            read_only: options.read_only,
            direct_io: options.direct_io,
            sync: match options.sync {
                DiskSync::None => vmm::config::SyncMode::None,
                DiskSync::Relaxed => vmm::config::SyncMode::Relaxed,
                DiskSync::Full => vmm::config::SyncMode::Full,
            },
        });
        self.draft.keep(setting, r);
        self
    }

    /// The guest boots from this raw disk (id `root`, filesystem type probed): init mounts
    /// it as `/` and runs the workload there. Instead of a root directory.
    pub fn root(mut self, path: impl AsRef<Path>) -> Self {
        let setting = "disk.root";
        let path = path.as_ref();
        if let Err(e) = check_image(setting, path, false) {
            self.draft.fail(e);
            return self;
        }
        let r = self.draft.config.set_root_disk(path.to_path_buf());
        self.draft.keep(setting, r);
        self
    }

    /// Boot from a disk added before: init mounts `device` (`/dev/vda`, `/dev/vdb1`) with
    /// `fstype` (None: probed) and `options`, and makes it `/`.
    pub fn remount_root(
        mut self,
        device: &str,
        fstype: Option<&str>,
        options: Option<&str>,
    ) -> Self {
        let setting = "disk.remount_root";
        let texts = std::iter::once(device).chain(fstype).chain(options);
        if !texts.into_iter().all(|t| self.draft.text(setting, t)) {
            return self;
        }
        let r = self.draft.config.set_root_disk_remount(RootDiskRemount {
            device: device.to_string(),
            fstype: fstype.map(str::to_string),
            options: options.map(str::to_string),
        });
        self.draft.keep(setting, r);
        self
    }
}

/// The image opens as the device will open it, or the error that says why not.
fn check_image(setting: &'static str, path: &Path, read_only: bool) -> Result<(), BuildError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(path)
        .map(drop)
        .map_err(|source| BuildError::Path {
            setting,
            path: path.to_path_buf(),
            source,
        })
}

/// One interface's guest-side settings ([`NetBuilder`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nic {
    mac: [u8; 6],
    offloads: u32,
    dhcp: bool,
}

impl Nic {
    /// An interface with this MAC (unicast, not all zeros), no offloads, no DHCP.
    pub fn new(mac: [u8; 6]) -> Self {
        Nic {
            mac,
            offloads: 0,
            dhcp: false,
        }
    }

    /// Init configures the interface by DHCP (address, route, MTU, DNS) before the
    /// workload starts; the backend's peer must answer (passt does).
    pub fn dhcp(mut self, enabled: bool) -> Self {
        self.dhcp = enabled;
        self
    }

    /// The virtio-net offload bits offered to the guest (libkrun's `NET_FEATURE_*`: CSUM
    /// 1, GUEST_CSUM 2, GUEST_TSO4 128, GUEST_TSO6 256, GUEST_UFO 1024, HOST_TSO4 2048,
    /// HOST_TSO6 4096, HOST_UFO 16384); the device offers those its backend can honour.
    pub fn offloads(mut self, bits: u32) -> Self {
        self.offloads = bits;
        self
    }
}

/// The virtio-net interfaces ([`VmBuilder::net`](crate::VmBuilder::net)): `eth0`, `eth1`,
/// ... in the order they are added. With an interface, the implicit vsock device does no
/// TSI (as upstream).
#[derive(Debug)]
pub struct NetBuilder {
    pub(super) draft: Draft,
}

impl NetBuilder {
    fn add(mut self, setting: &'static str, backend: NetBackend, nic: Nic, vfkit: bool) -> Self {
        let mut flags = if nic.dhcp { NET_FLAG_DHCP_CLIENT } else { 0 };
        if vfkit {
            flags |= NET_FLAG_VFKIT;
        }
        let r = self.draft.config.add_net(Net {
            backend,
            mac: nic.mac,
            features: nic.offloads,
            flags,
        });
        self.draft.keep(setting, r);
        self
    }

    fn path(&mut self, setting: &'static str, path: &Path) -> Option<PathBuf> {
        if path.as_os_str().is_empty() {
            self.draft.reject(setting, "the socket path is empty");
            return None;
        }
        Some(path.to_path_buf())
    }

    /// passt's protocol (each frame behind its 32-bit big-endian length) over a unix stream
    /// socket the VMM connects to at `build`.
    pub fn unix_stream(mut self, path: impl AsRef<Path>, nic: Nic) -> Self {
        let setting = "net.unix_stream";
        let Some(path) = self.path(setting, path.as_ref()) else {
            return self;
        };
        let backend = NetBackend::UnixStream {
            path: Some(path),
            fd: None,
        };
        self.add(setting, backend, nic, false)
    }

    /// [`unix_stream`](Self::unix_stream) over this connected socket (passt's
    /// `--fd`); the VMM keeps its own duplicate.
    pub fn unix_stream_fd(mut self, socket: impl Into<OwnedFd>, nic: Nic) -> Self {
        let fd = self.draft.fd(socket);
        let backend = NetBackend::UnixStream {
            path: None,
            fd: Some(fd),
        };
        self.add("net.unix_stream_fd", backend, nic, false)
    }

    /// One frame per datagram with the peer at `path` (gvproxy, vfkit-style proxies); the
    /// VMM binds a local socket for the answers. `vfkit`: send vfkit's `VFKT` magic first.
    pub fn unix_gram(mut self, path: impl AsRef<Path>, vfkit: bool, nic: Nic) -> Self {
        let setting = "net.unix_gram";
        let Some(path) = self.path(setting, path.as_ref()) else {
            return self;
        };
        let backend = NetBackend::UnixGram {
            path: Some(path),
            fd: None,
        };
        self.add(setting, backend, nic, vfkit)
    }

    /// [`unix_gram`](Self::unix_gram) over this connected datagram socket.
    pub fn unix_gram_fd(mut self, socket: impl Into<OwnedFd>, nic: Nic) -> Self {
        let fd = self.draft.fd(socket);
        let backend = NetBackend::UnixGram {
            path: None,
            fd: Some(fd),
        };
        self.add("net.unix_gram_fd", backend, nic, false)
    }

    /// The host tap interface `name` (created if missing, with the privileges that takes),
    /// with virtio-net headers so offloads pass through.
    pub fn tap(mut self, name: &str, nic: Nic) -> Self {
        if !self.draft.text("net.tap", name) {
            return self;
        }
        let backend = NetBackend::Tap {
            name: name.to_string(),
        };
        self.add("net.tap", backend, nic, false)
    }

    /// A peer in this program's own code (see [`FrameBackend`]): it gets every frame the
    /// guest sends and sends frames back through the [`FrameSender`](crate::FrameSender)
    /// it is started with.
    pub fn backend(self, peer: impl FrameBackend + 'static, nic: Nic) -> Self {
        let backend = NetBackend::Custom(CustomNet::new(Box::new(peer)));
        self.add("net.backend", backend, nic, false)
    }
}
