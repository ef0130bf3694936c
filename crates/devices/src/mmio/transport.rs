//! `MmioTransport`: decodes the virtio-mmio registers and drives one [`VirtioDevice`].

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use log::{debug, error, warn};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::interrupt::MmioInterrupt;
use super::regs::{self, status};
use crate::virtio::features::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use crate::virtio::{
    ActivationContext, ActiveQueue, DeviceState, FaultSink, Interrupt, NoFaultSink, ShmRegion,
    VirtioDevice,
};
use crate::GuestMemory;

/// Status values the driver may move to from a given value, in the order of the
/// initialization sequence (virtio 1.2, section 3.1.1). Setting FAILED on top of the current
/// value and writing 0 (reset) are allowed from anywhere and handled separately.
const STATUS_TRANSITIONS: &[(u32, u32)] = &[
    (0, status::ACKNOWLEDGE),
    (status::ACKNOWLEDGE, status::ACKNOWLEDGE | status::DRIVER),
    (
        status::ACKNOWLEDGE | status::DRIVER,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    ),
    (
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
    ),
];

/// The status in which the driver negotiates features.
const STATUS_NEGOTIATING: u32 = status::ACKNOWLEDGE | status::DRIVER;
/// The status in which the driver sets up queues.
const STATUS_QUEUE_SETUP: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;

/// What the driver wrote for one queue. The `Queue` itself is only built, and checked
/// against guest memory, when the driver sets QueueReady, so a half-written setup is never
/// seen by the device.
#[derive(Debug, Clone)]
struct QueueConfig {
    max_size: u16,
    size: u16,
    desc_table: u64,
    avail_ring: u64,
    used_ring: u64,
    ready: bool,
}

impl QueueConfig {
    fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            desc_table: 0,
            avail_ring: 0,
            used_ring: 0,
            ready: false,
        }
    }

    /// Builds the queue this configuration describes; fails on a size that is zero, not a
    /// power of two or above the maximum, or on a misaligned ring address.
    fn build(&self, event_idx: bool) -> Result<Queue, virtio_queue::Error> {
        let mut queue = Queue::new(self.max_size)?;
        queue.try_set_size(self.size)?;
        queue.try_set_desc_table_address(GuestAddress(self.desc_table))?;
        queue.try_set_avail_ring_address(GuestAddress(self.avail_ring))?;
        queue.try_set_used_ring_address(GuestAddress(self.used_ring))?;
        queue.set_event_idx(event_idx);
        queue.set_ready(true);
        Ok(queue)
    }
}

/// Replaces the low or high half of a 64-bit register.
fn set_half(reg: &mut u64, value: u32, high: bool) {
    if high {
        *reg = (*reg & 0xffff_ffff) | (u64::from(value) << 32);
    } else {
        *reg = (*reg & !0xffff_ffff) | u64::from(value);
    }
}

/// One virtio-mmio device slot: the registers of a version 2 transport in front of a
/// [`VirtioDevice`].
///
/// The VMM keeps it in an `Arc<Mutex<_>>` per slot, forwards MMIO exits in the slot's
/// region to [`read`](Self::read)/[`write`](Self::write), registers each of
/// [`queue_notify_evts`](Self::queue_notify_evts) as an ioeventfd on
/// `base + QUEUE_NOTIFY_OFFSET` (datamatch = queue index) and [`irq_evt`](Self::irq_evt)
/// as an irqfd.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemory,
    queue_notify_evts: Vec<EventFd>,
    irq_evt: EventFd,
    interrupt: Arc<MmioInterrupt>,
    interrupt_status: Arc<AtomicU32>,
    config_generation: Arc<AtomicU32>,
    status: u32,
    /// Activated once DRIVER_OK reached the device; Failed when its activation failed (the
    /// status then carries DEVICE_NEEDS_RESET until the driver resets).
    state: DeviceState<()>,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    queue_sel: u32,
    queues: Vec<QueueConfig>,
    /// SHMSel: which shared memory region SHMLen/SHMBase describe.
    shm_sel: u32,
    /// Handed to the device at activation: where its worker reports a fatal failure.
    faults: Arc<dyn FaultSink>,
}

