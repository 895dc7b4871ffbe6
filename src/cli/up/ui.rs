//! What `up` shows on the terminal: the startup progress and the final
//! endpoint table.

use super::plan::{shown, NodePlan};
use super::{query, Running, UpOptions};
use crate::cluster::topology::NodesConf;
use indicatif::{ProgressBar, ProgressStyle};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Progress on a TTY (indicatif spinner), plain lines everywhere.
pub(super) struct Progress {
    bar: ProgressBar,
    step: Instant,
}

impl Progress {
    pub(super) fn new() -> Progress {
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(100));
        Progress {
            bar,
            step: Instant::now(),
        }
    }

    pub(super) fn phase(&mut self, msg: impl Into<String>) {
        self.step = Instant::now();
        self.bar.reset_elapsed();
        self.bar.set_message(msg.into());
    }

    pub(super) fn update(&self, msg: impl Into<String>) {
        self.bar.set_message(msg.into());
    }

    pub(super) fn done(&self, msg: &str) {
        let secs = self.step.elapsed().as_secs_f64();
        self.bar.suspend(|| println!("✓ {msg} ({secs:.1} s)"));
    }

    pub(super) fn note(&self, msg: &str) {
        self.bar.suspend(|| println!("{msg}"));
    }

    pub(super) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

pub(super) fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Left-aligned columns, two spaces apart, indented by two.
pub(super) fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::from(" ");
        for (cell, w) in r.iter().zip(&widths) {
            let _ = write!(line, " {cell:<w$} ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// The endpoint table and the node list, from the cluster's own view.
pub(super) async fn print_summary(
    opts: &UpOptions,
    nodes: &[NodePlan],
    running: &mut Running,
    t0: Instant,
) {
    let first = nodes.first().map(NodePlan::addr).unwrap_or_default();
    let listing = query(&first, &["CLUSTER", "NODES"])
        .await
        .unwrap_or_default();
    let conf = NodesConf::parse(&format!("{listing}vars currentEpoch 0 lastVoteEpoch 0\n")).ok();
    let mut out = String::new();
    if let Some(err) = &running.proxy_error {
        let _ = writeln!(
            out,
            "✗ {err}\n  The cluster keeps running without the proxy; connect with redis-cli -c.\n"
        );
    }
    let proxy_ok = running.proxy_error.is_none();
    let first_port = nodes.first().map_or(0, |n| n.port);
    let mut rows = vec![row(&["endpoint", "address", "connect with"])];
    if proxy_ok {
        let addr = format!("127.0.0.1:{}", opts.proxy_port);
        rows.push(row(&[
            "proxy",
            &addr,
            &format!("redis-cli -p {}", opts.proxy_port),
        ]));
        let url = format!("http://127.0.0.1:{}/metrics", opts.metrics_port);
        rows.push(row(&["proxy metrics", &url, &format!("curl -s {url}")]));
    }
    rows.push(row(&[
        "cluster (any node)",
        &first,
        &format!("redis-cli -c -p {first_port}"),
    ]));
    let _ = write!(out, "\n{}", table(&rows));
    let mut rows = vec![row(&["node", "role", "slots", "pid", "log"])];
    for (n, p) in nodes.iter().zip(running.nodes.iter()) {
        let me = conf
            .as_ref()
            .and_then(|c| c.nodes.iter().find(|x| x.port == n.port));
        let (role, slots) = match me {
            Some(x) if x.flags.master => (
                "master",
                crate::cluster::topology::render_ranges(&x.slots.ranges()),
            ),
            Some(x) => {
                let of = x
                    .master_id
                    .as_ref()
                    .and_then(|m| conf.as_ref()?.nodes.iter().find(|y| &y.id == m))
                    .map_or_else(|| "?".to_string(), |m| m.port.to_string());
                ("replica", format!("of {of}"))
            }
            None => ("?", String::new()),
        };
        rows.push(vec![
            n.port.to_string(),
            role.into(),
            slots,
            p.pid.to_string(),
            shown(&n.log),
        ]);
    }
    if let (Some(p), true) = (&running.proxy, proxy_ok) {
        rows.push(vec![
            "proxy".into(),
            String::new(),
            String::new(),
            p.pid.to_string(),
            shown(&p.log),
        ]);
    }
    let _ = write!(out, "\n{}", table(&rows));
    let _ = writeln!(
        out,
        "\nslotway is up in {:.1} s. Ctrl-C stops everything.",
        t0.elapsed().as_secs_f64()
    );
    print!("{out}");
}
