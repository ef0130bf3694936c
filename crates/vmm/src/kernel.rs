//! Kernels from a file (`krun_set_kernel`) instead of libkrunfw: an ELF vmlinux or a bzImage
//! loaded by linux-loader, either of them gzip- or zstd-compressed, and the initramfs placed
//! where the x86 boot protocol lets the kernel find it.
//!
//! Formats on x86_64 (`KRUN_KERNEL_FORMAT_*`):
//!
//! | format | the file must be |
//! |---|---|
//! | `RAW` (0) | a bzImage: the boot protocol's image, "HdrS" at 0x202, a 64-bit kernel |
//! | `ELF` (1) | an x86_64 ELF vmlinux |
//! | `IMAGE_GZ` (4) | a gzip stream of either of the above |
//! | `IMAGE_ZSTD` (5) | a zstd stream of either of the above |
//!
//! `PE_GZ` and `IMAGE_BZ2` (aarch64 EFI images, bzip2) are refused by the setter. A file that
//! is not what its format says fails at start with [`KernelError::NotInFormat`] (EINVAL).

use std::fs::File;
use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{bzimage::BzImage, elf::Elf, KernelLoader, KernelLoaderResult};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryRegion};

use crate::config::{KernelFile, KernelFormat};
use crate::krunfw::Krunfw;
use crate::layout::HIMEM_START;
use crate::vm::VmError;

/// The bzImage's 64-bit entry point, relative to where its protected-mode code is loaded
/// (boot protocol 2.12, `XLF_KERNEL_64`).
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// `xloadflags` bit: the kernel has the 64-bit entry point at +0x200.
const XLF_KERNEL_64: u16 = 1 << 0;
/// Offset and value of the boot protocol header magic ("HdrS").
const BZIMAGE_MAGIC_OFFSET: usize = 0x202;
const BZIMAGE_MAGIC: &[u8] = b"HdrS";
const ELF_MAGIC: &[u8] = b"\x7fELF";
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
/// `initrd_addr_max` of kernels whose header predates the field (boot protocol < 2.03), and
/// the limit for an ELF kernel, which has no header to say.
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;
const PAGE_SIZE: u64 = 0x1000;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot read the kernel {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the kernel {} is not {format}: {why}", .path.display())]
    NotInFormat {
        path: PathBuf,
        format: &'static str,
        why: String,
    },
    #[error("the kernel {} is not {format}: decompressing it failed", .path.display())]
    Decompress {
        path: PathBuf,
        format: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the kernel {} ({format}) decompresses to more than the guest's {limit} bytes of RAM", .path.display())]
    TooLarge {
        path: PathBuf,
        format: &'static str,
        limit: u64,
    },
    #[error("cannot load the kernel {} ({format}) into guest RAM", .path.display())]
    Load {
        path: PathBuf,
        format: &'static str,
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error("kernel format {0} cannot be booted on x86_64")]
    UnsupportedFormat(&'static str),
    #[error("cannot read the initramfs {}", .path.display())]
    Initramfs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the initramfs {} ({size} bytes) does not fit in guest RAM between the kernel's end at {kernel_end:#x} and {limit:#x}", .path.display())]
    InitramfsTooLarge {
        path: PathBuf,
        size: u64,
        kernel_end: u64,
        limit: u64,
    },
}

/// What the boot code needs from a loaded kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct BootKernel {
    /// Guest physical address of the 64-bit entry point.
    pub entry_addr: u64,
    /// A bzImage's setup header, which the zero page must carry; None for ELF and libkrunfw.
    pub setup_header: Option<setup_header>,
    /// Where the initramfs was loaded: (address, size).
    pub initramfs: Option<(u64, u64)>,
    /// Whether the image has the 8250 UART driver, when that was asked for and the image
    /// could be searched (libkrunfw's; a kernel file's compressed payload cannot be).
    pub has_8250: Option<bool>,
}

/// The image kinds linux-loader can load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Image {
    Elf,
    BzImage,
}

