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
use plotters::prelude::*;

use super::figures::{Figure, Panel, Style, XAxis};
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

const PANEL_WIDTH: u32 = 640;
const HEIGHT: u32 = 480;

pub fn size(fig: &Figure) -> (u32, u32) {
    (PANEL_WIDTH * fig.panels.len().max(1) as u32, HEIGHT)
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
    let areas = body.split_evenly((1, fig.panels.len().max(1)));
    for (panel, area) in fig.panels.iter().zip(&areas) {
        draw_panel(panel, area)?;
    }
    Ok(())
}

/// An f64 axis with ticks chosen by the caller: category positions 0..n for a categorical
/// axis, round numbers for a numeric one. (plotters' own f64 axis picks its ticks, and its
/// key-point wrapper loses the label formatter.)
struct TickedAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for TickedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let t = (v - self.lo) / (self.hi - self.lo);
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

fn draw_panel<DB: DrawingBackend>(
    panel: &Panel,
    area: &DrawingArea<DB, Shift>,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let xs = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0));
    let (x_range, x_ticks) = match &panel.x {
        XAxis::Numeric => {
            let r = padded(xs);
            (r, ticks(r.0, r.1, 6))
        }
        XAxis::Categories(names) => {
            let n = names.len().max(1) as f64;
            (
                (-0.5, n - 0.5),
                (0..names.len()).map(|i| i as f64).collect(),
            )
        }
    };
    let (y_lo, y_hi) = padded(panel.series.iter().flat_map(|s| {
        s.points
            .iter()
            .map(|p| p.1)
            .chain(s.errors.iter().flat_map(|e| [e.1, e.2]))
    }));
    // The legend gets a band of its own above the data, so it never hides a point; plotters
    // can only draw legends inside the plot.
    let legend_px = 18.0 * panel.series.len() as f64 + 16.0;
    let plot_px = f64::from(HEIGHT) - 150.0;
    let band = (legend_px / plot_px).min(0.6);
    let y_range = (y_lo, y_hi + (y_hi - y_lo) * band / (1.0 - band));
    let y_ticks = ticks(y_lo, y_range.1, 7);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(
            TickedAxis {
                lo: x_range.0,
                hi: x_range.1,
                ticks: x_ticks,
            },
            TickedAxis {
                lo: y_range.0,
                hi: y_range.1,
                ticks: y_ticks,
            },
        )
        .map_err(err)?;
    let names = match &panel.x {
        XAxis::Categories(n) => n.clone(),
        XAxis::Numeric => vec![],
    };
    let x_fmt = |v: &f64| -> String {
        if names.is_empty() {
            tick_label(*v)
        } else {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                names
                    .get(i as usize)
                    .map(|s| truncate(s, 22))
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
    let mut colour = 0;
    for s in &panel.series {
        let c = if s.style == Style::Reference {
            RGBColor(120, 120, 120)
        } else {
            colour += 1;
            PALETTE[(colour - 1) % PALETTE.len()]
        };
        let line = c.stroke_width(2);
        let fill = c.filled();
        for &(x, lo, hi) in &s.errors {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, lo), (x, hi)],
                    c.stroke_width(1),
                )))
                .map_err(err)?;
        }
        let anno = match s.style {
            Style::Reference => chart
                .draw_series(DashedLineSeries::new(
                    s.points.iter().copied(),
                    8,
                    5,
                    c.stroke_width(1),
                ))
                .map_err(err)?,
            Style::Line => chart
                .draw_series(LineSeries::new(s.points.iter().copied(), line))
                .map_err(err)?,
            Style::Points => chart
                .draw_series(s.points.iter().map(|p| Circle::new(*p, 4, fill)))
                .map_err(err)?,
            Style::LinePoints => {
                chart
                    .draw_series(s.points.iter().map(|p| Circle::new(*p, 3, fill)))
                    .map_err(err)?;
                chart
                    .draw_series(LineSeries::new(s.points.iter().copied(), line))
                    .map_err(err)?
            }
        };
        let style = s.style;
        anno.label(truncate(&s.label, 48)).legend(move |(x, y)| {
            if style == Style::Points {
                Circle::new((x + 10, y), 4, fill).into_dyn()
            } else {
                PathElement::new(vec![(x, y), (x + 20, y)], line).into_dyn()
            }
        });
    }
    if !panel.series.is_empty() {
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
    fn padded_range_never_collapses() {
        let (lo, hi) = padded([2.0, 2.0].into_iter());
        assert!(lo < 2.0 && hi > 2.0);
        assert_eq!(padded(std::iter::empty()), (0.0, 1.0));
    }
}
