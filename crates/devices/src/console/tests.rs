//! Console tests with mock queues playing the guest driver and fake backends.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::backend::{ConsoleOutput, FdInput};
use super::control::{self, ControlMsg};
use super::device::{OutputSink, PortQueues, RxStatus};
use super::{Console, Port};
use crate::test_support::{active_queue, add_chain, guest_memory, wait_until, CountingInterrupt};
use crate::virtio::{ActivateError, ActivationContext, ActiveQueue, VirtioDevice};
use crate::GuestMemory;

const RX_RING: GuestAddress = GuestAddress(0x0);
const TX_RING: GuestAddress = GuestAddress(0x4000);
const DATA: u64 = 0x1_0000;
const RING_LEN: u16 = 16;

/// A `Vec<u8>` sink the test keeps a handle on.
#[derive(Clone, Default)]
struct FakeOutput(Arc<Mutex<Vec<u8>>>);

impl FakeOutput {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

impl ConsoleOutput for FakeOutput {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An output whose reader went away: every write fails with EPIPE.
#[derive(Clone, Default)]
struct FakeBrokenOutput(Arc<AtomicUsize>);

impl ConsoleOutput for FakeBrokenOutput {
    fn write_all(&mut self, _buf: &[u8]) -> io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(io::Error::from_raw_os_error(libc::EPIPE))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn memory() -> GuestMemory {
    guest_memory(0x10_0000)
}

/// Adds a transmit chain carrying `parts`, one descriptor each, starting at descriptor
/// `first`, with data at `data`.
fn add_tx_chain(
    mq: &MockSplitQueue<GuestMemory>,
    mem: &GuestMemory,
    first: u16,
    data: u64,
    parts: &[&[u8]],
) {
    let mut addr = data;
    let mut bufs = Vec::new();
    for part in parts {
        mem.write_slice(part, GuestAddress(addr)).unwrap();
        bufs.push((addr, part.len() as u32, false));
        addr += 0x100;
    }
    add_chain(mq, first, &bufs);
}

fn used_entries(mq: &MockSplitQueue<GuestMemory>) -> Vec<(u32, u32)> {
    let count = mq.used().idx().load();
    (0..count)
        .map(|i| {
            let elem = mq.used().ring().ref_at(i as usize).unwrap().load();
            (elem.id(), elem.len())
        })
        .collect()
}

struct Harness<'a> {
    mem: GuestMemory,
    rx: MockSplitQueue<'a, GuestMemory>,
    tx: MockSplitQueue<'a, GuestMemory>,
    interrupt: Arc<CountingInterrupt>,
}

impl<'a> Harness<'a> {
    fn new(mem: &'a GuestMemory) -> Self {
        Self {
            mem: mem.clone(),
            rx: MockSplitQueue::create(mem, RX_RING, RING_LEN),
            tx: MockSplitQueue::create(mem, TX_RING, RING_LEN),
            interrupt: Arc::new(CountingInterrupt::default()),
        }
    }

    fn port(&self) -> PortQueues {
        PortQueues {
            mem: self.mem.clone(),
            rx: self.rx.create_queue::<Queue>().unwrap(),
            tx: self.tx.create_queue::<Queue>().unwrap(),
            rx_index: 0,
            tx_index: 1,
            interrupt: self.interrupt.clone(),
        }
    }

