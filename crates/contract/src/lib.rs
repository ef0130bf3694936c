//! The host-guest contract: everything the VMM (crates/vmm, crates/devices) and the guest
//! init (init/) must agree on, spelled once. Changing a value here changes both sides.
//!
//! - the virtual files the root share serves ([`INIT_FILE_NAME`], [`EXEC_FILE_NAME`]);
//! - the exit-code ioctl ([`EXIT_CODE_IOCTL`]);
//! - the virtio-console port names that replace the workload's standard streams, and the
//!   shutdown request port ([`PORT_SHUTDOWN`]);
//! - the `KRUN_*` kernel command-line keys init reads ([`keys`]);
//! - the exec-config document, [`ExecConfig`] (format: init/README.md).

use serde::{Deserialize, Deserializer, Serialize};

macro_rules! init_file_name {
    () => {
        "init.krun"
    };
}
macro_rules! exec_file_name {
    () => {
        ".krun_exec.json"
    };
}

/// Name of the virtual guest init at the top of the root share.
pub const INIT_FILE_NAME: &str = init_file_name!();
/// Absolute guest path of the init, as the kernel's `init=` parameter names it.
pub const INIT_PATH: &str = concat!("/", init_file_name!());
/// Name of the virtual exec-config file at the top of the root share; init reads it first.
pub const EXEC_FILE_NAME: &str = exec_file_name!();
/// Absolute guest path of the exec-config file.
pub const EXEC_FILE_PATH: &str = concat!("/", exec_file_name!());

/// ioctl the guest init issues on the root of the virtio-fs share to report the workload's
/// exit status: `_IO('v', 2)`, no direction and no size, the status passed by value as the
/// argument (upstream libkrun's `KRUN_EXIT_CODE_IOCTL`).
pub const EXIT_CODE_IOCTL: u32 = ((b'v' as u32) << 8) | 2;

/// virtio-console port whose guest end becomes the workload's stdin.
pub const PORT_STDIN: &str = "krun-stdin";
/// virtio-console port whose guest end becomes the workload's stdout.
pub const PORT_STDOUT: &str = "krun-stdout";
/// virtio-console port whose guest end becomes the workload's stderr.
pub const PORT_STDERR: &str = "krun-stderr";

/// virtio-console port on which the host asks for an orderly shutdown
/// (`krun_get_shutdown_eventfd`). It has its own console device, created only when the
/// caller asked for the eventfd; its host input is that eventfd, so each write by the caller
/// becomes 8 bytes (the eventfd counter) the guest reads, and bytes written before the guest
/// opened the port wait in the counter. Init opens the port after starting the workload;
/// any bytes read mean "shut down": init sends SIGTERM to the workload, waits
/// [`SHUTDOWN_GRACE_SECS`], then SIGKILLs it, and the VM ends with the workload's status as
/// always. The guest never writes to the port.
pub const PORT_SHUTDOWN: &str = "krun-shutdown";
/// Seconds init waits after SIGTERM before it SIGKILLs the workload on a shutdown request.
pub const SHUTDOWN_GRACE_SECS: u64 = 10;
/// Where init mounts the remount root's device before it moves it to `/`: a virtual
/// directory of the initial (NullFs) root, as are [`REMOUNT_DIRS`].
pub const REMOUNT_TARGET: &str = "newroot";
/// Mount points the initial root of a remount boot offers (virtual directories), so init
/// can mount the kernel filesystems and the device before the switch.
pub const REMOUNT_DIRS: [&str; 4] = ["dev", "proc", "sys", REMOUNT_TARGET];

