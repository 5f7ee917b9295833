//! mimalloc-bench: the allocator field's standard C and C++ workloads (cfrac, espresso,
//! larson, xmalloc-test, cache-scratch, mstress, rptest, ...), run as their own programs
//! under `LD_PRELOAD` of glibc, mimalloc, jemalloc, tcmalloc and ours (the C interface of
//! `SlabHeap`, `libpagekeep_slab_capi.so`).
//!
//! The workspace holds none of the suite's code: `--mimalloc-bench DIR` names a copy of
//! it whose `run` script builds the programs, runs each under every allocator
//! (interleaved, the median of `--reps` runs) and prints a markdown table, which this
//! group reads. An upstream checkout of mimalloc-bench (its `bench.sh`, without that
//! `run` script) is refused with a message saying what DIR must hold. Without the flag
//! the page only says how to produce it.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use pagekeep_alloc_test::bench::machine::Machine;
use pagekeep_alloc_test::bench::measure::{Measurement, Settings};
use pagekeep_alloc_test::bench::report::{Better, Page, Row, Section, Target};

use crate::progress::Progress;

/// Progress steps: building our library, then running the suite.
pub const STEPS: usize = 2;

/// Issue 15's targets: the geometric mean of ours / best peer over the workloads, of
/// time (or of best peer / ours for a throughput) and of peak RSS, at most 1.0x, and no
/// workload above 1.15x.
const GEOMETRIC_MEAN_TARGET: f64 = 1.0;
const WORST_WORKLOAD_TARGET: f64 = 1.15;

/// The workspace's C interface of `SlabHeap`, built before the suite runs.
const OUR_PACKAGE: &str = "pagekeep-slab-capi";
const OUR_LIBRARY: &str = "libpagekeep_slab_capi.so";

/// What the command line asked of this group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The suite's folder (`--mimalloc-bench DIR`); `None`: the page says how to run it.
    pub directory: Option<PathBuf>,
    /// Workloads to run (`--mimalloc-bench-only "a b"`); empty: all of them.
    pub only: Vec<String>,
    /// Runs of each workload under each allocator, the median taken
    /// (`--mimalloc-bench-reps N`); `None`: 1, or 3 with `--full`.
    pub reps: Option<usize>,
    /// Threads of the multi-thread workloads (`--mimalloc-bench-threads N`); `None`: the
    /// machine's logical cores.
    pub threads: Option<usize>,
}

impl Config {
    /// The command-line arguments that asked for this configuration, for the command
    /// written on the pages.
    pub fn arguments(&self) -> Vec<String> {
        let mut arguments = Vec::new();
        if let Some(directory) = &self.directory {
            arguments.push("--mimalloc-bench".to_owned());
            arguments.push(directory.display().to_string());
        }
        if !self.only.is_empty() {
            arguments.push("--mimalloc-bench-only".to_owned());
            arguments.push(format!("\"{}\"", self.only.join(" ")));
        }
        if let Some(reps) = self.reps {
            arguments.extend(["--mimalloc-bench-reps".to_owned(), reps.to_string()]);
        }
        if let Some(threads) = self.threads {
            arguments.extend(["--mimalloc-bench-threads".to_owned(), threads.to_string()]);
        }
        arguments
    }

