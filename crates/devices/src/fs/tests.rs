//! Drives the whole device through mock virtqueues, playing the guest's FUSE driver.

use std::io;
use std::mem::size_of;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuse_backend_rs::abi::fuse_abi::{
    AttrOut, EntryOut, InHeader, InitIn, InitOut, IoctlIn, IoctlOut, Opcode, OutHeader, ROOT_ID,
};
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Address, ByteValued, Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::tempdir::TempDir;

use super::device::*;
use super::*;
use crate::fs::backend::FIRST_VIRTUAL_INODE as INIT_INODE;
use crate::fs::{VirtualEntries, VirtualEntry, KRUN_EXIT_CODE_IOCTL};
use crate::test_support::{active_queue, guest_memory, CountingInterrupt};
use crate::virtio::{features, ActivateError, ActivationContext, VirtioDevice};
use crate::GuestMemory;

const INIT: &[u8] = b"guest init bytes";
const HIPRIO_RING: u64 = 0x0;
const REQUEST_RING: u64 = 0x1_0000;
const BUFFERS: u64 = 0x10_0000;
const BUFFER_LEN: u32 = 0x1000;
const QUEUE_LEN: u16 = 16;
const FUSE_IOCTL_DIR: u32 = 1 << 4;

/// The guest side of the request queue: writes requests, adds chains, waits for replies.
struct Driver<'a> {
    mem: &'a GuestMemory,
    queue: MockSplitQueue<'a, GuestMemory>,
    notify_evt: EventFd,
    /// Kept open while the device runs: the worker watches it.
    _hiprio_evt: EventFd,
    next_desc: u16,
    next_unique: u64,
    used: u16,
}

impl Driver<'_> {
    /// Sends one FUSE request and returns the reply header and body once the device has
    /// put the chain in the used ring.
    fn call(&mut self, opcode: Opcode, nodeid: u64, body: &[u8]) -> (OutHeader, Vec<u8>) {
        let header = InHeader {
            len: (size_of::<InHeader>() + body.len()) as u32,
            opcode: opcode as u32,
            unique: self.next_unique,
            nodeid,
            uid: 0,
            gid: 0,
            pid: 1,
            padding: 0,
        };
        self.next_unique += 1;
        let mut request = header.as_slice().to_vec();
        request.extend_from_slice(body);
        let request_addr = BUFFERS + u64::from(self.next_desc) * u64::from(BUFFER_LEN);
        let reply_addr = request_addr + u64::from(BUFFER_LEN);
        self.mem
            .write_slice(&request, GuestAddress(request_addr))
            .unwrap();
        let chain = [
            RawDescriptor::from(SplitDescriptor::new(
                request_addr,
                request.len() as u32,
                VRING_DESC_F_NEXT as u16,
                self.next_desc + 1,
            )),
            RawDescriptor::from(SplitDescriptor::new(
                reply_addr,
                BUFFER_LEN,
                VRING_DESC_F_WRITE as u16,
                0,
            )),
        ];
        self.queue.add_desc_chains(&chain, self.next_desc).unwrap();
        self.next_desc += 2;
        self.notify_evt.write(1).unwrap();

        self.used += 1;
        let used_idx_addr = self.queue.used_addr().unchecked_add(2);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.mem.read_obj::<u16>(used_idx_addr).unwrap() < self.used {
            assert!(Instant::now() < deadline, "the device did not answer");
            std::thread::sleep(Duration::from_millis(1));
        }
        let elem = self
            .queue
            .used_addr()
            .unchecked_add(4 + 8 * u64::from(self.used - 1));
        let len = self.mem.read_obj::<u32>(elem.unchecked_add(4)).unwrap() as usize;
        let mut reply = vec![0u8; len];
        self.mem
            .read_slice(&mut reply, GuestAddress(reply_addr))
            .unwrap();
        let out = *OutHeader::from_slice(&reply[..size_of::<OutHeader>()]).unwrap();
        assert_eq!(out.unique, header.unique);
        assert_eq!(out.len as usize, len);
        (out, reply[size_of::<OutHeader>()..].to_vec())
    }
}

fn config(dir: &TempDir) -> FsConfig {
    FsConfig {
        tag: "/dev/root".to_owned(),
        path: Some(dir.as_path().to_owned()),
        read_only: false,
        entries: VirtualEntries::from_entries([VirtualEntry::init(INIT)]).unwrap(),
        exit_code: Some(ExitCode::new()),
        simplified: false,
        layers: Vec::new(),
        custom: None,
        dax: None,
    }
}

