//! What the devices' fuzz harnesses (`src/<dev>/fuzz.rs`) share: a hostile driver that fills
//! a queue's descriptor table and avail ring with generated garbage (short, overlapping,
//! out-of-range, looping, zero-length, wrongly-directed and huge descriptors, heads past the
//! table, avail indexes past the ring), and a well-behaved driver that then puts one good
//! chain after it and finds its answer in the used ring.
//!
//! Memory layout every harness uses: rings below [`GARBAGE`], guest-chosen garbage buffers in
//! `GARBAGE..GOOD`, the good request's buffers from [`GOOD`] on (garbage never points there,
//! so a late write of a garbage request cannot fake the good answer), [`MEM_SIZE`] in all.
//!
//! Case counts: 64 per property, or `PROPTEST_CASES` from the environment (`make fuzz`).

use std::time::Duration;

use proptest::prelude::*;
use virtio_bindings::bindings::virtio_ring::{
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use crate::test_support::wait_until;
use crate::GuestMemory;

/// Guest memory size of every harness.
pub const MEM_SIZE: u64 = 0x10_0000;
/// Start of the region garbage buffers point into.
pub const GARBAGE: u64 = 0x1_0000;
/// Start of the good request's buffers; garbage stays below.
pub const GOOD: u64 = 0x8_0000;
/// Descriptors per queue in the harnesses.
pub const QUEUE_SIZE: u16 = 16;
/// The good chain's descriptors: the top of the table.
pub const GOOD_DESC: u16 = QUEUE_SIZE - 4;
/// How long a harness waits for a device thread to answer the good request.
pub const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// The proptest configuration of every harness: 64 cases unless `PROPTEST_CASES` says more,
/// and no failure persistence files in the source tree.
pub fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A hostile driver's view of one queue: the whole descriptor table, the heads it puts on
/// the avail ring, whether it then writes an avail index past the ring, and bytes it leaves
/// at each head's buffer (a mutated device header, so parsing gets past the first check).
#[derive(Debug, Clone)]
pub struct Garbage {
    pub table: Vec<(u64, u32, u16, u16)>,
    pub heads: Vec<u16>,
    pub bogus_avail: Option<u16>,
    pub payloads: Vec<Vec<u8>>,
}

fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => GARBAGE..GOOD - 0x1000,
        1 => 0..0x1000u64,                        // over the rings themselves
        1 => GOOD - 0x1000..GOOD,                 // buffers running towards GOOD
        1 => MEM_SIZE - 64..MEM_SIZE,             // straddling the end of memory
        1 => MEM_SIZE..MEM_SIZE + (1u64 << 32),   // past the end
        1 => (u64::MAX - 64)..=u64::MAX,          // wrapping
    ]
}

fn len() -> impl Strategy<Value = u32> {
    prop_oneof![
        1 => Just(0u32),
        3 => 1..64u32,
        2 => 64..0x4000u32,
        1 => prop::sample::select(vec![1u32 << 20, 0x7fff_ffff, 0x8000_0000, u32::MAX]),
    ]
}

fn flags() -> impl Strategy<Value = u16> {
    let known = (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE | VRING_DESC_F_INDIRECT) as u16;
    prop_oneof![
        6 => (0..=known).prop_map(move |f| f & known),
        1 => any::<u16>(),
    ]
}

fn next(i: u16) -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => Just((i + 1) % QUEUE_SIZE),                  // a plain chain
        1 => Just(i),                                     // a self loop
        1 => Just(0u16),                                  // back to the start: a cycle
        1 => 0..QUEUE_SIZE,
        1 => any::<u16>(),                                // past the table
    ]
}

/// Garbage for one queue whose heads carry bytes from `payload`.
pub fn garbage(payload: BoxedStrategy<Vec<u8>>) -> impl Strategy<Value = Garbage> {
    let table = (0..QUEUE_SIZE)
        .map(|i| (addr(), len(), flags(), next(i)))
        .collect::<Vec<_>>();
    let heads = prop::collection::vec(
        prop_oneof![6 => 0..GOOD_DESC, 1 => any::<u16>()],
        0..=usize::from(QUEUE_SIZE),
    );
    let bogus = prop_oneof![
        6 => Just(None),
        1 => (QUEUE_SIZE + 1..=u16::MAX).prop_map(Some),
    ];
    (
        table,
        heads,
        bogus,
        prop::collection::vec(payload, usize::from(QUEUE_SIZE)),
    )
        .prop_map(|(table, heads, bogus_avail, payloads)| Garbage {
            table,
            heads,
            bogus_avail,
            payloads,
        })
}

impl Garbage {
    /// Whether a device-writable descriptor of the table covers part of `mq`'s avail ring.
    /// The device writes there what the guest asked (over the avail index even), so the ring
    /// the driver left is gone: a good request after that is not the device's to serve, and
    /// harnesses check only that nothing panicked.
    pub fn clobbers_avail(&self, mq: &MockSplitQueue<'_, GuestMemory>) -> bool {
        let start = mq.avail_addr().0;
        let end = mq.used_addr().0;
        self.table.iter().any(|&(addr, len, flags, _)| {
            flags & VRING_DESC_F_WRITE as u16 != 0
                && addr < end
                && addr.saturating_add(u64::from(len)) > start
        })
    }
}

