//! Drives [`ShareFs`] directly (no virtio) against a temporary host directory: the
//! passthrough, the read-only decorator, the root's virtual files and the exit-code ioctl.
//! The overlay's own cases are in `overlay/tests.rs`.

use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fuse_backend_rs::abi::fuse_abi::ROOT_ID;
use nix::sched::CloneFlags;
use vmm_sys_util::tempdir::TempDir;

use super::FIRST_VIRTUAL_INODE as INIT_INODE;
use super::*;
use crate::fs::{INIT_NAME, KRUN_EXIT_CODE_IOCTL};

const INIT: &[u8] = b"\x7fELF pretend init binary\0with a NUL inside";

/// A temporary directory holding `share/` (what the guest sees) and `outside` (a host file
/// the guest must never reach).
pub(super) struct Host {
    _dir: TempDir,
    pub(super) share: PathBuf,
    outside: PathBuf,
}

pub(super) fn host() -> Host {
    let dir = TempDir::new_with_prefix("/tmp/krun-fs-test-").unwrap();
    let base = std::fs::canonicalize(dir.as_path()).unwrap();
    let share = base.join("share");
    std::fs::create_dir(&share).unwrap();
    let outside = base.join("outside");
    std::fs::write(&outside, b"host secret").unwrap();
    Host {
        _dir: dir,
        share,
        outside,
    }
}

pub(super) fn serve(share: &Path, opts: ShareOptions) -> ShareFs {
    // FUSE_INIT clears the umask; keep that to this test's thread, as the worker does.
    nix::sched::unshare(CloneFlags::CLONE_FS).unwrap();
    let fs = ShareFs::new(&ShareRoot::Host(share.to_owned()), opts, "fs(test)").unwrap();
    fs.init(FsOptions::empty()).unwrap();
    fs
}

/// A request from the test process's own user (what owns `/proc/self`), so the passthrough
/// does not need to switch credentials.
pub(super) fn ctx() -> Context {
    let me = std::fs::metadata("/proc/self").unwrap();
    Context {
        uid: me.uid(),
        gid: me.gid(),
        pid: 1,
    }
}

pub(super) fn name(s: &str) -> CString {
    CString::new(s).unwrap()
}

pub(super) fn errno(r: io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.raw_os_error().unwrap(),
    }
}

pub(super) fn rw() -> ShareOptions {
    ShareOptions::default()
}

/// Reads `size` bytes at `offset` of an opened inode through the `ZeroCopyWriter` path.
pub(super) fn read_via_fs(
    fs: &ShareFs,
    inode: u64,
    handle: u64,
    size: u32,
    offset: u64,
) -> Vec<u8> {
    let mut sink = vmm_sys_util::tempfile::TempFile::new().unwrap().into_file();
    let n = fs
        .read(&ctx(), inode, handle, &mut sink, size, offset, None, 0)
        .unwrap();
    sink.seek(SeekFrom::Start(0)).unwrap();
    let mut out = Vec::new();
    sink.read_to_end(&mut out).unwrap();
    assert_eq!(n, out.len());
    out
}

pub(super) fn is_mode(st: &stat64, kind: u32) -> bool {
    st.st_mode & libc::S_IFMT == kind
}

#[test]
fn share_lookup_dotdot_at_root_stays_at_root() {
    let host = host();
    let fs = serve(&host.share, rw());
    let share_ino = std::fs::metadata(&host.share).unwrap().ino();

    let entry = fs.lookup(&ctx(), ROOT_ID, &name("..")).unwrap();

    assert_eq!(entry.inode, ROOT_ID);
    assert_eq!(entry.attr.st_ino, share_ino);
    assert_eq!(
        errno(fs.lookup(&ctx(), entry.inode, &name("outside"))),
        libc::ENOENT
    );
}

#[test]
fn share_lookup_dotdot_from_subdir_returns_root() {
    let host = host();
    std::fs::create_dir(host.share.join("sub")).unwrap();
    let fs = serve(&host.share, rw());
    let sub = fs.lookup(&ctx(), ROOT_ID, &name("sub")).unwrap();

    let up = fs.lookup(&ctx(), sub.inode, &name("..")).unwrap();
    let up_again = fs.lookup(&ctx(), up.inode, &name("..")).unwrap();

    assert_eq!(up.inode, ROOT_ID);
    assert_eq!(up_again.inode, ROOT_ID);
}

