//! The krun VMM: builds a KVM microVM from a [`VmConfig`] and runs it until the guest ends.
//!
//! This is the safe Rust API behind libkrun.so.1. Nothing here exits the process:
//! [`Vm::run`] joins every thread, closes every fd and returns the guest's exit status.

pub mod boot;
pub mod cmdline;
pub mod config;
mod consoles;
mod device_manager;
mod exits;
pub mod host;
pub mod krunfw;
pub mod layout;
mod memory;
mod pio;
pub mod process;
mod serial;
mod settings;
pub mod terminal;
mod vcpu;
pub mod vm;
pub mod vsock_plan;
pub mod workload;

pub use config::VmConfig;
pub use vm::{Vm, VmError};
