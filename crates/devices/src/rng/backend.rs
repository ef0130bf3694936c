//! Where the random bytes come from: the [`Entropy`] trait and the host's getrandom.

use std::io;

/// A source of random bytes for the guest.
pub trait Entropy: Send + 'static {
    /// Fills all of `buf`. An error leaves `buf` unspecified; the request is then answered
    /// with no bytes.
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<()>;
}

/// The host kernel's CSPRNG through getrandom(2): no file to open, so it works after the
/// caller (crun) chrooted into a root without `/dev/urandom`.
#[derive(Debug, Default, Clone, Copy)]
pub struct GetRandom;

impl Entropy for GetRandom {
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<()> {
        getrandom::fill(buf).map_err(|e| match e.raw_os_error() {
            Some(errno) => io::Error::from_raw_os_error(errno),
            None => io::Error::other(e.to_string()),
        })
    }
}
