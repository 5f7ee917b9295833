//! The C-interface rows: every allocator called through `malloc` and `free`, as C
//! programs (and the originals of the ported workloads) call them.
//!
//! Ours is pagekeep-slab-capi's `malloc`/`free`, from its shared library loaded with
//! `dlopen(RTLD_LOCAL)`: loaded that way, its symbols do not replace glibc's `malloc` for
//! the rest of the process, so glibc stays measurable in the same process. mimalloc is
//! `mi_malloc`/`mi_free` (what its `malloc`/`free` are when it replaces the system's),
//! jemalloc its `malloc`/`free` (prefixed `_rjem_` by tikv-jemalloc-sys), glibc its own.
//! Every one is called through a function pointer: the same indirect call for all, as a
//! call into a shared library's `malloc` through the PLT is.

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::{CStr, c_void};
use std::path::PathBuf;
use std::time::Duration;

use pagekeep_alloc_test::bench::machine::Machine;
use pagekeep_alloc_test::bench::measure::{Settings, measure_interleaved};
use pagekeep_alloc_test::bench::report::{Row, Section, Target};

use super::larson::ServerChurn;
use super::xmalloc::ProducerConsumer;
use super::{HEAP_NAMES, batch, cross_thread, measure_workloads, pair, row_of};
use crate::progress::Progress;

/// Progress steps of these rows.
pub const STEPS: usize = 6;

/// C's `malloc`.
type Malloc = unsafe extern "C" fn(usize) -> *mut c_void;
/// C's `free`.
type Free = unsafe extern "C" fn(*mut c_void);

/// An allocator reached through its C `malloc` and `free`. As a `GlobalAlloc` it serves
/// layouts aligned to at most 16 bytes (what `malloc` promises on x86-64 and AArch64
/// Linux); every workload here asks for 8.
#[derive(Clone, Copy, Debug)]
pub struct CAllocator {
    malloc: Malloc,
    free: Free,
}

/// The alignment `malloc` guarantees.
const MALLOC_ALIGN: usize = 16;

// SAFETY: `malloc` returns null or a block of at least `size` bytes aligned to 16, which
// covers every layout this accepts (larger alignments get null, a refusal); `free` takes
// any block its `malloc` returned, from any thread.
unsafe impl GlobalAlloc for CAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() > MALLOC_ALIGN {
            return core::ptr::null_mut();
        }
        // SAFETY: `malloc` takes any size.
        unsafe { (self.malloc)(layout.size()) }.cast()
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: the caller passes a live block of this allocator: one its `malloc`
        // returned.
        unsafe { (self.free)(ptr.cast()) }
    }
}

/// glibc's `malloc` and `free`.
fn glibc() -> CAllocator {
    CAllocator {
        malloc: libc::malloc,
        free: libc::free,
    }
}

/// mimalloc's `mi_malloc` and `mi_free`.
fn mimalloc() -> CAllocator {
    CAllocator {
        malloc: libmimalloc_sys::mi_malloc,
        free: libmimalloc_sys::mi_free,
    }
}

/// jemalloc's `malloc` and `free`.
fn jemalloc() -> CAllocator {
    CAllocator {
        malloc: tikv_jemalloc_sys::malloc,
        free: tikv_jemalloc_sys::free,
    }
}

/// Where pagekeep-slab-capi's shared library is: next to this executable
/// (`target/release/libpagekeep_slab_capi.so`).
fn capi_library() -> Result<PathBuf, String> {
    let executable = std::env::current_exe().map_err(|error| error.to_string())?;
    let directory = executable
        .parent()
        .ok_or("the reproduce executable has no directory")?;
    Ok(directory.join("libpagekeep_slab_capi.so"))
}

/// Builds pagekeep-slab-capi's shared library with the profile this executable was built
/// with (a no-op when it is up to date), so the C rows never measure a stale library.
fn build_capi(library: &std::path::Path) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command.args(["build", "-p", "pagekeep-slab-capi"]);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let status = command
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|error| format!("cannot run cargo to build pagekeep-slab-capi: {error}"))?;
    if !status.success() || !library.exists() {
        return Err(format!(
            "cannot build {} ({status}): run `cargo build --release -p pagekeep-slab-capi`",
            library.display()
        ));
    }
    Ok(())
}