#[test]
fn share_lookup_path_with_slash_is_rejected() {
    let host = host();
    let fs = serve(&host.share, rw());

    assert_eq!(
        errno(fs.lookup(&ctx(), ROOT_ID, &name("../outside"))),
        libc::EINVAL
    );
    assert_eq!(
        errno(fs.lookup(&ctx(), ROOT_ID, &name(&host.outside.to_string_lossy()))),
        libc::EINVAL
    );
}

#[test]
fn share_absolute_symlink_is_returned_not_followed() {
    let host = host();
    std::os::unix::fs::symlink("/etc", host.share.join("etc")).unwrap();
    let fs = serve(&host.share, rw());

    let link = fs.lookup(&ctx(), ROOT_ID, &name("etc")).unwrap();

    assert!(is_mode(&link.attr, libc::S_IFLNK));
    assert_eq!(fs.readlink(&ctx(), link.inode).unwrap(), b"/etc");
    // The host never walks through it, nor opens it.
    assert_eq!(
        errno(fs.lookup(&ctx(), link.inode, &name("passwd"))),
        libc::ENOTDIR
    );
    assert!(fs
        .open(&ctx(), link.inode, libc::O_RDONLY as u32, 0)
        .is_err());
    assert!(fs
        .opendir(&ctx(), link.inode, libc::O_RDONLY as u32)
        .is_err());
}

#[test]
fn share_guest_symlink_to_host_file_stays_a_symlink() {
    let host = host();
    let fs = serve(&host.share, rw());
    let target = name(&host.outside.to_string_lossy());

    let link = fs
        .symlink(&ctx(), &target, ROOT_ID, &name("escape"))
        .unwrap();

    assert!(is_mode(&link.attr, libc::S_IFLNK));
    assert_eq!(
        std::fs::read_link(host.share.join("escape")).unwrap(),
        host.outside
    );
    assert!(fs
        .open(&ctx(), link.inode, libc::O_RDONLY as u32, 0)
        .is_err());
    let (st, _) = fs.getattr(&ctx(), link.inode, None).unwrap();
    assert!(is_mode(&st, libc::S_IFLNK));
}

#[test]
fn share_rename_or_link_out_of_the_share_is_rejected() {
    let host = host();
    std::fs::write(host.share.join("file"), b"data").unwrap();
    let fs = serve(&host.share, rw());
    let file = fs.lookup(&ctx(), ROOT_ID, &name("file")).unwrap();

    let rename = fs.rename(
        &ctx(),
        ROOT_ID,
        &name("file"),
        ROOT_ID,
        &name("../moved"),
        0,
    );
    let link = fs.link(&ctx(), file.inode, ROOT_ID, &name("../linked"));

    assert_eq!(errno(rename), libc::EINVAL);
    assert_eq!(errno(link), libc::EINVAL);
    let parent = host.share.parent().unwrap();
    assert!(!parent.join("moved").exists());
    assert!(!parent.join("linked").exists());
}

#[test]
fn share_write_appears_on_host_with_exact_bytes() {
    let host = host();
    let fs = serve(&host.share, rw());
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut source = vmm_sys_util::tempfile::TempFile::new().unwrap().into_file();
    std::io::Write::write_all(&mut source, &data).unwrap();
    source.seek(SeekFrom::Start(0)).unwrap();
    let args = CreateIn {
        flags: libc::O_RDWR as u32,
        mode: 0o644,
        umask: 0o022,
        fuse_flags: 0,
    };

    let (entry, handle, _, _) = fs.create(&ctx(), ROOT_ID, &name("written"), args).unwrap();
    let handle = handle.unwrap();
    let mut offset = 0u64;
    while (offset as usize) < data.len() {
        let size = (data.len() - offset as usize).min(128 * 1024) as u32;
        let n = fs
            .write(
                &ctx(),
                entry.inode,
                handle,
                &mut source,
                size,
                offset,
                None,
                false,
                0,
                0,
            )
            .unwrap();
        offset += n as u64;
    }
    fs.release(&ctx(), entry.inode, 0, handle, true, false, None)
        .unwrap();

    let on_host = std::fs::read(host.share.join("written")).unwrap();
    assert!(on_host == data, "host file differs from what was written");
    let mode = std::fs::metadata(host.share.join("written"))
        .unwrap()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
}

