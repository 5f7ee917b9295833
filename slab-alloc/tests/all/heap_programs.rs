//! heap_programs
