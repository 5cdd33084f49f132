//! The bench chart: throughput by page size, batch_set and batch_get side by side, ours beside
//! the references, as an SVG drawn with plotters from the report (so a saved report can be drawn
//! again: `bench --replot`).
//!
//! plotters' SVG backend writes text as `<text>` elements that the viewer renders, so no font or
//! image crate is compiled in (plotters' default features, off here, would bring in font-kit and
//! with it fontconfig / freetype).

use crate::bench::size_label;
use crate::deploy::{DeployReport, SteadyRow};
use crate::report::{Fig, OpReport, Report, SizeReport};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use std::path::Path;

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 520;
const FONT: &str = "sans-serif";

/// One line of a panel: a name, a colour, dashed or not, and a figure per page size.
struct Series {
    label: &'static str,
    color: RGBColor,
    dashed: bool,
    /// Indexed like `Report::sizes`.
    values: Vec<Fig>,
}

fn series(rep: &Report, op: Op) -> Vec<Series> {
    let col = |f: &dyn Fn(&SizeReport) -> Fig| -> Vec<Fig> { rep.sizes.iter().map(f).collect() };
    fn pick(s: &SizeReport, op: Op) -> (&OpReport, Option<&OpReport>) {
        let ck = s.ours_checksum.as_ref();
        match op {
            Op::Set => (&s.ours.set, ck.map(|c| &c.set)),
            Op::Get => (&s.ours.get, ck.map(|c| &c.get)),
        }
    }
    let all = [
        Series { label: "hicache-valkey (C ABI)", color: RGBColor(31, 119, 180), dashed: false, values: col(&|s| pick(s, op).0.best_gbps) },
        Series { label: "hicache-valkey + xxh3", color: RGBColor(23, 190, 207), dashed: true, values: col(&|s| pick(s, op).1.and_then(|c| c.best_gbps)) },
        Series {
            label: "valkey-benchmark (best)",
            color: RGBColor(214, 39, 40),
            dashed: false,
            values: col(&|s| {
                let vb = s.valkey_benchmark.as_ref()?;
                match op {
                    Op::Set => vb.set.as_ref()?.gbps,
                    Op::Get => vb.get.as_ref()?.gbps,
                }
            }),
        },
        Series {
            label: "valkey-py pipeline",
            color: RGBColor(44, 160, 44),
            dashed: false,
            values: col(&|s| s.valkey_py.as_ref().map(|p| if op == Op::Set { p.set_gbps } else { p.get_gbps })),
        },
    ];
    all.into_iter().filter(|s| s.values.iter().any(Option::is_some)).collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Set,
    Get,
}

type DrawResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Writes the chart of `rep` to `path` as SVG.
pub fn write_svg(rep: &Report, path: &Path) -> DrawResult<()> {
    let steady = rep.deployment.as_ref().filter(|d| !d.steady.is_empty());
    let fresh = !rep.sizes.is_empty();
    let rows = steady.is_some() as u32 + fresh as u32;
    let extra = deployment_lines(rep);
    let foot = 56 + 20 * extra.len() as u32;
    let root = SVGBackend::new(path, (WIDTH, (HEIGHT - 56) * rows.max(1) + foot)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled("hicache-valkey throughput by page size", (FONT, 24))?;
    let h = root.dim_in_pixel().1;
    let (panels, footer) = root.split_vertically(h.saturating_sub(foot));
    let row_areas = panels.split_evenly((rows.max(1) as usize, 1));
    let mut row = row_areas.iter();
    if let Some(d) = steady {
        let labels: Vec<String> = d.steady.iter().map(|r| r.label.clone()).collect();
        let sets = steady_series(d, Op::Set);
        let gets = steady_series(d, Op::Get);
        let ymax = sets.iter().chain(&gets).flat_map(|s| s.values.iter().flatten()).fold(0.0f64, |a, b| a.max(*b));
        let ymax = if ymax > 0.0 { ymax * 1.12 } else { 1.0 };
        let halves = row.next().expect("a row").split_evenly((1, 2));
        panel(&halves[0], &labels, sets, "steady state (server at maxmemory, evicting): batch_set", ymax)?;
        panel(&halves[1], &labels, gets, "steady state: batch_get of what was just written", ymax)?;
    }
    if fresh {
        let labels: Vec<String> = rep.sizes.iter().map(|s| s.label.clone()).collect();
        let ymax = [Op::Set, Op::Get]
            .into_iter()
            .flat_map(|op| series(rep, op))
            .flat_map(|s| s.values.into_iter().flatten())
            .fold(0.0f64, f64::max);
        // Both panels on one scale, so set and get can be compared by eye.
        let ymax = if ymax > 0.0 { ymax * 1.12 } else { 1.0 };
        let halves = row.next().expect("a row").split_evenly((1, 2));
        panel(&halves[0], &labels, series(rep, Op::Set), "fresh server: batch_set", ymax)?;
        panel(&halves[1], &labels, series(rep, Op::Get), "fresh server: batch_get", ymax)?;
    }
    let facts = format!(
        "valkey {} on {} cores, loopback; {} pages per batch, {} segments per page; best of {} repetitions; hicache-valkey {}{}",
        rep.server_version,
        rep.cores,
        rep.pages_per_batch,
        rep.segments_per_page,
        rep.repetitions,
        rep.library_version,
        if rep.quick { " (quick run)" } else { "" }
    );
    let style = TextStyle::from((FONT, 14)).color(&RGBColor(90, 90, 90));
    footer.draw(&Text::new(facts, (60, 12), style.clone()))?;
    footer.draw(&Text::new("GB/s = 1e9 bytes per second of page payload, higher is better; valkey-py = the plain Python approach (pipelined SET / GET into a numpy buffer)", (60, 32), style.clone()))?;
    let strong = TextStyle::from((FONT, 14)).color(&RGBColor(40, 40, 40));
    for (i, line) in extra.into_iter().enumerate() {
        footer.draw(&Text::new(line, (60, 54 + 20 * i as i32), strong.clone()))?;
    }
    root.present()?;
    Ok(())
}

/// The prefetch-under-load and dedup figures, as text lines under the panels.
fn deployment_lines(rep: &Report) -> Vec<String> {
    let Some(d) = &rep.deployment else { return Vec::new() };
    let f = |v: Fig, p: usize| v.map_or("-".to_string(), |x| format!("{x:.p$}"));
    let mut out = Vec::new();
    if let Some(l) = &d.latency_under_load {
        out.push(format!(
            "prefetch under a {} MiB backup (same handle), p50/p99 µs idle -> loaded: exists({}) {}/{} -> {}/{} (p99 x{}); get({} x 64K) {}/{} -> {}/{} (p99 x{})",
            l.backup_bytes >> 20,
            l.exists_keys,
            f(l.exists_idle_us.0, 0),
            f(l.exists_idle_us.1, 0),
            f(l.exists_loaded_us.0, 0),
            f(l.exists_loaded_us.1, 0),
            f(l.exists_p99_ratio, 2),
            l.get_pages,
            f(l.get_idle_us.0, 0),
            f(l.get_idle_us.1, 0),
            f(l.get_loaded_us.0, 0),
            f(l.get_loaded_us.1, 0),
            f(l.get_p99_ratio, 2)
        ));
    }
    if !d.latency_by_backup_page.is_empty() {
        let rows: Vec<String> = d
            .latency_by_backup_page
            .iter()
            .map(|l| format!("{} pages x{}/x{}", size_label(l.backup_page_bytes), f(l.exists_p99_ratio, 1), f(l.get_p99_ratio, 1)))
            .collect();
        out.push(format!("prefetch p99 ratio (exists/get) by the backup's page size: {}", rows.join(", ")));
    }
    if let Some(dd) = &d.dedup {
        let run = |start: &str, skip: bool| {
            dd.runs.iter().find(|r| r.start == start && r.skip_existing == skip).map_or("-".to_string(), |r| format!("{} MiB {} s", r.server_input_bytes >> 20, f(r.wall_s, 2)))
        };
        out.push(format!(
            "dedup, {} engines x {} MiB prefix (server received, wall): together {} -> {} with skip_existing; one after another {} -> {}",
            dd.engines,
            dd.prefix_bytes >> 20,
            run("simultaneous", false),
            run("simultaneous", true),
            run("staggered", false),
            run("staggered", true)
        ));
        out.push(format!("skip_existing on all-new pages: {} vs {} GB/s without (cost {}%, paired median)", f(dd.new_pages_skip, 2), f(dd.new_pages_plain, 2), f(dd.new_pages_cost.map(|c| c * 100.0), 1)));
    }
    out
}

/// The steady-state lines: ours, the references and the peers.
fn steady_series(d: &DeployReport, op: Op) -> Vec<Series> {
    let col = |f: &dyn Fn(&SteadyRow) -> Fig| -> Vec<Fig> { d.steady.iter().map(f).collect() };
    let set = op == Op::Set;
    let moon = |r: &SteadyRow, layout: &str| -> Fig {
        r.mooncake.as_ref()?.get(layout)?.get(if set { "put_GBps" } else { "get_GBps" })?.as_f64()
    };
    let all = [
        Series { label: "hicache-valkey (C ABI)", color: RGBColor(31, 119, 180), dashed: false, values: col(&|r| if set { r.ours_set } else { r.ours_get }) },
        Series { label: "Python ValkeyStore, numpy rows", color: RGBColor(148, 103, 189), dashed: true, values: col(&|r| r.python.as_ref().and_then(|p| if set { p.rows_set } else { p.rows_get })) },
        Series { label: "Python ValkeyStore, flat pointers", color: RGBColor(140, 86, 75), dashed: true, values: col(&|r| r.python.as_ref().and_then(|p| if set { p.flat_set } else { p.flat_get })) },
        Series { label: "SGLang backend v1", color: RGBColor(227, 119, 194), dashed: true, values: col(&|r| r.python.as_ref().and_then(|p| if set { p.sglang_set } else { p.sglang_get })) },
        Series { label: "valkey-benchmark (fresh SET / full GET)", color: RGBColor(214, 39, 40), dashed: false, values: col(&|r| if set { r.vb_set } else { r.vb_get }) },
        Series { label: "valkey-py pipeline", color: RGBColor(44, 160, 44), dashed: false, values: col(&|r| if set { r.py_set } else { r.py_get }) },
        Series { label: "Mooncake, store in a third process", color: RGBColor(255, 127, 14), dashed: false, values: col(&|r| moon(r, "third_process")) },
        Series { label: "Mooncake, two engines", color: RGBColor(188, 189, 34), dashed: true, values: col(&|r| moon(r, "two_engines")) },
    ];
    all.into_iter().filter(|s| s.values.iter().any(Option::is_some)).collect()
}

fn panel<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, labels: &[String], lines: Vec<Series>, title: &str, ymax: f64) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let n = labels.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        // One segment per page size (a discrete range includes its end).
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..ymax)
        .map_err(|e| e.to_string())?;
    let label_of = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => labels.get(*i).cloned().unwrap_or_default(),
        SegmentValue::Last => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&label_of)
        .x_desc("page size")
        .y_desc("GB/s")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .max_light_lines(1)
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(|e| e.to_string())?;
    for s in lines {
        let pts: Vec<(SegmentValue<usize>, f64)> =
            s.values.iter().enumerate().filter_map(|(i, v)| v.map(|v| (SegmentValue::CenterOf(i), v))).collect();
        let style = ShapeStyle::from(&s.color).stroke_width(2);
        let drawn = if s.dashed {
            chart.draw_series(DashedLineSeries::new(pts.clone(), 8, 5, style))
        } else {
            chart.draw_series(LineSeries::new(pts.clone(), style))
        }
        .map_err(|e| e.to_string())?;
        let color = s.color;
        drawn.label(s.label).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|p| Circle::new(p.clone(), 3, s.color.filled()))).map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font((FONT, 14))
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}
