//! The overlay through the whole share stack: virtual files and directories at any depth,
//! over a host directory and over NullFs.

use fuse_backend_rs::abi::fuse_abi::ROOT_ID;
use nix::sched::CloneFlags;

use super::super::tests::{ctx, errno, host, is_mode, name, read_via_fs, serve};
use super::super::{ShareFs, ShareOptions, ShareRoot, VirtualEntries, VirtualEntry};
use super::super::{VirtualEntryError, FIRST_VIRTUAL_INODE};
use super::*;

fn with_entries(entries: Vec<VirtualEntry>) -> ShareOptions {
    ShareOptions {
        entries,
        ..ShareOptions::default()
    }
}

fn null_share(entries: Vec<VirtualEntry>) -> ShareFs {
    nix::sched::unshare(CloneFlags::CLONE_FS).unwrap();
    let fs = ShareFs::new(&ShareRoot::Null, with_entries(entries), "fs(null)").unwrap();
    fs.init(FsOptions::empty()).unwrap();
    fs
}

/// Every (name, inode, type, offset) a readdir of `inode` returns, in order, reading
/// `per_call` entries per request as a guest with a small buffer would.
fn list(fs: &ShareFs, inode: u64, per_call: usize) -> Vec<(String, u64, u32, u64)> {
    let c = ctx();
    let (handle, _) = fs.opendir(&c, inode, libc::O_RDONLY as u32).unwrap();
    let handle = handle.unwrap_or(0);
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let mut batch = Vec::new();
        fs.readdir(&c, inode, handle, 4096, offset, &mut |d| {
            if batch.len() == per_call {
                return Ok(0);
            }
            batch.push((
                String::from_utf8(d.name.to_vec()).unwrap(),
                d.ino,
                d.type_,
                d.offset,
            ));
            Ok(1)
        })
        .unwrap();
        let Some(last) = batch.last() else { break };
        offset = last.3;
        seen.extend(batch);
        assert!(seen.len() < 100, "readdir does not end");
    }
    fs.releasedir(&c, inode, 0, handle).unwrap();
    seen
}

fn names(listing: &[(String, u64, u32, u64)]) -> Vec<&str> {
    let mut names: Vec<&str> = listing.iter().map(|e| e.0.as_str()).collect();
    names.sort_unstable();
    names
}

fn read_all(fs: &ShareFs, inode: u64, size: u32, offset: u64) -> Vec<u8> {
    let (handle, _, _) = fs.open(&ctx(), inode, libc::O_RDONLY as u32, 0).unwrap();
    read_via_fs(fs, inode, handle.unwrap_or(0), size, offset)
}

#[test]
fn overlay_readdir_of_virtual_dir_lists_its_children_across_calls() {
    let host = host();
    let fs = serve(
        &host.share,
        with_entries(vec![
            VirtualEntry::dir("opt", 0o755),
            VirtualEntry::file("opt/a", b"A".to_vec(), 0o444),
            VirtualEntry::dir("opt/sub", 0o700),
            VirtualEntry::file("opt/b", b"BB".to_vec(), 0o555),
        ]),
    );
    let opt = fs.lookup(&ctx(), ROOT_ID, &name("opt")).unwrap();

    let one_by_one = list(&fs, opt.inode, 1);
    let at_once = list(&fs, opt.inode, 10);

    assert!(is_mode(&opt.attr, libc::S_IFDIR));
    assert_eq!(opt.attr.st_mode & 0o7777, 0o755);
    assert_eq!(one_by_one, at_once);
    assert_eq!(names(&at_once), [".", "..", "a", "b", "sub"]);
    assert_eq!((at_once[0].1, at_once[1].1), (opt.inode, ROOT_ID));
    let sub = at_once.iter().find(|e| e.0 == "sub").unwrap();
    assert_eq!(sub.2, u32::from(libc::DT_DIR));
    let a = fs.lookup(&ctx(), opt.inode, &name("a")).unwrap();
    assert_eq!(at_once.iter().find(|e| e.0 == "a").unwrap().1, a.inode);
    assert!(!host.share.join("opt").exists());
}

