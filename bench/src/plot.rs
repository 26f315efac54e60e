//! Latency by percentile as an SVG chart, drawn the way HdrHistogram's
//! plotter draws it: the percentile axis is logarithmic in 1/(1-p), so the
//! tail (99%, 99.9%, 99.99%) gets as much room as the body.

use std::fmt::Write;

use hdrhistogram::Histogram;

pub(crate) const WIDTH: f64 = 800.0;
pub(crate) const HEIGHT: f64 = 480.0;
pub(crate) const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
pub(crate) const TOP: f64 = 40.0;
pub(crate) const BOTTOM: f64 = 50.0;
pub(crate) const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// Draws one line per `(label, histogram)` (latencies in µs) into an SVG.
pub fn svg(title: &str, series: &[(&str, &Histogram<u64>)]) -> String {
    // x = log10(1/(1-p)): 0 at p=0, 1 at 90%, 2 at 99%, ...
    let points: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|(_, h)| {
            if h.is_empty() {
                return Vec::new();
            }
            // The data resolve percentiles down to 1/count: the last point
            // (p = 1) is drawn there rather than at infinity.
            let finest = 1.0 - 1.0 / (h.len().max(10) as f64);
            h.iter_quantiles(5)
                .map(|v| {
                    let q = v.quantile_iterated_to().min(finest);
                    (
                        (1.0 / (1.0 - q)).log10(),
                        v.value_iterated_to() as f64 / 1000.0,
                    )
                })
                .collect()
        })
        .collect();
    let max_x = points
        .iter()
        .flatten()
        .map(|p| p.0)
        .fold(2.0f64, f64::max)
        .ceil()
        .min(7.0);
    let max_y = nice_ceiling(points.iter().flatten().map(|p| p.1).fold(0.001, f64::max));
    let sx = |x: f64| LEFT + x / max_x * (WIDTH - LEFT - RIGHT);
    let sy = |y: f64| HEIGHT - BOTTOM - y / max_y * (HEIGHT - TOP - BOTTOM);

    let mut out = svg_start(title);
    for i in 0..=max_x as i32 {
        let x = sx(f64::from(i));
        let label = match i {
            0 => "0%".to_string(),
            _ => format!("{}%", 100.0 - 100.0 / 10f64.powi(i)),
        };
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="{TOP}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{label}</text>"##,
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 18.0
        );
    }
    for i in 0..=5 {
        let v = max_y * f64::from(i) / 5.0;
        let y = sy(v);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            trim(v)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text><text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">latency (ms)</text>"#,
        WIDTH / 2.0,
        HEIGHT - 10.0,
        HEIGHT / 2.0,
        HEIGHT / 2.0
    );
    for (i, ((label, _), pts)) in series.iter().zip(&points).enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let ly = TOP + 16.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            LEFT + 10.0,
            LEFT + 30.0,
            LEFT + 36.0,
            ly + 4.0,
            escape(label)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The smallest of 1, 2, 5 × 10^k at or above `v`.
pub(crate) fn nice_ceiling(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

pub(crate) fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The opening of a chart: the SVG element, a white background and the
/// title, shared by every chart the load tester draws.
pub(crate) fn svg_start(title: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    out
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_line_per_series_with_a_log_percentile_axis() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for i in 1..=10_000u64 {
            h.record(i * 10).unwrap();
        }
        let text = svg("tree <vs> direct", &[("tree", &h), ("direct", &h)]);
        assert!(text.starts_with("<svg"));
        assert_eq!(text.matches("<polyline").count(), 2);
        assert!(text.contains(">99.9%<") && text.contains(">90%<"));
        assert!(text.contains("tree &lt;vs&gt; direct"));
        assert_eq!(nice_ceiling(73.0), 100.0);
        assert_eq!(nice_ceiling(0.3), 0.5);
    }
}
