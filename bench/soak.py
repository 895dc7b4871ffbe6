#!/usr/bin/env python3
"""Soak: a slotway cluster (3 masters + 3 replicas, `slotway up`) and its
proxy under mixed load for MINUTES (default 10, bounded), with a manual
failover and a reshard of 100 slots every PERIOD seconds (default 120,
alternating). Load is back-to-back `redis-benchmark` runs through the proxy
(SET/GET/INCR/LPUSH/LPOP/HSET, -c 20, -e so error replies are counted),
each about 5 s. Every run is one sample: requests/s, p99, error replies,
proxy RSS and open file descriptors, total node RSS.

Prints a markdown section (per-minute table and totals) on stdout, writes
the samples as JSON to --json PATH and a plot of p99, errors and RSS over
time to --svg PATH (default bench/soak.svg). Every process it starts is
stopped (process group of `slotway up`) on exit.
Usage: bench/soak.py [--json PATH] [--svg PATH]   (MINUTES=10 PERIOD=120)
"""
import argparse, json, os, signal, socket, subprocess, sys, tempfile, time

MINUTES = min(float(os.environ.get("MINUTES", "10")), 240)
PERIOD = float(os.environ.get("PERIOD", "120"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLOTWAY = os.environ.get("SLOTWAY", os.path.join(ROOT, "target", "release", "slotway"))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_base(n):
    """A base port with n consecutive client ports and their bus ports free."""
    for base in range(21000, 30000, 50):
        try:
            for p in list(range(base, base + n)) + list(range(base + 10000, base + 10000 + n)):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
    raise SystemExit("no free port range")


def cli(port, *args, timeout=30):
    r = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=timeout)
    return r.stdout.strip()


def wait(what, cond, deadline=60):
    end = time.time() + deadline
    while time.time() < end:
        try:
            if cond():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def pid_on_port(port):
    info = cli(port, "info", "server")
    for line in info.splitlines():
        if line.startswith("process_id:"):
            return int(line.split(":")[1])
    return None


def rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def masters_and_replicas(port):
    ms, rs = [], []
    for line in cli(port, "cluster", "nodes").splitlines():
        f = line.split()
        if len(f) < 8 or "fail" in f[2]:
            continue
        p = int(f[1].split("@")[0].rsplit(":", 1)[1])
        (ms if "master" in f[2] else rs).append((f[0], p, f[3]))
    return ms, rs


def bench(proxy):
    r = subprocess.run(["redis-benchmark", "-p", str(proxy), "-c", "20", "-n", "30000", "-r", "100000", "-e",
                        "-t", "set,get,incr,lpush,lpop,hset", "--csv"],
                       capture_output=True, text=True, timeout=120)
    rps, p99, n = 0.0, 0.0, 0
    for line in r.stdout.splitlines():
        parts = [x.strip('"') for x in line.split(",")]
        if len(parts) >= 8 and parts[0] != "test":
            try:
                rps += float(parts[1])
                p99 = max(p99, float(parts[6]))
                n += 1
            except ValueError:
                pass
    errors = sum(1 for l in (r.stdout + r.stderr).splitlines() if "ERR" in l or "MOVED" in l or "CLUSTERDOWN" in l or "Error" in l)
    return {"rps": rps / max(n, 1), "p99_ms": p99, "errors": errors}


def svg(samples, path):
    if not samples:
        return
    w, h, pad = 900, 420, 50
    t_max = max(s["t"] for s in samples) or 1
    series = [("p99 ms", "p99_ms", "#d62728"), ("errors", "errors", "#ff7f0e"),
              ("proxy RSS MB", "proxy_rss_mb", "#1f77b4"), ("nodes RSS MB", "nodes_rss_mb", "#2ca02c")]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{pad}" y="20">slotway soak: {len(samples)} samples over {t_max / 60:.1f} min (each series scaled to its max)</text>']
    for k, (name, key, color) in enumerate(series):
        vmax = max(s[key] for s in samples) or 1
        pts = " ".join(f"{pad + s['t'] / t_max * (w - 2 * pad):.1f},{h - pad - s[key] / vmax * (h - 2 * pad - 20):.1f}" for s in samples)
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
        out.append(f'<text x="{pad + k * 200}" y="{h - 15}" fill="{color}">{name} (max {vmax:.1f})</text>')
    for s in samples:
        if s.get("event"):
            x = pad + s["t"] / t_max * (w - 2 * pad)
            out.append(f'<line x1="{x:.1f}" y1="30" x2="{x:.1f}" y2="{h - pad}" stroke="#999" stroke-dasharray="4"/>')
            out.append(f'<text x="{x + 2:.1f}" y="40" fill="#666">{s["event"]}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--svg", default=os.path.join(ROOT, "bench", "soak.svg"))
    args = ap.parse_args()
    base = free_base(6)
    proxy, metrics = base + 100, base + 101
    d = tempfile.mkdtemp(prefix="slotway-soak-")
    up = subprocess.Popen([SLOTWAY, "up", "--dir", d, "--base-port", str(base), "--proxy-port", str(proxy),
                           "--metrics-port", str(metrics), "--node-timeout", "5000"],
                          stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "up.log"), "w"), start_new_session=True)
    samples = []
    try:
        wait("proxy covering all slots", lambda: "slots_covered:16384" in cli(proxy, "info", "proxy"), 120)
        node_pids = [pid_on_port(p) for p in range(base, base + 6)]
        proxy_pid = None
        for line in subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(up.pid)], capture_output=True, text=True).stdout.splitlines():
            if " proxy" in line:
                proxy_pid = int(line.split()[0])
        proxy_pid = proxy_pid or up.pid
        t0 = time.time()
        next_event, n_event = t0 + PERIOD, 0
        while time.time() - t0 < MINUTES * 60:
            event = None
            if time.time() >= next_event:
                ms, rs = masters_and_replicas(base)
                if n_event % 2 == 0 and rs:
                    _, rport, _ = rs[n_event // 2 % len(rs)]
                    ok = cli(rport, "cluster", "failover") == "OK"
                    event = f"failover {rport}" + ("" if ok else " REFUSED")
                elif len(ms) >= 2:
                    src, dst = ms[n_event % len(ms)], ms[(n_event + 1) % len(ms)]
                    r = subprocess.run(["redis-cli", "--cluster", "reshard", f"127.0.0.1:{base}", "--cluster-from", src[0],
                                        "--cluster-to", dst[0], "--cluster-slots", "100", "--cluster-yes"],
                                       capture_output=True, timeout=300)
                    event = f"reshard {src[1]}->{dst[1]}" + ("" if r.returncode == 0 else f" FAILED (exit {r.returncode})")
                log(f"{time.time() - t0:6.0f}s {event}")
                n_event += 1
                next_event += PERIOD
            b = bench(proxy)
            node_pids = [pid_on_port(p) or old for p, old in zip(range(base, base + 6), node_pids)]
            s = {"t": time.time() - t0, **b, "proxy_rss_mb": rss(proxy_pid) / 1048576,
                 "proxy_fds": fds(proxy_pid), "nodes_rss_mb": sum(rss(p) for p in node_pids if p) / 1048576,
                 "event": event}
            samples.append(s)
            log(f"{s['t']:6.0f}s rps {s['rps']:,.0f} p99 {s['p99_ms']:.2f} ms errors {s['errors']} "
                f"proxy {s['proxy_rss_mb']:.1f} MB {s['proxy_fds']} fds, nodes {s['nodes_rss_mb']:.1f} MB")
    finally:
        try:
            os.killpg(up.pid, signal.SIGINT)
            up.wait(timeout=30)
        except Exception:
            os.killpg(up.pid, signal.SIGKILL)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(samples, f, indent=1)
    svg(samples, args.svg)
    out = ["## Soak: slotway cluster + proxy under mixed load", "",
           f"`bench/soak.py`: {MINUTES:g} min, `slotway up` (3+3, node timeout 5 s), back-to-back "
           "`redis-benchmark -c 20 -n 30000 -r 100000 -e -t set,get,incr,lpush,lpop,hset --csv` through the proxy; "
           f"a `CLUSTER FAILOVER` or a 100-slot `redis-cli --cluster reshard` every {PERIOD:g} s. "
           f"Plot: `{os.path.relpath(args.svg, os.path.join(ROOT, 'bench'))}`.", "",
           "| minute | samples | mean rps | worst p99 ms | error replies | proxy RSS MB | proxy fds | nodes RSS MB | events |",
           "|---|---|---|---|---|---|---|---|---|"]
    by_min = {}
    for s in samples:
        by_min.setdefault(int(s["t"] // 60), []).append(s)
    for m, ss in sorted(by_min.items()):
        out.append(f"| {m} | {len(ss)} | {sum(x['rps'] for x in ss) / len(ss):,.0f} | {max(x['p99_ms'] for x in ss):.2f} | "
                   f"{sum(x['errors'] for x in ss)} | {ss[-1]['proxy_rss_mb']:.1f} | {ss[-1]['proxy_fds']} | "
                   f"{ss[-1]['nodes_rss_mb']:.1f} | {', '.join(x['event'] for x in ss if x['event'])} |")
    if samples:
        out += ["", f"Totals: {len(samples)} runs, {sum(s['errors'] for s in samples)} error replies, proxy RSS "
                f"{samples[0]['proxy_rss_mb']:.1f} → {samples[-1]['proxy_rss_mb']:.1f} MB, fds "
                f"{samples[0]['proxy_fds']} → {samples[-1]['proxy_fds']}."]
    print("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
