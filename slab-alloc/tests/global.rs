//! `SlabHeap` as the `#[global_allocator]` of this whole test binary (the test harness
//! included): collections, formatting, threads that exit, and a forked child allocating.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::thread;

use pagekeep_slab::SlabHeap;

#[global_allocator]
static HEAP: SlabHeap = SlabHeap::new();

/// Work sizes: small under miri.
const fn scale(normal: u64) -> u64 {
    if cfg!(miri) { normal / 100 } else { normal }
}

#[test]
fn collections_and_formatting_run_on_the_heap() {
    let n = scale(20_000);
    let mut map = HashMap::new();
    let mut tree = BTreeMap::new();
    for i in 0..n {
        map.insert(format!("key-{i}"), vec![i; (i % 17) as usize]);
        tree.insert(i, i.to_string());
    }
    let total: u64 = map.values().map(|v| v.iter().sum::<u64>()).sum();
    assert_eq!(total, (0..n).map(|i| i * (i % 17)).sum::<u64>());
    assert_eq!(tree[&(n / 2)], (n / 2).to_string());
    // A large block: one byte above the largest small class (128 KiB).
    const LARGE: usize = (128 << 10) + 1;
    let big = vec![1u8; LARGE];
    assert_eq!(big.iter().map(|&b| b as usize).sum::<usize>(), LARGE);
    let stats = HEAP.stats();
    assert!(stats.small.objects_live as u64 > n, "{stats:?}");
    assert!(stats.large_blocks >= 1, "{stats:?}");
    assert!(stats.large_bytes >= LARGE, "{stats:?}");
}

#[test]
fn threads_allocate_exit_and_free_across_threads() {
    let before = pagekeep_slab::threads_registered();
    let (sender, receiver) = mpsc::channel::<Vec<String>>();
    let threads = if cfg!(miri) { 3 } else { 8 };
    let per_thread = scale(2_000) as usize;
    let producers: Vec<_> = (0..threads)
        .map(|t| {
            let sender = sender.clone();
            thread::spawn(move || {
                let strings: Vec<String> = (0..per_thread).map(|i| format!("{t}:{i}")).collect();
                sender.send(strings).unwrap();
                // Exits holding magazines full of freed objects.
                let scratch: Vec<Box<[u8; 100]>> =
                    (0..1_000).map(|_| Box::new([t as u8; 100])).collect();
                drop(scratch);
            })
        })
        .collect();
    drop(sender);
    let mut count = 0;
    for strings in receiver {
        count += strings.len(); // freed here, on another thread
    }
    for producer in producers {
        producer.join().unwrap();
    }
    assert_eq!(count, threads * per_thread);
    assert!(pagekeep_slab::threads_registered() >= before + threads as u32);
    HEAP.check_invariants();
}

// Unix only: Windows has no `fork`.
#[cfg(unix)]
#[test]
#[cfg_attr(miri, ignore = "miri cannot fork")]
fn a_forked_child_can_allocate() {
    // Other threads allocate while we fork, so locks may be held at the fork.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churners: Vec<_> = (0..2)
        .map(|_| {
            let stop = std::sync::Arc::clone(&stop);
            thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let v: Vec<u64> = (0..100).collect();
                    drop(std::hint::black_box(v));
                }
            })
        })
        .collect();
    for _ in 0..20 {
        // SAFETY: the child only allocates, formats and calls `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let strings: Vec<String> = (0..10_000).map(|i| format!("child {i}")).collect();
            let handle = thread::spawn(|| (0..1000).map(|i| vec![i; 10]).collect::<Vec<_>>().len());
            let ok = strings.len() == 10_000 && handle.join().map(|n| n == 1000).unwrap_or(false);
            // SAFETY: ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child failed: {status:#x}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for churner in churners {
        churner.join().unwrap();
    }
}