/// The last `dlerror()` message.
fn dl_error() -> String {
    // SAFETY: `dlerror` returns null or a NUL-terminated message valid until the next
    // `dl*` call on this thread, copied at once.
    let message = unsafe { libc::dlerror() };
    if message.is_null() {
        "unknown error".to_owned()
    } else {
        // SAFETY: as above: a live NUL-terminated string.
        unsafe { CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned()
    }
}

/// Our `malloc` and `free`: pagekeep-slab-capi's, from its shared library loaded with
/// `RTLD_LOCAL` (the library stays loaded for the rest of the process).
fn ours() -> Result<CAllocator, String> {
    let library = capi_library()?;
    build_capi(&library)?;
    let path = std::ffi::CString::new(library.as_os_str().as_encoded_bytes())
        .map_err(|_| "the library's path holds a NUL byte")?;
    // SAFETY: a NUL-terminated path; loading runs the library's initialisers, which set
    // nothing up beyond its own statics. RTLD_LOCAL keeps its `malloc` out of the
    // process's symbol lookup, so glibc's stays the process's.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(format!("cannot load {}: {}", library.display(), dl_error()));
    }
    let symbol = |name: &CStr| {
        // SAFETY: a live handle and a NUL-terminated name.
        let address = unsafe { libc::dlsym(handle, name.as_ptr()) };
        if address.is_null() {
            Err(format!(
                "{} has no {name:?}: {}",
                library.display(),
                dl_error()
            ))
        } else {
            Ok(address)
        }
    };
    let (malloc, free) = (symbol(c"malloc")?, symbol(c"free")?);
    // SAFETY: pagekeep-slab-capi defines `malloc` and `free` with exactly C's signatures
    // (`extern "C" fn(usize) -> *mut c_void` and `extern "C" fn(*mut c_void)`), and the
    // library is never unloaded, so the addresses stay valid.
    let (malloc, free) = unsafe {
        (
            core::mem::transmute::<*mut c_void, Malloc>(malloc),
            core::mem::transmute::<*mut c_void, Free>(free),
        )
    };
    Ok(CAllocator { malloc, free })
}

/// Every allocator through its C interface, in the order of [`HEAP_NAMES`].
fn allocators() -> Result<[CAllocator; 4], String> {
    Ok([ours()?, mimalloc(), jemalloc(), glibc()])
}

/// Measures four routines, one per allocator of `allocators`, in shared rounds.
fn on_each(
    settings: Settings,
    allocators: &[CAllocator; 4],
    mut routine: impl FnMut(&CAllocator, u64) -> Duration,
) -> Vec<pagekeep_alloc_test::bench::measure::Measurement> {
    let routine = &mut routine;
    let [a, b, c, d] = allocators;
    // Each closure borrows `routine` in turn: they run one at a time.
    let cell = std::cell::RefCell::new(routine);
    measure_interleaved(
        settings,
        &mut [
            &mut |n| (cell.borrow_mut())(a, n),
            &mut |n| (cell.borrow_mut())(b, n),
            &mut |n| (cell.borrow_mut())(c, n),
            &mut |n| (cell.borrow_mut())(d, n),
        ],
    )
}

/// How many sizes [`mixed_pairs`] cycles through.
const MIXED_SIZES: usize = 4096;

/// The sizes of [`mixed_pairs`]: multiples of 16 from 16 to 256 (12 size classes in
/// ours, mimalloc's and jemalloc's tables, which round 144 to 160 and so on above 128;
/// 16 bins in glibc's), in an order drawn once from a fixed seed, so that every
/// allocator and every run sees the same sequence.
fn mixed_sizes() -> Vec<usize> {
    let mut state: u32 = 0x2545_f491;
    (0..MIXED_SIZES)
        .map(|_| {
            // A linear congruential step; its high bits pick the size.
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            16 * (1 + (state >> 16) as usize % 16)
        })
        .collect()
}