#[test]
fn share_read_only_mutations_return_erofs() {
    let host = host();
    std::fs::write(host.share.join("file"), b"read me").unwrap();
    let opts = ShareOptions {
        read_only: true,
        ..ShareOptions::default()
    };
    let fs = serve(&host.share, opts);
    let c = ctx();
    let file = fs.lookup(&c, ROOT_ID, &name("file")).unwrap();
    let create = CreateIn {
        flags: libc::O_WRONLY as u32,
        mode: 0o644,
        umask: 0,
        fuse_flags: 0,
    };

    let results = [
        errno(fs.create(&c, ROOT_ID, &name("new"), create)),
        errno(fs.mkdir(&c, ROOT_ID, &name("dir"), 0o755, 0)),
        errno(fs.mknod(&c, ROOT_ID, &name("fifo"), libc::S_IFIFO | 0o644, 0, 0)),
        errno(fs.symlink(&c, &name("/etc"), ROOT_ID, &name("sym"))),
        errno(fs.link(&c, file.inode, ROOT_ID, &name("hard"))),
        errno(fs.unlink(&c, ROOT_ID, &name("file"))),
        errno(fs.rmdir(&c, ROOT_ID, &name("file"))),
        errno(fs.rename(&c, ROOT_ID, &name("file"), ROOT_ID, &name("renamed"), 0)),
        errno(fs.open(&c, file.inode, libc::O_WRONLY as u32, 0)),
        errno(fs.open(&c, file.inode, libc::O_RDWR as u32, 0)),
        errno(fs.open(&c, file.inode, (libc::O_RDONLY | libc::O_TRUNC) as u32, 0)),
        errno(fs.setattr(&c, file.inode, file.attr, None, SetattrValid::SIZE)),
        errno(fs.setxattr(&c, file.inode, &name("user.x"), b"1", 0)),
        errno(fs.removexattr(&c, file.inode, &name("user.x"))),
        errno(fs.access(&c, file.inode, libc::W_OK as u32)),
    ];

    assert!(results.iter().all(|&e| e == libc::EROFS), "{results:?}");
    let (handle, _, _) = fs.open(&c, file.inode, libc::O_RDONLY as u32, 0).unwrap();
    assert_eq!(
        read_via_fs(&fs, file.inode, handle.unwrap(), 100, 0),
        b"read me"
    );
    assert_eq!(std::fs::read_dir(&host.share).unwrap().count(), 1);
}

#[test]
fn share_init_lookup_and_read_return_the_binary() {
    let host = host();
    let opts = ShareOptions {
        entries: vec![VirtualEntry::init(INIT)],
        ..ShareOptions::default()
    };
    let fs = serve(&host.share, opts);
    let c = ctx();

    let entry = fs.lookup(&c, ROOT_ID, &name("init.krun")).unwrap();
    let (st, _) = fs.getattr(&c, entry.inode, None).unwrap();
    let (handle, _, _) = fs.open(&c, entry.inode, libc::O_RDONLY as u32, 0).unwrap();
    let handle = handle.unwrap_or(0);

    assert_eq!(entry.inode, INIT_INODE);
    assert!(is_mode(&st, libc::S_IFREG));
    assert_eq!(st.st_mode & 0o777, 0o555);
    assert_eq!(st.st_size as usize, INIT.len());
    assert_eq!(read_via_fs(&fs, entry.inode, handle, 4096, 0), INIT);
    assert_eq!(read_via_fs(&fs, entry.inode, handle, 4, 5), &INIT[5..9]);
    assert!(read_via_fs(&fs, entry.inode, handle, 4096, 1 << 40).is_empty());
    fs.release(&c, entry.inode, 0, handle, false, false, None)
        .unwrap();
    assert!(!host.share.join("init.krun").exists());
}

