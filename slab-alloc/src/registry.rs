//! The process-wide registry: every cache core (for the fork handlers), the cache ids
//! that index the per-thread magazine slots, and every thread that has magazines (so a
//! cache being dropped can take its objects back from them).
//!
//! # Safety
//! - One spin lock, `REGISTRY`, guards the list of cores, the list of threads and the id
//!   table. It is taken before any cache lock, never after one (lock order: registry,
//!   then cache), and nothing allocates while holding it.
//! - A thread links its [`ThreadMagazines`] here when it first uses a magazine and
//!   unlinks them in its exit hook (a pthread-key destructor, or on Windows a fiber-local
//!   storage callback or, when the thread exits on another fiber, a TLS callback that runs
//!   before std frees the thread's `thread_local!` values: `crate::sys`), so every listed
//!   entry is the live magazines of a live thread of this process (its thread-local
//!   storage, or the block mapped for it: `crate::magazine::storage`).
//! - `fork` (Unix only): the `prepare` handler takes the registry lock and then every cache lock;
//!   `parent` and `child` release them. The child therefore starts with consistent
//!   caches (no thread was inside a locked section) and free locks, and can allocate.
//! - In the child, only the thread that called `fork` exists. The other threads'
//!   entries live in their thread-local storage, inside stacks that glibc's stack cache
//!   in the child reuses for new threads (zeroing their thread-local blocks) or unmaps,
//!   so the `child` handler drops them from the list, which then holds the forking
//!   thread alone (if it was listed), and nothing reads them again. Their magazines are
//!   abandoned (with the `initial-exec-tls` storage, so are their blocks, a few pages per
//!   parent thread): the free objects they held stay counted as out of their slabs and are
//!   never handed out in the child (at most two magazines per cache and parent thread;
//!   glibc leaves the other threads' tcache chunks in the child the same way). They
//!   could not be adopted safely anyway: a thread can be stopped by the fork anywhere in
//!   its lock-free magazine code, for instance in `free_slow` after its previous
//!   magazine went to the depot and before the slot forgot it, so that the slot and the
//!   depot name one chain; adopting it would free every object of the chain twice.
//! - The fork handlers (and the exit key) are installed before any lock of ours can be
//!   taken: when the first core is registered, and first thing when a heap builds its
//!   classes ([`install_hooks`]).
//! - Registration may allocate (glibc's `pthread_setspecific` for high keys, and
//!   `pthread_atfork`); it happens with no lock held and with the thread in state
//!   [`REGISTERING`], in which the caches bypass the magazines, or installing the hooks,
//!   which its allocations neither wait for nor register, so a reentrant allocation
//!   neither recurses into registration nor deadlocks.

use core::ffi::c_void;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use crate::handshake::{self, ThreadFlags};
use crate::magazine::{
    ACTIVE, INLINE_SLOTS, MAX_CACHE_IDS, Magazine, REGISTERING, RETIRED, ThreadMagazines,
    UNREGISTERED,
};
use crate::sync::{CachePadded, RawSpinLock};

/// The id of caches without magazines: an inline slot index that is never given out, so
/// its slot stays empty with capacity 0 in every thread and the fast paths fall through
/// to the slow paths without testing the id. It is also the fast index of caches whose
/// id is above the inline slots (their magazines are served by the slow paths).
pub(crate) const NO_ID: u32 = (INLINE_SLOTS - 1) as u32;

/// The type-erased, registry-visible head of every cache core.
///
/// The fields read by the fast paths (`fast_id`, `link_offset`) share no cache line with
/// the lock, which other threads write whenever they reach the depot or the slabs.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct CoreHeader {
    /// The cache id (index of the per-thread slot), or [`NO_ID`]. Set before the core is
    /// shared and fixed afterwards.
    pub(crate) id: u32,
    /// The index the inlined fast paths use: `id` if its slot is inline, else [`NO_ID`].
    pub(crate) fast_id: u32,
    /// Byte offset of the link word inside a free object.
    pub(crate) link_offset: usize,
    /// Objects per magazine now; grows when the lock is contended (see
    /// [`crate::cache`]). Threads pick it up at their next depot exchange.
    pub(crate) magazine_capacity: AtomicU32,
    /// Takes back the objects of a magazine (takes `lock` itself).
    pub(crate) flush: unsafe fn(NonNull<CoreHeader>, Magazine),
    /// Takes back the objects of a magazine taken from an idle thread, without counting
    /// an operation of the cache (takes `lock` itself).
    pub(crate) reclaim: unsafe fn(NonNull<CoreHeader>, Magazine),
    /// Next core in the registry (registry lock).
    next: AtomicPtr<CoreHeader>,
    /// Previous core in the registry (registry lock).
    prev: AtomicPtr<CoreHeader>,
    /// Guards the cache's slabs and depot; on a cache line of its own.
    pub(crate) lock: CachePadded<RawSpinLock>,
    /// Another lock the `fork` handlers take with `lock` (null: none): the lock of the
    /// large blocks its heap keeps, named by the heap's first class. Set under the
    /// registry lock ([`add_fork_companion`]).
    fork_companion: AtomicPtr<RawSpinLock>,
}

impl CoreHeader {
    /// A header not yet registered.
    pub(crate) const fn new(
        magazine_capacity: u32,
        link_offset: usize,
        flush: unsafe fn(NonNull<CoreHeader>, Magazine),
        reclaim: unsafe fn(NonNull<CoreHeader>, Magazine),
    ) -> Self {
        CoreHeader {
            id: NO_ID,
            fast_id: NO_ID,
            link_offset,
            magazine_capacity: AtomicU32::new(magazine_capacity),
            flush,
            reclaim,
            next: AtomicPtr::new(ptr::null_mut()),
            prev: AtomicPtr::new(ptr::null_mut()),
            lock: CachePadded::new(RawSpinLock::new()),
            fork_companion: AtomicPtr::new(ptr::null_mut()),
        }
    }
}

static REGISTRY: RawSpinLock = RawSpinLock::new();
static CORES: AtomicPtr<CoreHeader> = AtomicPtr::new(ptr::null_mut());
static THREADS: AtomicPtr<ThreadMagazines> = AtomicPtr::new(ptr::null_mut());
/// The core owning each cache id (null: free). In zeroed static memory, so the pages of
/// ids never used are never touched.
static ID_OWNERS: [AtomicPtr<CoreHeader>; MAX_CACHE_IDS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CACHE_IDS];
/// No id below this one is free (registry lock): where the search for a free id starts.
static FIRST_FREE_ID: AtomicUsize = AtomicUsize::new(0);
/// One past the highest id ever given out (registry lock; it never goes down). No
/// thread's slot at or above it has ever been written, so an exiting thread looks at
/// the slots below it only.
static IDS_GIVEN: AtomicUsize = AtomicUsize::new(0);

