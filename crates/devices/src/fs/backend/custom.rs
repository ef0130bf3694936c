//! A share served by the embedding program's own code: the public [`FsBackend`] trait (a
//! small node-id filesystem: look up, list, read, write, create, remove) and [`CustomFs`],
//! the fuse-backend-rs `FileSystem` that answers the guest's FUSE requests from it.
//!
//! The trait stays far simpler than FUSE: no handles (files are read and written by node id),
//! no lookup counts (the adapter never forgets for the backend), no ownership (every node is
//! root's), no links, renames or extended attributes (`ENOSYS` to the guest, so its tools
//! fall back or fail cleanly). Whatever the backend returns is checked before it reaches the
//! guest: a node id outside FUSE's range is `EIO`, a read longer than asked is cut.

use std::sync::Arc;

use fuse_backend_rs::api::VFS_MAX_INO;

use super::forward::prelude::*;
use super::passthrough::SERVER_OPTIONS;

/// The node id of a share's root directory in every [`FsBackend`].
pub const ROOT_NODE: u64 = 1;

/// How long the guest may cache a node's attributes and a name's lookup: short, since the
/// backend's tree may change behind the guest's back.
const CACHE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file: read and written by offset.
    File,
    /// A directory: listed, and the parent of lookups, creates and removes.
    Dir,
}

/// A node's attributes, as [`FsBackend`] reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAttr {
    /// The node id, unique in the share while the node exists; [`ROOT_NODE`] is the root.
    /// At most 2^56 - 1 (larger ids reach the guest as `EIO`).
    pub node: u64,
    /// File or directory.
    pub kind: NodeKind,
    /// Size in bytes (files); directories may report 0.
    pub size: u64,
    /// Permission bits (`0o644`, `0o755`); the type bits come from `kind`.
    pub perm: u32,
}

/// One entry of a directory listing ([`FsBackend::read_dir`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirItem {
    /// The entry's name: no `/`, not `.` or `..`.
    pub name: String,
    /// Its node id.
    pub node: u64,
    /// File or directory.
    pub kind: NodeKind,
}

/// A filesystem served to the guest from the program's own code, over virtio-fs.
///
/// Nodes are named by `u64` ids; [`ROOT_NODE`] is the share's root directory. Every method
/// runs on the share's worker thread while the guest waits for the answer, so it should not
/// block for long; an `Err` reaches the guest as that errno (use
/// `io::Error::from_raw_os_error(libc::ENOENT)` and the like; an error without an OS code
/// becomes `EIO`); a panic fails that one request with `EIO` (logged once) and the VM goes
/// on. The mutating methods default to `EROFS`, so a read-only tree implements only the
/// first four.
///
/// Lifecycle: the backend is shared (`Arc`) with the VM; the guest's requests start when it
/// mounts the share and end when the VM ends. The guest caches names and attributes for
/// about a second, and file data until the file is opened again after it changed.
pub trait FsBackend: Send + Sync {
    /// The node called `name` in directory `parent`: `ENOENT` when there is none.
    fn lookup(&self, parent: u64, name: &str) -> io::Result<NodeAttr>;

    /// The attributes of `node`.
    fn getattr(&self, node: u64) -> io::Result<NodeAttr>;

    /// The entries of directory `dir`, without `.` and `..` (the adapter adds them).
    fn read_dir(&self, dir: u64) -> io::Result<Vec<DirItem>>;

    /// Up to `size` bytes of file `node` from `offset`; fewer (or none) at the end.
    fn read(&self, node: u64, offset: u64, size: u32) -> io::Result<Vec<u8>>;

    /// Writes `data` into file `node` at `offset`, growing it as needed; the bytes written.
    fn write(&self, node: u64, offset: u64, data: &[u8]) -> io::Result<usize> {
        let _ = (node, offset, data);
        Err(io::Error::from_raw_os_error(libc::EROFS))
    }

    /// Creates an empty file `name` in `parent` with permission bits `perm` (`EEXIST` if
    /// the name is taken).
    fn create(&self, parent: u64, name: &str, perm: u32) -> io::Result<NodeAttr> {
        let _ = (parent, name, perm);
        Err(io::Error::from_raw_os_error(libc::EROFS))
    }

    /// Creates an empty directory `name` in `parent`.
    fn mkdir(&self, parent: u64, name: &str, perm: u32) -> io::Result<NodeAttr> {
        let _ = (parent, name, perm);
        Err(io::Error::from_raw_os_error(libc::EROFS))
    }

