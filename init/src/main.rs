//! The guest init (/init.krun).
fn main() {}
