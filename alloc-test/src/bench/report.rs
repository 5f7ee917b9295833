//! Pages of `info/`: tables of medians with their spread, ratios against the best peer,
//! targets, and a plot per section.

use std::fmt::Write as _;
use std::path::Path;
use std::{fs, io};

use super::machine::Machine;
use super::measure::Measurement;
use super::stats::{Estimate, Verdict, bootstrap_median, paired_ratios};
use super::svg;

/// Which way is better for a figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Times, bytes: lower is better.
    Lower,
    /// Throughput, scaling: higher is better.
    Higher,
}

/// Whom a target compares against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Against {
    /// The best peer of the row.
    BestPeer,
    /// The named peer.
    Peer(String),
    /// A fixed value: ours itself must be at most (or at least) `ratio`.
    Value,
}

/// A target from the issues: ours divided by the peer must be at most (for
/// [`Better::Lower`]) or at least (for [`Better::Higher`]) `ratio`.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Whom to compare with.
    pub against: Against,
    /// The bound on ours / theirs.
    pub ratio: f64,
}

impl Target {
    /// At most `ratio` times the best peer (lower is better).
    pub fn at_most_best(ratio: f64) -> Target {
        Target {
            against: Against::BestPeer,
            ratio,
        }
    }

    /// At least `ratio` times the best peer (used with [`Better::Higher`]).
    pub fn at_least_best(ratio: f64) -> Target {
        Target {
            against: Against::BestPeer,
            ratio,
        }
    }

    /// At most `ratio` times the named peer.
    pub fn at_most(peer: &str, ratio: f64) -> Target {
        Target {
            against: Against::Peer(peer.to_owned()),
            ratio,
        }
    }

    /// At least `ratio` times the named peer (used with [`Better::Higher`]).
    pub fn at_least(peer: &str, ratio: f64) -> Target {
        Target {
            against: Against::Peer(peer.to_owned()),
            ratio,
        }
    }

    /// Our figure itself must be at most `value` (a count or a size with an absolute
    /// bound, such as zero heap calls per request; used with [`Better::Lower`]).
    pub fn at_most_value(value: f64) -> Target {
        Target {
            against: Against::Value,
            ratio: value,
        }
    }

    /// Our figure itself must reach `value` (a row whose figure is already a ratio, such
    /// as scaling from one thread to two; used with [`Better::Higher`]).
    pub fn at_least_value(value: f64) -> Target {
        Target {
            against: Against::Value,
            ratio: value,
        }
    }
}

/// One workload measured on several implementations.
#[derive(Clone, Debug)]
pub struct Row {
    /// What was measured.
    pub workload: String,
    /// Implementation name and its figure, ours first.
    pub results: Vec<(String, Measurement)>,
    /// Which way is better.
    pub better: Better,
    /// The target, if an issue names one.
    pub target: Option<Target>,
    /// The figure involves two threads and the machine's spin control did not scale.
    pub unreliable: bool,
    /// Listed in the summary table (with its ratio against the best peer) even without
    /// a target.
    pub in_summary: bool,
}

impl Row {
    /// A row of lower-is-better figures with ours first.
    pub fn new(workload: impl Into<String>, results: Vec<(String, Measurement)>) -> Row {
        Row {
            workload: workload.into(),
            results,
            better: Better::Lower,
            target: None,
            unreliable: false,
            in_summary: false,
        }
    }

    /// Sets the target.
    pub fn target(mut self, target: Target) -> Row {
        self.target = Some(target);
        self
    }

    /// Lists the row in the summary table even though no issue names a target for it:
    /// its ratio against the best peer is shown with "-" as the target.
    pub fn in_summary(mut self) -> Row {
        self.in_summary = true;
        self
    }

    /// Marks which way is better.
    pub fn better(mut self, better: Better) -> Row {
        self.better = better;
        self
    }

    /// Marks the row unreliable when the machine cannot run two threads at once.
    pub fn multi_threaded(mut self, machine: &Machine) -> Row {
        self.unreliable = !machine.runs_two_threads_at_once();
        self
    }

    /// Our figure.
    pub fn ours(&self) -> Option<&(String, Measurement)> {
        self.results.first()
    }