impl MmioTransport {
    /// Wraps `device`; creates one non-blocking notify eventfd per queue and the irq eventfd.
    pub fn new(device: Box<dyn VirtioDevice>, mem: GuestMemory) -> io::Result<Self> {
        let queues: Vec<QueueConfig> = device
            .queue_max_sizes()
            .iter()
            .map(|&max| QueueConfig::new(max))
            .collect();
        let queue_notify_evts = queues
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<io::Result<Vec<_>>>()?;
        let irq_evt = EventFd::new(EFD_NONBLOCK)?;
        let interrupt_status = Arc::new(AtomicU32::new(0));
        let config_generation = Arc::new(AtomicU32::new(0));
        let interrupt = Arc::new(MmioInterrupt::new(
            interrupt_status.clone(),
            config_generation.clone(),
            irq_evt.try_clone()?,
        ));
        Ok(Self {
            device,
            mem,
            queue_notify_evts,
            irq_evt,
            interrupt,
            interrupt_status,
            config_generation,
            status: 0,
            state: DeviceState::Inactive,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            queue_sel: 0,
            queues,
            shm_sel: 0,
            faults: Arc::new(NoFaultSink),
        })
    }

    /// Makes the device report a failure of its worker (a panic) to `faults` instead of
    /// only logging it; the VMM passes the sink that stops the VM.
    pub fn with_faults(mut self, faults: Arc<dyn FaultSink>) -> Self {
        self.faults = faults;
        self
    }

    /// One eventfd per queue, in queue order; the VMM registers each as an ioeventfd.
    pub fn queue_notify_evts(&self) -> &[EventFd] {
        &self.queue_notify_evts
    }

    /// The eventfd the VMM registers as the slot's irqfd.
    pub fn irq_evt(&self) -> &EventFd {
        &self.irq_evt
    }

    /// The virtio device id of the wrapped device (for logs and the kernel command line).
    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    /// The VM is ending: lets the device flush what the guest submitted and join its workers.
    pub fn shutdown(&mut self) {
        self.device.shutdown();
    }

