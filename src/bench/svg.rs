//! A small hand-written SVG line chart (no plotting dependency): axes with ticks and labels,
//! one `<polyline>` per series, a legend; several charts stack into one document
//! ([`document`]).

use std::fmt::Write as _;

/// One line of the chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend's text.
    pub label: String,
    /// The points, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Draw dashed (baselines, predictions).
    pub dashed: bool,
    /// The palette entry to draw it in (default: the series' position), so that a measured
    /// series and its prediction share a colour.
    pub colour: Option<usize>,
}

/// A line chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// The x axis' label.
    pub x_label: String,
    /// The y axis' label.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
    /// Named x ticks (categories) instead of numbered ones, when not empty.
    pub x_ticks: Vec<(f64, String)>,
    /// Start the y axis at 0 (else at a tick just below the smallest value).
    pub y_from_zero: bool,
}

/// Why a chart cannot be drawn.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SvgError {
    /// Nothing to draw.
    #[error("the chart has no points to draw")]
    Empty,
    /// A coordinate is NaN or infinite.
    #[error("series '{series}' has a non-finite point")]
    NonFinite {
        /// The series' label.
        series: String,
    },
}

const WIDTH: f64 = 820.0;
const HEIGHT: f64 = 520.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 230.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
/// Vertical distance between legend entries.
const LEGEND_STEP: f64 = 18.0;
/// Colour-blind-safe palette (Okabe and Ito), cycled.
const COLOURS: [&str; 8] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442",
];

/// Escape text for XML character data and attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) giving about `target` ticks over
/// `span`.
fn nice_step(span: f64, target: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / target;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_tick(v: f64, step: f64) -> String {
    if step >= 1.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        let decimals = (-step.log10().floor()) as usize;
        format!("{v:.decimals$}")
    }
}

/// The plotting area: the data ranges and where they land.
struct Frame {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
    xstep: f64,
    ystep: f64,
    pw: f64,
    ph: f64,
}

impl Frame {
    /// The frame of `series` (y from 0, or from a tick below the data; x over the data):
    /// every value finite, at least one.
    fn of(series: &[Series], y_from_zero: bool) -> Result<Frame, SvgError> {
        let mut xs = (f64::INFINITY, f64::NEG_INFINITY);
        let mut ymax = 0.0f64;
        let mut ymin = f64::INFINITY;
        let mut any = false;
        for s in series {
            for &(x, y) in &s.points {
                if !x.is_finite() || !y.is_finite() {
                    return Err(SvgError::NonFinite {
                        series: s.label.clone(),
                    });
                }
                any = true;
                xs = (xs.0.min(x), xs.1.max(x));
                ymax = ymax.max(y);
                ymin = ymin.min(y);
            }
        }
        if !any {
            return Err(SvgError::Empty);
        }
        let (x0, mut x1) = xs;
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let lo = if y_from_zero { 0.0 } else { ymin.min(ymax) };
        let span = ymax - lo;
        let ystep = nice_step(if span > 0.0 { span } else { 1.0 }, 6.0);
        let y0 = if y_from_zero {
            0.0
        } else {
            (lo / ystep).floor() * ystep
        };
        Ok(Frame {
            x0,
            x1,
            y0,
            y1: ((ymax / ystep).ceil() * ystep).max(y0 + ystep),
            xstep: nice_step(x1 - x0, 8.0).max(if x1 - x0 >= 2.0 { 1.0 } else { 0.0 }),
            ystep,
            pw: WIDTH - LEFT - RIGHT,
            ph: HEIGHT - TOP - BOTTOM,
        })
    }

    /// Widen the x range to the named ticks, with half a category of room at each end.
    fn with_ticks(mut self, named: &[(f64, String)]) -> Frame {
        if let (Some(lo), Some(hi)) = (
            named.iter().map(|t| t.0).reduce(f64::min),
            named.iter().map(|t| t.0).reduce(f64::max),
        ) {
            self.x0 = self.x0.min(lo) - 0.5;
            self.x1 = self.x1.max(hi) + 0.5;
        }
        self
    }

    fn px(&self, x: f64) -> f64 {
        LEFT + (x - self.x0) / (self.x1 - self.x0) * self.pw
    }

    fn py(&self, y: f64) -> f64 {
        TOP + self.ph - ((y - self.y0) / (self.y1 - self.y0)) * self.ph
    }

