//! The benchmark plot: reads the JSON figures the bench scripts write
//! (bench/node.py, bench/proxy.py, bench/failover.py) and draws one PNG with
//! throughput and latency per configuration (medians, min–max whiskers),
//! failover recovery times and memory per key.
//!
//! `cargo run --release --example plot -- OUT.png FIGURES.json...`
//! Text needs a TrueType font: PLOT_FONT=/path/to/font.ttf, else a few
//! usual system paths are tried.

use anyhow::{bail, Context};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;

const WIDTH: u32 = 1600;
const ROW: u32 = 20;

/// One horizontal bar: a median with its spread, and a second value drawn
/// behind it (p99 behind p50) when there is one.
struct Bar {
    label: String,
    config: String,
    value: f64,
    spread: Option<(f64, f64)>,
    behind: Option<f64>,
    note: Option<String>,
}

struct Panel {
    title: String,
    unit: String,
    bars: Vec<Bar>,
}

fn num(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

fn text(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

/// Groups the figures of one file into panels (rows of the image).
fn panels(figs: &[Value], source: &str) -> Vec<(Panel, Option<Panel>)> {
    let mut groups: BTreeMap<(usize, String), Vec<&Value>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for f in figs {
        let part = text(f, "part");
        let part = if part.is_empty() {
            source.to_string()
        } else {
            part
        };
        let workload = text(f, "workload");
        let key = if workload.is_empty() {
            part
        } else {
            format!("{part}: {workload}")
        };
        let idx = order.iter().position(|k| *k == key).unwrap_or_else(|| {
            order.push(key.clone());
            order.len() - 1
        });
        groups.entry((idx, key)).or_default().push(f);
    }
    let mut out = Vec::new();
    for ((_, key), figs) in groups {
        let label = |f: &Value| format!("{} · {}", text(f, "test"), text(f, "config"));
        if figs.iter().any(|f| num(f, "rps").is_some()) {
            let mut rps = Panel {
                title: format!("{key} — throughput"),
                unit: "requests/s (median, min–max)".into(),
                bars: Vec::new(),
            };
            let mut lat = Panel {
                title: format!("{key} — latency"),
                unit: "ms (dark: p50, light: p99)".into(),
                bars: Vec::new(),
            };
            for f in figs.iter().filter(|f| num(f, "rps").is_some()) {
                let spread = num(f, "rps_min").zip(num(f, "rps_max"));
                rps.bars.push(Bar {
                    label: label(f),
                    config: text(f, "config"),
                    value: num(f, "rps").unwrap_or(0.0),
                    spread,
                    behind: None,
                    note: None,
                });
                lat.bars.push(Bar {
                    label: label(f),
                    config: text(f, "config"),
                    value: num(f, "p50_ms").unwrap_or(0.0),
                    spread: None,
                    behind: num(f, "p99_ms"),
                    note: None,
                });
            }
            out.push((rps, Some(lat)));
        } else if figs.iter().any(|f| f.get("recovery_s").is_some()) {
            let mut p = Panel {
                title: format!("{key} — master SHUTDOWN to cluster_state:ok"),
                unit: "seconds (median, min–max)".into(),
                bars: Vec::new(),
            };
            for f in &figs {
                let deadline = num(f, "deadline_s").unwrap_or(0.0);
                let (value, note) = match num(f, "recovery_s") {
                    Some(v) => (v, None),
                    None => (
                        deadline,
                        Some(format!("no failover within {deadline:.0} s")),
                    ),
                };
                p.bars.push(Bar {
                    label: label(f),
                    config: text(f, "config"),
                    value,
                    spread: num(f, "recovery_s_min").zip(num(f, "recovery_s_max")),
                    behind: None,
                    note,
                });
            }
            out.push((p, None));
        } else if figs.iter().any(|f| num(f, "bytes_per_key").is_some()) {
            let mut p = Panel {
                title: format!("{key} — memory"),
                unit: "bytes per key (dark: used_memory, light: RSS)".into(),
                bars: Vec::new(),
            };
            for f in &figs {
                p.bars.push(Bar {
                    label: label(f),
                    config: text(f, "config"),
                    value: num(f, "bytes_per_key").unwrap_or(0.0),
                    spread: None,
                    behind: num(f, "rss_bytes_per_key"),
                    note: None,
                });
            }
            out.push((p, None));
        }
    }
    out
}

/// Configurations of one system share a colour in every panel: "slotway
/// node", "slotway nodes" and "slotway proxy" are all slotway.
fn family(config: &str) -> &str {
    config.split_whitespace().next().unwrap_or(config)
}

/// Bars of the same test next to each other, the first test on top (the
/// segmented axis counts upwards).
fn arrange(p: &mut Panel) {
    let mut tests: Vec<String> = Vec::new();
    let mut configs: Vec<String> = Vec::new();
    for b in &p.bars {
        let t = b.label.split(" · ").next().unwrap_or("").to_string();
        if !tests.contains(&t) {
            tests.push(t);
        }
        if !configs.contains(&b.config) {
            configs.push(b.config.clone());
        }
    }
    let rank = |b: &Bar| {
        let t = b.label.split(" · ").next().unwrap_or("");
        (
            tests.iter().position(|x| x == t).unwrap_or(0),
            configs.iter().position(|x| *x == b.config).unwrap_or(0),
        )
    };
    p.bars.sort_by_key(|b| std::cmp::Reverse(rank(b)));
}

fn panel_height(p: &Panel) -> u32 {
    90 + ROW * p.bars.len() as u32
}

fn draw<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    p: &Panel,
    colors: &BTreeMap<String, RGBColor>,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let n = p.bars.len();
    let max = p
        .bars
        .iter()
        .flat_map(|b| [Some(b.value), b.behind, b.spread.map(|s| s.1)])
        .flatten()
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let label_px = p
        .bars
        .iter()
        .map(|b| b.label.chars().count())
        .max()
        .unwrap_or(10) as u32
        * 7
        + 10;
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 17))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(label_px.min(WIDTH / 4))
        .build_cartesian_2d(0f64..max * 1.12, (0..n).into_segmented())?;
    let labels: Vec<String> = p.bars.iter().map(|b| b.label.clone()).collect();
    let x_fmt = |v: &f64| {
        if max >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc(p.unit.as_str())
        .label_style(("sans-serif", 12))
        .draw()?;
    for (i, b) in p.bars.iter().enumerate() {
        let color = colors.get(family(&b.config)).copied().unwrap_or(BLACK);
        if let Some(back) = b.behind {
            chart.draw_series(std::iter::once(Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (back, SegmentValue::Exact(i + 1)),
                ],
                color.mix(0.3).filled(),
            )))?;
        }
        let style = if b.note.is_some() {
            color.mix(0.15).filled()
        } else {
            color.filled()
        };
        chart.draw_series(std::iter::once(
            Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (b.value, SegmentValue::Exact(i + 1)),
                ],
                style,
            )
            .into_dyn(),
        ))?;
        if let Some((lo, hi)) = b.spread {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![
                    (lo, SegmentValue::CenterOf(i)),
                    (hi, SegmentValue::CenterOf(i)),
                ],
                BLACK.stroke_width(2),
            )))?;
        }
        let fmt = |v: f64| {
            if v >= 1000.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        };
        let tag = match (&b.note, b.behind) {
            (Some(note), _) => note.clone(),
            (None, Some(back)) => format!("{} / {}", fmt(b.value), fmt(back)),
            (None, None) => fmt(b.value),
        };
        chart.draw_series(std::iter::once(Text::new(
            tag,
            (
                b.value
                    .max(b.behind.unwrap_or(0.0))
                    .max(b.spread.map_or(0.0, |s| s.1))
                    + max * 0.01,
                SegmentValue::CenterOf(i),
            ),
            ("sans-serif", 11),
        )))?;
    }
    Ok(())
}