#[test]
fn share_second_virtual_file_has_own_inode_mode_and_bytes() {
    let host = host();
    std::fs::write(host.share.join(".krun_exec.json"), b"host copy").unwrap();
    let opts = ShareOptions {
        entries: vec![
            VirtualEntry::init(INIT),
            VirtualEntry::file(
                ".krun_exec.json",
                b"{\"exec\":\"/bin/true\"}".to_vec(),
                0o444,
            ),
        ],
        ..ShareOptions::default()
    };
    let fs = serve(&host.share, opts);
    let c = ctx();

    let entry = fs.lookup(&c, ROOT_ID, &name(".krun_exec.json")).unwrap();
    let (st, _) = fs.getattr(&c, entry.inode, None).unwrap();
    let (handle, _, _) = fs.open(&c, entry.inode, libc::O_RDONLY as u32, 0).unwrap();

    assert_eq!(entry.inode, INIT_INODE + 1);
    assert_eq!(st.st_mode & 0o777, 0o444);
    assert_eq!(
        read_via_fs(&fs, entry.inode, handle.unwrap_or(0), 4096, 0),
        b"{\"exec\":\"/bin/true\"}"
    );
    assert_eq!(
        errno(fs.unlink(&c, ROOT_ID, &name(".krun_exec.json"))),
        libc::EPERM
    );
    assert_eq!(
        std::fs::read(host.share.join(".krun_exec.json")).unwrap(),
        b"host copy"
    );
}

#[test]
fn share_init_cannot_be_written_or_replaced() {
    let host = host();
    let opts = ShareOptions {
        entries: vec![VirtualEntry::init(INIT)],
        ..ShareOptions::default()
    };
    let fs = serve(&host.share, opts);
    let c = ctx();
    let create = CreateIn {
        flags: libc::O_WRONLY as u32,
        mode: 0o755,
        umask: 0,
        fuse_flags: 0,
    };

    assert_eq!(
        errno(fs.open(&c, INIT_INODE, libc::O_RDWR as u32, 0)),
        libc::EACCES
    );
    assert_eq!(
        errno(fs.create(&c, ROOT_ID, &name("init.krun"), create)),
        libc::EEXIST
    );
    assert_eq!(
        errno(fs.unlink(&c, ROOT_ID, &name("init.krun"))),
        libc::EPERM
    );
    assert_eq!(
        errno(fs.setattr(
            &c,
            INIT_INODE,
            fs.getattr(&c, INIT_INODE, None).unwrap().0,
            None,
            SetattrValid::MODE
        )),
        libc::EPERM
    );
    assert!(!host.share.join("init.krun").exists());
}

#[test]
fn share_init_only_in_the_root_directory() {
    let host = host();
    std::fs::create_dir(host.share.join("sub")).unwrap();
    let with_init = ShareOptions {
        entries: vec![VirtualEntry::init(INIT)],
        ..ShareOptions::default()
    };
    let fs = serve(&host.share, with_init);
    let plain = serve(&host.share, rw());
    let sub = fs.lookup(&ctx(), ROOT_ID, &name("sub")).unwrap();

    assert_eq!(
        errno(fs.lookup(&ctx(), sub.inode, &name("init.krun"))),
        libc::ENOENT
    );
    assert_eq!(
        errno(plain.lookup(&ctx(), ROOT_ID, &name("init.krun"))),
        libc::ENOENT
    );
}

