//! executor: the HTTP benchmark. Our executor (per-request arenas over `SlabHeap`) and
//! tokio + hyper as deployed (its own executable, on the system allocator and on
//! mimalloc) serve the same "Hello, World!" service, each in a child process with the
//! same number of workers, under the suite's own keep-alive load generator
//! ([`pagekeep_alloc_test::bench::loadgen`]), in the same run with their rounds interleaved.
//! Then the same axum app ([`pagekeep_alloc_test::bench::axum_app`]) on both runtimes,
//! measured the same way and under wrk, and HTTP/2 under h2load (h2c with prior
//! knowledge, and over TLS) against the executor's examples and tokio + hyper's.

mod server;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use pagekeep_alloc_test::bench::h2load;
use pagekeep_alloc_test::bench::loadgen::{self, Load, Outcome, SteadyState, Stop};
use pagekeep_alloc_test::bench::machine::Machine;
use pagekeep_alloc_test::bench::measure::{Measurement, Settings, rotated_order};
use pagekeep_alloc_test::bench::report::{Better, Page, Row, Section, Target};
use pagekeep_alloc_test::bench::wrk::{self, Shape};

use crate::progress::Progress;
use server::ServerChild;

pub use server::child as server_child;

/// Worker threads of each server.
const WORKERS: usize = 2;
/// Keep-alive connections of the load generator (over its two threads).
const CONNECTIONS: usize = 64;
/// Requests before the first resident-memory reading.
const WARM_UP_REQUESTS: u64 = 10_000;
/// Requests (warm-up and rounds included) before the second reading.
const TOTAL_REQUESTS: u64 = 1_000_000;
/// Normal requests of the oom mix.
const OOM_NORMAL: u64 = 100_000;
/// `/oom` requests of the oom mix, spread evenly among the normal ones.
const OOM_HITS: u64 = 1_000;

/// A server: the kind `ServerChild::start` takes, and the name in the tables.
type Server = (&'static str, &'static str);

/// The hello servers, ours first.
const SERVERS: [Server; 3] = [
    ("ours", "executor"),
    ("tokio", "tokio + hyper (System)"),
    ("tokio-mimalloc", "tokio + hyper (mimalloc)"),
];

/// The axum servers, ours first.
const AXUM_SERVERS: [Server; 2] = [
    ("ours-axum", "executor + axum"),
    ("tokio-axum", "tokio + hyper + axum (System)"),
];

/// The wrk shapes of the axum servers: the plain ones (the app has no `/spin`).
const AXUM_WRK_SHAPES: [Shape; 2] = [WRK_SHAPES[0], WRK_SHAPES[1]];

/// The HTTP/2 pairs, ours first: the URL scheme h2load is given, and the servers (the
/// executor's examples built with `tls,http2`). Both pairs name their servers alike, so
/// the table has one column per runtime; the section's text says which example is which.
const H2_PAIRS: [(&str, [Server; 2]); 2] = [
    (
        "http",
        [("h2c-ours", "executor"), ("h2c-tokio", "tokio + hyper")],
    ),
    (
        "https",
        [("tls-ours", "executor"), ("tls-tokio", "tokio + hyper")],
    ),
];

/// Connections and streams per connection of the h2load rounds.
const H2_CONNECTIONS: usize = 8;
const H2_STREAMS: usize = 16;

/// The wrk shapes: one client thread and two (the first leaves a core to the servers),
/// 64 connections, and the imbalanced load (a quarter of the requests spin 2 ms).
const WRK_SHAPES: [Shape; 3] = [
    Shape {
        threads: 1,
        connections: CONNECTIONS,
        spin_every: None,
    },
    Shape {
        threads: 2,
        connections: CONNECTIONS,
        spin_every: None,
    },
    Shape {
        threads: 2,
        connections: CONNECTIONS,
        spin_every: Some(4),
    },
];

/// How many wrk rounds each server runs per shape, and how long each lasts (wrk takes
/// whole seconds).
fn wrk_rounds(settings: &Settings) -> (usize, Duration) {
    if settings.samples > Settings::QUICK.samples {
        (7, Duration::from_secs(5))
    } else {
        (3, Duration::from_secs(2))
    }
}

/// How many h2load rounds each server runs per pair, and the load of each.
fn h2_rounds(settings: &Settings) -> (usize, h2load::Shape) {
    let (round_count, requests) = if settings.samples > Settings::QUICK.samples {
        (7, 200_000)
    } else {
        (3, 50_000)
    };
    (
        round_count,
        h2load::Shape {
            requests,
            connections: H2_CONNECTIONS,
            streams: H2_STREAMS,
        },
    )
}

