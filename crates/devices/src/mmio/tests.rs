//! Register-level tests of the transport against a `DummyDevice`, playing the guest driver.

use std::sync::{Arc, Mutex};

use virtio_queue::QueueT;

use super::regs::{self, status};
use super::MmioTransport;
use crate::virtio::features::VIRTIO_F_VERSION_1;
use crate::virtio::{ActivateError, ActivationContext, Interrupt, ShmRegion, VirtioDevice};

const DUMMY_TYPE: u32 = 42;
const QUEUE_MAX: u16 = 16;
/// A feature in the low page and one in the high page besides VERSION_1.
const DUMMY_FEATURES: u64 = VIRTIO_F_VERSION_1 | (1 << 0) | (1 << 40);

#[derive(Default)]
struct DummyState {
    acked_features: Option<u64>,
    activations: usize,
    /// Size of each queue handed over at the last activation.
    queues: Vec<u16>,
    interrupt: Option<Arc<dyn Interrupt>>,
    resets: usize,
    shutdowns: usize,
    fail_activate: bool,
    config: [u8; 8],
    /// Shared memory region 0, if any.
    shm: Option<ShmRegion>,
}

struct DummyDevice {
    state: Arc<Mutex<DummyState>>,
}

impl VirtioDevice for DummyDevice {
    fn device_type(&self) -> u32 {
        DUMMY_TYPE
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_MAX, QUEUE_MAX]
    }
    fn avail_features(&self) -> u64 {
        DUMMY_FEATURES
    }
    fn set_acked_features(&mut self, features: u64) {
        self.state.lock().unwrap().acked_features = Some(features);
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let state = self.state.lock().unwrap();
        for (i, b) in data.iter_mut().enumerate() {
            *b = *state.config.get(offset as usize + i).unwrap_or(&0);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let mut state = self.state.lock().unwrap();
        for (i, b) in data.iter().enumerate() {
            if let Some(slot) = state.config.get_mut(offset as usize + i) {
                *slot = *b;
            }
        }
    }
    fn activate(&mut self, ctx: ActivationContext) -> Result<(), ActivateError> {
        let mut state = self.state.lock().unwrap();
        if state.fail_activate {
            return Err(ActivateError::QueueCount { need: 3, got: 2 });
        }
        state.activations += 1;
        state.queues = ctx.queues.iter().map(|q| q.queue.size()).collect();
        for q in &ctx.queues {
            q.notify_evt.write(1).unwrap();
        }
        state.interrupt = Some(ctx.interrupt);
        Ok(())
    }
    fn reset(&mut self) -> bool {
        let mut state = self.state.lock().unwrap();
        state.resets += 1;
        state.interrupt = None;
        true
    }
    fn shutdown(&mut self) {
        self.state.lock().unwrap().shutdowns += 1;
    }
    fn shm_region(&self, id: u32) -> Option<ShmRegion> {
        self.state.lock().unwrap().shm.filter(|_| id == 0)
    }
}

fn transport() -> (MmioTransport, Arc<Mutex<DummyState>>) {
    let mem = crate::test_support::guest_memory(0x10_0000);
    let state = Arc::new(Mutex::new(DummyState::default()));
    let device = DummyDevice {
        state: state.clone(),
    };
    (MmioTransport::new(Box::new(device), mem).unwrap(), state)
}

fn read(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut data = [0u8; 4];
    t.read(offset, &mut data);
    u32::from_le_bytes(data)
}

fn write(t: &mut MmioTransport, offset: u64, value: u32) {
    t.write(offset, &value.to_le_bytes());
}

