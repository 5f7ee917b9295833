//! Programs on several threads: the model runs on the calling thread and makes each call
//! of the subject on the thread the program names (with [`Op::Switch`]), one call at a
//! time. Blocks are therefore freed and resized by threads other than the ones that
//! allocated them, threads allocate while others hold blocks of the same sizes, and the
//! model, which knows every live block and the thread that owns it, sees any block handed
//! to two threads at once. Each run is deterministic (the order of the calls is the
//! program's), so failures shrink and replay; threads running at the same moment are the
//! stress's job ([`crate::stress`]).

use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::NonNull;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;

use crate::model::{Summary, Violation, run_on};
use crate::program::{Op, THREADS};
use crate::subject::{Mark, Promises, Refused, Subject};

/// The shared subject: one call at a time, from whichever thread holds the lock.
type Shared<'a> = Mutex<&'a mut (dyn Subject + Send)>;

/// A block's address, moved to the thread that makes the call.
#[derive(Clone, Copy, Debug)]
struct Address(NonNull<u8>);

// SAFETY: only an address: the subject it belongs to is `Send`, and the model, which
// owns the block, waits for the call to finish before touching it again.
unsafe impl Send for Address {}

/// A block handed back by the thread that made the call.
#[derive(Clone, Copy, Debug)]
struct Block(NonNull<[u8]>);

// SAFETY: as for `Address`.
unsafe impl Send for Block {}

/// A call of the subject, made on a worker thread.
#[derive(Clone, Copy, Debug)]
enum Call {
    Alloc(Layout),
    AllocZeroed(Layout),
    Dealloc(Address, Layout),
    Realloc(Address, Layout, Layout),
    GrowZeroed(Address, Layout, Layout),
    ResizeInPlace(Address, Layout, usize),
}

/// What the call returned.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Block(Result<Block, Refused>),
    Resized(bool),
    Freed,
}

impl Call {
    /// Makes the call.
    ///
    /// # Safety
    /// - The call meets the contract of the [`Subject`] method it makes (the model's
    ///   calls are forwarded unchanged).
    unsafe fn make(self, subject: &mut (dyn Subject + Send)) -> Answer {
        let block = |result: Result<NonNull<[u8]>, Refused>| Answer::Block(result.map(Block));
        // SAFETY: forwarded from the caller.
        unsafe {
            match self {
                Call::Alloc(layout) => block(subject.alloc(layout)),
                Call::AllocZeroed(layout) => block(subject.alloc_zeroed(layout)),
                Call::Dealloc(Address(ptr), layout) => {
                    subject.dealloc(ptr, layout);
                    Answer::Freed
                }
                Call::Realloc(Address(ptr), old, new) => block(subject.realloc(ptr, old, new)),
                Call::GrowZeroed(Address(ptr), old, new) => {
                    block(subject.grow_zeroed(ptr, old, new))
                }
                Call::ResizeInPlace(Address(ptr), old, new_size) => {
                    Answer::Resized(subject.resize_in_place(ptr, old, new_size))
                }
            }
        }
    }
}

/// A worker thread: calls go in, answers come out.
struct Worker {
    calls: Sender<Call>,
    answers: Receiver<Answer>,
}

/// The subject as the model sees it: each call is made on the current thread.
struct OnThreads<'a, 'b> {
    shared: &'a Shared<'b>,
    workers: Vec<Worker>,
    current: &'a Cell<usize>,
    name: String,
    promises: Promises,
}

impl<'b> OnThreads<'_, 'b> {
    fn lock(&self) -> MutexGuard<'_, &'b mut (dyn Subject + Send)> {
        lock(self.shared)
    }

    /// Makes `call` on the current thread and waits for its answer.
    ///
    /// # Safety
    /// As [`Call::make`].
    unsafe fn call(&mut self, call: Call) -> Answer {
        match self.current.get() {
            // SAFETY: forwarded from the caller.
            0 => unsafe { call.make(&mut **lock(self.shared)) },
            thread => {
                let worker = &self.workers[thread - 1];
                worker
                    .calls
                    .send(call)
                    .expect("a worker thread takes calls");
                worker
                    .answers
                    .recv()
                    .expect("a worker thread answers (it panicked if not)")
            }
        }
    }

    /// Makes a call that returns a block.
    ///
    /// # Safety
    /// As [`Call::make`].
    unsafe fn block(&mut self, call: Call) -> Result<NonNull<[u8]>, Refused> {
        // SAFETY: forwarded from the caller.
        match unsafe { self.call(call) } {
            Answer::Block(result) => result.map(|Block(block)| block),
            answer => unreachable!("{call:?} answered {answer:?}"),
        }
    }
}

