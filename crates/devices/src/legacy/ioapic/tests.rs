use super::*;

/// What the IOAPIC asked of its backend, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Routes(Vec<(u32, MsiMessage)>),
    Connect(u32, bool),
}

#[derive(Default)]
struct FakeRouting {
    calls: Vec<Call>,
    fail: bool,
}

impl IrqRouting for FakeRouting {
    fn set_routes(&mut self, routes: &[(u32, MsiMessage)]) -> io::Result<()> {
        self.calls.push(Call::Routes(routes.to_vec()));
        if self.fail {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(())
    }

    fn connect_pin(&mut self, pin: u32, connected: bool) -> io::Result<()> {
        self.calls.push(Call::Connect(pin, connected));
        Ok(())
    }
}

fn ioapic() -> IoApic<FakeRouting> {
    IoApic::new(FakeRouting::default())
}

fn write_reg(io: &mut IoApic<FakeRouting>, register: u8, value: u32) {
    io.write(IOREGSEL, &[register]);
    io.write(IOWIN, &value.to_le_bytes());
}

fn read_reg(io: &mut IoApic<FakeRouting>, register: u8) -> u32 {
    io.write(IOREGSEL, &[register]);
    let mut data = [0u8; 4];
    io.read(IOWIN, &mut data);
    u32::from_le_bytes(data)
}

/// Programs pin `pin` as Linux does: destination (high half) first, then the low half.
fn program(io: &mut IoApic<FakeRouting>, pin: u8, dest: u8, low: u32) {
    write_reg(io, 0x11 + 2 * pin, u32::from(dest) << 24);
    write_reg(io, 0x10 + 2 * pin, low);
}

fn msi(dest: u64, vector: u32) -> MsiMessage {
    MsiMessage {
        address: 0xfee0_0000 | (dest << 12),
        data: vector,
    }
}

#[test]
fn version_register_reports_0x20_and_24_pins() {
    let mut io = ioapic();
    assert_eq!(read_reg(&mut io, 0x01), 0x0017_0020);
}

#[test]
fn id_register_keeps_bits_27_24() {
    let mut io = ioapic();
    write_reg(&mut io, 0x00, 0xffff_ffff);
    assert_eq!(read_reg(&mut io, 0x00), 0x0f00_0000);
    assert_eq!(
        read_reg(&mut io, 0x02),
        0x0f00_0000,
        "arbitration ID follows"
    );
}

#[test]
fn every_pin_starts_masked_and_unrouted() {
    let mut io = ioapic();
    for pin in 0..PINS as u8 {
        assert_eq!(read_reg(&mut io, 0x10 + 2 * pin), 1 << 16);
        assert_eq!(read_reg(&mut io, 0x11 + 2 * pin), 0);
    }
    assert!(io.routing.calls.is_empty());
}

#[test]
fn unmasking_a_pin_routes_it_then_connects_it() {
    let mut io = ioapic();
    program(&mut io, 5, 1, 0x31);

    assert_eq!(
        io.routing.calls,
        vec![
            Call::Routes(vec![(5, msi(1, 0x31))]),
            Call::Connect(5, true)
        ]
    );
    assert_eq!(read_reg(&mut io, 0x10 + 10), 0x31);
    assert_eq!(read_reg(&mut io, 0x11 + 10), 1 << 24);
}

#[test]
fn the_destination_half_of_a_masked_entry_routes_nothing() {
    let mut io = ioapic();
    write_reg(&mut io, 0x11, 3 << 24);
    assert!(io.routing.calls.is_empty());
}

#[test]
fn masking_disconnects_before_the_route_goes() {
    let mut io = ioapic();
    program(&mut io, 5, 0, 0x31);
    program(&mut io, 7, 0, 0x33);
    io.routing.calls.clear();

    write_reg(&mut io, 0x10 + 10, 0x31 | 1 << 16);

    assert_eq!(
        io.routing.calls,
        vec![
            Call::Connect(5, false),
            Call::Routes(vec![(7, msi(0, 0x33))])
        ]
    );
}

#[test]
fn retargeting_an_unmasked_pin_only_replaces_its_route() {
    let mut io = ioapic();
    program(&mut io, 9, 0, 0x41);
    io.routing.calls.clear();

    write_reg(&mut io, 0x11 + 18, 1 << 24);

    assert_eq!(
        io.routing.calls,
        vec![Call::Routes(vec![(9, msi(1, 0x41))])]
    );
}

#[test]
fn rewriting_the_same_entry_asks_nothing() {
    let mut io = ioapic();
    program(&mut io, 5, 0, 0x31);
    io.routing.calls.clear();
    program(&mut io, 5, 0, 0x31);
    assert!(io.routing.calls.is_empty());
}

#[test]
fn logical_lowest_priority_sets_the_address_bits_and_mode() {
    let mut io = ioapic();
    // Lowest priority (001), logical destination (bit 11).
    program(&mut io, 4, 0x0f, 0x0000_0930 | 1 << 11);
    let want = MsiMessage {
        address: 0xfee0_0000 | 0x0f << 12 | 1 << 3 | 1 << 2,
        data: 0x130,
    };
    assert_eq!(io.routing.calls[0], Call::Routes(vec![(4, want)]));
}

#[test]
fn nmi_delivery_is_carried() {
    let mut io = ioapic();
    program(&mut io, 6, 0, 4 << 8);
    assert_eq!(
        io.routing.calls[0],
        Call::Routes(vec![(
            6,
            MsiMessage {
                address: 0xfee0_0000,
                data: 0x400
            }
        )])
    );
}

#[test]
fn extint_gets_no_route() {
    let mut io = ioapic();
    program(&mut io, 0, 0, 7 << 8);
    assert!(io.routing.calls.is_empty());
}

#[test]
fn level_trigger_is_delivered_as_an_edge() {
    let mut io = ioapic();
    program(&mut io, 10, 0, 0x51 | 1 << 15);
    assert_eq!(io.routing.calls[0], Call::Routes(vec![(10, msi(0, 0x51))]));
    assert_eq!(
        read_reg(&mut io, 0x10 + 20),
        0x51 | 1 << 15,
        "the entry reads back as written"
    );
}

#[test]
fn read_only_bits_cannot_be_set() {
    let mut io = ioapic();
    write_reg(&mut io, 0x10, 1 << 16 | 1 << 14 | 1 << 12);
    assert_eq!(read_reg(&mut io, 0x10), 1 << 16);
}

#[test]
fn registers_past_the_last_pin_read_zero_and_ignore_writes() {
    let mut io = ioapic();
    write_reg(&mut io, 0x10 + 2 * PINS as u8, 0x31);
    assert_eq!(read_reg(&mut io, 0x10 + 2 * PINS as u8), 0);
    assert_eq!(read_reg(&mut io, 0xff), 0);
    write_reg(&mut io, 0x03, 0x1234);
    assert_eq!(read_reg(&mut io, 0x03), 0);
    assert!(io.routing.calls.is_empty());
}

#[test]
fn narrow_window_writes_are_ignored() {
    let mut io = ioapic();
    io.write(IOREGSEL, &[0x10]);
    io.write(IOWIN, &[0x31, 0x00]);
    io.write(IOWIN, &[0u8; 8]);
    io.write(IOWIN, &[]);
    assert_eq!(read_reg(&mut io, 0x10), 1 << 16);
    assert!(io.routing.calls.is_empty());
}

#[test]
fn reads_of_other_offsets_and_sizes_never_panic() {
    let io = ioapic();
    for offset in [0, 1, 4, 0x10, 0x20, 0x40, 0xfff, u64::MAX] {
        for len in [0usize, 1, 2, 4, 8] {
            let mut data = vec![0xaa; len];
            io.read(offset, &mut data);
        }
    }
    let mut data = [0xaau8; 8];
    io.read(IOWIN, &mut data);
    assert_eq!(&data[4..], &[0, 0, 0, 0], "bytes past the register read 0");
}

#[test]
fn eoi_register_writes_change_nothing() {
    let mut io = ioapic();
    program(&mut io, 5, 0, 0x31);
    io.routing.calls.clear();
    io.write(IOEOI, &0x31u32.to_le_bytes());
    assert!(io.routing.calls.is_empty());
    assert_eq!(read_reg(&mut io, 0x10 + 10), 0x31);
}

#[test]
fn a_failing_backend_keeps_the_registers_and_the_guest_going() {
    let mut io = IoApic::new(FakeRouting {
        fail: true,
        ..Default::default()
    });
    program(&mut io, 5, 0, 0x31);
    program(&mut io, 6, 0, 0x32);
    assert_eq!(read_reg(&mut io, 0x10 + 10), 0x31);
    assert_eq!(read_reg(&mut io, 0x10 + 12), 0x32);
}