/// Blocks of thread magazines given back by exiting threads, for threads that register
/// (the `initial-exec-tls` storage, `crate::magazine::storage`): linked through `next`,
/// at most [`MAX_SPARE_BLOCKS`] (registry lock).
#[cfg(all(pagekeep_initial_exec_tls, not(miri)))]
static SPARE_BLOCKS: AtomicPtr<ThreadMagazines> = AtomicPtr::new(ptr::null_mut());
/// How many blocks [`SPARE_BLOCKS`] holds (registry lock).
#[cfg(all(pagekeep_initial_exec_tls, not(miri)))]
static SPARE_BLOCK_COUNT: AtomicUsize = AtomicUsize::new(0);
/// Enough for a program that keeps starting a few threads at a time (larson, a thread
/// pool that grows and shrinks) to map none; a few pages each.
#[cfg(all(pagekeep_initial_exec_tls, not(miri)))]
const MAX_SPARE_BLOCKS: usize = 16;

/// A spare block of thread magazines, if any ([`keep_spare_block`]).
#[cfg(all(pagekeep_initial_exec_tls, not(miri)))]
pub(crate) fn take_spare_block() -> Option<NonNull<ThreadMagazines>> {
    let _guard = REGISTRY.guard();
    let entry = NonNull::new(SPARE_BLOCKS.load(Ordering::Relaxed))?;
    // SAFETY: a spare block (mapped, referred to by nothing but the list); list links
    // are read and written under the registry lock.
    let next = unsafe { entry.as_ref() }.next.load(Ordering::Relaxed);
    SPARE_BLOCKS.store(next, Ordering::Relaxed);
    SPARE_BLOCK_COUNT.fetch_sub(1, Ordering::Relaxed);
    Some(entry)
}

/// Keeps `entry` for [`take_spare_block`], or returns it if there are enough spare
/// blocks already (the caller then unmaps it).
///
/// # Safety
/// - `entry` is a block of thread magazines that nothing refers to: not listed, no exit
///   hook's value, no thread's word.
#[cfg(all(pagekeep_initial_exec_tls, not(miri)))]
pub(crate) unsafe fn keep_spare_block(
    entry: NonNull<ThreadMagazines>,
) -> Option<NonNull<ThreadMagazines>> {
    let _guard = REGISTRY.guard();
    if SPARE_BLOCK_COUNT.load(Ordering::Relaxed) >= MAX_SPARE_BLOCKS {
        return Some(entry);
    }
    // SAFETY: nothing else refers to the block (caller).
    unsafe { entry.as_ref() }
        .next
        .store(SPARE_BLOCKS.load(Ordering::Relaxed), Ordering::Relaxed);
    SPARE_BLOCKS.store(entry.as_ptr(), Ordering::Relaxed);
    SPARE_BLOCK_COUNT.fetch_add(1, Ordering::Relaxed);
    None
}

/// Makes the `fork` handlers take `companion` with the lock of `core` (and release it
/// with it).
///
/// # Safety
/// - `core` is registered, and `companion` lives at its address until `core` is
///   unregistered.
pub(crate) unsafe fn add_fork_companion(core: &CoreHeader, companion: &RawSpinLock) {
    let _guard = REGISTRY.guard();
    core.fork_companion
        .store(ptr::from_ref(companion).cast_mut(), Ordering::Relaxed);
}

/// The companion lock of a registered core (registry lock held), if it has one.
#[cfg(all(unix, not(miri)))]
fn fork_companion(core: &CoreHeader) -> Option<&RawSpinLock> {
    // SAFETY: a companion lives as long as its core is registered (`add_fork_companion`).
    NonNull::new(core.fork_companion.load(Ordering::Relaxed)).map(|lock| unsafe { lock.as_ref() })
}

/// Links a core into the registry and gives it a cache id if one is free (else
/// [`NO_ID`]); `magazines` false asks for no id.
///
/// # Safety
/// - `core` points to a header that stays at its address until
///   [`unregister_core`] is called for it, and is not yet registered.
/// - Nobody else accesses `(*core).id` until this returns.
pub(crate) unsafe fn register_core(core: NonNull<CoreHeader>, magazines: bool) {
    // Before the core's lock, or the registry's, can be taken (see `install_hooks`).
    let _ = install_hooks();
    let _guard = REGISTRY.guard();
    let mut id = NO_ID;
    if magazines {
        let start = FIRST_FREE_ID.load(Ordering::Relaxed);
        if let Some(free) = (start..MAX_CACHE_IDS).find(|&candidate| {
            candidate != NO_ID as usize && ID_OWNERS[candidate].load(Ordering::Relaxed).is_null()
        }) {
            ID_OWNERS[free].store(core.as_ptr(), Ordering::Relaxed);
            FIRST_FREE_ID.store(free + 1, Ordering::Relaxed);
            IDS_GIVEN.fetch_max(free + 1, Ordering::Relaxed);
            id = free as u32;
        } else {
            FIRST_FREE_ID.store(MAX_CACHE_IDS, Ordering::Relaxed);
        }
    }
    // SAFETY: the caller gives us exclusive access to the header until we return.
    let header = unsafe { &mut *core.as_ptr() };
    header.id = id;
    header.fast_id = if (id as usize) < INLINE_SLOTS {
        id
    } else {
        NO_ID
    };
    let head = CORES.load(Ordering::Relaxed);
    header.next.store(head, Ordering::Relaxed);
    header.prev.store(ptr::null_mut(), Ordering::Relaxed);
    if let Some(head) = NonNull::new(head) {
        // SAFETY: listed cores are live (registered and not yet unregistered); we hold
        // the registry lock that guards the links.
        unsafe { head.as_ref() }
            .prev
            .store(core.as_ptr(), Ordering::Relaxed);
    }
    CORES.store(core.as_ptr(), Ordering::Relaxed);
}

