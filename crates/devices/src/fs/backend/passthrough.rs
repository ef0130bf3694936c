//! The host directory of a share: fuse-backend-rs's `PassthroughFs` with our settings.
//!
//! `PassthroughFs` already keeps the guest inside the shared directory: every inode is an
//! `O_PATH` fd, names are single components opened with `openat(dirfd, name, O_NOFOLLOW)`,
//! names containing `/` are refused, `..` at the root is mapped to `.`, and only regular files
//! and directories are ever opened for I/O (no devices, fifos or symlinks). Symlink targets are
//! stored and returned verbatim and resolved by the guest kernel, never by the host.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use fuse_backend_rs::passthrough::{CachePolicy, Config, PassthroughFs};

use super::fd_budget::FdBudget;
use super::forward::{forward, prelude::*};

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
///   the virtual entries' ids (`entries::FIRST_VIRTUAL_INODE`).
/// - `seal_size`, `dax_file_size`: off; a DAX window maps any file, whatever its size.
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
/// - `ASYNC_DIO`: direct I/O may be split into concurrent requests;
/// - `CACHE_SYMLINKS`: the guest keeps symlink targets in its page cache instead of sending a
///   READLINK every time a path crosses one (busybox roots are symlinks to one binary). A
///   symlink cannot change in place on the host, only be replaced by a new inode, which the
///   guest sees at its next lookup.
///
/// Not asked for: WRITEBACK_CACHE (see [`passthrough_config`]), HANDLE_KILLPRIV(_V2) (same),
/// ATOMIC_O_TRUNC (the guest sends a separate SETATTR instead, which the read-only and
/// virtual-entry checks already cover), SUBMOUNTS, HAS_IOCTL_DIR.
pub const SERVER_OPTIONS: FsOptions = FsOptions::MAX_PAGES
    .union(FsOptions::BIG_WRITES)
    .union(FsOptions::ASYNC_READ)
    .union(FsOptions::PARALLEL_DIROPS)
    .union(FsOptions::AUTO_INVAL_DATA)
    .union(FsOptions::ASYNC_DIO)
    .union(FsOptions::CACHE_SYMLINKS);

