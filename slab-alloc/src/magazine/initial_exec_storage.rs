//! Where a thread's magazines live with the `initial-exec-tls` feature on x86-64 Linux
//! with glibc (the C ABI's shared library): in a block mapped for the thread, whose
//! address is kept in one word of static TLS read with the initial-exec model.
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
//! thread-locals (96 bytes).
//!
//! The word holds:
//! - 0 until the thread registers ([`crate::magazine::register_thread`], before the
//!   first slow path that needs a slot): [`UNREGISTERED_MAGAZINES`] stand in.
//!   Registration gives the thread a block ([`to_register`]), which the word names from
//!   then on, so the slow path that registered, and the allocations that registration
//!   itself makes (its state is then `REGISTERING`), already use it.
//! - The thread's block, from its registration until its exit hook is done with it
//!   ([`release`]).
//! - 1 after that, or when the thread could not be registered: [`RETIRED_MAGAZINES`]
//!   stand in, and the thread works without magazines.
//!
//! The fast paths see nothing but a block: they test the word for 0 and 1
//! ([`try_with_current`]). The stand-ins, each shared by every thread in its state, are
//! given to the slow paths, which write no slot of magazines that are not `ACTIVE`
//! ([`ThreadMagazines::own_slot`]), only their handshake flags (atomics, which no decay
//! pass reads: stand-ins are never listed).
//!
//! A block given back goes to a short list of spare blocks that the next registering
//! thread takes ([`crate::registry`]), so a program that keeps starting threads does
//! not map and unmap one for each.
//!
//! The word's values are exposed addresses ([`pointer::expose_provenance`]), since it is
//! read by `asm!`.

use core::mem::{align_of, size_of};
use core::ptr::{self, NonNull};

use pagekeep_mmap::{DefaultPages, PageSource};

use super::ThreadMagazines;

/// The name of the TLS word. A program can hold one copy of this crate with the
/// feature: a second copy (another version) fails to link, with a duplicate definition
/// of this name, rather than share a word between two registries.
macro_rules! word_symbol {
    () => {
        "pagekeep_slab_thread_magazines"
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

/// The word of a thread that has not registered.
const UNREGISTERED: usize = 0;
/// The word of a thread that works without magazines.
const RETIRED: usize = 1;

/// What threads see before they register: empty, without room, `UNREGISTERED`.
static UNREGISTERED_MAGAZINES: ThreadMagazines = ThreadMagazines::new();

/// What threads see once their exit hook ran, or when they could not register: empty,
/// without room, `RETIRED`.
static RETIRED_MAGAZINES: ThreadMagazines = ThreadMagazines::retired();

/// The bytes mapped for a thread's block.
const BLOCK_BYTES: usize = size_of::<ThreadMagazines>();

/// Runs `f` on the calling thread's magazines: its block, or a stand-in. Never
/// allocates nor fails, even while the thread exits.
#[inline(always)]
pub(super) fn with_current<R>(f: impl FnOnce(&ThreadMagazines) -> R) -> R {
    match load_word() {
        UNREGISTERED => f(&UNREGISTERED_MAGAZINES),
        RETIRED => f(&RETIRED_MAGAZINES),
        // SAFETY: any other word is the exposed address of the thread's block (module
        // docs), which stays mapped until this thread gives it back (`give_back`), never
        // while `f` runs: the exit hook runs outside every allocator entry point, and
        // registration gives back only the block it took itself, once the allocations
        // it made have returned.
        block => f(unsafe { &*ptr::with_exposed_provenance::<ThreadMagazines>(block) }),
    }
}

/// [`with_current`] for the inlined fast paths: `None`, without running `f`, unless the
/// thread has its block (the stand-ins are never given to a fast path).
#[inline(always)]
pub(super) fn try_with_current<R>(f: impl FnOnce(&ThreadMagazines) -> R) -> Option<R> {
    let block = load_word();
    if block <= RETIRED {
        return None;
    }
    // SAFETY: as in `with_current`.
    Some(f(unsafe {
        &*ptr::with_exposed_provenance::<ThreadMagazines>(block)
    }))
}

/// The magazines that [`crate::registry::activate`] registers for the calling thread,
/// whose current ones are `current` (`UNREGISTERED`, so the stand-in): a block, spare or
/// mapped for it, which becomes its current magazines. `None` if no block can be
/// mapped: this operation goes without magazines, and the next slow path tries again.
pub(crate) fn to_register(current: &ThreadMagazines) -> Option<NonNull<ThreadMagazines>> {
    debug_assert!(ptr::eq(current, &UNREGISTERED_MAGAZINES));
    let entry = match crate::registry::take_spare_block() {
        Some(entry) => entry,
        None => DefaultPages::default()
            .reserve_committed(BLOCK_BYTES, align_of::<ThreadMagazines>())
            .ok()?
            .cast::<ThreadMagazines>(),
    };
    // SAFETY: a fresh mapping of `BLOCK_BYTES`, aligned for the type (it is
    // page-aligned), or a spare block of one, that nothing else refers to.
    unsafe { entry.as_ptr().write(ThreadMagazines::new()) };
    store_word(entry.as_ptr().expose_provenance());
    Some(entry)
}

/// Points the calling thread's word at [`RETIRED_MAGAZINES`] and gives its block back:
/// to the spare blocks, or unmapped if there are enough.
///
/// # Safety
/// - `entry` is the calling thread's block, from [`to_register`]; no registry list, no
///   exit hook's value and no live reference names it.
unsafe fn give_back(entry: NonNull<ThreadMagazines>) {
    store_word(RETIRED);
    // SAFETY: nothing refers to the block (caller).
    if let Some(entry) = unsafe { crate::registry::keep_spare_block(entry) } {
        // SAFETY: mapped by `to_register` with this size and alignment; the word no
        // longer names it and nothing else refers to it (caller).
        let _ = unsafe {
            DefaultPages::default().release(
                entry.cast(),
                BLOCK_BYTES,
                align_of::<ThreadMagazines>(),
            )
        };
    }
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
/// without magazines from now on, and the block is given back.
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

    /// A block given back is kept as a spare (up to the bound) and taken by the next
    /// registration. (Registrations in tests running beside this one share the list:
    /// a block kept and then found there in one try of a hundred is asked for.)
    #[test]
    fn a_block_given_back_is_kept_for_the_next_registration() {
        let pages = DefaultPages::default();
        let align = align_of::<ThreadMagazines>();
        let found = (0..100).any(|_| {
            let block = pages.reserve_committed(BLOCK_BYTES, align).unwrap().cast();
            // SAFETY: a fresh block that nothing refers to.
            if let Some(refused) = unsafe { crate::registry::keep_spare_block(block) } {
                // SAFETY: mapped above with this size and alignment, referred to by none.
                let _ = unsafe { pages.release(refused.cast(), BLOCK_BYTES, align) };
                return false;
            }
            let Some(spare) = crate::registry::take_spare_block() else {
                return false;
            };
            // SAFETY: a spare block, now ours alone: back to the list or unmapped.
            if let Some(refused) = unsafe { crate::registry::keep_spare_block(spare) } {
                // SAFETY: as above.
                let _ = unsafe { pages.release(refused.cast(), BLOCK_BYTES, align) };
            }
            true
        });
        assert!(found, "no block given back was kept for a registration");
    }
}