/// Unlinks a core and takes back, into it, the objects that every thread's magazines
/// hold for it. Afterwards no thread holds objects of the cache in a magazine.
///
/// # Safety
/// - `core` was registered with [`register_core`] and is not used concurrently by any
///   other thread (its owner is dropping it).
pub(crate) unsafe fn unregister_core(core: NonNull<CoreHeader>) {
    let _guard = REGISTRY.guard();
    // SAFETY: registered cores are live until unregistered (caller's obligation).
    let header = unsafe { core.as_ref() };
    if header.id != NO_ID {
        let mut thread = THREADS.load(Ordering::Relaxed);
        while let Some(entry) = NonNull::new(thread) {
            // SAFETY: listed threads are live thread-local storage (module docs).
            let magazines = unsafe { entry.as_ref() };
            if let Some(slot) = magazines.existing_slot(header.id) {
                let (loaded, previous) = slot.take_all();
                for magazine in [loaded, previous] {
                    if magazine.count > 0 {
                        // SAFETY: the magazine holds free objects of this very cache,
                        // taken out of the slot so nobody else refers to them.
                        unsafe { (header.flush)(core, magazine) };
                    }
                }
            }
            thread = magazines.next.load(Ordering::Relaxed);
        }
        ID_OWNERS[header.id as usize].store(ptr::null_mut(), Ordering::Relaxed);
        FIRST_FREE_ID.fetch_min(header.id as usize, Ordering::Relaxed);
    }
    let next = header.next.load(Ordering::Relaxed);
    let prev = header.prev.load(Ordering::Relaxed);
    if let Some(next) = NonNull::new(next) {
        // SAFETY: a listed core, links guarded by the registry lock we hold.
        unsafe { next.as_ref() }.prev.store(prev, Ordering::Relaxed);
    }
    match NonNull::new(prev) {
        // SAFETY: as above.
        Some(prev) => unsafe { prev.as_ref() }.next.store(next, Ordering::Relaxed),
        None => CORES.store(next, Ordering::Relaxed),
    }
}

/// The most magazines one round of [`reclaim_threads`] takes (on the stack of the pass)
/// before it gives them back and goes on.
const RECLAIM_BATCH: usize = 128;

/// The most rounds a decay pass makes over idle threads (so at most 2,048 magazines):
/// the pass runs inside some thread's allocation, whose latency it adds to; what is left
/// goes back in the next passes. `trim` makes as many rounds as it takes.
const IDLE_ROUNDS: usize = 16;

/// When [`reclaim_threads`] last ran for idle threads, in nanoseconds after [`RECLAIM_EPOCH`]
/// (registry lock).
static RECLAIM_LAST: AtomicU64 = AtomicU64::new(0);
static RECLAIM_EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Which threads' magazines [`reclaim_threads`] takes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reclaim {
    /// Those of threads that made no magazine operation since the previous such call,
    /// made at the given time; at most once per [`DECAY_INTERVAL`](crate::DECAY_INTERVAL)
    /// (a call sooner does nothing). For the decay pass.
    Idle(Instant),
    /// Those of every thread not inside an operation at the moment. For `trim`.
    Every,
}

/// With the `reclaim-idle-threads` feature (else it does nothing), takes back the
/// magazines of other threads (see [`Reclaim`]): the objects go back to
/// their caches' slabs, so the decay pass that follows (or `trim`) can release them. A
/// thread that holds magazines and then blocks, sleeps or waits for work would otherwise
/// keep them until it exits.
///
/// It works in rounds ([`reclaim_round`]). In each, the listed threads not yet examined
/// (but the caller) are flagged ([`crate::handshake`]), one asymmetric fence
/// ([`crate::asymmetric_fence::heavy`]) orders that before reading each thread's in-use
/// mark, and the threads found out of their magazines are examined in order. Under
/// [`Reclaim::Idle`], one whose [`fingerprint`](ThreadMagazines::fingerprint) equals the
/// one recorded at the previous call is idle. The magazines of the threads chosen are
/// taken until [`RECLAIM_BATCH`] would be exceeded; each flag is cleared as soon as its
/// thread is done, all of them before any lock is taken (a flagged thread may be
/// waiting with a cache lock held); then the magazines go back, and the next round
/// starts at the thread where the batch filled. So every thread is examined about once,
/// and a round costs one `membarrier` system call; `Idle` makes at most [`IDLE_ROUNDS`]
/// rounds, `Every` as many as it takes. Does nothing if the fence is not available here,
/// or, for `Idle`, if the registry lock is held.
pub(crate) fn reclaim_threads(which: Reclaim) {
    if cfg!(not(feature = "reclaim-idle-threads")) {
        // Without the handshake on the fast paths, other threads' slots are theirs.
        return;
    }
    let (_guard, most_rounds) = match which {
        Reclaim::Idle(now) => {
            let epoch = *RECLAIM_EPOCH.get_or_init(|| now);
            let Some(guard) = REGISTRY.try_guard() else {
                return;
            };
            let at =
                u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX);
            let last = RECLAIM_LAST.load(Ordering::Relaxed);
            let interval = u64::try_from(crate::DECAY_INTERVAL.as_nanos()).unwrap_or(u64::MAX);
            if last != 0 && at.saturating_sub(last) < interval {
                return;
            }
            RECLAIM_LAST.store(at.max(1), Ordering::Relaxed);
            (guard, IDLE_ROUNDS)
        }
        Reclaim::Every => (REGISTRY.guard(), usize::MAX),
    };
    let mut from = THREADS.load(Ordering::Relaxed);
    for _ in 0..most_rounds {
        match reclaim_round(which, from) {
            Some(resume) => from = resume.as_ptr(),
            None => break,
        }
    }
}

/// Returns once no [`reclaim_threads`] call is in progress: the magazines one took are
/// back in their caches.
#[cfg(feature = "reclaim-idle-threads")]
pub(crate) fn wait_for_reclaims() {
    drop(REGISTRY.guard());
}

