//! Host-requested shutdown (`krun_get_shutdown_eventfd`): a thread waits on the
//! `krun-shutdown` virtio-console port; whatever the host sends there means "stop": the
//! workload gets SIGTERM, then SIGKILL after the grace period. PID 1's supervisor reaps it as
//! usual, so the VM ends with the workload's own status (143 when SIGTERM killed it).
//! The protocol is spelled in crates/contract (`PORT_SHUTDOWN`).

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long to look for the port: the host answers the console's control queue while the
/// kernel boots, so the port is normally there before init runs; a VM without the port
/// (no eventfd asked for) costs this thread a few seconds of polling, nothing else.
const PORT_LOOKUP: Duration = Duration::from_secs(10);
const PORT_POLL: Duration = Duration::from_millis(100);

/// Starts the watcher for `child` (the workload) in the background. Call it after the fork
/// that started the workload: PID 1 must be single-threaded when it forks.
pub fn watch(child: libc::pid_t) {
    let spawned = std::thread::Builder::new()
        .name("shutdown".into())
        .spawn(move || {
            if let Some(port) = find_port(PORT_LOOKUP) {
                wait_for_request(&port, child);
            }
        });
    if let Err(err) = spawned {
        crate::diag!("cannot watch for shutdown requests: {err}");
    }
}

/// The device node of the port named [`contract::PORT_SHUTDOWN`], waiting up to `patience`.
fn find_port(patience: Duration) -> Option<PathBuf> {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(port) = lookup_port() {
            return Some(port);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(PORT_POLL);
    }
}

fn lookup_port() -> Option<PathBuf> {
    let ports = std::fs::read_dir("/sys/class/virtio-ports").ok()?;
    ports.flatten().find_map(|port| {
        let name = std::fs::read_to_string(port.path().join("name")).ok()?;
        (name.trim_end() == contract::PORT_SHUTDOWN)
            .then(|| PathBuf::from("/dev").join(port.file_name()))
    })
}

/// Blocks until the host writes to the port, then stops `child`.
fn wait_for_request(port: &std::path::Path, child: libc::pid_t) {
    // std opens with O_CLOEXEC: the workload never inherits the port.
    let mut file = match std::fs::File::open(port) {
        Ok(file) => file,
        Err(err) => {
            crate::diag!("cannot open {}: {err}", port.display());
            return;
        }
    };
    let mut buf = [0u8; 64];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => break,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => {
                crate::diag!("reading {}: {err}", port.display());
                return;
            }
        }
    }
    stop(child, Duration::from_secs(contract::SHUTDOWN_GRACE_SECS));
}

/// SIGTERM now, SIGKILL after `grace` if the workload is still there.
fn stop(child: libc::pid_t, grace: Duration) {
    crate::diag!("shutdown requested by the host: sending SIGTERM to the workload");
    if !signal(child, libc::SIGTERM) {
        return;
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        std::thread::sleep(PORT_POLL);
        // Signal 0 only checks that the process exists (a zombie still does: PID 1's main
        // thread reaps it right away, so this ends as soon as the workload has).
        if !signal(child, 0) {
            return;
        }
    }
    crate::diag!(
        "the workload did not stop within {} s of SIGTERM: sending SIGKILL",
        grace.as_secs()
    );
    signal(child, libc::SIGKILL);
}

/// Sends `sig` to `pid`; false when the process is gone.
fn signal(pid: libc::pid_t, sig: libc::c_int) -> bool {
    // SAFETY: plain integers; kill has no memory effects on this process.
    unsafe { libc::kill(pid, sig) == 0 }
}
