//! The C allocation ABI on [`SlabHeap`]: `malloc`, `free`, `calloc`, `realloc`,
//! `reallocarray`, `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc`
//! and `malloc_usable_size`, built as a `cdylib` so that C programs run on slab-alloc
//! with `LD_PRELOAD`:
//!
//! ```sh
//! cargo build --release -p slab-alloc-capi
//! LD_PRELOAD=target/release/libslab_alloc_capi.so python3 -c 'print(sum(range(10)))'
//! ```
//!
//! C's `free` gets no size, so every block carries a 16-byte prefix just before the
//! pointer handed out: the alignment of the underlying heap block (xored with a magic
//! number, so that a pointer this library did not hand out is reported and the process
//! aborted instead of corrupting the heap), then its size. The alignment comes first
//! because a freed block's link word overwrites it: a second free finds it invalid. A
//! block aligned to `A > 16` is placed `A` bytes into its heap block, so the prefix
//! always fits.
//!
//! The `hardened` feature builds the library on slab-alloc's hardened mode: double,
//! interior, misaligned and foreign frees abort with a message naming the address (see
//! slab-alloc's README). `SLAB_DECAY_THREAD=1` in the environment starts the heap's
//! decay thread at its first decay pass, so that a freed peak goes back to the system
//! even while the program makes no further allocation.
//!
//! No function unwinds: each runs under an [`AbortOnUnwind`] guard. Failures return
//! null and set `errno` to `ENOMEM` (or `EINVAL` for bad alignments), as C expects.

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::{c_int, c_void};
use core::ptr;
use core::sync::atomic::{AtomicU8, Ordering};

use slab_alloc::{AbortOnUnwind, SlabHeap};

static HEAP: SlabHeap = SlabHeap::new().on_decay_pass(decay_thread_if_asked);

/// Whether `SLAB_DECAY_THREAD=1` was set: 0 not read yet, 1 no, 2 yes.
static DECAY_THREAD: AtomicU8 = AtomicU8::new(0);

/// Starts the heap's decay thread when the environment asks for it
/// (`SLAB_DECAY_THREAD=1`, read once). Called at the heap's decay passes, so the thread
/// starts once the program runs and allocates (never from a library constructor), and
/// again in a child made by `fork`, which does not inherit it.
fn decay_thread_if_asked() {
    let mut asked = DECAY_THREAD.load(Ordering::Relaxed);
    if asked == 0 {
        // SAFETY: a NUL-terminated name; `getenv` allocates nothing and the value is
        // only read here, at once.
        let value = unsafe { libc::getenv(c"SLAB_DECAY_THREAD".as_ptr()) };
        // SAFETY: a non-null result of `getenv` is a NUL-terminated string.
        let on = !value.is_null() && unsafe { core::ffi::CStr::from_ptr(value) } == c"1";
        asked = if on { 2 } else { 1 };
        DECAY_THREAD.store(asked, Ordering::Relaxed);
    }
    if asked == 2 {
        let _ = HEAP.start_decay_thread();
    }
}

/// Bytes of the prefix before every block.
const PREFIX: usize = 16;
/// Alignment of every block (that of `max_align_t` on the 64-bit targets we build for).
const MIN_ALIGN: usize = 16;
/// Xored into the stored alignment.
const MAGIC: usize = 0x5AB1_A11C;

fn set_errno(value: c_int) {
    #[cfg(target_os = "linux")]
    // SAFETY: `__errno_location` returns this thread's errno, always valid.
    unsafe {
        *libc::__errno_location() = value
    };
    #[cfg(target_vendor = "apple")]
    // SAFETY: `__error` returns this thread's errno, always valid.
    unsafe {
        *libc::__error() = value
    };
}

fn guard(what: &'static str) -> AbortOnUnwind {
    AbortOnUnwind { what }
}

