//! Drawing [`Figure`]s with plotters, once per backend: SVG (kept as text for report.html)
//! and PNG (bitmap backend).
//!
//! Text in PNGs is rasterised from DejaVu Sans compiled into the binary: plotters' default
//! font lookup goes through fontconfig/freetype, which minimal machines and CI lack, and a
//! plot without axis labels is worse than none. SVGs name `sans-serif` and let the viewer
//! pick the font (plotters still lays them out with the embedded one's metrics).

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::figures::{legend_entries, legend_outside, Figure, Panel, Series, Style, XAxis};
use super::load::ReportError;

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Registers the embedded font under the family name plotters asks for.
fn ensure_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
                .map_err(|_| "the embedded DejaVu Sans font could not be parsed".to_string())
        })
        .clone()
}

/// Tableau's ten colours: distinguishable, and readable by most colour-blind viewers.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// How a series is drawn: a palette colour, and past the palette's ten colours the same
/// colours again with dashed lines, so that no two series of a panel look alike.
#[derive(Debug, Clone, Copy)]
struct Ink {
    colour: RGBColor,
    dashed: bool,
}

fn ink(i: usize) -> Ink {
    Ink {
        colour: PALETTE[i % PALETTE.len()],
        dashed: (i / PALETTE.len()) % 2 == 1,
    }
}

const GREY: Ink = Ink {
    colour: RGBColor(120, 120, 120),
    dashed: false,
};

const PANEL_WIDTH: u32 = 640;
const HEIGHT: u32 = 480;
/// The column beside a panel that holds its legend when it is too long for the inside.
const LEGEND_WIDTH: u32 = 300;
const LEGEND_ROW: i32 = 16;

fn panel_width(p: &Panel) -> u32 {
    PANEL_WIDTH + if legend_outside(p) { LEGEND_WIDTH } else { 0 }
}

/// Facets with a shared legend go in a grid of at most this many columns.
const GRID_COLUMNS: usize = 3;

fn grid(fig: &Figure) -> (usize, usize) {
    let n = fig.panels.len().max(1);
    let cols = n.min(GRID_COLUMNS);
    (cols, n.div_ceil(cols))
}

pub fn size(fig: &Figure) -> (u32, u32) {
    if fig.shared_legend {
        let (cols, rows) = grid(fig);
        return (
            cols as u32 * PANEL_WIDTH + LEGEND_WIDTH,
            rows as u32 * HEIGHT,
        );
    }
    (
        fig.panels
            .iter()
            .map(panel_width)
            .sum::<u32>()
            .max(PANEL_WIDTH),
        HEIGHT,
    )
}

/// The SVG document of a figure.
pub fn svg(fig: &Figure) -> Result<String, ReportError> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size(fig)).into_drawing_area();
        draw(fig, &root).map_err(|m| plot_err(fig, m))?;
        root.present().map_err(|e| plot_err(fig, e.to_string()))?;
    }
    Ok(text)
}

/// Writes a figure as PNG.
pub fn png(fig: &Figure, path: &Path) -> Result<(), ReportError> {
    let root = BitMapBackend::new(path, size(fig)).into_drawing_area();
    draw(fig, &root).map_err(|m| plot_err(fig, m))?;
    root.present()
        .map_err(|e| plot_err(fig, format!("{}: {e}", path.display())))
}

fn plot_err(fig: &Figure, message: String) -> ReportError {
    ReportError::Plot {
        name: fig.name.clone(),
        message,
    }
}

fn draw<DB: DrawingBackend>(fig: &Figure, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
    // Both backends measure text with it to lay out labels; only PNGs rasterise it.
    ensure_font()?;
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let body = root
        .titled(&fig.title, ("sans-serif", 24))
        .map_err(|e| e.to_string())?;
    if fig.shared_legend {
        return draw_facets(fig, &body);
    }
    // Panels are as wide as they need (a legend column makes one wider).
    let mut breaks = vec![];
    let mut x = 0;
    for p in fig.panels.iter().take(fig.panels.len().saturating_sub(1)) {
        x += panel_width(p) as i32;
        breaks.push(x);
    }
    let areas = body.split_by_breakpoints(breaks, Vec::<i32>::new());
    for (panel, area) in fig.panels.iter().zip(&areas) {
        let colours = colours(panel);
        if legend_outside(panel) {
            let (plot, legend) = area.split_horizontally(PANEL_WIDTH);
            draw_panel(panel, &plot, &colours, false)?;
            draw_legend_beside(&legend_rows(panel, &colours), &legend)?;
        } else {
            draw_panel(panel, area, &colours, true)?;
        }
    }
    Ok(())
}