/// How many timed rounds each server runs, and how long each lasts.
fn rounds(settings: &Settings) -> (usize, Duration) {
    // Quick: 5 rounds of 1.5 s; full: 17 rounds of 7.5 s.
    ((settings.samples / 3) | 1, settings.sample_time * 375)
}

/// Progress steps of this group.
pub fn steps(settings: &Settings) -> usize {
    // For hello and axum: start and warm up, the rounds, the rest of the 1M requests,
    // the wrk shapes; the oom mix; the h2load pairs.
    let measured = 1 + rounds(settings).0 + 1;
    measured + 1 + WRK_SHAPES.len() + measured + AXUM_WRK_SHAPES.len() + H2_PAIRS.len()
}

/// A figure with its spread from one value per round, the rounds kept in order: the
/// servers' rounds are interleaved, so round `r` of one pairs with round `r` of another.
fn spread(values: Vec<f64>) -> Measurement {
    Measurement::from_rounds(values, 1)
}

fn load(server: &ServerChild, stop: Stop) -> Load {
    Load::new(server.address, CONNECTIONS, stop)
}

fn run_load(server: &ServerChild, load: &Load) -> Result<Outcome, String> {
    loadgen::run(load).map_err(|error| format!("load on the {} server: {error}", server.kind))
}

/// What one timed round measured on one server.
#[derive(Debug, Default)]
struct Figures {
    requests_per_second: Vec<f64>,
    p50_micros: Vec<f64>,
    p99_micros: Vec<f64>,
    cpu_micros_per_request: Vec<f64>,
    heap_calls_per_request: Vec<f64>,
    /// Main-path requests not answered 2xx during the rounds.
    failed: u64,
    /// Responses received so far, warm-up included.
    answered: u64,
}

/// Locks `mutex`, poisoned or not (it only holds readings).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn round(server: &ServerChild, duration: Duration, figures: &mut Figures) -> Result<(), String> {
    let cpu_before = server.cpu_time()?;
    // The heap figure counts the steady state only: from when every connection of the
    // round is open and has had its first response to when the load has stopped, before
    // its connections close. What opening and closing them costs varies from round to
    // round (with the high-water marks of the servers' tables) and stays out.
    let reading = || {
        server
            .counters()
            .map(|counters| (counters, server.counters_connections_opened()))
    };
    let begins = Mutex::new(None);
    let ends = Mutex::new(None);
    let outcome = loadgen::run_observed(
        &load(server, Stop::After(duration)),
        SteadyState {
            begins: &|| *lock(&begins) = Some(reading()),
            ends: &|| *lock(&ends) = Some(reading()),
        },
    )
    .map_err(|error| format!("load on the {} server: {error}", server.kind))?;
    let cpu = server.cpu_time()?.saturating_sub(cpu_before);
    let answered = outcome.answered();
    if answered == 0 {
        return Err(format!(
            "the {} server answered nothing in {duration:?}",
            server.kind
        ));
    }
    let (Some(begins), Some(ends)) = (
        begins.into_inner().unwrap_or_else(PoisonError::into_inner),
        ends.into_inner().unwrap_or_else(PoisonError::into_inner),
    ) else {
        return Err(format!(
            "the {} server never had all {CONNECTIONS} connections answered in {duration:?}",
            server.kind
        ));
    };
    let ((counters_before, opened_before), (counters_after, opened_after)) = (begins?, ends?);
    if opened_after != opened_before {
        // The counters connection was opened again in between, inside the window.
        return Err(format!(
            "the {} server closed the idle connection the counters are read over \
             within a round of {duration:?}",
            server.kind
        ));
    }
    // Requests as the server counted them: the load's and the `/__counters` request that
    // ends the window.
    let served = counters_after
        .requests
        .saturating_sub(counters_before.requests)
        .max(1);
    let heap_calls = counters_after
        .heap_calls
        .saturating_sub(counters_before.heap_calls);
    figures
        .requests_per_second
        .push(outcome.requests_per_second());
    figures
        .p50_micros
        .push(outcome.latency_micros.value_at_quantile(0.5) as f64);
    figures
        .p99_micros
        .push(outcome.latency_micros.value_at_quantile(0.99) as f64);
    figures
        .cpu_micros_per_request
        .push(cpu.as_secs_f64() * 1e6 / answered as f64);
    figures
        .heap_calls_per_request
        .push(heap_calls as f64 / served as f64);
    figures.failed += outcome.normal.failed();
    figures.answered += answered;
    Ok(())
}

/// What the wrk rounds of one shape measured on one server.
#[derive(Debug, Default)]
struct WrkFigures {
    requests_per_second: Vec<f64>,
    p50_micros: Vec<f64>,
    p99_micros: Vec<f64>,
    p999_micros: Vec<f64>,
    errors: u64,
}

