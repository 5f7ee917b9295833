//! Sets `pagekeep_initial_exec_tls` where the `initial-exec-tls` feature applies: x86-64
//! Linux with glibc (64-bit pointers), where the magazines' TLS word is read with the
//! initial-exec model (see `src/magazine/initial_exec_storage.rs`). Elsewhere the
//! feature changes nothing. (Under miri the code also tests `not(miri)`.)

fn main() {
    println!("cargo::rustc-check-cfg=cfg(pagekeep_initial_exec_tls)");
    println!("cargo::rerun-if-changed=build.rs");
    let target = |key: &str| std::env::var(format!("CARGO_CFG_TARGET_{key}")).unwrap_or_default();
    if std::env::var_os("CARGO_FEATURE_INITIAL_EXEC_TLS").is_some()
        && target("OS") == "linux"
        && target("ARCH") == "x86_64"
        && target("ENV") == "gnu"
        && target("POINTER_WIDTH") == "64"
    {
        println!("cargo::rustc-cfg=pagekeep_initial_exec_tls");
    }
}
