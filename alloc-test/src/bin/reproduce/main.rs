//! `reproduce`: runs the comparative benchmarks and regenerates `info/`.
//!
//! ```text
//! cargo run --release -p pagekeep-alloc-test --bin reproduce               # quick (a few minutes)
//! cargo run --release -p pagekeep-alloc-test --bin reproduce -- --full     # the publication run
//! cargo run --release -p pagekeep-alloc-test --bin reproduce -- --only mmap
//! ```
//!
//! `reproduce` also starts itself as child processes, so that a measurement runs in a
//! fresh process: `--launch-child GROUP --full` (the 2nd and 3rd launches of a group in
//! a `--full` run: prints its machine check and rounds for the parent to merge),
//! `--fragmentation-child`, `--freed-peak-child`, `--placement-child` and
//! `--false-sharing-child` (one allocator each), and `--http-server-child ours` (our
//! HTTP server; the tokio + hyper peer is the `tokio-hello` executables).

mod groups;
mod index;
mod progress;

use std::path::PathBuf;

use pagekeep_arena::ArenaRouter;
use pagekeep_slab::SlabHeap;
use std::process::ExitCode;

use pagekeep_alloc_test::bench::counting::CountingHeap;
use pagekeep_alloc_test::bench::machine::Machine;
use pagekeep_alloc_test::bench::measure::Settings;
use pagekeep_alloc_test::bench::report::{self, Page};

use crate::progress::Progress;

/// The global allocator of `reproduce` and of the servers it starts as its children:
/// the executor's request allocator (`ArenaRouter` over `SlabHeap`) with the calls into
/// the fallback heap counted. The allocator groups measure explicit instances, not this.
#[global_allocator]
static GLOBAL: ArenaRouter<CountingHeap<SlabHeap>> =
    ArenaRouter::new(CountingHeap::new(SlabHeap::new()));

/// Calls into the fallback heap (`alloc`, `alloc_zeroed`, `realloc` that reached
/// `SlabHeap` rather than a request arena) made by this process so far.
pub fn fallback_heap_calls() -> u64 {
    GLOBAL.fallback().calls()
}

const USAGE: &str = "\
usage: reproduce [--full] [--only GROUP] [--out DIR] [--mimalloc-bench DIR ...]

Runs the comparative benchmarks and writes the pages of info/.
  --full        the publication run (longer samples, every group in 3 process
                launches; the default is a quick run in one)
  --only GROUP  run one group: mmap, arena, slab, executor, mimalloc-bench; or one
                part of a group alone: slab-async-heap (the async heap's sections of slab)
  --out DIR     write the pages to DIR instead of info/ at the workspace root
  --mimalloc-bench DIR
                run mimalloc-bench's C and C++ workloads with the `run` script of the
                suite's copy in DIR (as ../shared/mimalloc-bench; an upstream checkout is
                not supported); without it, its page only says how to produce it
  --mimalloc-bench-only \"NAMES\"   only these workloads (e.g. \"cfrac larsonN\")
  --mimalloc-bench-reps N         runs of each workload per allocator (1; 3 with --full)
  --mimalloc-bench-threads N      threads of the multi-thread workloads (the cores)";

/// The command of a quick run of every group.
const QUICK_COMMAND: &str = "cargo run --release -p pagekeep-alloc-test --bin reproduce";

/// What the command line asked for.
#[derive(Debug)]
struct Options {
    full: bool,
    only: Option<String>,
    out: PathBuf,
    mimalloc_bench: groups::mimalloc_bench::Config,
}

