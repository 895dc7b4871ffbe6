#!/usr/bin/env python3
"""Node vs redis-server 7.0, side by side on loopback: the same
redis-benchmark workloads against a slotway node and a redis-server,
interleaved A/B per round (the order alternates), plus memory for 1M keys.

Measures per test: requests/s and p50/p99 latency (redis-benchmark --csv),
server CPU per request (utime+stime deltas from /proc/PID/stat around the
run), and memory for 1M small string keys (used_memory and VmRSS).

Prints a markdown section on stdout and writes the figures as JSON to
--json PATH (a list of {config, test, rps, p50_ms, p99_ms, cpu_us_per_req,
rps_min, rps_max, ...}); progress goes to stderr. Every process it starts
is stopped by PID on exit; every redis-benchmark run has a time limit.
Usage: bench/node.py [--json PATH]   (ROUNDS=3 N=200000 KEYS=1000000)
Modes (environment): ONLY="SET/GET -P 16" runs only matching workloads;
REPLICA=1 gives each server one replica of its own kind (the cost of
feeding the replication stream); AOF=always|everysec|no runs both with
appendonly yes and that appendfsync; KEYS=0 skips the memory part.
"""
import argparse, signal, csv, io, json, os, socket, statistics, subprocess, sys, time

ROUNDS = int(os.environ.get("ROUNDS", "3"))
N = int(os.environ.get("N", "200000"))
KEYS = int(os.environ.get("KEYS", "1000000"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLOTWAY = os.environ.get("SLOTWAY", os.path.join(ROOT, "target", "release", "slotway"))
RUN_TIMEOUT = int(os.environ.get("RUN_TIMEOUT", "300"))
ONLY = os.environ.get("ONLY", "")
REPLICA = os.environ.get("REPLICA", "") == "1"
AOF = os.environ.get("AOF", "")
CLK = os.sysconf("SC_CLK_TCK")
procs = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ping(port, deadline=20):
    end = time.time() + deadline
    while time.time() < end:
        r = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True)
        if r.stdout.strip() == "PONG":
            return
        time.sleep(0.05)
    raise SystemExit(f"server on {port} did not start")


SCRATCH = []  # directories this run created, removed at the end


def start(kind, replicaof=None):
    port = free_port()
    aof = ["--appendonly", "yes", "--appendfsync", AOF] if AOF else ["--appendonly", "no"]
    if kind == "slotway":
        cmd = [SLOTWAY, "node", "--port", str(port), "--bind", "127.0.0.1", "--save", ""] + aof
    else:
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--daemonize", "no"] + aof
    if AOF or replicaof:
        d = f"/tmp/bench-node-{os.getpid()}-{port}"
        os.makedirs(d, exist_ok=True)
        SCRATCH.append(d)
        cmd += ["--dir", d]
    if replicaof:
        cmd += ["--replicaof", "127.0.0.1", str(replicaof)]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/tmp")
    procs.append(p)
    wait_ping(port)
    if REPLICA and not replicaof:
        start(kind, replicaof=port)
    return {"kind": kind, "port": port, "proc": p}


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def bench(server, args):
    """One redis-benchmark run; returns {test: (rps, p50, p99, cpu_us_per_req)}."""
    cmd = ["redis-benchmark", "-p", str(server["port"]), "--csv"] + args
    pid = server["proc"].pid
    c0 = cpu_seconds(pid)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(f"redis-benchmark timed out after {RUN_TIMEOUT} s: {' '.join(cmd)}", file=sys.stderr)
        return {}
    c1 = cpu_seconds(pid)
    out = {}
    total_reqs = 0
    for row in csv.DictReader(io.StringIO(r.stdout)):
        name, rps = row["test"], float(row["rps"])
        out[name] = [rps, float(row.get("p50_latency_ms", "nan")), float(row.get("p99_latency_ms", "nan")), None]
    n = int(args[args.index("-n") + 1]) if "-n" in args else 100000
    total_reqs = n * max(1, len(out))
    cpu_us = (c1 - c0) * 1e6 / total_reqs if total_reqs else float("nan")
    for v in out.values():
        v[3] = cpu_us  # CPU is measured per run, shared across its tests
    if r.returncode != 0 or "ERR" in r.stdout:
        print(r.stdout[-2000:], r.stderr[-2000:], file=sys.stderr)
    return out


def flush(server):
    subprocess.run(["redis-cli", "-p", str(server["port"]), "flushall"], capture_output=True)


def used_memory(server):
    r = subprocess.run(["redis-cli", "-p", str(server["port"]), "info", "memory"], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1])
    return 0