/// `template` with up to eight bytes overwritten and up to two little-endian u32 fields
/// replaced by edge values, sometimes cut short or extended with noise: a header that is
/// almost right.
pub fn mutated(template: Vec<u8>) -> BoxedStrategy<Vec<u8>> {
    let n = template.len().max(1);
    let edges = prop::sample::select(vec![0u32, 1, 0xff, 0x1000, 0x7fff_ffff, u32::MAX]);
    (
        prop::collection::vec((0..n, any::<u8>()), 0..8),
        prop::collection::vec((0..n, edges), 0..2),
        prop_oneof![4 => Just(None), 1 => (0..n).prop_map(Some)],
        prop::collection::vec(any::<u8>(), 0..32),
    )
        .prop_map(move |(flips, fields, cut, tail)| {
            let mut b = template.clone();
            for (at, v) in flips {
                if let Some(x) = b.get_mut(at) {
                    *x = v;
                }
            }
            for (at, v) in fields {
                let at = at & !3;
                if at + 4 <= b.len() {
                    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            if let Some(cut) = cut {
                b.truncate(cut);
            }
            b.extend(tail);
            b
        })
        .boxed()
}

/// Plays the driver of one queue on a [`MockSplitQueue`].
pub struct Driver<'a> {
    pub mem: &'a GuestMemory,
    pub mq: &'a MockSplitQueue<'a, GuestMemory>,
    /// The avail index the device has been shown (and has consumed, once it ran).
    avail: u16,
    /// The used index when the last good chain was pushed: its answer comes after.
    used_at_push: u16,
}

impl<'a> Driver<'a> {
    pub fn new(mem: &'a GuestMemory, mq: &'a MockSplitQueue<'a, GuestMemory>) -> Self {
        Self {
            mem,
            mq,
            avail: 0,
            used_at_push: 0,
        }
    }

    /// Writes `g` into the queue. A bogus avail index is written as the ring's index; the
    /// device must refuse it without consuming anything, and [`Driver::repair`] then puts the
    /// index back where a sane driver has it, so the device takes the garbage chains.
    pub fn scribble(&mut self, g: &Garbage) {
        for (i, &(addr, len, flags, next)) in g.table.iter().enumerate() {
            let d = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next));
            self.mq.desc_table().store(i as u16, d).expect("table slot");
        }
        for (i, head) in g.heads.iter().enumerate() {
            if let Some((addr, _, _, _)) = g.table.get(usize::from(*head)) {
                // Out-of-range heads or addresses just fail the write: fine, it is garbage.
                let _ = self.mem.write_slice(&g.payloads[i], GuestAddress(*addr));
            }
        }
        for head in &g.heads {
            self.put_avail(*head);
        }
        match g.bogus_avail {
            Some(bogus) => self.set_avail_idx(self.avail.wrapping_add(bogus)),
            None => self.set_avail_idx(self.avail),
        }
    }

    /// Writes the avail index the heads given so far add up to (after a bogus one).
    pub fn repair(&self) {
        self.set_avail_idx(self.avail);
    }

    /// Puts one well-formed chain of `(addr, len, device_writable)` buffers at descriptor
    /// [`GOOD_DESC`] on the ring; returns its head.
    pub fn push(&mut self, bufs: &[(u64, u32, bool)]) -> u16 {
        assert!(bufs.len() <= usize::from(QUEUE_SIZE - GOOD_DESC));
        for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
            let mut flags = if writable {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            let last = i + 1 == bufs.len();
            if !last {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let slot = GOOD_DESC + i as u16;
            let d = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, slot + 1));
            self.mq.desc_table().store(slot, d).expect("table slot");
        }
        self.used_at_push = self.mq.used().idx().load();
        self.put_avail(GOOD_DESC);
        self.set_avail_idx(self.avail);
        GOOD_DESC
    }

    fn put_avail(&mut self, head: u16) {
        let slot = usize::from(self.avail % QUEUE_SIZE);
        self.mq.avail().ring().ref_at(slot).unwrap().store(head);
        self.avail = self.avail.wrapping_add(1);
    }

    fn set_avail_idx(&self, idx: u16) {
        self.mq.avail().idx().store(idx);
    }

    /// The used length of `head` if the newest used element is `head`, used since the last
    /// [`Driver::push`].
    pub fn last_used(&self, head: u16) -> Option<u32> {
        let idx = self.mq.used().idx().load();
        if idx == self.used_at_push {
            return None;
        }
        let slot = usize::from(idx.wrapping_sub(1) % QUEUE_SIZE);
        let elem = self.mq.used().ring().ref_at(slot).ok()?.load();
        (elem.id() == u32::from(head)).then(|| elem.len())
    }

    /// Waits (for a device thread) until `head` is the newest used element.
    pub fn wait_used(&self, head: u16) -> Option<u32> {
        let mut got = None;
        wait_until(ANSWER_WAIT, || {
            got = self.last_used(head);
            got.is_some()
        });
        got
    }

    /// Waits until the used index stops moving for 50 ms: a device thread finished what it
    /// took from the garbage (so nothing in flight writes over the good chain). A heuristic:
    /// a thread that has not started by then can still race the good chain.
    pub fn settle(&self) {
        let mut last = self.mq.used().idx().load();
        let mut still = 0;
        wait_until(ANSWER_WAIT, || {
            let now = self.mq.used().idx().load();
            if now == last {
                still += 1;
            } else {
                (last, still) = (now, 0);
            }
            still >= 25
        });
    }

    /// Fills the good region with `byte` so an answer is seen to land.
    pub fn fill_good(&self, byte: u8) {
        let buf = vec![byte; (MEM_SIZE - GOOD) as usize];
        self.mem.write_slice(&buf, GuestAddress(GOOD)).unwrap();
    }
}