/// Activates `fs` on fresh hiprio and request queues in `mem` and returns the driver of the
/// request queue.
fn activate<'a>(
    fs: &mut Fs,
    mem: &'a GuestMemory,
    interrupt: Arc<CountingInterrupt>,
) -> Driver<'a> {
    let hiprio = MockSplitQueue::create(mem, GuestAddress(HIPRIO_RING), QUEUE_LEN);
    let request = MockSplitQueue::create(mem, GuestAddress(REQUEST_RING), QUEUE_LEN);
    let (hiprio_queue, hiprio_evt) = active_queue(&hiprio);
    let (request_queue, request_evt) = active_queue(&request);
    fs.activate(ActivationContext {
        mem: mem.clone(),
        queues: vec![hiprio_queue, request_queue],
        interrupt,
        acked_features: features::VIRTIO_F_VERSION_1,
        faults: std::sync::Arc::new(crate::virtio::NoFaultSink),
    })
    .unwrap();
    Driver {
        mem,
        queue: request,
        notify_evt: request_evt,
        _hiprio_evt: hiprio_evt,
        next_desc: 0,
        next_unique: 1,
        used: 0,
    }
}

#[test]
fn fs_init_and_lookup_through_virtqueue_reply() {
    let dir = TempDir::new_with_prefix("/tmp/krun-fs-dev-").unwrap();
    std::fs::write(dir.as_path().join("hello"), b"hello world").unwrap();
    let exit_code = ExitCode::new();
    let mut cfg = config(&dir);
    cfg.exit_code = Some(exit_code.clone());
    let mut fs = Fs::new(cfg).unwrap();
    let mem = guest_memory(0x40_0000);
    let interrupt = Arc::new(CountingInterrupt::default());
    let mut driver = activate(&mut fs, &mem, interrupt.clone());

    let init_in = InitIn {
        major: 7,
        minor: 31,
        max_readahead: 0x20000,
        flags: 0,
    };
    let (init_hdr, init_body) = driver.call(Opcode::Init, 0, init_in.as_slice());
    let (hello_hdr, hello_body) = driver.call(Opcode::Lookup, ROOT_ID, b"hello\0");
    let (krun_hdr, krun_body) = driver.call(Opcode::Lookup, ROOT_ID, b"init.krun\0");
    let (up_hdr, up_body) = driver.call(Opcode::Lookup, ROOT_ID, b"..\0");
    let ioctl_in = IoctlIn {
        fh: 0,
        flags: FUSE_IOCTL_DIR,
        cmd: KRUN_EXIT_CODE_IOCTL,
        arg: 42,
        in_size: 0,
        out_size: 0,
    };
    let (ioctl_hdr, ioctl_body) = driver.call(Opcode::Ioctl, ROOT_ID, ioctl_in.as_slice());
    fs.shutdown();

    assert_eq!(init_hdr.error, 0);
    let init_out = InitOut::from_slice(&init_body[..size_of::<InitOut>()]).unwrap();
    assert_eq!(init_out.major, 7);

    assert_eq!(hello_hdr.error, 0);
    let hello = EntryOut::from_slice(&hello_body[..size_of::<EntryOut>()]).unwrap();
    assert!(hello.nodeid > ROOT_ID && hello.nodeid < INIT_INODE);
    assert_eq!(hello.attr.size, 11);
    assert_eq!(hello.attr.mode & libc::S_IFMT, libc::S_IFREG);

    assert_eq!(krun_hdr.error, 0);
    let krun = EntryOut::from_slice(&krun_body[..size_of::<EntryOut>()]).unwrap();
    assert_eq!(
        (krun.nodeid, krun.attr.size),
        (INIT_INODE, INIT.len() as u64)
    );
    assert!(!dir.as_path().join("init.krun").exists());

    assert_eq!(up_hdr.error, 0);
    let up = EntryOut::from_slice(&up_body[..size_of::<EntryOut>()]).unwrap();
    assert_eq!(up.nodeid, ROOT_ID);

    assert_eq!(ioctl_hdr.error, 0);
    let ioctl_out = IoctlOut::from_slice(&ioctl_body[..size_of::<IoctlOut>()]).unwrap();
    assert_eq!(ioctl_out.result, 0);
    assert_eq!(exit_code.get(), Some(42));
    assert!(interrupt.queues_total() >= 5);
}

