//! The lab program of tests/e2e/cases/70-rust-api.sh: drives the Rust API the way an
//! embedding program would and prints one line per fact the case checks.
//!
//!   vm_api_lab concurrent ROOT_A ROOT_B DIR   two VMs at once on two threads
//!   vm_api_lab sequential ROOT N DIR          N VMs one after another; fds, threads, RSS
//!   vm_api_lab soak ROOT N DIR                the same for many runs: a run that fails goes
//!                                             on record and the next one starts
//!   vm_api_lab stop ROOT KEEP_ROOT DIR        VmHandle: stop before run, stop one of two
//!                                             running VMs (KEEP_ROOT: the other's, writable)
//!   vm_api_lab shutdown ROOT DIR              VmHandle::request_shutdown: init SIGTERMs
//!
//! Each VM's stdout and stderr go to its own files in DIR (`NAME.out`, `NAME.err`).

use std::fs::File;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use krun_vm::{ExecBuilder, ExitStatus, Vm, VmBuilder};

fn vm(root: &str, dir: &Path, name: &str, script: &str) -> Result<Vm, String> {
    vm_with(root, dir, name, script, |e| e)
}

/// A VM whose stdout and stderr are DIR/NAME.out and DIR/NAME.err, running `sh -c SCRIPT`
/// with `VM=NAME`; `exec` adds to the exec section.
fn vm_with(
    root: &str,
    dir: &Path,
    name: &str,
    script: &str,
    exec: impl FnOnce(ExecBuilder) -> ExecBuilder,
) -> Result<Vm, String> {
    let out = File::create(dir.join(format!("{name}.out"))).map_err(|e| e.to_string())?;
    let err = File::create(dir.join(format!("{name}.err"))).map_err(|e| e.to_string())?;
    VmBuilder::new()
        .machine(|m| m.vcpus(1).memory_mib(256))
        .fs(|fs| fs.root(root))
        .console(|c| c.stdio(None, out, err))
        .exec(|e| exec(e.path("/bin/sh").args(["-c", script]).env("VM", name)))
        .build()
        .map_err(|e| format!("{name}: build: {}", chain(&e)))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn run(vm: Vm, name: &str) -> Result<ExitStatus, String> {
    vm.run().map_err(|e| format!("{name}: run: {}", chain(&e)))
}

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn resources() -> String {
    format!(
        "fds={} threads={}",
        count("/proc/self/fd"),
        count("/proc/self/task")
    )
}

/// `resources()` once the threads the runs joined are gone from /proc: a thread that
/// pthread_join already returned for can stay listed for a moment while the kernel ends it,
/// so wait (at most 2 s) for the count to fall back to `threads` before reporting it. A
/// thread that was really left running still shows after that.
fn resources_settled(threads: usize) -> String {
    for _ in 0..40 {
        if count("/proc/self/task") <= threads {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    resources()
}

fn concurrent(root_a: &str, root_b: &str, dir: &Path) -> Result<(), String> {
    let threads = count("/proc/self/task");
    let before = resources();
    let t0 = Instant::now();
    let spawn = |root: String, name: &'static str, script: &'static str| {
        let dir = dir.to_path_buf();
        std::thread::spawn(move || {
            let vm = vm(&root, &dir, name, script)?;
            let start = t0.elapsed();
            let status = run(vm, name)?;
            Ok::<_, String>((status, start, t0.elapsed()))
        })
    };
    let a = spawn(
        root_a.to_string(),
        "a",
        "echo out-$VM; echo err-$VM >&2; echo $VM >/mark; sleep 1; exit 3",
    );
    let b = spawn(
        root_b.to_string(),
        "b",
        "echo out-$VM; echo err-$VM >&2; echo $VM >/mark; sleep 1; exit 5",
    );
    let (sa, a0, a1) = a.join().map_err(|_| "thread a panicked")??;
    let (sb, b0, b1) = b.join().map_err(|_| "thread b panicked")??;
    println!("a: {sa}");
    println!("b: {sb}");
    let overlap = a0 < b1 && b0 < a1;
    println!("overlap: {}", if overlap { "yes" } else { "no" });
    println!("before: {before}");
    println!("after: {}", resources_settled(threads));
    Ok(())
}

fn sequential(root: &str, runs: u32, dir: &Path) -> Result<(), String> {
    let threads = count("/proc/self/task");
    println!("before: {}", resources());
    for i in 1..=runs {
        let name = format!("run{i}");
        // The first run also shows the exec settings: workdir, guest ids, an rlimit.
        let vm = if i == 1 {
            vm_with(
                root,
                dir,
                &name,
                "echo $VM $(pwd) $(id -u):$(id -g) $(ulimit -n); exit 1",
                |e| {
                    e.workdir("/tmp")
                        .uid(1234)
                        .gid(4321)
                        .rlimit("NOFILE", 100, 200)
                },
            )?
        } else {
            vm(root, dir, &name, &format!("echo $VM; exit {i}"))?
        };
        let status = run(vm, &name)?;
        println!(
            "{name}: {status} {} rss_kib={}",
            resources_settled(threads),
            rss_kib()
        );
    }
    Ok(())
}

/// How long one soak run may take before it is stopped (a guest lost in the lab).
const SOAK_RUN_LIMIT: Duration = Duration::from_secs(90);

/// N short VMs in a row, each `echo $VM; exit (i % 256)`, with the figures of run 1 and of
/// every 100th run on stdout and a line per 50 runs on stderr (progress). A run that fails,
/// ends with another status or prints other bytes is listed and the soak goes on; the last
/// line counts them. Each run has a guard thread that stops it after [`SOAK_RUN_LIMIT`],
/// joined before the figures are taken.
fn soak(root: &str, runs: u32, dir: &Path) -> Result<(), String> {
    let threads = count("/proc/self/task");
    let t0 = Instant::now();
    println!("before: {}", resources());
    let mut bad = Vec::new();
    for i in 1..=runs {
        let name = format!("run{i}");
        let code = i % 256;
        let vm = vm(root, dir, &name, &format!("echo $VM; exit {code}"))?;
        let handle = vm.handle();
        let guard = std::thread::spawn(move || {
            if handle.wait_timeout(SOAK_RUN_LIMIT).is_none() {
                handle.stop();
                return true;
            }
            false
        });
        let result = vm.run();
        let stopped = guard.join().map_err(|_| "guard thread panicked")?;
        let out = std::fs::read(dir.join(format!("{name}.out"))).unwrap_or_default();
        let verdict = match &result {
            _ if stopped => Some(format!("stopped after {}s", SOAK_RUN_LIMIT.as_secs())),
            Err(e) => Some(format!("run: {}", chain(e))),
            Ok(ExitStatus::Exited(c)) if *c == code as i32 => None,
            Ok(other) => Some(format!("{other}, expected status {code}")),
        };
        let verdict = verdict.or_else(|| {
            (out != format!("{name}\n").as_bytes())
                .then(|| format!("stdout {:?}", String::from_utf8_lossy(&out)))
        });
        if let Some(why) = verdict {
            // The VMM's own last lines say how the vCPU saw the end (the lost guests of #9).
            let err = std::fs::read_to_string(dir.join(format!("{name}.err"))).unwrap_or_default();
            let tail: Vec<&str> = err.lines().rev().take(3).collect();
            println!("{name}: FAILED: {why}");
            for line in tail.iter().rev() {
                println!("{name}:   {line}");
            }
            bad.push(name.clone());
        } else {
            // The per-run files are not needed once checked (1000 runs, 2000 files).
            let _ = std::fs::remove_file(dir.join(format!("{name}.out")));
            let _ = std::fs::remove_file(dir.join(format!("{name}.err")));
        }
        let report = i == 1 || i % 100 == 0 || i == runs;
        let progress = i % 50 == 0;
        if report || progress {
            let figures = format!("{} rss_kib={}", resources_settled(threads), rss_kib());
            let secs = t0.elapsed().as_secs();
            if report {
                println!("{name}: {figures} secs={secs}");
            }
            if progress {
                eprintln!(
                    "# soak: {i}/{runs} runs, {} failed, {secs}s, {figures}",
                    bad.len()
                );
            }
        }
    }
    println!("soak: runs={runs} failed={} {}", bad.len(), bad.join(" "));
    Ok(())
}

/// Waits until `path` holds `text` (the guest has started its workload).
fn wait_for(path: &Path, text: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(text)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Stops: one VM before it runs, and one of two running at once (the other goes on and
/// ends by itself); one more VM is dropped without running.
fn stop(root: &str, keep_root: &str, dir: &Path) -> Result<(), String> {
    let threads = count("/proc/self/task");
    println!("before: {}", resources());

    let early = vm(root, dir, "early", "echo started; sleep 600")?;
    let handle = early.handle();
    handle.stop();
    println!("stop before run: {}", run(early, "early")?);
    println!("early outcome: {:?}", handle.outcome());

    let unused = vm(root, dir, "unused", "exit 0")?;
    let handle = unused.handle();
    drop(unused);
    println!("dropped outcome: {:?}", handle.outcome());

    let late = vm(root, dir, "late", "echo started; sleep 600")?;
    // Ends when the host creates /go in its root (after `late` was stopped): exit 9;
    // 8 if it never sees it.
    let keep = vm(
        keep_root,
        dir,
        "keep",
        "echo started; i=0; while [ ! -e /go ] && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done; \
         [ -e /go ] && exit 9; exit 8",
    )?;
    let (late_handle, keep_handle) = (late.handle(), keep.handle());
    let late_thread = std::thread::spawn(move || run(late, "late"));
    let keep_thread = std::thread::spawn(move || run(keep, "keep"));
    let started = wait_for(&dir.join("late.out"), "started\n", Duration::from_secs(90))
        && wait_for(&dir.join("keep.out"), "started\n", Duration::from_secs(90));
    println!("guests started: {}", yes(started));
    println!(
        "still running: {}",
        yes(late_handle
            .wait_timeout(Duration::from_millis(500))
            .is_none())
    );
    let asked = Instant::now();
    late_handle.stop();
    let outcome = late_handle.wait_timeout(Duration::from_secs(60));
    let status = late_thread.join().map_err(|_| "run thread panicked")??;
    println!("stop while running: {status}");
    println!("late outcome: {outcome:?}");
    println!(
        "stopped within 30s: {}",
        yes(asked.elapsed() < Duration::from_secs(30))
    );
    println!(
        "other still running: {}",
        yes(keep_handle.outcome().is_none())
    );
    std::fs::write(Path::new(keep_root).join("go"), b"").map_err(|e| e.to_string())?;
    let kept = keep_thread.join().map_err(|_| "run thread panicked")??;
    println!("other: {kept}");
    println!("after: {}", resources_settled(threads));
    Ok(())
}

/// A graceful shutdown: the workload traps SIGTERM and exits 42.
fn shutdown(root: &str, dir: &Path) -> Result<(), String> {
    let out = File::create(dir.join("term.out")).map_err(|e| e.to_string())?;
    let err = File::create(dir.join("term.err")).map_err(|e| e.to_string())?;
    let vm = VmBuilder::new()
        .machine(|m| m.vcpus(1).memory_mib(256).shutdown_requests(true))
        .fs(|fs| fs.root(root))
        .console(|c| c.stdio(None, out, err))
        .exec(|e| {
            e.path("/bin/sh").args([
                "-c",
                "trap 'echo got-term; exit 42' TERM; echo started; while :; do sleep 1; done",
            ])
        })
        .build()
        .map_err(|e| format!("term: build: {}", chain(&e)))?;
    let handle = vm.handle();
    let thread = std::thread::spawn(move || run(vm, "term"));
    let started = wait_for(&dir.join("term.out"), "started\n", Duration::from_secs(90));
    println!("guest started: {}", yes(started));
    handle
        .request_shutdown()
        .map_err(|e| format!("request_shutdown: {e}"))?;
    let ended = handle.wait_timeout(Duration::from_secs(60)).is_some();
    println!("ended within 60s: {}", yes(ended));
    let status = thread.join().map_err(|_| "run thread panicked")??;
    println!("shutdown: {status}");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args[..] {
        ["concurrent", a, b, dir] => concurrent(a, b, Path::new(dir)),
        ["sequential", root, n, dir] => match n.parse() {
            Ok(n) => sequential(root, n, Path::new(dir)),
            Err(_) => Err(format!("not a count: {n}")),
        },
        ["soak", root, n, dir] => match n.parse() {
            Ok(n) => soak(root, n, Path::new(dir)),
            Err(_) => Err(format!("not a count: {n}")),
        },
        ["stop", root, keep_root, dir] => stop(root, keep_root, Path::new(dir)),
        ["shutdown", root, dir] => shutdown(root, Path::new(dir)),
        _ => Err("usage: vm_api_lab concurrent ROOT_A ROOT_B DIR | sequential ROOT N DIR | soak ROOT N DIR | stop ROOT KEEP_ROOT DIR | shutdown ROOT DIR".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vm_api_lab: {e}");
            ExitCode::from(2)
        }
    }
}