/// `KRUN_*` keys of the kernel command line (init sees them as environment variables and
/// never passes them on to the workload).
pub mod keys {
    /// Prefix of every control key.
    pub const PREFIX: &str = "KRUN_";
    /// Program to run.
    pub const INIT: &str = "KRUN_INIT";
    /// Working directory.
    pub const WORKDIR: &str = "KRUN_WORKDIR";
    /// `RESOURCE=CUR:MAX` items joined by `,`.
    pub const RLIMITS: &str = "KRUN_RLIMITS";
    /// Numeric user id.
    pub const UID: &str = "KRUN_UID";
    /// Numeric group id.
    pub const GID: &str = "KRUN_GID";
    /// Value for the workload's `HOME`.
    pub const HOME: &str = "KRUN_HOME";
    /// Value for the workload's `TERM`.
    pub const TERM: &str = "KRUN_TERM";
    /// Path of the container config (default `/.krun_config.json`).
    pub const CONFIG: &str = "KRUN_CONFIG";
    /// `1`: exec the workload as PID 1 instead of supervising it.
    pub const INIT_PID1: &str = "KRUN_INIT_PID1";
    /// The remount root (`krun_set_root_disk_remount`): the block device init mounts and
    /// makes the root before it starts the workload.
    pub const BLOCK_ROOT_DEVICE: &str = "KRUN_BLOCK_ROOT_DEVICE";
    /// Its filesystem type; absent: each type of /proc/filesystems is tried.
    pub const BLOCK_ROOT_FSTYPE: &str = "KRUN_BLOCK_ROOT_FSTYPE";
    /// Its mount options (the data string of mount(2)).
    pub const BLOCK_ROOT_OPTIONS: &str = "KRUN_BLOCK_ROOT_OPTIONS";
    /// The virtio-net interfaces init brings up: see [`crate::nics`].
    pub const NET: &str = "KRUN_NET";
    /// The address of the TSI interface (`krun_set_tsi_scope`'s IP), `A.B.C.D/PREFIX`: see
    /// [`crate::tsi_ip`]. Absent: upstream's placeholder address.
    pub const TSI_IP: &str = "KRUN_TSI_IP";
}

/// The `KRUN_TSI_IP` value: an IPv4 address and its prefix length, `10.0.2.15/24`.
pub mod tsi_ip {
    use std::net::Ipv4Addr;

    /// The value for `addr`/`prefix` (a prefix over 32 is written as 32).
    pub fn format(addr: Ipv4Addr, prefix: u8) -> String {
        format!("{addr}/{}", prefix.min(32))
    }

    /// The address and prefix of a `KRUN_TSI_IP` value; None when malformed.
    pub fn parse(value: &str) -> Option<(Ipv4Addr, u8)> {
        let (addr, prefix) = value.split_once('/')?;
        let prefix: u8 = prefix.parse().ok()?;
        (prefix <= 32).then_some(())?;
        Some((addr.parse().ok()?, prefix))
    }

    /// The netmask of a prefix length.
    pub fn netmask(prefix: u8) -> Ipv4Addr {
        let prefix = u32::from(prefix.min(32));
        Ipv4Addr::from(if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trip_and_refusals() {
            let a = Ipv4Addr::new(10, 0, 2, 15);
            assert_eq!(format(a, 24), "10.0.2.15/24");
            assert_eq!(parse("10.0.2.15/24"), Some((a, 24)));
            assert_eq!(parse("10.0.2.15"), None);
            assert_eq!(parse("10.0.2.15/33"), None);
            assert_eq!(parse("::1/64"), None);
            assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
            assert_eq!(netmask(32), Ipv4Addr::new(255, 255, 255, 255));
            assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
        }
    }
}

/// The `KRUN_NET` value: one item per virtio-net interface, joined by `,`, each the MAC as
/// 12 lowercase hex digits, with `+dhcp` appended when init must configure it by DHCP
/// (`NET_FLAG_DHCP_CLIENT`); e.g. `5a94efe40cee+dhcp,020000000002`. Init finds each
/// interface by its MAC, so the guest's naming does not matter.
pub mod nics {
    /// One interface as `KRUN_NET` describes it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Nic {
        pub mac: [u8; 6],
        pub dhcp: bool,
    }

    const DHCP_SUFFIX: &str = "+dhcp";