#[test]
fn fs_lookup_missing_file_replies_enoent() {
    let dir = TempDir::new_with_prefix("/tmp/krun-fs-dev-").unwrap();
    let mut fs = Fs::new(config(&dir)).unwrap();
    let mem = guest_memory(0x40_0000);
    let mut driver = activate(&mut fs, &mem, Arc::new(CountingInterrupt::default()));
    let init_in = InitIn {
        major: 7,
        minor: 31,
        max_readahead: 0,
        flags: 0,
    };
    driver.call(Opcode::Init, 0, init_in.as_slice());

    let (hdr, body) = driver.call(Opcode::Lookup, ROOT_ID, b"missing\0");

    assert_eq!(hdr.error, -libc::ENOENT);
    assert!(body.is_empty());
    assert!(fs.reset());
}

/// The INIT reply turns on 1 MiB requests and the concurrency options (without them the
/// guest writes in 4 KiB requests), echoes the guest's readahead, and never writeback caching.
#[test]
fn fs_init_reply_enables_large_requests_and_not_writeback() {
    use fuse_backend_rs::abi::fuse_abi::FsOptions;
    let dir = TempDir::new_with_prefix("/tmp/krun-fs-dev-").unwrap();
    let mut fs = Fs::new(config(&dir)).unwrap();
    let mem = guest_memory(0x40_0000);
    let mut driver = activate(&mut fs, &mem, Arc::new(CountingInterrupt::default()));
    let wanted = FsOptions::MAX_PAGES
        | FsOptions::BIG_WRITES
        | FsOptions::ASYNC_READ
        | FsOptions::PARALLEL_DIROPS
        | FsOptions::AUTO_INVAL_DATA
        | FsOptions::ASYNC_DIO
        | FsOptions::DO_READDIRPLUS;
    let offered = wanted | FsOptions::WRITEBACK_CACHE | FsOptions::HANDLE_KILLPRIV_V2;
    let init_in = InitIn {
        major: 7,
        minor: 31,
        max_readahead: 0x20000,
        flags: u32::try_from(offered.bits()).unwrap(),
    };
    let (hdr, body) = driver.call(Opcode::Init, 0, init_in.as_slice());
    fs.shutdown();

    assert_eq!(hdr.error, 0);
    let out = InitOut::from_slice(&body[..size_of::<InitOut>()]).unwrap();
    assert_eq!(u64::from(out.flags) & offered.bits(), wanted.bits());
    assert_eq!(out.max_write, 1 << 20);
    assert_eq!(out.max_pages, 256);
    assert_eq!(out.max_readahead, 0x20000);
}

#[test]
fn fs_config_space_holds_tag_and_queue_count() {
    let dir = TempDir::new_with_prefix("/tmp/krun-fs-dev-").unwrap();
    let fs = Fs::new(config(&dir)).unwrap();
    let mut space = [0xffu8; CONFIG_SPACE_LEN + 4];

    fs.read_config(0, &mut space);

    assert_eq!(&space[..9], b"/dev/root");
    assert!(space[9..TAG_LEN].iter().all(|&b| b == 0));
    assert_eq!(&space[TAG_LEN..TAG_LEN + 4], &1u32.to_le_bytes());
    assert!(space[CONFIG_SPACE_LEN..].iter().all(|&b| b == 0));
    let mut tail = [0xffu8; 4];
    fs.read_config(TAG_LEN as u64, &mut tail);
    assert_eq!(tail, 1u32.to_le_bytes());
    assert_eq!(fs.device_type(), 26);
    assert_eq!(fs.queue_max_sizes().len(), 2);
    assert_eq!(fs.avail_features(), features::VIRTIO_F_VERSION_1);
}

#[test]
fn fs_new_bad_tag_or_path_fails() {
    let dir = TempDir::new_with_prefix("/tmp/krun-fs-dev-").unwrap();
    let file = dir.as_path().join("file");
    std::fs::write(&file, b"").unwrap();
    let with = |tag: &str, path: PathBuf| FsConfig {
        tag: tag.to_owned(),
        path: Some(path),
        ..config(&dir)
    };

    let long_tag = Fs::new(with(&"x".repeat(TAG_LEN + 1), dir.as_path().to_owned()));
    let empty_tag = Fs::new(with("", dir.as_path().to_owned()));
    let missing = Fs::new(with("t", dir.as_path().join("missing")));
    let not_dir = Fs::new(with("t", file));
    let max_tag = Fs::new(with(&"x".repeat(TAG_LEN), dir.as_path().to_owned()));

    assert_eq!(long_tag.err().unwrap().kind(), io::ErrorKind::InvalidInput);
    assert_eq!(empty_tag.err().unwrap().kind(), io::ErrorKind::InvalidInput);
    assert_eq!(missing.err().unwrap().kind(), io::ErrorKind::NotFound);
    assert_eq!(not_dir.err().unwrap().kind(), io::ErrorKind::NotADirectory);
    assert!(max_tag.is_ok());
}