#[test]
fn overlay_nested_virtual_file_below_host_and_virtual_dirs_reads_its_bytes() {
    let host = host();
    std::fs::create_dir_all(host.share.join("etc/conf.d")).unwrap();
    std::fs::write(host.share.join("etc/conf.d/real"), b"host file").unwrap();
    let fs = serve(
        &host.share,
        with_entries(vec![
            VirtualEntry::file("etc/conf.d/injected.conf", b"key=value\n".to_vec(), 0o444),
            VirtualEntry::dir("etc/conf.d/app", 0o755),
            VirtualEntry::file("etc/conf.d/app/deep", b"deep bytes".to_vec(), 0o444),
        ]),
    );
    let c = ctx();

    let etc = fs.lookup(&c, ROOT_ID, &name("etc")).unwrap();
    let conf_d = fs.lookup(&c, etc.inode, &name("conf.d")).unwrap();
    let injected = fs.lookup(&c, conf_d.inode, &name("injected.conf")).unwrap();
    let app = fs.lookup(&c, conf_d.inode, &name("app")).unwrap();
    let deep = fs.lookup(&c, app.inode, &name("deep")).unwrap();
    let real = fs.lookup(&c, conf_d.inode, &name("real")).unwrap();

    assert!(etc.inode < FIRST_VIRTUAL_INODE && conf_d.inode < FIRST_VIRTUAL_INODE);
    assert!(injected.inode >= FIRST_VIRTUAL_INODE);
    assert_eq!(read_all(&fs, injected.inode, 4096, 0), b"key=value\n");
    assert_eq!(read_all(&fs, deep.inode, 4096, 0), b"deep bytes");
    assert_eq!(read_all(&fs, real.inode, 4096, 0), b"host file");
    assert_eq!(
        names(&list(&fs, conf_d.inode, 1)),
        ["app", "injected.conf", "real"]
    );
    assert_eq!(errno(fs.lookup(&c, app.inode, &name("real"))), libc::ENOENT);
    assert_eq!(
        std::fs::read_dir(host.share.join("etc/conf.d"))
            .unwrap()
            .count(),
        1
    );
}

#[test]
fn overlay_virtual_entry_shadows_host_entry_which_stays_unchanged() {
    let host = host();
    std::fs::create_dir(host.share.join("etc")).unwrap();
    std::fs::write(host.share.join("etc/hostname"), b"host name\n").unwrap();
    std::fs::create_dir(host.share.join("data")).unwrap();
    std::fs::write(host.share.join("data/hidden"), b"x").unwrap();
    let fs = serve(
        &host.share,
        with_entries(vec![
            VirtualEntry::file("etc/hostname", b"virtual\n".to_vec(), 0o444),
            VirtualEntry::dir("data", 0o555),
        ]),
    );
    let c = ctx();
    let etc = fs.lookup(&c, ROOT_ID, &name("etc")).unwrap();

    let hostname = fs.lookup(&c, etc.inode, &name("hostname")).unwrap();
    let listing = list(&fs, etc.inode, 10);
    let data = fs.lookup(&c, ROOT_ID, &name("data")).unwrap();

    assert_eq!(read_all(&fs, hostname.inode, 4096, 0), b"virtual\n");
    assert_eq!(hostname.attr.st_size, 8);
    assert_eq!(listing.len(), 1, "{listing:?}");
    assert_eq!(
        (listing[0].0.as_str(), listing[0].1),
        ("hostname", hostname.inode)
    );
    assert!(data.inode >= FIRST_VIRTUAL_INODE);
    assert_eq!(names(&list(&fs, data.inode, 10)), [".", ".."]);
    assert_eq!(
        errno(fs.lookup(&c, data.inode, &name("hidden"))),
        libc::ENOENT
    );
    assert_eq!(
        std::fs::read(host.share.join("etc/hostname")).unwrap(),
        b"host name\n"
    );
    assert_eq!(std::fs::read(host.share.join("data/hidden")).unwrap(), b"x");
}

