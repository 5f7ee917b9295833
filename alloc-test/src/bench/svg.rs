//! Plots as plain SVG: grouped horizontal bar charts on a logarithmic axis, so that
//! figures of different magnitudes share one plot, and line charts on linear axes, for a
//! figure followed over time. Written by hand: no font or rendering library is needed,
//! and the files diff cleanly.

use std::fmt::Write as _;

use super::report::figure;

/// One workload and its bars: (implementation, value).
#[derive(Clone, Debug)]
pub struct Group {
    /// The workload's label.
    pub label: String,
    /// One bar per implementation.
    pub bars: Vec<(String, f64)>,
}

const COLOURS: [&str; 8] = [
    "#1b6ca8", "#e07b39", "#3a9e5f", "#b8405e", "#7d5ba6", "#8c6d31", "#5f9ea0", "#777777",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the groups as an SVG document.
pub fn grouped_bars(title: &str, unit: &str, groups: &[Group]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for group in groups {
        for (name, _) in &group.bars {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
    }
    let values = groups
        .iter()
        .flat_map(|group| group.bars.iter().map(|(_, v)| *v))
        .filter(|v| *v > 0.0);
    let (low, high) = values.fold((f64::MAX, f64::MIN), |(low, high), v| {
        (low.min(v), high.max(v))
    });
    let (low, high) = if low > high { (1.0, 10.0) } else { (low, high) };
    // A decade below the smallest figure when that figure is itself a power of ten, so
    // its bar has a length (a bar at the axis origin reads as zero).
    let log_low = (low.log10() - 1e-9).floor();
    let log_high = (high.log10().ceil()).max(log_low + 1.0);
    // About 6.5 pixels a character at font size 11: room for the longest label.
    let longest = groups
        .iter()
        .map(|group| group.label.chars().count())
        .max()
        .unwrap_or(0);
    let left = 20.0 + longest as f64 * 6.5;
    let (plot_width, bar_height, gap) = (520.0, 14.0, 12.0);
    let group_height = |group: &Group| group.bars.len() as f64 * bar_height + gap;
    let legend_height = 20.0 * names.len().div_ceil(3) as f64;
    let plot_height: f64 = groups.iter().map(group_height).sum();
    let (top, width) = (50.0 + legend_height, left + plot_width + 110.0);
    let height = top + plot_height + 40.0;
    let x = |value: f64| {
        // Zero (a count) has no place on a log axis: a bar of no length.
        if value <= 0.0 {
            return left;
        }
        let fraction = (value.max(low).log10() - log_low) / (log_high - log_low);
        left + fraction * plot_width
    };
    let mut svg = open_svg(width, height, title);
    for (index, name) in names.iter().enumerate() {
        let (column, line) = (index % 3, index / 3);
        let (lx, ly) = (10.0 + column as f64 * 220.0, 38.0 + line as f64 * 20.0);
        let _ = writeln!(
            svg,
            r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            ly - 10.0,
            COLOURS[index % COLOURS.len()],
            lx + 16.0,
            ly,
            escape(name)
        );
    }
    // Decade grid lines.
    let mut decade = log_low;
    while decade <= log_high {
        let gx = left + (decade - log_low) / (log_high - log_low) * plot_width;
        let _ = writeln!(
            svg,
            r##"<line x1="{gx}" y1="{top}" x2="{gx}" y2="{}" stroke="#dddddd"/><text x="{gx}" y="{}" text-anchor="middle">{}</text>"##,
            top + plot_height,
            top + plot_height + 14.0,
            figure(10f64.powf(decade))
        );
        decade += 1.0;
    }
    let mut y = top;
    for group in groups {
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            left - 6.0,
            y + group.bars.len() as f64 * bar_height / 2.0 + 4.0,
            escape(&group.label)
        );
        for (name, value) in &group.bars {
            let colour = names
                .iter()
                .position(|n| n == name)
                .map_or("#000000", |i| COLOURS[i % COLOURS.len()]);
            let end = x(*value);
            let _ = writeln!(
                svg,
                r#"<rect x="{left}" y="{y}" width="{}" height="{}" fill="{colour}"/><text x="{}" y="{}">{}</text>"#,
                (end - left).max(1.0),
                bar_height - 2.0,
                end + 4.0,
                y + bar_height - 4.0,
                figure(*value)
            );
            y += bar_height;
        }
        y += gap;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{} (log scale)</text>"#,
        left + plot_width / 2.0,
        top + plot_height + 32.0,
        escape(unit)
    );
    svg.push_str("</svg>\n");
    svg
}

/// One line of a line chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// The implementation's name, shown in the legend.
    pub name: String,
    /// The (x, y) points, joined in this order; points that are not finite are left out.
    pub points: Vec<(f64, f64)>,
}

