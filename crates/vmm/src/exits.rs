//! Counts of the vCPU exits that reach user space, by kind, port and virtio-mmio slot, so a
//! run can show which device costs round trips (logged at debug level when the VM ends).
//!
//! Every counter is a relaxed atomic: the vCPU threads bump them without locks, and the sum
//! is read once after they are joined.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::layout::{MMIO_DEVICES_START, MMIO_DEVICE_SIZE};

/// Ports below this are counted one by one (the legacy PC range); higher ones together.
const PORTS: usize = 0x400;
/// virtio-mmio slots counted one by one; accesses elsewhere (or past them) together.
const SLOTS: usize = 32;
/// Registers of a slot counted one by one, by 4-byte word (config space included up to 0x1fc).
const REGS: usize = 128;
/// How many of the busiest ports and slots the summary names.
const TOP: usize = 6;

/// The kinds of user-space exit, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    IoIn,
    IoOut,
    MmioRead,
    MmioWrite,
    /// `KVM_RUN` returned EINTR/EAGAIN or `KVM_EXIT_INTR` (a kick or a signal).
    Interrupted,
    /// Anything else (halt, shutdown, system events, failures): the end of a vCPU.
    Other,
}

const KINDS: [(ExitKind, &str); 6] = [
    (ExitKind::IoIn, "io_in"),
    (ExitKind::IoOut, "io_out"),
    (ExitKind::MmioRead, "mmio_read"),
    (ExitKind::MmioWrite, "mmio_write"),
    (ExitKind::Interrupted, "interrupted"),
    (ExitKind::Other, "other"),
];

/// Exit counters shared by every vCPU thread.
pub struct ExitCounts {
    kinds: [AtomicU64; KINDS.len()],
    /// Port exits by port (reads and writes together); the last entry: ports >= 0x400.
    ports: Box<[AtomicU64]>,
    /// MMIO exits by virtio-mmio slot and register word; the last entry: any other address.
    slots: Box<[AtomicU64]>,
}

impl Default for ExitCounts {
    fn default() -> Self {
        ExitCounts {
            kinds: Default::default(),
            ports: (0..=PORTS).map(|_| AtomicU64::new(0)).collect(),
            slots: (0..=SLOTS * REGS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl ExitCounts {
    /// Counts one exit of `kind`.
    pub fn count(&self, kind: ExitKind) {
        if let Some(i) = KINDS.iter().position(|(k, _)| *k == kind) {
            bump(&self.kinds[i]);
        }
    }

    /// Counts one port exit at `port`.
    pub fn count_port(&self, kind: ExitKind, port: u16) {
        self.count(kind);
        bump(&self.ports[usize::from(port).min(PORTS)]);
    }

    /// Counts one MMIO exit at `addr`.
    pub fn count_mmio(&self, kind: ExitKind, addr: u64) {
        self.count(kind);
        let bucket = addr
            .checked_sub(MMIO_DEVICES_START)
            .map(|off| {
                let slot = (off / MMIO_DEVICE_SIZE) as usize;
                let reg = ((off % MMIO_DEVICE_SIZE) / 4) as usize;
                if slot < SLOTS {
                    slot * REGS + reg.min(REGS - 1)
                } else {
                    SLOTS * REGS
                }
            })
            .unwrap_or(SLOTS * REGS);
        bump(&self.slots[bucket]);
    }

    /// Total exits counted.
    pub fn total(&self) -> u64 {
        self.kinds.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// One line: totals by kind, then the busiest ports and slots.
    pub fn summary(&self) -> String {
        let mut s = format!("{} exits to user space:", self.total());
        for ((_, name), c) in KINDS.iter().zip(&self.kinds) {
            let _ = write!(s, " {name} {}", c.load(Ordering::Relaxed));
        }
        let top = |counts: &[AtomicU64]| {
            let mut v: Vec<(usize, u64)> = counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .enumerate()
                .filter(|(_, n)| *n > 0)
                .collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            v.truncate(TOP);
            v
        };
        s.push_str("; ports:");
        for (port, n) in top(&self.ports) {
            match port {
                PORTS => {
                    let _ = write!(s, " >=0x400 {n}");
                }
                p => {
                    let _ = write!(s, " {p:#x} {n}");
                }
            }
        }
        s.push_str("; mmio slot:register:");
        for (bucket, n) in top(&self.slots) {
            if bucket == SLOTS * REGS {
                let _ = write!(s, " other {n}");
            } else {
                let _ = write!(s, " {}:{:#x} {n}", bucket / REGS, bucket % REGS * 4);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_by_kind_port_and_slot() {
        let c = ExitCounts::default();
        c.count_port(ExitKind::IoOut, 0x70);
        c.count_port(ExitKind::IoIn, 0x71);
        c.count_port(ExitKind::IoIn, 0x71);
        c.count_port(ExitKind::IoIn, 0xcf8);
        c.count_mmio(
            ExitKind::MmioWrite,
            MMIO_DEVICES_START + MMIO_DEVICE_SIZE + 0x70,
        );
        c.count_mmio(ExitKind::MmioRead, 0xfee0_0000);
        c.count(ExitKind::Interrupted);
        assert_eq!(c.total(), 7);
        assert_eq!(
            c.summary(),
            "7 exits to user space: io_in 3 io_out 1 mmio_read 1 mmio_write 1 interrupted 1 \
             other 0; ports: 0x71 2 0x70 1 >=0x400 1; mmio slot:register: 1:0x70 1 other 1"
        );
    }
}
