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

static NEW: Next = Next::new(c"_Znwm");
static NEW_ARRAY: Next = Next::new(c"_Znam");
static NEW_NOTHROW: Next = Next::new(c"_ZnwmRKSt9nothrow_t");
static NEW_ARRAY_NOTHROW: Next = Next::new(c"_ZnamRKSt9nothrow_t");
static NEW_ALIGNED: Next = Next::new(c"_ZnwmSt11align_val_t");
static NEW_ARRAY_ALIGNED: Next = Next::new(c"_ZnamSt11align_val_t");
static NEW_ALIGNED_NOTHROW: Next = Next::new(c"_ZnwmSt11align_val_tRKSt9nothrow_t");
static NEW_ARRAY_ALIGNED_NOTHROW: Next = Next::new(c"_ZnamSt11align_val_tRKSt9nothrow_t");

type PlainNew = unsafe extern "C-unwind" fn(usize) -> *mut c_void;
type NothrowNew = unsafe extern "C-unwind" fn(usize, *const c_void) -> *mut c_void;
type AlignedNew = unsafe extern "C-unwind" fn(usize, usize) -> *mut c_void;
type AlignedNothrowNew = unsafe extern "C-unwind" fn(usize, usize, *const c_void) -> *mut c_void;

/// A block of `size` bytes aligned to `align` (a power of two from the aligned forms,
/// else 16) from the heap, or null. A macro, so that each operator has a closure of its
/// own, inlined as `malloc`'s is (one closure shared by eight callers stayed a call).
macro_rules! try_new {
    ($size:expr, $align:expr) => {
        no_unwind("panic in operator new", || allocate($size, $align, false))
    };
}

/// `operator new(size_t)`.
///
/// # Safety
/// Always safe to call; `unsafe` because it is the C++ ABI.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn _Znwm(size: usize) -> *mut c_void {
    let block = try_new!(size, MIN_ALIGN);
    if !block.is_null() {
        return block;
    }
    // SAFETY: libstdc++'s definition of this very symbol, with its signature.
    unsafe { core::mem::transmute::<*mut c_void, PlainNew>(NEW.get())(size) }
}

/// `operator new[](size_t)`.
///
/// # Safety
/// As [`_Znwm`].
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn _Znam(size: usize) -> *mut c_void {
    let block = try_new!(size, MIN_ALIGN);
    if !block.is_null() {
        return block;
    }
    // SAFETY: libstdc++'s definition of this very symbol, with its signature.
    unsafe { core::mem::transmute::<*mut c_void, PlainNew>(NEW_ARRAY.get())(size) }
}

/// `operator new(size_t, const std::nothrow_t&)`.
///
/// # Safety
/// As [`_Znwm`]; `tag` is passed on as it is.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn _ZnwmRKSt9nothrow_t(
    size: usize,
    tag: *const c_void,
) -> *mut c_void {
    let block = try_new!(size, MIN_ALIGN);
    if !block.is_null() {
        return block;
    }
    // SAFETY: libstdc++'s definition of this very symbol, with its signature.
    unsafe { core::mem::transmute::<*mut c_void, NothrowNew>(NEW_NOTHROW.get())(size, tag) }
}

/// `operator new[](size_t, const std::nothrow_t&)`.
///
/// # Safety
/// As [`_ZnwmRKSt9nothrow_t`].
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn _ZnamRKSt9nothrow_t(
    size: usize,
    tag: *const c_void,
) -> *mut c_void {
    let block = try_new!(size, MIN_ALIGN);
    if !block.is_null() {
        return block;
    }
    // SAFETY: libstdc++'s definition of this very symbol, with its signature.
    unsafe { core::mem::transmute::<*mut c_void, NothrowNew>(NEW_ARRAY_NOTHROW.get())(size, tag) }
}

/// The alignment of an aligned `new`, if the heap can serve it: a power of two (the
/// standard requires one; anything else goes to libstdc++, which decides).
fn aligned(align: usize) -> Option<usize> {
    align.is_power_of_two().then_some(align.max(MIN_ALIGN))
}

/// `operator new(size_t, std::align_val_t)`.
///
/// # Safety
/// As [`_Znwm`].
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn _ZnwmSt11align_val_t(size: usize, align: usize) -> *mut c_void {
    if let Some(block) = aligned(align).map(|align| try_new!(size, align))
        && !block.is_null()
    {
        return block;
    }
    // SAFETY: libstdc++'s definition of this very symbol, with its signature.
    unsafe { core::mem::transmute::<*mut c_void, AlignedNew>(NEW_ALIGNED.get())(size, align) }
}

/// `operator new[](size_t, std::align_val_t)`.
///
/// # Safety
/// As [`_Znwm`].
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn _ZnamSt11align_val_t(size: usize, align: usize) -> *mut c_void {
    if let Some(block) = aligned(align).map(|align| try_new!(size, align))
        && !block.is_null()
    {
        return block;
    }
    // SAFETY: libstdc++'s definition of this very symbol, with its signature.
    unsafe { core::mem::transmute::<*mut c_void, AlignedNew>(NEW_ARRAY_ALIGNED.get())(size, align) }
}

/// `operator new(size_t, std::align_val_t, const std::nothrow_t&)`.
///
/// # Safety
/// As [`_ZnwmRKSt9nothrow_t`].
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn _ZnwmSt11align_val_tRKSt9nothrow_t(
    size: usize,
    align: usize,
    tag: *const c_void,
) -> *mut c_void {
    if let Some(block) = aligned(align).map(|align| try_new!(size, align))
        && !block.is_null()
    {
        return block;
    }
    // SAFETY: libstdc++'s definition of this very symbol, with its signature.
    unsafe {
        core::mem::transmute::<*mut c_void, AlignedNothrowNew>(NEW_ALIGNED_NOTHROW.get())(
            size, align, tag,
        )
    }
}

/// `operator new[](size_t, std::align_val_t, const std::nothrow_t&)`.
///
/// # Safety
/// As [`_ZnwmRKSt9nothrow_t`].
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn _ZnamSt11align_val_tRKSt9nothrow_t(
    size: usize,
    align: usize,
    tag: *const c_void,
) -> *mut c_void {
    if let Some(block) = aligned(align).map(|align| try_new!(size, align))
        && !block.is_null()
    {
        return block;
    }
    // SAFETY: libstdc++'s definition of this very symbol, with its signature.
    unsafe {
        core::mem::transmute::<*mut c_void, AlignedNothrowNew>(NEW_ARRAY_ALIGNED_NOTHROW.get())(
            size, align, tag,
        )
    }
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