/// The heap layout of a C block of `size` bytes aligned to `align` (a power of two).
fn heap_layout(size: usize, align: usize) -> Option<Layout> {
    let align = align.max(MIN_ALIGN);
    let offset = align.max(PREFIX);
    Layout::from_size_align(size.checked_add(offset)?, align).ok()
}

/// Writes the prefix into a heap block and returns the C pointer.
///
/// # Safety
/// - `base` is a live heap block allocated with `layout` (from [`heap_layout`]).
unsafe fn finish(base: *mut u8, layout: Layout) -> *mut c_void {
    let offset = layout.align().max(PREFIX);
    // SAFETY: `offset <= layout.size()`, so the pointer and the prefix before it are
    // inside the block; the prefix is 16-byte aligned (offset and block are).
    unsafe {
        let user = base.add(offset);
        let prefix = user.sub(PREFIX).cast::<usize>();
        // The alignment first: a free block's link word overwrites it, so that a second
        // free of the block finds an invalid prefix (and no size to trust).
        prefix.write(layout.align() ^ MAGIC);
        prefix.add(1).write(layout.size());
        user.cast()
    }
}

/// The heap block and layout behind a C pointer; aborts on a pointer without a valid
/// prefix.
///
/// # Safety
/// - `user` is non-null and was returned by this library (else the prefix read may
///   fault, or the pointer is reported and the process aborted).
unsafe fn block_of(user: *mut c_void) -> (*mut u8, Layout) {
    let user = user.cast::<u8>();
    #[cfg(feature = "hardened")]
    let in_slab = check_prefix_is_mapped(user);
    // SAFETY: blocks of this library have a 16-byte prefix just before them.
    let (size, align) = unsafe {
        let prefix = user.sub(PREFIX).cast::<usize>();
        (prefix.add(1).read(), prefix.read() ^ MAGIC)
    };
    let offset = align.max(PREFIX);
    let layout = match Layout::from_size_align(size, align) {
        Ok(layout) if align >= MIN_ALIGN && size >= offset => layout,
        _ => invalid_pointer(user),
    };
    // A prefix overwritten into another valid one (a write just before the block): a
    // block in a slab must have a small size, one outside a large size.
    #[cfg(feature = "hardened")]
    if in_slab != slab_alloc::size_class::class_for(size, align).is_some() {
        invalid_pointer(user);
    }
    // SAFETY: the block starts `offset` bytes before the pointer.
    (unsafe { user.sub(offset) }, layout)
}

/// Reports a pointer whose prefix is invalid, saying why (a double free, an interior
/// pointer, a foreign pointer: see [`SlabHeap::report_bad_free`]), and aborts.
#[cold]
fn invalid_pointer(user: *mut u8) -> ! {
    HEAP.report_bad_free(user)
}

/// The hardened build's check before a prefix is read: the pointer and its prefix lie in
/// a slab (a small block), or the prefix's page is mapped and the pointer sits where a
/// large block's would (16 bytes, or its power-of-two alignment, past a page boundary).
/// Else the pointer is reported (a wild pointer, or a large block already unmapped).
/// Returns whether the pointer is in a slab.
#[cfg(feature = "hardened")]
fn check_prefix_is_mapped(user: *mut u8) -> bool {
    let prefix = user.wrapping_sub(PREFIX);
    if slab_alloc::is_in_a_slab(user) && slab_alloc::is_in_a_slab(prefix) {
        return true;
    }
    let page = page_size();
    let in_page = user.addr() & (page - 1);
    let placed =
        in_page == PREFIX || in_page == 0 || (in_page > PREFIX && in_page.is_power_of_two());
    let mut resident = 0u8;
    // SAFETY: `mincore` only inspects the mapping of the page-aligned range (it fails
    // with ENOMEM when part of it is unmapped) and writes one byte to `resident`.
    let mapped = placed
        && unsafe {
            libc::mincore(
                prefix.map_addr(|address| address & !(page - 1)).cast(),
                1,
                &raw mut resident,
            )
        } == 0;
    if !mapped {
        HEAP.report_bad_free(user);
    }
    false
}

