#!/usr/bin/env python3
"""Benchmarks the slotway proxy side by side with direct cluster access and
twemproxy (nutcracker), and measures failover as a proxy client sees it.

Builds nothing: it expects target/release/slotway (cargo build --release).
Tools: redis-server, redis-cli, redis-benchmark, nutcracker (Debian
package `nutcracker`). Everything runs on free loopback ports; every process
started here is stopped by PID on exit.

Throughput (default mode), interleaved over --rounds:
  slotway   redis-benchmark -> slotway proxy -> real 3-master Redis Cluster
  direct    redis-benchmark --cluster -> the same cluster
  nutcracker redis-benchmark -> nutcracker -> 3 standalone redis-servers
  NAME      any --other NAME=CMD proxy in front of the same cluster
            (CMD may use {port} and {seed}; default args: --port {port} {seed},
            the redis-cluster-proxy command line)
for `redis-benchmark -t set,get -c 50 -r 100000` at -P 1 and -P 16.
Per run: requests/s (see parse_bench), p50/p99 latency, and the proxy's CPU per
request (utime+stime from /proc/PID/stat around the run, divided by the
requests of that run). Each test (set, get) is its own redis-benchmark run
so CPU is attributed per test.

Failover (--failover): a 3+3 cluster with a short cluster-node-timeout, a
SET/GET client through the proxy, one master SHUTDOWN mid-run; reports
errors, the longest stall, time to cluster_state:ok, and whether every
acknowledged write reads back.

Output: one markdown section (starting with `## `) on stdout with the exact
commands; figures as JSON to --json PATH (a list of objects with config,
test, rps, p50_ms, p99_ms, cpu_us_per_req, and rps_min/rps_max spread).
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLOTWAY = os.path.join(ROOT, "target", "release", "slotway")
CLK = os.sysconf("SC_CLK_TCK")
procs = []
workdir = tempfile.mkdtemp(prefix="slotway-proxy-bench-")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    # Cluster bus ports are port+10000: keep both free and below 65536.
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p + 10000 < 65536:
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p + 10000))
                return p
            except OSError:
                continue


def cli(port, *args, timeout=10):
    r = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=timeout)
    return r.stdout.strip()


def wait(what, cond, deadline=30):
    end = time.time() + deadline
    while time.time() < end:
        try:
            if cond():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def spawn(cmd, name):
    out = open(os.path.join(workdir, name + ".log"), "w")
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    procs.append(p)
    return p


def redis(port, cluster, timeout_ms=5000):
    d = os.path.join(workdir, str(port))
    os.makedirs(d, exist_ok=True)
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--daemonize", "no", "--dir", d, "--logfile", os.path.join(d, "log")]
    if cluster:
        cmd += ["--cluster-enabled", "yes", "--cluster-node-timeout", str(timeout_ms),
                "--cluster-config-file", os.path.join(d, "nodes.conf")]
    p = spawn(cmd, f"redis-{port}")
    wait(f"redis {port}", lambda: cli(port, "ping") == "PONG")
    return {"port": port, "proc": p}


def cluster(masters=3, replicas=0, timeout_ms=5000):
    nodes = [redis(free_port(), True, timeout_ms) for _ in range(masters * (1 + replicas))]
    addrs = [f"127.0.0.1:{n['port']}" for n in nodes]
    r = subprocess.run(["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas", str(replicas),
                        "--cluster-yes"], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise SystemExit("cluster create failed:\n" + r.stdout + r.stderr)
    wait("cluster_state:ok", lambda: all("cluster_state:ok" in cli(n["port"], "cluster", "info") for n in nodes), 60)
    if replicas:
        want = masters * replicas
        wait("replicas online", lambda: cli(nodes[0]["port"], "cluster", "nodes").count("slave") == want
             and all(cli(n["port"], "ping") == "PONG" for n in nodes), 60)
        # Until a replica has finished its first sync, SHUTDOWN of its
        # master pauses writes waiting for it: that would be counted as a
        # proxy stall.
        def synced(n):
            info = cli(n["port"], "info", "replication")
            return "role:master" in info or ("master_link_status:up" in info
                                              and "master_sync_in_progress:0" in info)
        wait("replicas synced", lambda: all(synced(n) for n in nodes), 60)
    return nodes


def start_slotway(seed_port, threads=None, extra=()):
    port = free_port()
    cmd = [SLOTWAY, "proxy", "--listen", f"127.0.0.1:{port}", "--nodes", f"127.0.0.1:{seed_port}", *extra]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    p = spawn(cmd, f"slotway-{port}")
    wait("slotway proxy", lambda: cli(port, "ping") == "PONG")
    wait("slot map", lambda: "slots_covered:16384" in cli(port, "info", "proxy"))
    return {"port": port, "proc": p, "cmd": " ".join(cmd)}


def start_nutcracker(backends):
    port = free_port()
    conf = os.path.join(workdir, f"nutcracker-{port}.yml")
    with open(conf, "w") as f:
        f.write("bench:\n  listen: 127.0.0.1:%d\n  hash: fnv1a_64\n  distribution: ketama\n"
                "  redis: true\n  auto_eject_hosts: false\n  server_connections: 1\n  servers:\n" % port)
        for b in backends:
            f.write("   - 127.0.0.1:%d:1\n" % b["port"])
    cmd = ["nutcracker", "-c", conf, "-s", str(free_port()), "-a", "127.0.0.1",
           "-o", os.path.join(workdir, f"nutcracker-{port}.log"), "-p", os.path.join(workdir, f"nutcracker-{port}.pid")]
    p = spawn(cmd, f"nutcracker-{port}")
    wait("nutcracker", lambda: cli(port, "set", "probe", "1") == "OK")
    return {"port": port, "proc": p, "cmd": " ".join(cmd), "conf": conf}


def start_other(name, template, seed_port):
    port = free_port()
    if "{port}" not in template:
        template += " --port {port} {seed}"
    cmd = template.format(port=port, seed=f"127.0.0.1:{seed_port}").split()
    p = spawn(cmd, f"{name}-{port}")
    wait(name, lambda: cli(port, "ping") == "PONG")
    return {"port": port, "proc": p, "cmd": " ".join(cmd)}


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def bench_cmd(port, test, pipeline, n, cluster_mode):
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", test, "-c", "50", "-r", "100000",
           "-n", str(n), "-P", str(pipeline)]
    if cluster_mode:
        cmd.append("--cluster")
    return cmd


def parse_bench(out, test):
    """requests/s, p50 ms, p99 ms of one redis-benchmark run (default output).

    requests/s is the last progress line's "overall" figure, not the final
    summary: in cluster mode (threads) redis-benchmark notices the end only
    at its next 250 ms tick, so the summary's elapsed time is rounded up to
    a multiple of 250 ms (a 0.26 s run reports 0.5 s: half the real rate).
    The progress lines are timed exactly. Both figures are the same for a
    run without threads, so every config is measured the same way.
    """
    overall = None
    summary = None
    lat = None
    lines = out.replace("\r", "\n").splitlines()
    for i, line in enumerate(lines):
        if "(overall: " in line and line.strip().upper().startswith(test.upper() + ":"):
            v = line.split("(overall: ", 1)[1].split(")", 1)[0]
            try:
                if float(v) > 0:
                    overall = float(v)
            except ValueError:
                pass
        elif "throughput summary:" in line:
            summary = float(line.split("throughput summary:", 1)[1].split()[0])
        elif "latency summary" in line and i + 2 < len(lines):
            head = lines[i + 1].split()
            vals = lines[i + 2].split()
            lat = dict(zip(head, map(float, vals)))
    if summary is None or lat is None:
        return None
    return (overall or summary), lat["p50"], lat["p99"]


def run_bench(port, test, pipeline, n, cluster_mode, cpu_pids):
    cmd = bench_cmd(port, test, pipeline, n, cluster_mode)
    before = {p: cpu_seconds(p) for p in cpu_pids}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    after = {p: cpu_seconds(p) for p in cpu_pids}
    parsed = parse_bench(r.stdout, test)
    if parsed is None:
        raise SystemExit(f"redis-benchmark gave no {test} summary: {r.stdout[-2000:]} {r.stderr}")
    rps, p50, p99 = parsed
    cpu = {p: after[p] - before[p] for p in cpu_pids}
    return rps, p50, p99, cpu, " ".join(cmd)


def throughput(args):
    configs = []
    log("starting a 3-master Redis Cluster ...")
    nodes = cluster(3, args.replicas)
    seed = nodes[0]["port"]
    log("starting slotway proxy ...")
    sw = start_slotway(seed, args.threads)
    configs.append(("slotway", sw["port"], False, [sw["proc"].pid], sw["cmd"]))
    configs.append(("direct", seed, True, [], "(no proxy)"))
    log("starting 3 standalone redis-servers and nutcracker ...")
    standalone = [redis(free_port(), False) for _ in range(3)]
    nc = start_nutcracker(standalone)
    configs.append(("nutcracker", nc["port"], False, [nc["proc"].pid], nc["cmd"]))
    for o in args.other:
        name, _, template = o.partition("=")
        ot = start_other(name, template, seed)
        configs.append((name, ot["port"], False, [ot["proc"].pid], ot["cmd"]))
    results = {}
    commands = {}
    for rnd in range(args.rounds):
        for pipeline in (1, 16):
            for test in ("set", "get"):
                for name, port, cmode, pids, _ in configs:
                    n = args.requests * (8 if pipeline > 1 else 1)
                    rps, p50, p99, cpu, cmd = run_bench(port, test, pipeline, n, cmode, pids)
                    cpu_us = (sum(cpu.values()) / n * 1e6) if pids else None
                    results.setdefault((name, test, pipeline), []).append((rps, p50, p99, cpu_us))
                    commands[(name, pipeline)] = cmd.replace(f"-t {test}", "-t set|get")
                    log(f"round {rnd + 1} P{pipeline} {test:3} {name:10} {rps:>10.0f} rps"
                        f"  p50 {p50:.3f} ms  p99 {p99:.3f} ms" + (f"  cpu {cpu_us:.2f} us/req" if cpu_us else ""))
    out = []
    for (name, test, pipeline), runs in results.items():
        rps = [r[0] for r in runs]
        cpus = [r[3] for r in runs if r[3] is not None]
        out.append({
            "config": name, "test": f"{test.upper()} -P {pipeline}",
            "rps": statistics.median(rps), "rps_min": min(rps), "rps_max": max(rps),
            "p50_ms": statistics.median(r[1] for r in runs), "p99_ms": statistics.median(r[2] for r in runs),
            "cpu_us_per_req": statistics.median(cpus) if cpus else None,
            "cpu_us_min": min(cpus) if cpus else None, "cpu_us_max": max(cpus) if cpus else None,
            "rounds": len(runs),
        })
    # Markdown.
    print(f"## Proxy throughput: slotway proxy vs direct --cluster vs nutcracker ({args.rounds} interleaved rounds)\n")
    print(f"Machine: {os.cpu_count()} CPUs; redis-server {cli(seed, 'info', 'server').split('redis_version:')[1].split()[0]}; "
          f"{time.strftime('%Y-%m-%d')}. Backends: a 3-master Redis Cluster"
          f"{' with 1 replica each' if args.replicas else ''} (slotway, direct, others) and 3 standalone "
          "redis-servers (nutcracker). Median of the rounds, min-max of requests/s in brackets. "
          "CPU = proxy process utime+stime per request (/proc/PID/stat). "
          "requests/s = redis-benchmark's last progress \"overall\" figure: with --cluster its final "
          "summary rounds the elapsed time up to a multiple of 250 ms and understates direct access.\n")
    print("| test | config | requests/s | p50 ms | p99 ms | proxy CPU µs/req |")
    print("|---|---|---:|---:|---:|---:|")
    for pipeline in (1, 16):
        for test in ("SET", "GET"):
            for name, *_ in configs:
                r = next(x for x in out if x["config"] == name and x["test"] == f"{test} -P {pipeline}")
                cpu = f"{r['cpu_us_per_req']:.2f}" if r["cpu_us_per_req"] is not None else "–"
                print(f"| {test} -P {pipeline} | {name} | {r['rps']:.0f} ({r['rps_min']:.0f}-{r['rps_max']:.0f}) "
                      f"| {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {cpu} |")
    print("\nRatios (SET+GET requests/s summed):\n")
    for pipeline in (1, 16):
        tot = {name: sum(x["rps"] for x in out if x["config"] == name and x["test"].endswith(f"-P {pipeline}"))
               for name, *_ in configs}
        parts = [f"slotway/direct {tot['slotway'] / tot['direct']:.2f}×",
                 f"slotway/nutcracker {tot['slotway'] / tot['nutcracker']:.2f}×"]
        print(f"- `-P {pipeline}`: " + ", ".join(parts))
    print("\nCommands:\n")
    print("```")
    for name, _, _, _, start in configs:
        print(f"# {name}: {start}")
    for (name, pipeline), cmd in sorted(commands.items(), key=lambda x: (x[0][1], x[0][0])):
        print(cmd)
    print(f"# nutcracker config: {open(nc['conf']).read().strip()}".replace("\n", "\n# "))
    print("```")
    return out


class Client:
    """A minimal RESP client that reconnects after errors."""

    def __init__(self, port):
        self.port = port
        self.sock = None
        self.buf = b""

    def connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.buf = b""

    def readline(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read(self):
        line = self.readline()
        t, rest = line[:1], line[1:]
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                self.buf += chunk
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if t == b"-":
            return RuntimeError(rest.decode())
        return rest

    def call(self, *args):
        if self.sock is None:
            self.connect()
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self.read()


def failover(args):
    timeout_ms = args.node_timeout
    log(f"starting a 3+3 Redis Cluster (cluster-node-timeout {timeout_ms}) ...")
    nodes = cluster(3, 1, timeout_ms)
    seed = nodes[0]["port"]
    sw = start_slotway(seed, args.threads, ["--request-deadline-ms", str(args.deadline_ms)])
    c = Client(sw["port"])
    acked = {}
    errors = []
    stop = threading.Event()
    lat = {"max_stall": 0.0, "ops": 0, "errors_after_ok": 0}
    state = {"ok_again": None}

    def load():
        i = 0
        last_ok = time.time()
        while not stop.is_set():
            key = f"fo:{i % 5000}"
            val = f"v{i}"
            t0 = time.time()
            try:
                r = c.call("SET", key, val)
                if isinstance(r, Exception):
                    errors.append((t0, "SET", str(r)))
                else:
                    acked[key] = val
                r = c.call("GET", key)
                if isinstance(r, Exception):
                    errors.append((t0, "GET", str(r)))
                elif acked.get(key) is not None and r != acked[key].encode():
                    errors.append((t0, "GET", f"read back {r!r}, expected {acked[key]!r}"))
            except Exception as e:
                errors.append((t0, "conn", repr(e)))
                c.sock = None
            now = time.time()
            if not errors or errors[-1][0] < t0:
                lat["max_stall"] = max(lat["max_stall"], now - last_ok)
                last_ok = now
            lat["ops"] += 2
            i += 1

    t = threading.Thread(target=load, daemon=True)
    t_start = time.time()
    t.start()
    time.sleep(2)
    victim = next(n for n in nodes if "master" in cli(n["port"], "role").split("\n")[0])
    log(f"SHUTDOWN master 127.0.0.1:{victim['port']}")
    t_kill = time.time()
    cli(victim["port"], "shutdown", "nosave")
    others = [n for n in nodes if n is not victim]
    def healthy_masters():
        lines = cli(others[0]["port"], "cluster", "nodes").splitlines()
        gone = f":{victim['port']}@"
        return sum(1 for l in lines if "master" in l and "fail" not in l and gone not in l)
    # Done when a replica has taken over: three healthy masters again.
    wait("failover", lambda: all("cluster_state:ok" in cli(n["port"], "cluster", "info") for n in others)
         and healthy_masters() == 3, 120)
    state["ok_again"] = time.time() - t_kill
    log(f"cluster_state:ok again after {state['ok_again']:.1f} s")
    time.sleep(args.after)
    stop.set()
    t.join(30)
    elapsed = time.time() - t_start
    # Every acknowledged write must read back (through a fresh connection).
    check = Client(sw["port"])
    wrong = [k for k, v in list(acked.items()) if check.call("GET", k) != v.encode()]
    after_ok = [e for e in errors if e[0] > t_kill + state["ok_again"]]
    res = {
        "config": "slotway", "test": "failover SET/GET",
        "rps": round(lat["ops"] / elapsed), "rps_min": None, "rps_max": None,
        "p50_ms": None, "p99_ms": None, "cpu_us_per_req": None,
        "cluster_node_timeout_ms": timeout_ms,
        "ops": lat["ops"], "errors": len(errors), "errors_after_failover": len(after_ok),
        "longest_stall_s": round(lat["max_stall"], 3), "cluster_ok_after_s": round(state["ok_again"], 2),
        "acked_writes_wrong": len(wrong), "error_samples": [e[2] for e in errors[:5]],
    }
    print(f"## Failover through the slotway proxy (real Redis 3+3, cluster-node-timeout {timeout_ms} ms)\n")
    print("One client sends SET k v / GET k in a loop through the proxy; a master is shut down "
          "(`redis-cli SHUTDOWN NOSAVE`); the run goes on "
          f"{args.after} s after `cluster_state:ok`.\n")
    print("| requests | errors | errors after failover | longest stall | master shutdown → replica promoted, cluster_state:ok | acknowledged writes read back wrong |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {res['ops']} | {res['errors']} | {res['errors_after_failover']} | {res['longest_stall_s']:.2f} s "
          f"| {res['cluster_ok_after_s']:.1f} s | {res['acked_writes_wrong']} |")
    if errors:
        print("\nErrors seen: " + "; ".join(f"`{e}`" for e in res["error_samples"]))
    print("\n```\n# proxy: " + sw["cmd"] + "\n# cluster: redis-cli --cluster create <6 nodes> --cluster-replicas 1"
          f" (redis-server --cluster-node-timeout {timeout_ms})\n```")
    return [res]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=200000, help="requests per -P 1 run (x8 at -P 16)")
    ap.add_argument("--replicas", type=int, default=0, help="replicas per master in the throughput cluster")
    ap.add_argument("--threads", type=int, default=None, help="slotway proxy --threads")
    ap.add_argument("--other", action="append", default=[], metavar="NAME=CMD")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--failover", action="store_true", help="measure failover instead of throughput")
    ap.add_argument("--with-failover", action="store_true", help="throughput, then failover")
    ap.add_argument("--node-timeout", type=int, default=2000, help="cluster-node-timeout for --failover (ms)")
    ap.add_argument("--deadline-ms", type=int, default=15000, help="proxy --request-deadline-ms for --failover")
    ap.add_argument("--after", type=float, default=3.0, help="seconds of load after the cluster is ok again")
    args = ap.parse_args()
    if not os.path.exists(SLOTWAY):
        raise SystemExit(f"{SLOTWAY} is missing: run cargo build --release first")
    for tool in ("redis-server", "redis-cli", "redis-benchmark") + (() if args.failover else ("nutcracker",)):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    out = []
    try:
        if args.failover:
            out += failover(args)
        else:
            out += throughput(args)
            if args.with_failover:
                for p in procs:
                    p.terminate()
                for p in procs:
                    p.wait()
                procs.clear()
                print()
                out += failover(args)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
