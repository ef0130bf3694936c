//! Legacy port I/O the guest may touch: the i8042 reset line, the CMOS RTC at 0x70/0x71 and
//! the optional 8250 UART at COM1 (`crate::serial`).

use std::sync::Mutex;

use devices::legacy::{cmos, Cmos};

use crate::serial::{SerialDevice, COM1_BASE, COM1_LEN};

/// i8042 command/status port.
const I8042_COMMAND: u16 = 0x64;
/// i8042 data port.
const I8042_DATA: u16 = 0x60;
/// i8042 command "pulse output line 0": resets the CPU (Linux's `reboot=k`).
const I8042_CMD_RESET: u8 = 0xfe;
/// CMOS RTC index port; the data port follows.
const CMOS_BASE: u16 = 0x70;

/// What a port write asks the VMM to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PioAction {
    None,
    /// The guest asked for a CPU reset: the VM ends.
    Reset,
}

/// The port I/O space: shared by every vCPU thread.
pub struct PortIoBus {
    serial: Option<SerialDevice>,
    cmos: Option<Mutex<Cmos>>,
}

impl PortIoBus {
    /// `serial`: the UART at COM1 (0x3f8), if the VM has one.
    pub fn new(serial: Option<SerialDevice>) -> PortIoBus {
        PortIoBus { serial, cmos: None }
    }

    /// Puts the CMOS RTC at 0x70/0x71.
    pub fn with_cmos(mut self, cmos: Cmos) -> PortIoBus {
        self.cmos = Some(Mutex::new(cmos));
        self
    }

    /// The CMOS port offset and device when `port` is one of its ports.
    fn cmos_at(&self, port: u16) -> Option<(u16, &Mutex<Cmos>)> {
        let offset = port.checked_sub(CMOS_BASE)?;
        (offset < cmos::PORT_COUNT)
            .then_some(self.cmos.as_ref())
            .flatten()
            .map(|c| (offset, c))
    }

    fn serial_offset(port: u16) -> Option<u8> {
        (COM1_BASE..COM1_BASE + COM1_LEN)
            .contains(&port)
            .then(|| (port - COM1_BASE) as u8)
    }

    /// A guest `in`: unknown ports read as all ones (nothing there); the i8042 status reads
    /// 0 so a reset through it never waits for a busy controller.
    pub fn read(&self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        if let Some((offset, cmos)) = self.cmos_at(port) {
            let mut cmos = cmos.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(b) = data.first_mut() {
                *b = cmos.read(offset);
            }
            return;
        }
        match (port, Self::serial_offset(port), &self.serial) {
            (I8042_COMMAND | I8042_DATA, _, _) => data.fill(0),
            (_, Some(offset), Some(serial)) => {
                if let Some(b) = data.first_mut() {
                    *b = serial.read(offset);
                }
            }
            _ => {}
        }
    }

    /// A guest `out`: writes to unknown ports are ignored.
    pub fn write(&self, port: u16, data: &[u8]) -> PioAction {
        if let Some((offset, cmos)) = self.cmos_at(port) {
            let mut cmos = cmos.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(&b) = data.first() {
                cmos.write(offset, b);
            }
            return PioAction::None;
        }
        match (port, Self::serial_offset(port), &self.serial) {
            (I8042_COMMAND, _, _) if data.first() == Some(&I8042_CMD_RESET) => PioAction::Reset,
            (_, Some(offset), Some(serial)) => {
                if let Some(&b) = data.first() {
                    serial.write(offset, b);
                }
                PioAction::None
            }
            _ => PioAction::None,
        }
    }

    /// Stops the UART's input and flushes its output.
    pub fn shutdown(&self) {
        if let Some(serial) = &self.serial {
            serial.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_i8042_reset_command_reset() {
        let bus = PortIoBus::new(None);
        assert_eq!(bus.write(0x64, &[0xfe]), PioAction::Reset);
        assert_eq!(bus.write(0x64, &[0xad]), PioAction::None);
    }

    #[test]
    fn read_unknown_port_all_ones() {
        let bus = PortIoBus::new(None);
        let mut data = [0u8; 2];
        bus.read(0x2f8, &mut data);
        assert_eq!(data, [0xff, 0xff]);
    }

    #[test]
    fn read_cmos_register_d_valid() {
        let bus = PortIoBus::new(None).with_cmos(Cmos::new(256 << 20, 0, Default::default()));
        bus.write(0x70, &[0x0d]);
        let mut data = [0u8; 1];
        bus.read(0x71, &mut data);
        assert_eq!(data, [0x80]);
    }

    #[test]
    fn read_cmos_absent_all_ones() {
        let bus = PortIoBus::new(None);
        let mut data = [0u8; 1];
        bus.read(0x71, &mut data);
        assert_eq!(data, [0xff]);
    }

    #[test]
    fn read_serial_absent_all_ones() {
        let bus = PortIoBus::new(None);
        let mut data = [0u8; 1];
        bus.read(0x3fd, &mut data);
        assert_eq!(data, [0xff]);
    }

    #[test]
    fn read_serial_present_line_status_transmitter_empty() {
        let bus = PortIoBus::new(Some(SerialDevice::debug_log().unwrap()));
        let mut data = [0u8; 1];
        bus.read(0x3fd, &mut data);
        assert_ne!(data[0] & 0x20, 0);
    }
}
