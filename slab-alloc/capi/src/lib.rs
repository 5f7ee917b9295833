//! The C allocation ABI on [`SlabHeap`]: `malloc`, `free`, `calloc`, `realloc`,
//! `reallocarray`, `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc`
//! and `malloc_usable_size`, and glibc's extensions `cfree`, `malloc_trim`, `mallinfo`,
//! `mallinfo2`, `malloc_stats`, `malloc_info` and `mallopt`, and C++'s `operator new`
//! and `operator delete` in all their forms (see `cxx.rs`: libstdc++'s own call
//! `malloc` and `free` one call further away), built as a `cdylib` so that C and C++
//! programs run on pagekeep-slab with `LD_PRELOAD`:
//!
//! ```sh
//! cargo build --release -p pagekeep-slab-capi
//! LD_PRELOAD=target/release/libpagekeep_slab_capi.so python3 -c 'print(sum(range(10)))'
//! ```
//!
//! C's `free` gets no size. A block of a size class (up to 128 KiB, aligned to at most a
//! page) is handed out as it is: `free` finds its class from its slab
//! ([`SlabHeap::free_small_address`]: one lookup in the slab map and the slab header's
//! owner word), as mimalloc finds a block's page. Every other block (a mapping of its
//! own) carries a 16-byte prefix just before the pointer handed out: the alignment of
//! the underlying heap block (xored with a magic number, so that a pointer this library
//! did not hand out is reported and the process aborted instead of corrupting the
//! heap), then its size. A block aligned to `A > 16` is placed `A` bytes into its heap
//! block, so the prefix always fits. Every build reports a pointer off the 16-byte
//! alignment of all blocks; as in mimalloc's and jemalloc's default builds, a small
//! block freed twice or a pointer into one is not detected.
//!
//! The `hardened` feature builds the library on pagekeep-slab's hardened mode, with a
//! prefix on every block (the alignment word first: a freed block's link overwrites it,
//! so a second free finds it invalid): double, interior, misaligned and foreign frees
//! and a byte written before a block abort with a message naming the address (see
//! pagekeep-slab's README). `SLAB_DECAY_THREAD=1` in the environment starts the heap's
//! decay thread at its first decay pass, so that a freed peak goes back to the system
//! even while the program makes no further allocation.
//!
//! No function unwinds: each runs under an [`AbortOnUnwind`](pagekeep_slab::AbortOnUnwind) guard. Failures return
//! null and set `errno` to `ENOMEM` (or `EINVAL` for bad alignments), as C expects;
//! `free` leaves `errno` alone, even when unmapping a block fails (POSIX 2024).
//!
//! # As glibc documents them
//!
//! `slab-alloc/capi/tests/run-c-tests.sh` runs C programs under glibc and under this
//! library and requires the same output (`tests/c/`): every case below is in them.
//!
//! - Requests beyond the machine's memory fail with `ENOMEM` (the mappings pass the
//!   kernel's overcommit check), as do sizes that overflow.
//! - `memalign` and `aligned_alloc` take any alignment up to `SIZE_MAX / 2 + 1`, rounded
//!   up to a power of two (0 and 24 work), as glibc 2.36 does; larger ones fail with
//!   `EINVAL`. `posix_memalign` requires a power of two multiple of `sizeof(void *)`.
//! - `realloc` keeps every byte of the old block's `malloc_usable_size` that fits.
//! - `cfree` is `free` (glibc keeps it as a compat symbol, `cfree@GLIBC_2.2.5`, that old
//!   binaries still bind).
//! - `malloc_trim` returns the calling thread's cached blocks to the depots, empties the
//!   depots into the slabs and releases every empty slab and the freed large blocks kept
//!   for reuse; it returns 1 when that gave memory back, else 0. Its `pad` argument is ignored (the heap has no top to pad).
//! - `mallinfo2` (and `mallinfo`, saturated to `int`) reports the heap's own counters:
//!   `arena` the bytes of slabs held, `uordblks` the bytes of blocks in use (those freed
//!   into other threads' magazines included), `fordblks = arena - uordblks`, `smblks` /
//!   `fsmblks` the blocks / bytes cached in the depots, `ordblks` the free blocks inside
//!   slabs, `keepcost` the bytes of empty slabs and of freed large blocks kept for reuse
//!   (what `malloc_trim` releases besides the depots), `hblks` / `hblkhd` the blocks above 128 KiB (their own mappings) and their
//!   bytes; `usmblks` is 0, as in glibc. The calling thread's magazines are flushed first.
//! - `malloc_stats` prints the same totals to standard error in glibc's layout;
//!   `malloc_info(0, stream)` writes them as glibc's XML document (one entry per size
//!   class); other options return `EINVAL`.
//! - `mallopt` accepts every parameter and returns 1, except `M_MXFAST` outside 0..=160,
//!   which glibc refuses (0). None changes this heap: its size classes, its limit for
//!   blocks of their own (128 KiB) and its rule for giving memory back (the working set)
//!   are fixed, and it has no arenas, fastbins, heap top or checking modes to tune.
//!
//! Unix only: the library replaces the C runtime's allocator through `LD_PRELOAD` (and
//! exports glibc's extensions); Windows has no such interposition, so on Windows the
//! crate is empty.
#![cfg(unix)]

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::{c_int, c_void};
use core::fmt::{self, Write as _};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU8, Ordering};

use pagekeep_slab::size_class::{CLASS_COUNT, MAX_SMALL, class_for};

mod cxx;
use pagekeep_slab::SlabHeap;

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

/// Registers the loading thread with the heap when the library is loaded, and so
/// builds the heap and installs its `fork` handlers (and its thread-exit key) before
/// any other thread can call it. The heap installs them before its first lock anyway,
/// and a child forked while a parent thread was installing them installs them itself;
/// done here, a library loaded with `dlopen` into a threaded program has them before its
/// threads make their first calls (`tests/c/fork_while_the_first_call_registers.c`,
/// which hung before the heap took care of it). Under `LD_PRELOAD` the first call comes
/// during single-threaded start-up anyway.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static REGISTER_AT_LOAD: extern "C" fn() = register_at_load;

