//! `tokio-hello`: the tokio + hyper peer of the executor benchmark on the system
//! allocator, as a tokio program is deployed by default (see `server.rs`).

mod server;

fn main() -> std::process::ExitCode {
    server::main()
}
