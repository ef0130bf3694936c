//! The overlay root (`krun_set_overlayfs_root`, microsandbox's extension): the union of host
//! layer directories, given lowest first; the last one is the top layer, where every change
//! lands. Lower layers are never modified: a lower file is copied up to the top layer before
//! it is written or its attributes change, and deleting a lower entry leaves a whiteout.
//!
//! The union itself is fuse-backend-rs's `OverlayFs`. Its layers speak the kernel overlayfs
//! format (whiteouts are 0/0 character devices, opaque directories carry an xattr); the
//! [`OciLayer`] here gives it the OCI image-layer format instead, which is what
//! microsandbox's layers hold and what an unprivileged VMM can create: a whiteout of `NAME`
//! is an empty regular file `.wh.NAME` beside it, and a directory holding `.wh..wh..opq`
//! hides the same directory of every layer below. The `.wh.` files themselves are never
//! visible to the guest, nor can the guest create names starting with `.wh.` (`EPERM`).
//!
//! The union unwraps in places (its copy-up creates a temporary file with `unwrap`): the fs
//! worker runs every request under `catch_unwind`, so such a panic fails one request.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use fuse_backend_rs::abi::fuse_abi::ROOT_ID;
use fuse_backend_rs::api::filesystem::Layer;
use fuse_backend_rs::overlayfs::config::Config as UnionConfig;
use fuse_backend_rs::overlayfs::{BoxedLayer, OverlayFs};

use super::forward::{forward, prelude::*};
use super::passthrough::{HostFs, SERVER_OPTIONS};

/// Prefix of an OCI whiteout file.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// An OCI opaque-directory marker.
const OPAQUE_MARKER: &CStr = c".wh..wh..opq";
/// As microsandbox's fork.
pub const MAX_LAYERS: usize = 128;

fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

fn is_reserved(name: &[u8]) -> bool {
    name.starts_with(WHITEOUT_PREFIX)
}

fn check_name(name: &CStr) -> io::Result<()> {
    if is_reserved(name.to_bytes()) {
        return Err(err(libc::EPERM));
    }
    Ok(())
}

fn whiteout_name(name: &CStr) -> io::Result<CString> {
    let mut bytes = WHITEOUT_PREFIX.to_vec();
    bytes.extend_from_slice(name.to_bytes());
    CString::new(bytes).map_err(|_| err(libc::EINVAL))
}

/// One layer directory in OCI layer format, as `OverlayFs` wants to see a layer.
pub struct OciLayer {
    inner: HostFs,
    /// Only the top layer may change; the union never asks a lower one to, and this makes
    /// sure of it.
    writable: bool,
    /// Node ids of `.wh.NAME` files handed out for `NAME` (the union asks whether a node it
    /// looked up is a whiteout).
    whiteouts: Mutex<HashSet<u64>>,
}

