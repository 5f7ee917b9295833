//! C++'s `operator new` and `operator delete` (Itanium ABI names), so that C++ programs
//! reach the heap without going through libstdc++'s wrappers (a call of `malloc` or
//! `free` through the PLT from each: about 20 instructions per `new`/`delete` pair, a
//! seventh of it; mimalloc's library overrides them too).
//!
//! Only success is handled here. When the heap has no room, each `new` hands the request
//! to the definition it replaces (libstdc++'s, found with `dlsym(RTLD_NEXT)`), which
//! does what the standard asks: call the `new_handler` and try again (through `malloc`,
//! so this heap), then throw `std::bad_alloc` (or return null for the `nothrow` forms).
//! The exception unwinds through the `C-unwind` frame here. Without a definition to hand
//! it to (no libstdc++ in the process) the process aborts with a message, as a throw
//! with no handler would.
//!
//! Every `delete` is `free`: the size and alignment that the sized and aligned forms
//! pass are not needed to find a block.

#![allow(
    non_snake_case,
    reason = "the symbols are C++'s mangled names, which the linker must find as they are"
)]

use core::ffi::{CStr, c_void};
use core::sync::atomic::{AtomicPtr, Ordering};

#[cfg(not(feature = "hardened"))]
use crate::HEAP;
use crate::{MIN_ALIGN, allocate, free, no_unwind};

/// One `operator new` of libstdc++'s, looked up once.
struct Next {
    name: &'static CStr,
    found: AtomicPtr<c_void>,
}

impl Next {
    const fn new(name: &'static CStr) -> Self {
        Next {
            name,
            found: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// The address of the next definition of this symbol after this library, or
    /// abort: without it there is no `new_handler` loop and no `bad_alloc` to throw.
    #[cold]
    fn get(&self) -> *mut c_void {
        let mut found = self.found.load(Ordering::Acquire);
        if found.is_null() {
            // SAFETY: a NUL-terminated name; RTLD_NEXT searches the objects loaded after
            // this one. `dlsym` may allocate (through this heap): no lock is held here.
            found = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) };
            if found.is_null() {
                let message = b"pagekeep-slab: fatal: out of memory in operator new, and no \
                                other operator new in the process to throw std::bad_alloc\n";
                // SAFETY: writes a buffer of its length to standard error, then aborts.
                unsafe {
                    libc::write(2, message.as_ptr().cast(), message.len());
                    libc::abort();
                }
            }
            self.found.store(found, Ordering::Release);
        }
        found
    }
}

type PlainNew = unsafe extern "C-unwind" fn(usize) -> *mut c_void;
type NothrowNew = unsafe extern "C-unwind" fn(usize, *const c_void) -> *mut c_void;
type AlignedNew = unsafe extern "C-unwind" fn(usize, usize) -> *mut c_void;
type AlignedNothrowNew = unsafe extern "C-unwind" fn(usize, usize, *const c_void) -> *mut c_void;

/// A block of `size` bytes aligned to `align` (a power of two from the aligned forms,
/// else 16) from the heap, or null. A macro, so that each operator has a closure of its
/// own, inlined as `malloc`'s is (one closure shared by eight callers stayed a call).
macro_rules! try_new {
    ($size:expr, $align:expr) => {
        no_unwind!("panic in operator new", || allocate($size, $align, false))
    };
}

/// The alignment of an aligned `new`, if the heap can serve it: a power of two (the
/// standard requires one; anything else goes to libstdc++, which decides).
fn aligned(align: usize) -> Option<usize> {
    align.is_power_of_two().then_some(align.max(MIN_ALIGN))
}

/// The size to hand libstdc++'s aligned `new` for a request of `size` bytes aligned to
/// `align`: `size` itself, unless rounding it up to `align` wraps around. libstdc++
/// rounds without checking (GCC 12), so that `new(SIZE_MAX, align_val_t(64))` asked the
/// heap for 0 bytes and returned a block; the largest multiple of `align` instead is a
/// size no heap has, which makes libstdc++ call the `new_handler` and throw
/// `std::bad_alloc` (or return null for the `nothrow` forms), as for any size too large.
fn unwrapped_size(size: usize, align: usize) -> usize {
    if align.is_power_of_two() && size > usize::MAX - (align - 1) {
        usize::MAX & !(align - 1)
    } else {
        size
    }
}