/// One round of [`reclaim_threads`], with the registry lock held, over the listed
/// threads from `from` on (the list cannot change under the lock): flags them, fences
/// once, examines them in order and takes magazines until [`RECLAIM_BATCH`] would be
/// exceeded, clears every flag, then gives the magazines back. Returns the thread to
/// resume from (the one whose magazines did not all fit), or `None` when the round
/// reached the end of the list.
fn reclaim_round(which: Reclaim, from: *mut ThreadMagazines) -> Option<NonNull<ThreadMagazines>> {
    let own = crate::magazine::own_magazines();
    let each_from = |start: *mut ThreadMagazines, f: &mut dyn FnMut(&ThreadMagazines) -> bool| {
        let mut thread = start;
        while let Some(entry) = NonNull::new(thread) {
            // SAFETY: listed threads are live thread-local storage (module docs).
            let magazines = unsafe { entry.as_ref() };
            thread = magazines.next.load(Ordering::Relaxed);
            if !ptr::eq(magazines, own) && !f(magazines) {
                return;
            }
        }
    };
    each_from(from, &mut |magazines| {
        handshake::flag(&magazines.handshake);
        true
    });
    let fenced = <ThreadFlags as handshake::Flags>::heavy_fence();
    let mut taken = [(0u32, Magazine::EMPTY); RECLAIM_BATCH];
    let mut count = 0;
    let mut resume = None;
    each_from(from, &mut |magazines| {
        if resume.is_some() {
            // Past the point where the batch filled: let the thread go untouched.
            handshake::unflag(&magazines.handshake);
            return true;
        }
        if fenced && handshake::owner_out(&magazines.handshake) {
            let chosen = match which {
                Reclaim::Idle(_) => {
                    magazines.fingerprint() == magazines.idle_mark.load(Ordering::Relaxed)
                }
                Reclaim::Every => true,
            };
            let mut full = false;
            if chosen {
                magazines.for_each_slot(|id, slot| {
                    let (loaded, previous) = (slot.loaded(), slot.previous());
                    let wanted = usize::from(loaded.count > 0) + usize::from(previous.count > 0);
                    if wanted == 0 || full {
                        return;
                    }
                    if count + wanted > RECLAIM_BATCH {
                        full = true;
                        return;
                    }
                    let capacity = slot.capacity.load(Ordering::Relaxed);
                    slot.take_all();
                    slot.capacity.store(capacity, Ordering::Relaxed);
                    for magazine in [loaded, previous] {
                        if magazine.count > 0 {
                            taken[count] = (id, magazine);
                            count += 1;
                        }
                    }
                });
            }
            if matches!(which, Reclaim::Idle(_)) {
                // What was taken changed the fingerprint: an idle thread resumed in the
                // next round still counts as idle.
                magazines
                    .idle_mark
                    .store(magazines.fingerprint(), Ordering::Relaxed);
            }
            if full {
                resume = Some(NonNull::from(magazines));
            }
        }
        handshake::unflag(&magazines.handshake);
        true
    });
    for &(id, magazine) in &taken[..count] {
        // A slot holds objects only of a registered cache (dropping a cache sweeps its
        // slots under this lock).
        if let Some(owner) = NonNull::new(ID_OWNERS[id as usize].load(Ordering::Relaxed)) {
            // SAFETY: id owners stay live while registered (registry lock held); the
            // magazine holds free objects of that cache, now out of every slot.
            unsafe { (owner.as_ref().reclaim)(owner, magazine) };
        }
    }
    resume
}

/// The process-wide hooks (the exit key and the fork handlers): their state in the low
/// byte ([`HOOKS_NONE`], [`HOOKS_INSTALLING`], [`HOOKS_INSTALLED`], [`HOOKS_FAILED`]),
/// and above it the id of the process whose thread set it (see [`install_hooks`]).
static HOOKS: AtomicU64 = AtomicU64::new(HOOKS_NONE);
const HOOKS_NONE: u64 = 0;
const HOOKS_INSTALLING: u64 = 1;
const HOOKS_INSTALLED: u64 = 2;
const HOOKS_FAILED: u64 = 3;
/// The state bits of [`HOOKS`].
const HOOKS_STATE: u64 = 0xff;
/// The pthread key whose destructor flushes an exiting thread's magazines.
static EXIT_KEY: AtomicUsize = AtomicUsize::new(0);
/// Threads registered so far (statistics).
static THREADS_SEEN: AtomicU32 = AtomicU32::new(0);

std::thread_local! {
    /// Whether this thread is installing the hooks. Installing allocates
    /// (`pthread_atfork`), through this very heap when it serves C's `malloc`: such an
    /// allocation must not wait for the installation it is part of. Const-initialised,
    /// no destructor: reading it allocates nothing.
    static INSTALLING_HOOKS: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// What [`install_hooks`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hooks {
    Installed,
    /// The platform refused them (no key left): threads work without magazines.
    Failed,
    /// The calling thread is installing them, and this is an allocation of that.
    InstallingHere,
}

/// Creates the exit key and the fork handlers, once per process.
///
/// Called before the first lock of any cache can be taken (when a core is registered,
/// and first thing when a heap builds its classes): a thread that took a lock of ours
/// while another forked before the handlers existed would leave it held in the child for
/// ever. What remains is the installation itself: a child forked while a thread of its
/// parent was installing (the state says so, with that process's id) finds no thread
/// there to finish, and installs the hooks again itself (a key the parent's thread had
/// created is lost).
///
/// Limits: a process id names a process only within its PID namespace, so a child that
/// has its parent's id there (the parent was the init of one namespace and the child is
/// that of a new one) still waits for a parent thread that was installing; and a thread
/// that finds another installing waits for it, so a cache first made by a `fork`
/// handler while another thread's installation waits for that fork to end would wait
/// for ever.
pub(crate) fn install_hooks() -> Hooks {
    let mut spins = 0;
    loop {
        let word = HOOKS.load(Ordering::Acquire);
        match word & HOOKS_STATE {
            HOOKS_INSTALLED => return Hooks::Installed,
            HOOKS_FAILED => return Hooks::Failed,
            _ => {}
        }
        if INSTALLING_HOOKS.with(core::cell::Cell::get) {
            return Hooks::InstallingHere;
        }
        let process = u64::from(std::process::id());
        // Not installing, or by a thread of the process this one was forked from.
        let claimable = word == HOOKS_NONE || word >> 8 != process;
        if claimable
            && HOOKS
                .compare_exchange(
                    word,
                    process << 8 | HOOKS_INSTALLING,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            INSTALLING_HOOKS.with(|installing| installing.set(true));
            let installed = install_hooks_now();
            INSTALLING_HOOKS.with(|installing| installing.set(false));
            let state = if installed {
                HOOKS_INSTALLED
            } else {
                HOOKS_FAILED
            };
            HOOKS.store(process << 8 | state, Ordering::Release);
            return if installed {
                Hooks::Installed
            } else {
                Hooks::Failed
            };
        }
        crate::sync::back_off(spins);
        spins = spins.saturating_add(1);
    }
}

/// The work of [`install_hooks`], by the thread that claimed it. Whether the exit key
/// exists (the fork handlers are best effort).
fn install_hooks_now() -> bool {
    let Some(key) = crate::sys::create_exit_key() else {
        return false;
    };
    EXIT_KEY.store(key, Ordering::Relaxed);
    // Registering may allocate, which is fine: no lock of ours is held, and an
    // allocation of this thread's does not wait for the installation. (No `fork` on
    // Windows, nor under miri.)
    #[cfg(all(unix, not(miri)))]
    {
        #[cfg(all(test, target_os = "linux"))]
        fork_window_tests::pause_while_installing();
        let _ = crate::sys::install_fork_handlers(fork_prepare, fork_parent, fork_child);
    }
    true
}

