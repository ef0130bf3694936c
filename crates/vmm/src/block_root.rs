//! Booting from a disk: `krun_set_root_disk_remount`, and `krun_set_root_disk` (the disk
//! with id `root`, probed filesystem) done the same way.
//!
//! The kernel boots on an initial virtio-fs root with no host directory (NullFs) that holds
//! only init, the exec file and the mount points init needs; the command line tells init
//! which device to mount (`KRUN_BLOCK_ROOT_*`), and init makes it `/` before the workload
//! starts. The exit status comes back through that initial share, which init keeps open
//! (init/src/remount.rs).

use contract::keys;

use crate::config::{FsShare, RootDiskRemount, VmConfig, ROOT_FS_TAG};

/// The block root `config` asks for, if the root is not a directory: the explicit remount,
/// else the `root` disk of `krun_set_root_disk` as `/dev/vdX` by its position.
pub(crate) fn requested(config: &VmConfig) -> Option<RootDiskRemount> {
    if config.root_share().is_some() {
        return None;
    }
    if let Some(remount) = &config.root_disk_remount {
        return Some(remount.clone());
    }
    let index = config.disks.iter().position(|d| d.id == "root")?;
    Some(RootDiskRemount {
        device: format!("/dev/vd{}", disk_letters(index)),
        fstype: None,
        options: None,
    })
}

/// Guest disk names after `vd`: a..z, then aa, ab, ... as Linux's virtio_blk names them.
fn disk_letters(index: usize) -> String {
    let mut n = index + 1;
    let mut out = Vec::new();
    while n > 0 {
        n -= 1;
        out.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII letters")
}

/// Adds the initial NullFs root share to `config` (so the root's usual machinery, init and
/// the exec file and the exit code, applies) and returns the command line words for init.
pub(crate) fn prepare(config: &mut VmConfig, root: &RootDiskRemount) -> Vec<String> {
    config.fs_shares.push(FsShare {
        tag: ROOT_FS_TAG.to_string(),
        path: None,
        shm_size: 0,
        read_only: false,
        semantics: Default::default(),
        layers: Vec::new(),
        backend: None,
    });
    let mut words = vec![format!("{}={}", keys::BLOCK_ROOT_DEVICE, root.device)];
    if let Some(t) = &root.fstype {
        words.push(format!("{}={t}", keys::BLOCK_ROOT_FSTYPE));
    }
    if let Some(o) = &root.options {
        words.push(format!("{}={o}", keys::BLOCK_ROOT_OPTIONS));
    }
    log::debug!("block root: {words:?} on an initial NullFs root");
    words
}

/// The virtual mount points of the initial root.
pub(crate) fn mount_points() -> impl Iterator<Item = devices::fs::VirtualEntry> {
    contract::REMOUNT_DIRS
        .into_iter()
        .map(|d| devices::fs::VirtualEntry::dir(d, 0o755))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Disk, DiskFormat, SyncMode};

    fn disk(id: &str) -> Disk {
        Disk {
            id: id.into(),
            path: "/d.img".into(),
            format: DiskFormat::Raw,
            read_only: false,
            direct_io: false,
            sync: SyncMode::Relaxed,
        }
    }

    #[test]
    fn disk_letters_follow_linux_naming() {
        assert_eq!(disk_letters(0), "a");
        assert_eq!(disk_letters(25), "z");
        assert_eq!(disk_letters(26), "aa");
        assert_eq!(disk_letters(27), "ab");
    }

    #[test]
    fn requested_root_disk_is_its_position() {
        let mut c = VmConfig::default();
        c.disks.push(disk("data"));
        c.disks.push(disk("root"));
        assert_eq!(requested(&c).unwrap().device, "/dev/vdb");
    }

    #[test]
    fn prepare_adds_a_nullfs_root_and_the_words() {
        let mut c = VmConfig::default();
        c.disks.push(disk("d0"));
        c.root_disk_remount = Some(RootDiskRemount {
            device: "/dev/vda".into(),
            fstype: Some("ext4".into()),
            options: None,
        });
        let root = requested(&c).unwrap();
        let words = prepare(&mut c, &root);
        assert_eq!(
            words,
            [
                "KRUN_BLOCK_ROOT_DEVICE=/dev/vda",
                "KRUN_BLOCK_ROOT_FSTYPE=ext4"
            ]
        );
        assert_eq!(c.root_share().unwrap().path, None);
        assert_eq!(requested(&c), None, "a root share now exists");
    }
}
