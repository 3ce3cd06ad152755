//! The SVG chart: for each scenario, requests/s and CPU per 10,000 requests of
//! every target, side by side.

use std::path::Path;

use plotters::prelude::*;

use crate::run::{Measured, ScenarioResult};
use crate::scenario::Target;

fn color(t: Target) -> RGBColor {
    match t {
        Target::Direct => RGBColor(120, 120, 120),
        Target::Gateway => RGBColor(31, 119, 180),
        Target::Pipeline => RGBColor(23, 190, 207),
        Target::Nginx => RGBColor(44, 160, 44),
        Target::Haproxy => RGBColor(214, 39, 40),
    }
}

type Draw<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// Write the chart to `path`.
pub fn write_svg(path: &Path, results: &[ScenarioResult]) -> Result<(), String> {
    let rows = results.len().max(1);
    let height = 60 + 260 * rows as u32;
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(
            "gateway vs nginx, haproxy and the direct backend",
            ("sans-serif", 22),
        )
        .map_err(|e| e.to_string())?;
    let panels = root.split_evenly((rows, 2));
    for (k, sc) in results.iter().enumerate() {
        let title = format!("{}: requests/s (median)", sc.key);
        panel(&panels[2 * k], &title, &sc.measured, Measured::rps)?;
        let title = format!("{}: CPU s per 10k requests", sc.key);
        panel(
            &panels[2 * k + 1],
            &title,
            &sc.measured,
            Measured::cpu_per_10k,
        )?;
    }
    root.present().map_err(|e| e.to_string())
}

fn panel(
    area: &Draw<'_>,
    title: &str,
    ms: &[Measured],
    value: fn(&Measured) -> f64,
) -> Result<(), String> {
    let n = ms.len().max(1);
    let top = ms.iter().map(value).fold(0.0_f64, f64::max).max(1e-9) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d((0..n).into_segmented(), 0.0..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => ms.get(*i).map_or("", |m| m.target.name()).to_string(),
            _ => String::new(),
        })
        .draw()
        .map_err(|e| e.to_string())?;
    let bar_color = |x: &SegmentValue<usize>| match x {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
            ms.get(*i).map_or(BLACK, |m| color(m.target))
        }
        SegmentValue::Last => BLACK,
    };
    chart
        .draw_series(
            Histogram::vertical(&chart)
                .margin(12)
                .style_func(|x, _| bar_color(x).filled())
                .data(ms.iter().enumerate().map(|(i, m)| (i, value(m)))),
        )
        .map_err(|e| e.to_string())?;
    Ok(())
}
