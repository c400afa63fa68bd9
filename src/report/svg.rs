//! Small SVG charts drawn in Rust, inlined into a report page.
//!
//! A report must open offline and without JavaScript, so its charts are plain SVG text: a
//! line chart (several series against one x axis), a grouped bar chart (categories along
//! x, one bar per series) and a horizontal bar chart (labelled values, for reasons and
//! times) and a histogram, optionally with threshold marks. Every chart has a title, axes with "nice" ticks (1, 2 or 5 times a power of
//! ten) and labels; every piece of text is escaped. Non-finite values are left out.

use std::fmt::Write;

use super::escape;

/// Chart width and height in SVG user units (the page scales them to its width).
const W: f64 = 720.0;
const H: f64 = 300.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 48.0;

/// Series colours (colour-blind friendly, Okabe–Ito).
pub const PALETTE: [&str; 6] = [
    "#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9",
];

/// One line of a line chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Draw a marker on every point (for sparse series such as evaluations).
    pub markers: bool,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points: points
                .into_iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect(),
            markers: false,
        }
    }
    pub fn with_markers(mut self) -> Self {
        self.markers = true;
        self
    }
}

/// About `n` round tick values covering `[lo, hi]`: multiples of 1, 2 or 5 times a power
/// of ten, from the first at or below `lo` to the first at or above `hi`.
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let (lo, hi) = if !(lo.is_finite() && hi.is_finite()) {
        (0.0, 1.0)
    } else if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        // One value: a unit-wide range around it.
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    } else {
        (lo, hi)
    };
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).floor() as i64;
    let last = (hi / step).ceil() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A number for an axis or a label: integers plain (with k/M/G above ten thousand),
/// fractions to three significant digits.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        return v.to_string();
    }
    if a >= 1e4 {
        for (div, unit) in [(1e9, "G"), (1e6, "M"), (1e3, "k")] {
            if a >= div {
                return format!("{}{unit}", trim(format!("{:.2}", v / div)));
            }
        }
    }
    if v.fract() == 0.0 {
        return format!("{v:.0}");
    }
    if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        trim(format!("{v:.3}"))
    } else if a >= 1e-3 {
        trim(format!("{v:.4}"))
    } else {
        // 0.0008 as `8e-4`, 0.000125 as `1.25e-4`.
        let s = format!("{v:.2e}");
        match s.split_once('e') {
            Some((m, e)) => format!("{}e{e}", trim(m.to_string())),
            None => s,
        }
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The frame of a chart: `<svg>`, its title, and a scale from data to pixels.
struct Frame {
    out: String,
    /// Height of the whole chart.
    h: f64,
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Frame {
    fn new(title: &str, height: f64) -> Self {
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<svg class="chart" viewBox="0 0 {W} {height}" role="img" aria-label="{t}"><title>{t}</title><text class="title" x="{x}" y="20" text-anchor="middle">{t}</text>"#,
            t = escape(title),
            x = W / 2.0,
        );
        Frame {
            out,
            h: height,
            x0: 0.0,
            x1: 1.0,
            y0: 0.0,
            y1: 1.0,
        }
    }
    fn px(&self, x: f64) -> f64 {
        LEFT + (x - self.x0) / (self.x1 - self.x0) * (W - LEFT - RIGHT)
    }
    fn py(&self, y: f64) -> f64 {
        H - BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (H - TOP - BOTTOM)
    }
    /// Axes with ticks and grid lines, and their labels.
    fn axes(&mut self, xt: &[f64], yt: &[f64], x_label: &str, y_label: &str, x_ticks: bool) {
        let (l, r, t, b) = (LEFT, W - RIGHT, TOP, H - BOTTOM);
        for &y in yt {
            let p = self.py(y);
            let _ = write!(
                self.out,
                r#"<line class="grid" x1="{l}" y1="{p:.1}" x2="{r}" y2="{p:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                l - 6.0,
                p + 4.0,
                escape(&fmt_num(y)),
            );
        }
        if x_ticks {
            for &x in xt {
                let p = self.px(x);
                let _ = write!(
                    self.out,
                    r#"<line class="axis" x1="{p:.1}" y1="{b}" x2="{p:.1}" y2="{:.1}"/><text class="tick" x="{p:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                    b + 5.0,
                    b + 18.0,
                    escape(&fmt_num(x)),
                );
            }
        }
        let _ = write!(
            self.out,
            r#"<polyline class="axis" fill="none" points="{l},{t} {l},{b} {r},{b}"/><text class="label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text class="label" transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (l + r) / 2.0,
            H - 8.0,
            escape(x_label),
            (t + b) / 2.0,
            escape(y_label),
        );
    }
    /// A legend in the top right corner, one entry per name.
    fn legend(&mut self, names: &[&str]) {
        if names.len() < 2 {
            return;
        }
        let mut x = W - RIGHT;
        for (i, name) in names.iter().enumerate().rev() {
            let w = 22.0 + 7.0 * name.chars().count() as f64;
            x -= w;
            let _ = write!(
                self.out,
                r#"<rect x="{x:.1}" y="{:.1}" width="12" height="10" fill="{}"/><text class="tick" x="{:.1}" y="{:.1}">{}</text>"#,
                TOP - 14.0,
                PALETTE[i % PALETTE.len()],
                x + 16.0,
                TOP - 5.0,
                escape(name),
            );
        }
    }
    fn empty(mut self, message: &str) -> String {
        let _ = write!(
            self.out,
            r#"<text class="label" x="{}" y="{}" text-anchor="middle">{}</text></svg>"#,
            W / 2.0,
            self.h / 2.0,
            escape(message)
        );
        self.out
    }
    fn finish(mut self) -> String {
        self.out.push_str("</svg>");
        self.out
    }
}

/// A line chart of `series` against a shared x axis.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    line_chart_marked(title, x_label, y_label, series, &[])
}

