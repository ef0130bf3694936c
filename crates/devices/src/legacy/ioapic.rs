//! The I/O APIC of KVM's split irqchip (`krun_split_irqchip`): the local APICs stay in the
//! kernel, the IOAPIC's registers live here.
//!
//! The guest programs a pin's redirection table entry (vector, destination, delivery mode,
//! mask) through the indirect IOREGSEL/IOWIN window. Each unmasked pin becomes one MSI
//! route in KVM's GSI routing table, so a device's irqfd on GSI = pin keeps delivering in
//! the kernel, with no trip through this thread; an [`IrqRouting`] backend (KVM in the VMM,
//! a fake in the tests) applies the routes. A masked pin has no route and its sources are
//! disconnected: what they signal meanwhile waits in their eventfd counters and is delivered
//! when the pin is unmasked, as KVM's own IOAPIC latches an edge on a masked pin.
//!
//! Every source is an irqfd, that is an edge: a pin the guest sets level-triggered is still
//! delivered as an edge (its remote IRR never sets, so an EOI, by the EOI register or a
//! `KVM_EXIT_IOAPIC_EOI`, has nothing to clear and is ignored). ExtINT and the reserved delivery modes
//! cannot be expressed as an MSI: such a pin gets no route. The version register reads 0x20
//! (upstream libkrun's userspace IOAPIC; KVM's in-kernel one reads 0x11), so a guest's boot
//! log says which IOAPIC it found.

use std::io;

/// Pins (GSIs 0-23), as KVM's in-kernel IOAPIC has.
pub const PINS: usize = 24;
/// Bytes of MMIO the IOAPIC decodes at its base (0xfec00000).
pub const MMIO_SIZE: u64 = 0x1000;
/// The version register's version field.
pub const VERSION: u32 = 0x20;

/// IOREGSEL: which register the window shows.
const IOREGSEL: u64 = 0x00;
/// IOWIN: the selected register, 32 bits at a time.
const IOWIN: u64 = 0x10;
/// EOI register (version 0x20): a level-triggered interrupt's end, by vector.
const IOEOI: u64 = 0x40;

const REG_ID: u8 = 0x00;
const REG_VERSION: u8 = 0x01;
const REG_ARBITRATION: u8 = 0x02;
/// The first redirection table register: pin N's entry is registers 0x10 + 2N (bits 31:0)
/// and 0x11 + 2N (bits 63:32).
const REG_REDIRECTION: u8 = 0x10;

/// The ID register's field (bits 27:24).
const ID_SHIFT: u32 = 24;
const ID_MASK: u32 = 0x0f;

const RTE_VECTOR: u64 = 0xff;
const RTE_DELIVERY_MODE_SHIFT: u64 = 8;
const RTE_DELIVERY_MODE: u64 = 0x7 << RTE_DELIVERY_MODE_SHIFT;
const RTE_DEST_LOGICAL: u64 = 1 << 11;
const RTE_DELIVERY_STATUS: u64 = 1 << 12;
const RTE_REMOTE_IRR: u64 = 1 << 14;
const RTE_LEVEL: u64 = 1 << 15;
const RTE_MASKED: u64 = 1 << 16;
const RTE_DEST_SHIFT: u64 = 56;
/// Bits the guest cannot write.
const RTE_READ_ONLY: u64 = RTE_DELIVERY_STATUS | RTE_REMOTE_IRR;

const DELIVERY_FIXED: u64 = 0;
const DELIVERY_LOWEST_PRIORITY: u64 = 1;
const DELIVERY_SMI: u64 = 2;
const DELIVERY_NMI: u64 = 4;
const DELIVERY_INIT: u64 = 5;

/// The MSI address every local APIC decodes.
const MSI_ADDRESS_BASE: u64 = 0xfee0_0000;
const MSI_ADDRESS_DEST_SHIFT: u64 = 12;
const MSI_ADDRESS_REDIRECTION_HINT: u64 = 1 << 3;
const MSI_ADDRESS_DEST_LOGICAL: u64 = 1 << 2;
const MSI_DATA_DELIVERY_MODE_SHIFT: u64 = 8;

/// An MSI: what the local APICs receive for one pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}

/// Where the pins' interrupts go: KVM's GSI routing table and the pins' irqfds.
pub trait IrqRouting: Send {
    /// Replaces the routing table: GSI `pin` delivers `msi`, for every routed pin.
    fn set_routes(&mut self, routes: &[(u32, MsiMessage)]) -> io::Result<()>;
    /// Connects (`true`) or disconnects the interrupt sources of `pin`. A disconnected
    /// source's signals wait in its eventfd and are delivered once it is connected again.
    fn connect_pin(&mut self, pin: u32, connected: bool) -> io::Result<()>;
}

/// The IOAPIC's registers and the routes they imply.
pub struct IoApic<R: IrqRouting> {
    id: u8,
    select: u8,
    /// Redirection table entries; every pin starts masked, as after reset.
    entries: [u64; PINS],
    /// The route each pin has in the backend now (None: masked or undeliverable).
    routes: [Option<MsiMessage>; PINS],
    routing: R,
    /// Set after the first backend failure is logged: a guest rewriting entries cannot
    /// flood the log.
    routing_failed: bool,
    /// Pins already logged as level-triggered or undeliverable (bit per pin).
    warned: u32,
}

impl<R: IrqRouting> IoApic<R> {
    /// An IOAPIC with every pin masked and nothing routed (the backend starts with no route
    /// and no source connected).
    pub fn new(routing: R) -> IoApic<R> {
        IoApic {
            id: 0,
            select: 0,
            entries: [RTE_MASKED; PINS],
            routes: [None; PINS],
            routing,
            routing_failed: false,
            warned: 0,
        }
    }

