//! Marks the module NODELETE on Linux: when the gateway finalises and drops
//! its `Pkcs11` (dlclose) and loads the module again, the fault plan, the
//! consumed `once` rules and the loaded real module survive, so a `once` rule
//! that made the gateway re-initialise does not fire a second time.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
