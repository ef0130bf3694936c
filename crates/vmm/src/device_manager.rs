//! Virtio-mmio devices: one slot (4 KiB of registers, one IRQ) per device, wired to KVM with
//! an ioeventfd per queue and an irqfd, and the MMIO bus vCPUs dispatch guest accesses to.

use std::sync::Mutex;

use devices::mmio::{MmioTransport, QUEUE_NOTIFY_OFFSET};
use devices::virtio::VirtioDevice;
use devices::GuestMemory;
use kvm_ioctls::{IoEventAddress, VmFd};

use crate::cmdline::MmioDeviceArg;
use crate::config;
use crate::layout::{mmio_slot_base, mmio_slot_irq, MMIO_DEVICE_SIZE};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("no IRQ left for virtio-mmio device #{0}")]
    NoIrq(u32),
    #[error("cannot create the virtio-mmio transport of {kind}")]
    Transport {
        kind: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot register the queue {queue} ioeventfd of {kind}")]
    IoEvent {
        kind: &'static str,
        queue: usize,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot register the irqfd of {kind} (IRQ {irq})")]
    IrqFd {
        kind: &'static str,
        irq: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot create the virtio-fs device {tag:?} for {}", config::Shown(&.path.to_string_lossy()))]
    Fs {
        tag: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the console's {what}")]
    ConsoleIo {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

struct MmioSlot {
    base: u64,
    kind: &'static str,
    transport: Mutex<MmioTransport>,
}

/// Guest physical MMIO space: the virtio-mmio slots, looked up by address.
#[derive(Default)]
pub struct MmioBus {
    slots: Vec<MmioSlot>,
}

impl MmioBus {
    fn find(&self, addr: u64) -> Option<(&MmioSlot, u64)> {
        self.slots
            .iter()
            .find(|s| addr >= s.base && addr - s.base < MMIO_DEVICE_SIZE)
            .map(|s| (s, addr - s.base))
    }

    /// A guest read; addresses without a device read as all ones.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.find(addr) {
            Some((slot, offset)) => lock(&slot.transport).read(offset, data),
            None => {
                log::debug!("MMIO read of {} bytes at unmapped {addr:#x}", data.len());
                data.fill(0xff);
            }
        }
    }

    /// A guest write; addresses without a device ignore it.
    pub fn write(&self, addr: u64, data: &[u8]) {
        match self.find(addr) {
            Some((slot, offset)) => lock(&slot.transport).write(offset, data),
            None => log::debug!("MMIO write of {} bytes at unmapped {addr:#x}", data.len()),
        }
    }

    /// Ends every device: output the guest already wrote is flushed, workers are joined.
    pub fn shutdown(&self) {
        for slot in &self.slots {
            log::debug!("shutting down {} at {:#x}", slot.kind, slot.base);
            lock(&slot.transport).shutdown();
        }
    }
}

/// A poisoned slot lock only means another vCPU panicked mid-access; the register state is
/// still the transport's to judge, and shutdown must go on.
fn lock(m: &Mutex<MmioTransport>) -> std::sync::MutexGuard<'_, MmioTransport> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Builds the VM's devices: slots are handed out in creation order.
pub struct DeviceManager<'a> {
    vm: &'a VmFd,
    mem: GuestMemory,
    bus: MmioBus,
    cmdline: Vec<MmioDeviceArg>,
    raw_modes: Vec<crate::terminal::RawMode>,
}

impl<'a> DeviceManager<'a> {
    pub fn new(vm: &'a VmFd, mem: GuestMemory) -> DeviceManager<'a> {
        DeviceManager {
            vm,
            mem,
            bus: MmioBus::default(),
            cmdline: Vec::new(),
            raw_modes: Vec::new(),
        }
    }

    /// Puts `device` in the next slot: transport, ioeventfds, irqfd, command line entry.
    fn add_virtio_mmio(
        &mut self,
        kind: &'static str,
        device: Box<dyn VirtioDevice>,
    ) -> Result<(), DeviceError> {
        let index = self.bus.slots.len() as u32;
        let irq = mmio_slot_irq(index).ok_or(DeviceError::NoIrq(index))?;
        let base = mmio_slot_base(index);
        let transport = MmioTransport::new(device, self.mem.clone())
            .map_err(|source| DeviceError::Transport { kind, source })?;
        for (queue, evt) in transport.queue_notify_evts().iter().enumerate() {
            let addr = IoEventAddress::Mmio(base + QUEUE_NOTIFY_OFFSET);
            self.vm
                .register_ioevent(evt, &addr, queue as u32)
                .map_err(|source| DeviceError::IoEvent {
                    kind,
                    queue,
                    source,
                })?;
        }
        self.vm
            .register_irqfd(transport.irq_evt(), irq)
            .map_err(|source| DeviceError::IrqFd { kind, irq, source })?;
        log::debug!("{kind} at {base:#x} IRQ {irq}");
        self.bus.slots.push(MmioSlot {
            base,
            kind,
            transport: Mutex::new(transport),
        });
        self.cmdline.push(MmioDeviceArg { base, irq });
        Ok(())
    }

    /// The implicit virtio console (upstream's automatic ports over stdio, or port 0 to
    /// `krun_set_console_output`'s file).
    pub fn add_console(&mut self, console: &config::Console) -> Result<(), DeviceError> {
        let built = crate::consoles::default_console(console.output.as_deref(), (0, 1, 2))
            .map_err(|source| DeviceError::ConsoleIo {
                what: "stdio",
                source,
            })?;
        self.raw_modes.extend(built.raw_modes);
        self.add_virtio_mmio("console", Box::new(built.device))
    }

    /// A console the caller added with `krun_add_virtio_console_*`.
    pub fn add_explicit_console(
        &mut self,
        console: &config::VirtioConsole,
    ) -> Result<(), DeviceError> {
        let built = crate::consoles::explicit_console(console).map_err(|source| {
            DeviceError::ConsoleIo {
                what: "fds",
                source,
            }
        })?;
        self.raw_modes.extend(built.raw_modes);
        self.add_virtio_mmio("console", Box::new(built.device))
    }

    /// The terminals the consoles put in raw mode; restored when they are dropped.
    pub fn take_raw_modes(&mut self) -> Vec<crate::terminal::RawMode> {
        std::mem::take(&mut self.raw_modes)
    }

    /// A virtio-fs device serving `share`; `root_files` and `exit_code` are the root share's.
    pub fn add_fs(
        &mut self,
        share: &config::FsShare,
        root_files: Vec<devices::fs::VirtualFile>,
        exit_code: Option<devices::fs::ExitCode>,
    ) -> Result<(), DeviceError> {
        let device = devices::fs::Fs::new(devices::fs::FsConfig {
            tag: share.tag.clone(),
            path: share.path.clone(),
            read_only: share.read_only,
            root_files,
            exit_code,
        })
        .map_err(|source| DeviceError::Fs {
            tag: share.tag.clone(),
            path: share.path.clone(),
            source,
        })?;
        self.add_virtio_mmio("fs", Box::new(device))
    }

    /// The virtio-vsock device: unix-socket bridges, and TSI as `cfg.tsi_features` says.
    pub fn add_vsock(&mut self, cfg: devices::vsock::VsockConfig) -> Result<(), DeviceError> {
        log::debug!(
            "vsock: guest CID {}, TSI features {:#x}, {} bridged ports, port map {:?}",
            cfg.guest_cid,
            cfg.tsi_features,
            cfg.ports.len(),
            cfg.port_map
        );
        self.add_virtio_mmio("vsock", Box::new(devices::vsock::Vsock::new(cfg)))
    }

    /// The `virtio_mmio.device=` entries, in slot order.
    pub fn cmdline_args(&self) -> &[MmioDeviceArg] {
        &self.cmdline
    }

    /// Hands the finished bus to the vCPUs.
    pub fn into_bus(self) -> MmioBus {
        self.bus
    }
}
