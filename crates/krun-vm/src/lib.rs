//! Run a process in a KVM microVM from Rust, and get its exit status back.
//!
//! This is libkrun's safe Rust API (the same VMM as `libkrun.so.1`): describe the VM with a
//! [`VmBuilder`], whose setters check each value and whose [`build`](VmBuilder::build)
//! returns a typed [`BuildError`]; then [`Vm::run`] boots libkrunfw's kernel, runs the
//! workload with the embedded init and returns its [`ExitStatus`]. `run` never exits the
//! process: when it returns, every thread it started is joined and every fd, mapping and
//! terminal mode is released, so a program can run VM after VM, or several at once on
//! different threads. A [`VmHandle`] stops a VM from another thread (at once, or by asking
//! the guest's init to end the workload) and waits for it with a timeout.
//!
//! ```no_run
//! use krun_vm::{ExitStatus, VmBuilder};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let vm = VmBuilder::new()
//!         .machine(|m| m.vcpus(1).memory_mib(256))
//!         .fs(|fs| fs.root("/srv/rootfs"))
//!         .exec(|e| e.path("/bin/sh").args(["-c", "echo hello; exit 7"]))
//!         .build()?;
//!     let status = vm.run()?;
//!     assert_eq!(status, ExitStatus::Exited(7));
//!     println!("the guest {status}; this process goes on");
//!     Ok(())
//! }
//! ```
//!
//! Requirements at run time: read/write access to `/dev/kvm`, and `libkrunfw.so.5` (the guest
//! kernel) on the library path. The crate logs through the [`log`] facade and never prints.
//!
//! Devices: virtio-blk disks ([`VmBuilder::disk`], raw, qcow2 or vmdk, or the root), virtio-net
//! interfaces ([`VmBuilder::net`]: passt's unix stream, datagram proxies, taps), virtual
//! files and directories on any share, an overlay root of image layers.
//!
//! Custom backends: a share can be served by the program's own code ([`FsBackend`], with
//! [`FsBuilder::backend`]), and an interface's far end can be a peer in Rust
//! ([`FrameBackend`], with [`NetBuilder::backend`]): Ethernet frames in and out. The
//! example `backends_lab` (crates/krun-vm/examples) has an in-memory tree the guest reads
//! and writes, and a peer that answers the guest's ARP and ping.
//!
//! ```no_run
//! use std::io;
//! use std::sync::Arc;
//! use krun_vm::{DirItem, FrameBackend, FrameSender, FsBackend, Nic, NodeAttr, NodeKind};
//! use krun_vm::{VmBuilder, ROOT_NODE};
//!
//! /// A share holding one read-only file, `/motd`, as node 2.
//! struct Motd;
//!
//! const MOTD: &[u8] = b"served from Rust\n";
//!
//! impl FsBackend for Motd {
//!     fn lookup(&self, parent: u64, name: &str) -> io::Result<NodeAttr> {
//!         match (parent, name) {
//!             (ROOT_NODE, "motd") => self.getattr(2),
//!             _ => Err(io::Error::from_raw_os_error(2)), // ENOENT
//!         }
//!     }
//!     fn getattr(&self, node: u64) -> io::Result<NodeAttr> {
//!         let (kind, size, perm) = match node {
//!             ROOT_NODE => (NodeKind::Dir, 0, 0o755),
//!             2 => (NodeKind::File, MOTD.len() as u64, 0o444),
//!             _ => return Err(io::Error::from_raw_os_error(2)),
//!         };
//!         Ok(NodeAttr { node, kind, size, perm })
//!     }
//!     fn read_dir(&self, _dir: u64) -> io::Result<Vec<DirItem>> {
//!         Ok(vec![DirItem { name: "motd".into(), node: 2, kind: NodeKind::File }])
//!     }
//!     fn read(&self, _node: u64, offset: u64, size: u32) -> io::Result<Vec<u8>> {
//!         let start = (offset as usize).min(MOTD.len());
//!         Ok(MOTD[start..].iter().take(size as usize).copied().collect())
//!     }
//! }
//!
//! /// A peer that sends every frame straight back to the guest.
//! struct Echo(Option<FrameSender>);
//!
//! impl FrameBackend for Echo {
//!     fn start(&mut self, to_guest: FrameSender) {
//!         self.0 = Some(to_guest);
//!     }
//!     fn receive(&mut self, frame: &[u8]) {
//!         if let Some(tx) = &self.0 {
//!             let _ = tx.send(frame); // a full queue drops the frame
//!         }
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let vm = VmBuilder::new()
//!     .fs(|fs| fs.root("/srv/rootfs").backend("motd", Arc::new(Motd)))
//!     .net(|n| n.backend(Echo(None), Nic::new([0x02, 0, 0, 0, 0, 1])))
//!     .exec(|e| e.path("/bin/sh").args(["-c", "mount -t virtiofs motd /mnt && cat /mnt/motd"]))
//!     .build()?;
//! vm.run()?;
//! # Ok(())
//! # }
//! ```
//!
//! Process-wide settings of the C API are left out on purpose: `krun_setuid`/`krun_setgid`
//! switch the whole process's ids, which a library running several VMs must not do.

#![deny(missing_docs)]

mod builder;
mod error;
mod vm;

pub use builder::{
    ConsoleBuilder, DiskBuilder, DiskFormat, DiskOptions, DiskSync, ExecBuilder, FsBuilder,
    KernelBuilder, KernelFormat, MachineBuilder, NetBuilder, Nic, Ownership, ShareOptions, Tsi,
    TsiReach, VmBuilder, VsockBuilder, ROOT_TAG,
};
pub use devices::fs::{DirItem, FsBackend, NodeAttr, NodeKind, ROOT_NODE};
pub use devices::net::{
    FrameBackend, FrameSender, SendError, FRAME_QUEUE_LEN, MAX_FRAME_LEN, MIN_FRAME_LEN,
};
pub use error::{BuildError, VmError};
pub use vm::{ExitStatus, Outcome, Vm, VmHandle};

/// The guest init (a static x86_64 executable) served as `/init.krun` on the root share
/// unless [`KernelBuilder::embedded_init`] turns it off. `libkrun.so.1` embeds the same one.
pub static GUEST_INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/init.krun"));