/// `n` malloc+free pairs, the size of each the next of `sizes` (cyclically): the 64-byte
/// row's pattern with sizes that change from one pair to the next, as programs ask.
fn mixed_pairs(allocator: &CAllocator, n: u64, sizes: &[usize]) -> Duration {
    let start = std::time::Instant::now();
    for (_, &size) in (0..n).zip(sizes.iter().cycle()) {
        // SAFETY: `malloc` takes any size; the block is written if not null and freed
        // at once (`free` takes null too).
        unsafe {
            let block = (allocator.malloc)(size).cast::<u8>();
            if !block.is_null() {
                block.write(1);
            }
            (allocator.free)(core::hint::black_box(block).cast());
        }
    }
    start.elapsed()
}

/// The C-interface rows: times per operation, then the server workloads' throughput.
pub fn rows(
    settings: Settings,
    machine: &Machine,
    progress: &mut Progress,
) -> Result<(Vec<Row>, Vec<Row>), String> {
    progress.step("slab: C interface, loading pagekeep-slab-capi; 64-byte malloc+free pairs");
    let allocators = allocators()?;
    let mut rows = Vec::new();
    let figures = on_each(settings, &allocators, pair);
    rows.push(
        row_of("C: malloc + free, 64 B", &figures, &HEAP_NAMES).target(Target::at_most_best(1.0)),
    );
    progress.step("slab: C interface, malloc+free pairs of mixed sizes");
    let sizes = mixed_sizes();
    let figures = on_each(settings, &allocators, |allocator, n| {
        mixed_pairs(allocator, n, &sizes)
    });
    rows.push(
        row_of(
            "C: malloc + free, sizes 16-256 B in a fixed random order",
            &figures,
            &HEAP_NAMES,
        )
        .target(Target::at_most_best(1.0)),
    );
    for size in [1_000usize, 100_000] {
        progress.step(&format!("slab: C interface, batches of {size}"));
        let mut blocks = Vec::with_capacity(size);
        let figures = on_each(settings, &allocators, |allocator, n| {
            batch(allocator, n, size, &mut blocks)
        });
        rows.push(
            row_of(
                &format!("C: malloc {size} then free {size}, 64 B (per operation)"),
                &figures,
                &HEAP_NAMES,
            )
            .target(Target::at_most_best(1.0)),
        );
    }
    progress.step("slab: C interface, cross-thread free");
    let cross_settings = Settings {
        sample_time: settings.sample_time * 5,
        ..settings
    };
    let figures = on_each(cross_settings, &allocators, |allocator, n| {
        cross_thread(allocator, n)
    });
    rows.push(
        row_of(
            "C: one thread mallocs, another frees (per object)",
            &figures,
            &HEAP_NAMES,
        )
        .target(Target::at_most_best(1.0))
        .multi_threaded(machine),
    );
    progress.step("slab: C interface, server workloads");
    let workload_settings = Settings {
        sample_time: settings.sample_time * 15,
        ..settings
    };
    let [a, b, c, d] = &allocators;
    let figures = measure_workloads(
        workload_settings,
        (
            ServerChurn::new(a),
            ServerChurn::new(b),
            ServerChurn::new(c),
            ServerChurn::new(d),
        ),
    )?;
    let throughput: Vec<_> = figures.iter().map(|m| m.millions_per_second()).collect();
    let mut server = Vec::new();
    server.push(
        row_of(
            &format!("C: {}", ServerChurn::<CAllocator>::NAME),
            &throughput,
            &HEAP_NAMES,
        )
        .better(pagekeep_alloc_test::bench::report::Better::Higher)
        .in_summary()
        .multi_threaded(machine),
    );
    let figures = measure_workloads(
        workload_settings,
        (
            ProducerConsumer::new(a),
            ProducerConsumer::new(b),
            ProducerConsumer::new(c),
            ProducerConsumer::new(d),
        ),
    )?;
    let throughput: Vec<_> = figures.iter().map(|m| m.millions_per_second()).collect();
    server.push(
        row_of(
            &format!("C: {}", ProducerConsumer::<CAllocator>::NAME),
            &throughput,
            &HEAP_NAMES,
        )
        .better(pagekeep_alloc_test::bench::report::Better::Higher)
        .in_summary()
        .multi_threaded(machine),
    );
    Ok((rows, server))
}

