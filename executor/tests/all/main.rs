//! Integration tests of the executor over loopback, one module per scenario.

fn main() {}
