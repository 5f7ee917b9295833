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
//! - glibc targets: the unwinder linked in from GCC's static `libgcc_eh.a` (whole, its
//!   symbols kept local by the library's export list) instead of loading
//!   `libgcc_s.so.1`, which std asks for: a C program that preloads the library maps
//!   one shared object fewer, about 60-80 KiB less resident in every process (the
//!   library needs only libc, as mimalloc's does). It unwinds only a panic of the
//!   library's own, which aborts anyway (no panic crosses the C interface); C++
//!   exceptions keep libstdc++'s unwinder. Left out when the C compiler has no
//!   `libgcc_eh.a`, or with `PAGEKEEP_CAPI_STATIC_UNWINDER=0`.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=text-layout.ld");
    println!("cargo:rerun-if-env-changed=PAGEKEEP_CAPI_TEXT_LAYOUT");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    if static_unwinder_wanted() {
        println!("cargo:rustc-link-lib=static:+whole-archive,-bundle=gcc_eh");
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

/// The linker the build names for the target (`CARGO_TARGET_<TRIPLE>_LINKER`), if any.
fn named_linker() -> Option<String> {
    let target = env::var("TARGET").unwrap_or_default();
    let variable = format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_uppercase().replace(['-', '.'], "_")
    );
    println!("cargo:rerun-if-env-changed={variable}");
    env::var(variable).ok()
}

/// Whether to link GCC's static unwinder in (module docs): a glibc target whose linker
/// driver (`cc` unless the build names another) has `libgcc_eh.a`.
fn static_unwinder_wanted() -> bool {
    println!("cargo:rerun-if-env-changed=PAGEKEEP_CAPI_STATIC_UNWINDER");
    if env::var("CARGO_CFG_TARGET_ENV").as_deref() != Ok("gnu")
        || env::var("PAGEKEEP_CAPI_STATIC_UNWINDER").as_deref() == Ok("0")
    {
        return false;
    }
    let driver = named_linker().unwrap_or_else(|| "cc".to_owned());
    // Asked for a file it does not have, the driver prints the bare name back.
    std::process::Command::new(driver)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .is_some_and(|path| std::path::Path::new(path.trim()).is_absolute())
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
    let linker = named_linker().unwrap_or_default();
    !["mold", "gold"]
        .iter()
        .any(|name| flags.contains(name) || linker.contains(name))
}