/// The wrk rounds of every shape of `shapes` on every server (`figures[shape][server]`),
/// the servers' rounds interleaved as in the main rounds; `None` if wrk is not installed.
/// `app` names them in the progress lines.
fn wrk_shapes(
    app: &str,
    servers: &[ServerChild],
    shapes: &[Shape],
    settings: &Settings,
    progress: &mut Progress,
) -> Result<Option<Vec<Vec<WrkFigures>>>, String> {
    let (round_count, round_time) = wrk_rounds(settings);
    let installed = wrk::available();
    let mut all = Vec::new();
    for shape in shapes {
        progress.step(&format!(
            "{app}: {}, {round_count} rounds of {round_time:?} on each server",
            shape.describe()
        ));
        if !installed {
            continue;
        }
        let mut figures: Vec<WrkFigures> = servers.iter().map(|_| WrkFigures::default()).collect();
        for number in 0..round_count {
            for index in rotated_order(number, servers.len()) {
                let outcome =
                    wrk::run(servers[index].address, shape, round_time).map_err(|error| {
                        format!("wrk on the {} server: {error}", servers[index].kind)
                    })?;
                let figures = &mut figures[index];
                figures
                    .requests_per_second
                    .push(outcome.requests_per_second);
                figures.p50_micros.push(outcome.p50_micros);
                figures.p99_micros.push(outcome.p99_micros);
                figures.p999_micros.push(outcome.p999_micros);
                figures.errors += outcome.errors;
            }
        }
        all.push(figures);
    }
    Ok(installed.then_some(all))
}

/// Memory of a server at one moment, in KiB.
#[derive(Clone, Copy, Debug, Default)]
struct Memory {
    /// `VmRSS`.
    resident_kib: f64,
    /// The part of it given back with `MADV_FREE` and not yet reclaimed.
    lazy_free_kib: f64,
}

impl Memory {
    fn of(server: &ServerChild) -> Result<Memory, String> {
        Ok(Memory {
            resident_kib: kib(server.resident_bytes()?),
            lazy_free_kib: kib(server.lazy_free_bytes()?),
        })
    }

    /// Resident memory the kernel cannot take back without the process's help.
    fn held_kib(&self) -> f64 {
        self.resident_kib - self.lazy_free_kib
    }
}

/// Memory of one server after the warm-up and after 1M requests.
#[derive(Debug, Default)]
struct Resident {
    warm: Memory,
    million: Memory,
}

/// The oom mix on our server.
#[derive(Debug)]
struct OomMix {
    normal_failed: u64,
    oom_answered_503: u64,
    over_budget: u64,
    before: Memory,
    after: Memory,
}

fn kib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0
}

/// The servers of one app, started, and what their main rounds measured.
struct Measured {
    servers: Vec<ServerChild>,
    figures: Vec<Figures>,
    resident: Vec<Resident>,
}

/// Starts `kinds` with their warm-up, runs their timed rounds (interleaved) and drives
/// each on to 1M requests: the throughput, latency, CPU and fallback-heap figures of the
/// rounds, and resident memory after the warm-up and after 1M requests. `app` names
/// them in the progress lines.
fn measure(
    app: &str,
    kinds: &[Server],
    settings: &Settings,
    progress: &mut Progress,
) -> Result<Measured, String> {
    let (round_count, round_time) = rounds(settings);
    progress.step(&format!(
        "{app}: starting the {} servers, {WARM_UP_REQUESTS} warm-up requests each",
        kinds.len()
    ));
    let servers = kinds
        .iter()
        .map(|(kind, _)| ServerChild::start(kind, WORKERS))
        .collect::<Result<Vec<_>, _>>()?;
    let mut figures: Vec<Figures> = kinds.iter().map(|_| Figures::default()).collect();
    let mut resident: Vec<Resident> = kinds.iter().map(|_| Resident::default()).collect();
    for (index, server) in servers.iter().enumerate() {
        let outcome = run_load(server, &load(server, Stop::Requests(WARM_UP_REQUESTS)))?;
        figures[index].answered += outcome.answered();
        resident[index].warm = Memory::of(server)?;
    }
    for number in 0..round_count {
        progress.step(&format!(
            "{app}: round {}/{round_count}, {round_time:?} on each server",
            number + 1
        ));
        // Rotate who goes first, so none always runs right after the same other.
        for index in rotated_order(number, servers.len()) {
            round(&servers[index], round_time, &mut figures[index])?;
        }
    }
    progress.step(&format!("{app}: each server up to 1M requests"));
    for (index, server) in servers.iter().enumerate() {
        let left = TOTAL_REQUESTS.saturating_sub(figures[index].answered);
        if left > 0 {
            let outcome = run_load(server, &load(server, Stop::Requests(left)))?;
            figures[index].answered += outcome.answered();
        }
        resident[index].million = Memory::of(server)?;
    }
    Ok(Measured {
        servers,
        figures,
        resident,
    })
}

