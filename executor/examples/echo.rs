//! Echoes a JSON request body: `POST /echo` with a valid JSON document gets it back
//! (`application/json`); invalid JSON gets 400, a body over 64 KiB gets 413, anything
//! else 404.
//!
//! `cargo run --release -p pagekeep-executor --example echo -- [PORT] [WORKERS]`, then
//! `curl -d '{"hello":[1,2,3]}' http://127.0.0.1:8080/echo`

mod common;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError};

// Routes each request's allocations to its own arena (see `pagekeep_executor::RequestAllocator`).
#[global_allocator]
static GLOBAL: pagekeep_executor::RequestAllocator = pagekeep_executor::request_allocator();

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type.parse().unwrap());
    response
}

async fn echo(request: Request<pagekeep_executor::RequestBody>) -> Response<Full<Bytes>> {
    if request.method() != Method::POST || request.uri().path() != "/echo" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "POST JSON to /echo\n".into(),
        );
    }
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                "body too large\n".into(),
            );
        }
        Err(_) => return reply(StatusCode::BAD_REQUEST, "text/plain", "bad body\n".into()),
    };
    // Checked without building the document: a `serde_json::Value` takes up to 16
    // times the text's size (32 bytes for each `0,` of an array), so a valid 64 KiB
    // body could need more than the request's 1 MiB budget and get 503 instead of its
    // echo. `IgnoredAny` parses every byte and keeps nothing.
    match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        Ok(_) => reply(StatusCode::OK, "application/json", body),
        Err(error) => reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            format!("invalid JSON: {error}\n").into(),
        ),
    }
}

fn main() -> std::io::Result<()> {
    let (address, workers) = common::settings(8080);
    let server = pagekeep_executor::Server::builder()
        .workers(workers)
        .max_body_bytes(64 * 1024)
        .bind(address)?;
    println!(
        "echo: listening on http://{}/echo with {workers} workers",
        server.local_addr()
    );
    server.serve(echo)?;
    println!("echo: shut down");
    Ok(())
}
