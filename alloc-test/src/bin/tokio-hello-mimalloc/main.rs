//! `tokio-hello-mimalloc`: the tokio + hyper peer of the executor benchmark with mimalloc
//! as its global allocator, as tokio programs tuned for speed are often deployed (see
//! `../tokio-hello/server.rs`).

#[path = "../tokio-hello/server.rs"]
mod server;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    server::main()
}