    /// Removes the file or empty directory `name` from `parent` (`ENOTEMPTY` for a directory
    /// with entries). `dir` says which the guest asked for (rmdir or unlink): answer
    /// `ENOTDIR` / `EISDIR` when the node is the other kind.
    fn remove(&self, parent: u64, name: &str, dir: bool) -> io::Result<()> {
        let _ = (parent, name, dir);
        Err(io::Error::from_raw_os_error(libc::EROFS))
    }

    /// Sets the size of file `node` (truncate or extend with zeros); its new attributes.
    fn set_size(&self, node: u64, size: u64) -> io::Result<NodeAttr> {
        let _ = (node, size);
        Err(io::Error::from_raw_os_error(libc::EROFS))
    }
}

fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// A guest's name as the backend takes it: UTF-8 (else `errno`), never `.`/`..` or with `/`.
fn name_of(name: &CStr, errno: i32) -> io::Result<&str> {
    match name.to_str() {
        Ok(s) if !s.is_empty() && s != "." && s != ".." && !s.contains('/') => Ok(s),
        _ => Err(err(errno)),
    }
}

/// An [`FsBackend`] as a share's configuration holds it: shared, compared by identity.
#[derive(Clone)]
pub struct SharedBackend(pub Arc<dyn FsBackend>);

impl std::fmt::Debug for SharedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FsBackend@{:p}", Arc::as_ptr(&self.0))
    }
}

impl PartialEq for SharedBackend {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedBackend {}

/// Answers the guest's FUSE requests from an [`FsBackend`].
pub struct CustomFs {
    backend: Arc<dyn FsBackend>,
    /// A backend call panicked before (logged once).
    panicked: std::sync::atomic::AtomicBool,
}

impl CustomFs {
    /// Serves `backend`.
    pub fn new(backend: Arc<dyn FsBackend>) -> Self {
        CustomFs {
            backend,
            panicked: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The stat the guest sees for `attr`; `EIO` for a node id FUSE cannot carry.
    fn stat(attr: &NodeAttr) -> io::Result<stat64> {
        if attr.node == 0 || attr.node > VFS_MAX_INO {
            log::debug!("fs backend: node id {:#x} is out of range", attr.node);
            return Err(err(libc::EIO));
        }
        let (kind, nlink) = match attr.kind {
            NodeKind::File => (libc::S_IFREG, 1),
            NodeKind::Dir => (libc::S_IFDIR, 2),
        };
        let mut st = stat64::from(fuse_backend_rs::abi::fuse_abi::Attr::default());
        st.st_ino = attr.node;
        st.st_mode = kind | (attr.perm & 0o7777);
        st.st_nlink = nlink;
        st.st_size = i64::try_from(attr.size).unwrap_or(i64::MAX);
        st.st_blksize = 4096;
        st.st_blocks = i64::try_from(attr.size.div_ceil(512)).unwrap_or(i64::MAX);
        Ok(st)
    }

    /// Calls the backend; a panic in it becomes `EIO` for this request (logged once per
    /// share), never the worker thread's end.
    fn call<T>(&self, f: impl FnOnce(&dyn FsBackend) -> io::Result<T>) -> io::Result<T> {
        let backend = self.backend.as_ref();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(backend))).unwrap_or_else(|_| {
            if !self
                .panicked
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                log::error!(
                    "fs backend: a request panicked; it and any later panicking ones fail with EIO"
                );
            }
            Err(err(libc::EIO))
        })
    }

    fn entry(attr: &NodeAttr) -> io::Result<Entry> {
        Ok(Entry {
            inode: attr.node,
            generation: 0,
            attr: Self::stat(attr)?,
            attr_flags: 0,
            attr_timeout: CACHE_TIMEOUT,
            entry_timeout: CACHE_TIMEOUT,
        })
    }

    fn dir_type(kind: NodeKind) -> u32 {
        u32::from(match kind {
            NodeKind::File => libc::DT_REG,
            NodeKind::Dir => libc::DT_DIR,
        })
    }
}