#[test]
fn overlay_read_at_offsets_returns_those_bytes() {
    let host = host();
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let fs = serve(
        &host.share,
        with_entries(vec![VirtualEntry::file("blob", bytes.clone(), 0o444)]),
    );
    let blob = fs.lookup(&ctx(), ROOT_ID, &name("blob")).unwrap();

    for (offset, size) in [
        (0u64, 4096u32),
        (1, 10),
        (4095, 2),
        (65_536, 40_000),
        (99_999, 9),
    ] {
        let start = offset as usize;
        let end = (start + size as usize).min(bytes.len());
        assert_eq!(
            read_all(&fs, blob.inode, size, offset),
            &bytes[start..end],
            "offset {offset}"
        );
    }
    assert!(read_all(&fs, blob.inode, 10, 100_000).is_empty());
    assert!(read_all(&fs, blob.inode, 10, u64::MAX).is_empty());
    assert_eq!(blob.attr.st_size, 100_000);
}

#[test]
fn overlay_writes_to_virtual_entries_are_refused() {
    let host = host();
    std::fs::create_dir(host.share.join("etc")).unwrap();
    let fs = serve(
        &host.share,
        with_entries(vec![
            VirtualEntry::file("etc/motd", b"hi".to_vec(), 0o644),
            VirtualEntry::dir("vdir", 0o755),
        ]),
    );
    let c = ctx();
    let etc = fs.lookup(&c, ROOT_ID, &name("etc")).unwrap();
    let motd = fs.lookup(&c, etc.inode, &name("motd")).unwrap();
    let vdir = fs.lookup(&c, ROOT_ID, &name("vdir")).unwrap();
    let create = CreateIn {
        flags: libc::O_WRONLY as u32,
        mode: 0o644,
        umask: 0,
        fuse_flags: 0,
    };

    assert_eq!(
        errno(fs.open(&c, motd.inode, libc::O_WRONLY as u32, 0)),
        libc::EACCES
    );
    assert_eq!(
        errno(fs.open(&c, motd.inode, libc::O_RDWR as u32, 0)),
        libc::EACCES
    );
    assert_eq!(
        errno(fs.open(&c, motd.inode, (libc::O_RDONLY | libc::O_TRUNC) as u32, 0)),
        libc::EACCES
    );
    assert_eq!(
        errno(fs.access(&c, motd.inode, libc::W_OK as u32)),
        libc::EACCES
    );
    assert_eq!(
        errno(fs.setattr(&c, motd.inode, motd.attr, None, SetattrValid::SIZE)),
        libc::EPERM
    );
    assert_eq!(errno(fs.unlink(&c, etc.inode, &name("motd"))), libc::EPERM);
    assert_eq!(
        errno(fs.create(&c, etc.inode, &name("motd"), create)),
        libc::EEXIST
    );
    assert_eq!(
        errno(fs.create(&c, vdir.inode, &name("new"), create)),
        libc::EROFS
    );
    assert_eq!(
        errno(fs.mkdir(&c, vdir.inode, &name("d"), 0o755, 0)),
        libc::EROFS
    );
    assert_eq!(
        errno(fs.setxattr(&c, vdir.inode, &name("user.x"), b"1", 0)),
        libc::EPERM
    );
    assert_eq!(errno(fs.rmdir(&c, ROOT_ID, &name("vdir"))), libc::EPERM);
    assert_eq!(
        errno(fs.rename(&c, ROOT_ID, &name("etc"), ROOT_ID, &name("moved"), 0)),
        libc::EPERM
    );
    assert_eq!(errno(fs.rmdir(&c, ROOT_ID, &name("etc"))), libc::ENOTEMPTY);
    assert_eq!(
        errno(fs.link(&c, motd.inode, ROOT_ID, &name("hard"))),
        libc::EPERM
    );
    assert_eq!(
        std::fs::read_dir(host.share.join("etc")).unwrap().count(),
        0
    );
    assert!(!host.share.join("vdir").exists() && !host.share.join("moved").exists());
}