/// Runs the group.
pub fn run(settings: Settings, machine: &Machine, progress: &mut Progress) -> Result<Page, String> {
    let (round_count, round_time) = rounds(&settings);
    let hello = measure("executor", &SERVERS, &settings, progress)?;
    progress.step("executor: the oom mix on our server");
    let oom = oom_mix(&hello.servers[0])?;
    let wrk_figures = wrk_shapes("executor", &hello.servers, &WRK_SHAPES, &settings, progress)?;
    drop(hello.servers);
    let axum = measure("executor, axum", &AXUM_SERVERS, &settings, progress)?;
    let axum_wrk = wrk_shapes(
        "executor, axum",
        &axum.servers,
        &AXUM_WRK_SHAPES,
        &settings,
        progress,
    )?;
    drop(axum.servers);
    let h2 = h2_pairs(&settings, progress)?;
    let mut page = page(
        &hello.figures,
        &hello.resident,
        &oom,
        round_count,
        round_time,
        machine,
    );
    page.sections
        .push(wrk_section(wrk_figures.as_deref(), &settings, machine));
    page.sections.push(axum_section(
        &axum.figures,
        &axum.resident,
        axum_wrk.as_deref(),
        &settings,
        machine,
    ));
    page.sections
        .push(h2_section(h2.as_deref(), &settings, machine));
    Ok(page)
}

/// What the h2load rounds of one pair measured on one server.
#[derive(Debug, Default)]
struct H2Figures {
    requests_per_second: Vec<f64>,
    mean_micros: Vec<f64>,
    max_micros: Vec<f64>,
    errors: u64,
}

/// The h2load rounds of every pair (`figures[pair][server]`), each pair's servers
/// started together and their rounds interleaved; `None` if h2load is not installed.
fn h2_pairs(
    settings: &Settings,
    progress: &mut Progress,
) -> Result<Option<Vec<Vec<H2Figures>>>, String> {
    let (round_count, shape) = h2_rounds(settings);
    let installed = h2load::available();
    let mut all = Vec::new();
    for (scheme, pair) in &H2_PAIRS {
        progress.step(&format!(
            "executor: {} over {scheme}, {round_count} rounds on each server",
            shape.describe()
        ));
        if !installed {
            continue;
        }
        let servers = pair
            .iter()
            .map(|(kind, _)| ServerChild::start(kind, WORKERS))
            .collect::<Result<Vec<_>, _>>()?;
        let mut figures: Vec<H2Figures> = pair.iter().map(|_| H2Figures::default()).collect();
        for number in 0..round_count {
            for index in rotated_order(number, servers.len()) {
                let server = &servers[index];
                let url = format!("{scheme}://{}/", server.address);
                let outcome = h2load::run(&url, &shape)
                    .map_err(|error| format!("h2load on the {} server: {error}", server.kind))?;
                let figures = &mut figures[index];
                figures
                    .requests_per_second
                    .push(outcome.requests_per_second);
                figures.mean_micros.push(outcome.mean_micros);
                figures.max_micros.push(outcome.max_micros);
                figures.errors += outcome.errors;
            }
        }
        all.push(figures);
    }
    Ok(installed.then_some(all))
}

/// 100k normal requests with `/oom` as every 101st, on our server.
fn oom_mix(server: &ServerChild) -> Result<OomMix, String> {
    let before = Memory::of(server)?;
    let counters_before = server.counters()?;
    let total = OOM_NORMAL + OOM_HITS;
    let load = load(server, Stop::Requests(total)).mix("/oom", total / OOM_HITS);
    let outcome = run_load(server, &load)?;
    let counters_after = server.counters()?;
    let after = Memory::of(server)?;
    if outcome.normal.answered() + outcome.normal.lost != OOM_NORMAL
        || outcome.mixed.answered() + outcome.mixed.lost != OOM_HITS
    {
        return Err(format!(
            "the oom mix sent {:?} normal and {:?} /oom requests, not {OOM_NORMAL} and {OOM_HITS}",
            outcome.normal, outcome.mixed
        ));
    }
    Ok(OomMix {
        normal_failed: outcome.normal.failed(),
        oom_answered_503: outcome.mixed.other_status,
        over_budget: counters_after
            .over_budget
            .saturating_sub(counters_before.over_budget),
        before,
        after,
    })
}

