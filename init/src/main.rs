//! The guest init (`/init.krun`): PID 1 of the microVM. It prepares the guest, starts the
//! workload as its child, waits for it, reports its exit status to the VMM and powers off.
//! Formats and variables it reads: `README.md` next to this crate.

/// Diagnostics go to the console (stderr) with a fixed prefix; init has no logger backend.
macro_rules! diag {
    ($($arg:tt)*) => {
        eprintln!("krun init: {}", format_args!($($arg)*))
    };
}
pub(crate) use diag;

mod exec;
mod mounts;
mod net;
mod nics;
mod reaper;
mod remount;
mod report;
mod rlimits;
mod shutdown;
mod workload;

use exec::{PreparedExec, EXIT_SETUP_FAILED};
use workload::{KernelInput, Workload};

fn main() {
    install_panic_hook();
    mounts::mount_kernel_filesystems();
    let kernel = KernelInput::from_process();
    let exec_text = remount::requested(&kernel.env).map(|root| switch_to_block_root(&root));
    mounts::make_root_shared();
    net::bring_up_loopback();
    if net::tsi_enabled(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default()) {
        let tsi_ip = std::env::var(contract::keys::TSI_IP).ok();
        net::enable_tsi_dummy_interface(net::tsi_address(tsi_ip.as_deref()));
    }
    nics::configure_all(std::env::var(contract::keys::NET).ok().as_deref());

    let loaded = match exec_text {
        Some(text) => workload::load_with_exec(kernel, text),
        None => workload::load(kernel),
    };
    let workload = match loaded {
        Ok(workload) => workload,
        Err(err) => fail(&err),
    };
    mounts::mount_config_tmpfs(&workload.tmpfs);
    net::set_hostname(&workload.hostname);
    rlimits::apply_all(&workload.rlimits);

    let code = run(&workload);
    report::finish(code)
}

/// Starts the workload and returns its exit code (shell convention).
fn run(workload: &Workload) -> i32 {
    let prepared = match PreparedExec::new(workload) {
        Ok(prepared) => prepared,
        Err(err) => fail(&err),
    };
    if workload.exec_as_pid1 {
        prepared.run();
    }
    let mask = match reaper::SignalMask::block() {
        Ok(mask) => mask,
        Err(err) => fail(&err),
    };
    match reaper::spawn(&prepared, &mask) {
        Ok(child) => {
            shutdown::watch(child);
            reaper::supervise(child, &mask)
        }
        Err(err) => fail(&format!("fork: {err}")),
    }
}

/// The remount root: keep the virtio-fs root for the exit status, read the exec file it
/// holds, make the block device `/`, mount the kernel filesystems there. Returns the exec
/// file's text. Any failure ends the VM with status 125, saying why.
fn switch_to_block_root(root: &remount::BlockRoot) -> Option<String> {
    if let Err(err) = report::keep_root() {
        fail(&format!("remount root: {err}"));
    }
    let exec_text = match workload::read_exec_file() {
        Ok(text) => text,
        Err(err) => fail(&err),
    };
    if let Err(err) = remount::switch(root) {
        fail(&err);
    }
    mounts::mount_kernel_filesystems();
    exec_text
}

/// A panic in PID 1 would exit it and panic the kernel without a status for the VMM: report
/// 125 and power off instead. In the forked workload child, just exit 125.
fn install_panic_hook() {
    let init_pid = std::process::id();
    std::panic::set_hook(Box::new(move |info| {
        diag!("internal error: {info}");
        if std::process::id() == init_pid {
            report::finish(EXIT_SETUP_FAILED);
        }
        std::process::exit(EXIT_SETUP_FAILED);
    }));
}

/// Init could not even start the workload: say why and end the VM with status 125.
fn fail(err: &dyn std::fmt::Display) -> ! {
    diag!("{err}");
    report::finish(EXIT_SETUP_FAILED)
}
