//! The guest init (`/init.krun`), built from the workspace's `init` crate as a static
//! executable and embedded by krun-vm, so a root directory needs no init of its own.

/// The init binary's bytes (a static x86_64 ELF executable).
pub static DEFAULT_INIT: &[u8] = krun_vm::GUEST_INIT;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_init_is_elf() {
        assert!(DEFAULT_INIT.len() > 64);
        assert_eq!(&DEFAULT_INIT[..4], b"\x7fELF");
    }
}
