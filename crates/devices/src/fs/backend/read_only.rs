//! The read-only decorator: a share added read-only (`krun_add_virtiofs3(.., true)`) fails
//! every request that would change it with `EROFS`, before the layers below see it.

use super::forward::{forward, prelude::*};
use super::overlay::open_writes;

fn erofs() -> io::Error {
    io::Error::from_raw_os_error(libc::EROFS)
}

/// `inner`, refusing every mutation when `enabled`.
pub struct ReadOnly<F> {
    inner: F,
    enabled: bool,
}

impl<F> ReadOnly<F> {
    pub fn new(inner: F, enabled: bool) -> Self {
        Self { inner, enabled }
    }

    fn check(&self) -> io::Result<()> {
        if self.enabled {
            Err(erofs())
        } else {
            Ok(())
        }
    }
}

impl<F: FileSystem<Inode = u64, Handle = u64>> FileSystem for ReadOnly<F> {
    type Inode = u64;
    type Handle = u64;

    fn open(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        if open_writes(flags) {
            self.check()?;
        }
        self.inner.open(ctx, inode, flags, fuse_flags)
    }

    /// A writable DAX mapping would let the guest's stores reach the file: EROFS.
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
        if flags & fuse_backend_rs::abi::virtio_fs::SetupmappingFlags::WRITE.bits() != 0 {
            self.check()?;
        }
        self.inner
            .setupmapping(ctx, inode, handle, foffset, len, flags, moffset, vu_req)
    }

    fn access(&self, ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
        if mask & libc::W_OK as u32 != 0 {
            self.check()?;
        }
        self.inner.access(ctx, inode, mask)
    }

    // Every mutation: EROFS when read-only, else the layer below.
    forward!(inner, guard check; setattr, symlink, mknod, mkdir, unlink, rmdir, rename, link,
        create, write, fallocate, setxattr, removexattr);
    forward!(inner; init, destroy, lookup, forget, batch_forget, getattr, readlink, read,
        flush, fsync, release, statfs, getxattr, listxattr, opendir, readdir, readdirplus,
        fsyncdir, releasedir, removemapping, lseek, getlk, setlk, setlkw, ioctl,
        bmap, poll, notify_reply, id_remap);
}
