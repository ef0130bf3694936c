//! libkrunfw: the shared library that carries the guest kernel as ready-to-copy bytes.
//!
//! It is opened with `dlopen` as early as possible: crun creates the context before it
//! chroots into the container, where the library can no longer be found.

use std::ffi::{c_char, c_void, CStr};
use std::fmt;

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

/// An open libkrunfw. The library stays loaded while this value lives.
pub struct Krunfw {
    handle: *mut c_void,
    kernel_ptr: *const u8,
    kernel_len: usize,
    load_addr: u64,
    entry_addr: u64,
    version: u32,
}

// SAFETY: the handle and the kernel image pointer refer to read-only data of a library that
// stays loaded until Drop; nothing is mutated through them, so sharing across threads is sound.
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

fn dlerror_string() -> String {
    // SAFETY: dlerror returns NULL or a pointer to a NUL-terminated thread-local string that
    // stays valid until the next dl* call on this thread; we copy it out at once.
    let err = unsafe { libc::dlerror() };
    if err.is_null() {
        return "unknown dlopen error".to_string();
    }
    // SAFETY: non-NULL dlerror result is a valid C string (see above).
    unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned()
}

fn lookup(handle: *mut c_void, name: &'static CStr) -> Result<*mut c_void, KrunfwError> {
    // SAFETY: handle is a live dlopen handle and name a NUL-terminated string.
    let sym = unsafe { libc::dlsym(handle, name.as_ptr()) };
    if sym.is_null() {
        return Err(KrunfwError::Symbol(name.to_str().unwrap_or("?")));
    }
    Ok(sym)
}

impl Krunfw {
    /// Loads the library from the normal library search path.
    pub fn open() -> Result<Krunfw, KrunfwError> {
        let soname = c"libkrunfw.so.5";
        // SAFETY: soname is a valid C string; RTLD_NOW resolves every symbol now so a broken
        // library fails here, not in the middle of a VM start.
        let handle = unsafe { libc::dlopen(soname.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(KrunfwError::Open(dlerror_string()));
        }
        match Self::from_handle(handle) {
            Ok(k) => Ok(k),
            Err(e) => {
                close(handle);
                Err(e)
            }
        }
    }

    fn from_handle(handle: *mut c_void) -> Result<Krunfw, KrunfwError> {
        let get_kernel = lookup(handle, c"krunfw_get_kernel")?;
        let get_version = lookup(handle, c"krunfw_get_version")?;
        // SAFETY: libkrunfw exports these symbols with exactly these C signatures.
        let get_kernel: GetKernelFn =
            unsafe { std::mem::transmute::<*mut c_void, GetKernelFn>(get_kernel) };
        // SAFETY: as above.
        let get_version: GetVersionFn =
            unsafe { std::mem::transmute::<*mut c_void, GetVersionFn>(get_version) };
        let (mut load, mut entry, mut size) = (0usize, 0usize, 0usize);
        // SAFETY: the three out-pointers point to live usize locals.
        let ptr = unsafe { get_kernel(&mut load, &mut entry, &mut size) };
        // SAFETY: takes no arguments, returns a plain integer.
        let version = unsafe { get_version() };
        if ptr.is_null() || size == 0 {
            return Err(KrunfwError::EmptyKernel);
        }
        Ok(Krunfw {
            handle,
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

fn close(handle: *mut c_void) {
    // SAFETY: handle came from a successful dlopen and is closed once.
    unsafe { libc::dlclose(handle) };
}

impl Drop for Krunfw {
    fn drop(&mut self) {
        close(self.handle);
    }
}