/// Gives the calling thread its magazines (`current` are its magazines now): registers
/// the exit hook and links the thread's magazines into the registry. Leaves their state
/// [`ACTIVE`] on success; if the hooks cannot be installed, the thread works without
/// magazines. (With the `initial-exec-tls` storage, the magazines registered are a block
/// mapped here, and `current` a stand-in: see `crate::magazine::storage`.)
#[cold]
#[inline(never)]
pub(crate) fn activate(current: &ThreadMagazines) {
    if current.state.load(Ordering::Relaxed) != UNREGISTERED {
        return;
    }
    let hooks = install_hooks();
    if hooks == Hooks::InstallingHere {
        // An allocation of the installation: served without magazines, and the thread
        // registers at a later slow path.
        return;
    }
    let Some(entry) = crate::magazine::storage::to_register(current) else {
        return;
    };
    // SAFETY: the calling thread's magazines, live until its exit hook gives them back,
    // which cannot run before this function returns.
    let magazines = unsafe { entry.as_ref() };
    magazines.state.store(REGISTERING, Ordering::Relaxed);
    if hooks == Hooks::Failed {
        magazines.state.store(RETIRED, Ordering::Relaxed);
        // SAFETY: from `to_register`, neither listed nor an exit hook's value; the
        // reentrant allocations of `install_hooks` have returned.
        unsafe { crate::magazine::storage::retire_unregistered(entry) };
        return;
    }
    let key = EXIT_KEY.load(Ordering::Relaxed);
    let entry = entry.as_ptr();
    // Before the hook can run: it acts only on the thread that owns the magazines.
    #[cfg(windows)]
    magazines
        .owner_thread
        .store(crate::sys::current_thread_id(), Ordering::Relaxed);
    // The key was created by `install_hooks`; the value is non-null, so the exit hook
    // runs when this thread exits. A thread that is a fiber sets only the thread-local
    // value: a fiber-local one would belong to the running fiber, whose callback runs
    // when that fiber is deleted or converted back, not when the thread exits.
    #[cfg(windows)]
    let set = if crate::sys::running_on_a_fiber() {
        crate::sys::set_thread_exit_value(entry.cast::<c_void>())
    } else {
        crate::sys::set_exit_value(key, entry.cast::<c_void>())
    };
    #[cfg(not(windows))]
    let set = crate::sys::set_exit_value(key, entry.cast::<c_void>());
    if !set {
        magazines.state.store(RETIRED, Ordering::Relaxed);
        // SAFETY: as above (the value was not set).
        unsafe { crate::magazine::storage::retire_unregistered(NonNull::from(magazines)) };
        return;
    }
    {
        let _guard = REGISTRY.guard();
        let head = THREADS.load(Ordering::Relaxed);
        magazines.next.store(head, Ordering::Relaxed);
        magazines.prev.store(ptr::null_mut(), Ordering::Relaxed);
        if let Some(head) = NonNull::new(head) {
            // SAFETY: a listed, live thread entry; links guarded by the registry lock.
            unsafe { head.as_ref() }
                .prev
                .store(entry, Ordering::Relaxed);
        }
        THREADS.store(entry, Ordering::Relaxed);
    }
    THREADS_SEEN.fetch_add(1, Ordering::Relaxed);
    magazines.state.store(ACTIVE, Ordering::Relaxed);
}

/// The exit hook: returns every magazine of the exiting thread to its cache's depot and
/// unlinks the thread. Called by the platform (`crate::sys`) with the value `activate`
/// set, when the thread exits.
///
/// On Windows the value lives in fiber-local storage, whose callback also runs when a
/// fiber is deleted (`DeleteFiber`), on whatever thread deletes it, and when a thread
/// that became a fiber converts back or exits. The value is the magazines of the thread
/// on which the fiber first allocated: the hook does nothing unless they are the calling
/// thread's own (by address, so a pointer to another thread's magazines, live or gone,
/// is never read) and that thread is their owner (`GetCurrentThreadId`). So deleting a
/// fiber on another thread never retires a live thread's magazines. A thread that is
/// already a fiber when it first needs magazines sets no fiber-local value ([`activate`]),
/// so that value is only ever a plain thread's. The value also lives in thread-local
/// storage, read by a TLS callback on every thread exit (`crate::sys`): a thread that
/// registered, then became a fiber (`ConvertThreadToFiber`) and exits while another of
/// its fibers runs, which gets no fiber-local callback (the value is its first fiber's),
/// and a thread that registered as a fiber run the hook from there. Whichever comes
/// first does the work; the other finds the magazines retired and returns.
pub(crate) fn thread_exit(data: *mut c_void) {
    let Some(entry) = NonNull::new(data.cast::<ThreadMagazines>()) else {
        return;
    };
    #[cfg(windows)]
    if !crate::magazine::storage::is_current_thread(entry.as_ptr()) {
        return;
    }
    // SAFETY: the value was set by `activate` to this thread's own `ThreadMagazines`
    // (on Windows, checked just above), which stays valid while the thread's
    // destructors run.
    let magazines = unsafe { entry.as_ref() };
    #[cfg(windows)]
    if magazines.owner_thread.load(Ordering::Relaxed) != crate::sys::current_thread_id()
        || magazines.state.load(Ordering::Relaxed) != ACTIVE
    {
        return;
    }
    magazines.state.store(RETIRED, Ordering::Relaxed);
    let guard = REGISTRY.guard();
    // Only the slots of ids ever given out can have been used, and of those a thread
    // uses few: the others are clear, with nothing to take.
    let ids_given = IDS_GIVEN.load(Ordering::Relaxed);
    magazines.for_each_slot_below(ids_given, |id, slot| {
        if slot.is_clear() {
            return;
        }
        let (loaded, previous) = slot.take_all();
        let Some(owner) = NonNull::new(ID_OWNERS[id as usize].load(Ordering::Relaxed)) else {
            return;
        };
        for magazine in [loaded, previous] {
            if magazine.count > 0 {
                // SAFETY: id owners stay live while registered (registry lock held); the
                // magazine holds free objects of that cache, now out of the slot.
                unsafe { (owner.as_ref().flush)(owner, magazine) };
            }
        }
    });
    let next = magazines.next.load(Ordering::Relaxed);
    let prev = magazines.prev.load(Ordering::Relaxed);
    if let Some(next) = NonNull::new(next) {
        // SAFETY: listed, live thread entry; registry lock held.
        unsafe { next.as_ref() }.prev.store(prev, Ordering::Relaxed);
    }
    match NonNull::new(prev) {
        // SAFETY: as above.
        Some(prev) => unsafe { prev.as_ref() }.next.store(next, Ordering::Relaxed),
        None => THREADS.store(next, Ordering::Relaxed),
    }
    drop(guard);
    // The starved requests of async heaps this exit gave memory back to are woken now,
    // outside the registry's lock (a waker is user code).
    crate::async_heap::announce_deferred();
    // SAFETY: every slot was emptied above, the thread is off the registry's list (no
    // sweep reaches it) and retired (it maps no new chunk); it used no id at or above
    // `ids_given`.
    unsafe { magazines.unmap_chunks(ids_given) };
    // SAFETY: the thread's registered magazines, retired, emptied, unlisted; the hook's
    // value is consumed and `magazines` is not used again.
    unsafe { crate::magazine::storage::release(entry) };
}

