//! Where a thread's magazines live with the `initial-exec-tls` feature on x86-64 Linux
//! (the C ABI's shared library): in a block mapped for the thread, whose address is
//! kept in one word of static TLS read with the initial-exec model.
//!
//! In a shared library, a `thread_local!` is reached through the dynamic linker's TLS
//! resolver (a TLSDESC call): every `malloc` and `free` paid the call, its return, the
//! add of the thread pointer, and the stack frame that a call needs. The initial-exec
//! model reads the word's offset from the GOT and the word at that offset from `%fs`:
//! two loads. Its cost is that the library's whole TLS block must then sit in the
//! static TLS area: a library loaded at start-up (`LD_PRELOAD`, a link-time
//! dependency) always gets one, but `dlopen` after start-up can only use the few
//! hundred bytes glibc keeps spare. The magazines are over 5 KiB, so they live in a
//! mapped block instead, and the library's TLS stays the word and std's few
//! thread-locals (about 120 bytes).
//!
//! The word holds:
//! - 0 until the thread first registers. [`UNREGISTERED_MAGAZINES`] stand in: the fast
//!   paths miss (they test the word for 0), and the first slow path that needs a slot
//!   registers the thread, which maps its block ([`to_register`]). That operation
//!   itself goes without magazines (it was given the stand-in).
//! - The thread's block, from its registration until its exit hook is done with it
//!   ([`release`]).
//! - The address of [`RETIRED_MAGAZINES`] after that, or when the thread could not be
//!   registered: it works without magazines.
//!
//! The two stand-ins are shared by every thread in those states. Their slots stay empty
//! and without room: only an `ACTIVE` thread loads a magazine into a slot, and the fast
//! paths find nothing to pop and no room to push. Their handshake flags are stored by
//! any such thread (atomics, which no decay pass reads: they are never listed).
//!
//! The word's values are exposed addresses ([`pointer::expose_provenance`]), since it is
//! read by `asm!`.

use core::mem::{align_of, size_of};
use core::ptr::{self, NonNull};

use pagekeep_mmap::{DefaultPages, PageSource};

use super::ThreadMagazines;

/// The name of the TLS word: versioned, so that two versions of this crate in one
/// program keep a word each.
macro_rules! word_symbol {
    () => {
        concat!(
            "pagekeep_slab_",
            env!("CARGO_PKG_VERSION"),
            "_thread_magazines"
        )
    };
}

// The TLS word: 8 zero bytes in `.tbss`, global (so that every codegen unit's `asm!`
// reaches it) but hidden (not exported from a shared library).
core::arch::global_asm!(
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 3",
    concat!(".globl ", word_symbol!()),
    concat!(".hidden ", word_symbol!()),
    concat!(".type ", word_symbol!(), ",@object"),
    concat!(".size ", word_symbol!(), ",8"),
    concat!(word_symbol!(), ":"),
    ".zero 8",
    ".popsection",
    options(att_syntax),
);

/// The calling thread's word.
#[inline(always)]
fn load_word() -> usize {
    let word: usize;
    // SAFETY: reads the calling thread's TLS word (defined above: 8 bytes, aligned): its
    // offset from the thread pointer, from the GOT, then the word at that offset from
    // `%fs`, the thread pointer. Nothing else is read or written.
    unsafe {
        core::arch::asm!(
            concat!("movq ", word_symbol!(), "@GOTTPOFF(%rip), {word}"),
            "movq %fs:({word}), {word}",
            word = out(reg) word,
            options(att_syntax, nostack, preserves_flags, readonly, pure),
        );
    }
    word
}

/// Sets the calling thread's word.
fn store_word(word: usize) {
    // SAFETY: writes the calling thread's TLS word (see `load_word`), which nothing but
    // this module's functions reads or writes.
    unsafe {
        core::arch::asm!(
            concat!("movq ", word_symbol!(), "@GOTTPOFF(%rip), {offset}"),
            "movq {word}, %fs:({offset})",
            offset = out(reg) _,
            word = in(reg) word,
            options(att_syntax, nostack, preserves_flags),
        );
    }
}

/// What threads see before they register: empty, without room, `UNREGISTERED`.
static UNREGISTERED_MAGAZINES: ThreadMagazines = ThreadMagazines::new();

/// What threads see once their exit hook ran, or when they could not register: empty,
/// without room, `RETIRED`.
static RETIRED_MAGAZINES: ThreadMagazines = ThreadMagazines::retired();

/// Marks the calling thread as working without magazines from now on.
fn retire_thread() {
    store_word(ptr::from_ref(&RETIRED_MAGAZINES).expose_provenance());
}

/// The bytes mapped for a thread's block.
const BLOCK_BYTES: usize = size_of::<ThreadMagazines>();