impl OciLayer {
    pub fn new(dir: &std::path::Path, writable: bool) -> io::Result<Self> {
        Ok(Self {
            inner: HostFs::new(dir)?,
            writable,
            whiteouts: Mutex::new(HashSet::new()),
        })
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(err(libc::EROFS))
        }
    }

    fn whiteout_set(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.whiteouts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `parent` holds an entry `name`, without keeping a reference to it.
    fn has(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<bool> {
        match self.inner.lookup(ctx, parent, name) {
            Ok(e) => {
                self.inner.forget(ctx, e.inode, 1);
                Ok(true)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates the empty marker file `name` in `parent` and returns its entry.
    fn create_marker(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        self.check_writable()?;
        let args = CreateIn {
            flags: (libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL) as u32,
            mode: libc::S_IFREG | 0o644,
            umask: 0,
            fuse_flags: 0,
        };
        let (entry, handle, _, _) = self.inner.create(ctx, parent, name, args)?;
        if let Some(handle) = handle {
            let _ = self
                .inner
                .release(ctx, entry.inode, 0, handle, false, false, None);
        }
        Ok(entry)
    }
}

impl FileSystem for OciLayer {
    type Inode = u64;
    type Handle = u64;

    /// `NAME` is the real entry if the layer has one, else its whiteout `.wh.NAME`; raw
    /// whiteout names are not found.
    fn lookup(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        if is_reserved(name.to_bytes()) {
            return Err(err(libc::ENOENT));
        }
        match self.inner.lookup(ctx, parent, name) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let entry = self.inner.lookup(ctx, parent, &whiteout_name(name)?)?;
                self.whiteout_set().insert(entry.inode);
                Ok(entry)
            }
            other => other,
        }
    }

    /// Lists `.wh.NAME` as `NAME` (the union then finds the whiteout and hides the name)
    /// and leaves the opaque marker out.
    fn readdir(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.inner
            .readdir(ctx, inode, handle, size, offset, &mut |d| {
                if d.name == OPAQUE_MARKER.to_bytes() {
                    // Not listed, but consumed: a 0 would tell the layer the buffer is full.
                    return Ok(1);
                }
                match d.name.strip_prefix(WHITEOUT_PREFIX) {
                    Some(name) if !name.is_empty() => add_entry(DirEntry { name, ..d }),
                    _ => add_entry(d),
                }
            })
    }

    fn symlink(&self, ctx: &Context, link: &CStr, parent: u64, name: &CStr) -> io::Result<Entry> {
        self.check_writable()?;
        check_name(name)?;
        self.inner.symlink(ctx, link, parent, name)
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
        self.check_writable()?;
        check_name(name)?;
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
        self.check_writable()?;
        check_name(name)?;
        self.inner.mkdir(ctx, parent, name, mode, umask)
    }

    fn unlink(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.check_writable()?;
        check_name(name)?;
        self.inner.unlink(ctx, parent, name)
    }

    fn rmdir(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.check_writable()?;
        check_name(name)?;
        // The union empties a directory of its whiteouts before removing it; the opaque
        // marker is ours to remove.
        if let Ok(dir) = self.inner.lookup(ctx, parent, name) {
            let _ = self.inner.unlink(ctx, dir.inode, OPAQUE_MARKER);
            self.inner.forget(ctx, dir.inode, 1);
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
        self.check_writable()?;
        check_name(oldname)?;
        check_name(newname)?;
        self.inner
            .rename(ctx, olddir, oldname, newdir, newname, flags)
    }

    fn link(&self, ctx: &Context, inode: u64, newparent: u64, newname: &CStr) -> io::Result<Entry> {
        self.check_writable()?;
        check_name(newname)?;
        self.inner.link(ctx, inode, newparent, newname)
    }

    fn open(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        if super::overlay::open_writes(flags) {
            self.check_writable()?;
        }
        self.inner.open(ctx, inode, flags, fuse_flags)
    }

    fn create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        args: CreateIn,
    ) -> io::Result<(Entry, Option<u64>, OpenOptions, Option<u32>)> {
        self.check_writable()?;
        check_name(name)?;
        self.inner.create(ctx, parent, name, args)
    }

    forward!(inner, guard check_writable; setattr, write, fallocate, setxattr, removexattr);
    forward!(inner; init, destroy, forget, batch_forget, getattr, readlink, read, flush, fsync,
        release, statfs, getxattr, listxattr, opendir, fsyncdir, releasedir, access, lseek);
}

impl Layer for OciLayer {
    fn root_inode(&self) -> u64 {
        ROOT_ID
    }

    fn create_whiteout(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        if self.has(ctx, parent, name)? {
            return Err(err(libc::EEXIST));
        }
        let marker = whiteout_name(name)?;
        let entry = match self.inner.lookup(ctx, parent, &marker) {
            Ok(entry) => entry,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                self.create_marker(ctx, parent, &marker)?
            }
            Err(e) => return Err(e),
        };
        self.whiteout_set().insert(entry.inode);
        Ok(entry)
    }

    fn delete_whiteout(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        let marker = whiteout_name(name)?;
        if !self.has(ctx, parent, &marker)? {
            return Ok(());
        }
        self.check_writable()?;
        self.inner.unlink(ctx, parent, &marker)
    }

    fn is_whiteout(&self, _ctx: &Context, inode: u64) -> io::Result<bool> {
        Ok(self.whiteout_set().contains(&inode))
    }

    fn set_opaque(&self, ctx: &Context, inode: u64) -> io::Result<()> {
        if self.has(ctx, inode, OPAQUE_MARKER)? {
            return Ok(());
        }
        let entry = self.create_marker(ctx, inode, OPAQUE_MARKER)?;
        self.inner.forget(ctx, entry.inode, 1);
        Ok(())
    }

    fn is_opaque(&self, ctx: &Context, inode: u64) -> io::Result<bool> {
        self.has(ctx, inode, OPAQUE_MARKER)
    }
}

/// The union of the layers, as the share's backing filesystem.
pub struct UnionFs {
    /// Top layer first.
    layers: Vec<Arc<BoxedLayer>>,
    union: OverlayFs,
    /// The path (from the root, by component) of every directory node the guest reached,
    /// for the whiteouts the union forgets (see [`UnionFs::unlink`]). Directory paths
    /// never change: the union refuses to rename directories.
    dir_paths: Mutex<HashMap<u64, Vec<CString>>>,
}

impl UnionFs {
    /// `layers` lowest first; the last is the top (writable) layer. Each must be an
    /// absolute path to a directory without symlinks (the device canonicalizes them).
    pub fn new(layers: &[PathBuf]) -> io::Result<Self> {
        let (top, lowers) = layers.split_last().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "an overlay root needs a layer")
        })?;
        if layers.len() > MAX_LAYERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} layers, at most {MAX_LAYERS}", layers.len()),
            ));
        }
        let top: Arc<BoxedLayer> = Arc::new(Box::new(OciLayer::new(top, true)?));
        // The union wants its lower layers from the top down.
        let mut all = vec![top.clone()];
        let mut lower_layers = Vec::with_capacity(lowers.len());
        for dir in lowers.iter().rev() {
            let layer: Arc<BoxedLayer> = Arc::new(Box::new(OciLayer::new(dir, false)?));
            lower_layers.push(layer.clone());
            all.push(layer);
        }
        let config = UnionConfig {
            do_import: true,
            writeback: false,
            no_open: false,
            no_opendir: false,
            killpriv_v2: false,
            no_readdir: false,
            perfile_dax: false,
            attr_timeout: Duration::from_secs(5),
            entry_timeout: Duration::from_secs(5),
            ..UnionConfig::default()
        };
        let union = OverlayFs::new(Some(top), lower_layers, config)?;
        let dir_paths = Mutex::new(HashMap::from([(ROOT_ID, Vec::new())]));
        Ok(Self {
            layers: all,
            union,
            dir_paths,
        })
    }
}