/// An allocation and free of one byte on the heap, for the registration they make (from
/// the `.init_array` of the library). The heap's own functions, not `malloc` and `free`:
/// loaded with `dlopen`, the library's calls to those names may reach glibc's.
#[cfg(target_os = "linux")]
extern "C" fn register_at_load() {
    no_unwind!("panic while the library was loaded", || {
        if let Some(block) = HEAP.alloc_aligned_16(1) {
            // SAFETY: a block of a size class of this heap, just allocated, freed once.
            unsafe { HEAP.free_small_block(block) };
        }
    })
}

/// The hardened build checks the heap's free blocks when the process exits, for a
/// write past the end of a block that no later operation noticed (see
/// [`SlabHeap::check_free_blocks`]): glibc finds such a write at its next `malloc`, in
/// the size field of the next chunk, and the security tests of mimalloc-bench exit
/// right after it.
#[cfg(all(feature = "hardened", target_os = "linux"))]
#[used]
#[unsafe(link_section = ".fini_array")]
static CHECK_AT_EXIT: extern "C" fn() = check_at_exit;

/// Runs [`SlabHeap::check_free_blocks`] (from the `.fini_array` of the library).
#[cfg(all(feature = "hardened", target_os = "linux"))]
extern "C" fn check_at_exit() {
    no_unwind!("panic in the check at exit", || {
        HEAP.check_free_blocks();
    })
}

/// Bytes of the prefix before every block with a mapping of its own (every block, in the
/// hardened build).
const PREFIX: usize = 16;
/// Alignment of every block (that of `max_align_t` on the 64-bit targets we build for).
const MIN_ALIGN: usize = 16;
/// Xored into the stored alignment.
const MAGIC: usize = 0x5AB1_A11C;

/// What the prefix's alignment is xored with. In the hardened build, also with the
/// address of this copy's heap: a block of another copy of the library (loaded with
/// `dlopen`, or linked into another shared library), whose prefix is otherwise as
/// valid as ours, fails the check at a free here instead of being taken in. One
/// address computation, no load.
#[inline(always)]
fn magic() -> usize {
    #[cfg(feature = "hardened")]
    return MAGIC ^ (&raw const HEAP).addr();
    #[cfg(not(feature = "hardened"))]
    return MAGIC;
}

/// This thread's `errno`.
fn errno_location() -> *mut c_int {
    #[cfg(target_os = "linux")]
    // SAFETY: `__errno_location` has no preconditions.
    return unsafe { libc::__errno_location() };
    #[cfg(target_vendor = "apple")]
    // SAFETY: `__error` has no preconditions.
    return unsafe { libc::__error() };
}

fn set_errno(value: c_int) {
    // SAFETY: this thread's errno, always valid for writes.
    unsafe { errno_location().write(value) };
}

fn errno() -> c_int {
    // SAFETY: this thread's errno, always valid for reads.
    unsafe { errno_location().read() }
}

/// Runs `f` (a closure expression), which must not unwind out of the C ABI: a panic in
/// it aborts the process with `what` (a string literal) as the message. Free on the way
/// out: the guard is forgotten there, so its check runs only on the unwinding path (a
/// guard kept to its scope's end asked on every call whether the thread was panicking:
/// four instructions). A macro, so that the guard is a type of its own without fields:
/// one holding `what` cost every call three instructions to store it on the stack for
/// the unwinding path (and `malloc` a stack frame).
macro_rules! no_unwind {
    ($what:literal, $f:expr) => {{
        /// Aborts with the message when dropped, which happens only while unwinding.
        struct Guard;
        impl Drop for Guard {
            #[cold]
            fn drop(&mut self) {
                drop(pagekeep_slab::AbortOnUnwind { what: $what });
            }
        }
        let guard = Guard;
        let result = ($f)();
        core::mem::forget(guard);
        result
    }};
}
pub(crate) use no_unwind;

