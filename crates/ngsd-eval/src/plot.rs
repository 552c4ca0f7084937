//! SVG plots of a [`Report`]: the safety/over-refusal trade-off with Wilson error bars, and
//! generation speed per configuration. Text is emitted as SVG `<text>`, so no font files
//! are needed.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::report::{ConfigReport, Interval, Report};

const FONT: &str = "sans-serif";
const LABEL_PX: i32 = 15;
/// Rough width of one label character at [`LABEL_PX`], for placing labels apart.
const CHAR_PX: i32 = 8;

fn report_err(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |message| Error::Report {
        path: path.to_owned(),
        message,
    }
}

/// Tableau 10: strong, mutually distinct colours that stay readable as text on white.
const COLORS: [RGBColor; 10] = [
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

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// Axis end in percent: a round number above the largest upper bound, at least 10.
fn axis_max(highs: impl Iterator<Item = f64>) -> f64 {
    let m = highs.fold(0.0f64, f64::max) * 100.0;
    ((m * 1.15 / 10.0).ceil() * 10.0).clamp(10.0, 105.0)
}

/// A hollow marker outline around (0, 0) in pixels: circle, triangle, square, diamond in
/// turn, growing every fourth configuration so coinciding points stay visible as rings.
fn marker(i: usize, scale: f64) -> Vec<(i32, i32)> {
    let r = 7.0 * scale * (1.0 + 0.45 * (i / 4) as f64);
    let (corners, turn) = match i % 4 {
        0 => (20, 0.0),
        1 => (3, -std::f64::consts::FRAC_PI_2),
        2 => (4, std::f64::consts::FRAC_PI_4),
        _ => (4, 0.0),
    };
    let r = if corners == 3 { r * 1.3 } else { r };
    (0..=corners)
        .map(|k| {
            let t = turn + std::f64::consts::TAU * k as f64 / corners as f64;
            ((r * t.cos()).round() as i32, (r * t.sin()).round() as i32)
        })
        .collect()
}

/// A 2-D chart over percent axes, drawn into an SVG file.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A label's rectangle in pixels: left, top, width, height.
type Rect = (i32, i32, i32, i32);

/// The trade-off plot: x = benign refusal rate, y = attack success rate, one marker per
/// configuration with 95% Wilson error bars in both directions.
pub(crate) fn tradeoff_svg(report: &Report, path: &Path) -> Result<()> {
    let err = report_err(path);
    let points = tradeoff_points(report);
    let root = SVGBackend::new(path, (900, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let x_max = axis_max(points.iter().map(|p| p.1.high));
    let y_max = axis_max(points.iter().map(|p| p.2.high));
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Attack success vs over-refusal (95% Wilson intervals)",
            (FONT, 22),
        )
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(70)
        .build_cartesian_2d(-x_max * 0.03..x_max, -y_max * 0.04..y_max)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("benign refusal rate (%) — lower is better")
        .y_desc("attack success rate, ASR (%) — lower is better")
        .axis_desc_style((FONT, 17))
        .label_style((FONT, 14))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| err(e.to_string()))?;

    let mut placed: Vec<Rect> = Vec::new();
    for (i, (c, refusal, asr)) in points.iter().enumerate() {
        draw_point(&mut chart, i, &c.config.name, refusal, asr, &mut placed).map_err(&err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// The configurations with both a harmful ASR and a benign refusal rate: (configuration,
/// refusal, ASR).
fn tradeoff_points(report: &Report) -> Vec<(&ConfigReport, Interval, Interval)> {
    report
        .configs
        .iter()
        .filter_map(|c| {
            let asr = c.pool("harmful").and_then(|m| m.asr)?;
            let refusal = c.pool("benign").map(|m| m.refusal)?;
            (asr.n > 0 && refusal.n > 0).then_some((c, refusal, asr))
        })
        .collect()
}

/// One configuration's error bars, marker (with its legend entry) and name, the name placed
/// apart from the names in `placed`.
fn draw_point(
    chart: &mut Chart<'_, '_>,
    i: usize,
    name: &str,
    refusal: &Interval,
    asr: &Interval,
    placed: &mut Vec<Rect>,
) -> std::result::Result<(), String> {
    let col = color(i);
    let (x, y) = (refusal.value * 100.0, asr.value * 100.0);
    draw_error_bars(chart, &col, refusal, asr)?;
    let marker_style = ShapeStyle::from(&col).stroke_width(3);
    chart
        .draw_series([EmptyElement::at((x, y)) + PathElement::new(marker(i, 1.0), marker_style)])
        .map_err(|e| e.to_string())?
        .label(name.to_string())
        .legend(move |(lx, ly)| {
            let pts: Vec<(i32, i32)> = marker(i, 0.8)
                .into_iter()
                .map(|(a, b)| (a + lx, b + ly))
                .collect();
            PathElement::new(pts, marker_style)
        });

    let (dx, dy) = place_label(chart, (x, y), name, placed);
    chart
        .draw_series([EmptyElement::at((x, y))
            + Text::new(
                name.to_string(),
                (dx, dy),
                (FONT, LABEL_PX).into_font().color(&col.mix(1.0)),
            )])
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The 95% intervals in both directions, as bars with end caps.
fn draw_error_bars(
    chart: &mut Chart<'_, '_>,
    col: &RGBColor,
    refusal: &Interval,
    asr: &Interval,
) -> std::result::Result<(), String> {
    let style = ShapeStyle::from(col).stroke_width(2);
    let (x, y) = (refusal.value * 100.0, asr.value * 100.0);
    let (xl, xh) = (refusal.low * 100.0, refusal.high * 100.0);
    let (yl, yh) = (asr.low * 100.0, asr.high * 100.0);
    let cap = |at: (f64, f64), horizontal: bool| {
        let seg = if horizontal {
            vec![(-5, 0), (5, 0)]
        } else {
            vec![(0, -5), (0, 5)]
        };
        EmptyElement::at(at) + PathElement::new(seg, style)
    };
    chart
        .draw_series([
            PathElement::new(vec![(x, yl), (x, yh)], style),
            PathElement::new(vec![(xl, y), (xh, y)], style),
        ])
        .map_err(|e| e.to_string())?;
    chart
        .draw_series([
            cap((x, yl), true),
            cap((x, yh), true),
            cap((xl, y), false),
            cap((xh, y), false),
        ])
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The offset of a name from its marker at `at`: beside it, inside the plot, where it overlaps
/// no earlier name (then recorded in `placed`).
fn place_label(
    chart: &Chart<'_, '_>,
    at: (f64, f64),
    name: &str,
    placed: &mut Vec<Rect>,
) -> (i32, i32) {
    let (area_x, area_y) = chart.plotting_area().get_pixel_range();
    let (px, py) = chart.backend_coord(&at);
    let w = name.chars().count() as i32 * CHAR_PX;
    let h = LABEL_PX + 2;
    let dx = if px + 14 + w > area_x.end {
        -14 - w
    } else {
        14
    };
    let inside = |top: i32| top >= area_y.start && top + h <= area_y.end;
    let overlaps = |rect: Rect| {
        placed.iter().any(|p| {
            rect.0 < p.0 + p.2
                && p.0 < rect.0 + rect.2
                && rect.1 < p.1 + p.3
                && p.1 < rect.1 + rect.3
        })
    };
    let dy = (0..16)
        .map(|k| {
            if k % 2 == 0 {
                -h - 4 - (k / 2) * h
            } else {
                6 + (k / 2) * h
            }
        })
        .find(|&candidate| {
            let rect = (px + dx, py + candidate, w, h);
            !overlaps(rect) && inside(rect.1)
        })
        .unwrap_or(-h - 4);
    placed.push((px + dx, py + dy, w, h));
    (dx, dy)
}

/// Generated tokens per second per configuration, as horizontal bars.
pub(crate) fn speed_svg(report: &Report, path: &Path) -> Result<()> {
    let err = report_err(path);
    let rows: Vec<(&str, f64)> = report
        .configs
        .iter()
        .map(|c| {
            (
                c.config.name.as_str(),
                c.pool("all").map_or(0.0, |m| m.tokens_per_s),
            )
        })
        .collect();
    let n = rows.len().max(1);
    let longest = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(4) as u32;
    let height = 140 + 42 * n as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let x_max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1.0) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption("Generation speed per configuration", (FONT, 22))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(30 + longest * 9)
        .build_cartesian_2d(0f64..x_max, (0..n as i32 - 1).into_segmented())
        .map_err(|e| err(e.to_string()))?;
    let names: Vec<String> = rows.iter().map(|r| r.0.to_owned()).collect();
    let y_fmt = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
            // The first configuration is drawn on top.
            usize::try_from(n as i32 - 1 - *i)
                .ok()
                .and_then(|i| names.get(i))
                .cloned()
                .unwrap_or_default()
        }
        SegmentValue::Last => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("generated tokens per second")
        .y_desc("configuration")
        .axis_desc_style((FONT, 17))
        .label_style((FONT, 15))
        .y_labels(n)
        .y_label_formatter(&y_fmt)
        .x_labels(8)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (k, (_, v)) in rows.iter().enumerate() {
        let col = color(k);
        let i = n as i32 - 1 - k as i32;
        let mut bar = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (*v, SegmentValue::Exact(i + 1)),
            ],
            col.filled(),
        );
        bar.set_margin(6, 6, 0, 0);
        chart.draw_series([bar]).map_err(|e| err(e.to_string()))?;
        chart
            .draw_series([EmptyElement::at((*v, SegmentValue::CenterOf(i)))
                + Text::new(format!("{v:.1}"), (6, -8), (FONT, 14))])
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
