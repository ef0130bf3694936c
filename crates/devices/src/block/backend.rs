//! What a disk is stored in: the [`DiskBackend`] trait the request worker calls, a raw file
//! or block device ([`RawFile`]), and qcow2/vmdk images through imago ([`ImageFile`]).
//!
//! Every method takes `&self`: the worker's I/O threads serve several requests of one disk
//! at once (positional reads and writes need no shared cursor).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::vmdk::Vmdk;
use imago::{FormatAccess, FormatDriverBuilder, PermissiveImplicitOpenGate, StorageOpenOptions};
use nix::fcntl::{fallocate, FallocateFlags};

/// A disk's contents, addressed in bytes.
pub trait DiskBackend: Send + Sync {
    /// The size the guest sees, in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`; the range lies within [`DiskBackend::size`].
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes `buf` at `offset`; the range lies within [`DiskBackend::size`].
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every write that completed so far durable on the host (the guest's flush).
    fn flush(&self) -> io::Result<()>;
    /// Whether [`DiskBackend::discard`] can free space.
    fn can_discard(&self) -> bool {
        false
    }
    /// Frees `len` bytes at `offset`; they read as zeroes afterwards.
    fn discard(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    /// Makes `len` bytes at `offset` read as zeroes (freeing them if `unmap` and it can).
    fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> io::Result<()>;
}

/// Image formats ([`open`] picks the backend by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
}

/// How a disk is opened.
#[derive(Clone, Debug)]
pub struct DiskOptions {
    pub path: PathBuf,
    pub format: Format,
    pub read_only: bool,
    /// O_DIRECT (bypass the host page cache); falls back to cached I/O, with a warning,
    /// where the host filesystem refuses it.
    pub direct_io: bool,
}

/// Opens the disk `opts` describes. Errors keep the OS errno (ENOENT, EACCES, ...); a
/// malformed image is `InvalidData`, an unknown format feature `Unsupported`.
pub fn open(opts: &DiskOptions) -> io::Result<Box<dyn DiskBackend>> {
    Ok(match opts.format {
        Format::Raw => Box::new(RawFile::open(&opts.path, opts.read_only, opts.direct_io)?),
        Format::Qcow2 | Format::Vmdk => Box::new(ImageFile::open(opts)?),
    })
}

/// Bytes of zeroes written per call when a range cannot be zeroed with fallocate.
const ZERO_CHUNK: usize = 64 * 1024;

/// A raw image file or a host block device.
pub struct RawFile {
    file: File,
    size: u64,
    /// Regular files can punch holes; block devices need an ioctl this crate cannot issue.
    regular: bool,
}

impl RawFile {
    pub fn open(path: &Path, read_only: bool, direct_io: bool) -> io::Result<RawFile> {
        let file = open_file(path, read_only, direct_io)?;
        let meta = file.metadata()?;
        let regular = meta.file_type().is_file();
        let size = if meta.file_type().is_block_device() {
            // A block device's metadata says 0; its end is its size.
            io::Seek::seek(&mut &file, io::SeekFrom::End(0))?
        } else {
            meta.len()
        };
        Ok(RawFile {
            file,
            size,
            regular,
        })
    }

    fn fallocate(&self, flags: FallocateFlags, offset: u64, len: u64) -> io::Result<()> {
        let offset = i64::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let len = i64::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        fallocate(&self.file, flags, offset, len).map_err(io::Error::from)
    }
}

/// Opens `path` read-only or read-write, with O_DIRECT when asked and allowed.
fn open_file(path: &Path, read_only: bool, direct_io: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(!read_only);
    if direct_io {
        let mut direct = options.clone();
        direct.custom_flags(libc::O_DIRECT);
        match direct.open(path) {
            Ok(f) => return Ok(f),
            // tmpfs and some FUSE filesystems refuse O_DIRECT with EINVAL.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => log::warn!(
                "disk {}: the host filesystem refuses O_DIRECT ({e}); using the page cache",
                path.display()
            ),
            Err(e) => return Err(e),
        }
    }
    options.open(path)
}