/// The heap layout of a C block of `size` bytes aligned to `align` (a power of two).
///
/// At least one byte follows the prefix, even for `size == 0`: the pointer handed out
/// then lies inside its heap block, never at its end, which may be the start of the
/// next slab granule or of another mapping (`free` would find the pointer in the wrong
/// place: a false alarm in the hardened build, and in the default build a
/// `memalign(8192, 0)` block taken for a block of the slab mapped after it).
fn heap_layout(size: usize, align: usize) -> Option<Layout> {
    let align = align.max(MIN_ALIGN);
    let offset = align.max(PREFIX);
    Layout::from_size_align(size.max(1).checked_add(offset)?, align).ok()
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
        prefix.write(layout.align() ^ magic());
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
#[inline(always)]
unsafe fn block_of(user: *mut c_void) -> (*mut u8, Layout) {
    let user = user.cast::<u8>();
    #[cfg(feature = "hardened")]
    let in_slab = check_prefix_is_mapped(user);
    // SAFETY: blocks of this library have a 16-byte prefix just before them.
    let (size, align) = unsafe {
        let prefix = user.sub(PREFIX).cast::<usize>();
        (prefix.add(1).read(), prefix.read() ^ magic())
    };
    let offset = align.max(PREFIX);
    let layout = match Layout::from_size_align(size, align) {
        Ok(layout) if align >= MIN_ALIGN && size >= offset => layout,
        _ => invalid_pointer(user),
    };
    // A prefix overwritten into another valid one (a write just before the block): a
    // block in a slab must have a small size, one outside a large size.
    #[cfg(feature = "hardened")]
    if in_slab == has_own_mapping(layout) {
        invalid_pointer(user);
    }
    // And a block in a slab fits the class of its slab (the pointer lies in its block,
    // so in the block's slab): `realloc` and `malloc_usable_size` must not trust a size
    // copied from a larger block's prefix.
    #[cfg(feature = "hardened")]
    if in_slab
        && HEAP
            .locate_small_block(user)
            .is_none_or(|located| layout.size() > located.class_size())
    {
        invalid_pointer(user);
    }
    // SAFETY: the block starts `offset` bytes before the pointer.
    let base = unsafe { user.sub(offset) };
    if has_own_mapping(layout) {
        check_own_mapping(user, base);
    }
    (base, layout)
}

/// Whether a block of `layout` has a mapping of its own (no size class): two compares
/// instead of `class_for`, since a layout has a class unless it is above `MAX_SMALL`
/// or aligned above a page (the largest class alignment).
#[inline(always)]
fn has_own_mapping(layout: Layout) -> bool {
    let own = layout.size() > MAX_SMALL || layout.align() > 4096;
    debug_assert_eq!(own, class_for(layout.size(), layout.align()).is_none());
    own
}

/// The check of every build for a block whose prefix names a mapping of its own: such
/// a block starts on a page boundary and lies in no slab. A small block whose prefix
/// was overwritten (a write just before it) fails it and is reported instead of being
/// unmapped with a size it never had. Cold: such blocks cost a system call anyway.
#[cold]
#[inline(never)]
fn check_own_mapping(user: *mut u8, base: *mut u8) {
    if !base.addr().is_multiple_of(page_size()) || pagekeep_slab::is_in_a_slab(user) {
        invalid_pointer(user);
    }
}

/// Every block this library hands out is aligned to 16: a pointer that is not (a
/// pointer into a block, or none of ours) is reported before anything is read through
/// it. Two instructions; in every build.
#[inline(always)]
fn check_alignment(pointer: *mut c_void) {
    if !pointer.addr().is_multiple_of(MIN_ALIGN) {
        invalid_pointer(pointer.cast());
    }
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
#[inline(always)]
fn check_prefix_is_mapped(user: *mut u8) -> bool {
    // The prefix lies in the pointer's slab unless the pointer is within 16 bytes of
    // the start of a slab granule: one lookup in the slab map does for both.
    if pagekeep_slab::is_in_a_slab(user)
        && (user.addr() & (pagekeep_slab::SLAB_BYTES - 1) >= PREFIX
            || pagekeep_slab::is_in_a_slab(user.wrapping_sub(PREFIX)))
    {
        return true;
    }
    check_large_prefix_is_mapped(user)
}

/// The part of [`check_prefix_is_mapped`] for a pointer outside the slabs.
#[cfg(feature = "hardened")]
#[cold]
#[inline(never)]
fn check_large_prefix_is_mapped(user: *mut u8) -> bool {
    let prefix = user.wrapping_sub(PREFIX);
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

/// Whether a C block of `size` bytes aligned to `align` (a power of two) is a block of a
/// size class, handed out as it is (without a prefix: see the crate docs). Two
/// compares instead of `class_for`, as in [`has_own_mapping`].
#[inline(always)]
fn is_small(size: usize, align: usize) -> bool {
    let small = !cfg!(feature = "hardened") && size <= MAX_SMALL && align <= 4096;
    debug_assert!(
        !small || class_for(size.max(1), align.max(MIN_ALIGN)).is_some(),
        "{size} bytes aligned to {align}"
    );
    small
}

/// Allocates a C block; null with `errno = ENOMEM` on failure.
#[inline(always)]
fn allocate(size: usize, align: usize, zeroed: bool) -> *mut c_void {
    if is_small(size, align) {
        // A block of a size class, as it is: at least one byte (`malloc(0)` returns a
        // unique pointer), aligned to at least 16.
        // SAFETY: a non-zero size, and a power-of-two alignment of at most a page.
        let layout =
            unsafe { Layout::from_size_align_unchecked(size.max(1), align.max(MIN_ALIGN)) };
        let block = heap_alloc(layout, zeroed);
        if block.is_null() {
            set_errno(libc::ENOMEM);
        }
        return block.cast();
    }
    #[cfg(feature = "hardened")]
    if align <= MIN_ALIGN && size <= MAX_SMALL - PREFIX {
        // The hardened build's blocks of a size class aligned to 16 (most blocks): a
        // heap block of the prefix and the request. As for the default build's small
        // blocks, `errno` is set only on failure (a slab mapping refused and then
        // retried is not undone).
        // SAFETY: a non-zero size (at least the prefix) below the largest class, and a
        // power-of-two alignment.
        // At least one byte after the prefix, as in `heap_layout`.
        let layout = unsafe { Layout::from_size_align_unchecked(size.max(1) + PREFIX, MIN_ALIGN) };
        let block = heap_alloc(layout, zeroed);
        if block.is_null() {
            set_errno(libc::ENOMEM);
            return ptr::null_mut();
        }
        // SAFETY: a live heap block allocated with `layout`, which `heap_layout` would
        // give for this request.
        return unsafe { finish(block, layout) };
    }
    allocate_with_prefix(size, align, zeroed)
}

/// A heap block of `layout` (non-zero size), zeroed if asked; null on failure.
#[inline(always)]
fn heap_alloc(layout: Layout, zeroed: bool) -> *mut u8 {
    debug_assert!(layout.size() > 0);
    // SAFETY: a non-zero size.
    unsafe {
        if zeroed {
            HEAP.alloc_zeroed(layout)
        } else {
            HEAP.alloc(layout)
        }
    }
}

/// Allocates a C block with a prefix (a large block; every block in the hardened
/// build); null with `errno = ENOMEM` on failure.
fn allocate_with_prefix(size: usize, align: usize, zeroed: bool) -> *mut c_void {
    let Some(layout) = heap_layout(size, align) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    // A mapping refused on the way (then retried after the heap released what it kept)
    // sets errno: a call that succeeds leaves it as it was, as glibc's does.
    let saved = errno();
    // The layout has a non-zero size (it includes the prefix).
    let base = heap_alloc(layout, zeroed);
    if base.is_null() {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    }
    set_errno(saved);
    // SAFETY: a live block allocated with `layout`.
    unsafe { finish(base, layout) }
}

/// C `malloc`.
///
/// # Safety
/// Always safe to call; `unsafe` because it is the C ABI.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    no_unwind!("panic in malloc", || {
        // Sizes up to 1 KiB (most calls): the class's magazine slot from one table
        // lookup, then the thread's magazine (see `SlabHeap::alloc_aligned_16`). The
        // hardened build gives every block a prefix, so `allocate` serves it.
        #[cfg(not(feature = "hardened"))]
        if size <= 1024 {
            if let Some(block) = HEAP.alloc_aligned_16_from_magazine(size) {
                return block.as_ptr().cast();
            }
            return malloc_small_miss(size);
        }
        malloc_with_allocate(size)
    })
}

