//! `MmapAlloc` as the global allocator of a whole program: every allocation of the test
//! harness and of the code below is a mapping. Under miri the mappings come from the
//! heap stand-in, which must take its blocks (and its bookkeeping) from `System`, not
//! from the global allocator, or it would recurse into itself.

use std::collections::BTreeMap;

use mmap_alloc::MmapAlloc;

#[global_allocator]
static GLOBAL: MmapAlloc = MmapAlloc;

#[test]
fn collections_strings_and_threads_run_on_mmap_alloc() {
    let mut map = BTreeMap::new();
    for key in 0..64u32 {
        map.insert(key, format!("value {key}"));
    }
    assert_eq!(map[&7], "value 7");
    let mut numbers: Vec<u64> = (0..10_000).collect();
    numbers.extend_from_slice(&[1, 2, 3]);
    numbers.shrink_to_fit();
    assert_eq!(numbers.iter().sum::<u64>(), 9_999 * 10_000 / 2 + 6);
    let boxed = Box::new([7u8; 3 * 4096]);
    assert!(boxed.iter().all(|&byte| byte == 7));
    let joined = std::thread::spawn(|| (0..100).map(|n| n.to_string()).collect::<String>())
        .join()
        .unwrap();
    assert!(joined.starts_with("0123456789"));
}