/// A line chart with dashed vertical marks at the x values of `marks` (value, note), such as
/// the steps a training run skipped.
pub fn line_chart_marked(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    marks: &[(f64, String)],
) -> String {
    let mut f = Frame::new(title, H);
    let all = || series.iter().flat_map(|s| s.points.iter());
    if all().next().is_none() {
        return f.empty("no data");
    }
    let (mut xl, mut xh, mut yl, mut yh) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all() {
        (xl, xh, yl, yh) = (xl.min(x), xh.max(x), yl.min(y), yh.max(y));
    }
    let marks: Vec<&(f64, String)> = marks.iter().filter(|(x, _)| x.is_finite()).collect();
    for (x, _) in &marks {
        (xl, xh) = (xl.min(*x), xh.max(*x));
    }
    let xt = nice_ticks(xl, xh, 8);
    let yt = nice_ticks(yl, yh, 5);
    (f.x0, f.x1) = (xt[0], xt[xt.len() - 1]);
    (f.y0, f.y1) = (yt[0], yt[yt.len() - 1]);
    f.axes(&xt, &yt, x_label, y_label, true);
    for (x, note) in marks {
        let p = f.px(*x);
        let _ = write!(
            f.out,
            r##"<line class="mark" x1="{p:.1}" y1="{TOP}" x2="{p:.1}" y2="{:.1}" stroke="#c0392b" stroke-dasharray="4 3"><title>{}</title></line>"##,
            H - BOTTOM,
            escape(note),
        );
    }
    for (i, s) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", f.px(x), f.py(y)))
            .collect();
        let _ = write!(
            f.out,
            r#"<polyline class="line" fill="none" stroke="{colour}" points="{}"><title>{}</title></polyline>"#,
            pts.join(" "),
            escape(&s.name)
        );
        if s.markers || s.points.len() == 1 {
            for &(x, y) in &s.points {
                let _ = write!(
                    f.out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{colour}"><title>{}: {} at {}</title></circle>"#,
                    f.px(x),
                    f.py(y),
                    escape(&s.name),
                    escape(&fmt_num(y)),
                    escape(&fmt_num(x)),
                );
            }
        }
    }
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    f.legend(&names);
    f.finish()
}