#[test]
fn overlay_virtual_only_entries_follow_the_host_listing() {
    let host = host();
    for n in ["h1", "h2", "h3"] {
        std::fs::write(host.share.join(n), n).unwrap();
    }
    let fs = serve(
        &host.share,
        with_entries(vec![
            VirtualEntry::file("v1", b"1".to_vec(), 0o444),
            VirtualEntry::file("h2", b"shadow".to_vec(), 0o444),
            VirtualEntry::dir("v2", 0o755),
        ]),
    );

    let listing = list(&fs, ROOT_ID, 1);

    assert_eq!(names(&listing), ["h1", "h2", "h3", "v1", "v2"]);
    let h2 = listing.iter().find(|e| e.0 == "h2").unwrap();
    assert!(h2.1 >= FIRST_VIRTUAL_INODE);
    let virtual_offsets: Vec<u64> = listing[3..].iter().map(|e| e.3).collect();
    assert!(
        virtual_offsets.iter().all(|&o| o > VIRTUAL_DIR_OFFSET),
        "{listing:?}"
    );
    assert_eq!(listing, list(&fs, ROOT_ID, 10));
}

#[test]
fn overlay_unlisted_entry_is_found_by_name_but_not_listed() {
    let host = host();
    std::fs::write(host.share.join("host"), b"h").unwrap();
    let fs = serve(
        &host.share,
        with_entries(vec![
            VirtualEntry::init(b"init"),
            VirtualEntry::file(".krun_exec.json", b"{}".to_vec(), 0o444).unlisted(),
            VirtualEntry::file("listed", b"l".to_vec(), 0o444),
        ]),
    );

    let listing = list(&fs, ROOT_ID, 10);
    let exec = fs
        .lookup(&ctx(), ROOT_ID, &name(".krun_exec.json"))
        .unwrap();

    assert_eq!(names(&listing), ["host", "listed"]);
    assert_eq!(read_all(&fs, exec.inode, 10, 0), b"{}");
}

#[test]
fn overlay_readdirplus_reaches_spine_dirs_and_lists_virtual_entries() {
    let host = host();
    std::fs::create_dir(host.share.join("etc")).unwrap();
    std::fs::write(host.share.join("etc/passwd"), b"root").unwrap();
    let fs = serve(
        &host.share,
        with_entries(vec![VirtualEntry::file(
            "etc/extra",
            b"extra".to_vec(),
            0o444,
        )]),
    );
    let c = ctx();
    let (handle, _) = fs.opendir(&c, ROOT_ID, libc::O_RDONLY as u32).unwrap();
    let mut etc = None;
    fs.readdirplus(&c, ROOT_ID, handle.unwrap(), 4096, 0, &mut |d, e| {
        if d.name == b"etc" {
            etc = Some(e.inode);
        }
        Ok(1)
    })
    .unwrap();
    let etc = etc.expect("etc listed");
    let (handle, _) = fs.opendir(&c, etc, libc::O_RDONLY as u32).unwrap();
    let mut seen = Vec::new();

    fs.readdirplus(&c, etc, handle.unwrap(), 4096, 0, &mut |d, e| {
        seen.push((d.name.to_vec(), e.inode, e.attr.st_size));
        Ok(1)
    })
    .unwrap();

    seen.sort();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0, b"extra");
    assert!(seen[0].1 >= FIRST_VIRTUAL_INODE);
    assert_eq!(seen[0].2, 5);
    assert_eq!((seen[1].0.as_slice(), seen[1].2), (&b"passwd"[..], 4));
    assert_eq!(read_all(&fs, seen[0].1, 100, 1), b"xtra");
}

#[test]
fn overlay_one_shot_entry_is_gone_after_the_first_lookup() {
    let host = host();
    std::fs::write(host.share.join("token"), b"host").unwrap();
    let mut once = VirtualEntry::file("token", b"secret".to_vec(), 0o400);
    once.one_shot = true;
    let fs = serve(&host.share, with_entries(vec![once]));
    let c = ctx();

    let first = fs.lookup(&c, ROOT_ID, &name("token")).unwrap();
    let second = fs.lookup(&c, ROOT_ID, &name("token")).unwrap();

    assert_eq!(read_all(&fs, first.inode, 100, 0), b"secret");
    assert_eq!(first.entry_timeout, Duration::ZERO);
    assert!(second.inode < FIRST_VIRTUAL_INODE);
    assert_eq!(read_all(&fs, second.inode, 100, 0), b"host");
}

