#![doc = include_str!("../README.md")]

pub mod adapters;
pub mod bench;
mod model;
pub mod pattern;
pub mod program;
pub mod stress;
mod subject;

pub use adapters::{
    AllocatorSubject, ArenaSubject, BumpaloSubject, GlobalSubject, ObjectCacheSubject,
    PooledArenaSubject, RouterSubject, SlabCacheSubject,
};
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

/// Runs [`cases`] random programs against fresh subjects made by `make`, and shrinks any
/// failure to a minimal program.
///
/// # Errors
/// The minimal failing program and the violation it causes.
///
/// # Examples
///
/// ```
/// use alloc_test::{BumpaloSubject, check};
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

/// [`check`] with an explicit number of programs.
///
/// # Errors
/// As [`check`].
pub fn check_cases<S: Subject>(cases: u32, make: impl Fn() -> S) -> Result<(), Failure> {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let name = make().name();
    let strategy = (
        program::programs(max_program_len()),
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
                subject: name,
                program,
                seed,
                reason,
            }
        }
        TestError::Abort(reason) => Failure {
            subject: name,
            program: Vec::new(),
            seed: 0,
            reason: reason.to_string(),
        },
    })
}
