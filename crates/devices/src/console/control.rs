//! The multiport control protocol (virtio 1.2, section 5.3.6.2): the 8-byte control
//! message, and what the device answers to each message the driver sends.
//!
//! Pure logic over port descriptions, so the handshake is unit-tested without queues.

/// `struct virtio_console_control` events.
pub const DEVICE_READY: u16 = 0;
pub const DEVICE_ADD: u16 = 1;
pub const PORT_READY: u16 = 3;
pub const CONSOLE_PORT: u16 = 4;
pub const RESIZE: u16 = 5;
pub const PORT_OPEN: u16 = 6;
pub const PORT_NAME: u16 = 7;

/// Size of `struct virtio_console_control` (le32 id, le16 event, le16 value).
pub const CONTROL_MSG_LEN: usize = 8;

/// At most this many device-to-driver messages wait for control receive buffers; past it
/// a driver repeating DEVICE_READY without reading the answers gets nothing more.
pub const MAX_PENDING: usize = 1024;

/// One control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlMsg {
    pub id: u32,
    pub event: u16,
    pub value: u16,
}

impl ControlMsg {
    pub fn new(id: u32, event: u16, value: u16) -> Self {
        Self { id, event, value }
    }

    pub fn to_bytes(self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(CONTROL_MSG_LEN);
        bytes.extend_from_slice(&self.id.to_le_bytes());
        bytes.extend_from_slice(&self.event.to_le_bytes());
        bytes.extend_from_slice(&self.value.to_le_bytes());
        bytes
    }

    /// Parses the first 8 bytes; `None` when the buffer is shorter.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let b = bytes.get(..CONTROL_MSG_LEN)?;
        Some(Self {
            id: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            event: u16::from_le_bytes([b[4], b[5]]),
            value: u16::from_le_bytes([b[6], b[7]]),
        })
    }
}

/// A PORT_NAME message: the header followed by the name bytes (no NUL).
pub fn port_name_msg(id: u32, name: &str) -> Vec<u8> {
    let mut bytes = ControlMsg::new(id, PORT_NAME, 1).to_bytes();
    bytes.extend_from_slice(name.as_bytes());
    bytes
}

/// A RESIZE message: the header followed by le16 cols, le16 rows (the spec's order, which
/// Linux follows since 5.x).
pub fn resize_msg(id: u32, cols: u16, rows: u16) -> Vec<u8> {
    let mut bytes = ControlMsg::new(id, RESIZE, 0).to_bytes();
    bytes.extend_from_slice(&cols.to_le_bytes());
    bytes.extend_from_slice(&rows.to_le_bytes());
    bytes
}

/// What the control protocol needs to know of a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Empty: unnamed.
    pub name: String,
    /// A console port (the guest makes it an hvc tty); it gets the terminal size.
    pub console: bool,
}

/// What a driver message means for a port's data flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortEvent {
    /// The guest opened the port: input may flow into it.
    GuestOpened(u32),
    /// The guest closed the port: what it wrote must be drained, no input until reopened.
    GuestClosed(u32),
}

/// The device's answer to one driver message: messages to queue for the driver and a port
/// event for the worker.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub replies: Vec<Vec<u8>>,
    pub event: Option<PortEvent>,
}