fn parse(arguments: impl Iterator<Item = String>) -> Result<Options, String> {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut options = Options {
        full: false,
        only: None,
        out: workspace.join("info"),
        mimalloc_bench: Default::default(),
    };
    let mut arguments = arguments.skip(1);
    while let Some(argument) = arguments.next() {
        match argument.as_str() {
            "--full" => options.full = true,
            "--only" => {
                let group = arguments.next().ok_or("--only needs a group name")?;
                if !groups::NAMES.contains(&group.as_str()) && groups::parent_of(&group).is_none() {
                    return Err(format!(
                        "unknown group {group:?}; groups: {}; parts: {}",
                        groups::NAMES.join(", "),
                        groups::PARTS
                            .iter()
                            .map(|&(part, _)| part)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                options.only = Some(group);
            }
            "--out" => {
                options.out = PathBuf::from(arguments.next().ok_or("--out needs a directory")?)
            }
            "--help" | "-h" => return Err(String::new()),
            other => {
                if !options
                    .mimalloc_bench
                    .parse_option(other, || arguments.next())?
                {
                    return Err(format!("unknown argument {other:?}"));
                }
            }
        }
    }
    options.mimalloc_bench.check()?;
    Ok(options)
}

fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map_or_else(
            || "an unknown date".to_owned(),
            |date| date.trim().to_owned(),
        )
}

fn main() -> ExitCode {
    // The fragmentation workload runs in a child process per allocator.
    let arguments: Vec<String> = std::env::args().collect();
    if arguments.len() == 3 && arguments[1] == "--fragmentation-child" {
        return match groups::slab::fragmentation_child(&arguments[2]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("reproduce: fragmentation child: {error}");
                ExitCode::FAILURE
            }
        };
    }
    // And the passive false sharing workload, timed and counted.
    if arguments.len() == 3 && arguments[1] == "--false-sharing-child" {
        return match groups::slab::cache_scratch::false_sharing_child(&arguments[2]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("reproduce: false-sharing child: {error}");
                ExitCode::FAILURE
            }
        };
    }
    if arguments.len() == 3 && arguments[1] == "--placement-child" {
        return match groups::slab::cache_scratch::placement_child(&arguments[2]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("reproduce: placement child: {error}");
                ExitCode::FAILURE
            }
        };
    }
    // So does the freed-peak workload.
    if arguments.len() == 4 && arguments[1] == "--freed-peak-child" {
        let result = arguments[3]
            .parse()
            .map_err(|_| format!("bad block count {}", arguments[3]))
            .and_then(|blocks| groups::slab::freed_peak::run_child(&arguments[2], blocks));
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("reproduce: freed-peak child: {error}");
                ExitCode::FAILURE
            }
        };
    }
    // The executor group's servers run in child processes too.
    if arguments.len() == 5 && arguments[1] == "--http-server-child" && arguments[3] == "--workers"
    {
        let result = arguments[4]
            .parse()
            .map_err(|_| format!("--workers needs a number, not {:?}", arguments[4]))
            .and_then(|workers| groups::executor::server_child(&arguments[2], workers));
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("reproduce: {} server child: {error}", arguments[2]);
                ExitCode::FAILURE
            }
        };
    }
    // A further launch of one group (`--full`): runs it and prints its rounds.
    if arguments.len() >= 3 && arguments[1] == "--launch-child" {
        return match launch_child(&arguments[2], arguments[3..].iter().any(|a| a == "--full")) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("reproduce: launch of the {} group: {error}", arguments[2]);
                ExitCode::FAILURE
            }
        };
    }
    let options = match parse(std::env::args()) {
        Ok(options) => options,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("reproduce: {message}\n");
            }
            eprintln!("{USAGE}");
            return if message.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    if cfg!(debug_assertions) {
        eprintln!("reproduce: note: a debug build measures nothing useful; use --release");
    }
    let settings = if options.full {
        Settings::FULL
    } else {
        Settings::QUICK
    };
    // The command that reproduces the figures, written above every table it produced:
    // the options that change them (`--out` only changes where they go).
    let mut arguments = Vec::new();
    if options.full {
        arguments.push("--full".to_owned());
    }
    if let Some(only) = &options.only {
        arguments.extend(["--only".to_owned(), only.clone()]);
    }
    arguments.extend(options.mimalloc_bench.arguments());
    groups::mimalloc_bench::configure(options.mimalloc_bench.clone());
    let mut command = String::from(QUICK_COMMAND);
    if !arguments.is_empty() {
        command = format!("{command} -- {}", arguments.join(" "));
    }
    eprintln!("reproduce: describing the machine (two-thread spin control)...");
    let machine = Machine::describe();
    let selected: Vec<&str> = match options.only.as_deref() {
        Some(only) => vec![only],
        None => groups::NAMES.to_vec(),
    };
    let launches_of = |name: &str| {
        if options.full && !groups::SINGLE_LAUNCH.contains(&name) {
            FULL_LAUNCHES
        } else {
            1
        }
    };
    let mut progress = Progress::new(
        selected
            .iter()
            .map(|name| groups::steps(name, &settings) + (launches_of(name) - 1))
            .sum(),
    );
    let mut pages: Vec<Page> = Vec::new();
    for name in &selected {
        // The machine as it is before this group: its load and the spin control.
        let mut checked = machine.recheck();
        let launches = launches_of(name);
        let page = groups::run(name, &settings, &checked, &mut progress).and_then(|mut page| {
            for launch in 2..=launches {
                progress.step(&format!(
                    "{name}: launch {launch}/{launches} in a fresh process"
                ));
                let (launch_machine, rounds) = further_launch(name)?;
                checked.other_launches.push(launch_machine);
                page.add_launch(&rounds)?;
            }
            page.flag_busy(&checked);
            Ok(page)
        });
        match page {
            Ok(page) => {
                let date = today();
                if let Err(error) = page.write(&options.out, &checked, &command, &date) {
                    progress.finish();
                    eprintln!("reproduce: cannot write {}: {error}", options.out.display());
                    return ExitCode::FAILURE;
                }
                // A run of one group or part brings the index's summary up to date.
                if options.only.is_some() {
                    let index = options.out.join("README.md");
                    match index::update(&options.out, &checked, &command, &date, &page) {
                        Ok(index::Updated::Yes) => {}
                        Ok(index::Updated::NoIndex) => eprintln!(
                            "reproduce: note: no {} to add the {} page's summary to",
                            index.display(),
                            page.name
                        ),
                        Ok(index::Updated::NotAnIndex) => eprintln!(
                            "reproduce: note: {} has no summary table; left as it is",
                            index.display()
                        ),
                        Err(error) => {
                            progress.finish();
                            eprintln!("reproduce: cannot update {}: {error}", index.display());
                            return ExitCode::FAILURE;
                        }
                    }
                }
                pages.push(page);
            }
            Err(error) => {
                progress.finish();
                eprintln!("reproduce: the {name} group cannot run: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    progress.finish();
    if options.only.is_none()
        && let Err(error) = index::write(&options.out, &machine, &command, &pages, &settings)
    {
        eprintln!("reproduce: cannot write the index: {error}");
        return ExitCode::FAILURE;
    }
    eprintln!(
        "reproduce: wrote {} page(s) to {}",
        pages.len(),
        options.out.display()
    );
    print!("{}", report::summary_table(&pages));
    ExitCode::SUCCESS
}

/// Process launches of every group in a `--full` run: the bootstrap intervals resample
/// launches as well as rounds, so what differs from one process to the next (where the
/// heaps were placed, which core ran what) counts in the interval.
const FULL_LAUNCHES: usize = 3;

/// Runs `name` again in a fresh `reproduce` process and returns its machine check (spin
/// control, load average) and its rounds.
fn further_launch(name: &str) -> Result<((f64, String), String), String> {
    let executable = std::env::current_exe().map_err(|error| error.to_string())?;
    let output = std::process::Command::new(executable)
        .args(["--launch-child", name, "--full"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|error| format!("cannot launch the {name} group again: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "a further launch of the {name} group failed ({})",
            output.status
        ));
    }
    let text = String::from_utf8(output.stdout).map_err(|error| error.to_string())?;
    let (first, rounds) = text.split_once('\n').unwrap_or((&text, ""));
    let machine = Machine::parse_launch_line(first)
        .ok_or_else(|| format!("a further launch of {name} printed {first:?} first"))?;
    Ok((machine, rounds.to_owned()))
}

/// The child side of [`further_launch`]: runs the group and prints its rounds.
fn launch_child(name: &str, full: bool) -> Result<(), String> {
    let settings = if full {
        Settings::FULL
    } else {
        Settings::QUICK
    };
    let machine = Machine::describe();
    let mut progress = Progress::new(groups::steps(name, &settings));
    let page = groups::run(name, &settings, &machine, &mut progress)?;
    progress.finish();
    println!("{}", machine.launch_line());
    print!("{}", page.rounds_text());
    Ok(())
}
