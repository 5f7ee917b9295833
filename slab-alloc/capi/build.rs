//! Linker arguments of the shared library on Linux.
//!
//! - `-z nodelete`: once loaded, `dlclose` leaves it mapped. A thread that used its
//!   `malloc` holds its exit hook (a pthread key destructor that glibc calls when the
//!   thread exits), and blocks it handed out may still be freed through it; unmapped,
//!   both would run code that is gone.
//! - `text-layout.ld`: the allocator's code together, and std's rarely-run backtrace
//!   code after the rest, so that the pages the kernel maps around the code a program
//!   runs hold little else (see the script; about 50 KiB less resident in every small
//!   program that loads the library).

fn main() {
    println!("cargo:rerun-if-changed=text-layout.ld");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
        let directory = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-T,{directory}/text-layout.ld");
    }
}
