//! virtio-blk on mock queues with a fake disk: requests, malformed chains, read-only disks,
//! ranges past the end, flush policy, discard, GET_ID, requests in parallel, shutdown.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_bindings::virtio_blk::*;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::backend::{DiskBackend, RawFile};
use super::device::{Block, BlockConfig, SyncMode};
use crate::test_support::{active_queue, guest_memory, wait_until, CountingInterrupt};
use crate::virtio::{features, ActivationContext, VirtioDevice};
use crate::GuestMemory;

const DISK_LEN: usize = 64 * 1024;
const HEADER: u64 = 0x1_0000;
const DATA: u64 = 0x2_0000;
const STATUS: u64 = 0x3_0000;
const WAIT: Duration = Duration::from_secs(10);

/// An in-memory disk that counts flushes and discards; reads of offset 0 can be made to
/// wait until a write at [`FakeDisk::RELEASE_AT`] happened (to show two requests overlap).
#[derive(Default)]
struct FakeDisk {
    bytes: Mutex<Vec<u8>>,
    flushes: AtomicUsize,
    discards: Mutex<Vec<(u64, u64)>>,
    discard: bool,
    hold_first_read: bool,
    released: AtomicBool,
}

impl FakeDisk {
    const RELEASE_AT: u64 = 4096;

    fn new() -> FakeDisk {
        FakeDisk {
            bytes: Mutex::new((0..DISK_LEN).map(|i| (i % 251) as u8).collect()),
            ..FakeDisk::default()
        }
    }
}