impl DiskBackend for RawFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn can_discard(&self) -> bool {
        self.regular
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if !self.regular {
            return Err(io::Error::from(io::ErrorKind::Unsupported));
        }
        self.fallocate(
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    }

    fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        if self.regular {
            let flags = if unmap {
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE
            } else {
                FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE
            };
            if self.fallocate(flags, offset, len).is_ok() {
                return Ok(());
            }
        }
        write_zeroes_by_writing(self, offset, len)
    }
}

/// Zeroes a range with plain writes, for backends without a cheaper way.
fn write_zeroes_by_writing(disk: &dyn DiskBackend, offset: u64, len: u64) -> io::Result<()> {
    let zeroes = vec![0u8; ZERO_CHUNK];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(ZERO_CHUNK as u64) as usize;
        disk.write_at(&zeroes[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

/// A qcow2 (backing files included) or vmdk image, through imago.
///
/// imago writes the L1 entry of a newly allocated L2 table at once but the refcount of that
/// cluster only when its caches are flushed: an image whose VMM dies in between is
/// inconsistent (`qemu-img check`: refcount 0, reference 1). So whenever a write made the
/// image file grow (a cluster was allocated), the metadata caches are written out to the
/// file right away (no fdatasync: that stays the guest's flush), which closes that window
/// to the duration of one request.
pub struct ImageFile {
    image: FormatAccess<ImagoFile>,
    path: PathBuf,
    /// The image file, to see it grow.
    file: File,
    /// Its length when its metadata was last written out.
    len: std::sync::atomic::AtomicU64,
}

impl ImageFile {
    pub fn open(opts: &DiskOptions) -> io::Result<ImageFile> {
        let storage = StorageOpenOptions::new()
            .write(!opts.read_only)
            .direct(opts.direct_io);
        let gate = PermissiveImplicitOpenGate::default();
        let image = match opts.format {
            Format::Qcow2 => FormatAccess::new(
                Qcow2::<ImagoFile>::builder_path(&opts.path)
                    .write(!opts.read_only)
                    .storage_open_options(storage)
                    .open(gate)?,
            ),
            Format::Vmdk => {
                if !opts.read_only {
                    log::warn!(
                        "disk {}: vmdk images are served read-only",
                        opts.path.display()
                    );
                }
                FormatAccess::new(
                    Vmdk::<ImagoFile>::builder_path(&opts.path)
                        .write(false)
                        .storage_open_options(storage)
                        .open(gate)?,
                )
            }
            Format::Raw => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "raw images are served by RawFile",
                ))
            }
        };
        let file = File::open(&opts.path)?;
        let len = file.metadata()?.len();
        Ok(ImageFile {
            image,
            path: opts.path.clone(),
            file,
            len: std::sync::atomic::AtomicU64::new(len),
        })
    }

    /// After a write: if the file grew, write imago's metadata caches out (see the type).
    fn settle_allocations(&self) -> io::Result<()> {
        use std::sync::atomic::Ordering;
        let len = self.file.metadata()?.len();
        if self.len.fetch_max(len, Ordering::SeqCst) < len {
            self.image.flush()?;
        }
        Ok(())
    }
}

impl DiskBackend for ImageFile {
    fn size(&self) -> u64 {
        self.image.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.image.read(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.image.write(buf, offset)?;
        self.settle_allocations()
    }

    fn flush(&self) -> io::Result<()> {
        // Metadata caches (L2 tables, refcounts) to the file first, then the file to disk.
        self.image.flush()?;
        self.image.sync()
    }

    fn write_zeroes(&self, offset: u64, len: u64, _unmap: bool) -> io::Result<()> {
        self.image.write_zeroes(offset, len)?;
        self.settle_allocations()
    }
}

impl Drop for ImageFile {
    fn drop(&mut self) {
        if let Err(e) = self.image.flush() {
            log::error!(
                "disk {}: flushing the image failed: {e}",
                self.path.display()
            );
        }
    }
}
