//! Upstream's `LinuxSimplified` permission semantics (`krun_add_virtiofs4(.., 1)`): the
//! host's permission bits are served as they are, but ownership is not: every node is
//! reported as owned by the guest process that asks, and chown/chgrp change nothing on the
//! host. Because the owner depends on who asks, no attribute may be cached by the guest.
//!
//! The layer sits directly above the host directory (below the virtual entries, which keep
//! their own fixed attributes).

use super::forward::{forward, prelude::*};

/// `inner` with the requester's uid and gid in every attribute it returns.
pub struct Simplified<F> {
    inner: F,
}

impl<F> Simplified<F> {
    pub fn new(inner: F) -> Self {
        Self { inner }
    }
}

fn owned_by_caller(ctx: &Context, mut st: stat64) -> stat64 {
    st.st_uid = ctx.uid;
    st.st_gid = ctx.gid;
    st
}

fn attr(ctx: &Context, (st, _timeout): (stat64, Duration)) -> (stat64, Duration) {
    (owned_by_caller(ctx, st), Duration::ZERO)
}

fn entry(ctx: &Context, e: Entry) -> Entry {
    Entry {
        attr: owned_by_caller(ctx, e.attr),
        attr_timeout: Duration::ZERO,
        entry_timeout: Duration::ZERO,
        ..e
    }
}

impl<F: FileSystem<Inode = u64, Handle = u64>> FileSystem for Simplified<F> {
    type Inode = u64;
    type Handle = u64;

    fn lookup(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        self.inner.lookup(ctx, parent, name).map(|e| entry(ctx, e))
    }

    fn getattr(
        &self,
        ctx: &Context,
        inode: u64,
        handle: Option<u64>,
    ) -> io::Result<(stat64, Duration)> {
        self.inner.getattr(ctx, inode, handle).map(|a| attr(ctx, a))
    }

    /// An owner change is dropped (the host file keeps its owner); what else the request
    /// changes (mode, size, times) still happens.
    fn setattr(
        &self,
        ctx: &Context,
        inode: u64,
        st: stat64,
        handle: Option<u64>,
        valid: SetattrValid,
    ) -> io::Result<(stat64, Duration)> {
        let valid = valid - (SetattrValid::UID | SetattrValid::GID);
        let result = if valid.is_empty() {
            self.inner.getattr(ctx, inode, handle)
        } else {
            self.inner.setattr(ctx, inode, st, handle, valid)
        };
        result.map(|a| attr(ctx, a))
    }

    fn symlink(
        &self,
        ctx: &Context,
        linkname: &CStr,
        parent: u64,
        name: &CStr,
    ) -> io::Result<Entry> {
        self.inner
            .symlink(ctx, linkname, parent, name)
            .map(|e| entry(ctx, e))
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
        self.inner
            .mknod(ctx, parent, name, mode, rdev, umask)
            .map(|e| entry(ctx, e))
    }

    fn mkdir(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.inner
            .mkdir(ctx, parent, name, mode, umask)
            .map(|e| entry(ctx, e))
    }

    fn link(&self, ctx: &Context, inode: u64, newparent: u64, newname: &CStr) -> io::Result<Entry> {
        self.inner
            .link(ctx, inode, newparent, newname)
            .map(|e| entry(ctx, e))
    }

    fn create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        args: CreateIn,
    ) -> io::Result<(Entry, Option<u64>, OpenOptions, Option<u32>)> {
        self.inner
            .create(ctx, parent, name, args)
            .map(|(e, h, o, p)| (entry(ctx, e), h, o, p))
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
        self.inner
            .readdirplus(ctx, inode, handle, size, offset, &mut |d, e| {
                add_entry(d, entry(ctx, e))
            })
    }

    forward!(inner; init, destroy, forget, batch_forget, readlink, unlink, rmdir, rename, open,
        read, write, flush, fsync, fallocate, release, statfs, setxattr, getxattr, listxattr,
        removexattr, opendir, readdir, fsyncdir, releasedir, setupmapping, removemapping,
        access, lseek, getlk, setlk, setlkw, ioctl, bmap, poll, notify_reply, id_remap);
}

#[cfg(test)]
mod tests {
    use super::*;
    use fuse_backend_rs::abi::fuse_abi::Attr;

    fn ctx(uid: u32, gid: u32) -> Context {
        Context {
            uid,
            gid,
            ..Context::default()
        }
    }

    #[test]
    fn entry_owner_is_the_caller_and_not_cached() {
        let mut st: stat64 = Attr::default().into();
        st.st_uid = 0;
        st.st_gid = 0;
        st.st_mode = libc::S_IFREG | 0o640;
        let e = Entry {
            inode: 7,
            generation: 0,
            attr: st,
            attr_flags: 0,
            attr_timeout: Duration::from_secs(5),
            entry_timeout: Duration::from_secs(5),
        };

        let e = entry(&ctx(1000, 100), e);

        assert_eq!((e.attr.st_uid, e.attr.st_gid), (1000, 100));
        assert_eq!(e.attr.st_mode, libc::S_IFREG | 0o640);
        assert_eq!(
            (e.attr_timeout, e.entry_timeout),
            (Duration::ZERO, Duration::ZERO)
        );
    }
}
