//! libkrunfw: the shared library that carries the guest kernel as ready-to-copy bytes.
//!
//! It is opened (with libloading) as early as possible: crun creates the context before it
//! chroots into the container, where the library can no longer be found.

use std::ffi::c_char;
use std::fmt;

use libloading::os::unix::{Library, Symbol, RTLD_LOCAL, RTLD_NOW};

/// The soname libkrun 1.x loads.
pub const KRUNFW_SONAME: &str = "libkrunfw.so.5";

#[derive(Debug, thiserror::Error)]
pub enum KrunfwError {
    #[error("cannot load {KRUNFW_SONAME} (install libkrunfw or add its directory to LD_LIBRARY_PATH): {0}")]
    Open(String),
    #[error("{KRUNFW_SONAME} has no symbol {0}")]
    Symbol(&'static str),
    #[error("{KRUNFW_SONAME} returned an empty kernel image")]
    EmptyKernel,
}

type GetKernelFn = unsafe extern "C" fn(*mut usize, *mut usize, *mut usize) -> *const c_char;
type GetVersionFn = unsafe extern "C" fn() -> u32;

/// The guest kernel as libkrunfw hands it out.
#[derive(Clone, Copy)]
pub struct KernelImage<'a> {
    /// Bytes to copy to `load_addr` in guest memory.
    pub bytes: &'a [u8],
    /// Guest physical address the image is copied to.
    pub load_addr: u64,
    /// Guest physical address of the 64-bit entry point.
    pub entry_addr: u64,
}

impl KernelImage<'_> {
    /// Lets the host drop its resident copy of `part`, a piece of `bytes` already copied
    /// into guest memory: without it the ~20 MiB image counts twice in the VMM's RSS (the
    /// library's pages and the guest's copy). Only whole pages inside `part` go; a later read
    /// faults them back in from the library file, unchanged.
    pub fn release(&self, part: &[u8]) {
        let page = page_size();
        let start = part.as_ptr() as usize;
        let first = start.div_ceil(page) * page;
        let last = (start + part.len()) / page * page;
        let inside = self.bytes.as_ptr() as usize <= start
            && start + part.len() <= self.bytes.as_ptr() as usize + self.bytes.len();
        if !inside || last <= first {
            return;
        }
        // SAFETY: [first, last) is whole pages inside the kernel bytes, which live in a
        // private mapping of libkrunfw's file that the host never writes: dropping the pages
        // loses nothing (they are read back from the file), and no Rust reference sees the
        // memory change.
        let rc = unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_DONTNEED,
            )
        };
        if rc != 0 {
            log::debug!(
                "madvise(DONTNEED) of libkrunfw's kernel pages: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

impl KernelImage<'_> {
    /// The file the image's bytes are mapped from and their offset in it, when the library's
    /// mapping can be found in `/proc/self/maps` and the file there is still the one mapped
    /// (same device and inode). Lets guest RAM map the image instead of copying it.
    pub fn backing_file(&self) -> Option<(std::fs::File, u64)> {
        use std::os::unix::fs::MetadataExt;
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        let start = self.bytes.as_ptr() as u64;
        let end = start + self.bytes.len() as u64;
        for line in maps.lines() {
            let mut fields = line.split_whitespace();
            let (Some(range), Some(_perms), Some(offset), Some(dev), Some(inode)) = (
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
            ) else {
                continue;
            };
            let Some((lo, hi)) = range.split_once('-') else {
                continue;
            };
            let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16))
            else {
                continue;
            };
            if !(lo <= start && end <= hi) {
                continue;
            }
            let path: String = fields.collect::<Vec<_>>().join(" ");
            let offset = u64::from_str_radix(offset, 16).ok()?;
            let inode: u64 = inode.parse().ok()?;
            let (major, minor) = dev.split_once(':')?;
            let (major, minor) = (
                u64::from_str_radix(major, 16).ok()?,
                u64::from_str_radix(minor, 16).ok()?,
            );
            let file = std::fs::File::open(&path).ok()?;
            let meta = file.metadata().ok()?;
            let same_dev =
                libc::major(meta.dev()) as u64 == major && libc::minor(meta.dev()) as u64 == minor;
            if meta.ino() != inode || !same_dev {
                log::debug!(
                    "libkrunfw's file {path} changed since it was mapped; copying the kernel"
                );
                return None;
            }
            return Some((file, offset + (start - lo)));
        }
        None
    }
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).max(1)
}