/// A round step between ticks for `low..=high`: 1, 2 or 5 times a power of ten, giving
/// about `count` steps.
fn tick_step(low: f64, high: f64, count: usize) -> f64 {
    let raw = (high - low) / count as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|multiple| multiple * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// The ticks of `step` from `first` to `last`, both included: multiples of the step, the
/// first at or after `first` and the last at or before `last` (with a hair of tolerance,
/// so that a bound that is a multiple of the step up to rounding keeps its tick).
fn ticks_within(first: f64, last: f64, step: f64) -> Vec<f64> {
    let from = (first / step - 1e-9).ceil() as i64;
    let to = (last / step + 1e-9).floor() as i64;
    (from..=to).map(|index| index as f64 * step).collect()
}

/// A tick label with as many decimals as the step needs (0.5 → one, 100 → none).
fn tick_label(value: f64, step: f64) -> String {
    let decimals = (-(step.log10() + 1e-9).floor()).max(0.0) as usize;
    // No "-0" on the axis.
    let value = if value.abs() < step / 2.0 { 0.0 } else { value };
    format!("{value:.decimals$}")
}

/// Renders the series as a line chart on linear axes, one coloured line per series (in
/// the colours [`grouped_bars`] gives the same names in the same order), with round ticks,
/// a grid, darker lines at zero, and a legend. The y axis runs from zero (or the lowest
/// figure, if negative) up to a round value above the highest; the x axis spans the points
/// exactly. The first series (ours) is drawn last, on top where lines overlap. A series
/// with no points is listed in the legend as such and drawn nowhere; a series of one point
/// is drawn as a dot.
pub fn lines(title: &str, x_unit: &str, y_unit: &str, series: &[Series]) -> String {
    let finite = |series: &Series| {
        series
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect::<Vec<_>>()
    };
    let plotted: Vec<Vec<(f64, f64)>> = series.iter().map(finite).collect();
    let all = plotted.iter().flatten();
    let (x_low, x_high, y_low, y_high) = all.fold(
        (f64::MAX, f64::MIN, 0.0f64, 0.0f64),
        |(x_low, x_high, y_low, y_high), (x, y)| {
            (x_low.min(*x), x_high.max(*x), y_low.min(*y), y_high.max(*y))
        },
    );
    // No points at all: an empty unit square. One x (or all y zero): a span of one.
    let (x_low, x_high) = if x_low > x_high {
        (0.0, 1.0)
    } else if x_low == x_high {
        (x_low - 0.5, x_high + 0.5)
    } else {
        (x_low, x_high)
    };
    let y_high = if y_high <= y_low { y_low + 1.0 } else { y_high };
    let x_step = tick_step(x_low, x_high, 8);
    let y_step = tick_step(y_low, y_high, 6);
    // The y axis to whole steps (a hair of tolerance keeps a figure that is a multiple of
    // the step up to rounding from getting a step of its own).
    let y_first = (y_low / y_step + 1e-9).floor() * y_step;
    let y_last = (y_high / y_step - 1e-9).ceil() * y_step;
    let (left, plot_width, plot_height) = (70.0, 560.0, 300.0);
    let width = left + plot_width + 40.0;
    // Legend columns as wide as the longest name (about 6.5 pixels a character at font
    // size 11), as many to a line as fit.
    let longest = series
        .iter()
        .map(|one| one.name.chars().count() + 12)
        .max()
        .unwrap_or(0);
    let column_width = 30.0 + longest as f64 * 6.5;
    let columns = (((width - 20.0) / column_width) as usize).max(1);
    let legend_height = 20.0 * series.len().div_ceil(columns) as f64;
    let top = 50.0 + legend_height;
    let height = top + plot_height + 50.0;
    let x = |value: f64| left + (value - x_low) / (x_high - x_low) * plot_width;
    let y = |value: f64| top + plot_height - (value - y_first) / (y_last - y_first) * plot_height;
    let colour = |index: usize| COLOURS[index % COLOURS.len()];
    let mut svg = open_svg(width, height, title);
    for (index, (one, points)) in series.iter().zip(&plotted).enumerate() {
        let (column, line) = (index % columns, index / columns);
        let (lx, ly) = (
            10.0 + column as f64 * column_width,
            38.0 + line as f64 * 20.0,
        );
        let empty = if points.is_empty() {
            " (no points)"
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="3"/><text x="{}" y="{ly}">{}{empty}</text>"#,
            ly - 4.0,
            lx + 14.0,
            ly - 4.0,
            colour(index),
            lx + 18.0,
            escape(&one.name)
        );
    }
    // The grid, with its tick labels; the lines at zero darker.
    for value in ticks_within(x_low, x_high, x_step) {
        let stroke = if value.abs() < x_step / 2.0 {
            "#999999"
        } else {
            "#dddddd"
        };
        let _ = writeln!(
            svg,
            r#"<line x1="{gx:.1}" y1="{top}" x2="{gx:.1}" y2="{}" stroke="{stroke}"/><text x="{gx:.1}" y="{}" text-anchor="middle">{}</text>"#,
            top + plot_height,
            top + plot_height + 14.0,
            tick_label(value, x_step),
            gx = x(value),
        );
    }
    for value in ticks_within(y_first, y_last, y_step) {
        let stroke = if value.abs() < y_step / 2.0 {
            "#999999"
        } else {
            "#dddddd"
        };
        let _ = writeln!(
            svg,
            r#"<line x1="{left}" y1="{gy:.1}" x2="{}" y2="{gy:.1}" stroke="{stroke}"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            left + plot_width,
            left - 6.0,
            y(value) + 4.0,
            tick_label(value, y_step),
            gy = y(value),
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect class="plot-area" x="{left}" y="{top}" width="{plot_width}" height="{plot_height}" fill="none" stroke="#555555"/>"##
    );
    for (index, points) in plotted.iter().enumerate().rev() {
        let coordinates: Vec<String> = points
            .iter()
            .map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(*py)))
            .collect();
        match points[..] {
            [] => {}
            [(px, py)] => {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                    x(px),
                    y(py),
                    colour(index)
                );
            }
            _ => {
                let _ = writeln!(
                    svg,
                    r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2" stroke-linejoin="round"/>"#,
                    coordinates.join(" "),
                    colour(index)
                );
            }
        }
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        left + plot_width / 2.0,
        top + plot_height + 34.0,
        escape(x_unit)
    );
    let (label_x, label_y) = (16.0, top + plot_height / 2.0);
    let _ = writeln!(
        svg,
        r#"<text x="{label_x}" y="{label_y}" text-anchor="middle" transform="rotate(-90 {label_x} {label_y})">{}</text>"#,
        escape(y_unit)
    );
    svg.push_str("</svg>\n");
    svg
}