/// Answers `msg` from the driver. `size` is the terminal size (cols, rows) console ports
/// get. Unknown events, unknown port ids and failure reports are answered with nothing.
pub fn answer(msg: ControlMsg, ports: &[PortInfo], size: (u16, u16)) -> Answer {
    let mut answer = Answer::default();
    let port = usize::try_from(msg.id).ok().and_then(|i| ports.get(i));
    match (msg.event, port) {
        (DEVICE_READY, _) => {
            if msg.value != 1 {
                log::debug!("console: driver reports failed initialization");
                return answer;
            }
            for id in 0..ports.len() as u32 {
                answer
                    .replies
                    .push(ControlMsg::new(id, DEVICE_ADD, 0).to_bytes());
            }
        }
        (PORT_READY, Some(port)) => {
            if msg.value != 1 {
                log::debug!("console: driver could not set up port {}", msg.id);
                return answer;
            }
            if port.console {
                answer
                    .replies
                    .push(ControlMsg::new(msg.id, CONSOLE_PORT, 1).to_bytes());
                answer.replies.push(resize_msg(msg.id, size.0, size.1));
            }
            if !port.name.is_empty() {
                answer.replies.push(port_name_msg(msg.id, &port.name));
            }
            // The host side is connected from the start: its fds are open.
            answer
                .replies
                .push(ControlMsg::new(msg.id, PORT_OPEN, 1).to_bytes());
        }
        (PORT_OPEN, Some(_)) => {
            answer.event = Some(match msg.value {
                0 => PortEvent::GuestClosed(msg.id),
                _ => PortEvent::GuestOpened(msg.id),
            });
        }
        (event, _) => log::debug!(
            "console: ignoring control event {event} for port {}",
            msg.id
        ),
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> Vec<PortInfo> {
        vec![
            PortInfo {
                name: String::new(),
                console: true,
            },
            PortInfo {
                name: "krun-stdout".into(),
                console: false,
            },
        ]
    }

    #[test]
    fn control_msg_round_trip_little_endian() {
        let msg = ControlMsg::new(0x0102_0304, PORT_OPEN, 1);
        let bytes = msg.to_bytes();
        assert_eq!(bytes, [4, 3, 2, 1, 6, 0, 1, 0]);
        assert_eq!(ControlMsg::parse(&bytes), Some(msg));
        assert_eq!(ControlMsg::parse(&bytes[..7]), None);
    }

    #[test]
    fn answer_device_ready_adds_every_port() {
        let a = answer(ControlMsg::new(0, DEVICE_READY, 1), &ports(), (80, 25));
        assert_eq!(
            a.replies,
            vec![
                ControlMsg::new(0, DEVICE_ADD, 0).to_bytes(),
                ControlMsg::new(1, DEVICE_ADD, 0).to_bytes()
            ]
        );
        assert_eq!(a.event, None);
    }

    #[test]
    fn answer_device_ready_failure_adds_nothing() {
        let a = answer(ControlMsg::new(0, DEVICE_READY, 0), &ports(), (80, 25));
        assert!(a.replies.is_empty());
    }

    #[test]
    fn answer_console_port_ready_marks_console_sizes_and_opens() {
        let a = answer(ControlMsg::new(0, PORT_READY, 1), &ports(), (132, 43));
        assert_eq!(
            a.replies,
            vec![
                ControlMsg::new(0, CONSOLE_PORT, 1).to_bytes(),
                vec![0, 0, 0, 0, 5, 0, 0, 0, 132, 0, 43, 0],
                ControlMsg::new(0, PORT_OPEN, 1).to_bytes(),
            ]
        );
    }

    #[test]
    fn answer_named_port_ready_names_and_opens() {
        let a = answer(ControlMsg::new(1, PORT_READY, 1), &ports(), (80, 25));
        let mut name = ControlMsg::new(1, PORT_NAME, 1).to_bytes();
        name.extend_from_slice(b"krun-stdout");
        assert_eq!(
            a.replies,
            vec![name, ControlMsg::new(1, PORT_OPEN, 1).to_bytes()]
        );
    }

    #[test]
    fn answer_unknown_port_ignored() {
        let a = answer(ControlMsg::new(7, PORT_READY, 1), &ports(), (80, 25));
        assert_eq!(a, Answer::default());
        let a = answer(ControlMsg::new(u32::MAX, PORT_OPEN, 1), &ports(), (80, 25));
        assert_eq!(a, Answer::default());
    }

    #[test]
    fn answer_port_open_and_close_are_port_events() {
        let open = answer(ControlMsg::new(1, PORT_OPEN, 1), &ports(), (0, 0));
        assert_eq!(open.event, Some(PortEvent::GuestOpened(1)));
        assert!(open.replies.is_empty());
        let close = answer(ControlMsg::new(1, PORT_OPEN, 0), &ports(), (0, 0));
        assert_eq!(close.event, Some(PortEvent::GuestClosed(1)));
    }

    #[test]
    fn answer_unknown_event_ignored() {
        let a = answer(ControlMsg::new(0, 0x7777, 1), &ports(), (0, 0));
        assert_eq!(a, Answer::default());
    }
}