    fn activation(&self) -> (ActivationContext, EventFd, EventFd) {
        let (rx, rx_evt) = active_queue(&self.rx);
        let (tx, tx_evt) = active_queue(&self.tx);
        let ctx = ActivationContext {
            mem: self.mem.clone(),
            queues: vec![rx, tx],
            interrupt: self.interrupt.clone(),
            acked_features: crate::virtio::features::VIRTIO_F_VERSION_1,
            faults: std::sync::Arc::new(crate::virtio::NoFaultSink),
        };
        (ctx, rx_evt, tx_evt)
    }
}

fn sink(output: &FakeOutput) -> OutputSink {
    OutputSink::new(Box::new(output.clone()))
}

/// Polls `cond` for up to five seconds: the worker thread runs on its own schedule.
fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    assert!(
        wait_until(Duration::from_secs(5), cond),
        "timed out waiting for {what}"
    );
}

#[test]
fn process_tx_single_chain_reaches_sink() {
    let mem = memory();
    let h = Harness::new(&mem);
    let output = FakeOutput::default();
    let mut out = sink(&output);
    add_tx_chain(&h.tx, &mem, 0, DATA, &[b"hello, world\n"]);
    let mut port = h.port();

    let used = port.process_tx(&mut out);

    assert_eq!(used, 1);
    assert_eq!(output.bytes(), b"hello, world\n");
    assert_eq!(used_entries(&h.tx), vec![(0, 0)]);
    assert_eq!(h.interrupt.queue(1), 1);
}

#[test]
fn process_tx_multi_descriptor_chains_reach_sink_in_order() {
    let mem = memory();
    let h = Harness::new(&mem);
    let output = FakeOutput::default();
    let mut out = sink(&output);
    add_tx_chain(&h.tx, &mem, 0, DATA, &[b"one ", b"two ", b"three "]);
    add_tx_chain(&h.tx, &mem, 3, DATA + 0x1000, &[b"four", b"\n"]);
    let mut port = h.port();

    let used = port.process_tx(&mut out);

    assert_eq!(used, 2);
    assert_eq!(output.bytes(), b"one two three four\n");
    assert_eq!(used_entries(&h.tx), vec![(0, 0), (3, 0)]);
    // One interrupt for the whole batch.
    assert_eq!(h.interrupt.queue(1), 1);
}

#[test]
fn process_tx_large_descriptor_copied_byte_for_byte() {
    let mem = memory();
    let h = Harness::new(&mem);
    let output = FakeOutput::default();
    let mut out = sink(&output);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    mem.write_slice(&data, GuestAddress(DATA)).unwrap();
    add_chain(&h.tx, 0, &[(DATA, data.len() as u32, false)]);
    let mut port = h.port();

    port.process_tx(&mut out);

    assert_eq!(output.bytes(), data);
}

#[test]
fn process_tx_empty_queue_no_interrupt() {
    let mem = memory();
    let h = Harness::new(&mem);
    let output = FakeOutput::default();
    let mut port = h.port();

    assert_eq!(port.process_tx(&mut sink(&output)), 0);
    assert_eq!(h.interrupt.queue(1), 0);
}

#[test]
fn process_tx_broken_output_logs_once_and_keeps_serving() {
    let mem = memory();
    let h = Harness::new(&mem);
    let broken = FakeBrokenOutput::default();
    let mut out = OutputSink::new(Box::new(broken.clone()));
    add_tx_chain(&h.tx, &mem, 0, DATA, &[b"lost"]);
    add_tx_chain(&h.tx, &mem, 1, DATA + 0x1000, &[b"also lost"]);
    let mut port = h.port();

    let used = port.process_tx(&mut out);

    assert_eq!(used, 2);
    assert_eq!(used_entries(&h.tx).len(), 2);
    assert_eq!(broken.0.load(Ordering::SeqCst), 1);
}

#[test]
fn process_rx_input_bytes_land_in_rx_buffer() {
    let mem = memory();
    let h = Harness::new(&mem);
    let (mut peer, ours) = UnixStream::pair().unwrap();
    let mut input = FdInput::new(ours.into());
    peer.write_all(b"ls -l\n").unwrap();
    add_chain(&h.rx, 0, &[(DATA, 64, true)]);
    add_chain(&h.rx, 1, &[(DATA + 0x100, 64, true)]);
    let mut port = h.port();

    let status = port.process_rx(&mut input);

    assert_eq!(status, RxStatus::Drained);
    assert_eq!(used_entries(&h.rx), vec![(0, 6)]);
    let mut got = [0u8; 6];
    mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(&got, b"ls -l\n");
    assert_eq!(h.interrupt.queue(0), 1);
}

#[test]
fn process_rx_small_buffers_fill_in_order_then_wait_for_more() {
    let mem = memory();
    let h = Harness::new(&mem);
    let (mut peer, ours) = UnixStream::pair().unwrap();
    let mut input = FdInput::new(ours.into());
    peer.write_all(b"0123456789").unwrap();
    add_chain(&h.rx, 0, &[(DATA, 4, true)]);
    add_chain(
        &h.rx,
        1,
        &[(DATA + 0x100, 2, true), (DATA + 0x200, 2, true)],
    );
    let mut port = h.port();

    let status = port.process_rx(&mut input);

    assert_eq!(status, RxStatus::NoBuffers);
    assert_eq!(used_entries(&h.rx), vec![(0, 4), (1, 4)]);
    let mut first = [0u8; 4];
    mem.read_slice(&mut first, GuestAddress(DATA)).unwrap();
    assert_eq!(&first, b"0123");
    let mut second = [0u8; 4];
    mem.read_slice(&mut second[..2], GuestAddress(DATA + 0x100))
        .unwrap();
    mem.read_slice(&mut second[2..], GuestAddress(DATA + 0x200))
        .unwrap();
    assert_eq!(&second, b"4567");

    // The rest stays in the input until the guest adds a buffer.
    add_chain(&h.rx, 3, &[(DATA + 0x300, 16, true)]);
    assert_eq!(port.process_rx(&mut input), RxStatus::NoBuffers);
    assert_eq!(used_entries(&h.rx)[2], (3, 2));
}

#[test]
fn process_rx_eof_keeps_buffer_for_later() {
    let mem = memory();
    let h = Harness::new(&mem);
    let (peer, ours) = UnixStream::pair().unwrap();
    let mut input = FdInput::new(ours.into());
    drop(peer);
    add_chain(&h.rx, 0, &[(DATA, 64, true)]);
    let mut port = h.port();

    assert_eq!(port.process_rx(&mut input), RxStatus::Eof);
    assert!(used_entries(&h.rx).is_empty());
    assert_eq!(h.interrupt.queue(0), 0);
}

#[test]
fn console_config_reports_one_port() {
    let mut console = Console::single(None, Box::new(FakeOutput::default()));
    console.set_window_size(80, 25);
    let mut config = [0u8; 12];
    console.read_config(0, &mut config);
    assert_eq!(config, [80, 0, 25, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    let mut past = [0xffu8; 4];
    console.read_config(10, &mut past);
    assert_eq!(past, [0; 4]);
    assert_eq!(console.device_type(), 3);
    assert_eq!(console.queue_max_sizes().len(), 4);
}

#[test]
fn console_activate_with_one_queue_fails() {
    let mem = memory();
    let h = Harness::new(&mem);
    let mut console = Console::single(None, Box::new(FakeOutput::default()));
    let (mut ctx, _, _) = h.activation();
    ctx.queues.truncate(1);
    assert!(matches!(
        console.activate(ctx),
        Err(ActivateError::QueueCount { need: 2, got: 1 })
    ));
}

#[test]
fn console_worker_serves_tx_and_rx() {
    let mem = memory();
    let h = Harness::new(&mem);
    let output = FakeOutput::default();
    let (mut peer, ours) = UnixStream::pair().unwrap();
    let mut console = Console::single(
        Some(Box::new(FdInput::new(ours.into()))),
        Box::new(output.clone()),
    );
    let (ctx, rx_evt, tx_evt) = h.activation();
    console.activate(ctx).unwrap();

    add_tx_chain(&h.tx, &mem, 0, DATA, &[b"boot ", b"log\n"]);
    tx_evt.write(1).unwrap();
    wait_for("transmit", || output.bytes() == b"boot log\n");
    assert_eq!(h.interrupt.queue(1), 1);

    // Input typed before the guest has buffers waits for them.
    peer.write_all(b"x").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    add_chain(&h.rx, 0, &[(DATA + 0x1000, 8, true)]);
    rx_evt.write(1).unwrap();
    wait_for("receive", || used_entries(&h.rx) == vec![(0, 1)]);
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(DATA + 0x1000)).unwrap(),
        b'x'
    );

    console.shutdown();
}

#[test]
fn console_shutdown_flushes_unnotified_tx() {
    let mem = memory();
    let h = Harness::new(&mem);
    let output = FakeOutput::default();
    let mut console = Console::single(None, Box::new(output.clone()));
    let (ctx, _rx_evt, _tx_evt) = h.activation();
    console.activate(ctx).unwrap();

    // The guest queued output but the notification has not been seen yet.
    add_tx_chain(&h.tx, &mem, 0, DATA, &[b"last words\n"]);
    console.shutdown();

    assert_eq!(output.bytes(), b"last words\n");
    assert_eq!(used_entries(&h.tx), vec![(0, 0)]);
}

#[test]
fn console_input_eof_stops_polling() {
    let mem = memory();
    let h = Harness::new(&mem);
    let output = FakeOutput::default();
    let (peer, ours) = UnixStream::pair().unwrap();
    let mut console = Console::single(
        Some(Box::new(FdInput::new(ours.into()))),
        Box::new(output.clone()),
    );
    add_chain(&h.rx, 0, &[(DATA, 8, true)]);
    let (ctx, _rx_evt, tx_evt) = h.activation();
    console.activate(ctx).unwrap();
    drop(peer);
    std::thread::sleep(Duration::from_millis(20));

    // The worker still serves output after the input ended.
    add_tx_chain(&h.tx, &mem, 0, DATA + 0x1000, &[b"still here"]);
    tx_evt.write(1).unwrap();
    wait_for("transmit after eof", || output.bytes() == b"still here");
    assert!(used_entries(&h.rx).is_empty());
    console.shutdown();
}

#[test]
fn console_reset_allows_reactivation() {
    let mem = memory();
    let h = Harness::new(&mem);
    let output = FakeOutput::default();
    let mut console = Console::single(None, Box::new(output.clone()));
    let (ctx, _, _) = h.activation();
    console.activate(ctx).unwrap();

    assert!(console.reset());

    let h2_mem = memory();
    let h2 = Harness::new(&h2_mem);
    let (ctx, _, tx_evt) = h2.activation();
    console.activate(ctx).unwrap();
    add_tx_chain(&h2.tx, &h2_mem, 0, DATA, &[b"again"]);
    tx_evt.write(1).unwrap();
    wait_for("transmit after reset", || output.bytes() == b"again");
    console.shutdown();
}

#[test]
fn console_second_activation_without_reset_fails() {
    let mem = memory();
    let h = Harness::new(&mem);
    let mut console = Console::single(None, Box::new(FakeOutput::default()));
    let (ctx, _, _) = h.activation();
    console.activate(ctx).unwrap();
    let (ctx, _, _) = h.activation();
    assert!(matches!(
        console.activate(ctx),
        Err(ActivateError::Backend(_))
    ));
    console.shutdown();
}

#[test]
fn console_regular_file_input_read_without_epoll() {
    let mem = memory();
    let h = Harness::new(&mem);
    let path = std::env::temp_dir().join(format!("devices-console-in-{}", std::process::id()));
    std::fs::write(&path, b"script\n").unwrap();
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let mut console = Console::single(
        Some(Box::new(FdInput::new(file.into()))),
        Box::new(FakeOutput::default()),
    );
    add_chain(&h.rx, 0, &[(DATA, 64, true)]);
    add_chain(&h.rx, 1, &[(DATA + 0x100, 64, true)]);
    let (ctx, _, _) = h.activation();
    console.activate(ctx).unwrap();

    wait_for("file input", || used_entries(&h.rx) == vec![(0, 7)]);
    let mut got = [0u8; 7];
    mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(&got, b"script\n");
    console.shutdown();
}

/// The four queues of a one-port multiport console, playing the guest driver.
struct MultiportHarness<'a> {
    mem: GuestMemory,
    queues: Vec<MockSplitQueue<'a, GuestMemory>>,
    evts: Vec<EventFd>,
    interrupt: Arc<CountingInterrupt>,
}

