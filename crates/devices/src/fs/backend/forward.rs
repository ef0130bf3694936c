//! Forwarding of `FileSystem` methods to an inner filesystem, for the layers of a share.
//!
//! Every layer (the overlay, the read-only decorator, the exit-code ioctl) overrides a few
//! methods of fuse-backend-rs's `FileSystem` and hands the rest to the layer below. The trait's
//! default methods answer `ENOSYS`, so a method a layer forgets to forward would silently
//! break that operation; `forward!` writes each forwarding method from its name, with the
//! signature spelled once here.
//!
//! ```ignore
//! impl<F: FileSystem<Inode = u64, Handle = u64>> FileSystem for Layer<F> {
//!     type Inode = u64;
//!     type Handle = u64;
//!     fn lookup(..) { .. }             // the layer's own behaviour
//!     forward!(inner; init, destroy, forget, ...); // the rest, to `self.inner`
//! }
//! ```

macro_rules! forward {
    ($inner:ident; $($method:ident),* $(,)?) => {
        $( forward!(@one $inner $method); )*
    };
    // `guard g`: each method first calls `self.g()?`, the layer's one precondition (such as
    // the passthrough's fd budget); only for methods that return `io::Result`.
    ($inner:ident, guard $guard:ident; $($method:ident),* $(,)?) => {
        $( forward!(@one $inner $method $guard); )*
    };
    (@one $inner:ident init $($guard:ident)?) => {
        fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
            $(self.$guard()?;)?
            self.$inner.init(capable)
        }
    };
    (@one $inner:ident destroy) => {
        fn destroy(&self) {
            self.$inner.destroy()
        }
    };
    (@one $inner:ident lookup $($guard:ident)?) => {
        fn lookup(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
            $(self.$guard()?;)?
            self.$inner.lookup(ctx, parent, name)
        }
    };
    (@one $inner:ident forget) => {
        fn forget(&self, ctx: &Context, inode: u64, count: u64) {
            self.$inner.forget(ctx, inode, count)
        }
    };
    (@one $inner:ident batch_forget) => {
        fn batch_forget(&self, ctx: &Context, requests: Vec<(u64, u64)>) {
            self.$inner.batch_forget(ctx, requests)
        }
    };
    (@one $inner:ident getattr $($guard:ident)?) => {
        fn getattr(
            &self,
            ctx: &Context,
            inode: u64,
            handle: Option<u64>,
        ) -> io::Result<(stat64, Duration)> {
            $(self.$guard()?;)?
            self.$inner.getattr(ctx, inode, handle)
        }
    };
    (@one $inner:ident setattr $($guard:ident)?) => {
        fn setattr(
            &self,
            ctx: &Context,
            inode: u64,
            attr: stat64,
            handle: Option<u64>,
            valid: SetattrValid,
        ) -> io::Result<(stat64, Duration)> {
            $(self.$guard()?;)?
            self.$inner.setattr(ctx, inode, attr, handle, valid)
        }
    };
    (@one $inner:ident readlink $($guard:ident)?) => {
        fn readlink(&self, ctx: &Context, inode: u64) -> io::Result<Vec<u8>> {
            $(self.$guard()?;)?
            self.$inner.readlink(ctx, inode)
        }
    };
    (@one $inner:ident symlink $($guard:ident)?) => {
        fn symlink(
            &self,
            ctx: &Context,
            linkname: &CStr,
            parent: u64,
            name: &CStr,
        ) -> io::Result<Entry> {
            $(self.$guard()?;)?
            self.$inner.symlink(ctx, linkname, parent, name)
        }
    };
    (@one $inner:ident mknod $($guard:ident)?) => {
        fn mknod(
            &self,
            ctx: &Context,
            parent: u64,
            name: &CStr,
            mode: u32,
            rdev: u32,
            umask: u32,
        ) -> io::Result<Entry> {
            $(self.$guard()?;)?
            self.$inner.mknod(ctx, parent, name, mode, rdev, umask)
        }
    };
    (@one $inner:ident mkdir $($guard:ident)?) => {
        fn mkdir(
            &self,
            ctx: &Context,
            parent: u64,
            name: &CStr,
            mode: u32,
            umask: u32,
        ) -> io::Result<Entry> {
            $(self.$guard()?;)?
            self.$inner.mkdir(ctx, parent, name, mode, umask)
        }
    };
    (@one $inner:ident unlink $($guard:ident)?) => {
        fn unlink(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
            $(self.$guard()?;)?
            self.$inner.unlink(ctx, parent, name)
        }
    };
    (@one $inner:ident rmdir $($guard:ident)?) => {
        fn rmdir(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
            $(self.$guard()?;)?
            self.$inner.rmdir(ctx, parent, name)
        }
    };
    (@one $inner:ident rename $($guard:ident)?) => {
        fn rename(
            &self,
            ctx: &Context,
            olddir: u64,
            oldname: &CStr,
            newdir: u64,
            newname: &CStr,
            flags: u32,
        ) -> io::Result<()> {
            $(self.$guard()?;)?
            self.$inner.rename(ctx, olddir, oldname, newdir, newname, flags)
        }
    };
    (@one $inner:ident link $($guard:ident)?) => {
        fn link(&self, ctx: &Context, inode: u64, newparent: u64, newname: &CStr) -> io::Result<Entry> {
            $(self.$guard()?;)?
            self.$inner.link(ctx, inode, newparent, newname)
        }
    };
    (@one $inner:ident open $($guard:ident)?) => {
        fn open(
            &self,
            ctx: &Context,
            inode: u64,
            flags: u32,
            fuse_flags: u32,
        ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
            $(self.$guard()?;)?
            self.$inner.open(ctx, inode, flags, fuse_flags)
        }
    };
    (@one $inner:ident create $($guard:ident)?) => {
        fn create(
            &self,
            ctx: &Context,
            parent: u64,
            name: &CStr,
            args: CreateIn,
        ) -> io::Result<(Entry, Option<u64>, OpenOptions, Option<u32>)> {
            $(self.$guard()?;)?
            self.$inner.create(ctx, parent, name, args)
        }
    };
    (@one $inner:ident read $($guard:ident)?) => {
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
            $(self.$guard()?;)?
            self.$inner.read(ctx, inode, handle, w, size, offset, lock_owner, flags)
        }
    };
    (@one $inner:ident write $($guard:ident)?) => {
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
            $(self.$guard()?;)?
            self.$inner.write(
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
    };
    (@one $inner:ident flush $($guard:ident)?) => {
        fn flush(&self, ctx: &Context, inode: u64, handle: u64, lock_owner: u64) -> io::Result<()> {
            $(self.$guard()?;)?
            self.$inner.flush(ctx, inode, handle, lock_owner)
        }
    };
    (@one $inner:ident fsync $($guard:ident)?) => {
        fn fsync(&self, ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
            $(self.$guard()?;)?
            self.$inner.fsync(ctx, inode, datasync, handle)
        }
    };
    (@one $inner:ident fallocate $($guard:ident)?) => {
        fn fallocate(
            &self,
            ctx: &Context,
            inode: u64,
            handle: u64,
            mode: u32,
            offset: u64,
            length: u64,
        ) -> io::Result<()> {
            $(self.$guard()?;)?
            self.$inner.fallocate(ctx, inode, handle, mode, offset, length)
        }
    };
    (@one $inner:ident release $($guard:ident)?) => {
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
            $(self.$guard()?;)?
            self.$inner.release(ctx, inode, flags, handle, flush, flock_release, lock_owner)
        }
    };
    (@one $inner:ident statfs $($guard:ident)?) => {
        fn statfs(&self, ctx: &Context, inode: u64) -> io::Result<statvfs64> {
            $(self.$guard()?;)?
            self.$inner.statfs(ctx, inode)
        }
    };
    (@one $inner:ident setxattr $($guard:ident)?) => {
        fn setxattr(
            &self,
            ctx: &Context,
            inode: u64,
            name: &CStr,
            value: &[u8],
            flags: u32,
        ) -> io::Result<()> {
            $(self.$guard()?;)?
            self.$inner.setxattr(ctx, inode, name, value, flags)
        }
    };
    (@one $inner:ident getxattr $($guard:ident)?) => {
        fn getxattr(
            &self,
            ctx: &Context,
            inode: u64,
            name: &CStr,
            size: u32,
        ) -> io::Result<GetxattrReply> {
            $(self.$guard()?;)?
            self.$inner.getxattr(ctx, inode, name, size)
        }
    };
    (@one $inner:ident listxattr $($guard:ident)?) => {
        fn listxattr(&self, ctx: &Context, inode: u64, size: u32) -> io::Result<ListxattrReply> {
            $(self.$guard()?;)?
            self.$inner.listxattr(ctx, inode, size)
        }
    };
    (@one $inner:ident removexattr $($guard:ident)?) => {
        fn removexattr(&self, ctx: &Context, inode: u64, name: &CStr) -> io::Result<()> {
            $(self.$guard()?;)?
            self.$inner.removexattr(ctx, inode, name)
        }
    };
    (@one $inner:ident opendir $($guard:ident)?) => {
        fn opendir(
            &self,
            ctx: &Context,
            inode: u64,
            flags: u32,
        ) -> io::Result<(Option<u64>, OpenOptions)> {
            $(self.$guard()?;)?
            self.$inner.opendir(ctx, inode, flags)
        }
    };
    (@one $inner:ident readdir $($guard:ident)?) => {
        fn readdir(
            &self,
            ctx: &Context,
            inode: u64,
            handle: u64,
            size: u32,
            offset: u64,
            add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
        ) -> io::Result<()> {
            $(self.$guard()?;)?
            self.$inner.readdir(ctx, inode, handle, size, offset, add_entry)
        }
    };
    (@one $inner:ident readdirplus $($guard:ident)?) => {
        fn readdirplus(
            &self,
            ctx: &Context,
            inode: u64,
            handle: u64,
            size: u32,
            offset: u64,
            add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
        ) -> io::Result<()> {
            $(self.$guard()?;)?
            self.$inner.readdirplus(ctx, inode, handle, size, offset, add_entry)
        }
    };
    (@one $inner:ident fsyncdir $($guard:ident)?) => {
        fn fsyncdir(&self, ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
            $(self.$guard()?;)?
            self.$inner.fsyncdir(ctx, inode, datasync, handle)
        }
    };
    (@one $inner:ident releasedir $($guard:ident)?) => {
        fn releasedir(&self, ctx: &Context, inode: u64, flags: u32, handle: u64) -> io::Result<()> {
            $(self.$guard()?;)?
            self.$inner.releasedir(ctx, inode, flags, handle)
        }
    };
    (@one $inner:ident setupmapping $($guard:ident)?) => {
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
            $(self.$guard()?;)?
            self.$inner
                .setupmapping(ctx, inode, handle, foffset, len, flags, moffset, vu_req)
        }
    };
    (@one $inner:ident removemapping $($guard:ident)?) => {
        fn removemapping(
            &self,
            ctx: &Context,
            inode: u64,
            requests: Vec<RemovemappingOne>,
            vu_req: &mut dyn FsCacheReqHandler,
        ) -> io::Result<()> {
            $(self.$guard()?;)?
            self.$inner.removemapping(ctx, inode, requests, vu_req)
        }
    };
    (@one $inner:ident access $($guard:ident)?) => {
        fn access(&self, ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
            $(self.$guard()?;)?
            self.$inner.access(ctx, inode, mask)
        }
    };
    (@one $inner:ident lseek $($guard:ident)?) => {
        fn lseek(
            &self,
            ctx: &Context,
            inode: u64,
            handle: u64,
            offset: u64,
            whence: u32,
        ) -> io::Result<u64> {
            $(self.$guard()?;)?
            self.$inner.lseek(ctx, inode, handle, offset, whence)
        }
    };
    (@one $inner:ident getlk $($guard:ident)?) => {
        fn getlk(
            &self,
            ctx: &Context,
            inode: u64,
            handle: u64,
            owner: u64,
            lock: FileLock,
            flags: u32,
        ) -> io::Result<FileLock> {
            $(self.$guard()?;)?
            self.$inner.getlk(ctx, inode, handle, owner, lock, flags)
        }
    };
    (@one $inner:ident setlk $($guard:ident)?) => {
        fn setlk(
            &self,
            ctx: &Context,
            inode: u64,
            handle: u64,
            owner: u64,
            lock: FileLock,
            flags: u32,
        ) -> io::Result<()> {
            $(self.$guard()?;)?
            self.$inner.setlk(ctx, inode, handle, owner, lock, flags)
        }
    };
    (@one $inner:ident setlkw $($guard:ident)?) => {
        fn setlkw(
            &self,
            ctx: &Context,
            inode: u64,
            handle: u64,
            owner: u64,
            lock: FileLock,
            flags: u32,
        ) -> io::Result<()> {
            $(self.$guard()?;)?
            self.$inner.setlkw(ctx, inode, handle, owner, lock, flags)
        }
    };
    (@one $inner:ident ioctl $($guard:ident)?) => {
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
            $(self.$guard()?;)?
            self.$inner.ioctl(ctx, inode, handle, flags, cmd, data, out_size)
        }
    };
    (@one $inner:ident bmap $($guard:ident)?) => {
        fn bmap(&self, ctx: &Context, inode: u64, block: u64, blocksize: u32) -> io::Result<u64> {
            $(self.$guard()?;)?
            self.$inner.bmap(ctx, inode, block, blocksize)
        }
    };
    (@one $inner:ident poll $($guard:ident)?) => {
        fn poll(
            &self,
            ctx: &Context,
            inode: u64,
            handle: u64,
            khandle: u64,
            flags: u32,
            events: u32,
        ) -> io::Result<u32> {
            $(self.$guard()?;)?
            self.$inner.poll(ctx, inode, handle, khandle, flags, events)
        }
    };
    (@one $inner:ident notify_reply $($guard:ident)?) => {
        fn notify_reply(&self) -> io::Result<()> {
            $(self.$guard()?;)?
            self.$inner.notify_reply()
        }
    };
    (@one $inner:ident id_remap $($guard:ident)?) => {
        fn id_remap(&self, ctx: &mut Context) -> io::Result<()> {
            $(self.$guard()?;)?
            self.$inner.id_remap(ctx)
        }
    };
}

/// Every method of `FileSystem`, for layers that forward everything but a few: a layer
/// lists what it does not override (the compiler refuses a method written twice).
pub(super) use forward;

/// The imports the generated methods need; `use super::forward::prelude::*` in a layer.
pub(super) mod prelude {
    pub use std::ffi::CStr;
    pub use std::io;
    pub use std::time::Duration;

    pub use fuse_backend_rs::abi::fuse_abi::{
        stat64, statvfs64, CreateIn, FsOptions, OpenOptions, SetattrValid,
    };
    pub use fuse_backend_rs::abi::virtio_fs::RemovemappingOne;
    pub use fuse_backend_rs::api::filesystem::{
        Context, DirEntry, Entry, FileLock, FileSystem, GetxattrReply, IoctlData, ListxattrReply,
        ZeroCopyReader, ZeroCopyWriter,
    };
    pub use fuse_backend_rs::transport::FsCacheReqHandler;
}
