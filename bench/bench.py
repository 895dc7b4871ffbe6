#!/usr/bin/env python3
"""Runs the same redis-benchmark workloads against a slotway node and a
redis-server, interleaved A/B per round, and writes bench/RESULTS.md.

Measures per test: requests/s and p50/p99 latency (redis-benchmark --csv),
server CPU per request (utime+stime deltas from /proc/PID/stat around the
run), and memory for 1M small string keys (used_memory and VmRSS).
Every process it starts is stopped by PID on exit.
"""
import csv, datetime, io, os, platform, socket, statistics, subprocess, sys, time

ROUNDS = int(os.environ.get("ROUNDS", "3"))
N = int(os.environ.get("N", "200000"))
KEYS = int(os.environ.get("KEYS", "1000000"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLOTWAY = os.environ.get("SLOTWAY", os.path.join(ROOT, "target", "release", "slotway"))
# ONLY="SET/GET -P 16" runs only the workloads whose name contains it;
# OUT=path writes the report elsewhere (partial runs keep RESULTS.md).
ONLY = os.environ.get("ONLY", "")
# REPLICA=1 gives each server one replica of its own kind (the cost of
# feeding the replication stream).
REPLICA = os.environ.get("REPLICA", "") == "1"
# AOF=always|everysec|no runs both servers with appendonly yes and that
# appendfsync (each in a fresh directory).
AOF = os.environ.get("AOF", "")
OUT = os.environ.get("OUT", "")
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


def start(kind, replicaof=None):
    port = free_port()
    aof = ["--appendonly", "yes", "--appendfsync", AOF] if AOF else ["--appendonly", "no"]
    if kind == "slotway":
        cmd = [SLOTWAY, "node", "--port", str(port), "--bind", "127.0.0.1", "--save", ""] + aof
    else:
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--daemonize", "no"] + aof
    if AOF and not replicaof:
        d = f"/tmp/bench-aof-{os.getpid()}-{port}"
        os.makedirs(d, exist_ok=True)
        cmd += ["--dir", d]
    if replicaof:
        d = f"/tmp/bench-replica-{os.getpid()}-{port}"
        os.makedirs(d, exist_ok=True)
        cmd += ["--replicaof", "127.0.0.1", str(replicaof), "--dir", d]
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
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
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


def main():
    servers = [start("slotway"), start("redis")]
    results = {}  # (workload, test, kind) -> list of tuples
    try:
        for rnd in range(ROUNDS):
            for wname, args in WORKLOADS:
                for s in (servers if rnd % 2 == 0 else list(reversed(servers))):
                    flush(s)
                    args2 = [a for a in args if a != "-q"]
                    for test, vals in bench(s, args2).items():
                        results.setdefault((wname, test, s["kind"]), []).append(vals)
                    print(f"round {rnd + 1}/{ROUNDS} {wname} {s['kind']} done", file=sys.stderr)
        mem = {}
        for s in (servers if KEYS > 0 else []):
            flush(s)
            base_used, base_rss = used_memory(s), rss_bytes(s["proc"].pid)
            load_keys(s, KEYS)
            dbsize = subprocess.run(["redis-cli", "-p", str(s["port"]), "dbsize"], capture_output=True, text=True).stdout.strip()
            mem[s["kind"]] = (used_memory(s) - base_used, rss_bytes(s["proc"].pid) - base_rss, used_memory(s), rss_bytes(s["proc"].pid), dbsize)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        mine = (f"bench-aof-{os.getpid()}-", f"bench-replica-{os.getpid()}-")
        for d in [x for x in os.listdir("/tmp") if x.startswith(mine)]:
            subprocess.run(["rm", "-rf", os.path.join("/tmp", d)])
    write_report(results, mem)


def write_report(results, mem):
    cpu = open("/proc/cpuinfo").read()
    model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("model name")), platform.processor())
    rv = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# Benchmarks: slotway node vs redis-server",
        "",
        f"Generated by `bench/run.sh` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}.",
        f"Machine: {os.cpu_count()} cores, {model}. Reference: {rv}.",
        f"Rounds: {ROUNDS}, interleaved (slotway/redis order alternates per round); N={N}.",
        "Figures are medians over rounds with (min–max). CPU/req is the server's own",
        "user+system time from /proc/PID/stat divided by requests, per benchmark run.",
        "Client and servers share the 2 cores: absolute numbers are low, ratios are what count.",
        "",
        "Commands (PORT is each server's):",
        "",
    ]
    for wname, args in WORKLOADS:
        lines.append(f"- {wname}: `redis-benchmark -p PORT --csv {' '.join(a for a in args if a != '-q')}`")
    aof = f"--appendonly yes --appendfsync {AOF}" if AOF else "--appendonly no"
    lines += [f"- servers: `slotway node --port P --bind 127.0.0.1 --save '' {aof}` and `redis-server` with the same flags"
              + (", each with one replica of its own kind (`--replicaof`)" if REPLICA else ""),
              f"- environment: `ONLY={ONLY!r} REPLICA={int(REPLICA)} AOF={AOF!r} ROUNDS={ROUNDS} N={N} KEYS={KEYS}`", ""]
    for wname, _ in WORKLOADS:
        tests = sorted({t for (w, t, k) in results if w == wname}, key=lambda t: list(dict.fromkeys(t for (w, t, k) in results if w == wname)).index(t))
        lines += [f"## {wname}", "", "| test | slotway rps | redis rps | ratio | slotway p50/p99 ms | redis p50/p99 ms | slotway CPU µs/req | redis CPU µs/req |", "|---|---|---|---|---|---|---|---|"]
        for t in tests:
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
        return finish(lines)
    lines += [f"## Memory for {KEYS:,} small string keys", "", "Keys `key:%012d`, 3-byte values, loaded with `redis-cli --pipe`.", "",
              "| server | keys | used_memory delta | bytes/key | RSS delta | RSS bytes/key |", "|---|---|---|---|---|---|"]
    for k in ("slotway", "redis"):
        if k in mem:
            du, dr, _, _, dbs = mem[k]
            lines.append(f"| {k} | {dbs} | {du:,} | {du / KEYS:.1f} | {dr:,} | {dr / KEYS:.1f} |")
    if "slotway" in mem and "redis" in mem and mem["redis"][0]:
        lines.append(f"\nRatio slotway/redis: used_memory {mem['slotway'][0] / mem['redis'][0]:.2f}, RSS {mem['slotway'][1] / max(1, mem['redis'][1]):.2f}.")
    finish(lines)


def finish(lines):
    out = OUT or os.path.join(ROOT, "bench", "RESULTS.md")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