fn is_dir(st: &stat64) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

impl UnionFs {
    fn paths(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<CString>>> {
        self.dir_paths
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers where a directory the guest reached is.
    fn note(&self, parent: u64, name: &CStr, entry: &Entry) {
        if !is_dir(&entry.attr) || entry.inode == parent {
            return;
        }
        let mut paths = self.paths();
        if let Some(mut path) = paths.get(&parent).cloned() {
            match name.to_bytes() {
                b"." => return,
                b".." => {
                    path.pop();
                }
                _ => path.push(name.to_owned()),
            }
            paths.insert(entry.inode, path);
        }
    }

    /// The node of `path` in `layer`, with one lookup reference the caller forgets.
    fn walk(layer: &BoxedLayer, ctx: &Context, path: &[CString]) -> io::Result<u64> {
        let mut inode = ROOT_ID;
        for component in path {
            let entry = layer.lookup(ctx, inode, component);
            if inode != ROOT_ID {
                layer.forget(ctx, inode, 1);
            }
            let entry = entry?;
            if !is_dir(&entry.attr) {
                layer.forget(ctx, entry.inode, 1);
                return Err(err(libc::ENOTDIR));
            }
            inode = entry.inode;
        }
        Ok(inode)
    }

    fn release(layer: &BoxedLayer, ctx: &Context, inode: u64) {
        if inode != ROOT_ID {
            layer.forget(ctx, inode, 1);
        }
    }

    /// What a lower layer holds at `dir`/`name` (not counting whiteouts): `Some(is_dir)`.
    fn in_lower(&self, ctx: &Context, dir: &[CString], name: &CStr) -> Option<bool> {
        for layer in self.layers.iter().skip(1) {
            let Ok(parent) = Self::walk(layer, ctx, dir) else {
                continue;
            };
            let found = layer.lookup(ctx, parent, name).ok().map(|e| {
                let whiteout = layer.is_whiteout(ctx, e.inode).unwrap_or(false);
                layer.forget(ctx, e.inode, 1);
                (!whiteout).then_some(is_dir(&e.attr))
            });
            Self::release(layer, ctx, parent);
            if let Some(found) = found.flatten() {
                return Some(found);
            }
        }
        None
    }

    /// After a remove: fuse-backend-rs's union forgets the lower layers of a node it copied
    /// up, and then leaves no whiteout when the copy is removed, so the lower entry would
    /// be back at the next boot. This leaves the whiteout wherever a lower layer has the
    /// name.
    fn whiteout_removed(&self, ctx: &Context, parent: u64, name: &CStr) {
        let Some(dir) = self.paths().get(&parent).cloned() else {
            return;
        };
        if self.in_lower(ctx, &dir, name).is_none() {
            return;
        }
        let top = &self.layers[0];
        let result = Self::walk(top, ctx, &dir).and_then(|parent| {
            let made = top.create_whiteout(ctx, parent, name);
            if let Ok(entry) = &made {
                top.forget(ctx, entry.inode, 1);
            }
            Self::release(top, ctx, parent);
            made.map(drop)
        });
        if let Err(e) = result {
            log::warn!("overlay root: no whiteout for {name:?} in {dir:?}: {e}");
        }
    }

    /// After a create: a whiteout of the same name left by [`Self::whiteout_removed`]
    /// goes, and a new directory over a lower one becomes opaque (it starts empty).
    fn unwhiteout_created(&self, ctx: &Context, parent: u64, name: &CStr, entry: &Entry) {
        let Some(dir) = self.paths().get(&parent).cloned() else {
            return;
        };
        let top = &self.layers[0];
        let Ok(top_parent) = Self::walk(top, ctx, &dir) else {
            return;
        };
        if let Err(e) = top.delete_whiteout(ctx, top_parent, name) {
            log::debug!("overlay root: whiteout of {name:?} stays: {e}");
        }
        if is_dir(&entry.attr) && self.in_lower(ctx, &dir, name) == Some(true) {
            if let Ok(new_dir) = top.lookup(ctx, top_parent, name) {
                if let Err(e) = top.set_opaque(ctx, new_dir.inode) {
                    log::warn!("overlay root: new directory {name:?} not made opaque: {e}");
                }
                top.forget(ctx, new_dir.inode, 1);
            }
        }
        Self::release(top, ctx, top_parent);
    }

    fn rename_non_dir(
        &self,
        ctx: &Context,
        src: &Entry,
        (olddir, oldname): (u64, &CStr),
        (newdir, newname): (u64, &CStr),
        flags: u32,
    ) -> io::Result<()> {
        if is_dir(&src.attr) {
            return Err(err(libc::EXDEV));
        }
        match self.union.lookup(ctx, newdir, newname) {
            Ok(dst) => {
                self.union.forget(ctx, dst.inode, 1);
                if dst.inode == src.inode {
                    return Ok(());
                }
                if flags & libc::RENAME_NOREPLACE != 0 {
                    return Err(err(libc::EEXIST));
                }
                if is_dir(&dst.attr) {
                    return Err(err(libc::EISDIR));
                }
                self.union.unlink(ctx, newdir, newname)?;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        let linked = self.link(ctx, src.inode, newdir, newname)?;
        self.union.forget(ctx, linked.inode, 1);
        self.unlink(ctx, olddir, oldname)
    }
}

impl FileSystem for UnionFs {
    type Inode = u64;
    type Handle = u64;

    /// Opens every layer's directory, then loads the union's root.
    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        for layer in &self.layers {
            layer.init(capable)?;
        }
        let want = self.union.init(capable)? | SERVER_OPTIONS;
        Ok(want & capable)
    }

    /// fuse-backend-rs's union answers every rename with `EXDEV`. A file, symlink or other
    /// non-directory is renamed here as a link under the new name and an unlink of the old
    /// one (both through the union: the file is copied up, the old name of a lower file gets
    /// its whiteout), after removing what the new name held. Not atomic as a host rename is,
    /// but the guest sees the same result. A directory still gets `EXDEV`, as kernel
    /// overlayfs gives for a lower directory without `redirect_dir`: `mv` then copies.
    fn rename(
        &self,
        ctx: &Context,
        olddir: u64,
        oldname: &CStr,
        newdir: u64,
        newname: &CStr,
        flags: u32,
    ) -> io::Result<()> {
        if flags & libc::RENAME_EXCHANGE != 0 {
            return Err(err(libc::EINVAL));
        }
        let src = self.union.lookup(ctx, olddir, oldname)?;
        let result = self.rename_non_dir(ctx, &src, (olddir, oldname), (newdir, newname), flags);
        self.union.forget(ctx, src.inode, 1);
        result
    }

    fn lookup(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        let entry = self.union.lookup(ctx, parent, name)?;
        self.note(parent, name, &entry);
        Ok(entry)
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
        self.union
            .readdirplus(ctx, inode, handle, size, offset, &mut |d, e| {
                if let Ok(name) = CString::new(d.name) {
                    self.note(inode, &name, &e);
                }
                add_entry(d, e)
            })
    }

    fn mkdir(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        let entry = self.union.mkdir(ctx, parent, name, mode, umask)?;
        self.note(parent, name, &entry);
        self.unwhiteout_created(ctx, parent, name, &entry);
        Ok(entry)
    }

    fn create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        args: CreateIn,
    ) -> io::Result<(Entry, Option<u64>, OpenOptions, Option<u32>)> {
        let created = self.union.create(ctx, parent, name, args)?;
        self.unwhiteout_created(ctx, parent, name, &created.0);
        Ok(created)
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
        let entry = self.union.mknod(ctx, parent, name, mode, rdev, umask)?;
        self.unwhiteout_created(ctx, parent, name, &entry);
        Ok(entry)
    }

    fn symlink(&self, ctx: &Context, link: &CStr, parent: u64, name: &CStr) -> io::Result<Entry> {
        let entry = self.union.symlink(ctx, link, parent, name)?;
        self.unwhiteout_created(ctx, parent, name, &entry);
        Ok(entry)
    }

    fn link(&self, ctx: &Context, inode: u64, newparent: u64, newname: &CStr) -> io::Result<Entry> {
        let entry = self.union.link(ctx, inode, newparent, newname)?;
        self.unwhiteout_created(ctx, newparent, newname, &entry);
        Ok(entry)
    }

    /// See [`UnionFs::whiteout_removed`].
    fn unlink(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.union.unlink(ctx, parent, name)?;
        self.whiteout_removed(ctx, parent, name);
        Ok(())
    }

    fn rmdir(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.union.rmdir(ctx, parent, name)?;
        self.whiteout_removed(ctx, parent, name);
        Ok(())
    }

    // What the union lacks (ioctl, locks, DAX mappings) it answers with ENOSYS; the
    // exit-code ioctl is taken from the raw request above all layers.
    forward!(union; destroy, forget, batch_forget, getattr, setattr, readlink, open, read,
        write, flush, fsync, fallocate, release, statfs, setxattr, getxattr, listxattr,
        removexattr, opendir, readdir, fsyncdir, releasedir, access, lseek);
}

#[cfg(test)]
mod tests;