/// The name of `format` in messages, as the C constant says it.
pub fn format_name(format: KernelFormat) -> &'static str {
    match format {
        KernelFormat::Raw => "KRUN_KERNEL_FORMAT_RAW (a bzImage)",
        KernelFormat::Elf => "KRUN_KERNEL_FORMAT_ELF (an ELF vmlinux)",
        KernelFormat::PeGz => "KRUN_KERNEL_FORMAT_PE_GZ",
        KernelFormat::ImageBz2 => "KRUN_KERNEL_FORMAT_IMAGE_BZ2",
        KernelFormat::ImageGz => "KRUN_KERNEL_FORMAT_IMAGE_GZ (a gzip'd vmlinux or bzImage)",
        KernelFormat::ImageZstd => "KRUN_KERNEL_FORMAT_IMAGE_ZSTD (a zstd'd vmlinux or bzImage)",
    }
}

/// Whether this build boots `format` (the setter refuses the others).
pub fn format_supported(format: KernelFormat) -> bool {
    !matches!(format, KernelFormat::PeGz | KernelFormat::ImageBz2)
}

fn image_kind(bytes: &[u8]) -> Option<Image> {
    if bytes.starts_with(ELF_MAGIC) {
        Some(Image::Elf)
    } else if bytes.get(BZIMAGE_MAGIC_OFFSET..BZIMAGE_MAGIC_OFFSET + BZIMAGE_MAGIC.len())
        == Some(BZIMAGE_MAGIC)
    {
        Some(Image::BzImage)
    } else {
        None
    }
}

/// Decompresses `input` with `decoder`, refusing more than `limit` bytes (a small file must
/// not expand into unbounded host memory).
fn decompress(
    decoder: impl Read,
    limit: u64,
    path: &Path,
    format: &'static str,
) -> Result<Vec<u8>, KernelError> {
    let mut out = Vec::new();
    decoder
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|source| KernelError::Decompress {
            path: path.to_path_buf(),
            format,
            source,
        })?;
    if out.len() as u64 > limit {
        return Err(KernelError::TooLarge {
            path: path.to_path_buf(),
            format,
            limit,
        });
    }
    Ok(out)
}

/// The uncompressed image of `bytes` as `format` declares it, and its kind. `limit` bounds
/// what a compressed file may expand to.
fn unpack(
    bytes: Vec<u8>,
    format: KernelFormat,
    path: &Path,
    limit: u64,
) -> Result<(Vec<u8>, Image), KernelError> {
    let name = format_name(format);
    let not = |why: &str| KernelError::NotInFormat {
        path: path.to_path_buf(),
        format: name,
        why: why.to_string(),
    };
    let (image, want) = match format {
        KernelFormat::Elf => (bytes, Some(Image::Elf)),
        KernelFormat::Raw => (bytes, Some(Image::BzImage)),
        KernelFormat::ImageGz => {
            if !bytes.starts_with(GZIP_MAGIC) {
                return Err(not("no gzip header (1f 8b) at its start"));
            }
            let decoder = flate2::read::MultiGzDecoder::new(Cursor::new(bytes));
            (decompress(decoder, limit, path, name)?, None)
        }
        KernelFormat::ImageZstd => {
            if !bytes.starts_with(ZSTD_MAGIC) {
                return Err(not("no zstd frame magic (28 b5 2f fd) at its start"));
            }
            let decoder =
                ruzstd::decoding::StreamingDecoder::new(Cursor::new(bytes)).map_err(|e| {
                    KernelError::Decompress {
                        path: path.to_path_buf(),
                        format: name,
                        source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
                    }
                })?;
            (decompress(decoder, limit, path, name)?, None)
        }
        KernelFormat::PeGz | KernelFormat::ImageBz2 => {
            return Err(KernelError::UnsupportedFormat(name))
        }
    };
    match (image_kind(&image), want) {
        (Some(kind), None) => Ok((image, kind)),
        (Some(kind), Some(want)) if kind == want => Ok((image, kind)),
        (Some(Image::Elf), Some(_)) => Err(not("it is an ELF file (KRUN_KERNEL_FORMAT_ELF)")),
        (Some(Image::BzImage), Some(_)) => Err(not("it is a bzImage (KRUN_KERNEL_FORMAT_RAW)")),
        (None, Some(Image::Elf)) => Err(not("no ELF magic (7f 45 4c 46) at its start")),
        (None, Some(Image::BzImage)) => Err(not("no boot protocol header (\"HdrS\" at 0x202)")),
        (None, None) => Err(not(
            "what it decompresses to is neither an ELF vmlinux nor a bzImage",
        )),
    }
}