/// One figure per server of `servers`, named, ours first.
fn per_server_of(
    servers: &[Server],
    of: impl Fn(usize) -> Measurement,
) -> Vec<(String, Measurement)> {
    servers
        .iter()
        .enumerate()
        .map(|(index, (_, name))| (name.to_string(), of(index)))
        .collect()
}

/// One figure per hello server, named, ours first.
fn per_server(of: impl Fn(usize) -> Measurement) -> Vec<(String, Measurement)> {
    per_server_of(&SERVERS, of)
}

const OURS: &str = SERVERS[0].1;

/// The section of the wrk shapes: for each, throughput, latency percentiles and errors.
fn wrk_section(
    figures: Option<&[Vec<WrkFigures>]>,
    settings: &Settings,
    machine: &Machine,
) -> Section {
    let (round_count, round_time) = wrk_rounds(settings);
    let mut description = format!(
        "The same servers under wrk (Debian's `wrk` 4, a client this project did not \
         write), run after the rounds above: {round_count} rounds of {} s per server and \
         shape, the servers' rounds interleaved, the figure the median round. wrk's own \
         latency percentiles (from sending a request to its response), printed by a Lua \
         `done` hook. With one client thread a core is left to the servers, so a \
         scheduler that leaves a descheduled worker's connections waiting shows in the \
         tail; the imbalanced shape sends every fourth request of each client thread to \
         `{}`, whose handler burns {} ms of CPU on the worker before answering.",
        round_time.as_secs(),
        wrk::SPIN_PATH,
        wrk::SPIN_TIME.as_millis()
    );
    let rows = wrk_rows(&SERVERS, &WRK_SHAPES, figures, &mut description, machine);
    Section {
        title: "Under wrk".into(),
        description,
        unit: "requests per second, µs, or count as named".into(),
        rows,
        line_plot: None,
    }
}

/// The rows of the wrk rounds of `shapes` on `servers` (throughput, latency percentiles
/// and errors for each shape), or, when wrk was not installed (`figures` is `None`),
/// none and a sentence saying so added to `description`.
fn wrk_rows(
    servers: &[Server],
    shapes: &[Shape],
    figures: Option<&[Vec<WrkFigures>]>,
    description: &mut String,
    machine: &Machine,
) -> Vec<Row> {
    let mut rows = Vec::new();
    match figures {
        None => description.push_str(
            " wrk is not installed on this machine (`apt-get install wrk`): not measured.",
        ),
        Some(figures) => {
            for (shape, figures) in shapes.iter().zip(figures) {
                let name = shape.describe();
                let both = |of: &dyn Fn(&WrkFigures) -> &Vec<f64>| {
                    per_server_of(servers, |index| spread(of(&figures[index]).clone()))
                };
                rows.push(
                    Row::new(
                        format!("{name}: requests per second"),
                        both(&|f| &f.requests_per_second),
                    )
                    .better(Better::Higher)
                    .target(Target::at_least_best(1.0))
                    .multi_threaded(machine),
                );
                rows.push(Row::new(
                    format!("{name}: p50 latency (µs)"),
                    both(&|f| &f.p50_micros),
                ));
                rows.push(
                    Row::new(
                        format!("{name}: p99 latency (µs)"),
                        both(&|f| &f.p99_micros),
                    )
                    .target(Target::at_most_best(1.0)),
                );
                rows.push(Row::new(
                    format!("{name}: p99.9 latency (µs)"),
                    both(&|f| &f.p999_micros),
                ));
                rows.push(
                    Row::new(
                        format!("{name}: socket errors and non-2xx responses (count)"),
                        per_server_of(servers, |index| {
                            Measurement::exact(figures[index].errors as f64)
                        }),
                    )
                    .target(Target::at_most_value(0.0)),
                );
            }
        }
    }
    rows
}

/// The fallback-heap row of ours (the peers' allocators count nothing), the target 0.
fn heap_calls_row(ours: &str, figures: &Figures) -> Row {
    Row::new(
        "calls into the fallback heap per request, steady state",
        vec![(
            ours.to_owned(),
            spread(figures.heap_calls_per_request.clone()),
        )],
    )
    .target(Target::at_most_value(0.0))
}

