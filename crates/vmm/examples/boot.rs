//! Boots the libkrunfw kernel with N vCPUs and M MiB of RAM and prints the exit status:
//! `boot [VCPUS] [RAM_MIB]`. Used in the KVM lab to check the VMM end to end.

use std::process::ExitCode;

use vmm::{Vm, VmConfig};

fn arg(n: usize, default: u32) -> Result<u32, String> {
    match std::env::args().nth(n) {
        None => Ok(default),
        Some(s) => s.parse().map_err(|e| format!("argument {n} ({s:?}): {e}")),
    }
}

fn main() -> ExitCode {
    env_logger::init();
    let (vcpus, ram_mib) = match (arg(1, 1), arg(2, 256)) {
        (Ok(v), Ok(r)) => (v, r),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("usage: boot [VCPUS] [RAM_MIB]: {e}");
            return ExitCode::from(2);
        }
    };
    let config = VmConfig {
        vcpus: vcpus.min(255) as u8,
        ram_mib,
        ..VmConfig::default()
    };
    let result = Vm::new(config).and_then(Vm::run);
    match result {
        Ok(status) => {
            eprintln!("boot: guest ended, status {status}");
            ExitCode::from(status.clamp(0, 255) as u8)
        }
        Err(e) => {
            let mut msg = format!("boot: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{msg}");
            ExitCode::from(1)
        }
    }
}
