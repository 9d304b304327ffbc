//! `bench-chart IN.json OUT.png`: the chart of docs/benchmarks.md, one bar per benchmark
//! showing Warren's advantage over RabbitMQ (a factor, higher is better, log scale) and a tick
//! at the target. Reads a font file at run time (DejaVu Sans by default, or $BENCH_FONT); with
//! none it draws nothing and fails, and scripts/bench leaves the chart out.

use std::process::ExitCode;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use serde::Deserialize;

#[derive(Deserialize)]
struct Bar {
    label: String,
    /// Warren's advantage: Warren/RabbitMQ for rates, RabbitMQ/Warren for costs.
    advantage: f64,
    target: Option<f64>,
}

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: bench-chart BARS.json OUT.png");
        return ExitCode::from(2);
    }
    match draw(&args[1], &args[2]) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-chart: {e}");
            ExitCode::FAILURE
        }
    }
}

fn draw(input: &str, output: &str) -> Result<(), Box<dyn std::error::Error>> {
    let bars: Vec<Bar> = serde_json::from_str(&std::fs::read_to_string(input)?)?;
    let bars: Vec<Bar> = bars
        .into_iter()
        .filter(|b| b.advantage.is_finite() && b.advantage > 0.0)
        .collect();
    if bars.is_empty() {
        return Err("nothing to draw".into());
    }
    let font_path = std::env::var("BENCH_FONT")
        .ok()
        .into_iter()
        .chain(FONT_PATHS.iter().map(|s| s.to_string()))
        .find(|p| std::path::Path::new(p).exists())
        .ok_or("no font file found (install fonts-dejavu-core or set BENCH_FONT)")?;
    let font: &'static [u8] = Box::leak(std::fs::read(&font_path)?.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, font).map_err(|_| "unusable font file")?;

    let n = bars.len() as i32;
    let height = 110 + 42 * bars.len() as u32;
    let root = BitMapBackend::new(output, (1000, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let lo = bars
        .iter()
        .map(|b| b.advantage)
        .chain(bars.iter().filter_map(|b| b.target))
        .fold(0.5f64, f64::min)
        / 1.5;
    let hi = bars
        .iter()
        .map(|b| b.advantage)
        .chain(bars.iter().filter_map(|b| b.target))
        .fold(2.0f64, f64::max)
        * 2.5;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Warren's advantage over RabbitMQ (×, higher is better; | = target)",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(380)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n).into_segmented())?;
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(bars.len())
        .y_label_formatter(&|v| match v {
            // Bars are drawn top-down: slot i holds bar n-1-i.
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => labels
                .get((n - 1 - *i) as usize)
                .cloned()
                .unwrap_or_default(),
            SegmentValue::Last => String::new(),
        })
        .x_label_formatter(&|v| format!("{v:.2}×"))
        .label_style(("sans-serif", 15))
        .draw()?;
    for (i, b) in bars.iter().enumerate() {
        let slot = n - 1 - i as i32;
        let met = b.target.map(|t| b.advantage >= t);
        let color = match met {
            Some(true) => RGBColor(46, 139, 87),
            Some(false) => RGBColor(205, 92, 92),
            None => RGBColor(100, 120, 170),
        };
        let (bottom, top) = (SegmentValue::Exact(slot), SegmentValue::Exact(slot + 1));
        let mut bar = Rectangle::new(
            [(lo, bottom.clone()), (b.advantage, top.clone())],
            color.filled(),
        );
        bar.set_margin(8, 8, 0, 0);
        chart.draw_series(std::iter::once(bar))?;
        chart.plotting_area().draw(&Text::new(
            format!("{:.2}×", b.advantage),
            (b.advantage * 1.05, SegmentValue::CenterOf(slot)),
            ("sans-serif", 14),
        ))?;
        if let Some(t) = b.target {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(t / 1.01, bottom.clone()), (t * 1.01, top.clone())],
                BLACK.filled(),
            )))?;
        }
    }
    // The parity line: left of it RabbitMQ is ahead.
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Last)],
        BLACK.stroke_width(1),
    )))?;
    root.present()?;
    Ok(())
}