/// Defines the forms of `operator new`: each tries the heap with the alignment its
/// `align` expression gives (none: straight to libstdc++), then hands the request, with
/// all its arguments, to libstdc++'s definition of the same symbol (see the module docs);
/// its size as the `size for libstdc++` expression gives it ([`unwrapped_size`] for the
/// aligned forms).
/// The forms with `from_magazine true` (alignment 16, as `malloc`'s) first try the
/// calling thread's magazine as `malloc` does, and jump to the rest, out of line, when it
/// has no block: no stack frame on their fast path.
macro_rules! news {
    ($(
        $(#[$doc:meta])*
        $name:ident($size:ident $(, $extra:ident: $ty:ty)*) as $fn:ty, align $align:expr,
            from_magazine $from_magazine:literal, size for libstdc++ $next_size:expr;
    )*) => {$(
        $(#[$doc])*
        ///
        /// # Safety
        /// Always safe to call; `unsafe` because it is the C++ ABI. The other arguments
        /// are passed on as they are.
        #[unsafe(no_mangle)]
        pub unsafe extern "C-unwind" fn $name($size: usize $(, $extra: $ty)*) -> *mut c_void {
            #[cfg(not(feature = "hardened"))]
            if $from_magazine
                && let Some(block) = HEAP.alloc_aligned_16_from_magazine($size)
            {
                return block.as_ptr().cast();
            }
            /// The heap's general path, then libstdc++'s definition.
            #[inline(never)]
            extern "C-unwind" fn general($size: usize $(, $extra: $ty)*) -> *mut c_void {
                if let Some(block) = $align.map(|align| try_new!($size, align))
                    && !block.is_null()
                {
                    return block;
                }
                static NEXT: Next = Next::new(
                    match CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                        Ok(name) => name,
                        Err(_) => panic!("a symbol name has no NUL inside"),
                    },
                );
                // SAFETY: libstdc++'s definition of this very symbol, with its signature.
                unsafe { core::mem::transmute::<*mut c_void, $fn>(NEXT.get())($next_size $(, $extra)*) }
            }
            general($size $(, $extra)*)
        }
    )*};
}

news! {
    /// `operator new(size_t)`.
    _Znwm(size) as PlainNew, align Some(MIN_ALIGN), from_magazine true, size for libstdc++ size;
    /// `operator new[](size_t)`.
    _Znam(size) as PlainNew, align Some(MIN_ALIGN), from_magazine true, size for libstdc++ size;
    /// `operator new(size_t, const std::nothrow_t&)`.
    _ZnwmRKSt9nothrow_t(size, tag: *const c_void) as NothrowNew, align Some(MIN_ALIGN),
        from_magazine true, size for libstdc++ size;
    /// `operator new[](size_t, const std::nothrow_t&)`.
    _ZnamRKSt9nothrow_t(size, tag: *const c_void) as NothrowNew, align Some(MIN_ALIGN),
        from_magazine true, size for libstdc++ size;
    /// `operator new(size_t, std::align_val_t)`.
    _ZnwmSt11align_val_t(size, align: usize) as AlignedNew, align aligned(align), from_magazine false,
        size for libstdc++ unwrapped_size(size, align);
    /// `operator new[](size_t, std::align_val_t)`.
    _ZnamSt11align_val_t(size, align: usize) as AlignedNew, align aligned(align), from_magazine false,
        size for libstdc++ unwrapped_size(size, align);
    /// `operator new(size_t, std::align_val_t, const std::nothrow_t&)`.
    _ZnwmSt11align_val_tRKSt9nothrow_t(size, align: usize, tag: *const c_void)
        as AlignedNothrowNew, align aligned(align), from_magazine false,
        size for libstdc++ unwrapped_size(size, align);
    /// `operator new[](size_t, std::align_val_t, const std::nothrow_t&)`.
    _ZnamSt11align_val_tRKSt9nothrow_t(size, align: usize, tag: *const c_void)
        as AlignedNothrowNew, align aligned(align), from_magazine false,
        size for libstdc++ unwrapped_size(size, align);
}

/// Defines the forms of `operator delete`, each of which is `free` of its pointer.
macro_rules! deletes {
    ($($name:ident($($extra:ident: $ty:ty),*);)*) => {$(
        /// A form of `operator delete`: [`free`] of `pointer` (the other arguments are
        /// not needed to find the block).
        ///
        /// # Safety
        /// As [`free`].
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(pointer: *mut c_void, $($extra: $ty),*) {
            $(let _ = $extra;)*
            // SAFETY: forwarded from the caller.
            unsafe { free(pointer) }
        }
    )*};
}

deletes! {
    _ZdlPv();
    _ZdaPv();
    _ZdlPvm(size: usize);
    _ZdaPvm(size: usize);
    _ZdlPvRKSt9nothrow_t(tag: *const c_void);
    _ZdaPvRKSt9nothrow_t(tag: *const c_void);
    _ZdlPvSt11align_val_t(align: usize);
    _ZdaPvSt11align_val_t(align: usize);
    _ZdlPvmSt11align_val_t(size: usize, align: usize);
    _ZdaPvmSt11align_val_t(size: usize, align: usize);
    _ZdlPvSt11align_val_tRKSt9nothrow_t(align: usize, tag: *const c_void);
    _ZdaPvSt11align_val_tRKSt9nothrow_t(align: usize, tag: *const c_void);
}