impl<'a> MultiportHarness<'a> {
    fn new(mem: &'a GuestMemory) -> Self {
        Self {
            mem: mem.clone(),
            queues: (0..4)
                .map(|i| MockSplitQueue::create(mem, GuestAddress(0x4000 * i), RING_LEN))
                .collect(),
            evts: (0..4)
                .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
                .collect(),
            interrupt: Arc::new(CountingInterrupt::default()),
        }
    }

    fn activation(&self) -> ActivationContext {
        ActivationContext {
            mem: self.mem.clone(),
            queues: self
                .queues
                .iter()
                .zip(&self.evts)
                .map(|(q, evt)| ActiveQueue {
                    queue: q.create_queue::<Queue>().unwrap(),
                    notify_evt: evt.try_clone().unwrap(),
                })
                .collect(),
            interrupt: self.interrupt.clone(),
            acked_features: crate::virtio::features::VIRTIO_F_VERSION_1
                | super::VIRTIO_CONSOLE_F_MULTIPORT,
            faults: std::sync::Arc::new(crate::virtio::NoFaultSink),
        }
    }

    /// The driver sends one control message (descriptor `desc`, data at `data`).
    fn send(&self, desc: u16, data: u64, msg: ControlMsg) {
        add_tx_chain(&self.queues[3], &self.mem, desc, data, &[&msg.to_bytes()]);
        self.evts[3].write(1).unwrap();
    }