/// Allocates a C block; null with `errno = ENOMEM` on failure.
fn allocate(size: usize, align: usize, zeroed: bool) -> *mut c_void {
    let Some(layout) = heap_layout(size, align) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    // SAFETY: the layout has a non-zero size (it includes the prefix).
    let base = unsafe {
        if zeroed {
            HEAP.alloc_zeroed(layout)
        } else {
            HEAP.alloc(layout)
        }
    };
    if base.is_null() {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    }
    // SAFETY: a live block allocated with `layout`.
    unsafe { finish(base, layout) }
}

/// C `malloc`.
///
/// # Safety
/// Always safe to call; `unsafe` because it is the C ABI.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    let _guard = guard("panic in malloc");
    allocate(size, MIN_ALIGN, false)
}

/// C `free`.
///
/// # Safety
/// - `pointer` is null or a live block of this library, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(pointer: *mut c_void) {
    let _guard = guard("panic in free");
    if pointer.is_null() {
        return;
    }
    // SAFETY: a live block of ours (caller).
    let (base, layout) = unsafe { block_of(pointer) };
    // SAFETY: the heap block behind it, with its layout.
    unsafe { HEAP.dealloc(base, layout) };
}

/// C `calloc`: zeroed, and null (`ENOMEM`) when `count * size` overflows.
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    let _guard = guard("panic in calloc");
    match count.checked_mul(size) {
        Some(bytes) => allocate(bytes, MIN_ALIGN, true),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// C `realloc`: `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees `p` and
/// returns null; on failure `p` is untouched.
///
/// # Safety
/// - `pointer` is null or a live block of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(pointer: *mut c_void, size: usize) -> *mut c_void {
    let _guard = guard("panic in realloc");
    if pointer.is_null() {
        return allocate(size, MIN_ALIGN, false);
    }
    if size == 0 {
        // SAFETY: forwarded from the caller.
        unsafe { free(pointer) };
        return ptr::null_mut();
    }
    // SAFETY: a live block of ours (caller).
    let (base, layout) = unsafe { block_of(pointer) };
    let Some(new) = heap_layout(size, layout.align()) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    // SAFETY: the heap block with its layout; the new size is valid (from a `Layout`).
    let moved = unsafe { HEAP.realloc(base, layout, new.size()) };
    if moved.is_null() {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    }
    // SAFETY: a live block with layout `new`.
    unsafe { finish(moved, new) }
}

/// `reallocarray`: `realloc` of `count * size` bytes, null (`ENOMEM`) on overflow.
///
/// # Safety
/// As [`realloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reallocarray(
    pointer: *mut c_void,
    count: usize,
    size: usize,
) -> *mut c_void {
    let _guard = guard("panic in reallocarray");
    match count.checked_mul(size) {
        // SAFETY: forwarded.
        Some(bytes) => unsafe { realloc(pointer, bytes) },
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// Allocation aligned to `align`, which must be a power of two.
fn allocate_aligned(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    allocate(size, align, false)
}

/// POSIX `posix_memalign`: `EINVAL` unless `align` is a power of two multiple of the
/// pointer size, `ENOMEM` on exhaustion; `*out` is set only on success.
///
/// # Safety
/// - `out` is valid for a pointer write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    let _guard = guard("panic in posix_memalign");
    if !align.is_power_of_two() || !align.is_multiple_of(size_of::<*mut c_void>()) {
        return libc::EINVAL;
    }
    let block = allocate(size, align, false);
    if block.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: `out` is writable (caller).
    unsafe { out.write(block) };
    0
}

/// C11 `aligned_alloc`.
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    let _guard = guard("panic in aligned_alloc");
    allocate_aligned(align, size)
}

/// Obsolete `memalign`.
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    let _guard = guard("panic in memalign");
    allocate_aligned(align, size)
}

fn page_size() -> usize {
    // SAFETY: `sysconf` has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).unwrap_or(4096)
}

