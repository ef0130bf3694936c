//! The overlay layer: serves the share's virtual entries ([`Tree`]) in front of the inner
//! filesystem (the host directory, or NullFs).
//!
//! Virtual entries are visible to lookup, readdir(plus), getattr, open and read at any
//! offset; a host entry of the same name is hidden behind one and never touched. What would
//! change a virtual entry fails: opening it for writing with `EACCES` (as upstream's overlay),
//! changing its attributes, links or names with `EPERM`, creating a name it holds with
//! `EEXIST`, creating anything in a virtual directory with `EROFS`. The host directories on
//! the way to a virtual entry (the spine) cannot be renamed away (`EPERM`) nor removed
//! (`ENOTEMPTY`: they hold the entry).
//!
//! Directory offsets: a virtual directory lists `.` and `..` at offsets 1 and 2, then its
//! children at 3, 4, ...;
//! a host directory with virtual children lists the host's entries (their own offsets, all
//! below 2^63 as the kernel's `d_off` is a signed 64-bit value) and then the virtual children
//! the host lacks at offsets from [`VIRTUAL_DIR_OFFSET`].

use fuse_backend_rs::abi::fuse_abi::{Attr, ROOT_ID};

use super::entries::{Dir, Tree, VirtualEntry, VirtualKind};
use super::forward::{forward, prelude::*};

/// How long the guest may cache a persistent virtual entry: it never changes.
const VIRTUAL_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Offsets of the virtual entries appended to a host directory's listing start here.
pub const VIRTUAL_DIR_OFFSET: u64 = 1 << 63;

fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// Flags of an open that may modify the file.
pub(super) fn open_writes(flags: u32) -> bool {
    let flags = flags as i32;
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

/// Virtual entries in front of `inner`.
pub struct Overlay<F> {
    inner: F,
    tree: Tree,
}

impl<F: FileSystem<Inode = u64, Handle = u64>> Overlay<F> {
    pub fn new(inner: F, tree: Tree) -> Self {
        Self { inner, tree }
    }

    fn is_virtual(&self, inode: u64) -> bool {
        self.tree.node(inode).is_some()
    }

    fn entry_of(&self, inode: u64) -> Option<&VirtualEntry> {
        self.tree.node(inode).map(|n| &n.entry)
    }

    fn attr(&self, inode: u64) -> stat64 {
        let Some(entry) = self.entry_of(inode) else {
            return stat64::from(Attr::default());
        };
        let perm = entry.mode & 0o7777;
        let (size, mode, nlink) = match &entry.kind {
            VirtualKind::File(bytes) => (bytes.len() as u64, libc::S_IFREG | perm, 1),
            VirtualKind::Dir => (0, libc::S_IFDIR | perm, 2),
        };
        stat64::from(Attr {
            ino: inode,
            size,
            blocks: size.div_ceil(512),
            mode,
            nlink,
            blksize: 4096,
            ..Attr::default()
        })
    }

    fn timeout(&self, inode: u64) -> Duration {
        match self.entry_of(inode) {
            Some(e) if e.one_shot => Duration::ZERO,
            _ => VIRTUAL_TIMEOUT,
        }
    }

    fn entry(&self, inode: u64) -> Entry {
        let timeout = self.timeout(inode);
        Entry {
            inode,
            generation: 0,
            attr: self.attr(inode),
            attr_flags: 0,
            attr_timeout: timeout,
            entry_timeout: timeout,
        }
    }

    /// The virtual entry `name` in `parent`, if there is one (looking it up consumes a
    /// one-shot entry only through `lookup`).
    fn virtual_child(&self, parent: u64, name: &[u8]) -> Option<u64> {
        let dir = self.tree.dir_of(parent)?;
        self.tree.child(dir, name).map(Tree::inode_of)
    }

    /// Refuses to create `name` in `parent` where a virtual entry is or in a virtual dir.
    fn check_new_name(&self, parent: u64, name: &CStr) -> io::Result<()> {
        if self.is_virtual(parent) {
            return Err(err(libc::EROFS));
        }
        if self.virtual_child(parent, name.to_bytes()).is_some() {
            return Err(err(libc::EEXIST));
        }
        Ok(())
    }

    /// Whether `name` in `parent` is a host directory on the way to a virtual entry.
    fn is_spine(&self, parent: u64, name: &CStr) -> bool {
        matches!(self.tree.dir_of(parent), Some(Dir::Host(d))
            if self.tree.spine_child(d, name.to_bytes()).is_some())
    }

    /// Remembers the node id of a host directory on the spine when the guest reaches it.
    fn note_host_entry(&self, parent: u64, name: &[u8], entry: &Entry) {
        if entry.attr.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return;
        }
        if let Some(Dir::Host(d)) = self.tree.dir_of(parent) {
            if let Some(spine) = self.tree.spine_child(d, name) {
                self.tree.record_spine(spine, entry.inode);
            }
        }
    }

    /// Whether the host directory `parent` has an entry `name` (a shadowed one).
    fn host_has(&self, ctx: &Context, parent: u64, name: &[u8]) -> bool {
        let Ok(cname) = std::ffi::CString::new(name) else {
            return false;
        };
        match self.inner.lookup(ctx, parent, &cname) {
            Ok(entry) => {
                self.inner.forget(ctx, entry.inode, 1);
                true
            }
            Err(_) => false,
        }
    }

    fn dir_entry_type(&self, index: usize) -> u32 {
        match self.tree.node_at(index).entry.kind {
            VirtualKind::File(_) => u32::from(libc::DT_REG),
            VirtualKind::Dir => u32::from(libc::DT_DIR),
        }
    }

    /// Lists `children` (virtual entry indexes) from position `from`, each at offset
    /// `base + position + 1`; with `plus` each comes with its entry, as a lookup would give
    /// it. The host directory `host_dir` (when given) is asked first whether it has the name:
    /// such a child was listed already, as the host entry it hides.
    fn list(
        &self,
        ctx: &Context,
        children: &[usize],
        (base, from): (u64, u64),
        host_dir: Option<u64>,
        plus: bool,
        add: &mut dyn FnMut(DirEntry, Option<Entry>) -> io::Result<usize>,
    ) -> io::Result<()> {
        for (position, &i) in children.iter().enumerate() {
            let position = position as u64;
            let name = self.tree.node_at(i).name.as_slice();
            if position < from || host_dir.is_some_and(|dir| self.host_has(ctx, dir, name)) {
                continue;
            }
            let inode = Tree::inode_of(i);
            let dir_entry = DirEntry {
                ino: inode,
                offset: base + position + 1,
                type_: self.dir_entry_type(i),
                name,
            };
            let entry = plus.then(|| {
                self.tree.looked_up(i);
                self.entry(inode)
            });
            if add(dir_entry, entry)? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// readdir and readdirplus: virtual directories from the tree, host directories with
    /// virtual children merged, everything else from the inner filesystem.
    #[allow(clippy::too_many_arguments)]
    fn read_dir(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        size: u32,
        offset: u64,
        plus: bool,
        add: &mut dyn FnMut(DirEntry, Option<Entry>) -> io::Result<usize>,
    ) -> io::Result<()> {
        let dir = match self.tree.dir_of(inode) {
            Some(Dir::Virtual(index)) => {
                let parent = self.tree.inode_of_dir(self.tree.node_at(index).parent);
                for (dot_offset, name, ino) in [(1, &b"."[..], inode), (2, &b".."[..], parent)] {
                    if offset >= dot_offset {
                        continue;
                    }
                    let dir_entry = DirEntry {
                        ino,
                        offset: dot_offset,
                        type_: u32::from(libc::DT_DIR),
                        name,
                    };
                    // No entry: the kernel takes no reference on `.` and `..`.
                    if add(dir_entry, None)? == 0 {
                        return Ok(());
                    }
                }
                let children: Vec<usize> = self.tree.children(Dir::Virtual(index)).collect();
                let from = offset.saturating_sub(2);
                return self.list(ctx, &children, (2, from), None, plus, add);
            }
            Some(Dir::Host(dir)) => dir,
            None if self.is_virtual(inode) => return Err(err(libc::ENOTDIR)),
            None => return self.inner_read_dir(ctx, inode, handle, size, offset, plus, None, add),
        };
        let children: Vec<usize> = self.tree.children(Dir::Host(dir)).collect();
        if offset < VIRTUAL_DIR_OFFSET {
            let mut full = false;
            self.inner_read_dir(
                ctx,
                inode,
                handle,
                size,
                offset,
                plus,
                Some(dir),
                &mut |d, e| {
                    let added = add(d, e)?;
                    full |= added == 0;
                    Ok(added)
                },
            )?;
            if full {
                return Ok(());
            }
        }
        let from = offset.saturating_sub(VIRTUAL_DIR_OFFSET);
        self.list(
            ctx,
            &children,
            (VIRTUAL_DIR_OFFSET, from),
            Some(inode),
            plus,
            add,
        )
    }

    /// The inner filesystem's listing of `inode`; in the spine directory `spine` a host entry
    /// hidden by a virtual one is listed as the virtual one, and spine subdirectories the
    /// guest reaches this way are remembered.
    #[allow(clippy::too_many_arguments)]
    fn inner_read_dir(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        size: u32,
        offset: u64,
        plus: bool,
        spine: Option<usize>,
        add: &mut dyn FnMut(DirEntry, Option<Entry>) -> io::Result<usize>,
    ) -> io::Result<()> {
        // The virtual entry hiding this host entry, if any, which is listed in its place.
        let shadow = |dir_entry: &mut DirEntry| -> Option<usize> {
            let child = self.tree.child(Dir::Host(spine?), dir_entry.name)?;
            dir_entry.ino = Tree::inode_of(child);
            dir_entry.type_ = self.dir_entry_type(child);
            Some(child)
        };
        if !plus {
            return self
                .inner
                .readdir(ctx, inode, handle, size, offset, &mut |mut d| {
                    shadow(&mut d);
                    add(d, None)
                });
        }
        self.inner
            .readdirplus(ctx, inode, handle, size, offset, &mut |mut d, entry| {
                let Some(child) = shadow(&mut d) else {
                    self.note_host_entry(inode, d.name, &entry);
                    return add(d, Some(entry));
                };
                // readdirplus fills the guest's dentry cache, so the hidden host entry must
                // not reach it as itself. The passthrough took a lookup reference on it: once
                // the entry is accepted that reference is ours to drop (when it is not, the
                // passthrough drops it).
                self.tree.looked_up(child);
                let added = add(d, Some(self.entry(Tree::inode_of(child))))?;
                if added != 0 {
                    self.inner.forget(ctx, entry.inode, 1);
                }
                Ok(added)
            })
    }
}

impl<F: FileSystem<Inode = u64, Handle = u64>> FileSystem for Overlay<F> {
    type Inode = u64;
    type Handle = u64;

    fn lookup(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        let dir = self.tree.dir_of(parent);
        if let Some(dir) = dir {
            if let Some(child) = self.tree.child(dir, name.to_bytes()) {
                self.tree.looked_up(child);
                return Ok(self.entry(Tree::inode_of(child)));
            }
        }
        match dir {
            Some(Dir::Virtual(_)) => Err(err(libc::ENOENT)),
            None if self.is_virtual(parent) => Err(err(libc::ENOTDIR)),
            _ => {
                let entry = self.inner.lookup(ctx, parent, name)?;
                self.note_host_entry(parent, name.to_bytes(), &entry);
                Ok(entry)
            }
        }
    }

    fn forget(&self, ctx: &Context, inode: u64, count: u64) {
        if !self.is_virtual(inode) {
            self.inner.forget(ctx, inode, count)
        }
    }

    fn batch_forget(&self, ctx: &Context, requests: Vec<(u64, u64)>) {
        let requests = requests
            .into_iter()
            .filter(|(inode, _)| !self.is_virtual(*inode))
            .collect();
        self.inner.batch_forget(ctx, requests)
    }

    fn getattr(
        &self,
        ctx: &Context,
        inode: u64,
        handle: Option<u64>,
    ) -> io::Result<(stat64, Duration)> {
        if self.is_virtual(inode) {
            return Ok((self.attr(inode), self.timeout(inode)));
        }
        self.inner.getattr(ctx, inode, handle)
    }

    fn setattr(
        &self,
        ctx: &Context,
        inode: u64,
        attr: stat64,
        handle: Option<u64>,
        valid: SetattrValid,
    ) -> io::Result<(stat64, Duration)> {
        if self.is_virtual(inode) {
            return Err(err(libc::EPERM));
        }
        self.inner.setattr(ctx, inode, attr, handle, valid)
    }

    fn readlink(&self, ctx: &Context, inode: u64) -> io::Result<Vec<u8>> {
        if self.is_virtual(inode) {
            return Err(err(libc::EINVAL));
        }
        self.inner.readlink(ctx, inode)
    }

    fn symlink(
        &self,
        ctx: &Context,
        linkname: &CStr,
        parent: u64,
        name: &CStr,
    ) -> io::Result<Entry> {
        self.check_new_name(parent, name)?;
        self.inner.symlink(ctx, linkname, parent, name)
    }

    fn mknod(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.check_new_name(parent, name)?;
        self.inner.mknod(ctx, parent, name, mode, rdev, umask)
    }

    fn mkdir(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.check_new_name(parent, name)?;
        let entry = self.inner.mkdir(ctx, parent, name, mode, umask)?;
        self.note_host_entry(parent, name.to_bytes(), &entry);
        Ok(entry)
    }

    fn unlink(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        if self.virtual_child(parent, name.to_bytes()).is_some() {
            return Err(err(libc::EPERM));
        }
        if self.is_virtual(parent) {
            return Err(err(libc::ENOENT));
        }
        self.inner.unlink(ctx, parent, name)
    }

    fn rmdir(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        if let Some(child) = self.virtual_child(parent, name.to_bytes()) {
            let is_dir = matches!(self.entry_of(child), Some(e) if e.kind == VirtualKind::Dir);
            return Err(err(if is_dir { libc::EPERM } else { libc::ENOTDIR }));
        }
        if self.is_virtual(parent) {
            return Err(err(libc::ENOENT));
        }
        if self.is_spine(parent, name) {
            return Err(err(libc::ENOTEMPTY));
        }
        self.inner.rmdir(ctx, parent, name)
    }

    fn rename(
        &self,
        ctx: &Context,
        olddir: u64,
        oldname: &CStr,
        newdir: u64,
        newname: &CStr,
        flags: u32,
    ) -> io::Result<()> {
        if self.is_virtual(olddir) || self.is_virtual(newdir) {
            return Err(err(libc::EROFS));
        }
        let touches_virtual = |dir: u64, name: &CStr| {
            self.virtual_child(dir, name.to_bytes()).is_some() || self.is_spine(dir, name)
        };
        if touches_virtual(olddir, oldname) || touches_virtual(newdir, newname) {
            return Err(err(libc::EPERM));
        }
        self.inner
            .rename(ctx, olddir, oldname, newdir, newname, flags)
    }

    fn link(&self, ctx: &Context, inode: u64, newparent: u64, newname: &CStr) -> io::Result<Entry> {
        if self.is_virtual(inode) {
            return Err(err(libc::EPERM));
        }
        self.check_new_name(newparent, newname)?;
        self.inner.link(ctx, inode, newparent, newname)
    }

    fn open(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        match self.entry_of(inode).map(|e| &e.kind) {
            Some(VirtualKind::Dir) => Err(err(libc::EISDIR)),
            Some(VirtualKind::File(_)) if open_writes(flags) => Err(err(libc::EACCES)),
            Some(VirtualKind::File(_)) => Ok((None, OpenOptions::KEEP_CACHE, None)),
            None => self.inner.open(ctx, inode, flags, fuse_flags),
        }
    }

    fn create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        args: CreateIn,
    ) -> io::Result<(Entry, Option<u64>, OpenOptions, Option<u32>)> {
        self.check_new_name(parent, name)?;
        self.inner.create(ctx, parent, name, args)
    }

    fn read(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        flags: u32,
    ) -> io::Result<usize> {
        let bytes = match self.entry_of(inode).map(|e| &e.kind) {
            Some(VirtualKind::File(bytes)) => bytes,
            Some(VirtualKind::Dir) => return Err(err(libc::EISDIR)),
            None => {
                return self
                    .inner
                    .read(ctx, inode, handle, w, size, offset, lock_owner, flags)
            }
        };
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let end = start.saturating_add(size as usize).min(bytes.len());
        w.write_all(&bytes[start..end])?;
        Ok(end - start)
    }

    fn write(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        delayed_write: bool,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<usize> {
        if self.is_virtual(inode) {
            return Err(err(libc::EBADF));
        }
        self.inner.write(
            ctx,
            inode,
            handle,
            r,
            size,
            offset,
            lock_owner,
            delayed_write,
            flags,
            fuse_flags,
        )
    }

    fn flush(&self, ctx: &Context, inode: u64, handle: u64, lock_owner: u64) -> io::Result<()> {
        if self.is_virtual(inode) {
            return Ok(());
        }
        self.inner.flush(ctx, inode, handle, lock_owner)
    }

    fn fsync(&self, ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
        if self.is_virtual(inode) {
            return Ok(());
        }
        self.inner.fsync(ctx, inode, datasync, handle)
    }

    fn fallocate(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> io::Result<()> {
        if self.is_virtual(inode) {
            return Err(err(libc::EBADF));
        }
        self.inner
            .fallocate(ctx, inode, handle, mode, offset, length)
    }

    fn release(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        handle: u64,
        flush: bool,
        flock_release: bool,
        lock_owner: Option<u64>,
    ) -> io::Result<()> {
        if self.is_virtual(inode) {
            return Ok(());
        }
        self.inner
            .release(ctx, inode, flags, handle, flush, flock_release, lock_owner)
    }

    fn statfs(&self, ctx: &Context, inode: u64) -> io::Result<statvfs64> {
        let inode = if self.is_virtual(inode) {
            ROOT_ID
        } else {
            inode
        };
        self.inner.statfs(ctx, inode)
    }

    fn setxattr(
        &self,
        ctx: &Context,
        inode: u64,
        name: &CStr,
        value: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        if self.is_virtual(inode) {
            return Err(err(libc::EPERM));
        }
        self.inner.setxattr(ctx, inode, name, value, flags)
    }

    fn getxattr(
        &self,
        ctx: &Context,
        inode: u64,
        name: &CStr,
        size: u32,
    ) -> io::Result<GetxattrReply> {
        if self.is_virtual(inode) {
            return Err(err(libc::ENODATA));
        }
        self.inner.getxattr(ctx, inode, name, size)
    }

    fn listxattr(&self, ctx: &Context, inode: u64, size: u32) -> io::Result<ListxattrReply> {
        if self.is_virtual(inode) {
            return Ok(if size == 0 {
                ListxattrReply::Count(0)
            } else {
                ListxattrReply::Names(Vec::new())
            });
        }
        self.inner.listxattr(ctx, inode, size)
    }

    fn removexattr(&self, ctx: &Context, inode: u64, name: &CStr) -> io::Result<()> {
        if self.is_virtual(inode) {
            return Err(err(libc::EPERM));
        }
        self.inner.removexattr(ctx, inode, name)
    }

    fn opendir(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions)> {
        match self.entry_of(inode).map(|e| &e.kind) {
            Some(VirtualKind::File(_)) => Err(err(libc::ENOTDIR)),
            Some(VirtualKind::Dir) => Ok((None, OpenOptions::KEEP_CACHE)),
            None => self.inner.opendir(ctx, inode, flags),
        }
    }

    fn readdir(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        if self.tree.is_empty() {
            return self
                .inner
                .readdir(ctx, inode, handle, size, offset, add_entry);
        }
        self.read_dir(ctx, inode, handle, size, offset, false, &mut |d, _| {
            add_entry(d)
        })
    }

    fn readdirplus(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        if self.tree.is_empty() {
            return self
                .inner
                .readdirplus(ctx, inode, handle, size, offset, add_entry);
        }
        self.read_dir(ctx, inode, handle, size, offset, true, &mut |d, e| {
            add_entry(d, e.unwrap_or_default())
        })
    }

    fn fsyncdir(&self, ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
        if self.is_virtual(inode) {
            return Ok(());
        }
        self.inner.fsyncdir(ctx, inode, datasync, handle)
    }

    fn releasedir(&self, ctx: &Context, inode: u64, flags: u32, handle: u64) -> io::Result<()> {
        if self.is_virtual(inode) {
            return Ok(());
        }
        self.inner.releasedir(ctx, inode, flags, handle)
    }

    fn access(&self, ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
        if self.is_virtual(inode) {
            return if mask & libc::W_OK as u32 != 0 {
                Err(err(libc::EACCES))
            } else {
                Ok(())
            };
        }
        self.inner.access(ctx, inode, mask)
    }

    fn lseek(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        let len = match self.entry_of(inode).map(|e| &e.kind) {
            Some(VirtualKind::File(bytes)) => bytes.len() as u64,
            Some(VirtualKind::Dir) => return Err(err(libc::EINVAL)),
            None => return self.inner.lseek(ctx, inode, handle, offset, whence),
        };
        // The file is one data extent with no holes.
        match whence as i32 {
            libc::SEEK_DATA if offset < len => Ok(offset),
            libc::SEEK_HOLE if offset < len => Ok(len),
            libc::SEEK_DATA | libc::SEEK_HOLE => Err(err(libc::ENXIO)),
            _ => Err(err(libc::EINVAL)),
        }
    }

    fn ioctl(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        flags: u32,
        cmd: u32,
        data: IoctlData,
        out_size: u32,
    ) -> io::Result<IoctlData<'_>> {
        if self.is_virtual(inode) {
            return Err(err(libc::ENOTTY));
        }
        self.inner
            .ioctl(ctx, inode, handle, flags, cmd, data, out_size)
    }

    forward!(inner; init, destroy, setupmapping, removemapping, getlk, setlk, setlkw, bmap,
        poll, notify_reply, id_remap);
}

#[cfg(test)]
mod tests;
