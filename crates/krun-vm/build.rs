//! Build script: builds the guest init that the crate embeds.
//!
//! The init crate (workspace member `init`) must be a static executable for the guest, so
//! it is built here by a nested cargo with `+crt-static` into its own target directory
//! (a separate directory means no lock shared with the outer build, so no deadlock), and
//! the binary is copied to `$OUT_DIR/init.krun` for `include_bytes!`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const INIT_TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.join("../..");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let init_dir = workspace.join("init");
    println!("cargo:rerun-if-changed={}", init_dir.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        init_dir.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );

    let target_dir = init_target_dir(&out_dir);
    build_init(&workspace, &target_dir);
    let built = target_dir.join(INIT_TARGET).join("release").join("init");
    let dest = out_dir.join("init.krun");
    std::fs::copy(&built, &dest)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", built.display(), dest.display()));
}

/// Where the nested build puts the init: `<target>/init-target` when `OUT_DIR` has cargo's
/// usual shape (`<target>/<profile>/build/<pkg>/out`), so debug and release builds of the
/// workspace share one init build; else inside `OUT_DIR`.
fn init_target_dir(out_dir: &Path) -> PathBuf {
    match out_dir.ancestors().nth(4) {
        Some(target)
            if out_dir.ends_with("out")
                && out_dir
                    .ancestors()
                    .nth(2)
                    .is_some_and(|b| b.ends_with("build")) =>
        {
            target.join("init-target")
        }
        _ => out_dir.join("init-target"),
    }
}

/// Runs `cargo build --release -p init` with an environment scrubbed of everything the outer
/// cargo set for this build script (target dir, rustflags, wrappers, jobserver, profile).
fn build_init(workspace: &Path, target_dir: &Path) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--release", "-p", "init", "--target", INIT_TARGET])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let keep = matches!(key, "CARGO_HOME" | "CARGO_NET_OFFLINE")
            || key.starts_with("CARGO_HTTP_")
            || key.starts_with("CARGO_NET_")
            || key.starts_with("CARGO_REGISTRIES_")
            || key.starts_with("CARGO_REGISTRY_");
        let drop = (key.starts_with("CARGO_") && !keep)
            || key.starts_with("DEP_")
            || matches!(
                key,
                "RUSTFLAGS"
                    | "RUSTDOCFLAGS"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "MAKEFLAGS"
                    | "MFLAGS"
                    | "OUT_DIR"
                    | "TARGET"
                    | "HOST"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
                    | "RUSTC_LINKER"
                    | "__CARGO_FIX_PLZ"
            );
        if drop {
            cmd.env_remove(key);
        }
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static");
    // The init is copied into every libkrun.so.1 (and every Rust program using this crate) and served to every guest: no debug info
    // (the workspace release profile keeps it for the library), stripped: ~1.3 MB, not ~4 MB.
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "0");
    cmd.env("CARGO_PROFILE_RELEASE_STRIP", "symbols");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the guest init: {e}"));
    assert!(
        status.success(),
        "building the guest init (cargo build -p init) failed: {status}"
    );
}