/// [`malloc`] up to 1 KiB when the thread's magazine had no block: the heap's general
/// path, and `errno` on failure. Not unwinding (C ABI, under its own guard) and last in
/// `malloc`, which therefore jumps to it: no call on `malloc`'s path, so no stack frame.
#[cfg(not(feature = "hardened"))]
#[cold]
#[inline(never)]
extern "C" fn malloc_small_miss(size: usize) -> *mut c_void {
    no_unwind!("panic in malloc", || match HEAP.alloc_aligned_16(size) {
        Some(block) => block.as_ptr().cast(),
        None => out_of_memory(),
    })
}

/// [`malloc`] above 1 KiB (of every size in the hardened build), by [`allocate`]. Out of
/// line, so that the code of `malloc`'s fast path is a straight line, and not unwinding
/// (C ABI, under its own guard), so that `malloc` reaches it by a jump.
#[inline(never)]
extern "C" fn malloc_with_allocate(size: usize) -> *mut c_void {
    no_unwind!("panic in malloc", || allocate(size, MIN_ALIGN, false))
}

/// A failed allocation's result: null, with `errno = ENOMEM`. Out of line, so that the
/// fast paths carry no call of `__errno_location`.
#[cfg(not(feature = "hardened"))]
#[cold]
#[inline(never)]
fn out_of_memory() -> *mut c_void {
    set_errno(libc::ENOMEM);
    ptr::null_mut()
}

/// C `free`.
///
/// # Safety
/// - `pointer` is null or a live block of this library, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(pointer: *mut c_void) {
    no_unwind!("panic in free", || {
        // Misaligned, or above the addresses the slab map covers: one test for both (the
        // slab map's own test of the high bits then folds away).
        #[cfg(not(feature = "hardened"))]
        if pointer.addr() & UNUSUAL_ADDRESS_BITS != 0 {
            // SAFETY: a live block of ours (caller), which lies in no slab.
            return unsafe { free_unusual(pointer) };
        }
        #[cfg(feature = "hardened")]
        check_alignment(pointer);
        // A block of a size class first, null included (it lies in no slab): the test
        // for null comes after.
        #[cfg(not(feature = "hardened"))]
        // SAFETY: null, or a live block of ours (caller): a block of a size class, or a
        // block with a prefix, which lies in no slab (large).
        if unsafe { HEAP.free_small_address(pointer.cast()) } {
            return;
        }
        let Some(block) = NonNull::new(pointer.cast::<u8>()) else {
            return;
        };
        #[cfg(feature = "hardened")]
        // SAFETY: a live block of ours (caller), or a pointer the checks report.
        if unsafe { free_small_hardened(block) } {
            return;
        }
        #[cfg(not(feature = "hardened"))]
        let _ = block;
        // SAFETY: a live block of ours with a prefix (caller; not a block of a size class).
        unsafe { free_with_prefix(pointer) }
    })
}

/// [`free`] of a pointer with [`UNUSUAL_ADDRESS_BITS`]: a misaligned one is reported, and
/// one above the slab map's addresses is a block with a prefix. Not unwinding (C ABI,
/// under its own guard), so that `free` jumps to it.
///
/// # Safety
/// - `pointer` is a live block of ours, given up, that lies in no slab, or a pointer
///   that is reported.
#[cfg(not(feature = "hardened"))]
#[inline(never)]
unsafe extern "C" fn free_unusual(pointer: *mut c_void) {
    no_unwind!("panic in free", || {
        check_alignment(pointer);
        // SAFETY: aligned, so a live block of ours with a prefix (caller).
        unsafe { free_with_prefix(pointer) }
    })
}

/// The address bits of a pointer that `free` sends off its fast path at once: those of a
/// misaligned pointer (reported), and those above the addresses the slab map covers (no
/// slab of ours lies there).
#[cfg(not(feature = "hardened"))]
const UNUSUAL_ADDRESS_BITS: usize =
    !((1 << pagekeep_slab::SLAB_MAP_ADDRESS_BITS) - 1) | (MIN_ALIGN - 1);

/// The hardened build's `free` of a block of a size class aligned to 16 (what `malloc`,
/// `calloc` and `realloc` hand out): one lookup in the slab map serves the check that
/// the prefix may be read (it lies in the block's slab), the prefix check, and the
/// heap's own (the block's start at a slot start of its slab, not free already, see
/// [`SlabHeap::free_located`]). Returns `false`, doing nothing, for every other pointer
/// (a large block, a block aligned above 16, a wild pointer, a second free whose link
/// overwrote the prefix): the general path, [`free_with_prefix`], then frees or reports
/// it.
///
/// # Safety
/// - `user` is a live block of ours given up by the caller, or a pointer whose free is
///   reported.
#[cfg(feature = "hardened")]
#[inline(always)]
unsafe fn free_small_hardened(user: NonNull<u8>) -> bool {
    let Some(located) = HEAP.locate_small_block(user.as_ptr()) else {
        return false;
    };
    if located.offset_in_slab() < PREFIX {
        return false;
    }
    // SAFETY: the prefix's 16 bytes lie in the same live slab as the pointer (checked
    // just above): mapped, and either the block's prefix or bytes of the slab that the
    // checks below reject.
    let (align, size) = unsafe {
        let prefix = user.as_ptr().sub(PREFIX).cast::<usize>();
        (prefix.read() ^ magic(), prefix.add(1).read())
    };
    // What `allocate` wrote for a block aligned to 16: the heap block's alignment (16)
    // and size (at least the prefix, at most the class's size).
    if align != MIN_ALIGN || size < PREFIX || size > located.class_size() {
        return false;
    }
    // SAFETY: the heap block starts 16 bytes before the pointer, as its prefix says; the
    // heap checks that it is a block's start and not free before it writes anything,
    // and the caller gives the block up.
    unsafe { HEAP.free_located(located, user.addr().get() - PREFIX) };
    true
}