    /// The best peer's name and figure: the strongest peer for the job, by median.
    pub fn best_peer(&self) -> Option<&(String, Measurement)> {
        let peers = self.results.iter().skip(1);
        match self.better {
            Better::Lower => peers.min_by(|a, b| a.1.median.total_cmp(&b.1.median)),
            Better::Higher => peers.max_by(|a, b| a.1.median.total_cmp(&b.1.median)),
        }
    }

    /// Ours divided by the peer the target names (or the best peer), with its interval:
    /// the median of the per-round ratios and a bootstrap interval over the rounds (and
    /// launches) when both figures were measured in the same interleaved rounds, else
    /// the ratio of the two figures, with no width. `None` when that peer's figure is
    /// zero.
    pub fn ratio(&self) -> Option<(String, Estimate)> {
        let ours = &self.ours()?.1;
        let peer = match self.target.as_ref().map(|target| &target.against) {
            Some(Against::Peer(name)) => self.results.iter().find(|(peer, _)| peer == name)?,
            Some(Against::Value) => {
                let itself = bootstrap_median(&ours.rounds).unwrap_or(Estimate::exact(ours.median));
                return Some(("(itself)".to_owned(), itself));
            }
            _ => self.best_peer()?,
        };
        // A peer at zero (a count that is zero) has no meaningful ratio.
        if peer.1.median == 0.0 {
            return None;
        }
        let estimate = paired_ratios(&ours.rounds, &peer.1.rounds)
            .and_then(|ratios| bootstrap_median(&ratios))
            .unwrap_or(Estimate::exact(ours.median / peer.1.median));
        Some((peer.0.clone(), estimate))
    }

    /// What the interval of the ratio says about the target (`None` without a target):
    /// met only when the whole interval clears it, unclear when it straddles it.
    pub fn met(&self) -> Option<Verdict> {
        let target = self.target.as_ref()?;
        let (_, ratio) = self.ratio()?;
        Some(Verdict::of(
            ratio,
            target.ratio,
            self.better == Better::Lower,
        ))
    }

    /// The verdict column: met / unclear / no, with the machine's warning.
    pub fn verdict_text(&self) -> String {
        match (self.met(), self.unreliable) {
            (Some(verdict), true) => format!("{} (unreliable: machine busy)", verdict.text()),
            (None, true) => "unreliable (machine busy)".to_owned(),
            (Some(verdict), false) => verdict.text().to_owned(),
            (None, false) => "-".to_owned(),
        }
    }

    /// The target in words, e.g. "≤ 0.80x jemalloc".
    pub fn target_text(&self) -> String {
        match &self.target {
            None => "-".to_owned(),
            Some(target) => {
                let bound = if self.better == Better::Lower {
                    "≤"
                } else {
                    "≥"
                };
                let against = match &target.against {
                    Against::BestPeer => "best peer".to_owned(),
                    Against::Peer(peer) => peer.clone(),
                    Against::Value => return format!("{bound} {:.2}", target.ratio),
                };
                format!("{bound} {:.2}x {against}", target.ratio)
            }
        }
    }
}

/// A line chart drawn under a section's table and bar chart: figures followed over time
/// (or another continuous quantity), one line per implementation.
#[derive(Clone, Debug)]
pub struct LinePlot {
    /// The plot's title; the file is `<page>-<title as a slug>.svg`.
    pub title: String,
    /// What the x axis measures, with its unit, e.g. "seconds since the frees".
    pub x_unit: String,
    /// What the y axis measures, with its unit.
    pub y_unit: String,
    /// One line per implementation, ours first.
    pub series: Vec<svg::Series>,
}

/// A section of a page: one table and its plot.
#[derive(Clone, Debug)]
pub struct Section {
    /// Heading.
    pub title: String,
    /// What is measured and how, in a few sentences.
    pub description: String,
    /// The unit of the figures, e.g. "ns per operation".
    pub unit: String,
    /// The rows.
    pub rows: Vec<Row>,
    /// A line chart drawn after the bar chart of the rows, if the section has one.
    pub line_plot: Option<LinePlot>,
}

/// A page of `info/`.
#[derive(Clone, Debug)]
pub struct Page {
    /// The group's short name: the file is `info/<name>.md`.
    pub name: String,
    /// The page title.
    pub title: String,
    /// What the group measures.
    pub introduction: String,
    /// The sections.
    pub sections: Vec<Section>,
}