    /// Grid lines and y ticks.
    fn y_axis(&self, o: &mut String) {
        let _ = writeln!(o, r#"<g class="y-axis">"#);
        let mut y = self.y0;
        while y <= self.y1 + self.ystep / 2.0 {
            let yy = self.py(y);
            let _ = writeln!(
                o,
                r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#dddddd"/>"##,
                LEFT + self.pw
            );
            let _ = writeln!(
                o,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                yy + 4.0,
                fmt_tick(y, self.ystep)
            );
            y += self.ystep;
        }
        let _ = writeln!(o, "</g>");
    }

    /// X ticks: `named` ones, or every `xstep`.
    fn x_axis(&self, o: &mut String, named: &[(f64, String)]) {
        let _ = writeln!(o, r#"<g class="x-axis">"#);
        let bottom = TOP + self.ph;
        let mut tick = |x: f64, label: &str| {
            let xx = self.px(x);
            let _ = writeln!(
                o,
                r#"<line x1="{xx:.1}" y1="{bottom:.1}" x2="{xx:.1}" y2="{:.1}" stroke="black"/>"#,
                bottom + 5.0
            );
            let _ = writeln!(
                o,
                r#"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                bottom + 18.0,
                escape(label)
            );
        };
        if named.is_empty() {
            let mut x = (self.x0 / self.xstep).ceil() * self.xstep;
            while x <= self.x1 + self.xstep / 1e6 {
                tick(x, &fmt_tick(x, self.xstep));
                x += self.xstep;
            }
        } else {
            for (x, label) in named {
                tick(*x, label);
            }
        }
        let _ = writeln!(o, "</g>");
    }

    /// The two axes and their labels.
    fn axes(&self, o: &mut String, x_label: &str, y_label: &str) {
        let bottom = TOP + self.ph;
        let _ = writeln!(
            o,
            r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom:.1}" stroke="black"/>"#
        );
        let _ = writeln!(
            o,
            r#"<line x1="{LEFT}" y1="{bottom:.1}" x2="{:.1}" y2="{bottom:.1}" stroke="black"/>"#,
            LEFT + self.pw
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + self.pw / 2.0,
            HEIGHT - 15.0,
            escape(x_label)
        );
        let mid = TOP + self.ph / 2.0;
        let _ = writeln!(
            o,
            r#"<text x="20" y="{mid:.1}" text-anchor="middle" transform="rotate(-90 20 {mid:.1})">{}</text>"#,
            escape(y_label)
        );
    }

    /// Series `i` of `n`: its line, its points and its legend entry.
    fn series(&self, o: &mut String, i: usize, n: usize, s: &Series) {
        let colour = COLOURS[s.colour.unwrap_or(i) % COLOURS.len()];
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", self.px(x), self.py(y)))
            .collect();
        let _ = writeln!(
            o,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"><title>{}</title></polyline>"#,
            pts.join(" "),
            escape(&s.label)
        );
        for &(x, y) in &s.points {
            let _ = writeln!(
                o,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"#,
                self.px(x),
                self.py(y)
            );
        }
        // Many series: the legend entries close up so they stay beside the plot.
        let step = LEGEND_STEP.min((self.ph - 10.0) / n.max(1) as f64);
        let ly = TOP + 10.0 + step * i as f64;
        let lx = LEFT + self.pw + 20.0;
        let _ = writeln!(
            o,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"{dash}/>"#,
            lx + 24.0
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 30.0,
            ly + 4.0,
            escape(&s.label)
        );
    }
}

impl Chart {
    /// Render as a standalone SVG document. The y axis starts at 0 when `y_from_zero` (costs
    /// compared by height); the x axis spans the data.
    pub fn to_svg(&self) -> Result<String, SvgError> {
        document(std::slice::from_ref(self))
    }

