//! Legacy PC devices, as state machines the VMM's port and MMIO buses drive: the CMOS RTC
//! (port I/O) and the IOAPIC of the split irqchip (MMIO).

pub mod cmos;
pub mod ioapic;

pub use cmos::{Clock, Cmos, SystemClock};
pub use ioapic::{IoApic, IrqRouting, MsiMessage};