/// A grouped bar chart: one group per category along x, one bar per series in each group
/// (`values[series][category]`).
pub fn bar_chart(
    title: &str,
    y_label: &str,
    categories: &[String],
    series_names: &[&str],
    values: &[Vec<f64>],
) -> String {
    let mut f = Frame::new(title, H);
    let max = values
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    if categories.is_empty() || values.is_empty() {
        return f.empty("no data");
    }
    let yt = nice_ticks(0.0, if max > 0.0 { max } else { 1.0 }, 5);
    (f.y0, f.y1) = (yt[0], yt[yt.len() - 1]);
    (f.x0, f.x1) = (0.0, categories.len() as f64);
    f.axes(&[], &yt, "", y_label, false);
    let group = (W - LEFT - RIGHT) / categories.len() as f64;
    let bar = (group * 0.8) / values.len() as f64;
    for (c, cat) in categories.iter().enumerate() {
        let gx = LEFT + c as f64 * group + group * 0.1;
        for (s, vals) in values.iter().enumerate() {
            let v = vals
                .get(c)
                .copied()
                .filter(|v| v.is_finite())
                .unwrap_or(0.0);
            let (top, base) = (f.py(v), f.py(0.0));
            let _ = write!(
                f.out,
                r#"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}, {}: {}</title></rect>"#,
                gx + s as f64 * bar,
                (bar - 1.0).max(1.0),
                (base - top).max(0.0),
                PALETTE[s % PALETTE.len()],
                escape(cat),
                escape(series_names.get(s).copied().unwrap_or("")),
                escape(&fmt_num(v)),
            );
        }
        // Category labels, cut to the group's width.
        let room = ((group / 6.5) as usize).max(4);
        let label: String = if cat.chars().count() > room {
            cat.chars().take(room - 1).chain(['…']).collect()
        } else {
            cat.clone()
        };
        let _ = write!(
            f.out,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            gx + group * 0.4,
            H - BOTTOM + 16.0,
            escape(&label),
        );
    }
    f.legend(series_names);
    f.finish()
}

/// A horizontal bar chart of labelled values (rejection reasons, seconds per stage); its
/// height grows with the number of bars.
pub fn hbar_chart(title: &str, x_label: &str, items: &[(String, f64)]) -> String {
    const ROW: f64 = 22.0;
    const LABEL_W: f64 = 220.0;
    let height = TOP + ROW * items.len().max(1) as f64 + 40.0;
    let mut f = Frame::new(title, height);
    if items.is_empty() {
        return f.empty("none");
    }
    let max = items
        .iter()
        .map(|(_, v)| *v)
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let xt = nice_ticks(0.0, if max > 0.0 { max } else { 1.0 }, 5);
    let x1 = xt[xt.len() - 1];
    let (l, r) = (LABEL_W, W - RIGHT - 8.0);
    let px = |v: f64| l + v / x1 * (r - l);
    let bottom = TOP + ROW * items.len() as f64;
    for &x in &xt {
        let p = px(x);
        let _ = write!(
            f.out,
            r#"<line class="grid" x1="{p:.1}" y1="{TOP}" x2="{p:.1}" y2="{bottom:.1}"/><text class="tick" x="{p:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            bottom + 14.0,
            escape(&fmt_num(x)),
        );
    }
    for (i, (label, v)) in items.iter().enumerate() {
        let v = if v.is_finite() { *v } else { 0.0 };
        let y = TOP + i as f64 * ROW;
        let shown: String = if label.chars().count() > 32 {
            label.chars().take(31).chain(['…']).collect()
        } else {
            label.clone()
        };
        let _ = write!(
            f.out,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{l}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect><text class="tick" x="{:.1}" y="{:.1}">{}</text>"#,
            l - 6.0,
            y + ROW * 0.65,
            escape(&shown),
            y + 3.0,
            (px(v) - l).max(0.5),
            ROW - 6.0,
            PALETTE[0],
            escape(label),
            escape(&fmt_num(v)),
            px(v) + 4.0,
            y + ROW * 0.65,
            escape(&fmt_num(v)),
        );
    }
    let _ = write!(
        f.out,
        r#"<polyline class="axis" fill="none" points="{l},{TOP} {l},{bottom:.1} {r},{bottom:.1}"/><text class="label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        (l + r) / 2.0,
        bottom + 32.0,
        escape(x_label),
    );
    f.finish()
}

/// A threshold drawn on a histogram: a vertical line at `value` labelled `label`, with the
/// side it rejects shaded and `note` as its tooltip.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub value: f64,
    pub label: String,
    pub note: String,
    /// Values below `value` are rejected (a minimum); otherwise those above it are.
    pub rejects_below: bool,
}

/// A histogram of `values` in `bins` equal-width bins between their minimum and maximum.
pub fn histogram(title: &str, x_label: &str, values: &[f64], bins: usize) -> String {
    histogram_marked(title, x_label, values, bins, &[])
}

/// How far outside the data's range (in spans of the data) a mark may lie and still widen
/// the axis to reach it; a mark farther out is drawn at the edge, with its value.
const MARK_REACH: f64 = 0.5;