    /// The messages the device put in control receive buffers so far, as raw bytes; the
    /// buffers were added by `add_control_buffers` at CTRL_DATA + 0x100 * descriptor.
    fn received(&self) -> Vec<Vec<u8>> {
        used_entries(&self.queues[2])
            .into_iter()
            .map(|(id, len)| {
                let mut buf = vec![0u8; len as usize];
                self.mem
                    .read_slice(&mut buf, GuestAddress(CTRL_DATA + 0x100 * u64::from(id)))
                    .unwrap();
                buf
            })
            .collect()
    }
}

const CTRL_DATA: u64 = 0x2_0000;

#[test]
fn multiport_handshake_names_port_then_input_flows_and_ends_with_port_close() {
    let mem = memory();
    let h = MultiportHarness::new(&mem);
    let path = std::env::temp_dir().join(format!("devices-console-mp-{}", std::process::id()));
    std::fs::write(&path, b"hello").unwrap();
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let output = FakeOutput::default();
    let mut console = Console::new(vec![Port::named(
        "alpha",
        Some(Box::new(FdInput::new(file.into()))),
        Some(Box::new(output.clone())),
    )]);
    for d in 0..8u16 {
        add_chain(
            &h.queues[2],
            d,
            &[(CTRL_DATA + 0x100 * u64::from(d), 64, true)],
        );
    }
    add_chain(&h.queues[0], 0, &[(DATA, 64, true)]);
    add_chain(&h.queues[0], 1, &[(DATA + 0x100, 64, true)]);
    console.activate(h.activation()).unwrap();

    h.send(
        0,
        DATA + 0x1000,
        ControlMsg::new(0, control::DEVICE_READY, 1),
    );
    wait_for("port add", || h.received().len() == 1);
    assert_eq!(
        h.received()[0],
        ControlMsg::new(0, control::DEVICE_ADD, 0).to_bytes()
    );
    // Nothing flows before the guest opens the port: Linux would discard it.
    assert!(used_entries(&h.queues[0]).is_empty());

    h.send(1, DATA + 0x2000, ControlMsg::new(0, control::PORT_READY, 1));
    wait_for("name and open", || h.received().len() == 3);
    let mut name = ControlMsg::new(0, control::PORT_NAME, 1).to_bytes();
    name.extend_from_slice(b"alpha");
    assert_eq!(h.received()[1], name);
    assert_eq!(
        h.received()[2],
        ControlMsg::new(0, control::PORT_OPEN, 1).to_bytes()
    );

    h.send(2, DATA + 0x3000, ControlMsg::new(0, control::PORT_OPEN, 1));
    wait_for("input", || !used_entries(&h.queues[0]).is_empty());
    assert_eq!(used_entries(&h.queues[0])[0], (0, 5));
    let mut got = [0u8; 5];
    mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(&got, b"hello");
    wait_for("host close", || h.received().len() == 4);
    assert_eq!(
        h.received()[3],
        ControlMsg::new(0, control::PORT_OPEN, 0).to_bytes()
    );

    // What the guest writes reaches the port's output.
    add_tx_chain(&h.queues[1], &mem, 0, DATA + 0x4000, &[b"back"]);
    h.evts[1].write(1).unwrap();
    wait_for("output", || output.bytes() == b"back");
    console.shutdown();
}