/// The part of [`free`] for a block with a prefix (a large block; in the hardened
/// build, any block that `free_small_hardened` leaves to it). Out of line: inlined, its
/// registers made every free of a small block save and restore five of them (twelve
/// instructions). Not unwinding (C ABI: a panic aborts), so that `free` jumps to it.
///
/// # Safety
/// - `pointer` is a live block of this library with a prefix, not used afterwards.
#[inline(never)]
unsafe extern "C" fn free_with_prefix(pointer: *mut c_void) {
    // SAFETY: a live block of ours with a prefix (caller).
    let (base, layout) = unsafe { block_of(pointer) };
    if !has_own_mapping(layout) {
        // A block of a size class (the hardened build: the default one hands those out
        // without a prefix). Its prefix is cleared: for a block aligned above 16 it lies
        // past the words a free overwrites, and a later block in the same slot would
        // carry it, valid, inside its own bytes (a free of a pointer into that block,
        // where this one started, would pass).
        // SAFETY: the prefix word just before the pointer is the block's (`block_of`
        // read it), and the block is being freed.
        unsafe { pointer.cast::<u8>().sub(PREFIX).cast::<usize>().write(0) };
        // SAFETY: the heap block behind it, with its layout.
        unsafe { HEAP.dealloc(base, layout) };
    } else {
        // A block of its own mapping: `munmap` may fail (splitting a mapping past the
        // mapping-count limit) and set `errno`, which `free` must keep (POSIX 2024).
        let saved = errno();
        // SAFETY: the prefix word just before the pointer is the block's (`block_of`
        // read it). Cleared, so that a second free of a block the heap keeps mapped for
        // reuse finds an invalid prefix and is reported, as one already unmapped faults.
        unsafe { pointer.cast::<u8>().sub(PREFIX).cast::<usize>().write(0) };
        // SAFETY: as above.
        unsafe { HEAP.dealloc(base, layout) };
        set_errno(saved);
    }
}

/// glibc's `cfree`: [`free`]. glibc keeps it as a compat symbol (`cfree@GLIBC_2.2.5`)
/// that binaries linked before glibc 2.26 still call.
///
/// # Safety
/// As [`free`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cfree(pointer: *mut c_void) {
    // SAFETY: forwarded.
    unsafe { free(pointer) }
}

/// C `calloc`: zeroed, and null (`ENOMEM`) when `count * size` overflows.
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    no_unwind!("panic in calloc", || match count.checked_mul(size) {
        Some(bytes) => allocate(bytes, MIN_ALIGN, true),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    })
}

/// C `realloc`: `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees `p` and
/// returns null; on failure `p` is untouched.
///
/// # Safety
/// - `pointer` is null or a live block of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(pointer: *mut c_void, size: usize) -> *mut c_void {
    no_unwind!("panic in realloc", || {
        if pointer.is_null() {
            return allocate(size, MIN_ALIGN, false);
        }
        if size == 0 {
            // SAFETY: forwarded from the caller.
            unsafe { free(pointer) };
            return ptr::null_mut();
        }
        check_alignment(pointer);
        if !cfg!(feature = "hardened") {
            // SAFETY: a live block of ours (caller), of a size class or with a prefix (large).
            if let Some(usable) = unsafe { HEAP.small_block_size(pointer.cast()) } {
                // SAFETY: as above, a block of a size class.
                return unsafe { realloc_small(pointer, usable, size) };
            }
            if is_small(size, MIN_ALIGN) {
                // A large block into a size class: the new block has no prefix.
                // SAFETY: a live block of ours with a prefix (caller; not of a size class).
                let usable = unsafe { malloc_usable_size(pointer) };
                // SAFETY: a live block of ours (caller).
                return unsafe { move_block(pointer, usable, size) };
            }
        }
        // SAFETY: a live block of ours with a prefix (caller; not of a size class).
        let (base, layout) = unsafe { block_of(pointer) };
        let Some(new) = heap_layout(size, layout.align()) else {
            set_errno(libc::ENOMEM);
            return ptr::null_mut();
        };
        // The prefix is cleared first, as `free` does, and put back if nothing moved: a
        // block of its own mapping that moves into a size class is freed inside and kept
        // mapped for reuse, and an old block of a size class (the hardened build) keeps
        // its slot's bytes, so a later free of the old pointer must find no valid prefix
        // there. A block resized in place gets its prefix again from `finish`.
        let prefix = pointer.cast::<u8>().wrapping_sub(PREFIX).cast::<usize>();
        // SAFETY: the block's prefix word, just before the pointer (`block_of` read it).
        let alignment_word = unsafe { prefix.replace(0) };
        // SAFETY: the heap block with its layout; the new size is valid (from a `Layout`).
        let moved = unsafe { HEAP.realloc(base, layout, new.size()) };
        if moved.is_null() {
            // SAFETY: the block is untouched by a failed realloc, its prefix ours again.
            unsafe { prefix.write(alignment_word) };
            set_errno(libc::ENOMEM);
            return ptr::null_mut();
        }
        // SAFETY: a live block with layout `new`.
        unsafe { finish(moved, new) }
    })
}

/// `realloc` of a block of a size class (`usable` bytes) to `size` (non-zero) bytes: in
/// place within its class, into another class by the heap, and into a block with a
/// prefix (large) by [`move_block`].
///
/// # Safety
/// - `pointer` is a live block of a size class of [`HEAP`] with `usable` bytes.
unsafe fn realloc_small(pointer: *mut c_void, usable: usize, size: usize) -> *mut c_void {
    if !is_small(size, MIN_ALIGN) {
        // SAFETY: forwarded from the caller.
        return unsafe { move_block(pointer, usable, size) };
    }
    // The block's class is that of its usable size at the C alignment (every class
    // size a C block can have is a multiple of 16).
    // SAFETY: a class size and alignment 16 form a valid layout.
    let old = unsafe { Layout::from_size_align_unchecked(usable, MIN_ALIGN) };
    // SAFETY: a live block of the class of `old`; the new size is non-zero and small.
    let moved = unsafe { HEAP.realloc(pointer.cast(), old, size) };
    if moved.is_null() {
        set_errno(libc::ENOMEM);
    }
    moved.cast()
}