/// Calls `f` on every registered core; the registry lock must be held.
#[cfg(all(unix, not(miri)))]
fn for_each_core(mut f: impl FnMut(&CoreHeader)) {
    let mut core = CORES.load(Ordering::Relaxed);
    while let Some(entry) = NonNull::new(core) {
        // SAFETY: registered cores are live; the caller holds the registry lock.
        let header = unsafe { entry.as_ref() };
        f(header);
        core = header.next.load(Ordering::Relaxed);
    }
}

/// Releases the locks of `core` that `fork_prepare` took, in the thread that took them
/// (in the parent) or the child's only thread.
#[cfg(all(unix, not(miri)))]
fn release_after_fork(core: &CoreHeader) {
    // SAFETY: called by the `parent` and `child` handlers, in the thread that ran
    // `fork_prepare`, which took and marked these locks (a lock it did not mark is left
    // alone).
    unsafe {
        if let Some(companion) = fork_companion(core) {
            companion.release_after_fork();
        }
        core.lock.release_after_fork();
    }
}

#[cfg(all(unix, not(miri)))]
extern "C" fn fork_prepare() {
    // Not re-entered: `FORKING` is clear until the end of this handler.
    REGISTRY.lock();
    // SAFETY: taken just above, for the fork.
    unsafe { REGISTRY.mark_held_for_fork() };
    for_each_core(|core| {
        core.lock.lock();
        // SAFETY: as above.
        unsafe { core.lock.mark_held_for_fork() };
        if let Some(companion) = fork_companion(core) {
            companion.lock();
            // SAFETY: as above.
            unsafe { companion.mark_held_for_fork() };
        }
    });
    // The prepare handlers registered before ours run next, and may allocate.
    crate::sync::set_forking(true);
}

#[cfg(all(unix, not(miri)))]
extern "C" fn fork_parent() {
    crate::sync::set_forking(false);
    for_each_core(release_after_fork);
    // SAFETY: as above.
    unsafe { REGISTRY.release_after_fork() };
}

#[cfg(all(unix, not(miri)))]
extern "C" fn fork_child() {
    // The registry lock is held (by this thread, from `fork_prepare`): forget the
    // parent's other threads (module docs), keeping this thread's entry if it is listed.
    // Its state is ACTIVE exactly while it is listed (set after linking, cleared before
    // unlinking, both by this thread, which is here rather than in either).
    let own = crate::magazine::with_magazines(|magazines| {
        (magazines.state.load(Ordering::Relaxed) == ACTIVE)
            .then(|| ptr::from_ref(magazines).cast_mut())
    });
    if let Some(entry) = NonNull::new(own.unwrap_or(ptr::null_mut())) {
        // SAFETY: this thread's own, live thread-local entry; registry lock held.
        let magazines = unsafe { entry.as_ref() };
        magazines.next.store(ptr::null_mut(), Ordering::Relaxed);
        magazines.prev.store(ptr::null_mut(), Ordering::Relaxed);
    }
    THREADS.store(own.unwrap_or(ptr::null_mut()), Ordering::Relaxed);
    // A parent thread may have been between `pthread_atfork` (which these handlers prove
    // succeeded) and the end of `install_hooks`: its work is done (the key was created
    // first), so the child's threads need not install them again.
    if HOOKS.load(Ordering::Relaxed) & HOOKS_STATE == HOOKS_INSTALLING {
        HOOKS.store(
            u64::from(std::process::id()) << 8 | HOOKS_INSTALLED,
            Ordering::Release,
        );
    }
    crate::sync::set_forking(false);
    // The child's only thread is the one that ran `fork_prepare` in the parent and so
    // holds every lock it marked.
    for_each_core(release_after_fork);
    // SAFETY: as above.
    unsafe { REGISTRY.release_after_fork() };
}

/// How many threads have registered magazines since the process started.
pub(crate) fn threads_seen() -> u32 {
    THREADS_SEEN.load(Ordering::Relaxed)
}

#[cfg(all(test, windows, not(miri)))]
mod windows_tests {
    use core::ffi::c_void;
    use std::sync::mpsc;
    use std::thread;

    use windows_sys::Win32::System::Threading::{
        ConvertFiberToThread, ConvertThreadToFiber, CreateFiber, DeleteFiber, SwitchToFiber,
    };

    use super::*;
    use crate::SlabCache;
    use crate::magazine::with_magazines;

    /// Whether `entry` is on the registry's list of threads.
    fn listed(entry: usize) -> bool {
        let _guard = REGISTRY.guard();
        let mut thread = THREADS.load(Ordering::Relaxed);
        while let Some(listed) = NonNull::new(thread) {
            if listed.addr().get() == entry {
                return true;
            }
            // SAFETY: listed entries are live; the registry lock is held.
            thread = unsafe { listed.as_ref() }.next.load(Ordering::Relaxed);
        }
        false
    }

    /// The calling thread's magazines: address and state.
    fn own_magazines() -> (usize, u8) {
        with_magazines(|magazines| {
            (
                ptr::from_ref(magazines).addr(),
                magazines.state.load(Ordering::Relaxed),
            )
        })
    }

    /// What the fiber needs: the fiber to switch back to and the cache to allocate from.
    struct FiberStart {
        back: *mut c_void,
        cache: *const SlabCache,
    }

    /// Allocates, then switches back for good (it is deleted, never resumed).
    unsafe extern "system" fn allocate_on_a_fiber(start: *mut c_void) {
        // SAFETY: the creator passes a `FiberStart` that outlives the fiber's run.
        let start = unsafe { &*start.cast::<FiberStart>() };
        // SAFETY: the cache outlives the fiber's run (the creator waits for it).
        let cache = unsafe { &*start.cache };
        let object = cache.alloc();
        // SAFETY: allocated just above from this cache.
        unsafe { cache.free(object) };
        // SAFETY: `back` is the creating thread's fiber, not running.
        unsafe { SwitchToFiber(start.back) };
        unreachable!("the fiber is deleted, never resumed");
    }

