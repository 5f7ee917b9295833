//! Grouped horizontal bar charts as plain SVG, on a logarithmic axis so that figures of
//! different magnitudes share one plot. Written by hand: no font or rendering library is
//! needed, and the files diff cleanly.

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

#[cfg(test)]
mod tests {
    use super::{Group, grouped_bars};

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
