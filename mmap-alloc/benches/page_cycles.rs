//! Benchmark placeholder: the measurements land with the benchmark suite.

fn main() {}