/// Obsolete `valloc`: page-aligned.
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    let _guard = guard("panic in valloc");
    allocate_aligned(page_size(), size)
}

/// Obsolete `pvalloc`: page-aligned, size rounded up to whole pages.
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let _guard = guard("panic in pvalloc");
    let page = page_size();
    match size.max(1).checked_next_multiple_of(page) {
        Some(size) => allocate_aligned(page, size),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// GNU `malloc_usable_size`: the bytes usable in a block (0 for null).
///
/// # Safety
/// - `pointer` is null or a live block of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(pointer: *mut c_void) -> usize {
    let _guard = guard("panic in malloc_usable_size");
    if pointer.is_null() {
        return 0;
    }
    // SAFETY: a live block of ours (caller).
    let (_, layout) = unsafe { block_of(pointer) };
    <SlabHeap>::usable_size(layout) - layout.align().max(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_c_functions_round_trip() {
        // SAFETY: C ABI calls with valid arguments; every block is freed once.
        unsafe {
            let block = malloc(100).cast::<u8>();
            assert!(!block.is_null() && block.addr() % 16 == 0);
            block.write_bytes(7, 100);
            assert!(malloc_usable_size(block.cast()) >= 100);
            let grown = realloc(block.cast(), 100_000).cast::<u8>();
            assert!((0..100).all(|i| grown.add(i).read() == 7));
            free(grown.cast());

            let zeroed = calloc(1000, 8).cast::<u64>();
            assert!((0..1000).all(|i| zeroed.add(i).read() == 0));
            free(zeroed.cast());
            assert!(calloc(usize::MAX, 2).is_null());
            assert!(reallocarray(ptr::null_mut(), usize::MAX, 2).is_null());

            for align in [16usize, 64, 4096, 1 << 16] {
                let mut out = ptr::null_mut();
                assert_eq!(posix_memalign(&mut out, align, 300), 0);
                assert_eq!(out.addr() % align, 0);
                free(out);
                let block = aligned_alloc(align, 50);
                assert_eq!(block.addr() % align, 0);
                free(block);
            }
            let mut out = ptr::null_mut();
            assert_eq!(posix_memalign(&mut out, 24, 8), libc::EINVAL);
            assert!(memalign(3, 8).is_null());
            let page = valloc(10);
            assert_eq!(page.addr() % page_size(), 0);
            free(page);
            let page = pvalloc(10);
            assert!(malloc_usable_size(page) >= page_size());
            free(page);
            assert!(realloc(malloc(10), 0).is_null());
            free(ptr::null_mut());
        }
    }

    #[test]
    fn blocks_of_the_classes_above_16_kib_report_their_class_and_grow_in_place() {
        // SAFETY: C ABI calls with valid arguments; every block is freed once.
        unsafe {
            // 40 000 bytes and the prefix fit the 40 KiB class.
            let block = malloc(40_000).cast::<u8>();
            assert!(!block.is_null());
            let usable = malloc_usable_size(block.cast());
            assert_eq!(usable, 40 * 1024 - PREFIX);
            block.add(usable - 1).write(9);
            let grown = realloc(block.cast(), usable).cast::<u8>();
            assert_eq!(grown, block);
            assert_eq!(grown.add(usable - 1).read(), 9);
            // One byte more moves it to the 48 KiB class.
            let moved = realloc(grown.cast(), usable + 1).cast::<u8>();
            assert_ne!(moved, block);
            assert_eq!(moved.add(usable - 1).read(), 9);
            assert_eq!(malloc_usable_size(moved.cast()), 48 * 1024 - PREFIX);
            free(moved.cast());
            // Above 128 KiB: a mapping of its own, usable to the end of its pages.
            let big = malloc(200_000);
            assert!(malloc_usable_size(big) >= 200_000);
            assert_eq!((malloc_usable_size(big) + PREFIX) % page_size(), 0);
            free(big);
        }
    }
}
