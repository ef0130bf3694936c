//! virtio-console under a hostile driver: garbage transmit chains never panic the port, and
//! good bytes after them reach the output.

use std::io;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};

use super::backend::ConsoleOutput;
use super::device::{OutputSink, PortQueues};
use crate::fuzz_support::{self, Driver, Garbage, GOOD, MEM_SIZE, QUEUE_SIZE};
use crate::test_support::{guest_memory, CountingInterrupt};

const GOOD_BYTES: &[u8] = b"good bytes after garbage\n";

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl ConsoleOutput for Sink {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn run(g: &Garbage) {
    let mem = guest_memory(MEM_SIZE as usize);
    let rx = MockSplitQueue::create(&mem, GuestAddress(0x1000), QUEUE_SIZE);
    let tx = MockSplitQueue::create(&mem, GuestAddress(0), QUEUE_SIZE);
    let mut port = PortQueues {
        mem: mem.clone(),
        rx: rx.create_queue::<Queue>().unwrap(),
        tx: tx.create_queue::<Queue>().unwrap(),
        rx_index: 0,
        tx_index: 1,
        interrupt: Arc::new(CountingInterrupt::default()),
    };
    let out = Sink::default();
    let mut sink = OutputSink::new(Box::new(out.clone()));
    let mut driver = Driver::new(&mem, &tx);

    driver.scribble(g);
    port.process_tx(&mut sink);
    driver.repair();
    port.process_tx(&mut sink);

    mem.write_slice(GOOD_BYTES, GuestAddress(GOOD)).unwrap();
    let head = driver.push(&[(GOOD, 10, false), (GOOD + 10, 15, false)]);
    port.process_tx(&mut sink);
    if g.clobbers_avail(&tx) {
        return;
    }
    assert!(
        driver.last_used(head).is_some(),
        "the good chain is returned"
    );
    let bytes = out.0.lock().unwrap().clone();
    assert!(
        bytes.ends_with(GOOD_BYTES),
        "the good bytes reach the output last"
    );
}

proptest! {
    #![proptest_config(fuzz_support::config())]

    #[test]
    fn console_garbage_tx_chains_then_good_bytes_reach_output(
        g in fuzz_support::garbage(prop::collection::vec(any::<u8>(), 0..32).boxed())
    ) {
        run(&g);
    }
}
