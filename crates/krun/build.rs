//! Build script: sets the SONAME. (The guest init is built and embedded by the krun-vm
//! crate, which this library sits on.)

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libkrun.so.1");
}