#[test]
fn share_readdirplus_shows_host_init_as_the_virtual_one() {
    let host = host();
    std::fs::write(host.share.join("init.krun"), b"host copy").unwrap();
    let opts = ShareOptions {
        entries: vec![VirtualEntry::init(INIT)],
        ..ShareOptions::default()
    };
    let fs = serve(&host.share, opts);
    let c = ctx();
    let (handle, _) = fs.opendir(&c, ROOT_ID, libc::O_RDONLY as u32).unwrap();
    let mut seen = Vec::new();

    fs.readdirplus(&c, ROOT_ID, handle.unwrap(), 4096, 0, &mut |d, e| {
        seen.push((d.name.to_vec(), e.inode, e.attr.st_size));
        Ok(1)
    })
    .unwrap();

    let init = seen.iter().find(|(n, _, _)| n == INIT_NAME).unwrap();
    assert_eq!((init.1, init.2 as usize), (INIT_INODE, INIT.len()));
    assert_eq!(
        std::fs::read(host.share.join("init.krun")).unwrap(),
        b"host copy"
    );
}

#[test]
fn share_exit_code_ioctl_records_the_code() {
    let host = host();
    let exit_code = ExitCode::new();
    let opts = ShareOptions {
        exit_code: Some(exit_code.clone()),
        ..ShareOptions::default()
    };
    let fs = serve(&host.share, opts);
    let c = ctx();
    let (handle, _) = fs.opendir(&c, ROOT_ID, libc::O_RDONLY as u32).unwrap();

    assert_eq!(exit_code.get(), None);
    fs.record_exit_code(7);
    let reply = fs.ioctl(
        &c,
        ROOT_ID,
        handle.unwrap(),
        0,
        KRUN_EXIT_CODE_IOCTL,
        IoctlData::default(),
        0,
    );

    assert_eq!(reply.unwrap().result, 0);
    assert_eq!(exit_code.get(), Some(7));
    fs.record_exit_code(u64::from(u32::MAX));
    assert_eq!(exit_code.get(), Some(-1));
}

#[test]
fn share_exit_code_ioctl_without_handle_is_enotty() {
    let host = host();
    let fs = serve(&host.share, rw());

    let reply = fs.ioctl(
        &ctx(),
        ROOT_ID,
        0,
        0,
        KRUN_EXIT_CODE_IOCTL,
        IoctlData::default(),
        0,
    );

    assert_eq!(errno(reply), libc::ENOTTY);
}

#[test]
fn exit_code_new_is_unset() {
    assert_eq!(ExitCode::new().get(), None);
    assert_eq!(ExitCode::default().get(), None);
}

#[test]
fn share_new_missing_directory_fails_at_init() {
    let host = host();
    let root = ShareRoot::Host(host.share.join("missing"));
    let fs = ShareFs::new(&root, rw(), "fs(test)").unwrap();

    nix::sched::unshare(CloneFlags::CLONE_FS).unwrap();
    assert_eq!(errno(fs.init(FsOptions::empty())), libc::ENOENT);
}

#[test]
fn share_link_rename_mkdir_inside_share_reach_the_host() {
    let host = host();
    std::fs::write(host.share.join("file"), b"data").unwrap();
    let fs = serve(&host.share, rw());
    let c = ctx();
    let file = fs.lookup(&c, ROOT_ID, &name("file")).unwrap();

    let dir = fs.mkdir(&c, ROOT_ID, &name("dir"), 0o755, 0).unwrap();
    fs.link(&c, file.inode, dir.inode, &name("hard")).unwrap();
    fs.rename(&c, ROOT_ID, &name("file"), dir.inode, &name("moved"), 0)
        .unwrap();

    let moved = host.share.join("dir/moved");
    let hard = host.share.join("dir/hard");
    assert_eq!(std::fs::read(&moved).unwrap(), b"data");
    assert_eq!(
        std::fs::metadata(&moved).unwrap().ino(),
        std::fs::metadata(&hard).unwrap().ino()
    );
    assert!(!host.share.join("file").exists());
}

