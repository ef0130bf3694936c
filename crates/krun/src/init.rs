//! The guest init (`/init.krun`), built from the workspace's `init` crate by build.rs as a
//! static executable and embedded here, so a root directory needs no init of its own.

/// The init binary's bytes (a static x86_64 ELF executable).
pub static DEFAULT_INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/init.krun"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_init_is_elf() {
        assert!(DEFAULT_INIT.len() > 64);
        assert_eq!(&DEFAULT_INIT[..4], b"\x7fELF");
    }
}