#[test]
fn fs_activate_with_one_queue_fails() {
    let dir = TempDir::new_with_prefix("/tmp/krun-fs-dev-").unwrap();
    let mut fs = Fs::new(config(&dir)).unwrap();
    let mem = guest_memory(0x40_0000);
    let hiprio = MockSplitQueue::create(&mem, GuestAddress(HIPRIO_RING), QUEUE_LEN);
    let (queue, _) = active_queue(&hiprio);

    let result = fs.activate(ActivationContext {
        mem: mem.clone(),
        queues: vec![queue],
        interrupt: Arc::new(CountingInterrupt::default()),
        acked_features: features::VIRTIO_F_VERSION_1,
        faults: std::sync::Arc::new(crate::virtio::NoFaultSink),
    });

    assert!(matches!(
        result,
        Err(ActivateError::QueueCount { need: 2, got: 1 })
    ));
}

#[test]
fn fs_null_share_serves_init_and_a_virtual_dir_through_virtqueue() {
    let entries =
        VirtualEntries::from_entries([VirtualEntry::init(INIT), VirtualEntry::dir("proc", 0o555)])
            .unwrap();
    let mut fs = Fs::new(FsConfig {
        tag: "/dev/root".to_owned(),
        path: None,
        read_only: false,
        entries,
        exit_code: None,
        simplified: false,
        layers: Vec::new(),
        custom: None,
        dax: None,
    })
    .unwrap();
    let mem = guest_memory(0x40_0000);
    let mut driver = activate(&mut fs, &mem, Arc::new(CountingInterrupt::default()));
    let init_in = InitIn {
        major: 7,
        minor: 31,
        max_readahead: 0,
        flags: 0,
    };

    let (init_hdr, _) = driver.call(Opcode::Init, 0, init_in.as_slice());
    let (root_hdr, root_body) = driver.call(Opcode::Getattr, ROOT_ID, &[0u8; 16]);
    let (krun_hdr, krun_body) = driver.call(Opcode::Lookup, ROOT_ID, b"init.krun\0");
    let (proc_hdr, proc_body) = driver.call(Opcode::Lookup, ROOT_ID, b"proc\0");
    let (bin_hdr, _) = driver.call(Opcode::Lookup, ROOT_ID, b"bin\0");
    fs.shutdown();

    assert_eq!((init_hdr.error, root_hdr.error), (0, 0));
    let root = AttrOut::from_slice(&root_body[..size_of::<AttrOut>()]).unwrap();
    assert_eq!(root.attr.mode & libc::S_IFMT, libc::S_IFDIR);
    assert_eq!(krun_hdr.error, 0);
    let krun = EntryOut::from_slice(&krun_body[..size_of::<EntryOut>()]).unwrap();
    assert_eq!(krun.attr.size, INIT.len() as u64);
    assert_eq!(proc_hdr.error, 0);
    let proc_dir = EntryOut::from_slice(&proc_body[..size_of::<EntryOut>()]).unwrap();
    assert_eq!(proc_dir.attr.mode & libc::S_IFMT, libc::S_IFDIR);
    assert_eq!(bin_hdr.error, -libc::ENOENT);
}

#[test]
fn fs_with_dax_window_offers_cache_region_only() {
    let dir = TempDir::new_with_prefix("/tmp/krun-fs-dev-").unwrap();
    let window = crate::fs::dax::fake::FakeWindow::new(64 << 20);
    let with = Fs::new(FsConfig {
        dax: Some(window),
        ..config(&dir)
    })
    .unwrap();
    let without = Fs::new(config(&dir)).unwrap();

    assert_eq!(
        with.shm_region(crate::fs::CACHE_SHM_ID),
        Some(crate::virtio::ShmRegion {
            base: 0x1_0000_0000,
            len: 64 << 20
        })
    );
    assert_eq!(with.shm_region(1), None);
    assert_eq!(without.shm_region(crate::fs::CACHE_SHM_ID), None);
}