/// `realloc` into a new block from [`allocate`], copying the `usable` bytes of the old
/// one that fit, then freeing it; on failure the old block is untouched.
///
/// # Safety
/// - `pointer` is a live block of this library with `usable` bytes.
unsafe fn move_block(pointer: *mut c_void, usable: usize, size: usize) -> *mut c_void {
    let moved = allocate(size, MIN_ALIGN, false);
    if !moved.is_null() {
        // SAFETY: both blocks are live and distinct; the old one has `usable` bytes, the
        // new one its own usable size (at least `size`): every byte that fits is kept.
        unsafe {
            let fits = usable.min(malloc_usable_size(moved));
            ptr::copy_nonoverlapping(pointer.cast::<u8>(), moved.cast::<u8>(), fits);
            free(pointer);
        }
    }
    moved
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
    no_unwind!("panic in reallocarray", || {
        match count.checked_mul(size) {
            // SAFETY: forwarded.
            Some(bytes) => unsafe { realloc(pointer, bytes) },
            None => {
                set_errno(libc::ENOMEM);
                ptr::null_mut()
            }
        }
    })
}

/// Allocation aligned to `align` rounded up to a power of two (glibc 2.36's `memalign`
/// and `aligned_alloc`); null with `EINVAL` above `SIZE_MAX / 2 + 1`.
fn allocate_aligned(align: usize, size: usize) -> *mut c_void {
    match align.checked_next_power_of_two() {
        Some(align) => allocate(size, align, false),
        None => {
            set_errno(libc::EINVAL);
            ptr::null_mut()
        }
    }
}

/// POSIX `posix_memalign`: `EINVAL` unless `align` is a power of two multiple of the
/// pointer size, `ENOMEM` on exhaustion; `*out` is set only on success.
///
/// # Safety
/// - `out` is valid for a pointer write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    no_unwind!("panic in posix_memalign", || {
        if !align.is_power_of_two() || !align.is_multiple_of(size_of::<*mut c_void>()) {
            return libc::EINVAL;
        }
        let block = allocate(size, align, false);
        if block.is_null() {
            // `errno` is ENOMEM too, as glibc leaves it.
            return libc::ENOMEM;
        }
        // SAFETY: `out` is writable (caller).
        unsafe { out.write(block) };
        0
    })
}

/// C11 `aligned_alloc`: as [`memalign`] (glibc 2.36 accepts any alignment and rounds
/// it up to a power of two).
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    no_unwind!("panic in aligned_alloc", || allocate_aligned(align, size))
}

/// Obsolete `memalign`: `align` is rounded up to a power of two (0 and 1 mean the
/// default 16); null with `EINVAL` above `SIZE_MAX / 2 + 1`, with `ENOMEM` on
/// exhaustion.
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    no_unwind!("panic in memalign", || allocate_aligned(align, size))
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
    no_unwind!("panic in valloc", || allocate_aligned(page_size(), size))
}

/// Obsolete `pvalloc`: page-aligned, size rounded up to whole pages.
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    no_unwind!("panic in pvalloc", || {
        let page = page_size();
        match size.max(1).checked_next_multiple_of(page) {
            Some(size) => allocate_aligned(page, size),
            None => {
                set_errno(libc::ENOMEM);
                ptr::null_mut()
            }
        }
    })
}

/// GNU `malloc_usable_size`: the bytes usable in a block (0 for null).
///
/// # Safety
/// - `pointer` is null or a live block of this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(pointer: *mut c_void) -> usize {
    no_unwind!("panic in malloc_usable_size", || {
        if pointer.is_null() {
            return 0;
        }
        check_alignment(pointer);
        if !cfg!(feature = "hardened")
            // SAFETY: a live block of ours (caller), of a size class or with a prefix.
            && let Some(usable) = unsafe { HEAP.small_block_size(pointer.cast()) }
        {
            return usable;
        }
        // SAFETY: a live block of ours with a prefix (caller; not of a size class).
        let (_, layout) = unsafe { block_of(pointer) };
        <SlabHeap>::usable_size(layout) - layout.align().max(PREFIX)
    })
}

/// Totals of the heap, from its own counters (the calling thread's magazines flushed).
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    /// Bytes of slabs held.
    slab_bytes: usize,
    /// Bytes of small blocks in use (blocks cached by other threads included).
    used_bytes: usize,
    /// Blocks and bytes cached in the depots.
    cached_blocks: usize,
    cached_bytes: usize,
    /// Free blocks inside slabs.
    free_blocks: usize,
    /// Bytes of empty slabs.
    empty_slab_bytes: usize,
    /// Blocks with a mapping of their own, and their bytes.
    mapped_blocks: usize,
    mapped_bytes: usize,
    /// Bytes of freed large blocks kept for reuse.
    kept_large_bytes: usize,
}

/// One size class's figures, for [`malloc_info`].
struct ClassTotals {
    size: usize,
    cached: usize,
    free: usize,
}

/// Walks the classes (`each` gets each one's figures) and sums them.
fn totals(mut each: impl FnMut(ClassTotals)) -> Totals {
    let mut totals = Totals::default();
    for class in 0..CLASS_COUNT {
        let Some(stats) = HEAP.class_stats(class) else {
            break;
        };
        let slabs = stats.slabs_partial + stats.slabs_full + stats.slabs_empty;
        let slab_bytes = stats.bytes_committed.checked_div(slabs).unwrap_or(0);
        let free = (stats.objects_per_slab * slabs)
            .saturating_sub(stats.objects_live + stats.objects_in_depot);
        totals.slab_bytes += stats.bytes_committed;
        totals.used_bytes += stats.objects_live * stats.object_size;
        totals.cached_blocks += stats.objects_in_depot;
        totals.cached_bytes += stats.objects_in_depot * stats.object_size;
        totals.free_blocks += free;
        totals.empty_slab_bytes += stats.slabs_empty * slab_bytes;
        each(ClassTotals {
            size: stats.object_size,
            cached: stats.objects_in_depot,
            free,
        });
    }
    let heap = HEAP.stats();
    totals.mapped_blocks = heap.large_blocks;
    totals.mapped_bytes = heap.large_bytes;
    totals.kept_large_bytes = heap.large_bytes_kept;
    totals
}

