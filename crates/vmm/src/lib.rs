//! The krun VMM: builds a KVM microVM from a [`VmConfig`] and runs it until the guest ends.
//!
//! This is the safe Rust API behind libkrun.so.1. Nothing here exits the process:
//! [`Vm::run`] joins every thread, closes every fd and returns the guest's exit status.

mod block_root;
pub mod boot;
pub mod cmdline;
pub mod config;
mod consoles;
mod dax;
mod device_manager;
mod exits;
mod free_pages;
pub mod host;
mod irqchip;
pub mod kernel;
pub mod krunfw;
pub mod layout;
mod memory;
mod nics;
mod pio;
pub mod process;
mod serial;
mod settings;
pub mod stop;
mod tap;
pub mod terminal;
mod vcpu;
pub mod vm;
pub mod vsock_plan;
pub mod workload;

pub use config::VmConfig;
pub use dax::DaxError;
pub use device_manager::DeviceError;
/// Why a virtual entry of a virtio-fs share was refused (in [`VmError::VirtualEntry`]).
pub use devices::fs::VirtualEntryError;
pub use memory::MemoryError;
pub use stop::StopHandle;
pub use vcpu::{InternalError, VcpuError};
pub use vm::{GuestEndReport, RunEnd, Vm, VmError};