#[test]
fn null_share_serves_only_virtual_entries() {
    let fs = null_share(vec![
        VirtualEntry::init(b"init bytes"),
        VirtualEntry::dir("dev", 0o755),
        VirtualEntry::dir("etc", 0o755),
        VirtualEntry::file("etc/app.conf", b"mode=fast\n".to_vec(), 0o444),
    ]);
    let c = ctx();

    let (root, _) = fs.getattr(&c, ROOT_ID, None).unwrap();
    let init = fs.lookup(&c, ROOT_ID, &name("init.krun")).unwrap();
    let etc = fs.lookup(&c, ROOT_ID, &name("etc")).unwrap();
    let conf = fs.lookup(&c, etc.inode, &name("app.conf")).unwrap();

    assert!(is_mode(&root, libc::S_IFDIR));
    assert_eq!(
        names(&list(&fs, ROOT_ID, 1)),
        [".", "..", "dev", "etc"],
        "init.krun is unlisted"
    );
    assert_eq!(init.attr.st_mode & 0o7777, 0o555);
    assert_eq!(read_all(&fs, init.inode, 4, 5), b"byte");
    assert_eq!(read_all(&fs, conf.inode, 100, 0), b"mode=fast\n");
    assert_eq!(errno(fs.lookup(&c, ROOT_ID, &name("bin"))), libc::ENOENT);
    assert_eq!(
        errno(fs.mkdir(&c, ROOT_ID, &name("bin"), 0o755, 0)),
        libc::EROFS
    );
    let create = CreateIn {
        flags: libc::O_WRONLY as u32,
        mode: 0o644,
        umask: 0,
        fuse_flags: 0,
    };
    assert_eq!(
        errno(fs.create(&c, ROOT_ID, &name("f"), create)),
        libc::EROFS
    );
    assert_eq!(errno(fs.getattr(&c, 2, None)), libc::ENOENT);
}

#[test]
fn null_share_without_entries_is_an_empty_directory() {
    let fs = null_share(Vec::new());

    assert_eq!(names(&list(&fs, ROOT_ID, 10)), [".", ".."]);
    assert!(fs.statfs(&ctx(), ROOT_ID).is_ok());
}

#[test]
fn virtual_entries_add_checks_paths_and_parents() {
    let entries = VirtualEntries::new();
    entries
        .add(VirtualEntry::file("/a/file", b"".to_vec(), 0o444))
        .unwrap();

    let results = [
        entries.add(VirtualEntry::dir("", 0o755)),
        entries.add(VirtualEntry::dir("x/../y", 0o755)),
        entries.add(VirtualEntry::dir("x//y", 0o755)),
        entries.add(VirtualEntry::dir("./x", 0o755)),
        entries.add(VirtualEntry::file("a/file", b"".to_vec(), 0o444)),
        entries.add(VirtualEntry::file("a/file/below", b"".to_vec(), 0o444)),
        entries.add(VirtualEntry::file("a", b"".to_vec(), 0o444)),
    ];

    assert!(matches!(results[0], Err(VirtualEntryError::Path(_))));
    assert!(matches!(results[1], Err(VirtualEntryError::Path(_))));
    assert!(matches!(results[2], Err(VirtualEntryError::Path(_))));
    assert!(matches!(results[3], Err(VirtualEntryError::Path(_))));
    assert_eq!(results[4], Err(VirtualEntryError::Exists("a/file".into())));
    assert!(matches!(
        results[5],
        Err(VirtualEntryError::ParentNotDir { .. })
    ));
    assert!(matches!(
        results[6],
        Err(VirtualEntryError::ParentNotDir { .. })
    ));
    assert_eq!(entries.snapshot().len(), 1);
    assert_eq!(entries.snapshot()[0].path, "a/file");
}
