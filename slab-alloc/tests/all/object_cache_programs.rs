//! object_cache_programs