/// The start of a chart: the `<svg>` element of `width` by `height`, a white
/// background and the title.
fn open_svg(width: f64, height: f64, title: &str) -> String {
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="10" y="20" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::{Group, Series, grouped_bars, lines};

    /// Panics unless `text` is well-formed XML as far as these plots go: tags nest and
    /// close, attribute values are quoted, and `<` and `&` appear in text and values only
    /// as entities.
    fn assert_well_formed(text: &str) {
        let entities = |part: &str| {
            for (at, _) in part.match_indices('&') {
                let rest = &part[at..];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;"]
                        .iter()
                        .any(|entity| rest.starts_with(entity)),
                    "a bare & in {part:?}"
                );
            }
        };
        let mut open: Vec<String> = Vec::new();
        let mut rest = text.trim();
        assert!(rest.starts_with("<svg "), "{text}");
        while let Some(start) = rest.find('<') {
            let between = &rest[..start];
            assert!(!between.contains('>'), "a stray > in {between:?}");
            entities(between);
            let end = start + rest[start..].find('>').expect("every tag ends");
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "a < inside the tag {tag:?}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop().as_deref(), Some(name), "unbalanced </{name}>");
            } else {
                let closed = tag.ends_with('/');
                let tag = tag.trim_end_matches('/');
                let (name, mut attributes) = tag.split_once(' ').unwrap_or((tag, ""));
                assert!(!name.is_empty(), "a tag without a name");
                while !attributes.trim().is_empty() {
                    let (key, after) = attributes
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("an unquoted attribute in <{tag}>"));
                    assert!(
                        !key.trim().is_empty() && !key.trim().contains(' '),
                        "<{tag}>"
                    );
                    let (value, after) = after
                        .split_once('"')
                        .unwrap_or_else(|| panic!("an unterminated value in <{tag}>"));
                    entities(value);
                    attributes = after;
                }
                if !closed {
                    open.push(name.to_owned());
                }
            }
            rest = &rest[end + 1..];
        }
        assert!(open.is_empty(), "unclosed: {open:?}");
        assert!(rest.trim().is_empty(), "text after the root: {rest:?}");
    }

    /// The value of attribute `key` in `element` (the text of one tag).
    fn attribute<'a>(element: &'a str, key: &str) -> &'a str {
        let start = element
            .find(&format!(" {key}=\""))
            .unwrap_or_else(|| panic!("no {key} in {element}"))
            + key.len()
            + 3;
        let length = element[start..].find('"').expect("a quoted value");
        &element[start..start + length]
    }

    /// The tags of the elements named `name`.
    fn elements<'a>(svg: &'a str, name: &str) -> Vec<&'a str> {
        svg.match_indices(&format!("<{name} "))
            .map(|(at, _)| &svg[at..at + svg[at..].find('>').expect("a tag ends")])
            .collect()
    }

    fn number(text: &str) -> f64 {
        text.parse()
            .unwrap_or_else(|_| panic!("{text:?} is not a number"))
    }

    #[test]
    fn a_line_chart_draws_one_line_per_series_inside_its_plot_area() {
        let rising = Series {
            name: "rising <&> \"quoted\"".into(),
            points: vec![(-0.4, 0.0), (0.0, 380.5), (1.0, 12.0), (3.0, 2.5)],
        };
        let flat = Series {
            name: "zero".into(),
            points: vec![(-0.4, 0.0), (0.0, 0.0), (3.05, 0.0)],
        };
        let empty = Series {
            name: "nothing".into(),
            points: Vec::new(),
        };
        let broken = Series {
            name: "one".into(),
            points: vec![(1.0, f64::NAN), (2.0, 7.0)],
        };
        let svg = lines("t", "seconds", "MiB", &[rising, flat, empty, broken]);
        assert_well_formed(&svg);
        assert!(svg.contains("rising &lt;&amp;&gt;"), "{svg}");
        assert!(svg.contains("nothing (no points)"), "{svg}");
        let area = elements(&svg, "rect")
            .into_iter()
            .find(|rect| rect.contains("class=\"plot-area\""))
            .expect("a plot area");
        let (left, top) = (number(attribute(area, "x")), number(attribute(area, "y")));
        let right = left + number(attribute(area, "width"));
        let bottom = top + number(attribute(area, "height"));
        let polylines = elements(&svg, "polyline");
        // Two series of several points; the empty one has none, the one with a single
        // finite point a dot.
        assert_eq!(polylines.len(), 2, "{svg}");
        assert_eq!(elements(&svg, "circle").len(), 1, "{svg}");
        let points = |polyline: &str| -> Vec<(f64, f64)> {
            attribute(polyline, "points")
                .split(' ')
                .map(|pair| {
                    let (x, y) = pair.split_once(',').expect("x,y");
                    (number(x), number(y))
                })
                .collect()
        };
        // Drawn in reverse order: the first series last, on top.
        let rising = points(polylines[1]);
        let zero = points(polylines[0]);
        assert_eq!((rising.len(), zero.len()), (4, 3));
        for (x, y) in rising.iter().chain(&zero) {
            assert!(
                (left..=right).contains(x) && (top..=bottom).contains(y),
                "{x},{y}"
            );
        }
        // Later points lie further right; a higher figure lies higher up; zero lies on
        // the bottom edge (the y axis starts at zero).
        assert!(rising.windows(2).all(|pair| pair[0].0 < pair[1].0));
        assert!(rising[1].1 < rising[2].1 && rising[2].1 < rising[3].1);
        assert!(zero.iter().all(|(_, y)| *y == bottom), "{zero:?}");
        assert_eq!(rising[0], zero[0]);
    }

    #[test]
    fn a_line_chart_without_points_still_has_axes() {
        for series in [
            Vec::new(),
            vec![Series {
                name: "empty".into(),
                points: Vec::new(),
            }],
            vec![Series {
                name: "zeros".into(),
                points: vec![(0.0, 0.0), (0.0, 0.0)],
            }],
        ] {
            let svg = lines("t", "x", "y", &series);
            assert_well_formed(&svg);
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
            assert_eq!(elements(&svg, "rect").len(), 2, "background and plot area");
            assert!(elements(&svg, "line").len() >= 4, "a grid: {svg}");
        }
    }

    #[test]
    fn ticks_are_round_and_lie_within_the_range() {
        assert_eq!(super::tick_step(-0.38, 3.0, 8), 0.5);
        assert_eq!(super::tick_step(0.0, 412.0, 6), 100.0);
        assert_eq!(
            super::ticks_within(-0.38, 3.0001, 0.5),
            [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
        );
        assert_eq!(super::ticks_within(0.0, 400.0, 100.0).len(), 5);
        assert!(super::ticks_within(0.1, 0.2, 1.0).is_empty());
        assert_eq!(super::tick_label(-1e-17, 0.5), "0.0");
        assert_eq!(super::tick_label(300.0, 100.0), "300");
    }

    #[test]
    fn a_zero_gets_no_bar_and_a_power_of_ten_gets_a_visible_one() {
        let svg = grouped_bars(
            "t",
            "%",
            &[Group {
                label: "shared".into(),
                bars: vec![("a".into(), 100.0), ("b".into(), 0.0)],
            }],
        );
        // Bars are 12 pixels high; only the zero's is the minimal 1 pixel wide.
        assert_eq!(svg.matches(r#"width="1" height="12""#).count(), 1, "{svg}");
    }
}