/// The end of the RAM region that starts at 0 (below the 32-bit MMIO gap).
fn low_ram_end<M: GuestMemory>(mem: &M) -> u64 {
    mem.iter()
        .find(|r| r.start_addr().raw_value() == 0)
        .map_or(0, |r| r.last_addr().raw_value() + 1)
}

/// Total guest RAM, the bound for a decompressed kernel.
fn ram_bytes<M: GuestMemory>(mem: &M) -> u64 {
    mem.iter().map(|r| r.len()).sum()
}

/// Puts the guest kernel into `mem`: `krun_set_kernel`'s file, else libkrunfw's image (the
/// bundle `krun_create_ctx` opened, or opened now). Returns what booting it needs and the
/// libkrunfw bundle to keep loaded while the VM lives.
pub(crate) fn load_guest_kernel(
    config: &crate::VmConfig,
    mem: &devices::GuestMemory,
    wants_serial: bool,
) -> Result<(BootKernel, Option<Arc<Krunfw>>), VmError> {
    if let Some(file) = &config.kernel {
        let boot = load(mem, file).map_err(VmError::Kernel)?;
        return Ok((boot, None));
    }
    let krunfw = match &config.krunfw {
        Some(k) => k.clone(),
        None => Arc::new(Krunfw::open().map_err(VmError::Krunfw)?),
    };
    let kernel = krunfw.kernel();
    // Searched before the load, which lets libkrunfw's pages go.
    let has_8250 = wants_serial.then(|| crate::serial::kernel_has_driver(kernel.bytes));
    load_krunfw_image(mem, &kernel).map_err(VmError::Memory)?;
    let boot = BootKernel {
        entry_addr: kernel.entry_addr,
        has_8250,
        ..BootKernel::default()
    };
    Ok((boot, Some(krunfw)))
}

/// Puts libkrunfw's image into guest RAM without holding it twice: its pages are mapped
/// from the library's file where they can be (private, copy-on-write, as upstream does), and
/// what is left is copied in pieces, each piece of the library's pages let go once copied.
fn load_krunfw_image(
    mem: &devices::GuestMemory,
    kernel: &crate::krunfw::KernelImage<'_>,
) -> Result<(), crate::memory::MemoryError> {
    let mapped = kernel
        .backing_file()
        .map(|(file, offset)| {
            crate::memory::map_kernel_file(mem, &file, offset, kernel.bytes.len(), kernel.load_addr)
                .unwrap_or_else(|e| {
                    log::debug!("cannot map the kernel from libkrunfw's file ({e}); copying it");
                    0
                })
        })
        .unwrap_or(0);
    log::debug!(
        "kernel: {mapped} of {} bytes mapped from libkrunfw's file, the rest copied",
        kernel.bytes.len()
    );
    crate::memory::load_kernel(
        mem,
        &kernel.bytes[mapped..],
        kernel.load_addr + mapped as u64,
        |piece| kernel.release(piece),
    )
}