/// Facets in a grid, each series' colour fixed by its label across panels, and one
/// legend of every label beside them.
fn draw_facets<DB: DrawingBackend>(
    fig: &Figure,
    body: &DrawingArea<DB, Shift>,
) -> Result<(), String> {
    let (cols, rows) = grid(fig);
    let mut labels: Vec<&str> = vec![];
    for s in fig.panels.iter().flat_map(|p| &p.series) {
        if s.style != Style::Reference && !labels.contains(&s.label.as_str()) {
            labels.push(&s.label);
        }
    }
    let colour_of = |s: &Series| {
        labels
            .iter()
            .position(|l| *l == s.label)
            .map(ink)
            .unwrap_or(GREY)
    };
    let (grid_area, legend) = body.split_horizontally(cols as u32 * PANEL_WIDTH);
    let areas = grid_area.split_evenly((rows, cols));
    for (panel, area) in fig.panels.iter().zip(&areas) {
        let colours: Vec<Ink> = panel.series.iter().map(colour_of).collect();
        draw_panel(panel, area, &colours, false)?;
    }
    let mut rows: Vec<LegendRow> = vec![];
    for p in &fig.panels {
        for (s, c) in p.series.iter().zip(p.series.iter().map(colour_of)) {
            // Labels name configurations here; whether one is vacuous differs by panel.
            if !rows.iter().any(|r| r.label == s.label) {
                rows.push(LegendRow {
                    label: s.label.clone(),
                    ink: c,
                    style: s.style,
                    cross: false,
                    text_only: false,
                });
            }
        }
    }
    // Every configuration a mean of the same number of replicates: said once, not on
    // every row (where it would push the configuration's name out of the column).
    let suffix = rows.first().and_then(|r| {
        r.label
            .find(" (mean ± sd of ")
            .map(|i| r.label[i..].to_string())
    });
    if let Some(suffix) = suffix.filter(|x| {
        rows.iter()
            .all(|r| r.style == Style::Reference || r.label.ends_with(x.as_str()))
    }) {
        for r in &mut rows {
            if let Some(l) = r.label.strip_suffix(suffix.as_str()) {
                r.label = l.to_string();
            }
        }
        rows.push(LegendRow {
            label: format!("lines: {}", suffix.trim().trim_matches(['(', ')'])),
            ink: GREY,
            style: Style::Points,
            cross: false,
            text_only: true,
        });
    }
    if fig
        .panels
        .iter()
        .flat_map(|p| &p.series)
        .any(|s| !s.vacuous.is_empty())
    {
        rows.push(vacuous_row());
    }
    draw_legend_beside(&rows, &legend)
}

/// An f64 axis with ticks chosen by the caller: category positions 0..n for a categorical
/// axis, round numbers for a numeric one, and a log10 scale where asked. (plotters' own
/// f64 axis picks its ticks, and its key-point wrapper loses the label formatter.)
struct TickedAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    log: bool,
}

impl TickedAxis {
    fn scale(&self, v: f64) -> f64 {
        if self.log {
            // Nothing non-positive reaches a log axis (see `draw_panel`); clamp anyway
            // so a stray value lands on the edge instead of at NaN.
            v.max(f64::MIN_POSITIVE).log10()
        } else {
            v
        }
    }
}

impl Ranged for TickedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let (lo, hi) = (self.scale(self.lo), self.scale(self.hi));
        let t = (self.scale(*v) - lo) / (hi - lo);
        limit.0 + (t * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Light (minor) grid points would duplicate the ticks: none.
        if hint.weight().allow_light_points() {
            return vec![];
        }
        self.ticks.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// "Nice" tick positions (steps of 1, 2 or 5 times a power of ten) covering [lo, hi].
pub fn ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// Ticks are round numbers: print them without the trailing zeros of a fixed precision.
fn tick_label(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-3 {
        return format!("{v:.1e}");
    }
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

fn padded(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        let d = (lo.abs() * 0.1).max(0.05);
        return (lo - d, hi + d);
    }
    let d = (hi - lo) * 0.06;
    (lo - d, hi + d)
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Ticks of a log axis: powers of ten, with 2 and 5 times them when the range is short.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return vec![];
    }
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let steps: &[f64] = if b - a <= 2 { &[1.0, 2.0, 5.0] } else { &[1.0] };
    (a..=b)
        .flat_map(|e| steps.iter().map(move |m| m * 10f64.powi(e)))
        .filter(|v| (lo..=hi).contains(v))
        .collect()
}

