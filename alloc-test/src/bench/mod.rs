//! What `reproduce` is made of: a measurement harness ([`measure`]), a description of
//! the machine ([`machine`]), pages of tables and SVG plots ([`report`]), a heap that
//! counts the calls made into it ([`counting`]), `/proc` readings of another process
//! ([`process`]) and, with the `peers` feature, an HTTP load generator (`loadgen`).

pub mod counting;
#[cfg(feature = "peers")]
pub mod loadgen;
pub mod machine;
pub mod measure;
pub mod process;
pub mod report;
pub mod svg;
pub mod threads;