    /// The `KRUN_NET` value for `nics`.
    pub fn format(nics: &[Nic]) -> String {
        nics.iter()
            .map(|n| {
                let mac: String = n.mac.iter().map(|b| format!("{b:02x}")).collect();
                if n.dhcp {
                    mac + DHCP_SUFFIX
                } else {
                    mac
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Parses a `KRUN_NET` value; malformed items are skipped.
    pub fn parse(value: &str) -> Vec<Nic> {
        value
            .split(',')
            .filter_map(|item| {
                let (hex, dhcp) = match item.strip_suffix(DHCP_SUFFIX) {
                    Some(hex) => (hex, true),
                    None => (item, false),
                };
                if hex.len() != 12 || !hex.is_ascii() {
                    return None;
                }
                let mut mac = [0u8; 6];
                for (i, byte) in mac.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
                }
                Some(Nic { mac, dhcp })
            })
            .collect()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn format_parse_round_trip() {
            let nics = [
                Nic {
                    mac: [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee],
                    dhcp: true,
                },
                Nic {
                    mac: [2, 0, 0, 0, 0, 2],
                    dhcp: false,
                },
            ];
            let text = format(&nics);
            assert_eq!(text, "5a94efe40cee+dhcp,020000000002");
            assert_eq!(parse(&text), nics);
        }

        #[test]
        fn parse_skips_malformed_items() {
            assert_eq!(parse("zz94efe40cee,12,+dhcp,"), Vec::new());
        }
    }
}

/// The exec-config document (`/.krun_exec.json`): the workload when the kernel command line
/// cannot carry it unchanged. Every key is optional and `null` means absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecConfig {
    /// The program (argv[0]); absent: program and args come from the other sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<String>,
    /// argv[1..].
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub args: Vec<String>,
    /// `KEY=VALUE` entries.
    #[serde(default, deserialize_with = "nullable")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// `RESOURCE=CUR:MAX` items; read also as one `,`-joined string (the `KRUN_RLIMITS` form).
    #[serde(
        default,
        deserialize_with = "rlimit_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub rlimits: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

impl ExecConfig {
    /// The document as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings, lists and integers always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes the document; anything but an object, wrong types and malformed JSON are
    /// errors.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        if !value.is_object() {
            return Err(serde::de::Error::custom(
                "the document must be a JSON object",
            ));
        }
        serde_json::from_value(value)
    }
}

fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

fn rlimit_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        Joined(String),
        Items(Vec<String>),
    }
    Ok(match Option::<List>::deserialize(d)? {
        None => None,
        Some(List::Joined(s)) => Some(s.split(',').map(str::to_string).collect()),
        Some(List::Items(items)) => Some(items),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ioctl_have_their_wire_values() {
        assert_eq!(EXIT_CODE_IOCTL, 0x7602);
        assert_eq!(INIT_PATH, "/init.krun");
        assert_eq!(EXEC_FILE_PATH, "/.krun_exec.json");
    }

    #[test]
    fn exec_config_round_trips() {
        let config = ExecConfig {
            exec: Some("/bin/sh".into()),
            args: vec!["-c".into(), "echo \"hi\" ü\n\u{1}".into(), String::new()],
            env: vec!["A=b c".into()],
            workdir: Some("/srv".into()),
            rlimits: Some(vec!["7=1024:4096".into()]),
            uid: Some(u32::MAX),
            gid: Some(0),
        };
        let text = String::from_utf8(config.to_json()).unwrap();
        assert_eq!(ExecConfig::from_json(&text).unwrap(), config);
    }

    #[test]
    fn exec_config_reads_nulls_and_joined_rlimits() {
        let c = ExecConfig::from_json(
            r#"{"exec": null, "args": null, "env": null, "rlimits": "7=1:2,6=3:4"}"#,
        )
        .unwrap();
        assert_eq!(c.exec, None);
        assert!(c.args.is_empty() && c.env.is_empty());
        assert_eq!(c.rlimits, Some(vec!["7=1:2".into(), "6=3:4".into()]));
        assert_eq!(ExecConfig::from_json("{}").unwrap(), ExecConfig::default());
    }

    #[test]
    fn exec_config_wrong_types_are_errors() {
        for doc in [
            r#"{"exec": 1}"#,
            r#"{"args": "x"}"#,
            r#"{"args": [1]}"#,
            r#"{"env": {"A": "1"}}"#,
            r#"{"uid": -1}"#,
            r#"{"gid": 4294967296}"#,
            r#"{"rlimits": 7}"#,
            "[]",
            "exec=/bin/sh",
        ] {
            assert!(ExecConfig::from_json(doc).is_err(), "{doc}");
        }
    }
}
