//! Returning reported guest pages to the host: the [`FreePages`] trait. The real
//! implementation (madvise on the guest RAM mapping) lives in crates/vmm, which owns the
//! mappings and their unsafe code; tests use a recording fake.

use std::io;

use vm_memory::GuestAddress;

use crate::GuestMemory;

/// Gives the host the memory behind guest pages the guest no longer uses.
pub trait FreePages: Send + 'static {
    /// The guest reported `[addr, addr + len)` free. The device checked that the whole range
    /// lies in `mem`; an implementation still must not touch anything outside it. After the
    /// call the guest may reuse the pages at any time and must find them readable and
    /// writable (their content is undefined: zero for anonymous RAM). Returns how many bytes
    /// were given back (whole host pages inside the range).
    fn discard(&mut self, mem: &GuestMemory, addr: GuestAddress, len: u64) -> io::Result<u64>;
}
