//! The guest kernel command line: upstream libkrun's base, the console, the virtio-mmio
//! devices (`virtio_mmio.device=`), `init=`, then the workload's words (`KRUN_*=`, the
//! environment, ` -- ` and the arguments). Never truncated: too long is an error.

use linux_loader::cmdline::{Cmdline, Error as LinuxCmdlineError};
use vm_memory::GuestAddress;

use crate::layout::{CMDLINE_MAX_SIZE, MMIO_DEVICE_SIZE};
use crate::workload::CmdlineWorkload;

/// The options upstream libkrun passes to every libkrunfw kernel, console excluded.
const BASE: &[&str] = &["reboot=k", "panic=-1", "panic_print=0", "nomodule"];
/// Options after the console.
const BASE_TAIL: &[&str] = &["rootfstype=virtiofs", "rw", "quiet", "no-kvmapf"];
/// The default kernel console: the virtio console.
const DEFAULT_CONSOLE: &str = "hvc0";

#[derive(Debug, thiserror::Error)]
pub enum CmdlineError {
    #[error("the kernel command line would exceed {max} bytes (adding {what:?})")]
    TooLong { max: usize, what: String },
    #[error("invalid kernel command line item {what:?}")]
    Invalid {
        what: String,
        #[source]
        source: LinuxCmdlineError,
    },
}

/// A virtio-mmio device as the kernel must be told about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioDeviceArg {
    pub base: u64,
    pub irq: u32,
}

/// What varies in the command line.
#[derive(Clone, Debug, Default)]
pub struct CmdlineParams<'a> {
    /// `console=` value; None: hvc0 (with `base`: no `console=` added).
    pub console: Option<&'a str>,
    /// `krun_set_kernel`'s command line: replaces upstream's base options and the default
    /// console, as upstream uses it; the devices, `init=` and the workload still follow.
    pub base: Option<&'a str>,
    /// Extra options appended before the devices (debugging).
    pub extra: Option<&'a str>,
    /// Device options before the devices (e.g. `tsi_hijack`).
    pub flags: &'a [&'a str],
    pub mmio_devices: &'a [MmioDeviceArg],
    /// The workload's words after `init=`; None: nothing after it.
    pub workload: Option<&'a CmdlineWorkload>,
}

fn push(cmdline: &mut Cmdline, item: &str) -> Result<(), CmdlineError> {
    cmdline.insert_str(item).map_err(|source| match source {
        LinuxCmdlineError::TooLarge => CmdlineError::TooLong {
            max: CMDLINE_MAX_SIZE,
            what: item.to_string(),
        },
        source => CmdlineError::Invalid {
            what: item.to_string(),
            source,
        },
    })
}

/// Builds the command line; it fits in [`CMDLINE_MAX_SIZE`] bytes with its NUL.
pub fn build(params: &CmdlineParams<'_>) -> Result<Cmdline, CmdlineError> {
    // Invariant: CMDLINE_MAX_SIZE is a non-zero constant, the only failure of Cmdline::new.
    let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE).expect("non-zero command line capacity");
    match params.base.map(str::trim).filter(|b| !b.is_empty()) {
        Some(base) => {
            push(&mut cmdline, base)?;
            if let Some(console) = params.console {
                push(&mut cmdline, &format!("console={console}"))?;
            }
        }
        None if params.base.is_some() => {}
        None => {
            for item in BASE {
                push(&mut cmdline, item)?;
            }
            push(
                &mut cmdline,
                &format!("console={}", params.console.unwrap_or(DEFAULT_CONSOLE)),
            )?;
            for item in BASE_TAIL {
                push(&mut cmdline, item)?;
            }
        }
    }
    for flag in params.flags {
        push(&mut cmdline, flag)?;
    }
    if let Some(extra) = params.extra.map(str::trim).filter(|e| !e.is_empty()) {
        push(&mut cmdline, extra)?;
    }
    for dev in params.mmio_devices {
        let item = format!(
            "virtio_mmio.device={}K@{:#x}:{}",
            MMIO_DEVICE_SIZE >> 10,
            GuestAddress(dev.base).0,
            dev.irq
        );
        push(&mut cmdline, &item)?;
    }
    // The implicit init served on the root share.
    push(&mut cmdline, &format!("init={}", contract::INIT_PATH))?;
    if let Some(workload) = params.workload {
        for word in &workload.env {
            push(&mut cmdline, word)?;
        }
        push(&mut cmdline, "--")?;
        for arg in &workload.args {
            push(&mut cmdline, arg)?;
        }
    }
    Ok(cmdline)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(c: &Cmdline) -> String {
        c.as_cstring().unwrap().into_string().unwrap()
    }

    #[test]
    fn build_defaults_upstream_base_and_init() {
        let c = build(&CmdlineParams::default()).unwrap();
        assert_eq!(
            text(&c),
            "reboot=k panic=-1 panic_print=0 nomodule console=hvc0 rootfstype=virtiofs rw \
             quiet no-kvmapf init=/init.krun"
        );
    }

    #[test]
    fn build_devices_listed_before_init() {
        let devs = [
            MmioDeviceArg {
                base: 0xd000_0000,
                irq: 5,
            },
            MmioDeviceArg {
                base: 0xd000_1000,
                irq: 6,
            },
        ];
        let c = build(&CmdlineParams {
            mmio_devices: &devs,
            ..Default::default()
        })
        .unwrap();
        assert!(text(&c).ends_with(
            "virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 init=/init.krun"
        ));
    }

    #[test]
    fn build_flags_before_devices() {
        let devs = [MmioDeviceArg {
            base: 0xd000_0000,
            irq: 5,
        }];
        let c = build(&CmdlineParams {
            flags: &["tsi_hijack"],
            mmio_devices: &devs,
            ..Default::default()
        })
        .unwrap();
        assert!(text(&c).contains("no-kvmapf tsi_hijack virtio_mmio.device=4K@0xd0000000:5"));
    }

    #[test]
    fn build_console_override_replaces_hvc0() {
        let c = build(&CmdlineParams {
            console: Some("ttyS0"),
            ..Default::default()
        })
        .unwrap();
        assert!(text(&c).contains("console=ttyS0"));
        assert!(!text(&c).contains("hvc0"));
    }

    #[test]
    fn build_workload_after_init() {
        let w = CmdlineWorkload {
            env: vec!["KRUN_INIT=/bin/sh".into(), "A=\"b c\"".into()],
            args: vec!["-c".into(), "\"exit 7\"".into()],
        };
        let c = build(&CmdlineParams {
            workload: Some(&w),
            ..Default::default()
        })
        .unwrap();
        assert!(text(&c).ends_with("init=/init.krun KRUN_INIT=/bin/sh A=\"b c\" -- -c \"exit 7\""));
    }

    #[test]
    fn build_too_long_extra_error_not_truncated() {
        let extra = "x".repeat(CMDLINE_MAX_SIZE);
        let err = build(&CmdlineParams {
            extra: Some(&extra),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(err, CmdlineError::TooLong { .. }));
    }

    #[test]
    fn build_kernel_file_cmdline_replaces_base_devices_follow() {
        let dev = [MmioDeviceArg {
            base: 0xd000_0000,
            irq: 5,
        }];
        let c = build(&CmdlineParams {
            base: Some("console=ttyS0 reboot=k"),
            mmio_devices: &dev,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            text(&c),
            "console=ttyS0 reboot=k virtio_mmio.device=4K@0xd0000000:5 init=/init.krun"
        );
    }
}