/// The resident-memory rows of `servers`: after the warm-up, after 1M requests, the
/// growth between them (the target: within 1 MiB) and the same without lazily freed
/// pages.
fn memory_rows(servers: &[Server], resident: &[Resident]) -> Vec<Row> {
    let exact = |value: f64| Measurement::exact(value);
    vec![
        Row::new(
            format!("resident after the first {WARM_UP_REQUESTS} requests"),
            per_server_of(servers, |index| exact(resident[index].warm.resident_kib)),
        ),
        Row::new(
            "resident after 1M requests",
            per_server_of(servers, |index| exact(resident[index].million.resident_kib)),
        ),
        Row::new(
            "growth from the first 10k requests to 1M",
            per_server_of(servers, |index| {
                exact(resident[index].million.resident_kib - resident[index].warm.resident_kib)
            }),
        )
        .target(Target::at_most_value(1024.0)),
        Row::new(
            "the same growth, lazily freed (MADV_FREE) pages left out",
            per_server_of(servers, |index| {
                exact(resident[index].million.held_kib() - resident[index].warm.held_kib())
            }),
        ),
    ]
}

/// The section of the axum app: wrk's figures, ours's calls into the fallback heap, and
/// resident memory over 1M requests.
fn axum_section(
    figures: &[Figures],
    resident: &[Resident],
    wrk_figures: Option<&[Vec<WrkFigures>]>,
    settings: &Settings,
    machine: &Machine,
) -> Section {
    let (round_count, round_time) = rounds(settings);
    let (wrk_count, wrk_time) = wrk_rounds(settings);
    let mut description = format!(
        "The axum app of the executor's `axum` example (routes with path and JSON \
         extractors, a shared state, a middleware that counts requests and adds a header; \
         `pagekeep_alloc_test::bench::axum_app`) on our executor \
         (`reproduce --http-server-child ours-axum`, `Server::serve_service`, the counting \
         heap under the router as for hello) and on tokio's multi-thread runtime \
         (`axum-tokio`, the router called from hyper set up as `tokio-hello` sets it up, \
         on the system allocator), {WORKERS} workers each, all requests to `/` (the \
         greeting from the state, through the middleware). The servers are measured as \
         hello is above: {WARM_UP_REQUESTS} warm-up requests, {round_count} rounds of \
         {:.1} s of the suite's load generator, interleaved, for the calls into the \
         fallback heap per request in steady state (ours only: the point of the \
         per-request arenas is that an axum request, extractors, middleware and \
         response included, makes none), then on to {TOTAL_REQUESTS} requests for \
         resident memory, then wrk: {wrk_count} rounds of {} s per server and shape, \
         interleaved, the figure the median round.",
        round_time.as_secs_f64(),
        wrk_time.as_secs()
    );
    let mut rows = wrk_rows(
        &AXUM_SERVERS,
        &AXUM_WRK_SHAPES,
        wrk_figures,
        &mut description,
        machine,
    );
    rows.push(heap_calls_row(AXUM_SERVERS[0].1, &figures[0]));
    rows.push(
        Row::new(
            "requests to / not answered 200 during the load generator's rounds",
            per_server_of(&AXUM_SERVERS, |index| {
                Measurement::exact(figures[index].failed as f64)
            }),
        )
        .target(Target::at_most_value(0.0)),
    );
    rows.extend(memory_rows(&AXUM_SERVERS, resident));
    Section {
        title: "axum".into(),
        description,
        unit: "requests per second, µs, calls per request, count or KiB as named".into(),
        rows,
        line_plot: None,
    }
}

/// The section of the h2load rounds.
fn h2_section(
    figures: Option<&[Vec<H2Figures>]>,
    settings: &Settings,
    machine: &Machine,
) -> Section {
    let (round_count, shape) = h2_rounds(settings);
    let mut description = format!(
        "HTTP/2 under h2load (Debian's `nghttp2-client`): `{} -t 1`, {round_count} rounds \
         per server, the pair's rounds interleaved, the figure the median round. In \
         cleartext with prior knowledge (h2c), ours is the executor's `hello` example and \
         tokio + hyper its `https_tokio` example with `PLAIN=1` (hyper-util's server that \
         speaks HTTP/1.1 and HTTP/2), both answering \"Hello, World!\"; over TLS (ALPN \
         `h2`, a self-signed certificate made at start-up, rustls with ring on both), \
         ours is the `https` example and tokio + hyper `https_tokio`, both answering \
         \"Hello over TLS\". The examples are built with `--features tls,http2`, run \
         with {WORKERS} workers, each on its own allocator (ours the executor's request \
         allocator, tokio's the system one), and count nothing. h2load gives no \
         percentiles: the latency rows are its mean and maximum time for a request.",
        shape.describe()
    );
    let mut rows = Vec::new();
    match figures {
        None => description.push_str(
            " h2load is not installed on this machine (`apt-get install nghttp2-client`): \
             not measured.",
        ),
        Some(figures) => {
            for ((scheme, pair), figures) in H2_PAIRS.iter().zip(figures) {
                let over = if *scheme == "https" { "TLS" } else { "h2c" };
                let both = |of: &dyn Fn(&H2Figures) -> &Vec<f64>| {
                    per_server_of(pair, |index| spread(of(&figures[index]).clone()))
                };
                rows.push(
                    Row::new(
                        format!("{over}: requests per second"),
                        both(&|f| &f.requests_per_second),
                    )
                    .better(Better::Higher)
                    .in_summary()
                    .multi_threaded(machine),
                );
                rows.push(Row::new(
                    format!("{over}: mean time for a request (µs)"),
                    both(&|f| &f.mean_micros),
                ));
                rows.push(Row::new(
                    format!("{over}: longest time for a request (µs)"),
                    both(&|f| &f.max_micros),
                ));
                rows.push(
                    Row::new(
                        format!("{over}: failed, errored, timed-out and 4xx/5xx requests (count)"),
                        per_server_of(pair, |index| {
                            Measurement::exact(figures[index].errors as f64)
                        }),
                    )
                    .target(Target::at_most_value(0.0)),
                );
            }
        }
    }
    Section {
        title: "HTTP/2 under h2load".into(),
        description,
        unit: "requests per second, µs, or count as named".into(),
        rows,
        line_plot: None,
    }
}

