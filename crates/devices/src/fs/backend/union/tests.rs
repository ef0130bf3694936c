//! The union of three temporary layer directories, driven through `FileSystem`.

use std::path::{Path, PathBuf};

use fuse_backend_rs::abi::fuse_abi::ROOT_ID;
use nix::sched::CloneFlags;
use vmm_sys_util::tempdir::TempDir;

use super::*;
use crate::fs::backend::tests::{ctx, errno, name};

struct Layers {
    _dir: TempDir,
    paths: Vec<PathBuf>,
}

/// lower: a (data "lower a\n"), gone, d/x; middle: b, d/y, a (data "middle a\n");
/// top: c.
fn layers() -> Layers {
    let dir = TempDir::new_with_prefix("/tmp/krun-union-test-").unwrap();
    let base = std::fs::canonicalize(dir.as_path()).unwrap();
    let paths: Vec<PathBuf> = ["lower", "middle", "top"]
        .iter()
        .map(|n| base.join(n))
        .collect();
    for p in &paths {
        std::fs::create_dir(p).unwrap();
    }
    let w = |l: usize, rel: &str, data: &str| {
        let path = paths[l].join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    };
    w(0, "a", "lower a\n");
    w(0, "gone", "lower gone\n");
    w(0, "d/x", "x\n");
    w(1, "b", "middle b\n");
    w(1, "d/y", "y\n");
    w(1, "a", "middle a\n");
    w(2, "c", "top c\n");
    Layers { _dir: dir, paths }
}

fn serve(paths: &[PathBuf]) -> UnionFs {
    nix::sched::unshare(CloneFlags::CLONE_FS).unwrap();
    let fs = UnionFs::new(paths).unwrap();
    fs.init(FsOptions::empty()).unwrap();
    fs
}

fn names(fs: &UnionFs, inode: u64) -> Vec<String> {
    let c = ctx();
    let (handle, _) = fs.opendir(&c, inode, 0).unwrap();
    let handle = handle.unwrap_or(0);
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let mut got = 0;
        fs.readdir(&c, inode, handle, 4096, offset, &mut |d| {
            got += 1;
            offset = d.offset;
            let n = String::from_utf8_lossy(d.name).into_owned();
            if n != "." && n != ".." {
                out.push(n);
            }
            Ok(1)
        })
        .unwrap();
        if got == 0 {
            break;
        }
    }
    out.sort();
    out
}

fn read_all(fs: &UnionFs, inode: u64) -> Vec<u8> {
    let c = ctx();
    let (h, _, _) = fs.open(&c, inode, libc::O_RDONLY as u32, 0).unwrap();
    let mut sink = vmm_sys_util::tempfile::TempFile::new().unwrap().into_file();
    let n = fs
        .read(&c, inode, h.unwrap_or(0), &mut sink, 1 << 20, 0, None, 0)
        .unwrap();
    use std::io::{Read, Seek, SeekFrom};
    sink.seek(SeekFrom::Start(0)).unwrap();
    let mut out = Vec::new();
    sink.read_to_end(&mut out).unwrap();
    assert_eq!(n, out.len());
    out
}