/// Drives the driver side up to FEATURES_OK, acking every offered feature.
fn negotiate(t: &mut MmioTransport) {
    write(t, regs::STATUS, status::ACKNOWLEDGE);
    write(t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    for page in 0..2 {
        write(t, regs::DEVICE_FEATURES_SEL, page);
        let features = read(t, regs::DEVICE_FEATURES);
        write(t, regs::DRIVER_FEATURES_SEL, page);
        write(t, regs::DRIVER_FEATURES, features);
    }
    write(
        t,
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
}

/// Sets up queue `index` with `size` entries at a valid, aligned place in guest memory.
fn setup_queue(t: &mut MmioTransport, index: u32, size: u32) {
    let base = 0x1_0000 * (u64::from(index) + 1);
    write(t, regs::QUEUE_SEL, index);
    write(t, regs::QUEUE_NUM, size);
    write(t, regs::QUEUE_DESC_LOW, base as u32);
    write(t, regs::QUEUE_DESC_HIGH, 0);
    write(t, regs::QUEUE_DRIVER_LOW, (base + 0x1000) as u32);
    write(t, regs::QUEUE_DRIVER_HIGH, 0);
    write(t, regs::QUEUE_DEVICE_LOW, (base + 0x2000) as u32);
    write(t, regs::QUEUE_DEVICE_HIGH, 0);
    write(t, regs::QUEUE_READY, 1);
}

const ALL_OK: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;

fn activate(t: &mut MmioTransport) {
    negotiate(t);
    setup_queue(t, 0, 8);
    setup_queue(t, 1, 16);
    write(t, regs::STATUS, ALL_OK);
}

#[test]
fn transport_identity_registers_report_virtio_mmio_v2() {
    let (mut t, _) = transport();
    assert_eq!(read(&mut t, regs::MAGIC_VALUE_OFFSET), 0x7472_6976);
    assert_eq!(read(&mut t, regs::VERSION_OFFSET), 2);
    assert_eq!(read(&mut t, regs::DEVICE_ID_OFFSET), DUMMY_TYPE);
    assert_eq!(read(&mut t, regs::VENDOR_ID_OFFSET), regs::VENDOR_ID);
    assert_eq!(t.device_type(), DUMMY_TYPE);
    assert_eq!(t.queue_notify_evts().len(), 2);
    assert_eq!(read(&mut t, regs::SHM_LEN_LOW), u32::MAX);
}

#[test]
fn transport_shm_registers_describe_selected_region_and_all_ones_for_missing() {
    let (mut t, state) = transport();
    state.lock().unwrap().shm = Some(ShmRegion {
        base: 0x1_2345_6000,
        len: 0x2_0060_0000,
    });
    write(&mut t, regs::SHM_SEL, 0);
    assert_eq!(read(&mut t, regs::SHM_LEN_LOW), 0x0060_0000);
    assert_eq!(read(&mut t, regs::SHM_LEN_HIGH), 2);
    assert_eq!(read(&mut t, regs::SHM_BASE_LOW), 0x2345_6000);
    assert_eq!(read(&mut t, regs::SHM_BASE_HIGH), 1);
    write(&mut t, regs::SHM_SEL, 1);
    assert_eq!(read(&mut t, regs::SHM_LEN_LOW), u32::MAX);
    assert_eq!(read(&mut t, regs::SHM_LEN_HIGH), u32::MAX);
    assert_eq!(read(&mut t, regs::SHM_BASE_LOW), 0);
}

#[test]
fn transport_narrow_register_access_reads_zero_and_is_ignored() {
    let (mut t, _) = transport();
    let mut data = [0xffu8; 2];
    t.read(regs::MAGIC_VALUE_OFFSET, &mut data);
    assert_eq!(data, [0, 0]);
    t.write(regs::STATUS, &[status::ACKNOWLEDGE as u8]);
    assert_eq!(read(&mut t, regs::STATUS), 0);
}

#[test]
fn transport_device_features_paged_by_select() {
    let (mut t, _) = transport();
    write(&mut t, regs::DEVICE_FEATURES_SEL, 0);
    assert_eq!(read(&mut t, regs::DEVICE_FEATURES), DUMMY_FEATURES as u32);
    write(&mut t, regs::DEVICE_FEATURES_SEL, 1);
    assert_eq!(
        read(&mut t, regs::DEVICE_FEATURES),
        (DUMMY_FEATURES >> 32) as u32
    );
    write(&mut t, regs::DEVICE_FEATURES_SEL, 2);
    assert_eq!(read(&mut t, regs::DEVICE_FEATURES), 0);
}

#[test]
fn transport_unoffered_driver_features_dropped() {
    let (mut t, state) = transport();
    write(&mut t, regs::STATUS, status::ACKNOWLEDGE);
    write(&mut t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    write(&mut t, regs::DRIVER_FEATURES_SEL, 0);
    write(&mut t, regs::DRIVER_FEATURES, 0xffff_ffff);
    write(&mut t, regs::DRIVER_FEATURES_SEL, 1);
    write(&mut t, regs::DRIVER_FEATURES, 0xffff_ffff);
    write(
        &mut t,
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(
        read(&mut t, regs::STATUS) & status::FEATURES_OK,
        status::FEATURES_OK
    );
    assert_eq!(state.lock().unwrap().acked_features, Some(DUMMY_FEATURES));
}

#[test]
fn transport_features_without_version_1_refuse_features_ok() {
    let (mut t, state) = transport();
    write(&mut t, regs::STATUS, status::ACKNOWLEDGE);
    write(&mut t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    write(&mut t, regs::DRIVER_FEATURES_SEL, 0);
    write(&mut t, regs::DRIVER_FEATURES, 1);
    write(
        &mut t,
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(
        read(&mut t, regs::STATUS),
        status::ACKNOWLEDGE | status::DRIVER
    );
    assert_eq!(state.lock().unwrap().acked_features, None);
}

#[test]
fn transport_driver_features_after_features_ok_ignored() {
    let (mut t, state) = transport();
    negotiate(&mut t);
    write(&mut t, regs::DRIVER_FEATURES_SEL, 0);
    write(&mut t, regs::DRIVER_FEATURES, 0);
    setup_queue(&mut t, 0, 8);
    write(&mut t, regs::STATUS, ALL_OK);
    assert_eq!(state.lock().unwrap().acked_features, Some(DUMMY_FEATURES));
}

#[test]
fn transport_illegal_status_transitions_rejected() {
    let (mut t, state) = transport();
    // Skipping ACKNOWLEDGE.
    write(&mut t, regs::STATUS, status::DRIVER);
    assert_eq!(read(&mut t, regs::STATUS), 0);
    // Jumping straight to DRIVER_OK.
    write(&mut t, regs::STATUS, status::ACKNOWLEDGE);
    write(
        &mut t,
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
    );
    assert_eq!(read(&mut t, regs::STATUS), status::ACKNOWLEDGE);
    // Clearing a bit without a reset.
    write(&mut t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    write(&mut t, regs::STATUS, status::DRIVER);
    assert_eq!(
        read(&mut t, regs::STATUS),
        status::ACKNOWLEDGE | status::DRIVER
    );
    assert_eq!(state.lock().unwrap().activations, 0);
}

#[test]
fn transport_failed_status_accepted_from_any_state() {
    let (mut t, _) = transport();
    write(&mut t, regs::STATUS, status::ACKNOWLEDGE);
    write(&mut t, regs::STATUS, status::ACKNOWLEDGE | status::FAILED);
    assert_eq!(
        read(&mut t, regs::STATUS),
        status::ACKNOWLEDGE | status::FAILED
    );
    // Nothing but a reset leaves FAILED.
    write(&mut t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    assert_eq!(
        read(&mut t, regs::STATUS),
        status::ACKNOWLEDGE | status::FAILED
    );
    write(&mut t, regs::STATUS, 0);
    assert_eq!(read(&mut t, regs::STATUS), 0);
}

#[test]
fn transport_queue_setup_accepts_valid_queue() {
    let (mut t, _) = transport();
    negotiate(&mut t);
    write(&mut t, regs::QUEUE_SEL, 0);
    assert_eq!(read(&mut t, regs::QUEUE_NUM_MAX), u32::from(QUEUE_MAX));
    setup_queue(&mut t, 0, 8);
    assert_eq!(read(&mut t, regs::QUEUE_READY), 1);
    write(&mut t, regs::QUEUE_SEL, 7);
    assert_eq!(read(&mut t, regs::QUEUE_NUM_MAX), 0);
}

#[test]
fn transport_invalid_queue_size_stays_not_ready() {
    for size in [0, 3, u32::from(QUEUE_MAX) * 2, 0x1_0008] {
        let (mut t, _) = transport();
        negotiate(&mut t);
        setup_queue(&mut t, 0, size);
        assert_eq!(read(&mut t, regs::QUEUE_READY), 0, "size {size}");
    }
}

#[test]
fn transport_queue_outside_memory_or_misaligned_stays_not_ready() {
    let (mut t, _) = transport();
    negotiate(&mut t);
    setup_queue(&mut t, 0, 8);
    write(&mut t, regs::QUEUE_READY, 0);
    write(&mut t, regs::QUEUE_DESC_HIGH, 1);
    write(&mut t, regs::QUEUE_READY, 1);
    assert_eq!(read(&mut t, regs::QUEUE_READY), 0);
    write(&mut t, regs::QUEUE_DESC_HIGH, 0);
    write(&mut t, regs::QUEUE_DESC_LOW, 0x1_0004);
    write(&mut t, regs::QUEUE_READY, 1);
    assert_eq!(read(&mut t, regs::QUEUE_READY), 0);
}

#[test]
fn transport_queue_writes_before_features_ok_ignored() {
    let (mut t, _) = transport();
    write(&mut t, regs::STATUS, status::ACKNOWLEDGE);
    write(&mut t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    setup_queue(&mut t, 0, 8);
    assert_eq!(read(&mut t, regs::QUEUE_READY), 0);
}

#[test]
fn transport_driver_ok_activates_with_ready_queues() {
    let (mut t, state) = transport();
    negotiate(&mut t);
    setup_queue(&mut t, 1, 8);
    write(&mut t, regs::STATUS, ALL_OK);
    assert_eq!(read(&mut t, regs::STATUS), ALL_OK);
    let s = state.lock().unwrap();
    assert_eq!(s.activations, 1);
    assert_eq!(s.queues, vec![8]);
    // The device got a clone of queue 1's notify eventfd, not queue 0's.
    assert_eq!(t.queue_notify_evts()[1].read().unwrap(), 1);
    assert!(t.queue_notify_evts()[0].read().is_err());
}

#[test]
fn transport_activation_failure_sets_needs_reset() {
    let (mut t, state) = transport();
    state.lock().unwrap().fail_activate = true;
    activate(&mut t);
    assert_eq!(
        read(&mut t, regs::STATUS),
        ALL_OK | status::DEVICE_NEEDS_RESET
    );
    assert_eq!(
        read(&mut t, regs::INTERRUPT_STATUS),
        regs::interrupt::CONFIG_CHANGE
    );
    assert_eq!(read(&mut t, regs::CONFIG_GENERATION), 1);
    assert_eq!(t.irq_evt().read().unwrap(), 1);
}

#[test]
fn transport_interrupt_sets_status_and_ack_clears_it() {
    let (mut t, state) = transport();
    activate(&mut t);
    let interrupt = state.lock().unwrap().interrupt.clone().unwrap();
    interrupt.signal_queue(1).unwrap();
    assert_eq!(
        read(&mut t, regs::INTERRUPT_STATUS),
        regs::interrupt::USED_BUFFER
    );
    assert_eq!(t.irq_evt().read().unwrap(), 1);
    interrupt.signal_config().unwrap();
    assert_eq!(read(&mut t, regs::INTERRUPT_STATUS), 0x3);
    write(&mut t, regs::INTERRUPT_ACK, regs::interrupt::USED_BUFFER);
    assert_eq!(
        read(&mut t, regs::INTERRUPT_STATUS),
        regs::interrupt::CONFIG_CHANGE
    );
    write(&mut t, regs::INTERRUPT_ACK, regs::interrupt::CONFIG_CHANGE);
    assert_eq!(read(&mut t, regs::INTERRUPT_STATUS), 0);
}

#[test]
fn transport_queue_notify_by_mmio_exit_writes_eventfd() {
    let (mut t, _) = transport();
    write(&mut t, regs::QUEUE_NOTIFY, 1);
    assert_eq!(t.queue_notify_evts()[1].read().unwrap(), 1);
    assert!(t.queue_notify_evts()[0].read().is_err());
    write(&mut t, regs::QUEUE_NOTIFY, 9);
}

#[test]
fn transport_config_space_reaches_device() {
    let (mut t, state) = transport();
    state.lock().unwrap().config = [1, 2, 3, 4, 5, 6, 7, 8];
    let mut data = [0u8; 2];
    t.read(regs::CONFIG_SPACE + 2, &mut data);
    assert_eq!(data, [3, 4]);
    t.write(regs::CONFIG_SPACE + 7, &[0xaa]);
    assert_eq!(state.lock().unwrap().config[7], 0xaa);
    let mut past_end = [0xffu8; 4];
    t.read(regs::CONFIG_SPACE + 6, &mut past_end);
    assert_eq!(past_end, [7, 0xaa, 0, 0]);
}

#[test]
fn transport_reset_returns_to_inactive() {
    let (mut t, state) = transport();
    activate(&mut t);
    state
        .lock()
        .unwrap()
        .interrupt
        .clone()
        .unwrap()
        .signal_queue(0)
        .unwrap();
    write(&mut t, regs::STATUS, 0);
    assert_eq!(read(&mut t, regs::STATUS), 0);
    assert_eq!(read(&mut t, regs::INTERRUPT_STATUS), 0);
    write(&mut t, regs::QUEUE_SEL, 0);
    assert_eq!(read(&mut t, regs::QUEUE_READY), 0);
    assert_eq!(state.lock().unwrap().resets, 1);
    // The driver can bring the device up again.
    activate(&mut t);
    assert_eq!(state.lock().unwrap().activations, 2);
    assert_eq!(state.lock().unwrap().queues, vec![8, 16]);
}

#[test]
fn transport_reset_of_inactive_device_skips_device_reset() {
    let (mut t, state) = transport();
    negotiate(&mut t);
    write(&mut t, regs::STATUS, 0);
    assert_eq!(read(&mut t, regs::STATUS), 0);
    assert_eq!(state.lock().unwrap().resets, 0);
}

#[test]
fn transport_shutdown_reaches_device() {
    let (mut t, state) = transport();
    t.shutdown();
    assert_eq!(state.lock().unwrap().shutdowns, 1);
}

#[test]
fn transport_queue_disable_after_driver_ok_reads_back_zero() {
    let (mut t, state) = transport();
    activate(&mut t);
    write(&mut t, regs::QUEUE_SEL, 0);
    write(&mut t, regs::QUEUE_READY, 0);
    assert_eq!(read(&mut t, regs::QUEUE_READY), 0);
    // Enabling is only possible during setup.
    write(&mut t, regs::QUEUE_READY, 1);
    assert_eq!(read(&mut t, regs::QUEUE_READY), 0);
    assert_eq!(state.lock().unwrap().activations, 1);
}