/// Formats a figure with three significant digits (whole numbers and figures of 100 or
/// more without decimals). A small non-zero figure keeps its three digits (0.000200, not
/// 0.000), so that a verdict against a bound of zero can be read off the table.
///
/// # Examples
///
/// ```
/// use pagekeep_alloc_test::bench::report::figure;
///
/// assert_eq!(figure(1234.5), "1234");
/// assert_eq!(figure(3.14159), "3.14");
/// assert_eq!(figure(0.5), "0.500");
/// assert_eq!(figure(0.000_2), "0.000200");
/// assert_eq!(figure(0.0), "0");
/// ```
pub fn figure(value: f64) -> String {
    // Whole numbers (counts) and large figures need no decimals.
    if (value.fract() == 0.0 && value.abs() < 1e15) || value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        // Below 1: as many decimals as three significant digits need (at most 12).
        let decimals = (2.0 - value.abs().log10().floor()).clamp(3.0, 12.0) as usize;
        format!("{value:.decimals$}")
    }
}

/// A ratio of ours to a peer with its interval in brackets, and "N x faster" for
/// clarity when ours is lower.
fn ratio_text(better: Better, peer: &str, ratio: Estimate) -> String {
    let interval = if ratio.is_exact() {
        String::new()
    } else {
        format!(" [{}–{}]", figure(ratio.low), figure(ratio.high))
    };
    if peer == "(itself)" {
        return format!("{}{interval}", figure(ratio.value));
    }
    let faster = match better {
        Better::Lower if ratio.value > 0.0 && ratio.value < 1.0 => {
            format!(" ({}x faster)", figure(1.0 / ratio.value))
        }
        Better::Higher if ratio.value > 1.0 => format!(" ({}x more)", figure(ratio.value)),
        _ => String::new(),
    };
    format!("{}x{interval} {peer}{faster}", figure(ratio.value))
}

fn cell(measurement: &Measurement) -> String {
    if measurement.samples <= 1 {
        figure(measurement.median)
    } else {
        format!(
            "{} ({}–{})",
            figure(measurement.median),
            figure(measurement.low),
            figure(measurement.high)
        )
    }
}

