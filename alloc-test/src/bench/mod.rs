//! What `reproduce` is made of: a measurement harness ([`measure`]), a description of
//! the machine ([`machine`]), and pages of tables and SVG plots ([`report`]).

pub mod machine;
pub mod measure;
pub mod report;
pub mod svg;
