//! The FUSE filesystem one share serves: fuse-backend-rs's `PassthroughFs` plus krun policy.
//!
//! `PassthroughFs` already keeps the guest inside the shared directory: every inode is an
//! `O_PATH` fd, names are single components opened with `openat(dirfd, name, O_NOFOLLOW)`,
//! names containing `/` are refused, `..` at the root is mapped to `.`, and only regular files
//! and directories are ever opened for I/O (no devices, fifos or symlinks). Symlink targets are
//! stored and returned verbatim and resolved by the guest kernel, never by the host.
//!
//! On top of it [`ShareFs`] adds what upstream libkrun's fs server does for a krun root:
//! - virtual read-only files in the root directory ([`VirtualFile`]: the guest init
//!   `init.krun`, the VMM's `.krun_exec.json`), served from memory and never written to the
//!   host directory;
//! - the exit-code ioctl (`KRUN_EXIT_CODE_IOCTL`) that the guest init uses to hand the
//!   workload's status to the VMM;
//! - read-only shares, where every mutating request fails with `EROFS`.

use std::borrow::Cow;
use std::ffi::CStr;
use std::io;
use std::path::Path;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{
    stat64, statvfs64, Attr, CreateIn, FsOptions, InHeader, IoctlIn, Opcode, OpenOptions,
    SetattrValid, ROOT_ID,
};
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileLock, FileSystem, GetxattrReply, IoctlData, ListxattrReply,
    ZeroCopyReader, ZeroCopyWriter,
};
use fuse_backend_rs::api::VFS_MAX_INO;
use fuse_backend_rs::passthrough::{CachePolicy, Config, PassthroughFs};
use fuse_backend_rs::transport::{FsCacheReqHandler, Reader};
use vm_memory::bitmap::BitmapSlice;

use super::exit_code::ExitCode;

/// Name of the virtual guest init in the root directory of the root share.
pub const INIT_NAME: &[u8] = contract::INIT_FILE_NAME.as_bytes();

/// ioctl the guest init issues to report the workload's exit status (see the contract crate).
pub use contract::EXIT_CODE_IOCTL as KRUN_EXIT_CODE_IOCTL;

/// Node id of the first virtual file; the others follow in list order. `PassthroughFs` never
/// hands out ids above `VFS_MAX_INO` (it fails the lookup first), so these cannot collide
/// with a host file.
pub(crate) const FIRST_VIRTUAL_INODE: u64 = VFS_MAX_INO + 1;

/// How long the guest may cache a virtual file's entry and attributes: it never changes.
const VIRTUAL_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// A read-only file served from memory at the top level of a share. A host file of the same
/// name is hidden behind it, and the guest can neither change nor remove it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualFile {
    /// A single path component (no `/`).
    pub name: String,
    pub bytes: Cow<'static, [u8]>,
    /// Permission bits (`0o555` for an executable, `0o444` for data).
    pub mode: u32,
}

impl VirtualFile {
    /// The guest init, `/init.krun`, executable.
    pub fn init(bytes: &'static [u8]) -> Self {
        VirtualFile {
            name: String::from_utf8_lossy(INIT_NAME).into_owned(),
            bytes: Cow::Borrowed(bytes),
            mode: 0o555,
        }
    }
}

/// The krun policy a share is served with.
#[derive(Clone, Debug, Default)]
pub struct ShareOptions {
    /// Every mutating request fails with `EROFS`.
    pub read_only: bool,
    /// Virtual read-only files at the top level of the share.
    pub root_files: Vec<VirtualFile>,
    /// Where the exit-code ioctl records its value; `None` answers it with `ENOTTY`.
    pub exit_code: Option<ExitCode>,
}

