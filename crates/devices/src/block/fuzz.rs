//! virtio-blk under a hostile driver: garbage request chains (mutated headers with any type
//! and sector, lying data lengths, missing or read-only status bytes) never panic the
//! worker or its I/O threads, never reach the disk outside its bounds, and a good read after
//! them returns the disk's bytes with status OK.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use super::backend::DiskBackend;
use super::device::{Block, BlockConfig, SyncMode};
use crate::fuzz_support::{self, mutated, Driver, Garbage, GOOD, MEM_SIZE, QUEUE_SIZE};
use crate::test_support::{active_queue, guest_memory, CountingInterrupt};
use crate::virtio::{ActivationContext, VirtioDevice};

const DISK_LEN: u64 = 64 * 1024;

/// An in-memory disk that records any access outside it instead of failing the test from
/// an I/O thread (where a panic would only show as a missing answer).
struct Disk {
    bytes: Mutex<Vec<u8>>,
    out_of_range: AtomicBool,
}

impl Disk {
    fn range(&self, offset: u64, len: u64) -> io::Result<std::ops::Range<usize>> {
        match offset.checked_add(len) {
            Some(end) if end <= DISK_LEN => Ok(offset as usize..end as usize),
            _ => {
                self.out_of_range.store(true, Ordering::SeqCst);
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
        }
    }
}

impl DiskBackend for Disk {
    fn size(&self) -> u64 {
        DISK_LEN
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let r = self.range(offset, buf.len() as u64)?;
        buf.copy_from_slice(&self.bytes.lock().unwrap()[r]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let r = self.range(offset, buf.len() as u64)?;
        self.bytes.lock().unwrap()[r].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn can_discard(&self) -> bool {
        true
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let r = self.range(offset, len)?;
        self.bytes.lock().unwrap()[r].fill(0);
        Ok(())
    }
    fn write_zeroes(&self, offset: u64, len: u64, _unmap: bool) -> io::Result<()> {
        self.discard(offset, len)
    }
}

fn header(kind: u32, sector: u64) -> Vec<u8> {
    let mut h = kind.to_le_bytes().to_vec();
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&sector.to_le_bytes());
    // A discard/write-zeroes segment behind it: sector, num_sectors, flags.
    h.extend_from_slice(&2u64.to_le_bytes());
    h.extend_from_slice(&4u32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h
}

fn run(g: &Garbage, read_only: bool) {
    let mem = guest_memory(MEM_SIZE as usize);
    let mq = MockSplitQueue::create(&mem, GuestAddress(0), QUEUE_SIZE);
    let disk = Arc::new(Disk {
        bytes: Mutex::new((0..DISK_LEN).map(|i| (i % 251) as u8).collect()),
        out_of_range: AtomicBool::new(false),
    });
    let mut device = Block::new(BlockConfig {
        id: "fuzz".into(),
        disk: disk.clone(),
        read_only,
        sync: SyncMode::Relaxed,
    });
    let (queue, kick) = active_queue(&mq);
    let features = device.avail_features();
    device.set_acked_features(features);
    device
        .activate(ActivationContext {
            mem: mem.clone(),
            queues: vec![queue],
            interrupt: Arc::new(CountingInterrupt::default()),
            acked_features: features,
            faults: std::sync::Arc::new(crate::virtio::NoFaultSink),
        })
        .expect("activate");
    let mut driver = Driver::new(&mem, &mq);

    driver.scribble(g);
    kick.write(1).unwrap();
    driver.settle();
    driver.repair();
    kick.write(1).unwrap();
    driver.settle();

    driver.fill_good(0xee);
    mem.write_slice(&header(VIRTIO_BLK_T_IN, 1)[..16], GuestAddress(GOOD))
        .unwrap();
    let (data, status) = (GOOD + 0x1000, GOOD + 0x2000);
    let head = driver.push(&[(GOOD, 16, false), (data, 512, true), (status, 1, true)]);
    kick.write(1).unwrap();
    let used = driver.wait_used(head);
    device.shutdown();

    assert!(
        !disk.out_of_range.load(Ordering::SeqCst),
        "the disk is only touched inside"
    );
    if g.clobbers_avail(&mq) {
        return;
    }

    assert!(
        !disk.out_of_range.load(Ordering::SeqCst),
        "the disk is only touched inside"
    );
    assert_eq!(used, Some(513), "the good read is answered");
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(status)).unwrap(),
        VIRTIO_BLK_S_OK as u8
    );
    let mut got = vec![0u8; 512];
    mem.read_slice(&mut got, GuestAddress(data)).unwrap();
    let want: Vec<u8> = (512..1024u64).map(|i| (i % 251) as u8).collect();
    assert_eq!(got, want);
}

fn blk_header() -> BoxedStrategy<Vec<u8>> {
    let kind = prop::sample::select(vec![0u32, 1, 4, 8, 11, 13, 0xff, u32::MAX]);
    let sector = prop_oneof![
        0..200u64,
        Just(u64::MAX),
        Just(u64::MAX / 512),
        any::<u64>()
    ];
    (kind, sector)
        .prop_flat_map(|(k, s)| mutated(header(k, s)))
        .boxed()
}

proptest! {
    #![proptest_config(fuzz_support::config())]

    #[test]
    fn block_garbage_requests_then_good_read_served(
        g in fuzz_support::garbage(blk_header()),
        read_only in any::<bool>(),
    ) {
        run(&g, read_only);
    }
}
