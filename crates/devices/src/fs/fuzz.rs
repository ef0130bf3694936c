//! virtio-fs under a hostile driver: garbage request chains carrying FUSE requests with
//! lying lengths, unknown opcodes, bad node ids and huge read/write sizes never panic the
//! worker, everything they do stays inside the shared directory, and a good INIT and
//! GETATTR after them are answered.

use std::mem::size_of;
use std::sync::Arc;

use fuse_backend_rs::abi::fuse_abi::{InHeader, OutHeader};
use proptest::prelude::*;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{ByteValued, Bytes, GuestAddress};
use vmm_sys_util::tempdir::TempDir;

use super::device::{Fs, FsConfig};
use super::{VirtualEntries, VirtualEntry};
use crate::fuzz_support::{self, mutated, Driver, Garbage, GOOD, MEM_SIZE, QUEUE_SIZE};
use crate::test_support::{active_queue, guest_memory, CountingInterrupt};
use crate::virtio::{features, ActivationContext, VirtioDevice};

const FUSE_LOOKUP: u32 = 1;
const FUSE_GETATTR: u32 = 3;
const FUSE_OPEN: u32 = 14;
const FUSE_READ: u32 = 15;
const FUSE_WRITE: u32 = 16;
const FUSE_INIT: u32 = 26;
const FUSE_READDIR: u32 = 28;
const FUSE_CREATE: u32 = 35;

fn request(opcode: u32, nodeid: u64, body: &[u8]) -> Vec<u8> {
    let h = InHeader {
        len: (size_of::<InHeader>() + body.len()) as u32,
        opcode,
        unique: 7,
        nodeid,
        uid: 0,
        gid: 0,
        pid: 1,
        padding: 0,
    };
    let mut b = h.as_slice().to_vec();
    b.extend_from_slice(body);
    b
}

/// Bodies of the requests the garbage starts from (then mutated).
fn templates() -> Vec<Vec<u8>> {
    let rw = |size: u32| {
        let mut b = 1u64.to_le_bytes().to_vec(); // fh
        b.extend_from_slice(&0u64.to_le_bytes()); // offset
        b.extend_from_slice(&size.to_le_bytes());
        b.extend_from_slice(&[0u8; 20]); // flags, lock_owner, etc.
        b.extend_from_slice(b"payload");
        b
    };
    vec![
        request(
            FUSE_INIT,
            0,
            &[7, 0, 0, 0, 31, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0],
        ),
        request(FUSE_LOOKUP, 1, b"hello\0"),
        request(FUSE_LOOKUP, 1, b"..\0"),
        request(FUSE_GETATTR, 1, &[0u8; 16]),
        request(FUSE_OPEN, 2, &[2, 0, 0, 0, 0, 0, 0, 0]),
        request(FUSE_READ, 2, &rw(4096)),
        request(FUSE_READ, 2, &rw(u32::MAX)),
        request(FUSE_WRITE, 2, &rw(7)),
        request(FUSE_WRITE, 2, &rw(0x7fff_ffff)),
        request(FUSE_READDIR, 1, &rw(0x10_0000)),
        request(
            FUSE_CREATE,
            1,
            &[&[0o102u8, 0, 0, 0][..], &[0xa4, 1, 0, 0], &[0; 8], b"new\0"].concat(),
        ),
    ]
}

fn fuse_request() -> BoxedStrategy<Vec<u8>> {
    prop::sample::select(templates())
        .prop_flat_map(mutated)
        .boxed()
}

/// Sends one good request and returns the reply header, or None if none came.
fn call(
    driver: &mut Driver,
    kick: &vmm_sys_util::eventfd::EventFd,
    req: &[u8],
) -> Option<OutHeader> {
    driver.fill_good(0);
    driver.mem.write_slice(req, GuestAddress(GOOD)).unwrap();
    let reply = GOOD + 0x1000;
    let head = driver.push(&[(GOOD, req.len() as u32, false), (reply, 0x1000, true)]);
    kick.write(1).unwrap();
    let len = driver.wait_used(head)?;
    let out: OutHeader = driver.mem.read_obj(GuestAddress(reply)).unwrap();
    assert_eq!(out.len, len, "the used length is the reply's");
    Some(out)
}

fn run(g: &Garbage, kick_garbage: bool) {
    let dir = TempDir::new_with_prefix("/tmp/krun-fs-fuzz-").unwrap();
    std::fs::write(dir.as_path().join("hello"), b"hello world").unwrap();
    let outside = TempDir::new_with_prefix("/tmp/krun-fs-fuzz-outside-").unwrap();
    std::fs::write(outside.as_path().join("canary"), b"canary").unwrap();
    let mut fs = Fs::new(FsConfig {
        tag: "fuzz".into(),
        path: Some(dir.as_path().to_owned()),
        read_only: false,
        entries: VirtualEntries::from_entries([VirtualEntry::init(b"init")]).unwrap(),
        exit_code: None,
        simplified: false,
        layers: Vec::new(),
        custom: None,
        dax: None,
    })
    .unwrap();
    let mem = guest_memory(MEM_SIZE as usize);
    let request_q = MockSplitQueue::create(&mem, GuestAddress(0), QUEUE_SIZE);
    let hiprio_q = MockSplitQueue::create(&mem, GuestAddress(0x1000), QUEUE_SIZE);
    let (hiprio, _hiprio_kick) = active_queue(&hiprio_q);
    let (request_queue, kick) = active_queue(&request_q);
    fs.activate(ActivationContext {
        mem: mem.clone(),
        queues: vec![hiprio, request_queue],
        interrupt: Arc::new(CountingInterrupt::default()),
        acked_features: features::VIRTIO_F_VERSION_1,
        faults: std::sync::Arc::new(crate::virtio::NoFaultSink),
    })
    .unwrap();
    let mut driver = Driver::new(&mem, &request_q);

    driver.scribble(g);
    if kick_garbage {
        kick.write(1).unwrap();
        driver.settle();
        driver.repair();
        kick.write(1).unwrap();
        driver.settle();
    }

    let init = call(&mut driver, &kick, &templates()[0]);
    let getattr = call(&mut driver, &kick, &request(FUSE_GETATTR, 1, &[0u8; 16]));
    fs.shutdown();

    assert_eq!(
        std::fs::read(outside.as_path().join("canary")).unwrap(),
        b"canary"
    );
    if g.clobbers_avail(&request_q) {
        return;
    }
    assert!(init.is_some(), "INIT after the garbage is answered");
    let getattr = getattr.expect("GETATTR after the garbage is answered");
    assert_eq!((getattr.error, getattr.unique), (0, 7));
    assert_eq!(
        std::fs::read(outside.as_path().join("canary")).unwrap(),
        b"canary"
    );
    assert_eq!(std::fs::read_dir(outside.as_path()).unwrap().count(), 1);
}

proptest! {
    #![proptest_config(fuzz_support::config())]

    #[test]
    fn fs_garbage_fuse_requests_then_good_requests_served(
        g in fuzz_support::garbage(fuse_request())
    ) {
        run(&g, true);
    }
}

/// A head past the descriptor table (it cannot be returned) does not keep a good request
/// queued behind it from being served on the same notification.
#[test]
fn fs_request_behind_an_invalid_head_is_served_on_the_same_notify() {
    let g = Garbage {
        table: vec![(0, 0, 0, 0); usize::from(QUEUE_SIZE)],
        heads: vec![29590],
        bogus_avail: None,
        payloads: vec![Vec::new(); usize::from(QUEUE_SIZE)],
    };
    run(&g, false);
}