def load_keys(server, n):
    payload = io.BytesIO()
    for i in range(n):
        k = b"key:%012d" % i
        payload.write(b"*3\r\n$3\r\nSET\r\n$16\r\n" + k + b"\r\n$3\r\nxxx\r\n")
    subprocess.run(["redis-cli", "-p", str(server["port"]), "--pipe"], input=payload.getvalue(), capture_output=True, timeout=600)


WORKLOADS = [
    ("default suite, -c 50", ["-q", "-n", str(N // 4), "-c", "50"]),
    ("SET/GET -P 16 -c 50", ["-t", "set,get", "-P", "16", "-c", "50", "-r", "100000", "-n", str(N * 4)]),
    ("SET/GET -P 1 -c 50", ["-t", "set,get", "-P", "1", "-c", "50", "-r", "100000", "-n", str(N)]),
]


WORKLOADS = [w for w in WORKLOADS if ONLY in w[0]]


def fmt_spread(vals):
    return f"{statistics.median(vals):,.0f} ({min(vals):,.0f}–{max(vals):,.0f})"


CONFIG = {"slotway": "slotway node", "redis": "redis-server"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the figures here as JSON")
    args = ap.parse_args()
    # `timeout` (bench/run.sh) sends SIGTERM: unwind so `finally` stops
    # every server this script started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for t in ("redis-server", "redis-benchmark", "redis-cli"):
        if not any(os.access(os.path.join(d, t), os.X_OK) for d in os.environ.get("PATH", "").split(":")):
            print(f"## Node: slotway vs redis-server\n\nSkipped: `{t}` not found (apt-get install redis-server redis-tools).\n")
            return
    servers = [start("slotway"), start("redis")]
    results = {}  # (workload, test, kind) -> list of [rps, p50, p99, cpu]
    mem = {}
    try:
        for rnd in range(ROUNDS):
            for wname, wargs in WORKLOADS:
                for s in (servers if rnd % 2 == 0 else list(reversed(servers))):
                    flush(s)
                    args2 = [a for a in wargs if a != "-q"]
                    for test, vals in bench(s, args2).items():
                        results.setdefault((wname, test, s["kind"]), []).append(vals)
                    print(f"node: round {rnd + 1}/{ROUNDS} {wname} {s['kind']} done", file=sys.stderr)
        for s in (servers if KEYS > 0 else []):
            flush(s)
            base_used, base_rss = used_memory(s), rss_bytes(s["proc"].pid)
            load_keys(s, KEYS)
            dbsize = subprocess.run(["redis-cli", "-p", str(s["port"]), "dbsize"], capture_output=True, text=True).stdout.strip()
            mem[s["kind"]] = (used_memory(s) - base_used, rss_bytes(s["proc"].pid) - base_rss, dbsize)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for d in SCRATCH:
            subprocess.run(["rm", "-rf", d])
    print(report(results, mem))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures(results, mem), f, indent=1)


def ordered_tests(results, wname):
    return list(dict.fromkeys(t for (w, t, k) in results if w == wname))


def figures(results, mem):
    out = []
    for (wname, test, kind), runs in results.items():
        rps = [r[0] for r in runs]
        out.append({
            "part": "node", "workload": wname, "config": CONFIG[kind], "test": test,
            "rps": statistics.median(rps), "rps_min": min(rps), "rps_max": max(rps),
            "p50_ms": statistics.median([r[1] for r in runs]),
            "p99_ms": statistics.median([r[2] for r in runs]),
            "p99_ms_min": min(r[2] for r in runs), "p99_ms_max": max(r[2] for r in runs),
            "cpu_us_per_req": statistics.median([r[3] for r in runs]),
            "runs": len(runs),
        })
    for kind, (du, dr, dbsize) in mem.items():
        out.append({"part": "node-memory", "config": CONFIG[kind], "test": f"{KEYS} keys",
                    "bytes_per_key": du / KEYS, "rss_bytes_per_key": dr / KEYS, "keys": dbsize})
    return out


def report(results, mem):
    rv = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        "## Node: slotway vs redis-server",
        "",
        f"Reference: {rv}.",
        f"Rounds: {ROUNDS}, interleaved (slotway/redis order alternates per round); N={N}.",
        "Figures are medians over rounds with (min–max). CPU/req is the server's own",
        "user+system time from /proc/PID/stat divided by requests, per benchmark run.",
        "",
        "Commands (PORT is each server's):",
        "",
    ]
    for wname, wargs in WORKLOADS:
        lines.append(f"- {wname}: `redis-benchmark -p PORT --csv {' '.join(a for a in wargs if a != '-q')}`")
    aof = f"--appendonly yes --appendfsync {AOF}" if AOF else "--appendonly no"
    lines += [f"- servers: `slotway node --port P --bind 127.0.0.1 --save '' {aof}` and `redis-server` with the same flags"
              + (", each with one replica of its own kind (`--replicaof`)" if REPLICA else ""),
              "- memory: `redis-cli -p PORT --pipe` of SET key:%012d xxx, then `INFO memory` and VmRSS", ""]
    for wname, _ in WORKLOADS:
        lines += [f"### {wname}", "", "| test | slotway rps | redis rps | ratio | slotway p50/p99 ms | redis p50/p99 ms | slotway CPU µs/req | redis CPU µs/req |", "|---|---|---|---|---|---|---|---|"]
        for t in ordered_tests(results, wname):
            a = results.get((wname, t, "slotway"), [])
            b = results.get((wname, t, "redis"), [])
            if not a or not b:
                continue
            ra, rb = [x[0] for x in a], [x[0] for x in b]
            ratio = statistics.median(ra) / statistics.median(rb) if statistics.median(rb) else float("nan")
            lat = lambda xs: f"{statistics.median([x[1] for x in xs]):.3f} / {statistics.median([x[2] for x in xs]):.3f}"
            c = lambda xs: f"{statistics.median([x[3] for x in xs]):.2f}"
            lines.append(f"| {t} | {fmt_spread(ra)} | {fmt_spread(rb)} | {ratio:.2f} | {lat(a)} | {lat(b)} | {c(a)} | {c(b)} |")
        if wname.startswith("SET/GET"):
            sa = sum(statistics.median([x[0] for x in results.get((wname, t, 'slotway'), [[0]])]) for t in ("SET", "GET"))
            sb = sum(statistics.median([x[0] for x in results.get((wname, t, 'redis'), [[0]])]) for t in ("SET", "GET"))
            if sb:
                lines.append(f"| **SET+GET** | **{sa:,.0f}** | **{sb:,.0f}** | **{sa / sb:.2f}** | | | | |")
        lines.append("")
    if KEYS <= 0:
        return "\n".join(lines) + "\n"
    lines += [f"### Memory for {KEYS:,} small string keys", "", "Keys `key:%012d`, 3-byte values, loaded with `redis-cli --pipe`.", "",
              "| server | keys | used_memory delta | bytes/key | RSS delta | RSS bytes/key |", "|---|---|---|---|---|---|"]
    for k in ("slotway", "redis"):
        if k in mem:
            du, dr, dbs = mem[k]
            lines.append(f"| {k} | {dbs} | {du:,} | {du / KEYS:.1f} | {dr:,} | {dr / KEYS:.1f} |")
    if "slotway" in mem and "redis" in mem and mem["redis"][0]:
        lines.append(f"\nRatio slotway/redis: used_memory {mem['slotway'][0] / mem['redis'][0]:.2f}, RSS {mem['slotway'][1] / max(1, mem['redis'][1]):.2f}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
