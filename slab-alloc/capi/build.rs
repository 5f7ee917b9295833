//! Links the shared library with `-z nodelete` on Linux: once loaded, `dlclose` leaves
//! it mapped. A thread that used its `malloc` holds its exit hook (a pthread key
//! destructor that glibc calls when the thread exits), and blocks it handed out may
//! still be freed through it; unmapped, both would run code that is gone.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    }
}