impl DiskBackend for FakeDisk {
    fn size(&self) -> u64 {
        DISK_LEN as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.hold_first_read && offset == 0 {
            let released = wait_until(WAIT, || self.released.load(Ordering::SeqCst));
            if !released {
                return Err(io::Error::other("never released: requests are serialized"));
            }
        }
        let o = offset as usize;
        buf.copy_from_slice(&self.bytes.lock().unwrap()[o..o + buf.len()]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let o = offset as usize;
        self.bytes.lock().unwrap()[o..o + buf.len()].copy_from_slice(buf);
        if offset == Self::RELEASE_AT {
            self.released.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn can_discard(&self) -> bool {
        self.discard
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.discards.lock().unwrap().push((offset, len));
        self.bytes.lock().unwrap()[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
    fn write_zeroes(&self, offset: u64, len: u64, _unmap: bool) -> io::Result<()> {
        self.bytes.lock().unwrap()[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
}

/// The device, activated on a mock queue, and what the test plays the driver with.
struct Harness<D = FakeDisk> {
    mem: &'static GuestMemory,
    mock: MockSplitQueue<'static, GuestMemory>,
    disk: Arc<D>,
    device: Block,
    irq: Arc<CountingInterrupt>,
    kick: EventFd,
    next_desc: u16,
    submitted: u16,
}

impl<D: DiskBackend + 'static> Harness<D> {
    fn new(disk: D, read_only: bool, sync: SyncMode) -> Harness<D> {
        // Leaked so the mock queue (which borrows it) can live in the harness.
        let mem: &'static GuestMemory = Box::leak(Box::new(guest_memory(0x10_0000)));
        let disk = Arc::new(disk);
        let mut device = Block::new(BlockConfig {
            id: "disk-serial-0".into(),
            disk: disk.clone(),
            read_only,
            sync,
        });
        let irq = Arc::new(CountingInterrupt::default());
        let mock = MockSplitQueue::create(mem, GuestAddress(0), 64);
        let (queue, kick) = active_queue(&mock);
        device.set_acked_features(device.avail_features());
        device
            .activate(ActivationContext {
                mem: mem.clone(),
                queues: vec![queue],
                interrupt: irq.clone(),
                acked_features: device.avail_features(),
                faults: std::sync::Arc::new(crate::virtio::NoFaultSink),
            })
            .expect("activate");
        Harness {
            mem,
            mock,
            disk,
            device,
            irq,
            kick,
            next_desc: 0,
            submitted: 0,
        }
    }

    /// Puts one chain of `(addr, len, device-writable)` descriptors on the avail ring.
    fn push(&mut self, descs: &[(u64, u32, bool)]) {
        let first = self.next_desc;
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, write))| {
                let mut flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
                if i + 1 < descs.len() {
                    flags |= VRING_DESC_F_NEXT as u16;
                }
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, first + i as u16 + 1))
            })
            .collect();
        self.mock.add_desc_chains(&raw, first).expect("chain");
        self.next_desc += descs.len() as u16;
        self.submitted += 1;
    }

    fn kick_and_wait(&self) {
        self.kick.write(1).unwrap();
        let want = self.submitted;
        assert!(
            wait_until(WAIT, || self.used_idx() == want),
            "used {} of {want}",
            self.used_idx()
        );
    }

    fn used_idx(&self) -> u16 {
        self.mem
            .read_obj::<u16>(self.mock.used_addr().unchecked_add_u64(2))
            .unwrap()
    }

    /// The used element `n`: (descriptor head, used length).
    fn used(&self, n: u16) -> (u32, u32) {
        let at = self
            .mock
            .used_addr()
            .unchecked_add_u64(4 + 8 * u64::from(n));
        let id: u32 = self.mem.read_obj(at).unwrap();
        let len: u32 = self.mem.read_obj(at.unchecked_add_u64(4)).unwrap();
        (id, len)
    }

    fn header(&self, at: u64, kind: u32, sector: u64) {
        self.mem.write_obj(kind, GuestAddress(at)).unwrap();
        self.mem.write_obj(0u32, GuestAddress(at + 4)).unwrap();
        self.mem.write_obj(sector, GuestAddress(at + 8)).unwrap();
    }

    fn status(&self, at: u64) -> u8 {
        self.mem.read_obj(GuestAddress(at)).unwrap()
    }

    /// One request of the usual three descriptors; returns its status byte.
    fn request(&mut self, kind: u32, sector: u64, data_len: u32, device_writes: bool) -> u8 {
        self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        self.header(HEADER, kind, sector);
        self.push(&[
            (HEADER, 16, false),
            (DATA, data_len, device_writes),
            (STATUS, 1, true),
        ]);
        self.kick_and_wait();
        self.status(STATUS)
    }
}

trait AddU64 {
    fn unchecked_add_u64(self, n: u64) -> GuestAddress;
}
impl AddU64 for GuestAddress {
    fn unchecked_add_u64(self, n: u64) -> GuestAddress {
        GuestAddress(self.0 + n)
    }
}

#[test]
fn block_write_then_read_round_trips_ok() {
    let mut h = Harness::new(FakeDisk::new(), false, SyncMode::Relaxed);
    let data: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
    h.mem.write_slice(&data, GuestAddress(DATA)).unwrap();
    assert_eq!(
        h.request(VIRTIO_BLK_T_OUT, 3, 1024, false),
        VIRTIO_BLK_S_OK as u8
    );
    assert_eq!(
        &h.disk.bytes.lock().unwrap()[3 * 512..3 * 512 + 1024],
        &data[..]
    );
    h.mem.write_slice(&[0u8; 1024], GuestAddress(DATA)).unwrap();
    assert_eq!(
        h.request(VIRTIO_BLK_T_IN, 3, 1024, true),
        VIRTIO_BLK_S_OK as u8
    );
    let mut back = vec![0u8; 1024];
    h.mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
    assert_eq!(back, data);
    // A read's used length counts the data and the status byte.
    assert_eq!(h.used(1), (3, 1025));
    assert!(h.irq.queue(0) >= 1);
}

#[test]
fn block_write_to_read_only_disk_fails_ioerr_and_leaves_disk() {
    let mut h = Harness::new(FakeDisk::new(), true, SyncMode::Relaxed);
    assert_ne!(h.device.avail_features() & (1 << VIRTIO_BLK_F_RO), 0);
    let before = h.disk.bytes.lock().unwrap().clone();
    h.mem.write_slice(&[0xaa; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(
        h.request(VIRTIO_BLK_T_OUT, 0, 512, false),
        VIRTIO_BLK_S_IOERR as u8
    );
    assert_eq!(
        h.request(VIRTIO_BLK_T_WRITE_ZEROES, 0, 16, false),
        VIRTIO_BLK_S_IOERR as u8
    );
    assert_eq!(*h.disk.bytes.lock().unwrap(), before);
}

#[test]
fn block_out_of_range_sectors_fail_ioerr() {
    let mut h = Harness::new(FakeDisk::new(), false, SyncMode::Relaxed);
    let last = (DISK_LEN / 512) as u64;
    assert_eq!(
        h.request(VIRTIO_BLK_T_IN, last, 512, true),
        VIRTIO_BLK_S_IOERR as u8
    );
    assert_eq!(
        h.request(VIRTIO_BLK_T_IN, last - 1, 1024, true),
        VIRTIO_BLK_S_IOERR as u8
    );
    assert_eq!(
        h.request(VIRTIO_BLK_T_OUT, u64::MAX, 512, false),
        VIRTIO_BLK_S_IOERR as u8
    );
    assert_eq!(
        h.request(VIRTIO_BLK_T_IN, last - 1, 512, true),
        VIRTIO_BLK_S_OK as u8
    );
}

#[test]
fn block_malformed_chains_complete_without_panic() {
    let mut h = Harness::new(FakeDisk::new(), false, SyncMode::Relaxed);
    // A header of 8 bytes: IOERR in the status byte.
    h.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    h.push(&[(HEADER, 8, false), (STATUS, 1, true)]);
    h.kick_and_wait();
    assert_eq!(h.status(STATUS), VIRTIO_BLK_S_IOERR as u8);
    // No writable status at the end: returned with nothing written.
    h.push(&[(HEADER, 16, false), (DATA, 512, false)]);
    h.kick_and_wait();
    assert_eq!(h.used(1).1, 0);
    // A read whose data buffer the device may not write.
    h.header(HEADER, VIRTIO_BLK_T_IN, 0);
    h.push(&[(HEADER, 16, false), (DATA, 512, false), (STATUS, 1, true)]);
    h.kick_and_wait();
    assert_eq!(h.status(STATUS), VIRTIO_BLK_S_IOERR as u8);
    // Buffers outside guest memory.
    h.header(HEADER, VIRTIO_BLK_T_IN, 0);
    h.push(&[
        (HEADER, 16, false),
        (0xf000_0000, 512, true),
        (STATUS, 1, true),
    ]);
    h.kick_and_wait();
    assert_eq!(h.status(STATUS), VIRTIO_BLK_S_IOERR as u8);
    // An unknown request type.
    assert_eq!(h.request(0x77, 0, 512, true), VIRTIO_BLK_S_UNSUPP as u8);
    // The header split over two descriptors, status in the data's last byte: still fine.
    h.header(HEADER, VIRTIO_BLK_T_IN, 1);
    h.mem.write_obj(0xffu8, GuestAddress(DATA + 512)).unwrap();
    h.push(&[
        (HEADER, 10, false),
        (HEADER + 10, 6, false),
        (DATA, 513, true),
    ]);
    h.kick_and_wait();
    assert_eq!(h.status(DATA + 512), VIRTIO_BLK_S_OK as u8);
    let mut got = [0u8; 4];
    h.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(
        got,
        [
            (512 % 251) as u8,
            (513 % 251) as u8,
            (514 % 251) as u8,
            (515 % 251) as u8
        ]
    );
}

#[test]
fn block_get_id_returns_the_block_id() {
    let mut h = Harness::new(FakeDisk::new(), false, SyncMode::Relaxed);
    h.mem.write_slice(&[0xee; 20], GuestAddress(DATA)).unwrap();
    assert_eq!(
        h.request(VIRTIO_BLK_T_GET_ID, 0, 20, true),
        VIRTIO_BLK_S_OK as u8
    );
    let mut id = [0u8; 20];
    h.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id, b"disk-serial-0\0\0\0\0\0\0\0");
}

#[test]
fn block_flush_reaches_the_disk_unless_sync_none() {
    let mut h = Harness::new(FakeDisk::new(), false, SyncMode::Relaxed);
    assert_ne!(h.device.avail_features() & (1 << VIRTIO_BLK_F_FLUSH), 0);
    assert_eq!(
        h.request(VIRTIO_BLK_T_FLUSH, 0, 0, false),
        VIRTIO_BLK_S_OK as u8
    );
    assert_eq!(h.disk.flushes.load(Ordering::SeqCst), 1);

    let mut none = Harness::new(FakeDisk::new(), false, SyncMode::None);
    assert_eq!(none.device.avail_features() & (1 << VIRTIO_BLK_F_FLUSH), 0);
    assert_eq!(
        none.request(VIRTIO_BLK_T_FLUSH, 0, 0, false),
        VIRTIO_BLK_S_OK as u8
    );
    assert_eq!(none.disk.flushes.load(Ordering::SeqCst), 0);
    // The VM ending flushes every writable disk, whatever the mode.
    none.device.shutdown();
    assert_eq!(none.disk.flushes.load(Ordering::SeqCst), 1);
}

#[test]
fn block_sync_full_flushes_every_write() {
    let mut h = Harness::new(FakeDisk::new(), false, SyncMode::Full);
    assert_eq!(
        h.request(VIRTIO_BLK_T_OUT, 0, 512, false),
        VIRTIO_BLK_S_OK as u8
    );
    assert_eq!(
        h.request(VIRTIO_BLK_T_OUT, 1, 512, false),
        VIRTIO_BLK_S_OK as u8
    );
    assert_eq!(h.disk.flushes.load(Ordering::SeqCst), 2);
}

#[test]
fn block_discard_frees_the_range_or_is_unsupported() {
    let disk = FakeDisk {
        discard: true,
        ..FakeDisk::new()
    };
    let mut h = Harness::new(disk, false, SyncMode::Relaxed);
    assert_ne!(h.device.avail_features() & (1 << VIRTIO_BLK_F_DISCARD), 0);
    // One range: sector 8, 16 sectors.
    h.mem.write_obj(8u64, GuestAddress(DATA)).unwrap();
    h.mem.write_obj(16u32, GuestAddress(DATA + 8)).unwrap();
    h.mem.write_obj(0u32, GuestAddress(DATA + 12)).unwrap();
    assert_eq!(
        h.request(VIRTIO_BLK_T_DISCARD, 0, 16, false),
        VIRTIO_BLK_S_OK as u8
    );
    assert_eq!(*h.disk.discards.lock().unwrap(), vec![(4096, 8192)]);
    // A range past the end, and a list of two ranges (more than max_discard_seg).
    h.mem.write_obj(u64::MAX / 512, GuestAddress(DATA)).unwrap();
    assert_eq!(
        h.request(VIRTIO_BLK_T_DISCARD, 0, 16, false),
        VIRTIO_BLK_S_IOERR as u8
    );
    assert_eq!(
        h.request(VIRTIO_BLK_T_DISCARD, 0, 32, false),
        VIRTIO_BLK_S_IOERR as u8
    );

    let mut plain = Harness::new(FakeDisk::new(), false, SyncMode::Relaxed);
    assert_eq!(
        plain.device.avail_features() & (1 << VIRTIO_BLK_F_DISCARD),
        0
    );
    plain.mem.write_obj(8u64, GuestAddress(DATA)).unwrap();
    plain.mem.write_obj(16u32, GuestAddress(DATA + 8)).unwrap();
    assert_eq!(
        plain.request(VIRTIO_BLK_T_DISCARD, 0, 16, false),
        VIRTIO_BLK_S_UNSUPP as u8
    );
}

#[test]
fn block_serves_requests_in_parallel() {
    let disk = FakeDisk {
        hold_first_read: true,
        ..FakeDisk::new()
    };
    let mut h = Harness::new(disk, false, SyncMode::None);
    // The read of sector 0 waits for the write of sector 8, queued after it: only a
    // device with two requests in flight completes both.
    h.header(HEADER, VIRTIO_BLK_T_IN, 0);
    h.push(&[(HEADER, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
    h.header(HEADER + 0x100, VIRTIO_BLK_T_OUT, 8);
    h.push(&[
        (HEADER + 0x100, 16, false),
        (DATA + 0x1000, 512, false),
        (STATUS + 1, 1, true),
    ]);
    h.kick_and_wait();
    assert_eq!(h.status(STATUS), VIRTIO_BLK_S_OK as u8);
    assert_eq!(h.status(STATUS + 1), VIRTIO_BLK_S_OK as u8);
    // The write finished first.
    assert_eq!(h.used(0).0, 3);
}

#[test]
fn block_config_space_gives_capacity_and_seg_max() {
    let h = Harness::new(FakeDisk::new(), false, SyncMode::Relaxed);
    let mut capacity = [0u8; 8];
    h.device.read_config(0, &mut capacity);
    assert_eq!(u64::from_le_bytes(capacity), (DISK_LEN / 512) as u64);
    let mut seg_max = [0u8; 4];
    h.device.read_config(12, &mut seg_max);
    assert_eq!(u32::from_le_bytes(seg_max), 254);
    assert_ne!(h.device.avail_features() & features::VIRTIO_F_VERSION_1, 0);
}

#[test]
fn block_reset_then_reactivate_serves_again() {
    let mut h = Harness::new(FakeDisk::new(), false, SyncMode::Relaxed);
    assert!(h.device.reset());
    let mock = MockSplitQueue::create(h.mem, GuestAddress(0x8_0000), 16);
    let (queue, _kick) = active_queue(&mock);
    h.device
        .activate(ActivationContext {
            mem: h.mem.clone(),
            queues: vec![queue],
            interrupt: h.irq.clone(),
            acked_features: 0,
            faults: std::sync::Arc::new(crate::virtio::NoFaultSink),
        })
        .expect("activate after reset");
    h.device.shutdown();
}

#[test]
fn raw_file_reads_writes_punches_holes_and_zeroes() {
    let dir = std::env::temp_dir().join(format!("blk-raw-{}", std::process::id()));
    std::fs::write(&dir, vec![0x5au8; 1 << 20]).unwrap();
    let raw = RawFile::open(&dir, false, false).unwrap();
    assert_eq!(raw.size(), 1 << 20);
    raw.write_at(b"hello", 4096).unwrap();
    let mut back = [0u8; 5];
    raw.read_at(&mut back, 4096).unwrap();
    assert_eq!(&back, b"hello");
    assert!(raw.can_discard());
    raw.discard(0, 1 << 19).unwrap();
    raw.read_at(&mut back, 4096).unwrap();
    assert_eq!(back, [0; 5]);
    raw.write_zeroes(1 << 19, 4096, false).unwrap();
    let mut z = [1u8; 4096];
    raw.read_at(&mut z, 1 << 19).unwrap();
    assert_eq!(z, [0u8; 4096]);
    raw.flush().unwrap();
    let ro = RawFile::open(&dir, true, true).unwrap();
    assert!(ro.write_at(b"x", 0).is_err());
    std::fs::remove_file(&dir).unwrap();
}

/// `qemu-img` with `args`, or None (the test then skips) where it is not installed.
fn qemu_img(args: &[&str]) -> Option<()> {
    let out = std::process::Command::new("qemu-img")
        .args(args)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(())
}

#[test]
fn image_file_qcow2_writes_land_in_the_overlay_not_the_backing_file() {
    let dir = std::env::temp_dir().join(format!("blk-qcow2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = dir.join("base.qcow2");
    let overlay = dir.join("overlay.qcow2");
    let (b, o) = (base.to_str().unwrap(), overlay.to_str().unwrap());
    if qemu_img(&["create", "-f", "qcow2", b, "1M"]).is_none() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    {
        let disk = super::open(&super::DiskOptions {
            path: base.clone(),
            format: super::Format::Qcow2,
            read_only: false,
            direct_io: false,
        })
        .unwrap();
        disk.write_at(b"from the base", 8192).unwrap();
        disk.flush().unwrap();
    }
    qemu_img(&["create", "-f", "qcow2", "-b", b, "-F", "qcow2", o]).unwrap();
    let base_before = std::fs::read(&base).unwrap();
    let disk = super::open(&super::DiskOptions {
        path: overlay.clone(),
        format: super::Format::Qcow2,
        read_only: false,
        direct_io: false,
    })
    .unwrap();
    assert_eq!(disk.size(), 1 << 20);
    let mut got = [0u8; 13];
    disk.read_at(&mut got, 8192).unwrap();
    assert_eq!(&got, b"from the base", "read through to the backing file");
    disk.write_at(b"from overlay!", 8192).unwrap();
    disk.flush().unwrap();
    disk.read_at(&mut got, 8192).unwrap();
    assert_eq!(&got, b"from overlay!");
    drop(disk);
    assert_eq!(
        std::fs::read(&base).unwrap(),
        base_before,
        "backing file unchanged"
    );
    qemu_img(&["check", o]).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn image_file_corrupt_qcow2_header_is_invalid_data() {
    let path = std::env::temp_dir().join(format!("blk-bad-{}.qcow2", std::process::id()));
    std::fs::write(
        &path,
        b"QFI\xfbnot a qcow2 header at all, just some bytes.........",
    )
    .unwrap();
    let err = super::open(&super::DiskOptions {
        path: path.clone(),
        format: super::Format::Qcow2,
        read_only: true,
        direct_io: false,
    })
    .err()
    .expect("a corrupt header fails to open");
    assert_eq!(err.raw_os_error(), None, "{err}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn image_file_qcow2_is_consistent_without_a_flush_as_after_sigkill() {
    let path = std::env::temp_dir().join(format!("blk-kill-{}.qcow2", std::process::id()));
    let p = path.to_str().unwrap();
    if qemu_img(&["create", "-f", "qcow2", p, "16M"]).is_none() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let disk = super::open(&super::DiskOptions {
        path: path.clone(),
        format: super::Format::Qcow2,
        read_only: false,
        direct_io: false,
    })
    .unwrap();
    // New L2 table and data clusters, then more data clusters in the same table.
    for i in 0..8u64 {
        disk.write_at(&[0xab; 4096], i * 1_048_576).unwrap();
    }
    // No flush and no Drop: what is in the file is what a killed VMM leaves.
    std::mem::forget(disk);
    let out = std::process::Command::new("qemu-img")
        .args(["check", p])
        .output()
        .unwrap();
    // 0: clean; 3: leaked clusters only (space, never data).
    let code = out.status.code();
    assert!(
        matches!(code, Some(0) | Some(3)),
        "qemu-img check: {code:?} {}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::remove_file(&path).unwrap();
}

/// The discard part of the config space (5.2.4): max_discard_sectors, max_discard_seg,
/// discard_sector_alignment, and write_zeroes_may_unmap.
fn discard_config<D: DiskBackend + 'static>(h: &Harness<D>) -> (u32, u32, u32, u8) {
    let word = |at: u64| {
        let mut b = [0u8; 4];
        h.device.read_config(at, &mut b);
        u32::from_le_bytes(b)
    };
    let mut unmap = [0u8; 1];
    h.device.read_config(56, &mut unmap);
    (word(36), word(40), word(44), unmap[0])
}

/// A DISCARD of sectors 16..24 (one range); returns the status byte.
fn discard_sectors_16_to_24<D: DiskBackend + 'static>(h: &mut Harness<D>) -> u8 {
    h.mem.write_obj(16u64, GuestAddress(DATA)).unwrap();
    h.mem.write_obj(8u32, GuestAddress(DATA + 8)).unwrap();
    h.mem.write_obj(0u32, GuestAddress(DATA + 12)).unwrap();
    h.request(VIRTIO_BLK_T_DISCARD, 0, 16, false)
}

#[test]
fn image_file_qcow2_and_vmdk_offer_no_discard_and_refuse_it_unchanged() {
    // imago 0.2.6 frees qcow2 clusters on discard (only with exclusive access to the image)
    // but never punches the host file, and has no vmdk discard: neither format offers
    // VIRTIO_BLK_F_DISCARD, a guest's DISCARD request gets UNSUPP and changes nothing.
    let dir = std::env::temp_dir().join(format!("blk-nodiscard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (raw, qcow2, vmdk) = (dir.join("d.raw"), dir.join("d.qcow2"), dir.join("d.vmdk"));
    let pattern: Vec<u8> = (0..1 << 20).map(|i| (i % 253) as u8 | 1).collect();
    std::fs::write(&raw, &pattern).unwrap();
    let (r, q, v) = (
        raw.to_str().unwrap(),
        qcow2.to_str().unwrap(),
        vmdk.to_str().unwrap(),
    );
    if qemu_img(&["convert", "-f", "raw", "-O", "qcow2", r, q]).is_none() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        "subformat=monolithicFlat",
        r,
        v,
    ])
    .unwrap();
    let open = |path: &std::path::Path, format, read_only| {
        super::ImageFile::open(&super::DiskOptions {
            path: path.to_path_buf(),
            format,
            read_only,
            direct_io: false,
        })
        .unwrap()
    };

    let image = open(&qcow2, super::Format::Qcow2, false);
    assert!(!image.can_discard());
    let err = image.discard(8192, 4096).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Unsupported);
    let mut h = Harness::new(image, false, SyncMode::Relaxed);
    let feats = h.device.avail_features();
    assert_eq!(
        feats & (1 << VIRTIO_BLK_F_DISCARD),
        0,
        "qcow2: DISCARD offered"
    );
    assert_ne!(feats & (1 << VIRTIO_BLK_F_WRITE_ZEROES), 0);
    assert_eq!(discard_config(&h), (0, 0, 0, 0));
    assert_eq!(discard_sectors_16_to_24(&mut h), VIRTIO_BLK_S_UNSUPP as u8);
    let mut got = vec![0u8; 4096];
    h.disk.read_at(&mut got, 8192).unwrap();
    assert_eq!(
        got,
        pattern[8192..12288],
        "qcow2: the refused discard changed data"
    );
    drop(h);
    qemu_img(&["check", q]).unwrap();

    // vmdk: the VMM serves it read-only (vmm's add_block), so no DISCARD nor WRITE_ZEROES.
    let image = open(&vmdk, super::Format::Vmdk, true);
    assert!(!image.can_discard());
    let mut h = Harness::new(image, true, SyncMode::Relaxed);
    let feats = h.device.avail_features();
    assert_eq!(
        feats & (1 << VIRTIO_BLK_F_DISCARD),
        0,
        "vmdk: DISCARD offered"
    );
    assert_eq!(feats & (1 << VIRTIO_BLK_F_WRITE_ZEROES), 0);
    assert_ne!(feats & (1 << VIRTIO_BLK_F_RO), 0);
    assert_eq!(discard_config(&h), (0, 0, 0, 0));
    assert_eq!(discard_sectors_16_to_24(&mut h), VIRTIO_BLK_S_IOERR as u8);
    drop(h);
    let flat = std::fs::read(dir.join("d-flat.vmdk")).unwrap();
    assert_eq!(flat, pattern, "vmdk: the flat extent changed");
    std::fs::remove_dir_all(&dir).unwrap();
}