fn lock<'a, 'b>(shared: &'a Shared<'b>) -> MutexGuard<'a, &'b mut (dyn Subject + Send)> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

// SAFETY: every call is forwarded unchanged to the subject, on another thread: the
// subject is `Send`, and calls are made one at a time.
unsafe impl Subject for OnThreads<'_, '_> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn promises(&self) -> Promises {
        self.promises
    }

    fn alloc(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
        // SAFETY: `alloc` has no preconditions.
        unsafe { self.block(Call::Alloc(layout)) }
    }

    fn alloc_zeroed(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
        // SAFETY: `alloc_zeroed` has no preconditions.
        unsafe { self.block(Call::AllocZeroed(layout)) }
    }

    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded from the caller.
        let answer = unsafe { self.call(Call::Dealloc(Address(ptr), layout)) };
        debug_assert!(matches!(answer, Answer::Freed), "{answer:?}");
    }

    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, Refused> {
        // SAFETY: forwarded from the caller.
        unsafe { self.block(Call::Realloc(Address(ptr), layout, new)) }
    }

    unsafe fn grow_zeroed(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, Refused> {
        // SAFETY: forwarded from the caller.
        unsafe { self.block(Call::GrowZeroed(Address(ptr), layout, new)) }
    }

    unsafe fn resize_in_place(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> bool {
        // SAFETY: forwarded from the caller.
        match unsafe { self.call(Call::ResizeInPlace(Address(ptr), layout, new_size)) } {
            Answer::Resized(resized) => resized,
            answer => unreachable!("resize answered {answer:?}"),
        }
    }

    fn reset(&mut self) -> bool {
        self.lock().reset()
    }

    fn checkpoint(&mut self) -> Option<Mark> {
        self.lock().checkpoint()
    }

    unsafe fn rewind(&mut self, mark: Mark) {
        // SAFETY: forwarded from the caller.
        unsafe { self.lock().rewind(mark) }
    }

    fn owns(&self, ptr: NonNull<u8>, len: usize) -> Option<bool> {
        self.lock().owns(ptr, len)
    }

    fn footprint(&self) -> Option<usize> {
        self.lock().footprint()
    }
}

/// Runs `program` with its calls made on the threads it names: the calling thread and
/// [`THREADS`]` - 1` workers, which exit (holding no block of their own: the model owns
/// them all) when the program ends; the blocks still live are then freed by the thread
/// that ran last.
pub(crate) fn run(
    subject: &mut (dyn Subject + Send),
    program: &[Op],
    seed: u64,
) -> Result<Summary, Violation> {
    let name = subject.name();
    let promises = subject.promises();
    let shared: Shared<'_> = Mutex::new(subject);
    let current = Cell::new(0);
    thread::scope(|scope| {
        let (workers, handles): (Vec<Worker>, Vec<_>) = (1..THREADS)
            .map(|index| {
                let (calls, incoming) = channel::<Call>();
                let (outgoing, answers) = channel::<Answer>();
                let shared = &shared;
                let handle = thread::Builder::new()
                    .name(format!("pagekeep-alloc-test worker {index}"))
                    .spawn_scoped(scope, move || {
                        for call in incoming {
                            // SAFETY: the model's calls meet their contracts.
                            let answer = unsafe { call.make(&mut **lock(shared)) };
                            if outgoing.send(answer).is_err() {
                                break;
                            }
                        }
                    })
                    .expect("a worker thread");
                (Worker { calls, answers }, handle)
            })
            .unzip();
        let mut on_threads = OnThreads {
            shared: &shared,
            workers,
            current: &current,
            name,
            promises,
        };
        let current = on_threads.current;
        let result = run_on(&mut on_threads, Some(current), program, seed);
        // Closing the channels lets the workers exit. They are joined here rather than
        // left to the scope, which waits only for their closures to return: a thread's
        // locals (the channel's wait context among them) are destroyed after that, and a
        // leak checker that runs once `run` returns would see them as leaked.
        drop(on_threads);
        for handle in handles {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
        result
    })
}