/// Padding of a log axis, in log space.
fn padded_log(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = padded(values.filter(|v| *v > 0.0).map(f64::log10));
    (10f64.powf(lo), 10f64.powf(hi))
}

/// Category labels are written across when they fit side by side, else turned upright
/// (overlapping names are unreadable): the decision, and the label band it needs.
pub fn category_labels_upright(names: &[String]) -> bool {
    let widest = names
        .iter()
        .map(|n| n.chars().count().min(28))
        .max()
        .unwrap_or(0);
    // About 7 px per character at 13 px, and the data area is about 540 px wide.
    names.len() * (widest * 7 + 10) > 540
}

/// Draws one panel, its series in `colours` (one per series), with its legend inside
/// when `inside_legend`.
fn draw_panel<DB: DrawingBackend>(
    panel: &Panel,
    area: &DrawingArea<DB, Shift>,
    colours: &[Ink],
    inside_legend: bool,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let log = panel.x == XAxis::Log;
    let xs = panel.series.iter().flat_map(|s| {
        s.points
            .iter()
            .chain(&s.vacuous)
            .map(|p| p.0)
            .chain(s.errors.iter().map(|e| e.0))
    });
    let (x_range, auto_ticks) = match &panel.x {
        XAxis::Numeric => {
            let r = padded(xs);
            (r, ticks(r.0, r.1, 6))
        }
        XAxis::Log => {
            let r = padded_log(xs);
            (r, log_ticks(r.0, r.1))
        }
        XAxis::Categories(names) => {
            let n = names.len().max(1) as f64;
            (
                (-0.5, n - 0.5),
                (0..names.len()).map(|i| i as f64).collect(),
            )
        }
    };
    // Counts (epochs, dimensions) have no ticks between whole numbers.
    let whole = panel.x != XAxis::Log
        && panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().chain(&s.vacuous))
            .all(|p| p.0.fract() == 0.0);
    let x_ticks = if panel.x_ticks.is_empty() {
        let mut t = auto_ticks;
        if whole {
            t.retain(|v| v.fract() == 0.0);
        }
        t
    } else {
        panel.x_ticks.clone()
    };
    let (y_lo, y_hi) = padded(panel.series.iter().flat_map(|s| {
        s.points
            .iter()
            .chain(&s.vacuous)
            .map(|p| p.1)
            .chain(s.errors.iter().flat_map(|e| [e.1, e.2]))
    }));
    // An inside legend gets a band of its own above the data, so it never hides a point
    // (plotters can only draw legends inside the plot); a long one goes beside the panel.
    let outside = !inside_legend;
    let entries = if outside { 0 } else { legend_entries(panel) };
    let legend_px = if entries == 0 {
        0.0
    } else {
        18.0 * entries as f64 + 16.0
    };
    let plot_px = f64::from(HEIGHT) - 150.0;
    let band = (legend_px / plot_px).min(0.6);
    let y_range = (y_lo, y_hi + (y_hi - y_lo) * band / (1.0 - band));
    let y_ticks = ticks(y_lo, y_range.1, 7);
    let names = match &panel.x {
        XAxis::Categories(n) => n.clone(),
        XAxis::Numeric | XAxis::Log => vec![],
    };
    let upright = category_labels_upright(&names);
    let label_area = if upright {
        let widest = names
            .iter()
            .map(|n| n.chars().count().min(28))
            .max()
            .unwrap_or(0);
        (widest as u32 * 7 + 40).min(220)
    } else {
        44
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(label_area)
        .y_label_area_size(64)
        .build_cartesian_2d(
            TickedAxis {
                lo: x_range.0,
                hi: x_range.1,
                ticks: x_ticks,
                log,
            },
            TickedAxis {
                lo: y_range.0,
                hi: y_range.1,
                ticks: y_ticks,
                log: false,
            },
        )
        .map_err(err)?;
    let x_fmt = |v: &f64| -> String {
        // Upright labels are drawn below by hand: plotters centres a turned label on its
        // tick, over the data.
        if upright {
            return String::new();
        }
        if names.is_empty() {
            tick_label(*v)
        } else {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                names
                    .get(i as usize)
                    .map(|s| truncate(s, 28))
                    .unwrap_or_default()
            } else {
                String::new()
            }
        }
    };
    let y_fmt = |v: &f64| tick_label(*v);
    chart
        .configure_mesh()
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()
        .map_err(err)?;
    if upright {
        let font = ("sans-serif", 13)
            .into_font()
            .transform(FontTransform::Rotate90)
            .color(&BLACK);
        let base = area.get_base_pixel();
        for (i, name) in names.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64, y_range.0));
            // Turned clockwise, the glyphs lie to the right of the anchor and run down.
            area.draw(&Text::new(
                truncate(name, 28),
                (px - base.0 - 7, py - base.1 + 8),
                font.clone(),
            ))
            .map_err(err)?;
        }
    }
    let on_axis = |p: &(f64, f64)| !log || p.0 > 0.0;
    for (s, &ink) in panel.series.iter().zip(colours) {
        let (c, dashed) = (ink.colour, ink.dashed);
        let line = c.stroke_width(2);
        let fill = c.filled();
        for &(x, lo, hi) in s.errors.iter().filter(|e| on_axis(&(e.0, 0.0))) {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, lo), (x, hi)],
                    c.stroke_width(1),
                )))
                .map_err(err)?;
        }
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(on_axis).collect();
        let vac: Vec<(f64, f64)> = s.vacuous.iter().copied().filter(on_axis).collect();
        chart
            .draw_series(vac.iter().map(|p| Cross::new(*p, 5, c.stroke_width(2))))
            .map_err(err)?;
        let anno = match s.style {
            Style::Reference | Style::Baseline => chart
                .draw_series(DashedLineSeries::new(
                    pts.iter().copied(),
                    8,
                    5,
                    c.stroke_width(if s.style == Style::Baseline { 2 } else { 1 }),
                ))
                .map_err(err)?,
            Style::Line if dashed => chart
                .draw_series(DashedLineSeries::new(pts.iter().copied(), 6, 4, line))
                .map_err(err)?,
            Style::Line => chart
                .draw_series(LineSeries::new(pts.iter().copied(), line))
                .map_err(err)?,
            Style::Points => chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 4, fill)))
                .map_err(err)?,
            Style::LinePoints => {
                chart
                    .draw_series(pts.iter().map(|p| Circle::new(*p, 3, fill)))
                    .map_err(err)?;
                if dashed {
                    chart
                        .draw_series(DashedLineSeries::new(pts.iter().copied(), 6, 4, line))
                        .map_err(err)?
                } else {
                    chart
                        .draw_series(LineSeries::new(pts.iter().copied(), line))
                        .map_err(err)?
                }
            }
        };
        if !outside {
            let style = s.style;
            anno.label(legend_label(s))
                .legend(move |(x, y)| match style {
                    Style::Points => Circle::new((x + 10, y), 4, fill).into_dyn(),
                    Style::Reference | Style::Baseline => {
                        PathElement::new(vec![(x, y), (x + 8, y)], line).into_dyn()
                    }
                    _ if dashed => {
                        DashedPathElement::new(vec![(x, y), (x + 20, y)], 6, 4, line).into_dyn()
                    }
                    _ => PathElement::new(vec![(x, y), (x + 20, y)], line).into_dyn(),
                });
        }
    }
    if !outside && panel.series.iter().any(|s| !s.vacuous.is_empty()) {
        let grey = RGBColor(90, 90, 90);
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(err)?
            .label(VACUOUS_LABEL)
            .legend(move |(x, y)| Cross::new((x + 10, y), 5, grey.stroke_width(2)).into_dyn());
    }
    if entries > 0 {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

const VACUOUS_LABEL: &str = "× vacuous: true but trivial, drawn at the trivial value (0, chance)";

fn legend_label(s: &Series) -> String {
    let vacuous_only = s.points.is_empty() && !s.vacuous.is_empty();
    let l = truncate(&s.label, 48);
    if vacuous_only {
        format!("{l} (vacuous)")
    } else {
        l
    }
}

/// Each series' ink: grey for reference lines, the palette in order for the rest.
fn colours(panel: &Panel) -> Vec<Ink> {
    let mut next = 0;
    panel
        .series
        .iter()
        .map(|s| {
            if s.style == Style::Reference {
                GREY
            } else {
                next += 1;
                ink(next - 1)
            }
        })
        .collect()
}

/// One row of a legend drawn by hand (beside the panels).
struct LegendRow {
    label: String,
    ink: Ink,
    style: Style,
    /// The vacuous-bound mark rather than the series' own.
    cross: bool,
    /// A note without a mark.
    text_only: bool,
}

fn vacuous_row() -> LegendRow {
    LegendRow {
        label: VACUOUS_LABEL.to_string(),
        ink: Ink {
            colour: RGBColor(90, 90, 90),
            dashed: false,
        },
        style: Style::Points,
        cross: true,
        text_only: false,
    }
}

fn legend_rows(panel: &Panel, colours: &[Ink]) -> Vec<LegendRow> {
    let mut rows: Vec<LegendRow> = panel
        .series
        .iter()
        .zip(colours)
        .map(|(s, c)| LegendRow {
            label: legend_label(s),
            ink: *c,
            style: s.style,
            cross: false,
            text_only: false,
        })
        .collect();
    if panel.series.iter().any(|s| !s.vacuous.is_empty()) {
        rows.push(vacuous_row());
    }
    rows
}

/// A legend in its own column beside the plots: one row per entry, as many as fit, then
/// a count of the rest.
fn draw_legend_beside<DB: DrawingBackend>(
    entries: &[LegendRow],
    area: &DrawingArea<DB, Shift>,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let font = ("sans-serif", 12).into_font().color(&BLACK);
    let top = 50;
    let height = area.dim_in_pixel().1 as i32;
    let rows = ((height - top - 60) / LEGEND_ROW).max(1) as usize;
    let shown = if entries.len() > rows {
        rows - 1
    } else {
        entries.len()
    };
    for (k, e) in entries.iter().take(shown).enumerate() {
        let y = top + k as i32 * LEGEND_ROW;
        let c = e.ink.colour;
        if e.text_only {
            // A note: no mark to draw.
        } else if e.cross {
            area.draw(&Cross::new((14, y), 5, c.stroke_width(2)))
                .map_err(err)?;
        } else if e.style == Style::Points {
            area.draw(&Circle::new((14, y), 4, c.filled()))
                .map_err(err)?;
        } else if e.ink.dashed || e.style == Style::Baseline {
            area.draw(&DashedPathElement::new(
                vec![(4, y), (24, y)],
                6,
                4,
                c.stroke_width(2),
            ))
            .map_err(err)?;
        } else {
            area.draw(&PathElement::new(vec![(4, y), (24, y)], c.stroke_width(2)))
                .map_err(err)?;
        }
        area.draw(&Text::new(
            truncate(&e.label, 44),
            (32, y - 7),
            font.clone(),
        ))
        .map_err(err)?;
    }
    if shown < entries.len() {
        let y = top + shown as i32 * LEGEND_ROW;
        area.draw(&Text::new(
            format!(
                "… and {} more (see the results tables)",
                entries.len() - shown
            ),
            (32, y - 7),
            font.clone(),
        ))
        .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers_inside_the_range() {
        assert_eq!(ticks(0.0, 10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(0.37, 0.91, 6);
        assert!(t.iter().all(|v| (0.37..=0.91).contains(v)), "{t:?}");
        assert!(t.len() >= 3, "{t:?}");
        assert_eq!(ticks(1.0, 1.0, 5), vec![1.0]);
    }

    #[test]
    fn tick_labels_drop_trailing_zeros() {
        assert_eq!(tick_label(0.5), "0.5");
        assert_eq!(tick_label(4.0), "4");
        assert_eq!(tick_label(-0.0), "0");
        assert_eq!(tick_label(0.30000000000000004), "0.3");
    }

    #[test]
    fn log_ticks_are_powers_of_ten_and_their_halves_on_short_ranges() {
        assert_eq!(log_ticks(1e-4, 1e-1), vec![1e-4, 1e-3, 1e-2, 1e-1]);
        assert_eq!(log_ticks(60.0, 600.0), vec![100.0, 200.0, 500.0]);
        assert!(log_ticks(0.0, 10.0).is_empty(), "no log axis through 0");
    }

    #[test]
    fn category_names_turn_upright_only_when_they_would_overlap() {
        let names = |n: usize, len: usize| vec!["x".repeat(len); n];
        assert!(!category_labels_upright(&names(4, 10)));
        assert!(category_labels_upright(&names(11, 20)));
    }

    #[test]
    fn inks_past_the_palette_are_dashed() {
        assert!(!ink(0).dashed && !ink(9).dashed);
        assert!(ink(10).dashed && ink(11).colour == ink(1).colour);
    }

    #[test]
    fn padded_range_never_collapses() {
        let (lo, hi) = padded([2.0, 2.0].into_iter());
        assert!(lo < 2.0 && hi > 2.0);
        assert_eq!(padded(std::iter::empty()), (0.0, 1.0));
    }
}