/// glibc's `malloc_trim`: gives back every free page the heap can (the calling thread's
/// cached blocks, the depots, every empty slab, the freed large blocks kept for reuse);
/// 1 if memory went back, else 0. `pad` is ignored.
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_trim(pad: usize) -> c_int {
    no_unwind!("panic in malloc_trim", || {
        let _ = pad;
        let before = HEAP.stats();
        HEAP.flush_thread_cache();
        HEAP.trim();
        let after = HEAP.stats();
        c_int::from(
            after.small.slabs_released > before.small.slabs_released
                || after.large_bytes_kept < before.large_bytes_kept,
        )
    })
}

/// glibc's `struct mallinfo2`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MallInfo2 {
    /// Bytes of slabs held (glibc: non-mmapped space).
    pub arena: usize,
    /// Free blocks inside slabs.
    pub ordblks: usize,
    /// Blocks cached in the depots (glibc: fastbin blocks).
    pub smblks: usize,
    /// Blocks with a mapping of their own.
    pub hblks: usize,
    /// Bytes of blocks with a mapping of their own.
    pub hblkhd: usize,
    /// Always 0, as in glibc.
    pub usmblks: usize,
    /// Bytes cached in the depots.
    pub fsmblks: usize,
    /// Bytes of small blocks in use.
    pub uordblks: usize,
    /// `arena - uordblks`.
    pub fordblks: usize,
    /// Bytes of empty slabs.
    pub keepcost: usize,
}

/// glibc's deprecated `struct mallinfo`: [`MallInfo2`] in `int`s.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MallInfo {
    /// As in [`MallInfo2`], saturated to `INT_MAX`.
    pub arena: c_int,
    /// As in [`MallInfo2`], saturated.
    pub ordblks: c_int,
    /// As in [`MallInfo2`], saturated.
    pub smblks: c_int,
    /// As in [`MallInfo2`], saturated.
    pub hblks: c_int,
    /// As in [`MallInfo2`], saturated.
    pub hblkhd: c_int,
    /// 0.
    pub usmblks: c_int,
    /// As in [`MallInfo2`], saturated.
    pub fsmblks: c_int,
    /// As in [`MallInfo2`], saturated.
    pub uordblks: c_int,
    /// As in [`MallInfo2`], saturated.
    pub fordblks: c_int,
    /// As in [`MallInfo2`], saturated.
    pub keepcost: c_int,
}

fn info() -> MallInfo2 {
    let totals = totals(|_| {});
    MallInfo2 {
        arena: totals.slab_bytes,
        ordblks: totals.free_blocks,
        smblks: totals.cached_blocks,
        hblks: totals.mapped_blocks,
        hblkhd: totals.mapped_bytes,
        usmblks: 0,
        fsmblks: totals.cached_bytes,
        uordblks: totals.used_bytes,
        fordblks: totals.slab_bytes.saturating_sub(totals.used_bytes),
        keepcost: totals.empty_slab_bytes + totals.kept_large_bytes,
    }
}

/// glibc's `mallinfo2`: the heap's counters (see the crate docs).
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mallinfo2() -> MallInfo2 {
    no_unwind!("panic in mallinfo2", info)
}

/// glibc's deprecated `mallinfo`: [`mallinfo2`] saturated to `int`.
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mallinfo() -> MallInfo {
    no_unwind!("panic in mallinfo", || {
        let info = info();
        let int = |value: usize| c_int::try_from(value).unwrap_or(c_int::MAX);
        MallInfo {
            arena: int(info.arena),
            ordblks: int(info.ordblks),
            smblks: int(info.smblks),
            hblks: int(info.hblks),
            hblkhd: int(info.hblkhd),
            usmblks: 0,
            fsmblks: int(info.fsmblks),
            uordblks: int(info.uordblks),
            fordblks: int(info.fordblks),
            keepcost: int(info.keepcost),
        }
    })
}

/// Formatted text in a stack buffer, handed to `sink` whenever it fills and at the end:
/// formatting allocates nothing.
struct Text<F: FnMut(&[u8])> {
    buffer: [u8; 256],
    len: usize,
    sink: F,
}

impl<F: FnMut(&[u8])> Text<F> {
    fn new(sink: F) -> Self {
        Text {
            buffer: [0; 256],
            len: 0,
            sink,
        }
    }

    fn flush(&mut self) {
        if self.len > 0 {
            (self.sink)(&self.buffer[..self.len]);
            self.len = 0;
        }
    }
}

impl<F: FnMut(&[u8])> fmt::Write for Text<F> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for chunk in text.as_bytes().chunks(self.buffer.len()) {
            if self.len + chunk.len() > self.buffer.len() {
                self.flush();
            }
            self.buffer[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
        Ok(())
    }
}

/// glibc's `malloc_stats`: the heap's totals on standard error, in glibc's layout (the
/// slabs as "Arena 0", then the totals with the blocks of their own mappings).
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_stats() {
    no_unwind!("panic in malloc_stats", || {
        let info = info();
        let mut text = Text::new(|bytes: &[u8]| {
            // SAFETY: writes initialised bytes to stderr; a short write only cuts the text.
            let _ = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        });
        let _ = write!(
            text,
            "Arena 0:\nsystem bytes     = {:>10}\nin use bytes     = {:>10}\n\
             Total (incl. mmap):\nsystem bytes     = {:>10}\nin use bytes     = {:>10}\n\
             mmap regions     = {:>10}\nmmap bytes       = {:>10}\n",
            info.arena,
            info.uordblks,
            info.arena + info.hblkhd,
            info.uordblks + info.hblkhd,
            info.hblks,
            info.hblkhd,
        );
        text.flush();
    })
}

