//! The exported `krun_*` functions, one module per API area. Every export runs its body in
//! [`crate::ffi::guard`]; the doc comments here become the comments in `include/libkrun.h`.

pub mod console;
pub mod disk;
pub mod exec;
pub mod fs;
pub mod log;
pub mod net;
pub mod query;
pub mod unsupported;
pub mod vm;
pub mod vsock;