/// Loads `file`'s kernel (and initramfs) into `mem`.
pub fn load<M: GuestMemory>(mem: &M, file: &KernelFile) -> Result<BootKernel, KernelError> {
    let path = &file.path;
    let name = format_name(file.format);
    let bytes = std::fs::read(path).map_err(|source| KernelError::Read {
        path: path.clone(),
        source,
    })?;
    let (image, kind) = unpack(bytes, file.format, path, ram_bytes(mem))?;
    let load_error = |source| KernelError::Load {
        path: path.clone(),
        format: name,
        source,
    };
    let highmem = Some(GuestAddress(HIMEM_START));
    let mut cursor = Cursor::new(image);
    let loaded: KernelLoaderResult = match kind {
        Image::Elf => Elf::load(mem, None, &mut cursor, highmem).map_err(load_error)?,
        Image::BzImage => BzImage::load(mem, None, &mut cursor, highmem).map_err(load_error)?,
    };
    let entry_addr = match loaded.setup_header {
        Some(hdr) => {
            if hdr.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(KernelError::NotInFormat {
                    path: path.clone(),
                    format: name,
                    why: "the bzImage has no 64-bit entry point (XLF_KERNEL_64)".into(),
                });
            }
            loaded.kernel_load.raw_value() + BZIMAGE_64BIT_ENTRY_OFFSET
        }
        None => loaded.kernel_load.raw_value(),
    };
    let initramfs = match &file.initramfs {
        Some(initramfs) => Some(load_initramfs(mem, initramfs, &loaded)?),
        None => None,
    };
    log::debug!(
        "kernel {} ({name}): loaded at {:#x}..{:#x}, entry {entry_addr:#x}, initramfs {initramfs:x?}",
        path.display(),
        loaded.kernel_load.raw_value(),
        loaded.kernel_end
    );
    Ok(BootKernel {
        entry_addr,
        setup_header: loaded.setup_header,
        initramfs,
        has_8250: None,
    })
}

/// Where an initramfs of `size` bytes goes: page aligned, as high as the kernel allows
/// (`initrd_addr_max`, low RAM's end), above everything the kernel occupies or unpacks
/// into (`kernel_end`). None when it does not fit.
pub fn initramfs_addr(size: u64, kernel_end: u64, addr_max: u64, low_ram_end: u64) -> Option<u64> {
    let limit = low_ram_end.min(addr_max.saturating_add(1));
    let start = limit.checked_sub(size)? & !(PAGE_SIZE - 1);
    (start >= kernel_end).then_some(start)
}