/// glibc's `malloc_info`: the heap's state as glibc's XML document, one `<size>` per
/// size class (its cached and free blocks). `options` must be 0, else `EINVAL` is
/// returned (as glibc does, without setting `errno`).
///
/// # Safety
/// - `stream` is an open, writable `FILE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_info(options: c_int, stream: *mut libc::FILE) -> c_int {
    no_unwind!("panic in malloc_info", || {
        if options != 0 {
            return libc::EINVAL;
        }
        let mut text = Text::new(|bytes: &[u8]| {
            // SAFETY: `stream` is writable (caller); the bytes are initialised.
            let _ = unsafe { libc::fwrite(bytes.as_ptr().cast(), 1, bytes.len(), stream) };
        });
        let _ = text.write_str("<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n");
        let totals = totals(|class| {
            if class.cached + class.free > 0 {
                let _ = writeln!(
                    text,
                    "  <size from=\"{0}\" to=\"{0}\" total=\"{1}\" count=\"{2}\"/>",
                    class.size,
                    class.size * (class.cached + class.free),
                    class.cached + class.free,
                );
            }
        });
        let free_bytes = totals.slab_bytes.saturating_sub(totals.used_bytes);
        let _ = write!(
            text,
            "</sizes>\n<total type=\"fast\" count=\"{}\" size=\"{}\"/>\n\
             <total type=\"rest\" count=\"{}\" size=\"{}\"/>\n\
             <system type=\"current\" size=\"{}\"/>\n\
             <aspace type=\"total\" size=\"{}\"/>\n</heap>\n\
             <total type=\"fast\" count=\"{}\" size=\"{}\"/>\n\
             <total type=\"rest\" count=\"{}\" size=\"{}\"/>\n\
             <total type=\"mmap\" count=\"{}\" size=\"{}\"/>\n\
             <system type=\"current\" size=\"{}\"/>\n\
             <aspace type=\"total\" size=\"{}\"/>\n</malloc>\n",
            totals.cached_blocks,
            totals.cached_bytes,
            totals.free_blocks,
            free_bytes,
            totals.slab_bytes,
            totals.slab_bytes,
            totals.cached_blocks,
            totals.cached_bytes,
            totals.free_blocks,
            free_bytes,
            totals.mapped_blocks,
            totals.mapped_bytes,
            totals.slab_bytes + totals.mapped_bytes,
            totals.slab_bytes + totals.mapped_bytes,
        );
        text.flush();
        0
    })
}

/// glibc's `M_MXFAST`, the one parameter whose values glibc refuses.
const M_MXFAST: c_int = 1;
/// The largest `M_MXFAST` glibc accepts on 64-bit targets (`80 * sizeof(size_t) / 4`).
const MAX_FAST_SIZE: c_int = 160;

/// glibc's `mallopt`: 1 (accepted) for every parameter, 0 for an `M_MXFAST` outside
/// `0..=160` as glibc refuses it. No parameter changes this heap (see the crate docs).
///
/// # Safety
/// Always safe to call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mallopt(param: c_int, value: c_int) -> c_int {
    no_unwind!("panic in mallopt", || match param {
        M_MXFAST => c_int::from((0..=MAX_FAST_SIZE).contains(&value)),
        _ => 1,
    })
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
            let rounded = memalign(3, 8);
            assert!(!rounded.is_null() && rounded.addr().is_multiple_of(16));
            free(rounded);
            let rounded = aligned_alloc(24, 8);
            assert!(!rounded.is_null() && rounded.addr().is_multiple_of(32));
            free(rounded);
            assert!(memalign(usize::MAX / 2 + 2, 8).is_null());
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
        // Blocks of a size class carry no prefix (in the default build).
        let prefix = if cfg!(feature = "hardened") {
            PREFIX
        } else {
            0
        };
        // SAFETY: C ABI calls with valid arguments; every block is freed once.
        unsafe {
            // 40 000 bytes (and the prefix) fit the 40 KiB class.
            let block = malloc(40_000).cast::<u8>();
            assert!(!block.is_null());
            let usable = malloc_usable_size(block.cast());
            assert_eq!(usable, 40 * 1024 - prefix);
            block.add(usable - 1).write(9);
            let grown = realloc(block.cast(), usable).cast::<u8>();
            assert_eq!(grown, block);
            assert_eq!(grown.add(usable - 1).read(), 9);
            // One byte more moves it to the 48 KiB class.
            let moved = realloc(grown.cast(), usable + 1).cast::<u8>();
            assert_ne!(moved, block);
            assert_eq!(moved.add(usable - 1).read(), 9);
            assert_eq!(malloc_usable_size(moved.cast()), 48 * 1024 - prefix);
            free(moved.cast());
            // Above 128 KiB: a mapping of its own, usable to the end of its pages.
            let big = malloc(200_000);
            assert!(malloc_usable_size(big) >= 200_000);
            assert_eq!((malloc_usable_size(big) + PREFIX) % page_size(), 0);
            free(big);
        }
    }

    #[test]
    fn blocks_move_between_the_classes_and_their_own_mappings_with_every_byte() {
        // SAFETY: C ABI calls with valid arguments; every block is freed once.
        unsafe {
            // Small to large and back, through every kind of block: the bytes that fit
            // the smaller usable size stay.
            let mut block = malloc(20).cast::<u8>();
            let mut usable = malloc_usable_size(block.cast());
            block.write_bytes(1, usable);
            for (size, byte) in [
                (300_000, 2),
                (50, 3),
                (1 << 20, 4),
                (128 * 1024, 5),
                (16, 6),
            ] {
                let moved = realloc(block.cast(), size).cast::<u8>();
                assert!(!moved.is_null());
                let kept = usable.min(size);
                let previous = byte - 1;
                assert!(
                    (0..kept).all(|i| moved.add(i).read() == previous),
                    "to {size}"
                );
                usable = malloc_usable_size(moved.cast());
                assert!(usable >= size);
                moved.write_bytes(byte, usable);
                block = moved;
            }
            free(block.cast());
            // An aligned block of a class keeps its alignment's class when it grows
            // within it, and frees by its address alone.
            let aligned = memalign(256, 100).cast::<u8>();
            assert_eq!(aligned.addr() % 256, 0);
            let usable = malloc_usable_size(aligned.cast());
            assert!(usable >= 100);
            assert_eq!(realloc(aligned.cast(), usable).cast::<u8>(), aligned);
            free(aligned.cast());
        }
    }
}
