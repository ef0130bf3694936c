//! Virtio-mmio devices: one slot (4 KiB of registers, one IRQ) per device, wired to KVM with
//! an ioeventfd per queue and an irqfd, and the MMIO bus vCPUs dispatch guest accesses to.

use std::sync::{Arc, Mutex};

use devices::mmio::{MmioTransport, QUEUE_NOTIFY_OFFSET};
use devices::virtio::{FaultSink, VirtioDevice};
use devices::GuestMemory;
use kvm_ioctls::{IoEventAddress, VmFd};

use crate::cmdline::MmioDeviceArg;
use crate::config;
use crate::dax::{DaxError, DaxRegion};
use crate::irqchip::{IrqChip, SplitIoApic};
use crate::layout::{mmio_slot_base, mmio_slot_irq, IOAPIC_START, MMIO_DEVICE_SIZE};
use devices::legacy::ioapic;
use vmm_sys_util::eventfd::EventFd;

/// DAX windows end below 1 TiB: guest physical addresses past the 40 bits every x86_64
/// host CPU offers would not be reachable.
const MAX_DAX_END: u64 = 1 << 40;

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
    #[error("cannot create the virtio-fs device {tag:?} for {}", config::Shown(&.path.as_ref().map_or("no host directory".into(), |p| p.to_string_lossy())))]
    Fs {
        tag: String,
        path: Option<std::path::PathBuf>,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the DAX window of virtio-fs {tag:?}")]
    Dax {
        tag: String,
        #[source]
        source: DaxError,
    },
    #[error("cannot open disk {id:?} ({})", config::Shown(&.path.to_string_lossy()))]
    Block {
        id: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up virtio-net interface {index}")]
    Net {
        index: usize,
        #[source]
        source: crate::nics::NicError,
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
    /// The split irqchip's IOAPIC at [`IOAPIC_START`] (None: KVM's own decodes it).
    ioapic: Option<SplitIoApic>,
}

impl MmioBus {
    fn find(&self, addr: u64) -> Option<(&MmioSlot, u64)> {
        self.slots
            .iter()
            .find(|s| addr >= s.base && addr - s.base < MMIO_DEVICE_SIZE)
            .map(|s| (s, addr - s.base))
    }

    /// The IOAPIC's register offset when `addr` is in its window and it is ours.
    fn ioapic_at(&self, addr: u64) -> Option<(&SplitIoApic, u64)> {
        let ioapic = self.ioapic.as_ref()?;
        let offset = addr.checked_sub(IOAPIC_START)?;
        (offset < ioapic::MMIO_SIZE).then_some((ioapic, offset))
    }

    /// A guest read; addresses without a device read as all ones.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        if let Some((ioapic, offset)) = self.ioapic_at(addr) {
            return lock(ioapic).read(offset, data);
        }
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
        if let Some((ioapic, offset)) = self.ioapic_at(addr) {
            return lock(ioapic).write(offset, data);
        }
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
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hands out virtio-mmio slots (a 4 KiB MMIO window and an IRQ) one by one, in the order
/// devices are added; nothing counts them ahead.
#[derive(Debug, Default)]
struct SlotAllocator {
    next: u32,
}

impl SlotAllocator {
    /// The next free slot, or `NoIrq` once the IOAPIC has no pin left.
    fn allocate(&mut self) -> Result<MmioDeviceArg, DeviceError> {
        let index = self.next;
        let irq = mmio_slot_irq(index).ok_or(DeviceError::NoIrq(index))?;
        self.next += 1;
        Ok(MmioDeviceArg {
            base: mmio_slot_base(index),
            irq,
        })
    }
}

/// Builds the VM's devices: slots are handed out in creation order.
pub struct DeviceManager<'a> {
    vm: &'a VmFd,
    /// Where device interrupts go: irqfds on KVM's IOAPIC, or the split irqchip's.
    irqchip: IrqChip,
    mem: GuestMemory,
    slots: SlotAllocator,
    bus: MmioBus,
    cmdline: Vec<MmioDeviceArg>,
    raw_modes: Vec<crate::terminal::RawMode>,
    signals: Vec<crate::terminal::SignalHandlers>,
    console_tails: Vec<devices::console::ConsoleTail>,
    /// The DAX windows made so far, and where the next one goes in guest physical space.
    dax_regions: Vec<Arc<DaxRegion>>,
    next_dax_addr: u64,
    /// Where every device's worker reports a fatal failure (the VM's stop channel).
    faults: Arc<dyn FaultSink>,
}

impl<'a> DeviceManager<'a> {
    /// `dax_start` is the guest address of the first DAX window (above RAM and MMIO).
    pub fn new(
        vm: &'a VmFd,
        irqchip: IrqChip,
        mem: GuestMemory,
        dax_start: u64,
        faults: Arc<dyn FaultSink>,
    ) -> DeviceManager<'a> {
        DeviceManager {
            vm,
            irqchip,
            dax_regions: Vec::new(),
            next_dax_addr: dax_start,
            mem,
            faults,
            slots: SlotAllocator::default(),
            bus: MmioBus::default(),
            cmdline: Vec::new(),
            raw_modes: Vec::new(),
            signals: Vec::new(),
            console_tails: Vec::new(),
        }
    }

    /// Puts `device` in the next slot: transport, ioeventfds, irqfd, command line entry.
    fn add_virtio_mmio(
        &mut self,
        kind: &'static str,
        device: Box<dyn VirtioDevice>,
    ) -> Result<(), DeviceError> {
        let MmioDeviceArg { base, irq } = self.slots.allocate()?;
        let transport = MmioTransport::new(device, self.mem.clone())
            .map_err(|source| DeviceError::Transport { kind, source })?
            .with_faults(self.faults.clone());
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
        self.connect_irq(transport.irq_evt(), irq)
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
        self.signals.extend(built.signals);
        self.console_tails.extend(built.log_tail);
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
        self.signals.extend(built.signals);
        self.console_tails.extend(built.log_tail);
        self.add_virtio_mmio("console", Box::new(built.device))
    }

    /// The console carrying `krun_get_shutdown_eventfd`'s requests: one named port whose host
    /// input is the eventfd (the guest reads each write as the 8-byte counter). Only read
    /// while the guest has the port open, so an early request waits in the counter.
    pub fn add_shutdown_port(&mut self, evt: &std::os::fd::OwnedFd) -> Result<(), DeviceError> {
        let input = evt.try_clone().map_err(|source| DeviceError::ConsoleIo {
            what: "shutdown eventfd",
            source,
        })?;
        let port = devices::console::Port::named(
            contract::PORT_SHUTDOWN,
            Some(Box::new(devices::console::FdInput::new(input))),
            None,
        );
        let device = devices::console::Console::new(vec![port]);
        self.add_virtio_mmio("console", Box::new(device))
    }

    /// The terminals the consoles put in raw mode (restored when they are dropped), the
    /// signal handlers the consoles need while the VM runs (put back when dropped) and the
    /// last lines of the consoles that log the guest's output.
    pub fn take_host_terminal(&mut self) -> crate::consoles::HostTerminal {
        crate::consoles::HostTerminal {
            raw_modes: std::mem::take(&mut self.raw_modes),
            signals: std::mem::take(&mut self.signals),
            console_tails: std::mem::take(&mut self.console_tails),
        }
    }

    /// The DAX windows, which must outlive the VM fd (their KVM slots point into them).
    pub fn take_dax_regions(&mut self) -> Vec<Arc<DaxRegion>> {
        std::mem::take(&mut self.dax_regions)
    }

    /// A DAX window of (at least) `len` bytes: reserved, placed after the previous one and
    /// registered as the next KVM memory slot after guest RAM's.
    fn add_dax_window(&mut self, tag: &str, len: u64) -> Result<Arc<DaxRegion>, DeviceError> {
        let dax_error = |source| DeviceError::Dax {
            tag: tag.to_string(),
            source,
        };
        let len = crate::dax::window_len(len).ok_or(dax_error(DaxError::TooLarge(len)))?;
        let base = self.next_dax_addr;
        let end = base
            .checked_add(len)
            .filter(|&end| end <= MAX_DAX_END)
            .ok_or(dax_error(DaxError::TooLarge(len)))?;
        let region = DaxRegion::new(base, len).map_err(dax_error)?;
        let ram_slots = vm_memory::GuestMemory::num_regions(&self.mem);
        let slot = u32::try_from(ram_slots + self.dax_regions.len())
            .map_err(|_| dax_error(DaxError::TooLarge(len)))?;
        region.register(self.vm, slot).map_err(dax_error)?;
        log::debug!("fs({tag}): DAX window of {len:#x} bytes at {base:#x} (slot {slot})");
        self.next_dax_addr = end;
        let region = Arc::new(region);
        self.dax_regions.push(region.clone());
        Ok(region)
    }

    /// A virtio-fs device serving `share` (a host directory, or NullFs when it has none) with
    /// the virtual entries of `entries`, which the caller may keep adding to until the guest
    /// starts; `exit_code` is the root share's. A share with a `shm_size` (the root of
    /// `krun_set_root`: 512 MiB, as upstream) gets a DAX window of that size.
    pub fn add_fs(
        &mut self,
        share: &config::FsShare,
        entries: devices::fs::VirtualEntries,
        exit_code: Option<devices::fs::ExitCode>,
    ) -> Result<(), DeviceError> {
        let dax: Option<Arc<dyn devices::fs::DaxWindow>> = if share.shm_size != 0 {
            Some(self.add_dax_window(&share.tag, share.shm_size)?)
        } else {
            None
        };
        let device = devices::fs::Fs::new(devices::fs::FsConfig {
            tag: share.tag.clone(),
            path: share.path.clone(),
            read_only: share.read_only,
            entries,
            exit_code,
            simplified: share.semantics == config::FsSemantics::LinuxSimplified,
            layers: share.layers.clone(),
            custom: share.backend.clone(),
            dax,
        })
        .map_err(|source| DeviceError::Fs {
            tag: share.tag.clone(),
            path: share.path.clone(),
            source,
        })?;
        self.add_virtio_mmio("fs", Box::new(device))
    }

    /// A virtio-blk device for `disk`; the image is opened (and, for qcow2, its header and
    /// backing chain checked) here, before the guest runs.
    pub fn add_block(&mut self, disk: &config::Disk) -> Result<(), DeviceError> {
        use devices::block::{Format, SyncMode};
        let opts = devices::block::DiskOptions {
            path: disk.path.clone(),
            format: match disk.format {
                config::DiskFormat::Raw => Format::Raw,
                config::DiskFormat::Qcow2 => Format::Qcow2,
                config::DiskFormat::Vmdk => Format::Vmdk,
            },
            read_only: disk.read_only,
            direct_io: disk.direct_io,
        };
        let backend = devices::block::open_disk(&opts).map_err(|source| DeviceError::Block {
            id: disk.id.clone(),
            path: disk.path.clone(),
            source,
        })?;
        log::debug!(
            "disk {:?}: {} bytes, {:?}, read-only {}, direct {}, sync {:?}",
            disk.id,
            backend.size(),
            disk.format,
            disk.read_only,
            disk.direct_io,
            disk.sync
        );
        // vmdk images are served read-only (the backend warned if rw was asked for): the
        // guest sees a read-only disk rather than failing writes.
        let read_only = disk.read_only || disk.format == config::DiskFormat::Vmdk;
        let device = devices::block::Block::new(devices::block::BlockConfig {
            id: disk.id.clone(),
            disk: backend,
            read_only,
            sync: match disk.sync {
                config::SyncMode::None => SyncMode::None,
                config::SyncMode::Relaxed => SyncMode::Relaxed,
                config::SyncMode::Full => SyncMode::Full,
            },
        });
        self.add_virtio_mmio("block", Box::new(device))
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

    /// The virtio-rng device upstream attaches to every VM: the guest's `/dev/hwrng` reads
    /// the host's getrandom at the default rate limit.
    pub fn add_rng(&mut self) -> Result<(), DeviceError> {
        let device = devices::rng::Rng::new(
            Box::new(devices::rng::GetRandom),
            devices::rng::RateLimit::default(),
        );
        self.add_virtio_mmio("rng", Box::new(device))
    }

    /// The virtio-balloon device upstream attaches to every VM: free page reporting gives
    /// the pages the guest frees back to the host (madvise, crate::free_pages).
    pub fn add_balloon(&mut self) -> Result<(), DeviceError> {
        let device = devices::balloon::Balloon::new(Box::new(crate::free_pages::Madvise::new()));
        self.add_virtio_mmio("balloon", Box::new(device))
    }

    /// virtio-net interface number `index` (eth`index`): its backend connected or opened.
    pub fn add_net(&mut self, index: usize, nic: &config::Net) -> Result<(), DeviceError> {
        let cfg =
            crate::nics::build(index, nic).map_err(|source| DeviceError::Net { index, source })?;
        log::debug!(
            "{}: {:?}, MAC {:02x?}, features {:#x}, flags {:#x}",
            cfg.id,
            nic.backend,
            nic.mac,
            nic.features,
            nic.flags
        );
        self.add_virtio_mmio("net", Box::new(devices::net::Net::new(cfg)))
    }

    /// The `virtio_mmio.device=` entries, in slot order.
    pub fn cmdline_args(&self) -> &[MmioDeviceArg] {
        &self.cmdline
    }

    /// Hands the finished bus to the vCPUs.
    /// Connects an interrupt source (a device's irqfd) to IOAPIC pin `pin`.
    pub fn connect_irq(&mut self, evt: &EventFd, pin: u32) -> Result<(), kvm_ioctls::Error> {
        self.irqchip.connect(self.vm, evt, pin)
    }

    /// The MMIO bus the vCPUs dispatch to: the devices' slots, and the split irqchip's IOAPIC
    /// (which keeps `vm` to change its routes).
    pub fn into_bus(mut self, vm: Arc<VmFd>) -> MmioBus {
        self.bus.ioapic = self.irqchip.into_ioapic(vm);
        self.bus
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_allocator_hands_out_windows_and_irqs_in_order_until_pins_run_out() {
        let mut slots = SlotAllocator::default();

        let handed: Vec<_> = std::iter::from_fn(|| slots.allocate().ok()).collect();
        let after = slots.allocate();

        let pins = (0..).map_while(mmio_slot_irq).count();
        assert_eq!(handed.len(), pins);
        for (i, slot) in handed.iter().enumerate() {
            let i = i as u32;
            assert_eq!(
                (slot.base, Some(slot.irq)),
                (mmio_slot_base(i), mmio_slot_irq(i))
            );
        }
        assert_eq!(handed[1].base - handed[0].base, MMIO_DEVICE_SIZE);
        assert!(matches!(after, Err(DeviceError::NoIrq(n)) if n as usize == pins));
    }
}