    /// Converts the calling thread to a fiber, then runs a new fiber that allocates from
    /// `cache` and switches back for good; returns that fiber (never to be resumed).
    fn become_a_fiber_and_allocate_on_another(cache: &SlabCache) -> *mut c_void {
        // SAFETY: the thread is not a fiber yet (callers).
        let main_fiber = unsafe { ConvertThreadToFiber(ptr::null()) };
        assert!(!main_fiber.is_null());
        let mut start = FiberStart {
            back: main_fiber,
            cache,
        };
        // SAFETY: the routine never returns; `start` outlives its run, which ends
        // before the switch below returns.
        let fiber = unsafe {
            CreateFiber(
                0,
                Some(allocate_on_a_fiber),
                ptr::from_mut(&mut start).cast(),
            )
        };
        assert!(!fiber.is_null());
        // SAFETY: a fresh fiber, not running; we are a fiber.
        unsafe { SwitchToFiber(fiber) };
        fiber
    }

    /// A thread-local pointer handed to another thread (only compared there, or passed
    /// to the hook, which must not read it there).
    struct Sent(*mut c_void);
    // SAFETY: the pointee is only read by the thread that owns it.
    unsafe impl Send for Sent {}

    /// The fiber-local callback runs on fiber deletion, possibly on another thread: with
    /// a live thread's magazines it must leave them alone. Then that thread becomes a
    /// fiber, one of its fibers is deleted on another thread, and its exit still returns
    /// its magazines.
    #[test]
    fn the_hook_on_another_thread_keeps_the_owners_magazines() {
        let cache = SlabCache::new(64, 8).unwrap();
        let cache = &cache;
        let (sent_tx, sent_rx) = mpsc::channel::<(Sent, usize)>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        thread::scope(|scope| {
            let owner = scope.spawn(move || {
                let object = cache.alloc();
                // SAFETY: allocated just above from this cache.
                unsafe { cache.free(object) };
                let (entry, state) = own_magazines();
                assert_eq!(state, ACTIVE);
                assert!(listed(entry));
                let pointer =
                    with_magazines(|magazines| ptr::from_ref(magazines).cast_mut().cast());
                let fiber = become_a_fiber_and_allocate_on_another(cache);
                sent_tx.send((Sent(pointer), fiber.addr())).unwrap();
                done_rx.recv().unwrap();
                // Still this thread's, still listed, still working.
                assert_eq!(
                    own_magazines(),
                    (entry, ACTIVE),
                    "retired by another thread"
                );
                assert!(listed(entry), "unlinked by another thread");
                for _ in 0..1000 {
                    let object = cache.alloc();
                    // SAFETY: allocated just above from this cache.
                    unsafe { cache.free(object) };
                }
                // SAFETY: the thread was converted above.
                assert_ne!(unsafe { ConvertFiberToThread() }, 0);
                entry
            });
            let (pointer, fiber) = sent_rx.recv().unwrap();
            // What the callback does when the system deletes, on this thread, a fiber
            // whose value is the owner's magazines.
            thread_exit(pointer.0);
            // SAFETY: the owner's fiber, not running (it switched away for good).
            unsafe { DeleteFiber(ptr::without_provenance_mut(fiber)) };
            done_tx.send(()).unwrap();
            let entry = owner.join().unwrap();
            assert!(!listed(entry), "the owner's exit hook did not run");
        });
    }

    /// A thread that is a fiber before its first allocation gets magazines, registered
    /// through thread-local storage alone: deleting the fiber it registered on (on
    /// another thread) leaves them alone, and its exit returns them.
    #[test]
    fn a_thread_that_allocates_first_on_a_fiber_gets_magazines_until_it_exits() {
        let cache = SlabCache::new(64, 8).unwrap();
        let cache = &cache;
        let (fiber_tx, fiber_rx) = mpsc::channel::<usize>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        thread::scope(|scope| {
            let owner = scope.spawn(move || {
                let fiber = become_a_fiber_and_allocate_on_another(cache);
                let (entry, state) = own_magazines();
                assert_eq!(state, ACTIVE, "no magazines for a thread that is a fiber");
                assert!(listed(entry));
                fiber_tx.send(fiber.addr()).unwrap();
                done_rx.recv().unwrap();
                assert_eq!(
                    own_magazines(),
                    (entry, ACTIVE),
                    "retired when its fiber was deleted"
                );
                for _ in 0..1000 {
                    let object = cache.alloc();
                    // SAFETY: allocated just above from this cache.
                    unsafe { cache.free(object) };
                }
                // SAFETY: the thread was converted above.
                assert_ne!(unsafe { ConvertFiberToThread() }, 0);
                assert_eq!(
                    own_magazines(),
                    (entry, ACTIVE),
                    "retired when it converted back"
                );
                entry
            });
            let fiber = fiber_rx.recv().unwrap();
            // SAFETY: the owner's fiber, not running (it switched away for good).
            unsafe { DeleteFiber(ptr::without_provenance_mut(fiber)) };
            done_tx.send(()).unwrap();
            let entry = owner.join().unwrap();
            assert!(!listed(entry), "the owner's exit hook did not run");
        });
        assert_eq!(
            cache.stats().objects_live,
            0,
            "the thread's magazines were not returned"
        );
    }

    /// What a thread that exits on a fiber reports back: its magazines' address and state
    /// once registered, and the cache to allocate from.
    struct ExitOnAFiber {
        cache: *const SlabCache,
        entry: usize,
        state: u8,
    }

    /// A fiber that ends its thread (`ExitThread`) while the thread's first fiber waits.
    unsafe extern "system" fn exit_the_thread(_: *mut c_void) {
        // SAFETY: no preconditions; ends the calling thread, whose other fiber holds no
        // state that needs dropping (`register_then_exit_on_a_fiber`).
        unsafe { windows_sys::Win32::System::Threading::ExitThread(0) };
    }

    /// A raw thread's routine: registers magazines with an allocation, becomes a fiber and
    /// exits on a second one.
    unsafe extern "system" fn register_then_exit_on_a_fiber(report: *mut c_void) -> u32 {
        // SAFETY: the creator passes an `ExitOnAFiber` that outlives this thread, and
        // reads it only after the thread has exited.
        let report = unsafe { &mut *report.cast::<ExitOnAFiber>() };
        // SAFETY: the cache outlives this thread (the creator waits for its exit).
        let cache = unsafe { &*report.cache };
        let object = cache.alloc();
        // SAFETY: allocated just above from this cache.
        unsafe { cache.free(object) };
        (report.entry, report.state) = own_magazines();
        // SAFETY: the thread is not a fiber yet.
        let main_fiber = unsafe { ConvertThreadToFiber(ptr::null()) };
        if !main_fiber.is_null() {
            // SAFETY: the routine never returns (it ends the thread).
            let fiber = unsafe { CreateFiber(0, Some(exit_the_thread), ptr::null()) };
            if !fiber.is_null() {
                // SAFETY: a fresh fiber, not running; we are a fiber.
                unsafe { SwitchToFiber(fiber) };
            }
        }
        // Only if a fiber could not be made: the creator's checks fail.
        report.state = UNREGISTERED;
        0
    }