/// A histogram with threshold [`Mark`]s: each a red vertical line with its label, the
/// rejected side shaded. A mark a little outside the values' range widens the axis; one far
/// outside (which would squash the bars into one) is drawn dashed at the nearer edge, its
/// label saying its value and which way it lies.
pub fn histogram_marked(
    title: &str,
    x_label: &str,
    values: &[f64],
    bins: usize,
    marks: &[Mark],
) -> String {
    let v: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let mut f = Frame::new(title, H);
    if v.is_empty() || bins == 0 {
        return f.empty("no values");
    }
    let marks: Vec<&Mark> = marks.iter().filter(|m| m.value.is_finite()).collect();
    let (vlo, vhi) = (
        v.iter().copied().fold(f64::MAX, f64::min),
        v.iter().copied().fold(f64::MIN, f64::max),
    );
    let span = (vhi - vlo).max(vhi.abs().max(vlo.abs()) * 0.1).max(1e-9);
    let reach = |m: &Mark| m.value >= vlo - MARK_REACH * span && m.value <= vhi + MARK_REACH * span;
    let (mut lo, mut hi) = (vlo, vhi);
    for m in marks.iter().filter(|m| reach(m)) {
        (lo, hi) = (lo.min(m.value), hi.max(m.value));
    }
    let xt = nice_ticks(lo, hi, 8);
    (f.x0, f.x1) = (xt[0], xt[xt.len() - 1]);
    let width = (f.x1 - f.x0) / bins as f64;
    let mut counts = vec![0u64; bins];
    for x in &v {
        let b = (((x - f.x0) / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let max = counts.iter().copied().max().unwrap_or(1) as f64;
    let yt = nice_ticks(0.0, max.max(1.0), 5);
    (f.y0, f.y1) = (yt[0], yt[yt.len() - 1]);
    f.axes(&xt, &yt, x_label, "documents", true);
    for (i, &c) in counts.iter().enumerate() {
        let (a, b) = (f.x0 + i as f64 * width, f.x0 + (i + 1) as f64 * width);
        let (top, base) = (f.py(c as f64), f.py(0.0));
        let _ = write!(
            f.out,
            r#"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} to {}: {c}</title></rect>"#,
            f.px(a),
            (f.px(b) - f.px(a) - 0.5).max(0.5),
            (base - top).max(0.0),
            PALETTE[0],
            escape(&fmt_num(a)),
            escape(&fmt_num(b)),
        );
    }
    let (l, r, t, b) = (LEFT, W - RIGHT, TOP, H - BOTTOM);
    for (i, m) in marks.iter().enumerate() {
        let inside = m.value >= f.x0 && m.value <= f.x1;
        let p = f.px(m.value).clamp(l, r);
        // The rejected side, between the line and that edge of the plot.
        let (s0, s1) = if m.rejects_below { (l, p) } else { (p, r) };
        if s1 - s0 >= 0.5 {
            let _ = write!(
                f.out,
                r##"<rect class="rejected" x="{s0:.1}" y="{t}" width="{:.1}" height="{:.1}" fill="#c0392b" fill-opacity="0.08"><title>rejected: {}</title></rect>"##,
                (s1 - s0).max(0.0),
                b - t,
                escape(&m.note),
            );
        }
        let dash = if inside {
            ""
        } else {
            r#" stroke-dasharray="4 3""#
        };
        let _ = write!(
            f.out,
            r##"<line class="threshold" x1="{p:.1}" y1="{t}" x2="{p:.1}" y2="{b}" stroke="#c0392b" stroke-width="2"{dash}><title>{}</title></line>"##,
            escape(&m.note),
        );
        let label = if inside {
            m.label.clone()
        } else if m.value < f.x0 {
            format!("\u{2190} {}", m.label)
        } else {
            format!("{} \u{2192}", m.label)
        };
        // Labels stack down from the top, on the side of the line with more room, with a
        // white halo so that bars behind them do not hide them.
        let (x, anchor) = if p < (l + r) / 2.0 {
            (p + 4.0, "start")
        } else {
            (p - 4.0, "end")
        };
        let _ = write!(
            f.out,
            r##"<text class="mark" x="{x:.1}" y="{:.1}" text-anchor="{anchor}" font-size="11" fill="#c0392b" stroke="#fff" stroke-width="3" paint-order="stroke">{}</text>"##,
            t + 12.0 + 13.0 * i as f64,
            escape(&label),
        );
    }
    f.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        for (lo, hi, want) in [
            (0.0, 10.0, vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]),
            (0.0, 0.9, vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]),
            (
                3.0,
                3.0,
                vec![2.6, 2.8000000000000003, 3.0, 3.2, 3.4000000000000004],
            ),
        ] {
            assert_eq!(nice_ticks(lo, hi, 5), want, "{lo}..{hi}");
        }
        let t = nice_ticks(1.7, 9_123.0, 5);
        assert!(t[0] <= 1.7 && *t.last().unwrap() >= 9_123.0);
        assert_eq!(nice_ticks(f64::NAN, 1.0, 5).first(), Some(&0.0));
    }

    #[test]
    fn numbers_are_short() {
        for (v, want) in [
            (0.0, "0"),
            (42.0, "42"),
            (9_999.0, "9999"),
            (12_500.0, "12.5k"),
            (3_000_000.0, "3M"),
            (2.5, "2.5"),
            (0.00125, "0.0013"),
            (123.456, "123.5"),
            (0.0008, "8e-4"),
            (0.000125, "1.25e-4"),
        ] {
            assert_eq!(fmt_num(v), want);
        }
    }

    #[test]
    fn charts_escape_text_and_close_their_svg() {
        let s = vec![Series::new(
            "a<b",
            vec![(1.0, 2.0), (2.0, f64::NAN), (3.0, 1.0)],
        )];
        let charts = [
            line_chart("t&<", "x", "y", &s),
            line_chart("empty", "x", "y", &[]),
            line_chart_marked("m", "x", "y", &s, &[(2.0, "<skipped>".into())]),
            bar_chart("b", "n", &["<c>".into()], &["in"], &[vec![3.0]]),
            hbar_chart("h", "n", &[("r\"1".into(), 2.0)]),
            hbar_chart("h", "n", &[]),
            histogram("hist", "v", &[1.0, 2.0, 2.0, f64::INFINITY], 4),
            histogram_marked(
                "marked",
                "v",
                &[1.0, 2.0],
                4,
                &[Mark {
                    value: 1.5,
                    label: "<min>".into(),
                    note: "a<b".into(),
                    rejects_below: true,
                }],
            ),
        ];
        for c in &charts {
            assert!(c.starts_with("<svg") && c.ends_with("</svg>"), "{c}");
            assert_eq!(c.matches("<svg").count(), 1);
            assert!(
                !c.contains("a<b") && !c.contains("<c>") && !c.contains("r\"1"),
                "{c}"
            );
            assert!(!c.contains("<skipped>"));
        }
        assert!(charts[0].contains("t&amp;&lt;"));
        assert!(!charts[0].contains("NaN"));
        assert!(charts[2].contains("<title>&lt;skipped&gt;</title>"));
    }

    /// The x of every `<line class="threshold">` in a chart.
    fn mark_x(svg: &str) -> Vec<f64> {
        svg.split(r#"<line class="threshold" x1=""#)
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].parse().unwrap())
            .collect()
    }

    #[test]
    fn marks_sit_at_their_value_or_at_the_edge() {
        let values: Vec<f64> = (10..=50).map(f64::from).collect();
        let mark = |value: f64, rejects_below: bool| Mark {
            value,
            label: format!("t = {value}"),
            note: "n".into(),
            rejects_below,
        };
        // Inside the range: on the scale of the ticks (10 at LEFT .. 50 at the right end).
        let svg = histogram_marked("h", "v", &values, 8, &[mark(20.0, true)]);
        let scale = |x: f64| LEFT + (x - 10.0) / 40.0 * (W - LEFT - RIGHT);
        let round = |x: f64| (x * 10.0).round() / 10.0;
        assert_eq!(mark_x(&svg), [round(scale(20.0))]);
        assert!(svg.contains(">t = 20</text>") && !svg.contains("stroke-dasharray"));
        // The rejected side of a minimum is shaded from the left edge to the line.
        assert!(svg.contains(&format!(r#"<rect class="rejected" x="{LEFT:.1}""#)));
        // A little outside: the axis widens to hold it (ticks down to 0).
        let svg = histogram_marked("h", "v", &values, 8, &[mark(5.0, true)]);
        assert!(svg.contains(">t = 5</text>") && !svg.contains("stroke-dasharray"));
        assert_eq!(
            mark_x(&svg),
            [round(LEFT + 5.0 / 50.0 * (W - LEFT - RIGHT))]
        );
        // Far outside: dashed at the edge, its label pointing the way.
        let svg = histogram_marked("h", "v", &values, 8, &[mark(100_000.0, false)]);
        assert_eq!(mark_x(&svg), [W - RIGHT]);
        assert!(svg.contains("t = 100000 \u{2192}") && svg.contains("stroke-dasharray"));
        let svg = histogram_marked("h", "v", &values, 8, &[mark(-1e6, true)]);
        assert_eq!(mark_x(&svg), [LEFT]);
        assert!(svg.contains("\u{2190} t = -1000000"));
    }
}