/// The `PassthroughFs` settings every share uses, and why:
/// - `do_import`: we are not under fuse-backend-rs's `Vfs`, so the passthrough must open the
///   root itself at FUSE_INIT; it also turns on its name validation (no `/`, `.`, `..` in
///   names given to create/mkdir/link/rename/...).
/// - `inode_file_handles: false`: file handles need `open_by_handle_at`, i.e.
///   CAP_DAC_READ_SEARCH, which crun's containers do not grant; one `O_PATH` fd per inode is
///   used instead (the VMM should raise RLIMIT_NOFILE to its hard limit).
/// - `writeback: false`: writeback caching makes the server reopen write-only files
///   read-write and drop `O_APPEND`, which changes host-visible semantics.
/// - `killpriv_v2: false`: it toggles CAP_FSETID per request, which a process without that
///   capability cannot restore; the guest kernel then clears suid bits itself via SETATTR.
/// - `no_open`/`no_opendir: false`: both need `CachePolicy::Always` and would hide opens
///   from the server; `cache_policy: Auto` with the default 5 s timeouts keeps the guest's
///   page cache coherent enough with host-side changes.
/// - `xattr: true`: container images carry `security.capability` and `user.*` attributes;
///   the host kernel still refuses what the process may not set.
/// - `use_host_ino: false`: node ids are allocated sequentially, so they cannot reach
///   [`FIRST_VIRTUAL_INODE`].
/// - `seal_size`, `dax_file_size`: off; this device offers no DAX window.
fn passthrough_config(root_dir: String) -> Config {
    Config {
        root_dir,
        do_import: true,
        inode_file_handles: false,
        writeback: false,
        killpriv_v2: false,
        no_open: false,
        no_opendir: false,
        no_readdir: false,
        cache_policy: CachePolicy::Auto,
        xattr: true,
        use_host_ino: false,
        seal_size: false,
        dax_file_size: None,
        ..Config::default()
    }
}

/// FUSE_INIT options the share asks for on top of what `PassthroughFs::init` wants (it asks
/// only for readdirplus and leaves the rest to a server, which fuse-backend-rs's `Server`
/// does not add). Upstream libkrun's server offers these as well. Without them the guest
/// kernel falls back to 4 KiB writes (`max_write` stays at fuse-backend-rs's 4096 unless
/// BIG_WRITES or MAX_PAGES is on), 128 KiB reads, one read in flight per file and one
/// directory operation at a time per directory:
/// - `MAX_PAGES`, `BIG_WRITES`: `max_pages` 256 and `max_write` 1 MiB, so a 1 MiB `write()`
///   or readahead is one request instead of 256 (writes) or 8 (reads);
/// - `ASYNC_READ`: the guest may keep several reads (readahead) queued;
/// - `PARALLEL_DIROPS`: lookups and readdirs in one directory need not be serialized;
/// - `AUTO_INVAL_DATA`: the guest drops cached pages when it sees a changed mtime/size, so
///   host-side changes show up without the cache policy having to disable the page cache;
/// - `ASYNC_DIO`: direct I/O may be split into concurrent requests.
///
/// Not asked for: WRITEBACK_CACHE (see [`passthrough_config`]), HANDLE_KILLPRIV(_V2) (same),
/// ATOMIC_O_TRUNC (the guest sends a separate SETATTR instead, which the read-only and
/// virtual-file checks already cover), SUBMOUNTS, HAS_IOCTL_DIR.
const SERVER_OPTIONS: FsOptions = FsOptions::MAX_PAGES
    .union(FsOptions::BIG_WRITES)
    .union(FsOptions::ASYNC_READ)
    .union(FsOptions::PARALLEL_DIROPS)
    .union(FsOptions::AUTO_INVAL_DATA)
    .union(FsOptions::ASYNC_DIO);

fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// The `FileSystem` a virtio-fs device serves: a passthrough of one host directory with the
/// krun additions described in the module docs.
pub struct ShareFs {
    inner: PassthroughFs<()>,
    opts: ShareOptions,
}