impl FileSystem for CustomFs {
    type Inode = u64;
    type Handle = u64;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        Ok(SERVER_OPTIONS & capable)
    }

    fn lookup(&self, _ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        let name = name_of(name, libc::ENOENT)?;
        Self::entry(&self.call(|b| b.lookup(parent, name))?)
    }

    fn getattr(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: Option<u64>,
    ) -> io::Result<(stat64, Duration)> {
        Ok((
            Self::stat(&self.call(|b| b.getattr(inode))?)?,
            CACHE_TIMEOUT,
        ))
    }

    /// A size change goes to the backend; mode, owner and time changes are accepted and
    /// not kept (the trait has no place for them), so `touch` and `cp -p` work.
    fn setattr(
        &self,
        _ctx: &Context,
        inode: u64,
        attr: stat64,
        _handle: Option<u64>,
        valid: SetattrValid,
    ) -> io::Result<(stat64, Duration)> {
        let now = if valid.contains(SetattrValid::SIZE) {
            let size = u64::try_from(attr.st_size).map_err(|_| err(libc::EINVAL))?;
            self.call(|b| b.set_size(inode, size))?
        } else {
            self.call(|b| b.getattr(inode))?
        };
        Ok((Self::stat(&now)?, CACHE_TIMEOUT))
    }

    fn mkdir(
        &self,
        _ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        let name = name_of(name, libc::EINVAL)?;
        Self::entry(&self.call(|b| b.mkdir(parent, name, mode & !umask & 0o7777))?)
    }

    fn unlink(&self, _ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.call(|b| b.remove(parent, name_of(name, libc::ENOENT)?, false))
    }

    fn rmdir(&self, _ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.call(|b| b.remove(parent, name_of(name, libc::ENOENT)?, true))
    }

    fn open(
        &self,
        _ctx: &Context,
        inode: u64,
        flags: u32,
        _fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        if self.call(|b| b.getattr(inode))?.kind == NodeKind::Dir {
            return Err(err(libc::EISDIR));
        }
        if flags & libc::O_TRUNC as u32 != 0 {
            self.call(|b| b.set_size(inode, 0))?;
        }
        Ok((None, OpenOptions::empty(), None))
    }

    fn create(
        &self,
        _ctx: &Context,
        parent: u64,
        name: &CStr,
        args: CreateIn,
    ) -> io::Result<(Entry, Option<u64>, OpenOptions, Option<u32>)> {
        let name = name_of(name, libc::EINVAL)?;
        let attr = self.call(|b| b.create(parent, name, args.mode & !args.umask & 0o7777))?;
        Ok((Self::entry(&attr)?, None, OpenOptions::empty(), None))
    }

    fn read(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        _lock_owner: Option<u64>,
        _flags: u32,
    ) -> io::Result<usize> {
        let mut data = self.call(|b| b.read(inode, offset, size))?;
        data.truncate(size as usize);
        io::Write::write_all(w, &data)?;
        Ok(data.len())
    }

    fn write(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
        _lock_owner: Option<u64>,
        _delayed_write: bool,
        _flags: u32,
        _fuse_flags: u32,
    ) -> io::Result<usize> {
        // Only what the request carries is allocated, whatever `size` claims.
        let mut data = Vec::new();
        io::Read::read_to_end(&mut io::Read::take(r, u64::from(size)), &mut data)?;
        self.call(|b| b.write(inode, offset, &data))
    }

    fn flush(&self, _: &Context, _: u64, _: u64, _: u64) -> io::Result<()> {
        Ok(())
    }

    fn fsync(&self, _: &Context, _: u64, _: bool, _: u64) -> io::Result<()> {
        Ok(())
    }

    fn release(
        &self,
        _: &Context,
        _: u64,
        _: u32,
        _: u64,
        _: bool,
        _: bool,
        _: Option<u64>,
    ) -> io::Result<()> {
        Ok(())
    }

    fn opendir(
        &self,
        _ctx: &Context,
        inode: u64,
        _flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions)> {
        if self.call(|b| b.getattr(inode))?.kind != NodeKind::Dir {
            return Err(err(libc::ENOTDIR));
        }
        Ok((None, OpenOptions::empty()))
    }

    /// `.` and `..` at offsets 1 and 2, the backend's entries from 3 on; each entry's
    /// offset is where the next listing resumes.
    fn readdir(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        _size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        let items = self.call(|b| b.read_dir(inode))?;
        let dots = [(&b"."[..], inode), (&b".."[..], inode)];
        let dots = dots
            .iter()
            .map(|(name, node)| (*name, *node, libc::DT_DIR as u32));
        let rest = items
            .iter()
            .map(|i| (i.name.as_bytes(), i.node, Self::dir_type(i.kind)));
        for (index, (name, ino, type_)) in dots.chain(rest).enumerate() {
            let next = index as u64 + 1;
            if next <= offset {
                continue;
            }
            if name.is_empty() || name.contains(&b'/') || ino == 0 || ino > VFS_MAX_INO {
                log::debug!("fs backend: skipping a bad directory entry {name:?}");
                continue;
            }
            if add_entry(DirEntry {
                ino,
                offset: next,
                type_,
                name,
            })? == 0
            {
                break;
            }
        }
        Ok(())
    }

    fn releasedir(&self, _: &Context, _: u64, _: u32, _: u64) -> io::Result<()> {
        Ok(())
    }

    fn fsyncdir(&self, _: &Context, _: u64, _: bool, _: u64) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// A one-directory tree: name -> (node, bytes).
    #[derive(Default)]
    struct FakeTree {
        files: Mutex<BTreeMap<String, (u64, Vec<u8>)>>,
    }

    impl FsBackend for FakeTree {
        fn lookup(&self, parent: u64, name: &str) -> io::Result<NodeAttr> {
            assert_eq!(parent, ROOT_NODE);
            let files = self.files.lock().unwrap();
            let (node, data) = files.get(name).ok_or_else(|| err(libc::ENOENT))?;
            Ok(file(*node, data.len()))
        }
        fn getattr(&self, node: u64) -> io::Result<NodeAttr> {
            if node == ROOT_NODE {
                return Ok(NodeAttr {
                    node,
                    kind: NodeKind::Dir,
                    size: 0,
                    perm: 0o755,
                });
            }
            let files = self.files.lock().unwrap();
            let (_, (n, d)) = files
                .iter()
                .find(|(_, (n, _))| *n == node)
                .ok_or_else(|| err(libc::ENOENT))?;
            Ok(file(*n, d.len()))
        }
        fn read_dir(&self, _dir: u64) -> io::Result<Vec<DirItem>> {
            let files = self.files.lock().unwrap();
            Ok(files
                .iter()
                .map(|(name, (node, _))| DirItem {
                    name: name.clone(),
                    node: *node,
                    kind: NodeKind::File,
                })
                .collect())
        }
        fn read(&self, node: u64, offset: u64, size: u32) -> io::Result<Vec<u8>> {
            let files = self.files.lock().unwrap();
            let (_, d) = files.values().find(|(n, _)| *n == node).unwrap();
            // A misbehaving backend: returns everything from offset, whatever size says.
            let _ = size;
            Ok(d[offset as usize..].to_vec())
        }
        fn write(&self, node: u64, offset: u64, data: &[u8]) -> io::Result<usize> {
            let mut files = self.files.lock().unwrap();
            let (_, d) = files.values_mut().find(|(n, _)| *n == node).unwrap();
            let end = offset as usize + data.len();
            d.resize(d.len().max(end), 0);
            d[offset as usize..end].copy_from_slice(data);
            Ok(data.len())
        }
        fn create(&self, _parent: u64, name: &str, _perm: u32) -> io::Result<NodeAttr> {
            let mut files = self.files.lock().unwrap();
            let node = files.len() as u64 + 2;
            files.insert(name.to_string(), (node, Vec::new()));
            Ok(file(node, 0))
        }
    }

    fn file(node: u64, len: usize) -> NodeAttr {
        NodeAttr {
            node,
            kind: NodeKind::File,
            size: len as u64,
            perm: 0o644,
        }
    }

    fn ctx() -> Context {
        Context::default()
    }

    #[test]
    fn lookup_and_getattr_map_kind_and_permission_bits() {
        let tree = Arc::new(FakeTree::default());
        tree.files
            .lock()
            .unwrap()
            .insert("a".into(), (5, b"hello".to_vec()));
        let fs = CustomFs::new(tree);
        let e = fs.lookup(&ctx(), ROOT_NODE, c"a").unwrap();
        assert_eq!(e.inode, 5);
        assert_eq!(e.attr.st_mode, libc::S_IFREG | 0o644);
        assert_eq!(e.attr.st_size, 5);
        let (root, _) = fs.getattr(&ctx(), ROOT_NODE, None).unwrap();
        assert_eq!(root.st_mode, libc::S_IFDIR | 0o755);
        let missing = fs.lookup(&ctx(), ROOT_NODE, c"b").unwrap_err();
        assert_eq!(missing.raw_os_error(), Some(libc::ENOENT));
        let dotdot = fs.lookup(&ctx(), ROOT_NODE, c"..").unwrap_err();
        assert_eq!(dotdot.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn readdir_lists_dots_then_entries_and_resumes_at_offset() {
        let tree = Arc::new(FakeTree::default());
        for (i, n) in ["x", "y"].iter().enumerate() {
            tree.files
                .lock()
                .unwrap()
                .insert(n.to_string(), (10 + i as u64, Vec::new()));
        }
        let fs = CustomFs::new(tree);
        let list = |offset| {
            let mut seen = Vec::new();
            fs.readdir(&ctx(), ROOT_NODE, 0, 4096, offset, &mut |d| {
                seen.push((String::from_utf8(d.name.to_vec()).unwrap(), d.offset));
                Ok(1)
            })
            .unwrap();
            seen
        };
        let all = list(0);
        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [".", "..", "x", "y"]);
        assert_eq!(list(3), [("y".to_string(), 4)]);
    }

    #[test]
    fn mutations_default_to_erofs_and_bad_node_ids_to_eio() {
        struct ReadOnlyTree;
        impl FsBackend for ReadOnlyTree {
            fn lookup(&self, _: u64, _: &str) -> io::Result<NodeAttr> {
                Ok(file(u64::MAX, 0))
            }
            fn getattr(&self, node: u64) -> io::Result<NodeAttr> {
                Ok(NodeAttr {
                    node,
                    kind: NodeKind::Dir,
                    size: 0,
                    perm: 0o755,
                })
            }
            fn read_dir(&self, _: u64) -> io::Result<Vec<DirItem>> {
                Ok(Vec::new())
            }
            fn read(&self, _: u64, _: u64, _: u32) -> io::Result<Vec<u8>> {
                Ok(Vec::new())
            }
        }
        let fs = CustomFs::new(Arc::new(ReadOnlyTree));
        let e = fs.mkdir(&ctx(), ROOT_NODE, c"d", 0o755, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
        let e = fs.unlink(&ctx(), ROOT_NODE, c"d").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
        let e = fs.lookup(&ctx(), ROOT_NODE, c"huge").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
    }

    #[test]
    fn share_over_custom_reads_cut_to_size_and_writes_what_the_request_carries() {
        use std::io::{Read, Seek, SeekFrom, Write};
        let tree = Arc::new(FakeTree::default());
        tree.files
            .lock()
            .unwrap()
            .insert("f".into(), (7, b"0123456789".to_vec()));
        let root = super::super::ShareRoot::Custom(SharedBackend(tree.clone()));
        let fs = super::super::ShareFs::new(&root, Default::default(), "fs(test)").unwrap();
        fs.init(FsOptions::empty()).unwrap();
        let f = fs.lookup(&ctx(), ROOT_NODE, c"f").unwrap();

        let mut sink = vmm_sys_util::tempfile::TempFile::new().unwrap().into_file();
        let n = fs
            .read(&ctx(), f.inode, 0, &mut sink, 4, 2, None, 0)
            .unwrap();
        sink.seek(SeekFrom::Start(0)).unwrap();
        let mut got = Vec::new();
        sink.read_to_end(&mut got).unwrap();
        assert_eq!((n, got.as_slice()), (4, &b"2345"[..]));

        let mut source = vmm_sys_util::tempfile::TempFile::new().unwrap().into_file();
        source.write_all(b"AB").unwrap();
        source.seek(SeekFrom::Start(0)).unwrap();
        // The request claims 100 bytes but carries 2: only those are written.
        let n = fs
            .write(&ctx(), f.inode, 0, &mut source, 100, 9, None, false, 0, 0)
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(tree.files.lock().unwrap()["f"].1, b"012345678AB");
    }

    #[test]
    fn a_panicking_backend_fails_the_request_with_eio() {
        struct Panics;
        impl FsBackend for Panics {
            fn lookup(&self, _: u64, _: &str) -> io::Result<NodeAttr> {
                panic!("backend bug")
            }
            fn getattr(&self, _: u64) -> io::Result<NodeAttr> {
                panic!("backend bug")
            }
            fn read_dir(&self, _: u64) -> io::Result<Vec<DirItem>> {
                panic!("backend bug")
            }
            fn read(&self, _: u64, _: u64, _: u32) -> io::Result<Vec<u8>> {
                panic!("backend bug")
            }
        }
        let fs = CustomFs::new(Arc::new(Panics));
        for _ in 0..2 {
            let e = fs.lookup(&ctx(), ROOT_NODE, c"a").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EIO));
        }
        let e = fs.getattr(&ctx(), ROOT_NODE, None).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
    }

    #[test]
    fn create_applies_umask_and_returns_the_new_entry() {
        let tree = Arc::new(FakeTree::default());
        let fs = CustomFs::new(tree.clone());
        let args = CreateIn {
            flags: 0,
            mode: 0o666,
            umask: 0o022,
            fuse_flags: 0,
        };
        let (entry, handle, _, _) = fs.create(&ctx(), ROOT_NODE, c"new", args).unwrap();
        assert_eq!(handle, None);
        assert_eq!(entry.attr.st_size, 0);
        assert!(tree.files.lock().unwrap().contains_key("new"));
    }
}