#[test]
fn simplified_share_reports_caller_as_owner_and_drops_chown() {
    let host = host();
    let file = host.share.join("file");
    std::fs::write(&file, b"x").unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let owner = std::fs::metadata(&file).unwrap().uid();
    let fs = serve(
        &host.share,
        ShareOptions {
            simplified: true,
            ..ShareOptions::default()
        },
    );
    let guest = Context {
        uid: owner + 4242,
        gid: 4243,
        pid: 1,
    };

    let entry = fs.lookup(&guest, ROOT_ID, &name("file")).unwrap();
    let mut st = entry.attr;
    st.st_uid = 0;
    st.st_mode = libc::S_IFREG | 0o604;
    let (after, timeout) = fs
        .setattr(
            &guest,
            entry.inode,
            st,
            None,
            SetattrValid::UID | SetattrValid::MODE,
        )
        .unwrap();

    assert_eq!((entry.attr.st_uid, entry.attr.st_gid), (owner + 4242, 4243));
    assert_eq!(entry.attr.st_mode & 0o7777, 0o640);
    assert_eq!(entry.attr_timeout, Duration::ZERO);
    assert_eq!(
        (after.st_uid, after.st_mode & 0o7777),
        (owner + 4242, 0o604)
    );
    assert_eq!(timeout, Duration::ZERO);
    let on_host = std::fs::metadata(&file).unwrap();
    assert_eq!((on_host.uid(), on_host.mode() & 0o7777), (owner, 0o604));
}

#[test]
fn complete_share_reports_host_owner() {
    let host = host();
    std::fs::write(host.share.join("file"), b"x").unwrap();
    let fs = serve(&host.share, rw());
    let c = ctx();

    let entry = fs.lookup(&c, ROOT_ID, &name("file")).unwrap();

    assert_eq!(entry.attr.st_uid, c.uid);
}

/// A DAX request handler that records what reached it (the window's bounds are checked in
/// front of it, in `dax.rs`).
#[derive(Default)]
struct RecordingDax {
    maps: Vec<(u64, u64, u64, u64)>,
    unmaps: usize,
}

impl FsCacheReqHandler for RecordingDax {
    fn map(&mut self, foffset: u64, moffset: u64, len: u64, flags: u64, fd: i32) -> io::Result<()> {
        assert!(fd >= 0);
        self.maps.push((foffset, moffset, len, flags));
        Ok(())
    }

    fn unmap(&mut self, requests: Vec<RemovemappingOne>) -> io::Result<()> {
        self.unmaps += requests.len();
        Ok(())
    }
}

#[test]
fn share_setupmapping_regular_file_reaches_window_directory_einval() {
    let host = host();
    std::fs::write(host.share.join("file"), vec![7u8; 8192]).unwrap();
    std::fs::create_dir(host.share.join("dir")).unwrap();
    let fs = serve(&host.share, rw());
    let c = ctx();
    let file = fs.lookup(&c, ROOT_ID, &name("file")).unwrap();
    let dir = fs.lookup(&c, ROOT_ID, &name("dir")).unwrap();
    let mut dax = RecordingDax::default();

    fs.setupmapping(&c, file.inode, 0, 0, 4096, 0x3, 8192, &mut dax)
        .unwrap();
    let on_dir = errno(fs.setupmapping(&c, dir.inode, 0, 0, 4096, 0x2, 0, &mut dax));
    let one = RemovemappingOne {
        moffset: 8192,
        len: 4096,
    };
    fs.removemapping(&c, file.inode, vec![one], &mut dax)
        .unwrap();

    assert_eq!(dax.maps, vec![(0, 8192, 4096, 0x3)]);
    assert_eq!(on_dir, libc::EINVAL);
    assert_eq!(dax.unmaps, 1);
}

#[test]
fn share_read_only_writable_mapping_erofs_read_mapping_served() {
    let host = host();
    std::fs::write(host.share.join("file"), vec![7u8; 4096]).unwrap();
    let opts = ShareOptions {
        read_only: true,
        ..ShareOptions::default()
    };
    let fs = serve(&host.share, opts);
    let c = ctx();
    let file = fs.lookup(&c, ROOT_ID, &name("file")).unwrap();
    let mut dax = RecordingDax::default();

    let write = errno(fs.setupmapping(&c, file.inode, 0, 0, 4096, 0x3, 0, &mut dax));
    fs.setupmapping(&c, file.inode, 0, 0, 4096, 0x2, 0, &mut dax)
        .unwrap();

    assert_eq!(write, libc::EROFS);
    assert_eq!(dax.maps, vec![(0, 0, 4096, 0x2)]);
}