/// Runs `f` on the calling thread's magazines: its block, or a stand-in. Never
/// allocates nor fails, even while the thread exits.
#[inline(always)]
pub(super) fn with_current<R>(f: impl FnOnce(&ThreadMagazines) -> R) -> R {
    let word = load_word();
    if word == 0 {
        return f(&UNREGISTERED_MAGAZINES);
    }
    // SAFETY: a non-zero word is the exposed address of `RETIRED_MAGAZINES` or of the
    // thread's block (module docs), which stays mapped until this thread gives it back
    // (`give_back`), never while `f` runs: the exit hook runs outside every allocator
    // entry point, and registration gives back only a block it mapped itself, after
    // the reentrant allocations that saw it returned (and it runs with the stand-in as
    // its caller's magazines).
    f(unsafe { &*ptr::with_exposed_provenance::<ThreadMagazines>(word) })
}

/// [`with_current`] for the inlined fast paths: `None`, without running `f`, before the
/// thread registered (its stand-in has nothing for them).
#[inline(always)]
pub(super) fn try_with_current<R>(f: impl FnOnce(&ThreadMagazines) -> R) -> Option<R> {
    let word = load_word();
    if word == 0 {
        return None;
    }
    // SAFETY: as in `with_current`.
    Some(f(unsafe {
        &*ptr::with_exposed_provenance::<ThreadMagazines>(word)
    }))
}

/// The magazines that [`crate::registry::activate`] registers for the calling thread,
/// whose current ones are `current` (`UNREGISTERED`, so the stand-in): a block mapped
/// for it, which becomes its current magazines. `None` if no block can be mapped: the
/// thread then works without magazines.
pub(crate) fn to_register(current: &ThreadMagazines) -> Option<NonNull<ThreadMagazines>> {
    debug_assert!(ptr::eq(current, &UNREGISTERED_MAGAZINES));
    let Ok(page) =
        DefaultPages::default().reserve_committed(BLOCK_BYTES, align_of::<ThreadMagazines>())
    else {
        retire_thread();
        return None;
    };
    let entry = page.cast::<ThreadMagazines>();
    // SAFETY: a fresh mapping of `BLOCK_BYTES`, aligned for the type (it is
    // page-aligned), that nothing else refers to.
    unsafe { entry.as_ptr().write(ThreadMagazines::new()) };
    store_word(entry.as_ptr().expose_provenance());
    Some(entry)
}

/// Points the calling thread's word at [`RETIRED_MAGAZINES`] and unmaps its block.
///
/// # Safety
/// - `entry` is the calling thread's block, from [`to_register`]; no registry list, no
///   exit hook's value and no live reference names it.
unsafe fn give_back(entry: NonNull<ThreadMagazines>) {
    retire_thread();
    // SAFETY: mapped by `to_register` with this size and alignment; the word no longer
    // names it and nothing else refers to it (caller).
    let _ = unsafe {
        DefaultPages::default().release(entry.cast(), BLOCK_BYTES, align_of::<ThreadMagazines>())
    };
}

/// Gives back the block of the calling thread, which could not be registered: the
/// thread works without magazines from now on.
///
/// # Safety
/// - `entry` is the calling thread's block, from [`to_register`], never listed nor set
///   as an exit hook's value, and no reference to it is live.
pub(crate) unsafe fn retire_unregistered(entry: NonNull<ThreadMagazines>) {
    // SAFETY: the same obligations (caller).
    unsafe { give_back(entry) };
}

/// The exit hook is done with the calling thread's block `entry`: the thread works
/// without magazines from now on, and the block is unmapped.
///
/// # Safety
/// - `entry` is the calling thread's registered block, retired, emptied and off the
///   registry's list (the exit hook's value is consumed), and no reference to it is
///   live.
pub(crate) unsafe fn release(entry: NonNull<ThreadMagazines>) {
    // SAFETY: the same obligations (caller).
    unsafe { give_back(entry) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::magazine::{ACTIVE, UNREGISTERED, register_thread};
    use core::sync::atomic::Ordering::Relaxed;

    #[test]
    fn a_thread_has_no_block_until_it_registers_then_its_own() {
        let blocks: Vec<usize> = (0..2)
            .map(|_| {
                std::thread::spawn(|| {
                    // A new thread: the stand-in, and nothing for the fast paths.
                    assert_eq!(load_word(), 0);
                    with_current(|magazines| {
                        assert!(ptr::eq(magazines, &UNREGISTERED_MAGAZINES));
                        assert_eq!(magazines.state.load(Relaxed), UNREGISTERED);
                    });
                    assert_eq!(try_with_current(|_| ()), None);
                    register_thread();
                    let block = load_word();
                    assert_ne!(block, 0);
                    with_current(|magazines| {
                        assert_eq!(ptr::from_ref(magazines).addr(), block);
                        assert_eq!(magazines.state.load(Relaxed), ACTIVE);
                    });
                    assert_eq!(try_with_current(|m| ptr::from_ref(m).addr()), Some(block));
                    // Registering again changes nothing.
                    register_thread();
                    assert_eq!(load_word(), block);
                    block
                })
                .join()
                .unwrap()
            })
            .collect();
        assert!(
            blocks
                .iter()
                .all(|&block| block % align_of::<ThreadMagazines>() == 0)
        );
        // The stand-ins were never written to as a thread's own.
        assert_eq!(UNREGISTERED_MAGAZINES.state.load(Relaxed), UNREGISTERED);
    }
}