fn tree(p: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let path = e.path();
        let n = e.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            for (sub, data) in tree(&path) {
                out.push((format!("{n}/{sub}"), data));
            }
        } else {
            out.push((n, std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn union_shows_every_layer_and_the_upper_one_wins() {
    let l = layers();
    let fs = serve(&l.paths);
    let c = ctx();

    let root = names(&fs, ROOT_ID);
    let a = fs.lookup(&c, ROOT_ID, &name("a")).unwrap();
    let d = fs.lookup(&c, ROOT_ID, &name("d")).unwrap();

    assert_eq!(root, ["a", "b", "c", "d", "gone"]);
    assert_eq!(read_all(&fs, a.inode), b"middle a\n");
    assert_eq!(names(&fs, d.inode), ["x", "y"]);
}

#[test]
fn union_delete_of_lower_file_leaves_whiteout_and_lowers_unchanged() {
    let l = layers();
    let lower_before = (tree(&l.paths[0]), tree(&l.paths[1]));
    let fs = serve(&l.paths);
    let c = ctx();

    fs.unlink(&c, ROOT_ID, &name("gone")).unwrap();
    let d = fs.lookup(&c, ROOT_ID, &name("d")).unwrap();
    fs.unlink(&c, d.inode, &name("x")).unwrap();

    assert_eq!(errno(fs.lookup(&c, ROOT_ID, &name("gone"))), libc::ENOENT);
    assert_eq!(names(&fs, ROOT_ID), ["a", "b", "c", "d"]);
    assert_eq!(names(&fs, d.inode), ["y"]);
    assert!(l.paths[2].join(".wh.gone").is_file());
    assert!(l.paths[2].join("d/.wh.x").is_file());
    assert_eq!((tree(&l.paths[0]), tree(&l.paths[1])), lower_before);
    // A new union over the same layers (the next boot) still hides them.
    drop(fs);
    let again = serve(&l.paths);
    assert_eq!(names(&again, ROOT_ID), ["a", "b", "c", "d"]);
    assert_eq!(
        errno(again.lookup(&c, ROOT_ID, &name("gone"))),
        libc::ENOENT
    );
}

#[test]
fn union_write_to_lower_file_copies_it_up() {
    let l = layers();
    let lower_before = (tree(&l.paths[0]), tree(&l.paths[1]));
    let fs = serve(&l.paths);
    let c = ctx();
    let b = fs.lookup(&c, ROOT_ID, &name("b")).unwrap();

    let (h, _, _) = fs.open(&c, b.inode, libc::O_RDWR as u32, 0).unwrap();
    let mut src: &[u8] = b"MIDDLE";
    let mut src_file = vmm_sys_util::tempfile::TempFile::new().unwrap().into_file();
    std::io::Write::write_all(&mut src_file, src).unwrap();
    use std::io::{Seek, SeekFrom};
    src_file.seek(SeekFrom::Start(0)).unwrap();
    let n = fs
        .write(
            &c,
            b.inode,
            h.unwrap_or(0),
            &mut src_file,
            6,
            0,
            None,
            false,
            0,
            0,
        )
        .unwrap();
    src = &src[n..];

    assert!(src.is_empty());
    assert_eq!(std::fs::read(l.paths[2].join("b")).unwrap(), b"MIDDLE b\n");
    assert_eq!((tree(&l.paths[0]), tree(&l.paths[1])), lower_before);
    assert_eq!(read_all(&fs, b.inode), b"MIDDLE b\n");
}

#[test]
fn union_refuses_whiteout_names_and_hides_markers() {
    let l = layers();
    std::fs::create_dir(l.paths[2].join("d")).unwrap();
    std::fs::write(l.paths[2].join("d/.wh..wh..opq"), b"").unwrap();
    std::fs::write(l.paths[2].join("d/z"), b"z\n").unwrap();
    let fs = serve(&l.paths);
    let c = ctx();
    let d = fs.lookup(&c, ROOT_ID, &name("d")).unwrap();
    let args = CreateIn {
        flags: libc::O_WRONLY as u32,
        mode: libc::S_IFREG | 0o644,
        umask: 0,
        fuse_flags: 0,
    };

    assert_eq!(names(&fs, d.inode), ["z"]);
    assert_eq!(
        errno(fs.lookup(&c, d.inode, &name(".wh..wh..opq"))),
        libc::ENOENT
    );
    assert_eq!(
        errno(fs.create(&c, ROOT_ID, &name(".wh.a"), args)),
        libc::EPERM
    );
}

#[test]
fn union_rename_of_lower_file_moves_it_to_the_top_and_whites_out_the_old_name() {
    let l = layers();
    let lower_before = (tree(&l.paths[0]), tree(&l.paths[1]));
    let fs = serve(&l.paths);
    let c = ctx();
    let d = fs.lookup(&c, ROOT_ID, &name("d")).unwrap();

    fs.rename(&c, ROOT_ID, &name("b"), d.inode, &name("b2"), 0)
        .unwrap();
    fs.rename(&c, ROOT_ID, &name("c"), ROOT_ID, &name("a"), 0)
        .unwrap();
    let dir_rename = fs.rename(&c, ROOT_ID, &name("d"), ROOT_ID, &name("e"), 0);
    let b2 = fs.lookup(&c, d.inode, &name("b2")).unwrap();
    let a = fs.lookup(&c, ROOT_ID, &name("a")).unwrap();

    assert_eq!(names(&fs, ROOT_ID), ["a", "d", "gone"]);
    assert_eq!(names(&fs, d.inode), ["b2", "x", "y"]);
    assert_eq!(read_all(&fs, b2.inode), b"middle b\n");
    assert_eq!(read_all(&fs, a.inode), b"top c\n");
    assert_eq!(errno(dir_rename), libc::EXDEV);
    assert!(
        l.paths[2].join(".wh.b").is_file(),
        "top: {:?}",
        tree(&l.paths[2])
    );
    assert_eq!(
        std::fs::read(l.paths[2].join("d/b2")).unwrap(),
        b"middle b\n"
    );
    assert_eq!((tree(&l.paths[0]), tree(&l.paths[1])), lower_before);
}

#[test]
fn union_delete_after_copy_up_still_whites_out_and_recreate_clears_it() {
    let l = layers();
    let fs = serve(&l.paths);
    let c = ctx();
    let a = fs.lookup(&c, ROOT_ID, &name("a")).unwrap();
    let mut st = a.attr;
    st.st_mode = libc::S_IFREG | 0o600;
    fs.setattr(&c, a.inode, st, None, SetattrValid::MODE)
        .unwrap();
    assert!(l.paths[2].join("a").is_file(), "chmod copies up");

    fs.unlink(&c, ROOT_ID, &name("a")).unwrap();
    let d = fs.lookup(&c, ROOT_ID, &name("d")).unwrap();
    fs.unlink(&c, d.inode, &name("x")).unwrap();
    fs.unlink(&c, d.inode, &name("y")).unwrap();
    fs.rmdir(&c, ROOT_ID, &name("d")).unwrap();
    let whited_out = (
        l.paths[2].join(".wh.a").is_file(),
        l.paths[2].join(".wh.d").is_file(),
    );
    drop(fs);
    let fs = serve(&l.paths);
    let after_reboot = names(&fs, ROOT_ID);
    let args = CreateIn {
        flags: libc::O_WRONLY as u32,
        mode: libc::S_IFREG | 0o644,
        umask: 0,
        fuse_flags: 0,
    };
    fs.create(&c, ROOT_ID, &name("a"), args).unwrap();
    let new_d = fs.mkdir(&c, ROOT_ID, &name("d"), 0o755, 0).unwrap();
    drop(fs);
    let fs = serve(&l.paths);

    assert_eq!(whited_out, (true, true));
    assert_eq!(after_reboot, ["b", "c", "gone"]);
    assert!(!l.paths[2].join(".wh.a").exists() && !l.paths[2].join(".wh.d").exists());
    assert!(l.paths[2].join("d/.wh..wh..opq").is_file());
    assert_eq!(names(&fs, ROOT_ID), ["a", "b", "c", "d", "gone"]);
    let d = fs.lookup(&c, ROOT_ID, &name("d")).unwrap();
    assert!(names(&fs, d.inode).is_empty(), "{new_d:?}");
}