    /// Takes the value of one of this group's options (`--mimalloc-bench*`) into the
    /// configuration. Returns `Ok(false)` for an option that is not this group's.
    ///
    /// # Errors
    /// The value is missing or is not a positive number where one is needed.
    pub fn parse_option(
        &mut self,
        option: &str,
        value: impl FnOnce() -> Option<String>,
    ) -> Result<bool, String> {
        let positive = |value: Option<String>| -> Result<usize, String> {
            value
                .as_deref()
                .and_then(|value| value.parse().ok())
                .filter(|&number| number > 0)
                .ok_or_else(|| format!("{option} needs a positive number, not {value:?}"))
        };
        match option {
            "--mimalloc-bench" => {
                let directory = value().ok_or("--mimalloc-bench needs the suite's folder")?;
                self.directory = Some(PathBuf::from(directory));
            }
            "--mimalloc-bench-only" => {
                let names = value().ok_or("--mimalloc-bench-only needs workload names")?;
                self.only = names.split_whitespace().map(str::to_owned).collect();
            }
            "--mimalloc-bench-reps" => self.reps = Some(positive(value())?),
            "--mimalloc-bench-threads" => self.threads = Some(positive(value())?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Checks that the options that shape a run come with the suite's folder, and that
    /// the folder holds the suite's `run` script (before any group runs, so that a bad
    /// folder does not stop a long run at its end).
    ///
    /// # Errors
    /// `--mimalloc-bench-only`, `-reps` or `-threads` without `--mimalloc-bench DIR`, or
    /// a DIR without the suite's `run` script.
    pub fn check(&self) -> Result<(), String> {
        if let Some(directory) = &self.directory {
            suite_script(directory)?;
        }
        if self.directory.is_none()
            && (!self.only.is_empty() || self.reps.is_some() || self.threads.is_some())
        {
            return Err("--mimalloc-bench-only, --mimalloc-bench-reps and \
                        --mimalloc-bench-threads need --mimalloc-bench DIR"
                .to_owned());
        }
        Ok(())
    }
}

/// The configuration given on the command line, set once by `main` before the groups
/// run (the groups' common signature carries no per-group options).
static CONFIG: OnceLock<Config> = OnceLock::new();

/// Sets the group's configuration; a second call keeps the first.
pub fn configure(config: Config) {
    let _ = CONFIG.set(config);
}

/// One workload's line of the suite's table.
#[derive(Clone, Debug, PartialEq)]
struct Workload {
    name: String,
    /// The figure is a throughput the program reports (higher is better), not seconds.
    throughput: bool,
    /// Allocator, figure (seconds or million operations per second) and peak RSS in MiB
    /// (rounded down by the suite), in the suite's column order.
    figures: Vec<(String, f64, f64)>,
    /// Ours / best peer (best peer / ours for a throughput), as the suite computed it.
    ratio: f64,
    /// Ours / best peer of the peak RSS.
    rss_ratio: f64,
}

/// What the suite printed.
#[derive(Clone, Debug, PartialEq)]
struct Outcome {
    workloads: Vec<Workload>,
    /// The geometric means of [`Workload::ratio`] and [`Workload::rss_ratio`].
    geometric_mean: f64,
    geometric_mean_rss: f64,
    /// The runs that exited with an error (`larsonN under ours exited 1`).
    failures: Vec<String>,
}

/// Reads the suite's output: its table, the line of geometric means, and the line of
/// failures if there is one.
fn parse(output: &str) -> Result<Outcome, String> {
    let mut lines = output.lines();
    let header = lines
        .by_ref()
        .find(|line| line.starts_with("| workload |"))
        .ok_or("the suite printed no table")?;
    let columns = cells(header);
    // workload, one column per allocator, ours / best peer, the RSS ratio.
    if columns.len() < 5 || !columns.contains(&"ours") {
        return Err(format!(
            "the suite's table has unexpected columns: {header}"
        ));
    }
    let allocators: Vec<&str> = columns[1..columns.len() - 2].to_vec();
    let mut workloads = Vec::new();
    let mut means = None;
    let mut failures = Vec::new();
    for line in lines {
        if line.starts_with("|---") {
            continue;
        }
        if line.starts_with("| security test |") {
            break;
        }
        if line.starts_with("| ") {
            workloads.push(workload(line, &allocators)?);
        } else if let Some(rest) = line.strip_prefix("ours / best peer, geometric mean: time ") {
            means = Some(geometric_means(rest).ok_or_else(|| format!("cannot read {line:?}"))?);
        } else if let Some(rest) = line.strip_prefix("failures: ") {
            failures = rest.split("; ").map(str::to_owned).collect();
        }
    }
    if workloads.is_empty() {
        return Err("the suite's table has no workload".to_owned());
    }
    let (geometric_mean, geometric_mean_rss) =
        means.ok_or("the suite printed no geometric means")?;
    Ok(Outcome {
        workloads,
        geometric_mean,
        geometric_mean_rss,
        failures,
    })
}

/// The cells of a markdown table line, trimmed.
fn cells(line: &str) -> Vec<&str> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(str::trim)
        .collect()
}

/// A ratio cell: `1.05x` or `0.98`.
fn ratio(cell: &str) -> Option<f64> {
    cell.trim_end_matches('x').parse().ok()
}

/// A workload's line: `| larsonN (Mops/s) | 12.50 (30 MiB) | ... | 1.05x | 0.98 |`.
fn workload(line: &str, allocators: &[&str]) -> Result<Workload, String> {
    let bad = || format!("cannot read the suite's line {line:?}");
    let cells = cells(line);
    if cells.len() != allocators.len() + 3 {
        return Err(bad());
    }
    let (name, throughput) = if let Some(name) = cells[0].strip_suffix(" (Mops/s)") {
        (name, true)
    } else if let Some(name) = cells[0].strip_suffix(" (s)") {
        (name, false)
    } else {
        return Err(bad());
    };
    let figures = allocators
        .iter()
        .zip(&cells[1..=allocators.len()])
        .map(|(allocator, cell)| {
            let (figure, rss) = cell.split_once(" (")?;
            let rss = rss.strip_suffix(" MiB)")?;
            Some((
                allocator.to_string(),
                figure.parse().ok()?,
                rss.parse().ok()?,
            ))
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(bad)?;
    Ok(Workload {
        name: name.to_owned(),
        throughput,
        figures,
        ratio: ratio(cells[allocators.len() + 1]).ok_or_else(bad)?,
        rss_ratio: ratio(cells[allocators.len() + 2]).ok_or_else(bad)?,
    })
}

/// `1.02x, peak RSS 0.95x; worst ...` after "geometric mean: time ".
fn geometric_means(text: &str) -> Option<(f64, f64)> {
    let (time, rest) = text.split_once(", peak RSS ")?;
    let (rss, _) = rest.split_once(';')?;
    Some((ratio(time)?, ratio(rss)?))
}

/// The suite's `run` script in `directory`, or why `directory` cannot be used.
fn suite_script(directory: &Path) -> Result<PathBuf, String> {
    let script = directory.join("run");
    let needs = format!(
        "{} must hold the workspace's copy of mimalloc-bench (as in ../shared/mimalloc-bench \
         beside the repository): the workloads' sources and a `run` script that takes \
         `--ours LIBRARY --reps N --threads N [--only \"NAMES\"]`, runs each workload under \
         glibc, mimalloc, jemalloc, tcmalloc and LIBRARY, and prints a markdown table",
        directory.display()
    );
    match std::fs::read_to_string(&script) {
        Ok(text) if text.contains("--ours") => Ok(script),
        _ if directory.join("bench.sh").exists() => Err(format!(
            "{} is an upstream checkout of mimalloc-bench (bench.sh, no `run` script), \
             which is not supported: {needs}",
            directory.display()
        )),
        Ok(_) => Err(format!(
            "{} is not the suite's run script: {needs}",
            script.display()
        )),
        Err(error) => Err(format!(
            "cannot read {}: {error}; {needs}",
            script.display()
        )),
    }
}

/// Builds our C library with cargo (the profile of this executable) and returns its path.
fn build_ours() -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", OUR_PACKAGE]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let status = build
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stdout(Stdio::null())
        .status()
        .map_err(|error| format!("cannot run cargo to build {OUR_PACKAGE}: {error}"))?;
    let library = std::env::current_exe()
        .map_err(|error| format!("cannot find the reproduce executable: {error}"))?
        .with_file_name(OUR_LIBRARY);
    if !status.success() || !library.exists() {
        return Err(format!(
            "cannot build {OUR_PACKAGE} ({status}): run `cargo build --release -p {OUR_PACKAGE}`"
        ));
    }
    Ok(library)
}

/// The suite's arguments for a run.
fn suite_arguments(library: &Path, reps: usize, threads: usize, only: &[String]) -> Vec<String> {
    let mut arguments = vec![
        "--ours".to_owned(),
        library.display().to_string(),
        "--reps".to_owned(),
        reps.to_string(),
        "--threads".to_owned(),
        threads.to_string(),
    ];
    if !only.is_empty() {
        arguments.extend(["--only".to_owned(), only.join(" ")]);
    }
    arguments
}

/// Runs the suite and returns what it printed. Its lines are echoed to standard error as
/// they come (a run takes minutes). A run whose programs failed under some allocator
/// still prints its table, so the exit status is left to [`parse`] and the failures line.
fn run_suite(script: &Path, arguments: &[String]) -> Result<String, String> {
    let mut child = Command::new(script)
        .args(arguments)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", script.display()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or("the suite's output is not piped")?;
    let mut output = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|error| format!("cannot read the suite's output: {error}"))?;
        eprintln!("mimalloc-bench: {line}");
        output.push_str(&line);
        output.push('\n');
    }
    let status = child
        .wait()
        .map_err(|error| format!("the suite did not finish: {error}"))?;
    if !status.success() && !output.contains("\nfailures: ") {
        return Err(format!("{} failed ({status})", script.display()));
    }
    Ok(output)
}

/// Runs the group: the suite if `--mimalloc-bench DIR` was given, else the page that
/// says how.
pub fn run(settings: Settings, machine: &Machine, progress: &mut Progress) -> Result<Page, String> {
    // A `--full` run is the one with the publication run's samples.
    let full = settings.samples == Settings::FULL.samples;
    let config = CONFIG.get().cloned().unwrap_or_default();
    let Some(directory) = &config.directory else {
        progress.step("mimalloc-bench: not asked for (--mimalloc-bench DIR)");
        progress.step("mimalloc-bench: nothing to run");
        return Ok(page(INSTRUCTIONS.to_owned(), Vec::new()));
    };
    let script = suite_script(directory)?;
    progress.step(&format!("mimalloc-bench: building {OUR_PACKAGE}"));
    let library = build_ours()?;
    let reps = config.reps.unwrap_or(if full { 3 } else { 1 });
    let threads = config.threads.unwrap_or(machine.cores);
    let arguments = suite_arguments(&library, reps, threads, &config.only);
    progress.step(&format!(
        "mimalloc-bench: running the suite ({reps} rep(s), {threads} threads)"
    ));
    let outcome = parse(&run_suite(&script, &arguments)?)?;
    let suite_command = format!("{} {}", script.display(), quoted(&arguments));
    Ok(page(
        introduction(&suite_command, reps, threads, &crate::today(), &outcome),
        sections(&outcome, machine.busy()),
    ))
}

/// The arguments as a shell would need them (an argument with a space in quotes).
fn quoted(arguments: &[String]) -> String {
    arguments
        .iter()
        .map(|argument| {
            if argument.contains(' ') {
                format!("\"{argument}\"")
            } else {
                argument.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The page's text without `--mimalloc-bench DIR`.
const INSTRUCTIONS: &str = "Not measured in this run. This page holds the results of \
    mimalloc-bench, the allocator field's standard C and C++ workloads, run as their own \
    programs under `LD_PRELOAD` of glibc, mimalloc, jemalloc, tcmalloc and ours \
    (`libpagekeep_slab_capi.so`, the C interface of SlabHeap); the workspace holds none of \
    the suite's code. To produce it, name a copy of the suite that has its `run` script \
    (as `../shared/mimalloc-bench` beside the repository; an upstream checkout of \
    mimalloc-bench, with `bench.sh` only, is not supported):\n\n\
    ```sh\n\
    cargo run --release -p pagekeep-alloc-test --bin reproduce -- --only mimalloc-bench \\\n    \
    --mimalloc-bench ../shared/mimalloc-bench [--mimalloc-bench-reps 3] \\\n    \
    [--mimalloc-bench-threads 2] [--mimalloc-bench-only \"cfrac larsonN\"]\n\
    ```\n\n\
    `reproduce` builds pagekeep-slab-capi with cargo, runs the suite's `run` script (which \
    builds the programs with cmake into `$MB_BUILD` once) and reads the table it prints. \
    The targets of issue 15: the geometric mean of ours / best peer at most 1.0x, no \
    workload above 1.15x, the geometric mean of peak RSS ours / best peer at most 1.0x.";

/// The introduction of a page with figures: what ran, how, and what failed.
fn introduction(
    suite_command: &str,
    reps: usize,
    threads: usize,
    date: &str,
    outcome: &Outcome,
) -> String {
    let mut text = format!(
        "mimalloc-bench, the allocator field's standard C and C++ workloads, run as their \
         own programs under `LD_PRELOAD` of each allocator: glibc's malloc, mimalloc, \
         jemalloc, tcmalloc (the Debian packages) and ours (`libpagekeep_slab_capi.so`, the \
         C interface of SlabHeap, built with cargo first). The suite's `run` script builds \
         the programs, runs every workload under every allocator, interleaved, and takes \
         the median of each figure over its runs; `reproduce` reads the table it prints.\n\n\
         - suite command: `{suite_command}`\n\
         - runs of each workload under each allocator (`--reps`): {reps}\n\
         - threads of the multi-thread workloads (the N of their names): {threads}\n\
         - date: {date}\n\
         - workloads: {}\n\n\
         A figure is the program's wall-clock time in seconds (lower is better), or the \
         throughput it reports itself, in million operations per second (higher is \
         better); peak RSS is the maximum resident set size `/usr/bin/time` reports, \
         rounded down to a MiB. \"Ours / best peer\" is ours divided by the best peer for a \
         time, and the best peer divided by ours for a throughput, so that above 1.0x \
         always means ours is worse; the geometric means are the suite's, over every \
         workload of the run.",
        outcome.workloads.len()
    );
    if !outcome.failures.is_empty() {
        text.push_str(&format!(
            "\n\n**Runs that exited with an error** (their figure is the time until they \
             stopped): {}.",
            outcome.failures.join("; ")
        ));
    }
    text
}

/// The workload the ratio is worst for.
fn worst(outcome: &Outcome) -> Option<&Workload> {
    outcome
        .workloads
        .iter()
        .max_by(|a, b| a.ratio.total_cmp(&b.ratio))
}

/// The sections of a page with figures. On a `busy` machine (the spin control taken
/// before the group) the rows of times and throughputs are marked unreliable: the suite's
/// figures are single values to `reproduce`, which `Page::flag_busy` leaves alone.
fn sections(outcome: &Outcome, busy: bool) -> Vec<Section> {
    let itself = |name: &str, value: f64| vec![(name.to_owned(), Measurement::exact(value))];
    let timed = |mut row: Row| {
        row.unreliable = busy;
        row
    };
    let mut targets = vec![timed(
        Row::new(
            format!(
                "geometric mean of ours / best peer, time ({} workloads)",
                outcome.workloads.len()
            ),
            itself("ours", outcome.geometric_mean),
        )
        .target(Target::at_most_value(GEOMETRIC_MEAN_TARGET)),
    )];
    if let Some(worst) = worst(outcome) {
        targets.push(timed(
            Row::new(
                format!("worst workload: {}", worst.name),
                itself("ours", worst.ratio),
            )
            .target(Target::at_most_value(WORST_WORKLOAD_TARGET)),
        ));
    }
    targets.push(
        Row::new(
            "geometric mean of ours / best peer, peak RSS",
            itself("ours", outcome.geometric_mean_rss),
        )
        .target(Target::at_most_value(GEOMETRIC_MEAN_TARGET)),
    );
    let ratios = |of: fn(&Workload) -> f64, label: &str| -> Vec<Row> {
        outcome
            .workloads
            .iter()
            .map(|workload| Row::new(workload.name.clone(), itself(label, of(workload))))
            .collect()
    };
    // The workloads of one kind, a row each: ours first, then the peers in the suite's
    // order.
    let figures = |throughput: bool, of: fn(&(String, f64, f64)) -> f64, better| -> Vec<Row> {
        outcome
            .workloads
            .iter()
            .filter(|workload| workload.throughput == throughput)
            .map(|workload| {
                let mut results: Vec<(String, Measurement)> = workload
                    .figures
                    .iter()
                    .map(|figure| (figure.0.clone(), Measurement::exact(of(figure))))
                    .collect();
                if let Some(at) = results.iter().position(|(name, _)| name == "ours") {
                    let ours = results.remove(at);
                    results.insert(0, ours);
                }
                Row::new(workload.name.clone(), results).better(better)
            })
            .collect()
    };
    let rss_rows = {
        let mut rows = figures(false, |figure| figure.2, Better::Lower);
        rows.extend(figures(true, |figure| figure.2, Better::Lower));
        rows
    };
    let section = |title: &str, description: &str, unit: &str, rows: Vec<Row>| Section {
        title: title.to_owned(),
        description: description.to_owned(),
        unit: unit.to_owned(),
        rows,
        line_plot: None,
    };
    let all = vec![
        section(
            "Targets of issue 15",
            "The geometric means over the workloads of ours / best peer (time, or best \
             peer / ours for a throughput) and of peak RSS must be at most 1.0x, and no \
             workload above 1.15x (the worst one is shown).",
            "ours / best peer",
            targets,
        ),
        section(
            "Ours / best peer per workload",
            "Ours divided by the best of glibc, mimalloc, jemalloc and tcmalloc for each \
             workload (the best peer divided by ours for a throughput): above 1.0x ours is \
             worse. The target is 1.15x at most for every workload.",
            "ours / best peer",
            ratios(|workload| workload.ratio, "ours / best peer")
                .into_iter()
                .map(timed)
                .collect(),
        ),
        section(
            "Peak RSS, ours / best peer per workload",
            "Our peak resident set size divided by the smallest peer's, per workload: above \
             1.0x ours used more memory.",
            "ours / best peer",
            ratios(|workload| workload.rss_ratio, "peak RSS, ours / best peer"),
        ),
        section(
            "Timed workloads",
            "Wall-clock time of each program, the median of its runs. Lower is better.",
            "seconds",
            figures(false, |figure| figure.1, Better::Lower)
                .into_iter()
                .map(timed)
                .collect(),
        ),
        section(
            "Throughput workloads",
            "The throughput the program reports itself after running for a fixed time, the \
             median of its runs. Higher is better.",
            "million operations per second",
            figures(true, |figure| figure.1, Better::Higher)
                .into_iter()
                .map(timed)
                .collect(),
        ),
        section(
            "Peak RSS",
            "The maximum resident set size of each program (timed workloads first, then the \
             throughput ones), the median of its runs, rounded down to a MiB by the suite. \
             Lower is better. The ratios of this table are of those rounded figures (3 MiB \
             against 2 reads 1.50x); the suite's own ratio of each workload, from the sizes \
             in KiB, is the one in \"Peak RSS, ours / best peer per workload\" above, and \
             the geometric mean of the targets is of those.",
            "MiB",
            rss_rows,
        ),
    ];
    all.into_iter()
        .filter(|section| !section.rows.is_empty())
        .collect()
}

/// The group's page.
fn page(introduction: String, sections: Vec<Section>) -> Page {
    Page {
        name: "mimalloc-bench".into(),
        title: "mimalloc-bench: the field's C and C++ workloads under LD_PRELOAD".into(),
        introduction,
        sections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagekeep_alloc_test::bench::stats::Verdict;

    /// What the suite's `run` prints, with a throughput workload and a failure.
    const OUTPUT: &str = "\
| workload | glibc | mimalloc | jemalloc | tcmalloc | ours | ours / best peer | ours RSS / best peer RSS |
|---|---|---|---|---|---|---|---|
| cfrac (s) | 6.10 (3 MiB) | 5.00 (3 MiB) | 5.50 (4 MiB) | 5.20 (8 MiB) | 5.50 (3 MiB) | 1.10x | 1.00 |
| larsonN (Mops/s) | 20.00 (40 MiB) | 40.00 (60 MiB) | 30.00 (50 MiB) | 35.00 (45 MiB) | 32.00 (36 MiB) | 1.25x | 0.90 |

ours / best peer, geometric mean: time 1.17x, peak RSS 0.95x; worst 1.25x (2 workloads, 2 threads)

failures: larsonN under tcmalloc exited 1
";

    #[test]
    fn the_suite_table_is_read_with_units_ratios_and_failures() {
        let outcome = parse(OUTPUT).expect("the suite's table");
        assert_eq!(outcome.workloads.len(), 2);
        let cfrac = &outcome.workloads[0];
        assert_eq!(cfrac.name, "cfrac");
        assert!(!cfrac.throughput);
        assert_eq!(cfrac.figures[0], ("glibc".to_owned(), 6.1, 3.0));
        assert_eq!(cfrac.figures[4], ("ours".to_owned(), 5.5, 3.0));
        assert_eq!((cfrac.ratio, cfrac.rss_ratio), (1.1, 1.0));
        let larson = &outcome.workloads[1];
        assert!(larson.throughput);
        assert_eq!(larson.figures[1], ("mimalloc".to_owned(), 40.0, 60.0));
        assert_eq!(
            (outcome.geometric_mean, outcome.geometric_mean_rss),
            (1.17, 0.95)
        );
        assert_eq!(outcome.failures, vec!["larsonN under tcmalloc exited 1"]);
    }

    #[test]
    fn output_without_a_table_or_means_is_refused() {
        assert!(parse("Traceback (most recent call last):\n").is_err());
        let without_means: String = OUTPUT
            .lines()
            .filter(|line| !line.contains("geometric mean"))
            .map(|line| format!("{line}\n"))
            .collect();
        assert!(parse(&without_means).is_err());
        let garbled = OUTPUT.replace("5.50 (3 MiB) | 1.10x", "5.50 | 1.10x");
        assert!(parse(&garbled).is_err());
    }

    #[test]
    fn the_target_rows_judge_the_geometric_means_and_the_worst_workload() {
        let sections = sections(&parse(OUTPUT).expect("the suite's table"), false);
        let targets = &sections[0].rows;
        assert_eq!(targets.len(), 3);
        assert_eq!(targets[0].met(), Some(Verdict::No), "1.17x > 1.0x");
        assert_eq!(targets[1].workload, "worst workload: larsonN");
        assert_eq!(targets[1].met(), Some(Verdict::No), "1.25x > 1.15x");
        assert_eq!(targets[2].met(), Some(Verdict::Met), "0.95x <= 1.0x");
        // Ours first, and a throughput row where higher is better: ours / mimalloc.
        let throughput = sections
            .iter()
            .find(|section| section.title == "Throughput workloads")
            .expect("a throughput section");
        let row = &throughput.rows[0];
        assert_eq!(row.results[0].0, "ours");
        assert_eq!(
            row.best_peer().map(|peer| peer.0.as_str()),
            Some("mimalloc")
        );
        // Peak RSS is lower-is-better for a throughput workload too: larsonN's least
        // peer is glibc's 40 MiB, not mimalloc's 60.
        let rss = sections
            .iter()
            .find(|section| section.title == "Peak RSS")
            .expect("a peak RSS section");
        let row = &rss.rows[1];
        assert_eq!(row.workload, "larsonN");
        assert_eq!(row.best_peer().map(|peer| peer.0.as_str()), Some("glibc"));
    }

    #[test]
    fn a_busy_machine_marks_the_timed_rows_but_not_peak_rss() {
        let outcome = parse(OUTPUT).expect("the suite's table");
        for (busy, timed) in [
            (false, "**no**"),
            (true, "**no** (unreliable: machine busy)"),
        ] {
            let sections = sections(&outcome, busy);
            let targets = &sections[0].rows;
            assert_eq!(targets[0].verdict_text(), timed);
            assert_eq!(targets[1].verdict_text(), timed);
            assert_eq!(targets[2].verdict_text(), "met", "peak RSS is not timed");
            for section in &sections[1..] {
                let memory = section.title.contains("RSS");
                for row in &section.rows {
                    assert_eq!(row.unreliable, busy && !memory, "{}", section.title);
                }
            }
        }
    }

    #[test]
    fn an_upstream_checkout_is_refused_and_says_what_the_folder_needs() {
        let directory = std::env::temp_dir().join(format!(
            "reproduce-mimalloc-bench-test-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&directory).expect("a temporary folder");
        std::fs::write(directory.join("bench.sh"), "#!/bin/bash\n").expect("bench.sh");
        let refused = suite_script(&directory).expect_err("an upstream checkout");
        assert!(refused.contains("upstream checkout"), "{refused}");
        assert!(refused.contains("`run` script that takes"), "{refused}");
        std::fs::write(directory.join("run"), "#!/usr/bin/env python3\n# --ours\n").expect("run");
        assert_eq!(suite_script(&directory), Ok(directory.join("run")));
        let mut config = Config::default();
        let folder = || Some(directory.display().to_string());
        assert_eq!(config.parse_option("--mimalloc-bench", folder), Ok(true));
        assert_eq!(config.check(), Ok(()));
        std::fs::remove_dir_all(&directory).expect("clean up");
    }

    #[test]
    fn options_are_parsed_and_need_the_folder() {
        let mut config = Config::default();
        let only = || Some("cfrac larsonN".to_owned());
        assert_eq!(config.parse_option("--mimalloc-bench-only", only), Ok(true));
        assert!(config.check().is_err());
        let directory = || Some("no-such-suite".to_owned());
        assert_eq!(config.parse_option("--mimalloc-bench", directory), Ok(true));
        assert!(
            config
                .parse_option("--mimalloc-bench-reps", || Some("0".into()))
                .is_err()
        );
        assert_eq!(config.parse_option("--full", || None), Ok(false));
        let missing = config.check().expect_err("a folder without the run script");
        assert!(
            missing.contains("cannot read no-such-suite/run"),
            "{missing}"
        );
        assert_eq!(
            config.arguments(),
            [
                "--mimalloc-bench",
                "no-such-suite",
                "--mimalloc-bench-only",
                "\"cfrac larsonN\""
            ]
        );
    }
}