/// What a file looked like when the guest last opened it: a later open that finds the
/// same stamp may keep the guest's page cache.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(st: &libc::stat64) -> Self {
        Self {
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

/// Files whose stamp is remembered, at most; past it the table starts over (an open of a
/// forgotten file then just drops the guest's cache once, as without the table).
const MAX_STAMPS: usize = 16384;

/// A host directory served through `PassthroughFs`.
pub struct HostFs {
    inner: PassthroughFs<()>,
    /// Regular files by inode, as they were at the guest's last open of them.
    stamps: Mutex<HashMap<u64, Stamp>>,
    /// Requests that may create an fd fail with EMFILE past it.
    fds: FdBudget,
}

impl HostFs {
    /// Serves `root`, which must be an absolute path to a directory without symlinks in it
    /// (the device canonicalizes it). The directory itself is opened at FUSE_INIT.
    pub fn new(root: &Path) -> io::Result<Self> {
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
        Ok(Self {
            inner,
            stamps: Mutex::new(HashMap::new()),
            fds: FdBudget::new()?,
        })
    }

    /// Whether the guest may keep its cached pages of `inode`, opened as `handle`: the file
    /// is unchanged (size, mtime, ctime) since the guest's last open of it. Without
    /// FOPEN_KEEP_CACHE the guest kernel drops a file's page cache on every open, so each
    /// `exec` of the same binary read it again from the host. A host-side change moves the
    /// stamp and the cache goes, which is what `CachePolicy::Auto` gave before; changes
    /// while the file stays open are left to AUTO_INVAL_DATA, as before.
    fn unchanged_since_last_open(&self, ctx: &Context, inode: u64, handle: Option<u64>) -> bool {
        let Ok((st, _)) = self.inner.getattr(ctx, inode, handle) else {
            return false;
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return false;
        }
        let stamp = Stamp::of(&st);
        let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        if stamps.len() >= MAX_STAMPS && !stamps.contains_key(&inode) {
            stamps.clear();
        }
        stamps.insert(inode, stamp) == Some(stamp)
    }

    /// EMFILE once the share's fds reach their budget (the guard of the methods that open).
    fn check_fds(&self) -> io::Result<()> {
        self.fds.check()
    }
}

impl FileSystem for HostFs {
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

    /// DAX: maps a range of a regular file into the window. The passthrough reopens the
    /// inode (read-write for a writable mapping) and hands that fd to the window, which
    /// checks the range; anything but a regular file is EINVAL (a FIFO would block the
    /// reopen). Without a window fuse-backend-rs answers EINVAL before this is called.
    fn setupmapping(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        foffset: u64,
        len: u64,
        flags: u64,
        moffset: u64,
        vu_req: &mut dyn FsCacheReqHandler,
    ) -> io::Result<()> {
        self.fds.check()?;
        let (st, _) = self.inner.getattr(ctx, inode, None)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.inner
            .setupmapping(ctx, inode, handle, foffset, len, flags, moffset, vu_req)
    }

    fn removemapping(
        &self,
        ctx: &Context,
        inode: u64,
        requests: Vec<RemovemappingOne>,
        vu_req: &mut dyn FsCacheReqHandler,
    ) -> io::Result<()> {
        self.inner.removemapping(ctx, inode, requests, vu_req)
    }

    fn open(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        self.fds.check()?;
        let (handle, mut opts, passthrough) = self.inner.open(ctx, inode, flags, fuse_flags)?;
        let writing = flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32
            || flags & libc::O_TRUNC as u32 != 0;
        if !writing && self.unchanged_since_last_open(ctx, inode, handle) {
            opts |= OpenOptions::KEEP_CACHE;
        } else if writing {
            // The guest's own writes move the stamp: forget it rather than compare later.
            let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
            stamps.remove(&inode);
        }
        Ok((handle, opts, passthrough))
    }

    /// Each entry is a lookup (an fd): past the budget the listing stops there, as if the
    /// guest's buffer were full, and the passthrough forgets the entry's inode again.
    fn readdirplus(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.fds.check()?;
        self.inner
            .readdirplus(ctx, inode, handle, size, offset, &mut |dir_entry, entry| {
                if self.fds.check().is_err() {
                    return Ok(0);
                }
                add_entry(dir_entry, entry)
            })
    }

    // Each of these may leave the passthrough holding one more fd (an inode's O_PATH fd, an
    // open file or directory): checked against the fd budget first.
    forward!(inner, guard check_fds; lookup, symlink, mknod, mkdir, link, create, opendir);
    forward!(inner; destroy, forget, batch_forget, getattr, setattr, readlink, unlink, rmdir,
        rename, read, write, flush, fsync, fallocate, release, statfs, setxattr, getxattr,
        listxattr, removexattr, readdir, fsyncdir, releasedir, access, lseek,
        getlk, setlk, setlkw, ioctl, bmap, poll, notify_reply, id_remap);
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use fuse_backend_rs::abi::fuse_abi::ROOT_ID;
    use vmm_sys_util::tempdir::TempDir;

    use super::*;
    use crate::fs::backend::tests::{ctx, name};

    fn open_keeps_cache(fs: &HostFs, inode: u64, flags: i32) -> bool {
        let (handle, opts, _) = fs.open(&ctx(), inode, flags as u32, 0).unwrap();
        fs.release(&ctx(), inode, 0, handle.unwrap(), false, false, None)
            .unwrap();
        opts.contains(OpenOptions::KEEP_CACHE)
    }

    #[test]
    fn an_unchanged_file_keeps_the_guest_cache_and_a_changed_one_drops_it() {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).unwrap();
        let dir = TempDir::new().unwrap();
        let path = dir.as_path().join("bin");
        std::fs::write(&path, b"first").unwrap();
        let fs = HostFs::new(dir.as_path()).unwrap();
        fs.init(FsOptions::empty()).unwrap();
        let inode = fs.lookup(&ctx(), ROOT_ID, &name("bin")).unwrap().inode;

        assert!(!open_keeps_cache(&fs, inode, libc::O_RDONLY), "first open");
        assert!(open_keeps_cache(&fs, inode, libc::O_RDONLY), "unchanged");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b" and more")
            .unwrap();
        assert!(
            !open_keeps_cache(&fs, inode, libc::O_RDONLY),
            "changed on the host"
        );
        assert!(
            open_keeps_cache(&fs, inode, libc::O_RDONLY),
            "unchanged again"
        );
        assert!(
            !open_keeps_cache(&fs, inode, libc::O_RDWR),
            "opened for writing"
        );
        assert!(
            !open_keeps_cache(&fs, inode, libc::O_RDONLY),
            "after a writer"
        );
    }
}
