//! Placeholder benchmark of mmap-alloc (page_cycles); the real one belongs to the mmap-alloc work.

fn main() {}