/// The sections of the C-interface rows.
pub fn sections((rows, server): (Vec<Row>, Vec<Row>)) -> [Section; 2] {
    [
        Section {
            title: "C interface: every allocator through malloc and free".into(),
            description: "The same workloads as the Rust rows of the sections \"One \
                thread\" and \"Cross-thread free\", but every allocator is called through \
                its C `malloc` and `free`, through a function pointer: ours is \
                pagekeep-slab-capi's `malloc`/`free` (its shared library loaded with \
                `dlopen(RTLD_LOCAL)`, so glibc stays the process's malloc), mimalloc \
                `mi_malloc`/`mi_free`, jemalloc its `malloc`/`free`, System glibc's. `free` \
                gets no size: ours finds it from the block, as the others do from their \
                own metadata. The row of mixed sizes pairs a `malloc` and a `free` as the \
                64-byte row does, but each pair of another size (16 to 256 bytes, one \
                fixed pseudo-random sequence for all): one size repeated sends every \
                pair down the same path, so that the processor overlaps consecutive \
                pairs as far as each allocator's chain of dependent loads allows; \
                sizes that change, as programs ask for them, vary the paths."
                .into(),
            unit: "ns per operation".into(),
            rows,
            line_plot: None,
        },
        Section {
            title: "C interface: server workloads".into(),
            description: "The two server workloads of the section \"Server workloads\", \
                every allocator called through `malloc` and `free` as above. Higher is \
                better."
                .into(),
            unit: "million operations per second".into(),
            rows: server,
            line_plot: None,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::super::Workload;
    use super::*;

    #[test]
    fn every_c_peer_serves_and_frees_through_malloc_and_free() {
        for allocator in [glibc(), mimalloc(), jemalloc()] {
            let mut workload = ServerChurn::new(&allocator);
            workload.run(1);
            assert_eq!(workload.finish(), Ok(()));
            let aligned = Layout::from_size_align(64, 64).expect("layout");
            // SAFETY: a non-zero layout; a refusal is null, which is not freed.
            assert!(unsafe { allocator.alloc(aligned) }.is_null());
        }
    }

    #[test]
    fn the_mixed_sizes_are_the_same_every_time_and_cover_the_16_sizes_evenly() {
        let sizes = mixed_sizes();
        assert_eq!(sizes, mixed_sizes());
        assert_eq!(sizes.len(), MIXED_SIZES);
        let mut counts = [0usize; 16];
        for &size in &sizes {
            assert!(size % 16 == 0 && (16..=256).contains(&size), "{size}");
            counts[size / 16 - 1] += 1;
        }
        // About 256 each: every size present, none taking over.
        assert!(
            counts.iter().all(|&count| (128..=384).contains(&count)),
            "{counts:?}"
        );
        // Consecutive pairs mostly change size (a repeated size is the 64-byte row).
        let repeats = sizes.windows(2).filter(|pair| pair[0] == pair[1]).count();
        assert!(repeats < MIXED_SIZES / 8, "{repeats} repeats");
    }

    #[test]
    fn mixed_pairs_free_every_block_they_allocate() {
        let sizes = mixed_sizes();
        let counting = CAllocator {
            malloc: counting_malloc,
            free: counting_free,
        };
        mixed_pairs(&counting, 10_000, &sizes);
        assert_eq!(LIVE.load(core::sync::atomic::Ordering::Relaxed), 0);
        assert_eq!(MALLOCS.load(core::sync::atomic::Ordering::Relaxed), 10_000);
        // The sizes asked for are the sequence's, in order, restarted past its end.
        let asked = ASKED.lock().expect("not poisoned");
        let expected: Vec<usize> = sizes.iter().copied().cycle().take(10_000).collect();
        assert!(
            *asked == expected,
            "the sizes asked differ from the sequence"
        );
    }

    static ASKED: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

    static LIVE: core::sync::atomic::AtomicIsize = core::sync::atomic::AtomicIsize::new(0);
    static MALLOCS: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

    unsafe extern "C" fn counting_malloc(size: usize) -> *mut c_void {
        LIVE.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        MALLOCS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        ASKED.lock().expect("not poisoned").push(size);
        // SAFETY: `malloc` takes any size.
        unsafe { libc::malloc(size) }
    }

    unsafe extern "C" fn counting_free(block: *mut c_void) {
        LIVE.fetch_sub(1, core::sync::atomic::Ordering::Relaxed);
        // SAFETY: a block `counting_malloc` returned, freed once (the caller's).
        unsafe { libc::free(block) }
    }
}