    /// The chart's elements, drawn `dy` pixels down the document.
    fn render(&self, o: &mut String, dy: f64) -> Result<(), SvgError> {
        let f = Frame::of(&self.series, self.y_from_zero)?.with_ticks(&self.x_ticks);
        let _ = writeln!(o, r#"<g transform="translate(0 {dy:.0})">"#);
        let _ = writeln!(
            o,
            r#"<text x="{}" y="28" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
            LEFT + f.pw / 2.0,
            escape(&self.title)
        );
        f.y_axis(o);
        f.x_axis(o, &self.x_ticks);
        f.axes(o, &self.x_label, &self.y_label);
        for (i, s) in self.series.iter().enumerate() {
            f.series(o, i, self.series.len(), s);
        }
        let _ = writeln!(o, "</g>");
        Ok(())
    }
}

/// One SVG document with `charts` stacked top to bottom (each [`Chart::to_svg`]'s size).
pub fn document(charts: &[Chart]) -> Result<String, SvgError> {
    if charts.is_empty() {
        return Err(SvgError::Empty);
    }
    let height = HEIGHT * charts.len() as f64;
    let title: Vec<&str> = charts.iter().map(|c| c.title.as_str()).collect();
    let mut o = String::new();
    let _ = writeln!(o, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<title>{}</title>"#, escape(&title.join("; ")));
    let _ = writeln!(
        o,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#
    );
    for (i, c) in charts.iter().enumerate() {
        c.render(&mut o, HEIGHT * i as f64)?;
    }
    o.push_str("</svg>\n");
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal XML well-formedness check: balanced, properly nested tags, quoted
    /// attributes, no stray `<` or `&` in text. Returns the element names in order.
    fn well_formed(doc: &str) -> Result<Vec<String>, String> {
        let mut stack: Vec<String> = Vec::new();
        let mut names = Vec::new();
        let mut rest = doc;
        let mut roots = 0;
        while let Some(i) = rest.find('<') {
            check_text(&rest[..i])?;
            rest = &rest[i..];
            let end = rest.find('>').ok_or("unterminated tag")?;
            let tag = &rest[1..end];
            rest = &rest[end + 1..];
            if let Some(pi) = tag.strip_prefix('?') {
                if !pi.ends_with('?') {
                    return Err(format!("bad processing instruction <{tag}>"));
                }
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack
                    .pop()
                    .ok_or(format!("</{name}> without an open tag"))?;
                if open != name.trim() {
                    return Err(format!("<{open}> closed by </{name}>"));
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name: String = body.chars().take_while(|c| !c.is_whitespace()).collect();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(format!("bad element name in <{tag}>"));
            }
            check_attrs(&body[name.len()..])?;
            if stack.is_empty() {
                roots += 1;
            }
            names.push(name.clone());
            if !self_closing {
                stack.push(name);
            }
        }
        check_text(rest)?;
        if !stack.is_empty() {
            return Err(format!("unclosed {stack:?}"));
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        Ok(names)
    }

    fn check_text(t: &str) -> Result<(), String> {
        let mut rest = t;
        while let Some(i) = rest.find('&') {
            let semi = rest[i..].find(';').ok_or("bare &")?;
            let ent = &rest[i + 1..i + semi];
            if !matches!(ent, "amp" | "lt" | "gt" | "quot" | "apos") {
                return Err(format!("unknown entity &{ent};"));
            }
            rest = &rest[i + semi + 1..];
        }
        Ok(())
    }

    fn check_attrs(mut a: &str) -> Result<(), String> {
        loop {
            a = a.trim_start();
            if a.is_empty() {
                return Ok(());
            }
            let eq = a.find('=').ok_or(format!("attribute without value: {a}"))?;
            let name = &a[..eq];
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-:".contains(c))
            {
                return Err(format!("bad attribute name '{name}'"));
            }
            a = &a[eq + 1..];
            let rest = a
                .strip_prefix('"')
                .ok_or(format!("unquoted value of {name}"))?;
            let close = rest
                .find('"')
                .ok_or(format!("unterminated value of {name}"))?;
            let value = &rest[..close];
            if value.contains('<') {
                return Err(format!("'<' in the value of {name}"));
            }
            check_text(value)?;
            a = &rest[close + 1..];
        }
    }

    fn chart() -> Chart {
        Chart {
            title: "cost <per> round trip & more".into(),
            x_label: "implemented breakpoints = watchpoints".into(),
            y_label: "ns per round trip".into(),
            series: vec![
                Series {
                    label: "era1 dirty".into(),
                    points: (2..=16)
                        .map(|n| (n as f64, 10.0 + 5.0 * n as f64))
                        .collect(),
                    dashed: false,
                    colour: None,
                },
                Series {
                    label: "era1 clean".into(),
                    points: (2..=16).map(|n| (n as f64, 1.0)).collect(),
                    dashed: false,
                    colour: None,
                },
                Series {
                    label: "copy \"baseline\"".into(),
                    points: (2..=16).map(|n| (n as f64, 2.0 * n as f64)).collect(),
                    dashed: true,
                    colour: None,
                },
            ],
            x_ticks: Vec::new(),
            y_from_zero: true,
        }
    }

    #[test]
    fn svg_is_well_formed_with_one_polyline_per_series() {
        let c = chart();
        let svg = c.to_svg().unwrap();
        let names = well_formed(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert_eq!(names.first().map(String::as_str), Some("svg"));
        assert_eq!(names.iter().filter(|n| *n == "polyline").count(), 3);
        assert_eq!(svg.matches("<polyline").count(), c.series.len());
        // Axis labels, legend entries (escaped), ticks.
        assert!(svg.contains("ns per round trip"));
        assert!(svg.contains("implemented breakpoints = watchpoints"));
        assert!(svg.contains("copy &quot;baseline&quot;"));
        assert!(svg.contains("cost &lt;per&gt; round trip &amp; more"));
        assert!(svg.contains(">16<"), "x ticks reach the last count");
        assert!(svg.contains("stroke-dasharray"));
        // Each polyline has one coordinate pair per point.
        for line in svg.lines().filter(|l| l.starts_with("<polyline")) {
            let pts = line
                .split("points=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            assert_eq!(pts.split(' ').count(), 15, "{line}");
        }
    }

    #[test]
    fn svg_rejects_empty_and_non_finite_data() {
        let mut c = chart();
        c.series.clear();
        assert_eq!(c.to_svg(), Err(SvgError::Empty));
        let mut c = chart();
        c.series[1].points[3].1 = f64::NAN;
        assert!(
            matches!(c.to_svg(), Err(SvgError::NonFinite { series }) if series == "era1 clean")
        );
        // A single point still draws (degenerate x range).
        let c = Chart {
            series: vec![Series {
                label: "one".into(),
                points: vec![(3.0, 0.0)],
                dashed: false,
                colour: None,
            }],
            ..chart()
        };
        well_formed(&c.to_svg().unwrap()).unwrap();
    }

    #[test]
    fn charts_stack_into_one_document_with_named_ticks() {
        let mut named = chart();
        named.title = "second".into();
        named.x_ticks = vec![(2.0, "clean".into()), (16.0, "use_hw <hw>".into())];
        named.series[2].colour = Some(0);
        named.y_from_zero = false;
        let svg = document(&[chart(), named]).unwrap();
        let names = well_formed(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert_eq!(names.iter().filter(|n| *n == "polyline").count(), 6);
        assert!(svg.contains(r#"height="1040""#));
        assert!(svg.contains(r#"translate(0 520)"#));
        assert!(svg.contains(">clean<") && svg.contains(">use_hw &lt;hw&gt;<"));
        // Named ticks beyond the data widen the x axis: every tick inside the plot.
        let mut few = chart();
        few.x_ticks = (0..5).map(|i| (f64::from(i), format!("s{i}"))).collect();
        for s in &mut few.series {
            s.points.truncate(2);
            for (i, p) in s.points.iter_mut().enumerate() {
                p.0 = i as f64;
            }
        }
        let f = few.to_svg().unwrap();
        for line in f
            .lines()
            .filter(|l| l.starts_with("<text") && l.contains(">s"))
        {
            let x: f64 = line
                .split("x=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!((LEFT..=WIDTH - RIGHT).contains(&x), "{line}");
        }
        // Without y_from_zero the axis starts at a tick below the smallest value.
        let mut high = chart();
        high.y_from_zero = false;
        for s in &mut high.series {
            for p in &mut s.points {
                p.1 += 5000.0;
            }
        }
        let h = high.to_svg().unwrap();
        assert!(h.contains(">5000<") && !h.contains(">0<"), "{h}");
        // The dashed series of the second chart takes the first colour.
        let second = svg.split("translate(0 520)").nth(1).unwrap();
        let dashed = second
            .lines()
            .find(|l| l.starts_with("<polyline") && l.contains("dasharray"))
            .unwrap();
        assert!(dashed.contains(COLOURS[0]), "{dashed}");
        assert_eq!(document(&[]), Err(SvgError::Empty));
    }

    #[test]
    fn the_checker_itself_rejects_broken_xml() {
        assert!(well_formed("<svg><g></svg>").is_err());
        assert!(well_formed("<svg a=b/>").is_err());
        assert!(well_formed("<svg>a & b</svg>").is_err());
        assert!(well_formed("<svg/><svg/>").is_err());
        assert!(well_formed("<svg x=\"1\"><g/></svg>").is_ok());
    }
}