    /// A thread that registered, became a fiber and exits while another of its fibers
    /// runs: the fiber-local callback does not run (the value is its first fiber's), but
    /// the TLS callback does, so its magazines go back to their cache and its entry leaves
    /// the registry's list before its thread-local memory is freed (a later walk of the
    /// list, such as dropping a cache, would read the freed entry).
    #[test]
    fn a_thread_that_exits_on_another_fiber_runs_its_hook() {
        use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, WAIT_OBJECT_0};
        use windows_sys::Win32::System::Threading::{INFINITE, WaitForSingleObject};
        // Declared here with an untyped security-attributes pointer, so that the crate
        // needs no `Win32_Security` feature for a test.
        #[link(name = "kernel32")]
        unsafe extern "system" {
            fn CreateThread(
                attributes: *const c_void,
                stack_bytes: usize,
                start: unsafe extern "system" fn(*mut c_void) -> u32,
                parameter: *mut c_void,
                flags: u32,
                thread_id: *mut u32,
            ) -> HANDLE;
        }
        let cache = SlabCache::new(64, 8).unwrap();
        let mut report = ExitOnAFiber {
            cache: &cache,
            entry: 0,
            state: 0,
        };
        // SAFETY: the routine has the required signature; `report` outlives the thread
        // (waited for below).
        let thread = unsafe {
            CreateThread(
                ptr::null(),
                0,
                register_then_exit_on_a_fiber,
                ptr::from_mut(&mut report).cast(),
                0,
                ptr::null_mut(),
            )
        };
        assert!(!thread.is_null());
        // SAFETY: a thread handle we own; closed once, after the wait.
        unsafe {
            assert_eq!(WaitForSingleObject(thread, INFINITE), WAIT_OBJECT_0);
            CloseHandle(thread);
        }
        assert_eq!(report.state, ACTIVE, "the thread did not register");
        assert!(
            !listed(report.entry),
            "the exited thread's entry is still listed"
        );
        assert_eq!(
            cache.stats().objects_live,
            0,
            "the exited thread's magazines were not returned"
        );
    }

    /// A thread that exits normally still returns its magazines.
    #[test]
    fn a_thread_that_exits_runs_its_hook() {
        let cache = SlabCache::new(64, 8).unwrap();
        let entry = thread::spawn(move || {
            let object = cache.alloc();
            // SAFETY: allocated just above from this cache.
            unsafe { cache.free(object) };
            let (entry, state) = own_magazines();
            assert_eq!(state, ACTIVE);
            assert!(listed(entry));
            entry
        })
        .join()
        .unwrap();
        assert!(!listed(entry), "the exit hook did not run");
    }
}

/// A child forked while a thread of its parent installs the hooks: the state it inherits
/// says "installing", and no thread of the child will finish. The scenario needs a
/// process in which the hooks are not installed yet, so it runs in a child process of
/// the test binary (libtest and the test harness allocate with the system's allocator).
#[cfg(all(test, target_os = "linux", not(miri)))]
mod fork_window_tests {
    use core::alloc::{GlobalAlloc, Layout};
    use core::sync::atomic::{AtomicBool, Ordering};
    use std::io::Read as _;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::{HOOKS, HOOKS_INSTALLED, HOOKS_INSTALLING, HOOKS_NONE, HOOKS_STATE};
    use crate::SlabHeap;

    /// Whether the installing thread waits before `pthread_atfork`, until cleared.
    static HOLD: AtomicBool = AtomicBool::new(false);

    /// Holds the installation inside the window in which a fork finds the hooks half
    /// installed, for as long as the test wants.
    pub(super) fn pause_while_installing() {
        while HOLD.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The first use of a heap: one block of each of two classes, freed.
    fn use_a_heap() -> bool {
        let heap = SlabHeap::new();
        [64, 5000].into_iter().all(|size| {
            let layout = Layout::from_size_align(size, 8).unwrap();
            // SAFETY: non-zero size; freed once, with its layout.
            unsafe {
                let block = heap.alloc(layout);
                if !block.is_null() {
                    heap.dealloc(block, layout);
                }
                !block.is_null()
            }
        })
    }

    #[test]
    #[ignore = "child process of a_child_forked_while_the_hooks_install_can_use_a_heap"]
    fn child_fork_while_the_hooks_install() {
        if std::env::var_os("PAGEKEEP_SLAB_HOOKS_CHILD").is_none() {
            return;
        }
        assert_eq!(
            HOOKS.load(Ordering::Acquire),
            HOOKS_NONE,
            "pagekeep-slab was used in this process before the test"
        );
        HOLD.store(true, Ordering::Release);
        let installer = std::thread::spawn(use_a_heap);
        while HOOKS.load(Ordering::Acquire) & HOOKS_STATE != HOOKS_INSTALLING {
            std::thread::yield_now();
        }
        let parent = u64::from(std::process::id());
        // SAFETY: the child uses a heap of its own and the hooks' state, then `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // A child that waits for the parent's installer for ever ends here instead.
            // SAFETY: a plain system call.
            unsafe { libc::alarm(20) };
            HOLD.store(false, Ordering::Release);
            // The scenario: the state says "installing", by the parent.
            let inherited = HOOKS.load(Ordering::Acquire);
            let status = if inherited != parent << 8 | HOOKS_INSTALLING {
                2
            } else if use_a_heap()
                && HOOKS.load(Ordering::Acquire)
                    == u64::from(std::process::id()) << 8 | HOOKS_INSTALLED
            {
                0
            } else {
                1
            };
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(status) };
        }
        HOLD.store(false, Ordering::Release);
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child forked while the hooks were installing could not use a heap: \
             status {status:#x} (exit 2: it did not inherit the installing state; \
             signal 14: it waited for the parent's installer)"
        );
        assert!(
            installer.join().unwrap(),
            "the installing thread's heap failed"
        );
        assert_eq!(HOOKS.load(Ordering::Acquire) & HOOKS_STATE, HOOKS_INSTALLED);
    }

    #[test]
    fn a_child_forked_while_the_hooks_install_can_use_a_heap() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "registry::fork_window_tests::child_fork_while_the_hooks_install",
                "--test-threads=1",
            ])
            .env("PAGEKEEP_SLAB_HOOKS_CHILD", "1")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Not a timing check: a guard against a hang stopping the test run.
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!("the scenario hung");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut output = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut output)
            .unwrap();
        assert!(status.success(), "the scenario failed: {status}\n{output}");
        // A filter that matched nothing would pass as well.
        assert!(
            output.contains("1 passed"),
            "the scenario did not run:\n{output}"
        );
    }
}
