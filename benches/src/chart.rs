//! The SVG chart: for each load scenario, requests/s and CPU per request of every
//! target side by side, each CPU bar labelled with its ratio to the Pingora floor
//! (the gateway's cost over the engine), or with `--instructions` the counted
//! targets' instructions per request instead of CPU; for the idle scenario, the
//! memory growth and the KiB per idle connection.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::idle::IdleMeasured;
use crate::run::{Measured, ScenarioResult};
use crate::scenario::{Kind, Target};

fn color(t: Target) -> RGBColor {
    match t {
        Target::Direct => RGBColor(120, 120, 120),
        Target::Floor => RGBColor(148, 103, 189),
        Target::Gateway => RGBColor(31, 119, 180),
        Target::Pipeline => RGBColor(23, 190, 207),
        Target::Nginx => RGBColor(44, 160, 44),
        Target::Haproxy => RGBColor(214, 39, 40),
    }
}

type Draw<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// One bar: whose, how high, and the text above it.
struct Bar {
    target: Target,
    value: f64,
    label: Option<String>,
}

/// Write the chart to `path`.
pub fn write_svg(path: &Path, results: &[ScenarioResult]) -> Result<(), String> {
    let rows = results.len().max(1);
    let height = 60 + 260 * rows as u32;
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(
            "gateway vs the Pingora floor, nginx, haproxy and the direct backend",
            ("sans-serif", 22),
        )
        .map_err(|e| e.to_string())?;
    let panels = root.split_evenly((rows, 2));
    for (k, sc) in results.iter().enumerate() {
        let (left, right) = (&panels[2 * k], &panels[2 * k + 1]);
        match sc.kind {
            Kind::Load => {
                let rps = bars(&sc.measured, Measured::rps, |_| None);
                panel(left, &format!("{}: requests/s (median)", sc.key), &rps)?;
                if let Some(floor) = sc
                    .get(Target::Floor)
                    .and_then(Measured::instructions_per_request)
                {
                    // under callgrind the CPU time of the counted targets means nothing
                    let counted: Vec<Bar> = sc
                        .measured
                        .iter()
                        .filter_map(|m| {
                            let n = m.instructions_per_request()?;
                            Some(Bar {
                                target: m.target,
                                value: n / 1000.0,
                                label: Some(format!("{:.2}x floor", n / floor)),
                            })
                        })
                        .collect();
                    let title = format!("{}: thousand instructions per request (x floor)", sc.key);
                    panel(right, &title, &counted)?;
                    continue;
                }
                let floor = sc
                    .get(Target::Floor)
                    .map(Measured::cpu_us_per_request)
                    .filter(|&f| f > 0.0);
                let cpu = bars(&sc.measured, Measured::cpu_us_per_request, |m| {
                    floor.map(|f| format!("{:.2}x floor", m.cpu_us_per_request() / f))
                });
                let title = format!("{}: CPU µs per request (x floor)", sc.key);
                panel(right, &title, &cpu)?;
            }
            Kind::Idle => {
                let idle = |value: fn(&IdleMeasured) -> f64| -> Vec<Bar> {
                    sc.idle
                        .iter()
                        .map(|m| Bar {
                            target: m.target,
                            value: value(m),
                            label: Some(format!("{:.1}", value(m))),
                        })
                        .collect()
                };
                let n = sc.connections;
                let title = format!("{}: RSS growth MiB, {n} idle connections", sc.key);
                panel(left, &title, &idle(IdleMeasured::growth_mib))?;
                let title = format!("{}: KiB per idle connection", sc.key);
                panel(right, &title, &idle(IdleMeasured::kib_per_connection))?;
            }
        }
    }
    root.present().map_err(|e| e.to_string())
}

fn bars(
    ms: &[Measured],
    value: fn(&Measured) -> f64,
    label: impl Fn(&Measured) -> Option<String>,
) -> Vec<Bar> {
    ms.iter()
        .map(|m| Bar {
            target: m.target,
            value: value(m),
            label: label(m),
        })
        .collect()
}

fn panel(area: &Draw<'_>, title: &str, bars: &[Bar]) -> Result<(), String> {
    let n = bars.len().max(1);
    let top = bars
        .iter()
        .map(|b| b.value)
        .fold(0.0_f64, f64::max)
        .max(1e-9)
        * 1.2;
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
            SegmentValue::CenterOf(i) => bars.get(*i).map_or("", |b| b.target.name()).to_string(),
            _ => String::new(),
        })
        .draw()
        .map_err(|e| e.to_string())?;
    let bar_color = |x: &SegmentValue<usize>| match x {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
            bars.get(*i).map_or(BLACK, |b| color(b.target))
        }
        SegmentValue::Last => BLACK,
    };
    chart
        .draw_series(
            Histogram::vertical(&chart)
                .margin(12)
                .style_func(|x, _| bar_color(x).filled())
                .data(bars.iter().enumerate().map(|(i, b)| (i, b.value))),
        )
        .map_err(|e| e.to_string())?;
    let style =
        TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart
        .draw_series(bars.iter().enumerate().filter_map(|(i, b)| {
            let label = b.label.clone()?;
            Some(Text::new(
                label,
                (SegmentValue::CenterOf(i), b.value + top * 0.02),
                style.clone(),
            ))
        }))
        .map_err(|e| e.to_string())?;
    Ok(())
}
