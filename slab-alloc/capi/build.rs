//! Linker arguments of the shared library on Linux.
//!
//! - `-z nodelete`: once loaded, `dlclose` leaves it mapped. A thread that used its
//!   `malloc` holds its exit hook (a pthread key destructor that glibc calls when the
//!   thread exits), and blocks it handed out may still be freed through it; unmapped,
//!   both would run code that is gone.
//! - `text-layout.ld`, on x86-64 only: the allocator's code together, and std's
//!   rarely-run backtrace and formatting code after the rest, so that the pages the
//!   kernel maps around the code a program runs hold little else (see the script: about
//!   100 KiB less of the library's text resident in every program that loads it).
//!   Linkers that take no such script (gold, mold) are left alone when the build names
//!   them, and `PAGEKEEP_CAPI_TEXT_LAYOUT=0` leaves the script out whatever the linker.
//! - `libgcc_eh.a`, on glibc targets: std's unwinder (used only by a panic, which the
//!   library turns into an abort) linked in statically, so that the shared `libgcc_s`
//!   is no longer needed and no longer loaded into every program: 100 KiB less resident
//!   in each process, and one library fewer for the dynamic linker to map and relocate.
//!   Its symbols stay local to the library (a cdylib exports only its C ABI), so the
//!   program keeps its own unwinder for its C++ exceptions; `std::bad_alloc`, thrown
//!   by libstdc++'s `operator new`, to which the library hands a request it cannot
//!   serve, leaves through tail calls, with none of the library's frames to unwind (the
//!   C++ tests of `tests/run-c-tests.sh` catch it). `PAGEKEEP_CAPI_STATIC_UNWINDER=0`
//!   links `libgcc_s` as before (for a toolchain without `libgcc_eh.a`).

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=text-layout.ld");
    println!("cargo:rerun-if-env-changed=PAGEKEEP_CAPI_TEXT_LAYOUT");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    println!("cargo:rerun-if-env-changed=PAGEKEEP_CAPI_STATIC_UNWINDER");
    if env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
        && env::var("PAGEKEEP_CAPI_STATIC_UNWINDER").as_deref() != Ok("0")
    {
        // Before std's `-lgcc_s` on the link line, so the `_Unwind_*` symbols are
        // found here first and `--as-needed` (rustc's default) drops `libgcc_s`.
        println!("cargo:rustc-link-lib=static:-bundle=gcc_eh");
    }
    if text_layout_wanted() {
        // A copy in OUT_DIR: cargo keeps the build script's output between builds and
        // moves paths under OUT_DIR along with a moved target directory, not others.
        let out_dir = env::var("OUT_DIR").expect("cargo sets OUT_DIR");
        let script = format!("{out_dir}/text-layout.ld");
        std::fs::copy("text-layout.ld", &script).expect("copy text-layout.ld into OUT_DIR");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-T,{script}");
    }
}

/// Whether to link with `text-layout.ld`: on x86-64 (where the layout was measured, and
/// where the linkage table is code), unless turned off or the build names a linker
/// that rejects it.
fn text_layout_wanted() -> bool {
    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("x86_64")
        || env::var("PAGEKEEP_CAPI_TEXT_LAYOUT").as_deref() == Ok("0")
    {
        return false;
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let target = env::var("TARGET").unwrap_or_default();
    let linker_variable = format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_uppercase().replace(['-', '.'], "_")
    );
    println!("cargo:rerun-if-env-changed={linker_variable}");
    let linker = env::var(linker_variable).unwrap_or_default();
    !["mold", "gold"]
        .iter()
        .any(|name| flags.contains(name) || linker.contains(name))
}