fn load_font() -> anyhow::Result<()> {
    let mut candidates: Vec<String> = std::env::var("PLOT_FONT").into_iter().collect();
    candidates.extend(
        [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/Library/Fonts/Arial.ttf",
        ]
        .map(String::from),
    );
    for c in &candidates {
        if let Ok(bytes) = std::fs::read(c) {
            // plotters keeps registered fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Ok(());
            }
        }
    }
    bail!("no TrueType font found (tried {candidates:?}); set PLOT_FONT=/path/to/font.ttf")
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((out, inputs)) = args.split_first() else {
        bail!("usage: plot OUT.png FIGURES.json...");
    };
    load_font()?;
    let mut rows: Vec<(Panel, Option<Panel>)> = Vec::new();
    for path in inputs {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("plot: skipping {path}: {e}");
                continue;
            }
        };
        let figs: Vec<Value> =
            serde_json::from_str(&text).with_context(|| format!("{path} is not a JSON list"))?;
        let stem = std::path::Path::new(path)
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        rows.extend(panels(&figs, &stem));
    }
    if rows.is_empty() {
        bail!("no figures to plot in {inputs:?}");
    }
    for (a, b) in rows.iter_mut() {
        arrange(a);
        if let Some(b) = b {
            arrange(b);
        }
    }
    // One colour per system, the same in every panel.
    let mut colors: BTreeMap<String, RGBColor> = BTreeMap::new();
    let palette = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(23, 190, 207),
    ];
    // slotway first, so it has the same colour in every run's plot.
    colors.insert("slotway".into(), palette[0]);
    for (a, b) in &rows {
        for bar in a.bars.iter().chain(b.iter().flat_map(|p| p.bars.iter())) {
            let next = palette[colors.len() % palette.len()];
            colors
                .entry(family(&bar.config).to_string())
                .or_insert(next);
        }
    }
    let height: u32 = 50 + rows.iter().map(|(a, _)| panel_height(a)).sum::<u32>();
    let root = BitMapBackend::new(out, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (head, mut rest) = root.split_vertically(50);
    head.draw_text(
        "slotway benchmarks (bench/RESULTS.md has every figure and command)",
        &("sans-serif", 22).into_text_style(&head),
        (20, 14),
    )?;
    for (a, b) in &rows {
        let (row, below) = rest.split_vertically(panel_height(a));
        rest = below;
        match b {
            Some(b) => {
                let (l, r) = row.split_horizontally(WIDTH / 2);
                draw(&l, a, &colors)?;
                draw(&r, b, &colors)?;
            }
            None => {
                let (l, _) = row.split_horizontally(WIDTH * 2 / 3);
                draw(&l, a, &colors)?;
            }
        }
    }
    root.present()?;
    eprintln!("plot: wrote {out}");
    Ok(())
}