fn page(
    figures: &[Figures],
    resident: &[Resident],
    oom: &OomMix,
    round_count: usize,
    round_time: Duration,
    machine: &Machine,
) -> Page {
    let both = |of: &dyn Fn(&Figures) -> &Vec<f64>| {
        per_server(|index| spread(of(&figures[index]).clone()))
    };
    let exact = |value: f64| Measurement::exact(value);
    let throughput = Row::new(
        "requests per second, 64 keep-alive connections",
        both(&|f| &f.requests_per_second),
    )
    .better(Better::Higher)
    .target(Target::at_least_best(1.0))
    .multi_threaded(machine);
    let latency = vec![
        Row::new("p50 latency", both(&|f| &f.p50_micros)),
        Row::new("p99 latency", both(&|f| &f.p99_micros)),
    ];
    let cpu = Row::new(
        "server CPU time (user + system) per request",
        both(&|f| &f.cpu_micros_per_request),
    )
    .target(Target::at_most_best(1.0));
    // Only ours counts its heap calls: the peers run as deployed, on an allocator that
    // does not count.
    let heap = heap_calls_row(OURS, &figures[0]);
    let failures = Row::new(
        "requests to / not answered 200 during the rounds",
        per_server(|index| exact(figures[index].failed as f64)),
    )
    .target(Target::at_most_value(0.0));
    let memory = memory_rows(&SERVERS, resident);
    let ours_only = |name: &str, value: f64| Row::new(name, vec![(OURS.to_owned(), exact(value))]);
    let oom_rows = vec![
        ours_only(
            &format!("normal requests not answered 200 (of {OOM_NORMAL})"),
            oom.normal_failed as f64,
        )
        .target(Target::at_most_value(0.0)),
        ours_only(
            &format!("/oom requests answered 503 (of {OOM_HITS})"),
            oom.oom_answered_503 as f64,
        ),
        ours_only(
            "handlers cancelled over budget (server counter)",
            oom.over_budget as f64,
        ),
        ours_only("resident before the mix (KiB)", oom.before.resident_kib),
        ours_only("resident after the mix (KiB)", oom.after.resident_kib),
        ours_only(
            "resident growth over the mix (KiB)",
            oom.after.resident_kib - oom.before.resident_kib,
        )
        .target(Target::at_most_value(1024.0)),
        ours_only(
            "lazily freed (MADV_FREE) pages in resident after the mix (KiB)",
            oom.after.lazy_free_kib,
        ),
        ours_only(
            "resident growth over the mix, lazily freed pages left out (KiB)",
            oom.after.held_kib() - oom.before.held_kib(),
        ),
    ];
    let rounds_text = format!(
        "{round_count} rounds of {:.1} s per server, the servers' rounds interleaved \
         (who goes first rotates); the figure is the median round, the spread the \
         10th–90th percentile of the rounds, the ratio the median of per-round ratios",
        round_time.as_secs_f64()
    );
    Page {
        name: "executor".into(),
        title: "executor: HTTP hello and axum against tokio + hyper".into(),
        introduction: format!(
            "The same plaintext \"Hello, World!\" service (hyper 1, HTTP/1.1 keep-alive) \
             on our executor, where every request runs in its own arena from an arena pool \
             ({} arenas of {} KiB) and everything else comes from SlabHeap, and on tokio's \
             multi-thread runtime with hyper-util's `TokioIo`, as users deploy it: its own \
             executable (`tokio-hello`, on the system allocator, and `tokio-hello-mimalloc`, \
             the same program with mimalloc as its global allocator, a second row), with \
             hyper set up as ours sets it up (keep-alive on, hyper's header-read timer off, \
             a 16 KiB buffer limit; ours keeps its header-read and idle timeouts with a \
             watchdog of its own, tokio's server has none). Ours runs in a child process of \
             `reproduce` (`reproduce --http-server-child ours --workers {WORKERS}`), whose \
             global allocator is `ArenaRouter` over a SlabHeap that counts the calls made \
             into it; the peers' allocators count nothing. Every server has {WORKERS} \
             worker threads, and ratios are against the strongest peer. \
             The load generator is part of the suite (`pagekeep_alloc_test::bench::loadgen`): \
             {CONNECTIONS} keep-alive connections over 2 threads with mio, one request in \
             flight per connection, latency from writing a request to its last byte. \
             Server and load generator share the machine's cores, so absolute figures say \
             little; compare the servers in the same run. Each server first answers \
             {WARM_UP_REQUESTS} warm-up requests, then runs its timed rounds, then is \
             driven on to {TOTAL_REQUESTS} requests in all. The last sections measure \
             an axum app on both runtimes the same way, and HTTP/2 under h2load.",
            server::ARENAS,
            server::ARENA_BYTES >> 10
        ),
        sections: vec![
            Section {
                title: "Throughput".into(),
                description: format!(
                    "Responses received per second over each round ({rounds_text})."
                ),
                unit: "requests per second".into(),
                rows: vec![throughput],
                line_plot: None,
            },
            Section {
                title: "Latency".into(),
                description: format!(
                    "Percentiles of each round's latency histogram ({rounds_text})."
                ),
                unit: "µs".into(),
                rows: latency,
                line_plot: None,
            },
            Section {
                title: "Server CPU per request".into(),
                description: format!(
                    "The server process's user + system time over a round (`utime + stime` \
                     of `/proc/PID/stat`, 10 ms ticks) divided by the responses of the \
                     round ({rounds_text}). Most of it is the kernel's TCP path."
                ),
                unit: "µs per request".into(),
                rows: vec![cpu],
                line_plot: None,
            },
            Section {
                title: "Calls into the fallback heap".into(),
                description: format!(
                    "Calls of `alloc`, `alloc_zeroed` and `realloc` that reach SlabHeap \
                     under the router, per request the server received, over each round \
                     ({rounds_text}), in steady state: read from the server \
                     (`/__counters`, over a keep-alive connection of its own) once all \
                     64 connections of the round are open and have had a response, and \
                     after the round, so what opening the connections costs is left out. \
                     For ours these are the allocations made outside any \
                     request arena (connection state, hyper's per-request work done in \
                     the connection task, the runtime) and spills; allocations in a \
                     request's arena are not counted. The peers run as deployed, on \
                     allocators that count nothing, so the first row has ours only (tokio \
                     has no arenas: every allocation it makes would be one). The second \
                     row checks that the rounds had no failures."
                ),
                unit: "calls per request (count for failures)".into(),
                rows: vec![heap, failures],
                line_plot: None,
            },
            Section {
                title: "Resident memory".into(),
                description: format!(
                    "`VmRSS` of the server process (`/proc/PID/status`) after its \
                     {WARM_UP_REQUESTS} warm-up requests and after {TOTAL_REQUESTS} \
                     requests in all. The target: growth within 1 MiB. Pages an allocator \
                     gave back with `MADV_FREE` stay in `VmRSS` until the kernel needs \
                     them (`LazyFree` of `/proc/PID/smaps_rollup`); the last row leaves \
                     them out."
                ),
                unit: "KiB".into(),
                rows: memory,
                line_plot: None,
            },
            Section {
                title: "The oom mix".into(),
                description: format!(
                    "After the 1M requests, our server gets {OOM_NORMAL} requests to `/` \
                     with `/oom` as one request in {} ({OOM_HITS} in all) over the same \
                     {CONNECTIONS} connections. `/oom` allocates 64 KiB blocks without \
                     bound, sleeping 1 ms between them, until the server cancels it at its \
                     budget ({} KiB) with 503. The targets: no normal request fails, and \
                     resident memory ends within 1 MiB of where it started. tokio has no \
                     budget to enforce, so it does not run this mix.",
                    (OOM_NORMAL + OOM_HITS) / OOM_HITS,
                    server::ARENA_BYTES >> 10
                ),
                unit: "requests, or KiB as named".into(),
                rows: oom_rows,
                line_plot: None,
            },
        ],
    }
}
