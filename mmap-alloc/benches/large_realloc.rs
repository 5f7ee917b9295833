//! Placeholder benchmark of mmap-alloc (large_realloc); the real one belongs to the mmap-alloc work.

fn main() {}