impl ShareFs {
    /// Serves `root`, which must be an absolute path to a directory without symlinks in it
    /// (the device canonicalizes it). The directory itself is opened at FUSE_INIT.
    pub fn new(root: &Path, opts: ShareOptions) -> io::Result<Self> {
        let root_dir = root
            .to_str()
            .filter(|s| !s.contains('\0'))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("shared directory {} is not valid UTF-8", root.display()),
                )
            })?
            .to_owned();
        let inner = PassthroughFs::new(passthrough_config(root_dir))?;
        Ok(Self { inner, opts })
    }

    /// Looks for the exit-code ioctl in a FUSE request before it reaches `Server`.
    ///
    /// fuse-backend-rs's `Server` drops `fuse_ioctl_in.arg`, and the guest init passes the
    /// status by value in exactly that field, so it has to be read here. The request still
    /// goes to `Server` afterwards, which answers it through [`FileSystem::ioctl`].
    pub fn intercept_exit_code<S: BitmapSlice>(&self, r: &Reader<'_, S>) {
        let mut r = r.clone();
        let Ok(header) = r.read_obj::<InHeader>() else {
            return;
        };
        if header.opcode != Opcode::Ioctl as u32 {
            return;
        }
        let Ok(ioctl) = r.read_obj::<IoctlIn>() else {
            return;
        };
        if ioctl.cmd == KRUN_EXIT_CODE_IOCTL {
            self.record_exit_code(ioctl.arg);
        }
    }

    /// Records the exit-code ioctl's argument: the guest's `int` widened to `unsigned long`,
    /// so the low 32 bits are the status.
    pub fn record_exit_code(&self, arg: u64) {
        if let Some(exit_code) = &self.opts.exit_code {
            #[allow(clippy::cast_possible_truncation)] // the guest sent an int: keep its bits
            let code = arg as u32 as i32;
            log::debug!("guest reported exit code {code}");
            exit_code.set(code);
        }
    }

    /// The virtual file with node id `inode`, if it is one.
    fn virtual_file(&self, inode: u64) -> Option<&VirtualFile> {
        let index = inode.checked_sub(FIRST_VIRTUAL_INODE)?;
        self.opts.root_files.get(usize::try_from(index).ok()?)
    }

    fn is_virtual(&self, inode: u64) -> bool {
        self.virtual_file(inode).is_some()
    }

    /// The node id of the virtual file `name` in `parent`, if there is one.
    fn virtual_named(&self, parent: u64, name: &CStr) -> Option<u64> {
        if parent != ROOT_ID {
            return None;
        }
        self.virtual_named_bytes(name.to_bytes())
    }

    /// The node id of the virtual file called `name` at the top level (readdir's names).
    fn virtual_named_bytes(&self, name: &[u8]) -> Option<u64> {
        let index = self
            .opts
            .root_files
            .iter()
            .position(|f| f.name.as_bytes() == name)?;
        Some(FIRST_VIRTUAL_INODE + index as u64)
    }

    fn names_virtual(&self, parent: u64, name: &CStr) -> bool {
        self.virtual_named(parent, name).is_some()
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.opts.read_only {
            Err(err(libc::EROFS))
        } else {
            Ok(())
        }
    }

    /// Refuses to create `name` in `parent` when it would hide behind a virtual file.
    fn check_new_name(&self, parent: u64, name: &CStr) -> io::Result<()> {
        self.check_writable()?;
        if self.names_virtual(parent, name) {
            return Err(err(libc::EEXIST));
        }
        Ok(())
    }

    fn virtual_bytes(&self, inode: u64) -> &[u8] {
        self.virtual_file(inode).map_or(&[], |f| &f.bytes)
    }

    fn virtual_attr(&self, inode: u64) -> stat64 {
        let (size, mode) = self
            .virtual_file(inode)
            .map_or((0, 0), |f| (f.bytes.len() as u64, f.mode & 0o7777));
        stat64::from(Attr {
            ino: inode,
            size,
            blocks: size.div_ceil(512),
            mode: libc::S_IFREG | mode,
            nlink: 1,
            blksize: 4096,
            ..Attr::default()
        })
    }

    fn virtual_entry(&self, inode: u64) -> Entry {
        Entry {
            inode,
            generation: 0,
            attr: self.virtual_attr(inode),
            attr_flags: 0,
            attr_timeout: VIRTUAL_TIMEOUT,
            entry_timeout: VIRTUAL_TIMEOUT,
        }
    }

    fn read_virtual(
        &self,
        inode: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
    ) -> io::Result<usize> {
        let bytes = self.virtual_bytes(inode);
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let end = start.saturating_add(size as usize).min(bytes.len());
        w.write_all(&bytes[start..end])?;
        Ok(end - start)
    }
}