    /// Handles a guest read of `data.len()` bytes at `offset` in the slot's region.
    /// Registers are 32-bit; any other access width to them reads as zero.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= regs::CONFIG_SPACE {
            self.device.read_config(offset - regs::CONFIG_SPACE, data);
            return;
        }
        if data.len() != 4 {
            debug!(
                "virtio-mmio: {}-byte read at {offset:#x} ignored",
                data.len()
            );
            data.fill(0);
            return;
        }
        let value = self.read_register(offset);
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// Handles a guest write of `data` at `offset` in the slot's region.
    /// Registers are 32-bit; writes of any other width to them are ignored.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= regs::CONFIG_SPACE {
            self.device.write_config(offset - regs::CONFIG_SPACE, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            debug!(
                "virtio-mmio: {}-byte write at {offset:#x} ignored",
                data.len()
            );
            return;
        };
        self.write_register(offset, u32::from_le_bytes(bytes));
    }

    fn read_register(&self, offset: u64) -> u32 {
        match offset {
            regs::MAGIC_VALUE_OFFSET => regs::MAGIC_VALUE,
            regs::VERSION_OFFSET => regs::VERSION,
            regs::DEVICE_ID_OFFSET => self.device.device_type(),
            regs::VENDOR_ID_OFFSET => regs::VENDOR_ID,
            regs::DEVICE_FEATURES => {
                let features = self.device.avail_features();
                match self.device_features_sel {
                    0 => features as u32,
                    1 => (features >> 32) as u32,
                    _ => 0,
                }
            }
            regs::QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size)),
            regs::QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready)),
            regs::INTERRUPT_STATUS => self.interrupt_status.load(Ordering::SeqCst),
            regs::STATUS => self.status,
            // A region the device lacks has a length of all ones (virtio 1.2, 4.2.2).
            regs::SHM_LEN_LOW => self.shm_region().map_or(u32::MAX, |r| r.len as u32),
            regs::SHM_LEN_HIGH => self.shm_region().map_or(u32::MAX, |r| (r.len >> 32) as u32),
            regs::SHM_BASE_LOW => self.shm_region().map_or(0, |r| r.base as u32),
            regs::SHM_BASE_HIGH => self.shm_region().map_or(0, |r| (r.base >> 32) as u32),
            regs::CONFIG_GENERATION => self.config_generation.load(Ordering::SeqCst),
            _ => {
                debug!("virtio-mmio: read of write-only or unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            regs::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            regs::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            regs::DRIVER_FEATURES => self.write_driver_features(value),
            regs::QUEUE_SEL => self.queue_sel = value,
            // A size that does not fit 16 bits becomes 0, which QueueReady rejects.
            regs::QUEUE_NUM => self.update_queue(|q| q.size = u16::try_from(value).unwrap_or(0)),
            regs::QUEUE_READY => self.write_queue_ready(value),
            regs::QUEUE_DESC_LOW => {
                self.update_queue(|q| set_half(&mut q.desc_table, value, false))
            }
            regs::QUEUE_DESC_HIGH => {
                self.update_queue(|q| set_half(&mut q.desc_table, value, true))
            }
            regs::QUEUE_DRIVER_LOW => {
                self.update_queue(|q| set_half(&mut q.avail_ring, value, false))
            }
            regs::QUEUE_DRIVER_HIGH => {
                self.update_queue(|q| set_half(&mut q.avail_ring, value, true))
            }
            regs::QUEUE_DEVICE_LOW => {
                self.update_queue(|q| set_half(&mut q.used_ring, value, false))
            }
            regs::QUEUE_DEVICE_HIGH => {
                self.update_queue(|q| set_half(&mut q.used_ring, value, true))
            }
            regs::QUEUE_NOTIFY => self.notify_queue(value),
            regs::INTERRUPT_ACK => {
                self.interrupt_status.fetch_and(!value, Ordering::SeqCst);
            }
            regs::STATUS => self.write_status(value),
            regs::SHM_SEL => self.shm_sel = value,
            _ => debug!("virtio-mmio: write of read-only or unknown register {offset:#x}"),
        }
    }

    fn shm_region(&self) -> Option<ShmRegion> {
        self.device.shm_region(self.shm_sel)
    }

    fn selected_queue(&self) -> Option<&QueueConfig> {
        self.queues.get(self.queue_sel as usize)
    }

    /// Applies a queue register write to the selected queue, but only while the driver sets
    /// up queues (after FEATURES_OK, before DRIVER_OK) and the queue is not yet enabled.
    fn update_queue(&mut self, f: impl FnOnce(&mut QueueConfig)) {
        if self.status != STATUS_QUEUE_SETUP {
            debug!(
                "virtio-mmio: queue register write in status {:#x} ignored",
                self.status
            );
            return;
        }
        match self.queues.get_mut(self.queue_sel as usize) {
            Some(q) if !q.ready => f(q),
            Some(_) => debug!(
                "virtio-mmio: queue {} is ready, write ignored",
                self.queue_sel
            ),
            None => debug!(
                "virtio-mmio: write to missing queue {} ignored",
                self.queue_sel
            ),
        }
    }

    /// QueueReady = 1 enables the queue only if its size and rings are valid for guest
    /// memory; otherwise it stays disabled and the driver reads back 0.
    fn write_queue_ready(&mut self, value: u32) {
        let Some(q) = self.queues.get_mut(self.queue_sel as usize) else {
            debug!(
                "virtio-mmio: QueueReady for missing queue {} ignored",
                self.queue_sel
            );
            return;
        };
        // Linux's vm_del_vq writes 0 and warns unless it reads 0 back, whatever the status;
        // an already active device keeps the queue it was handed until reset.
        if value == 0 {
            q.ready = false;
            return;
        }
        if self.status != STATUS_QUEUE_SETUP {
            debug!(
                "virtio-mmio: QueueReady in status {:#x} ignored",
                self.status
            );
            return;
        }
        let valid = match q.build(false) {
            Ok(queue) => queue.is_valid(&self.mem),
            Err(e) => {
                debug!("virtio-mmio: queue {} setup rejected: {e}", self.queue_sel);
                false
            }
        };
        q.ready = valid;
    }

    /// Driver features are taken only during negotiation; bits the device did not offer
    /// are dropped (virtio 1.2, section 2.2: the driver must not accept them).
    fn write_driver_features(&mut self, value: u32) {
        if self.status != STATUS_NEGOTIATING {
            debug!(
                "virtio-mmio: DriverFeatures in status {:#x} ignored",
                self.status
            );
            return;
        }
        let shift = match self.driver_features_sel {
            0 => 0,
            1 => 32,
            sel => {
                debug!("virtio-mmio: DriverFeatures page {sel} ignored");
                return;
            }
        };
        let page = u64::from(value) << shift;
        let offered = self.device.avail_features();
        if page & !offered != 0 {
            debug!(
                "virtio-mmio: driver acked features {:#x} the device did not offer",
                page & !offered
            );
        }
        self.acked_features = (self.acked_features & !(0xffff_ffff << shift)) | (page & offered);
    }

    /// A QueueNotify that reached us as an MMIO exit (no ioeventfd registered): forward it
    /// to the queue's eventfd so the device sees one kind of notification.
    fn notify_queue(&self, index: u32) {
        match self.queue_notify_evts.get(index as usize) {
            Some(evt) => {
                if let Err(e) = evt.write(1) {
                    error!("virtio-mmio: cannot notify queue {index}: {e}");
                }
            }
            None => debug!("virtio-mmio: notify for missing queue {index} ignored"),
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if value == self.status {
            return;
        }
        // The driver gives up: FAILED on top of whatever it read back.
        if value & status::FAILED != 0 && value & !status::FAILED == self.status {
            self.status = value;
            return;
        }
        if !STATUS_TRANSITIONS.contains(&(self.status, value)) {
            warn!(
                "virtio-mmio: device {}: illegal status change {:#x} -> {value:#x} ignored",
                self.device.device_type(),
                self.status
            );
            return;
        }
        if value & status::FEATURES_OK != 0 && self.status & status::FEATURES_OK == 0 {
            // Without VERSION_1 the driver speaks legacy virtio, which a version 2 transport
            // does not serve: leave FEATURES_OK clear so the driver sees the refusal.
            if self.acked_features & VIRTIO_F_VERSION_1 == 0 {
                warn!("virtio-mmio: driver did not accept VIRTIO_F_VERSION_1; FEATURES_OK refused");
                return;
            }
            self.device.set_acked_features(self.acked_features);
        }
        self.status = value;
        if value & status::DRIVER_OK != 0 {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let event_idx = self.acked_features & VIRTIO_RING_F_EVENT_IDX != 0;
        let mut queues = Vec::new();
        for (index, config) in self.queues.iter().enumerate() {
            if !config.ready {
                continue;
            }
            let built = config
                .build(event_idx)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
                .and_then(|queue| {
                    let notify_evt = self.queue_notify_evts[index].try_clone()?;
                    Ok(ActiveQueue { queue, notify_evt })
                });
            match built {
                Ok(queue) => queues.push(queue),
                Err(e) => {
                    error!("virtio-mmio: cannot hand queue {index} to the device: {e}");
                    self.needs_reset();
                    return;
                }
            }
        }
        let ctx = ActivationContext {
            mem: self.mem.clone(),
            queues,
            interrupt: self.interrupt.clone(),
            acked_features: self.acked_features,
            faults: self.faults.clone(),
        };
        match self.device.activate(ctx) {
            Ok(()) => self.state = DeviceState::Activated(()),
            Err(e) => {
                self.state = DeviceState::Failed;
                error!(
                    "virtio-mmio: device {} failed to activate: {e}",
                    self.device.device_type()
                );
                self.needs_reset();
            }
        }
    }

    /// Tells the driver the device is unusable until reset (virtio 1.2, section 2.1.2).
    fn needs_reset(&mut self) {
        self.status |= status::DEVICE_NEEDS_RESET;
        if let Err(e) = self.interrupt.signal_config() {
            error!("virtio-mmio: cannot signal DEVICE_NEEDS_RESET: {e}");
        }
    }

    /// Status 0: the device stops using the queues and every register returns to its
    /// initial value (virtio 1.2, section 2.4).
    fn reset(&mut self) {
        if self.state.is_activated() && !self.device.reset() {
            warn!(
                "virtio-mmio: device {} cannot be reset",
                self.device.device_type()
            );
            self.status = status::DEVICE_NEEDS_RESET;
            return;
        }
        self.state = DeviceState::Inactive;
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.acked_features = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            *q = QueueConfig::new(q.max_size);
        }
        self.interrupt_status.store(0, Ordering::SeqCst);
        // Drain notifications the old queues left so the next activation starts clean.
        for evt in &self.queue_notify_evts {
            let _ = evt.read();
        }
    }
}
