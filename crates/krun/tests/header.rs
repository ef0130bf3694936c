//! include/libkrun.h must be exactly what cbindgen generates from the exports. With
//! `UPDATE_HEADER=1` the test rewrites the header instead of failing.

use std::path::PathBuf;

fn generate() -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut config = cbindgen::Config::from_file(dir.join("cbindgen/cbindgen.toml"))
        .expect("cbindgen/cbindgen.toml parses");
    let macros = std::fs::read_to_string(dir.join("cbindgen/macros.h")).expect("macros.h");
    config.after_includes = Some(format!("\n{}", macros.trim_end()));
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("header is UTF-8")
}

#[test]
fn header_matches_cbindgen_output() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../include/libkrun.h");
    let fresh = generate();
    if std::env::var_os("UPDATE_HEADER").is_some() {
        std::fs::write(&path, &fresh).expect("write include/libkrun.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "include/libkrun.h is stale; run `UPDATE_HEADER=1 cargo test -p krun --test header`"
    );
}

#[test]
fn header_declares_every_abi_function_and_the_extension() {
    let header = generate();
    let names: Vec<&str> = include_str!("../../../tests/abi/symbols.txt")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(names.len(), 72);
    let extensions: Vec<&str> = include_str!("../../../tests/abi/extensions.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(extensions, ["krunrs_start_return"]);
    for name in names.into_iter().chain(extensions) {
        assert!(
            header.contains(&format!(" {name}(")),
            "{name} missing from the header"
        );
    }
}