fn load_initramfs<M: GuestMemory>(
    mem: &M,
    path: &Path,
    kernel: &KernelLoaderResult,
) -> Result<(u64, u64), KernelError> {
    let io_error = |source| KernelError::Initramfs {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_error)?;
    let size = file.metadata().map_err(io_error)?.len();
    let (addr_max, kernel_end) = match &kernel.setup_header {
        Some(hdr) => {
            let addr_max = if hdr.version >= 0x0203 && hdr.initrd_addr_max != 0 {
                u64::from(hdr.initrd_addr_max)
            } else {
                DEFAULT_INITRD_ADDR_MAX
            };
            // The decompressor unpacks the kernel at its preferred address, init_size long.
            let unpacked_end = hdr.pref_address.saturating_add(u64::from(hdr.init_size));
            (addr_max, kernel.kernel_end.max(unpacked_end))
        }
        None => (DEFAULT_INITRD_ADDR_MAX, kernel.kernel_end),
    };
    let limit = low_ram_end(mem);
    let addr = initramfs_addr(size, kernel_end, addr_max, limit).ok_or_else(|| {
        KernelError::InitramfsTooLarge {
            path: path.to_path_buf(),
            size,
            kernel_end,
            limit: limit.min(addr_max.saturating_add(1)),
        }
    })?;
    let len = usize::try_from(size).map_err(|_| io_error(io::ErrorKind::FileTooLarge.into()))?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, len)
        .map_err(|e| io_error(io::Error::other(e.to_string())))?;
    Ok((addr, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn bzimage_header() -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[BZIMAGE_MAGIC_OFFSET..BZIMAGE_MAGIC_OFFSET + 4].copy_from_slice(BZIMAGE_MAGIC);
        b
    }

    fn elf_header() -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(ELF_MAGIC);
        b
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn unpack_kind(bytes: Vec<u8>, format: KernelFormat) -> Result<Image, KernelError> {
        unpack(bytes, format, Path::new("/k"), 1 << 20).map(|(_, kind)| kind)
    }

    #[test]
    fn unpack_declared_format_matches_kind() {
        assert_eq!(
            unpack_kind(elf_header(), KernelFormat::Elf).unwrap(),
            Image::Elf
        );
        assert_eq!(
            unpack_kind(bzimage_header(), KernelFormat::Raw).unwrap(),
            Image::BzImage
        );
    }

    #[test]
    fn unpack_bzimage_declared_elf_not_in_format_names_both() {
        let err = unpack_kind(bzimage_header(), KernelFormat::Elf).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, KernelError::NotInFormat { .. }));
        assert!(
            text.contains("/k") && text.contains("KRUN_KERNEL_FORMAT_ELF"),
            "{text}"
        );
    }

    #[test]
    fn unpack_gzip_of_either_kind() {
        assert_eq!(
            unpack_kind(gzip(&bzimage_header()), KernelFormat::ImageGz).unwrap(),
            Image::BzImage
        );
        assert_eq!(
            unpack_kind(gzip(&elf_header()), KernelFormat::ImageGz).unwrap(),
            Image::Elf
        );
    }

    #[test]
    fn unpack_plain_file_declared_gzip_not_in_format() {
        let err = unpack_kind(elf_header(), KernelFormat::ImageGz).unwrap_err();
        assert!(matches!(err, KernelError::NotInFormat { .. }), "{err}");
        let err = unpack_kind(elf_header(), KernelFormat::ImageZstd).unwrap_err();
        assert!(matches!(err, KernelError::NotInFormat { .. }), "{err}");
    }

    #[test]
    fn unpack_gzip_of_garbage_not_a_kernel() {
        let err = unpack_kind(gzip(b"hello"), KernelFormat::ImageGz).unwrap_err();
        assert!(matches!(err, KernelError::NotInFormat { .. }), "{err}");
    }

    #[test]
    fn unpack_gzip_bomb_stops_at_limit() {
        let big = vec![0u8; 4 << 20];
        let err = unpack(gzip(&big), KernelFormat::ImageGz, Path::new("/k"), 1 << 20).unwrap_err();
        assert!(matches!(err, KernelError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn unpack_zstd_frame_of_elf() {
        // A zstd frame holding one raw block with the ELF header bytes (RFC 8878).
        let payload = elf_header();
        let mut frame = ZSTD_MAGIC.to_vec();
        frame.push(0x20); // frame header: single segment, 1-byte content size
        frame.push(payload.len() as u8);
        let block_header = 1u32 | ((payload.len() as u32) << 3); // last block, raw
        frame.extend_from_slice(&block_header.to_le_bytes()[..3]);
        frame.extend_from_slice(&payload);
        assert_eq!(
            unpack_kind(frame, KernelFormat::ImageZstd).unwrap(),
            Image::Elf
        );
    }

    #[test]
    fn unpack_corrupt_zstd_decompress_error() {
        let mut frame = ZSTD_MAGIC.to_vec();
        frame.extend_from_slice(&[0xff; 16]);
        let err = unpack_kind(frame, KernelFormat::ImageZstd).unwrap_err();
        assert!(matches!(err, KernelError::Decompress { .. }), "{err}");
    }

    #[test]
    fn initramfs_addr_top_of_allowed_ram_page_aligned() {
        // 256 MiB of RAM, a kernel up to 40 MiB, 1 MiB + 5 bytes of initramfs.
        let size = (1 << 20) + 5;
        let addr = initramfs_addr(size, 40 << 20, 0x7fff_ffff, 256 << 20).unwrap();
        assert_eq!(addr % PAGE_SIZE, 0);
        assert!(addr + size <= 256 << 20);
        assert!(addr >= (256 << 20) - size - PAGE_SIZE);
        // initrd_addr_max below RAM's end wins.
        let addr = initramfs_addr(size, 40 << 20, (128 << 20) - 1, 256 << 20).unwrap();
        assert!(addr + size <= 128 << 20);
    }

    #[test]
    fn initramfs_addr_over_kernel_none() {
        assert_eq!(
            initramfs_addr(200 << 20, 100 << 20, u64::MAX, 256 << 20),
            None
        );
        assert_eq!(initramfs_addr(u64::MAX, 0, u64::MAX, 256 << 20), None);
    }

    #[test]
    fn format_supported_refuses_aarch64_and_bzip2() {
        assert!(format_supported(KernelFormat::Raw) && format_supported(KernelFormat::ImageZstd));
        assert!(!format_supported(KernelFormat::PeGz) && !format_supported(KernelFormat::ImageBz2));
    }
}
