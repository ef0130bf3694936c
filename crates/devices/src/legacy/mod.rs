//! Legacy PC devices behind port I/O, as state machines the VMM's port bus drives.

pub mod cmos;

pub use cmos::{Clock, Cmos, SystemClock};