    /// A guest read at `offset` from the base; registers are 32 bits, narrower reads get
    /// the low bytes, anything else reads 0.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            IOREGSEL => u32::from(self.select),
            IOWIN => self.read_register(self.select),
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(i).copied().unwrap_or(0);
        }
    }

    /// A guest write at `offset` from the base.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() || data.len() > 4 {
            return;
        }
        let mut bytes = [0u8; 4];
        bytes[..data.len()].copy_from_slice(data);
        let value = u32::from_le_bytes(bytes);
        match offset {
            IOREGSEL => self.select = value as u8,
            // The window takes whole registers: a narrower write would leave half an entry.
            IOWIN if data.len() == 4 => self.write_register(self.select, value),
            // No remote IRR is ever set (module docs): nothing to end.
            IOEOI => {}
            _ => {}
        }
    }

    fn read_register(&self, register: u8) -> u32 {
        match register {
            REG_ID | REG_ARBITRATION => u32::from(self.id) << ID_SHIFT,
            REG_VERSION => VERSION | ((PINS as u32 - 1) << 16),
            _ => match Self::entry_half(register) {
                Some((pin, false)) => self.entries[pin] as u32,
                Some((pin, true)) => (self.entries[pin] >> 32) as u32,
                None => 0,
            },
        }
    }

    fn write_register(&mut self, register: u8, value: u32) {
        match register {
            REG_ID => self.id = ((value >> ID_SHIFT) & ID_MASK) as u8,
            REG_VERSION | REG_ARBITRATION => {}
            _ => {
                let Some((pin, high)) = Self::entry_half(register) else {
                    return;
                };
                let old = self.entries[pin];
                let written = if high {
                    (old & 0xffff_ffff) | (u64::from(value) << 32)
                } else {
                    (old & !0xffff_ffff) | u64::from(value)
                };
                self.entries[pin] = (written & !RTE_READ_ONLY) | (old & RTE_READ_ONLY);
                self.update_route(pin);
            }
        }
    }

    /// The pin and half (true: bits 63:32) a redirection register addresses.
    fn entry_half(register: u8) -> Option<(usize, bool)> {
        let index = usize::from(register.checked_sub(REG_REDIRECTION)?);
        let pin = index / 2;
        (pin < PINS).then_some((pin, index % 2 == 1))
    }

    /// The MSI pin `pin`'s entry asks for, or None (masked, or a mode no MSI carries).
    fn route_of(&mut self, pin: usize) -> Option<MsiMessage> {
        let entry = self.entries[pin];
        if entry & RTE_MASKED != 0 {
            return None;
        }
        let mode = (entry & RTE_DELIVERY_MODE) >> RTE_DELIVERY_MODE_SHIFT;
        let deliverable = matches!(
            mode,
            DELIVERY_FIXED | DELIVERY_LOWEST_PRIORITY | DELIVERY_SMI | DELIVERY_NMI | DELIVERY_INIT
        );
        if !deliverable || entry & RTE_LEVEL != 0 {
            self.warn_once(pin, mode, deliverable);
        }
        if !deliverable {
            return None;
        }
        let dest = (entry >> RTE_DEST_SHIFT) & 0xff;
        let mut address = MSI_ADDRESS_BASE | (dest << MSI_ADDRESS_DEST_SHIFT);
        if entry & RTE_DEST_LOGICAL != 0 {
            address |= MSI_ADDRESS_DEST_LOGICAL;
        }
        if mode == DELIVERY_LOWEST_PRIORITY {
            address |= MSI_ADDRESS_REDIRECTION_HINT;
        }
        // Trigger bit 15 stays 0: the sources are edges (module docs).
        let data = (entry & RTE_VECTOR) | (mode << MSI_DATA_DELIVERY_MODE_SHIFT);
        Some(MsiMessage {
            address,
            data: data as u32,
        })
    }

    fn warn_once(&mut self, pin: usize, mode: u64, deliverable: bool) {
        let bit = 1u32 << pin;
        if self.warned & bit != 0 {
            return;
        }
        self.warned |= bit;
        if deliverable {
            log::debug!("IOAPIC pin {pin} is set level-triggered; its source is an edge (irqfd) and is delivered as one");
        } else {
            log::warn!("IOAPIC pin {pin} asks for delivery mode {mode}, which no MSI carries: the pin delivers nothing");
        }
    }

    /// Brings the backend in line with pin `pin`'s entry: a masked pin is disconnected
    /// before its route goes, an unmasked one connected after its route exists, so no
    /// signal is ever delivered through a stale or missing route.
    fn update_route(&mut self, pin: usize) {
        let new = self.route_of(pin);
        let old = self.routes[pin];
        if new == old {
            return;
        }
        self.routes[pin] = new;
        let table: Vec<(u32, MsiMessage)> = self
            .routes
            .iter()
            .enumerate()
            .filter_map(|(p, r)| r.map(|msi| (p as u32, msi)))
            .collect();
        let gsi = pin as u32;
        let result = if new.is_none() {
            self.routing
                .connect_pin(gsi, false)
                .and_then(|()| self.routing.set_routes(&table))
        } else {
            self.routing.set_routes(&table).and_then(|()| match old {
                None => self.routing.connect_pin(gsi, true),
                Some(_) => Ok(()),
            })
        };
        if let Err(e) = result {
            if !self.routing_failed {
                self.routing_failed = true;
                log::error!("IOAPIC: cannot route pin {pin} (later failures are not logged): {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