/// Flags of an open that may modify the file.
fn open_writes(flags: u32) -> bool {
    let flags = flags as i32;
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

impl FileSystem for ShareFs {
    type Inode = u64;
    type Handle = u64;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        let want = self.inner.init(capable)? | SERVER_OPTIONS;
        log::debug!(
            "fuse init: guest offers {capable:?}, we enable {:?}",
            capable & want
        );
        Ok(want)
    }

    fn destroy(&self) {
        self.inner.destroy()
    }

    fn lookup(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        if let Some(inode) = self.virtual_named(parent, name) {
            return Ok(self.virtual_entry(inode));
        }
        self.inner.lookup(ctx, parent, name)
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
            return Ok((self.virtual_attr(inode), VIRTUAL_TIMEOUT));
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
        self.check_writable()?;
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
        self.inner.mkdir(ctx, parent, name, mode, umask)
    }

    fn unlink(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.check_writable()?;
        if self.names_virtual(parent, name) {
            return Err(err(libc::EPERM));
        }
        self.inner.unlink(ctx, parent, name)
    }

    fn rmdir(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.check_writable()?;
        if self.names_virtual(parent, name) {
            return Err(err(libc::ENOTDIR));
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
        if self.names_virtual(olddir, oldname) || self.names_virtual(newdir, newname) {
            return Err(err(libc::EPERM));
        }
        self.inner
            .rename(ctx, olddir, oldname, newdir, newname, flags)
    }

    fn link(&self, ctx: &Context, inode: u64, newparent: u64, newname: &CStr) -> io::Result<Entry> {
        self.check_new_name(newparent, newname)?;
        if self.is_virtual(inode) {
            return Err(err(libc::EPERM));
        }
        self.inner.link(ctx, inode, newparent, newname)
    }

    fn open(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        if open_writes(flags) {
            self.check_writable()?;
        }
        if self.is_virtual(inode) {
            if open_writes(flags) {
                return Err(err(libc::EACCES));
            }
            return Ok((None, OpenOptions::KEEP_CACHE, None));
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
        if self.is_virtual(inode) {
            return self.read_virtual(inode, w, size, offset);
        }
        self.inner
            .read(ctx, inode, handle, w, size, offset, lock_owner, flags)
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
        self.check_writable()?;
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
        self.check_writable()?;
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
        self.check_writable()?;
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
        self.check_writable()?;
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
        if self.is_virtual(inode) {
            return Err(err(libc::ENOTDIR));
        }
        self.inner.opendir(ctx, inode, flags)
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
        if self.opts.root_files.is_empty() || inode != ROOT_ID {
            return self
                .inner
                .readdir(ctx, inode, handle, size, offset, add_entry);
        }
        // A host file named like a virtual one is hidden behind it: list it as such.
        self.inner
            .readdir(ctx, inode, handle, size, offset, &mut |mut entry| {
                if let Some(ino) = self.virtual_named_bytes(entry.name) {
                    entry.ino = ino;
                    entry.type_ = u32::from(libc::DT_REG);
                }
                add_entry(entry)
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
        if self.opts.root_files.is_empty() || inode != ROOT_ID {
            return self
                .inner
                .readdirplus(ctx, inode, handle, size, offset, add_entry);
        }
        // readdirplus fills the guest's dentry cache, so a hidden host file must not reach it
        // as itself. The passthrough took a lookup reference on the host file; when the entry
        // is accepted that reference is ours to drop (when it is not, the passthrough drops it).
        self.inner.readdirplus(
            ctx,
            inode,
            handle,
            size,
            offset,
            &mut |mut dir_entry, entry| {
                let Some(ino) = self.virtual_named_bytes(dir_entry.name) else {
                    return add_entry(dir_entry, entry);
                };
                dir_entry.ino = ino;
                dir_entry.type_ = u32::from(libc::DT_REG);
                let added = add_entry(dir_entry, self.virtual_entry(ino))?;
                if added != 0 {
                    self.inner.forget(ctx, entry.inode, 1);
                }
                Ok(added)
            },
        )
    }

    fn fsyncdir(&self, ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
        self.inner.fsyncdir(ctx, inode, datasync, handle)
    }

    fn releasedir(&self, ctx: &Context, inode: u64, flags: u32, handle: u64) -> io::Result<()> {
        self.inner.releasedir(ctx, inode, flags, handle)
    }

    /// No DAX window is offered, so a mapping request is a guest bug.
    fn setupmapping(
        &self,
        _ctx: &Context,
        _inode: u64,
        _handle: u64,
        _foffset: u64,
        _len: u64,
        _flags: u64,
        _moffset: u64,
        _vu_req: &mut dyn FsCacheReqHandler,
    ) -> io::Result<()> {
        Err(err(libc::ENOSYS))
    }

    fn removemapping(
        &self,
        _ctx: &Context,
        _inode: u64,
        _requests: Vec<fuse_backend_rs::abi::virtio_fs::RemovemappingOne>,
        _vu_req: &mut dyn FsCacheReqHandler,
    ) -> io::Result<()> {
        Err(err(libc::ENOSYS))
    }

    fn access(&self, ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
        let wants_write = mask & libc::W_OK as u32 != 0;
        if wants_write {
            self.check_writable()?;
        }
        if self.is_virtual(inode) {
            return if wants_write {
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
        if self.is_virtual(inode) {
            // The file is one data extent with no holes.
            let len = self.virtual_bytes(inode).len() as u64;
            return match whence as i32 {
                libc::SEEK_DATA if offset < len => Ok(offset),
                libc::SEEK_HOLE if offset < len => Ok(len),
                libc::SEEK_DATA | libc::SEEK_HOLE => Err(err(libc::ENXIO)),
                _ => Err(err(libc::EINVAL)),
            };
        }
        self.inner.lseek(ctx, inode, handle, offset, whence)
    }

    fn getlk(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        owner: u64,
        lock: FileLock,
        flags: u32,
    ) -> io::Result<FileLock> {
        self.inner.getlk(ctx, inode, handle, owner, lock, flags)
    }

    fn setlk(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        owner: u64,
        lock: FileLock,
        flags: u32,
    ) -> io::Result<()> {
        self.inner.setlk(ctx, inode, handle, owner, lock, flags)
    }

    fn setlkw(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        owner: u64,
        lock: FileLock,
        flags: u32,
    ) -> io::Result<()> {
        self.inner.setlkw(ctx, inode, handle, owner, lock, flags)
    }

    /// Answers the exit-code ioctl (its value was taken by [`ShareFs::intercept_exit_code`]);
    /// every other ioctl goes to the passthrough.
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
        if cmd == KRUN_EXIT_CODE_IOCTL && self.opts.exit_code.is_some() {
            return Ok(IoctlData::default());
        }
        self.inner
            .ioctl(ctx, inode, handle, flags, cmd, data, out_size)
    }

    fn bmap(&self, ctx: &Context, inode: u64, block: u64, blocksize: u32) -> io::Result<u64> {
        self.inner.bmap(ctx, inode, block, blocksize)
    }

    fn poll(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        khandle: u64,
        flags: u32,
        events: u32,
    ) -> io::Result<u32> {
        self.inner.poll(ctx, inode, handle, khandle, flags, events)
    }

    fn notify_reply(&self) -> io::Result<()> {
        self.inner.notify_reply()
    }

    fn id_remap(&self, ctx: &mut Context) -> io::Result<()> {
        self.inner.id_remap(ctx)
    }
}

#[cfg(test)]
mod tests;
