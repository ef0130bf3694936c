//! NullFs: a share with no host directory. Its root is an empty directory; everything the
//! guest sees in it comes from the overlay's virtual entries (upstream's NullFs, the initial
//! root of `krun_set_root_disk_remount`, which holds only `/init.krun`).
//!
//! Only the root exists, so requests for any other node id fail with `ENOENT` (the overlay
//! answers those of virtual entries before they get here), and nothing can be created in the
//! root (`EROFS`). statfs is fuse-backend-rs's default: no blocks, no files.

use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{Attr, ROOT_ID};

use super::forward::prelude::*;
use super::passthrough::SERVER_OPTIONS;

/// How long the guest may cache the root's attributes: they never change.
const ROOT_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// The empty root of a share without a host directory.
#[derive(Debug, Default)]
pub struct NullFs;

impl NullFs {
    /// The root's `.` and `..` (both the root) at offsets 1 and 2, from after `offset`.
    fn dots(offset: u64, add: &mut dyn FnMut(DirEntry) -> io::Result<usize>) -> io::Result<()> {
        for (dot_offset, name) in [(1, &b"."[..]), (2, &b".."[..])] {
            if offset >= dot_offset {
                continue;
            }
            let entry = DirEntry {
                ino: ROOT_ID,
                offset: dot_offset,
                type_: u32::from(libc::DT_DIR),
                name,
            };
            if add(entry)? == 0 {
                break;
            }
        }
        Ok(())
    }

    fn root_only(inode: u64) -> io::Result<()> {
        if inode == ROOT_ID {
            Ok(())
        } else {
            Err(err(libc::ENOENT))
        }
    }
}

impl FileSystem for NullFs {
    type Inode = u64;
    type Handle = u64;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        // The same request sizes as a host share; readdirplus saves the lookups of `ls -l`.
        Ok((SERVER_OPTIONS | FsOptions::DO_READDIRPLUS) & capable)
    }

    fn lookup(&self, _ctx: &Context, parent: u64, _name: &CStr) -> io::Result<Entry> {
        Self::root_only(parent)?;
        Err(err(libc::ENOENT))
    }

    fn getattr(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: Option<u64>,
    ) -> io::Result<(stat64, Duration)> {
        Self::root_only(inode)?;
        let attr = Attr {
            ino: ROOT_ID,
            mode: libc::S_IFDIR | 0o755,
            nlink: 2,
            blksize: 4096,
            ..Attr::default()
        };
        Ok((stat64::from(attr), ROOT_TIMEOUT))
    }

    fn setattr(
        &self,
        _ctx: &Context,
        inode: u64,
        _attr: stat64,
        _handle: Option<u64>,
        _valid: SetattrValid,
    ) -> io::Result<(stat64, Duration)> {
        Self::root_only(inode)?;
        Err(err(libc::EROFS))
    }

    fn symlink(&self, _: &Context, _: &CStr, parent: u64, _: &CStr) -> io::Result<Entry> {
        Self::root_only(parent)?;
        Err(err(libc::EROFS))
    }

    fn mknod(
        &self,
        _: &Context,
        parent: u64,
        _: &CStr,
        _: u32,
        _: u32,
        _: u32,
    ) -> io::Result<Entry> {
        Self::root_only(parent)?;
        Err(err(libc::EROFS))
    }

    fn mkdir(&self, _: &Context, parent: u64, _: &CStr, _: u32, _: u32) -> io::Result<Entry> {
        Self::root_only(parent)?;
        Err(err(libc::EROFS))
    }

    fn unlink(&self, _: &Context, parent: u64, _: &CStr) -> io::Result<()> {
        Self::root_only(parent)?;
        Err(err(libc::ENOENT))
    }

    fn rmdir(&self, _: &Context, parent: u64, _: &CStr) -> io::Result<()> {
        Self::root_only(parent)?;
        Err(err(libc::ENOENT))
    }

    fn rename(
        &self,
        _: &Context,
        olddir: u64,
        _: &CStr,
        _: u64,
        _: &CStr,
        _: u32,
    ) -> io::Result<()> {
        Self::root_only(olddir)?;
        Err(err(libc::ENOENT))
    }

    fn create(
        &self,
        _ctx: &Context,
        parent: u64,
        _name: &CStr,
        _args: CreateIn,
    ) -> io::Result<(Entry, Option<u64>, OpenOptions, Option<u32>)> {
        Self::root_only(parent)?;
        Err(err(libc::EROFS))
    }

    fn open(
        &self,
        _ctx: &Context,
        inode: u64,
        _flags: u32,
        _fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        Self::root_only(inode)?;
        Err(err(libc::EISDIR))
    }

    fn opendir(
        &self,
        _ctx: &Context,
        inode: u64,
        _flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions)> {
        Self::root_only(inode)?;
        Ok((None, OpenOptions::KEEP_CACHE))
    }

    fn readdir(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        _size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        Self::root_only(inode)?;
        Self::dots(offset, &mut |d| add_entry(d))
    }

    /// `.` and `..` only, with no entries: the kernel takes no reference on them.
    fn readdirplus(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        _size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        Self::root_only(inode)?;
        Self::dots(offset, &mut |d| add_entry(d, Entry::default()))
    }

    fn releasedir(&self, _: &Context, inode: u64, _: u32, _: u64) -> io::Result<()> {
        Self::root_only(inode)
    }

    fn fsyncdir(&self, _: &Context, inode: u64, _: bool, _: u64) -> io::Result<()> {
        Self::root_only(inode)
    }

    fn access(&self, _ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
        Self::root_only(inode)?;
        if mask & libc::W_OK as u32 != 0 {
            return Err(err(libc::EROFS));
        }
        Ok(())
    }

    fn getxattr(&self, _: &Context, inode: u64, _: &CStr, _: u32) -> io::Result<GetxattrReply> {
        Self::root_only(inode)?;
        Err(err(libc::ENODATA))
    }

    fn listxattr(&self, _: &Context, inode: u64, size: u32) -> io::Result<ListxattrReply> {
        Self::root_only(inode)?;
        Ok(if size == 0 {
            ListxattrReply::Count(0)
        } else {
            ListxattrReply::Names(Vec::new())
        })
    }

    fn setxattr(&self, _: &Context, inode: u64, _: &CStr, _: &[u8], _: u32) -> io::Result<()> {
        Self::root_only(inode)?;
        Err(err(libc::EROFS))
    }

    fn removexattr(&self, _: &Context, inode: u64, _: &CStr) -> io::Result<()> {
        Self::root_only(inode)?;
        Err(err(libc::EROFS))
    }

    fn ioctl(
        &self,
        _ctx: &Context,
        _inode: u64,
        _handle: u64,
        _flags: u32,
        _cmd: u32,
        _data: IoctlData,
        _out_size: u32,
    ) -> io::Result<IoctlData<'_>> {
        Err(err(libc::ENOTTY))
    }
}
