//! libkrun.so.1: the libkrun C ABI over the `vmm` crate.
//!
//! Every `krun_*` export lives in [`api`]; the context table in [`ctx`], the FFI helpers
//! and the C error type in [`ffi`], the mapping of the VMM's errors to errno in [`errno`]. Rust users should call `vmm` directly.

pub mod api;
pub mod ctx;
pub mod errno;
pub mod ffi;
pub mod init;

pub use init::DEFAULT_INIT;