fn slug(text: &str) -> String {
    let mut slug = String::new();
    for character in text.chars() {
        if character.is_ascii_alphanumeric() {
            slug.push(character.to_ascii_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_matches('-').to_owned()
}

impl Page {
    /// Marks every timed row unreliable when the machine check made before the group
    /// found it busy ([`Machine::busy`]): one-thread figures too, since a busy core
    /// preempts a single thread as well.
    pub fn flag_busy(&mut self, machine: &Machine) {
        if !machine.busy() {
            return;
        }
        for row in self
            .sections
            .iter_mut()
            .flat_map(|section| &mut section.rows)
        {
            if row.results.iter().any(|(_, figure)| figure.samples > 1) {
                row.unreliable = true;
            }
        }
    }

    /// The rounds of every figure measured in rounds, one line each
    /// (`section row result: value value ...`), for [`Page::add_launch`] in the process
    /// that merges launches.
    pub fn rounds_text(&self) -> String {
        let mut text = String::new();
        for (s, section) in self.sections.iter().enumerate() {
            for (r, row) in section.rows.iter().enumerate() {
                for (k, (_, figure)) in row.results.iter().enumerate() {
                    if let Some(rounds) = figure.rounds.last() {
                        let values: Vec<String> =
                            rounds.iter().map(|value| format!("{value:e}")).collect();
                        let _ = writeln!(text, "{s} {r} {k}: {}", values.join(" "));
                    }
                }
            }
        }
        text
    }

    /// Adds the rounds of another launch of the same group ([`Page::rounds_text`] of
    /// that launch) to the figures measured in rounds; exact figures keep this launch's
    /// value.
    ///
    /// # Errors
    /// A line does not parse or names a figure this page does not have in rounds.
    pub fn add_launch(&mut self, text: &str) -> Result<(), String> {
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            let bad = || format!("a launch's rounds do not match this page: {line:?}");
            let (place, values) = line.split_once(':').ok_or_else(bad)?;
            let place: Vec<usize> = place
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(|_| bad())?;
            let [s, r, k] = place[..] else {
                return Err(bad());
            };
            let values: Vec<f64> = values
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(|_| bad())?;
            let figure = self
                .sections
                .get_mut(s)
                .and_then(|section| section.rows.get_mut(r))
                .and_then(|row| row.results.get_mut(k))
                .map(|(_, figure)| figure)
                .filter(|figure| !figure.rounds.is_empty())
                .ok_or_else(bad)?;
            *figure = figure.with_launch(values);
        }
        Ok(())
    }
    /// Writes `info/<name>.md` and one SVG plot per section (two for a section with a
    /// [`LinePlot`]) into `directory`.
    ///
    /// # Errors
    /// The files cannot be written.
    pub fn write(
        &self,
        directory: &Path,
        machine: &Machine,
        command: &str,
        date: &str,
    ) -> io::Result<()> {
        fs::create_dir_all(directory)?;
        let mut page = String::new();
        let _ = writeln!(page, "# {}\n", self.title);
        let _ = writeln!(
            page,
            "Generated by `{command}` on {date}; do not edit by hand, run the command again.\n"
        );
        let _ = writeln!(page, "{}\n", self.introduction);
        let _ = writeln!(page, "## Machine\n\n{}", machine.markdown());
        for section in &self.sections {
            let _ = writeln!(page, "## {}\n\n{}\n", section.title, section.description);
            let _ = writeln!(
                page,
                "Figures in {}: median (10th–90th percentile) over the rounds. The ratio is \
                 the median of the per-round ratios of ours to the peer named (each round \
                 runs every subject once, in rotated order), with its 95% bootstrap \
                 interval in brackets; \"met\" only when the whole interval clears the \
                 target, \"unclear\" when it straddles it. A ratio without brackets is of \
                 figures that are exact or not measured in shared rounds.\n",
                section.unit
            );
            let _ = writeln!(page, "Command: `{command}`\n");
            page.push_str(&section_table(section));
            let file = format!("{}-{}.svg", self.name, slug(&section.title));
            let plotted: Vec<svg::Group> = section
                .rows
                .iter()
                .map(|row| svg::Group {
                    label: row.workload.clone(),
                    bars: row
                        .results
                        .iter()
                        .map(|(name, m)| (name.clone(), m.median))
                        .collect(),
                })
                .collect();
            write_replacing(
                &directory.join(&file),
                svg::grouped_bars(&section.title, &section.unit, &plotted),
            )?;
            let _ = writeln!(page, "\n![{}]({file})\n", section.title);
            if let Some(plot) = &section.line_plot {
                let file = format!("{}-{}.svg", self.name, slug(&plot.title));
                write_replacing(
                    &directory.join(&file),
                    svg::lines(&plot.title, &plot.x_unit, &plot.y_unit, &plot.series),
                )?;
                let _ = writeln!(page, "![{}]({file})\n", plot.title);
            }
        }
        write_replacing(&directory.join(format!("{}.md", self.name)), page)
    }
}

/// Writes `contents` to `path` whole or not at all: into a temporary file beside it,
/// then renamed over it, so that a run interrupted while writing (Ctrl-C, a full disk)
/// leaves the previous page, plot or index in place rather than a truncated one. The
/// temporary is created anew (never an existing file or link opened), named by the
/// process id and a counter; a name another writer holds is passed over.
pub fn write_replacing(path: &Path, contents: impl AsRef<[u8]>) -> io::Result<()> {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a path without a file name"))?;
    let (temporary, mut file) = loop {
        let mut temporary_name = std::ffi::OsString::from(".");
        temporary_name.push(name);
        temporary_name.push(format!(
            ".{}-{}.tmp",
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
        let temporary = path.with_file_name(temporary_name);
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)
        {
            Ok(file) => break (temporary, file),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    };
    let written = file.write_all(contents.as_ref()).and_then(|()| {
        drop(file);
        fs::rename(&temporary, path)
    });
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
}

/// The markdown table of a section: one column per implementation, then the ratio,
/// target and verdict.
fn section_table(section: &Section) -> String {
    let mut implementations: Vec<String> = Vec::new();
    for row in &section.rows {
        for (name, _) in &row.results {
            if !implementations.contains(name) {
                implementations.push(name.clone());
            }
        }
    }
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| workload | {} | ours / peer [95% interval] | target | met |",
        implementations.join(" | ")
    );
    let _ = writeln!(
        table,
        "|---|{}---|---|---|",
        "---|".repeat(implementations.len())
    );
    for row in &section.rows {
        let cells: Vec<String> = implementations
            .iter()
            .map(|name| {
                row.results
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or_else(|| "-".to_owned(), |(_, m)| cell(m))
            })
            .collect();
        let ratio = row.ratio().map_or_else(
            || "-".to_owned(),
            |(peer, ratio)| ratio_text(row.better, &peer, ratio),
        );
        let met = row.verdict_text();
        let _ = writeln!(
            table,
            "| {} | {} | {ratio} | {} | {met} |",
            row.workload,
            cells.join(" | "),
            row.target_text()
        );
    }
    table
}

/// The summary table of `info/README.md`: every row that has a target or asked to be
/// listed ([`Row::in_summary`]), from every page.
pub fn summary_table(pages: &[Page]) -> String {
    let mut table = String::from(
        "| group | workload | ours | best peer | ours / peer [95% interval] | target | met |\n",
    );
    table.push_str("|---|---|---|---|---|---|---|\n");
    for page in pages {
        for section in &page.sections {
            for row in section
                .rows
                .iter()
                .filter(|row| row.target.is_some() || row.in_summary)
            {
                let ours = row
                    .ours()
                    .map_or_else(|| "-".to_owned(), |(_, m)| figure(m.median));
                let best = row.best_peer().map_or_else(
                    || "-".to_owned(),
                    |(name, m)| format!("{name} {}", figure(m.median)),
                );
                let ratio = row.ratio().map_or_else(
                    || "-".to_owned(),
                    |(peer, r)| ratio_text(row.better, &peer, r),
                );
                let met = row.verdict_text();
                let _ = writeln!(
                    table,
                    "| [{}]({}.md) | {} ({}) | {ours} | {best} | {ratio} | {} | {met} |",
                    page.name,
                    page.name,
                    row.workload,
                    section.unit,
                    row.target_text()
                );
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::{Better, Page, Row, Section, Target, summary_table};
    use crate::bench::measure::Measurement;
    use crate::bench::stats::{Estimate, Verdict};
    use std::fs;

    #[test]
    fn a_replacing_write_replaces_the_whole_file_and_leaves_no_temporary() {
        let directory = std::env::temp_dir().join(format!("report-write-{}", std::process::id()));
        fs::create_dir_all(&directory).expect("a directory");
        let path = directory.join("page.md");
        fs::write(&path, "an older and longer page\n").expect("the old page");
        super::write_replacing(&path, "new\n").expect("written");
        assert_eq!(fs::read_to_string(&path).expect("read"), "new\n");
        let names: Vec<_> = fs::read_dir(&directory)
            .expect("listed")
            .map(|entry| entry.expect("an entry").file_name())
            .collect();
        assert_eq!(names, ["page.md"]);
        // A failed write (no such directory) creates nothing and says so.
        let missing = directory.join("missing").join("page.md");
        assert!(super::write_replacing(&missing, "x").is_err());
        assert!(!directory.join("missing").exists());
        // A failed rename (a directory in the way) leaves no temporary behind.
        let in_the_way = directory.join("plot.svg");
        fs::create_dir(&in_the_way).expect("a directory in the way");
        fs::write(in_the_way.join("keep"), "").expect("a file in it");
        assert!(super::write_replacing(&in_the_way, "<svg/>").is_err());
        let mut names: Vec<_> = fs::read_dir(&directory)
            .expect("listed")
            .map(|entry| entry.expect("an entry").file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["page.md", "plot.svg"]);
        fs::remove_dir_all(&directory).expect("removed");
    }

    fn row(ours: f64, peer: f64) -> Row {
        Row::new(
            "work",
            vec![
                ("ours".to_owned(), Measurement::exact(ours)),
                ("peer".to_owned(), Measurement::exact(peer)),
            ],
        )
    }

    fn page(rows: Vec<Row>) -> Page {
        Page {
            name: "p".into(),
            title: "P".into(),
            introduction: String::new(),
            sections: vec![Section {
                title: "S".into(),
                description: String::new(),
                unit: "u".into(),
                rows,
                line_plot: None,
            }],
        }
    }

    #[test]
    fn rows_asked_for_appear_in_the_summary_without_a_target() {
        let listed = row(2.0, 4.0).better(Better::Higher).in_summary();
        let summary = summary_table(&[page(vec![listed, row(1.0, 1.0)])]);
        // The header, the rule, and the one row asked for.
        assert_eq!(summary.lines().count(), 3, "{summary}");
        assert!(summary.contains("| 0.500x peer | - | - |"), "{summary}");
    }

    #[test]
    fn a_peer_at_zero_has_no_ratio() {
        assert_eq!(row(5.0, 0.0).ratio(), None);
        assert_eq!(
            row(5.0, 2.0).ratio(),
            Some(("peer".to_owned(), Estimate::exact(2.5)))
        );
    }

    fn paired(ours: Vec<f64>, peer: Vec<f64>) -> Row {
        Row::new(
            "work",
            vec![
                ("ours".to_owned(), Measurement::from_rounds(ours, 1)),
                ("peer".to_owned(), Measurement::from_rounds(peer, 1)),
            ],
        )
    }

    #[test]
    fn the_ratio_is_the_median_of_per_round_ratios_not_a_ratio_of_medians() {
        // The machine slowed down for the last two rounds: both subjects' figures
        // doubled, the peer's one round earlier. Per round ours is 0.8x, 0.4x, 0.8x the
        // peer (median 0.8x); the medians taken apart would give 8 / 20 = 0.4x.
        let row = paired(vec![8.0, 8.0, 16.0], vec![10.0, 20.0, 20.0])
            .target(Target::at_most("peer", 0.9));
        let (_, ratio) = row.ratio().expect("a ratio");
        assert_eq!(ratio.value, 0.8);
        let steady = paired(vec![8.0, 8.1, 7.9, 8.0, 8.0], vec![10.0; 5])
            .target(Target::at_most("peer", 0.9));
        let (_, ratio) = steady.ratio().expect("a ratio");
        assert_eq!(ratio.value, 0.8);
        assert_eq!(steady.met(), Some(Verdict::Met));
    }

    #[test]
    fn a_ratio_whose_interval_straddles_the_target_is_unclear_and_printed_with_it() {
        let ours: Vec<f64> = (0..15).map(|i| 9.0 + f64::from(i % 5) * 0.5).collect();
        let row = paired(ours, vec![10.0; 15]).target(Target::at_most("peer", 1.0));
        assert_eq!(row.met(), Some(Verdict::Unclear));
        let summary = summary_table(&[page(vec![row])]);
        assert!(summary.contains("| unclear |"), "{summary}");
        assert!(
            summary.contains("x ["),
            "the interval is printed: {summary}"
        );
        let slow = paired(vec![12.0; 9], vec![10.0; 9]).target(Target::at_most("peer", 1.0));
        assert_eq!(slow.met(), Some(Verdict::No));
    }

    #[test]
    fn a_busy_machine_flags_one_thread_rows_too_but_not_exact_figures() {
        let mut busy = page(vec![
            paired(vec![1.0, 1.1], vec![2.0, 2.1]).target(Target::at_most("peer", 1.0)),
            row(1.0, 2.0),
        ]);
        let mut machine = crate::bench::machine::tests::machine(1.97);
        busy.flag_busy(&machine);
        assert!(!busy.sections[0].rows[0].unreliable);
        machine.two_thread_scaling = 1.1;
        busy.flag_busy(&machine);
        assert!(busy.sections[0].rows[0].unreliable);
        assert!(!busy.sections[0].rows[1].unreliable);
        assert_eq!(
            busy.sections[0].rows[0].verdict_text(),
            "met (unreliable: machine busy)"
        );
    }

    #[test]
    fn launches_merge_by_place_and_refuse_what_does_not_match() {
        let mut first = page(vec![paired(vec![1.0, 2.0], vec![2.0, 2.0])]);
        let second = page(vec![paired(vec![3.0], vec![4.0])]);
        first
            .add_launch(&second.rounds_text())
            .expect("the same page");
        let figure = &first.sections[0].rows[0].results[0].1;
        assert_eq!(figure.rounds, vec![vec![1.0, 2.0], vec![3.0]]);
        assert!(first.add_launch("0 5 0: 1.0").is_err());
        assert!(first.add_launch("nonsense").is_err());
        let mut exact = page(vec![row(1.0, 2.0)]);
        assert!(exact.add_launch("0 0 0: 1.0").is_err());
    }

    #[test]
    fn a_time_per_operation_becomes_a_throughput() {
        let time = Measurement {
            median: 20.0,
            low: 10.0,
            high: 40.0,
            samples: 3,
            operations_per_sample: 100,
            rounds: Vec::new(),
        };
        let rate = time.millions_per_second();
        assert_eq!((rate.median, rate.low, rate.high), (50.0, 25.0, 100.0));
        assert_eq!(time.scaled(0.5).median, 10.0);
    }
}
