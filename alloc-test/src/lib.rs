#![doc = include_str!("../README.md")]

pub mod adapters;
pub mod bench;
pub mod edges;
mod metered;
mod model;
pub mod pattern;
pub mod program;
pub mod stress;
mod subject;
mod threads;

pub use adapters::{
    AllocatorSubject, ArenaSubject, BumpaloSubject, GlobalSubject, ObjectCacheSubject,
    PooledArenaSubject, RouterSubject, SlabCacheSubject,
};
pub use metered::MeteredPages;
pub use model::{Summary, Violation, run};
pub use program::Op;
pub use subject::{Mark, Promises, Refused, Subject};

use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

/// The environment variable that sets how many programs [`check`] runs per allocator.
pub const CASES_VARIABLE: &str = "ALLOC_TEST_CASES";

/// Programs per allocator: `ALLOC_TEST_CASES` if set, else 48 (4 under miri).
pub fn cases() -> u32 {
    std::env::var(CASES_VARIABLE)
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(if cfg!(miri) { 4 } else { 48 })
}

/// The longest program [`check`] generates (shorter under miri, which is slow).
pub fn max_program_len() -> usize {
    if cfg!(miri) { 12 } else { 160 }
}

/// A failing program, shrunk to a minimal one, and what it broke.
#[derive(Debug)]
pub struct Failure {
    /// The allocator's name.
    pub subject: String,
    /// The minimal program that fails.
    pub program: Vec<Op>,
    /// The pattern seed of the failing run.
    pub seed: u64,
    /// The broken promise.
    pub reason: String,
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        writeln!(f, "{} broke a promise: {}", self.subject, self.reason)?;
        writeln!(f, "minimal program (seed {:#x}):", self.seed)?;
        for (step, op) in self.program.iter().enumerate() {
            writeln!(f, "  {step:3}: {op:?}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

/// Runs the edge programs ([`edges`]), the footprint check, then [`cases`] random
/// programs against fresh subjects made by `make`, and shrinks any failure to a minimal
/// program.
///
/// - The edge programs run every time, in order, each on a fresh subject; those on
///   several threads run for subjects that offer [`Subject::threaded`].
/// - The footprint check runs for subjects that report [`Subject::footprint`] and promise
///   [`Promises::reuses_freed_memory`]: the same round of allocations, freed at its end,
///   runs eight times on one subject, and what it holds after the last round may exceed
///   what it held after the second by at most one round's bytes.
/// - The random programs are drawn for the subject's promises: sizes and alignments up
///   to one above what it promises, a quarter of the sizes at the edges.
///
/// # Errors
/// The minimal failing program and the violation it causes.
///
/// # Examples
///
/// ```
/// use pagekeep_alloc_test::{BumpaloSubject, check};
///
/// check(BumpaloSubject::new).unwrap();
/// ```
pub fn check<S: Subject>(make: impl Fn() -> S) -> Result<(), Failure> {
    check_cases(cases(), make)
}

/// Shrinks a failing program further than proptest's element-wise shrinking: drops the
/// steps after the one that broke the promise, then every single step whose removal
/// keeps the program failing. Returns the program and the violation it now causes.
fn minimise<S: Subject>(
    make: &impl Fn() -> S,
    mut program: Vec<Op>,
    seed: u64,
    mut reason: String,
) -> (Vec<Op>, String) {
    let fails = |program: &[Op]| run(&mut make(), program, seed).err();
    if let Some(violation) = fails(&program) {
        program.truncate(violation.step() + 1);
        reason = violation.to_string();
    }
    let mut index = 0;
    while index < program.len() {
        let mut candidate = program.clone();
        candidate.remove(index);
        match fails(&candidate) {
            Some(violation) => {
                candidate.truncate(violation.step() + 1);
                program = candidate;
                reason = violation.to_string();
            }
            None => index += 1,
        }
    }
    (program, reason)
}

/// The pattern seed of the edge programs and the footprint check.
const EDGE_SEED: u64 = 0xed6e_5eed;

/// How many times the footprint check runs its round.
const REUSE_ROUNDS: usize = 8;

/// [`check`] with an explicit number of random programs.
///
/// # Errors
/// As [`check`].
pub fn check_cases<S: Subject>(cases: u32, make: impl Fn() -> S) -> Result<(), Failure> {
    let mut probe = make();
    let name = probe.name();
    let promises = probe.promises();
    let threaded = probe.threaded().is_some();
    let reports_footprint = probe.footprint().is_some();
    drop(probe);
    for program in edges::programs(&promises, threaded) {
        if let Err(violation) = run(&mut make(), &program, EDGE_SEED) {
            let (program, reason) = minimise(&make, program, EDGE_SEED, violation.to_string());
            return Err(Failure {
                subject: name,
                program,
                seed: EDGE_SEED,
                reason,
            });
        }
    }
    if reports_footprint && promises.reuses_freed_memory {
        check_footprint(&name, &promises, make())?;
    }
    check_random(cases, &name, &promises, make)
}

/// The footprint check (see [`check`]).
fn check_footprint<S: Subject>(
    name: &str,
    promises: &Promises,
    mut subject: S,
) -> Result<(), Failure> {
    let (round, round_bytes) = edges::reuse_rounds(promises);
    let failure = |reason: String| Failure {
        subject: name.to_owned(),
        program: round.clone(),
        seed: EDGE_SEED,
        reason,
    };
    let mut held = Vec::with_capacity(REUSE_ROUNDS);
    for _ in 0..REUSE_ROUNDS {
        run(&mut subject, &round, EDGE_SEED).map_err(|violation| failure(violation.to_string()))?;
        held.push(subject.footprint().unwrap_or(0));
    }
    let (second, last) = (held[1], held[REUSE_ROUNDS - 1]);
    if last > second + round_bytes {
        let leak = Violation::Leak {
            step: REUSE_ROUNDS,
            held_after_second: second,
            held_after_last: last,
            round_bytes,
        };
        return Err(failure(format!("{leak} (held after each round: {held:?})")));
    }
    Ok(())
}

/// The random programs (see [`check`]).
fn check_random<S: Subject>(
    cases: u32,
    name: &str,
    promises: &Promises,
    make: impl Fn() -> S,
) -> Result<(), Failure> {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = (
        program::programs(promises, max_program_len()),
        proptest::num::u64::ANY,
    );
    let outcome = runner.run(&strategy, |(program, seed)| {
        let mut subject = make();
        run(&mut subject, &program, seed)
            .map(|_| ())
            .map_err(|violation| TestCaseError::fail(violation.to_string()))
    });
    outcome.map_err(|error| match error {
        TestError::Fail(reason, (program, seed)) => {
            let (program, reason) = minimise(&make, program, seed, reason.to_string());
            Failure {
                subject: name.to_owned(),
                program,
                seed,
                reason,
            }
        }
        TestError::Abort(reason) => Failure {
            subject: name.to_owned(),
            program: Vec::new(),
            seed: 0,
            reason: reason.to_string(),
        },
    })
}