/// An open libkrunfw. The library stays loaded while this value lives.
pub struct Krunfw {
    // Keeps the kernel bytes mapped; unloaded on drop.
    _library: Library,
    kernel_ptr: *const u8,
    kernel_len: usize,
    load_addr: u64,
    entry_addr: u64,
    version: u32,
}

// SAFETY: the kernel image pointer refers to read-only data of a library that stays loaded
// until Drop; nothing is mutated through it, so sharing across threads is sound.
unsafe impl Send for Krunfw {}
// SAFETY: see Send; every method only reads immutable data.
unsafe impl Sync for Krunfw {}

impl fmt::Debug for Krunfw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Krunfw")
            .field("version", &self.version)
            .field("kernel_len", &self.kernel_len)
            .field("load_addr", &format_args!("{:#x}", self.load_addr))
            .field("entry_addr", &format_args!("{:#x}", self.entry_addr))
            .finish()
    }
}

fn load() -> Result<Library, KrunfwError> {
    // SAFETY: libkrunfw has no initialisers with preconditions; RTLD_NOW resolves every
    // symbol now so a broken library fails here, not in the middle of a VM start.
    unsafe { Library::open(Some(KRUNFW_SONAME), RTLD_NOW | RTLD_LOCAL) }
        .map_err(|e| KrunfwError::Open(e.to_string()))
}

fn get_kernel(library: &Library) -> Result<Symbol<GetKernelFn>, KrunfwError> {
    // SAFETY: libkrunfw exports this symbol with exactly the C signature of GetKernelFn.
    unsafe { library.get(b"krunfw_get_kernel\0") }
        .map_err(|_| KrunfwError::Symbol("krunfw_get_kernel"))
}

fn get_version(library: &Library) -> Result<Symbol<GetVersionFn>, KrunfwError> {
    // SAFETY: libkrunfw exports this symbol with exactly the C signature of GetVersionFn.
    unsafe { library.get(b"krunfw_get_version\0") }
        .map_err(|_| KrunfwError::Symbol("krunfw_get_version"))
}

impl Krunfw {
    /// Loads the library from the normal library search path.
    pub fn open() -> Result<Krunfw, KrunfwError> {
        let library = load()?;
        let get_kernel = get_kernel(&library)?;
        let get_version = get_version(&library)?;
        let (mut load, mut entry, mut size) = (0usize, 0usize, 0usize);
        // SAFETY: the three out-pointers point to live usize locals.
        let ptr = unsafe { get_kernel(&mut load, &mut entry, &mut size) };
        // SAFETY: takes no arguments, returns a plain integer.
        let version = unsafe { get_version() };
        if ptr.is_null() || size == 0 {
            return Err(KrunfwError::EmptyKernel);
        }
        Ok(Krunfw {
            _library: library,
            kernel_ptr: ptr.cast(),
            kernel_len: size,
            load_addr: load as u64,
            entry_addr: entry as u64,
            version,
        })
    }

    /// The kernel image, borrowed from the loaded library (no copy).
    pub fn kernel(&self) -> KernelImage<'_> {
        // SAFETY: libkrunfw guarantees `kernel_len` readable bytes at `kernel_ptr` in its
        // read-only data, alive as long as the library is loaded, i.e. as long as `self`.
        let bytes = unsafe { std::slice::from_raw_parts(self.kernel_ptr, self.kernel_len) };
        KernelImage {
            bytes,
            load_addr: self.load_addr,
            entry_addr: self.entry_addr,
        }
    }

    /// `krunfw_get_version()`.
    pub fn version(&self) -> u32 {
        self.version
    }
}
