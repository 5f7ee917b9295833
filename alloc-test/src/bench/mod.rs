//! What `reproduce` is made of: a measurement harness ([`measure`]), the call boundary
//! every allocator is measured behind ([`boundary`]), a description of
//! the machine ([`machine`]), pages of tables and SVG plots ([`report`]), a heap that
//! counts the calls made into it ([`counting`]), paired-round statistics ([`stats`]),
//! `/proc` readings of another process
//! ([`process`]), [`wrk`] as a second HTTP client and, with the `peers` feature, an HTTP
//! load generator (`loadgen`) and the axum app of the executor benchmark (`axum_app`);
//! [`h2load`] as the HTTP/2 client; the async heap's free-to-wake hand-off ([`async_heap`]).

pub mod async_heap;
#[cfg(feature = "peers")]
pub mod axum_app;
pub mod boundary;
pub mod counting;
pub mod h2load;
#[cfg(feature = "peers")]
pub mod loadgen;
pub mod machine;
pub mod measure;
pub mod process;
pub mod report;
pub mod stats;
pub mod svg;
pub mod threads;
pub mod wrk;
