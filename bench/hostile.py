#!/usr/bin/env python3
"""Hostile clients, slotway node vs redis-server 7.0 side by side on
loopback: what they cost the server and whether others are still served.

- connect cycles: CYCLES (default 100000) connect / PING / close, one after
  another; cycles per second and the server's RSS before and after (a leak
  per connection shows as growth).
- slowloris: SLOW (default 2000) connections each holding half a request
  (`*3\\r\\n$3\\r\\nSET\\r\\n$1\\r\\nk`, never finished); RSS with them open and
  PING round trips of one well-behaved client meanwhile (p50 / p99).
- stalled reader: one client pipelines 64 GETs of a 1 MB value and reads
  nothing; RSS growth of the server after 3 s (with the default
  `client-output-buffer-limit normal 0 0 0`, i.e. no limit).
- the same three against the slotway proxy in front of a 3-master
  redis-server cluster (the proxy's RSS is what is measured).

Prints a markdown section on stdout and writes the figures as JSON to
--json PATH; progress on stderr. Every process it starts is stopped by PID
on exit; every phase is bounded in count and time (PHASE_TIMEOUT seconds).
Usage: bench/hostile.py [--json PATH]   (CYCLES=100000 SLOW=2000)
"""
import argparse, json, os, resource, socket, statistics, subprocess, sys, time

CYCLES = int(os.environ.get("CYCLES", "100000"))
SLOW = int(os.environ.get("SLOW", "2000"))
PHASE_TIMEOUT = float(os.environ.get("PHASE_TIMEOUT", "120"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLOTWAY = os.environ.get("SLOTWAY", os.path.join(ROOT, "target", "release", "slotway"))
procs = []


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ping(port, timeout=2.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16) == b"+PONG\r\n"
    except OSError:
        return False


def start(kind):
    port = free_port()
    if kind == "slotway":
        cmd = [SLOTWAY, "node", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    else:
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--daemonize", "no"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/tmp")
    procs.append(p)
    end = time.time() + 20
    while not ping(port):
        if time.time() > end:
            raise SystemExit(f"{kind} on {port} did not start")
        time.sleep(0.05)
    return {"kind": kind, "port": port, "pid": p.pid}


def cluster_proxy():
    """3 redis-server cluster masters (redis-cli --cluster create) and a
    slotway proxy in front; returns the proxy as a server."""
    ports = []
    while len(ports) < 3:
        p = free_port()
        if p + 10000 < 65536 and p not in ports:
            ports.append(p)
    for p in ports:
        d = f"/tmp/bench-hostile-{os.getpid()}-{p}"
        os.makedirs(d, exist_ok=True)
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--save", "", "--dir", d,
             "--cluster-enabled", "yes", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for p in ports:
        end = time.time() + 20
        while not ping(p):
            if time.time() > end:
                raise SystemExit(f"redis-server {p} did not start")
            time.sleep(0.05)
    subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports], "--cluster-yes"],
                   capture_output=True, timeout=120, check=True)
    end = time.time() + 60
    while not all(b"cluster_state:ok" in cmd(p, b"CLUSTER", b"INFO", big=True) for p in ports):
        if time.time() > end:
            raise SystemExit("cluster did not reach ok")
        time.sleep(0.1)
    port = free_port()
    p = subprocess.Popen([SLOTWAY, "proxy", "--listen", f"127.0.0.1:{port}", "--nodes", f"127.0.0.1:{ports[0]}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    end = time.time() + 30
    while b"slots_covered:16384" not in (cmd(port, b"INFO", b"proxy", big=True) if ping(port) else b""):
        if time.time() > end:
            raise SystemExit("proxy did not cover the slots")
        time.sleep(0.1)
    return {"kind": "proxy", "port": port, "pid": p.pid}


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cmd(port, *args, big=False):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        out = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        s.sendall(out)
        return s.recv(65536 if big else 64)


def connect_cycles(srv):
    before = rss(srv["pid"])
    t0 = time.time()
    done = 0
    while done < CYCLES and time.time() - t0 < PHASE_TIMEOUT:
        with socket.create_connection(("127.0.0.1", srv["port"]), timeout=5) as s:
            s.sendall(b"PING\r\n")
            s.recv(16)
        done += 1
    secs = time.time() - t0
    time.sleep(1)  # let the server finish closing the last sockets
    return {"cycles": done, "per_sec": done / secs, "rss_before": before, "rss_after": rss(srv["pid"])}


def slowloris(srv):
    before = rss(srv["pid"])
    held = []
    t0 = time.time()
    try:
        while len(held) < SLOW and time.time() - t0 < PHASE_TIMEOUT:
            s = socket.create_connection(("127.0.0.1", srv["port"]), timeout=5)
            s.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk")
            held.append(s)
        time.sleep(1)
        held_rss = rss(srv["pid"])
        rtts = []
        with socket.create_connection(("127.0.0.1", srv["port"]), timeout=5) as s:
            for _ in range(2000):
                a = time.perf_counter()
                s.sendall(b"PING\r\n")
                s.recv(16)
                rtts.append((time.perf_counter() - a) * 1000)
        rtts.sort()
        return {"held": len(held), "rss_before": before, "rss_held": held_rss,
                "ping_p50_ms": statistics.median(rtts), "ping_p99_ms": rtts[int(len(rtts) * 0.99) - 1]}
    finally:
        for s in held:
            s.close()


def stalled_reader(srv):
    port = srv["port"]
    cmd(port, b"SET", b"big", b"x" * (1 << 20))
    time.sleep(0.5)
    before = rss(srv["pid"])
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"GET big\r\n" * 64)
    time.sleep(3)
    grown = rss(srv["pid"]) - before
    alive = ping(port)
    s.close()
    return {"rss_growth": grown, "others_served": alive}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, SLOW + 1024) if hard != resource.RLIM_INFINITY else SLOW + 1024
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    results = {}
    try:
        for kind in ("slotway", "redis", "proxy"):
            srv = cluster_proxy() if kind == "proxy" else start(kind)
            log(f"{kind}: connect cycles")
            r = {"cycles": connect_cycles(srv)}
            log(f"{kind}: slowloris")
            r["slowloris"] = slowloris(srv)
            log(f"{kind}: stalled reader")
            r["stalled"] = stalled_reader(srv)
            results[kind] = r
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    p.wait(timeout=10)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    mb = lambda b: f"{b / 1048576:.1f} MB"
    out = ["## Hostile clients: slotway node vs redis-server, and the slotway proxy", "",
           f"`bench/hostile.py`: {CYCLES:,} connect/PING/close cycles; {SLOW:,} slowloris connections "
           "holding half a SET; one client pipelining 64 GETs of a 1 MB value and reading nothing. "
           "The proxy column is the slotway proxy in front of 3 redis-server cluster masters (proxy RSS).", "",
           "| | slotway node | redis-server | slotway proxy |", "|---|---|---|---|"]
    row = lambda name, f: out.append(f"| {name} | " + " | ".join(f(results[k]) if k in results else "-" for k in ("slotway", "redis", "proxy")) + " |")
    row("connect cycles/s", lambda r: f"{r['cycles']['per_sec']:,.0f} ({r['cycles']['cycles']:,} done)")
    row("RSS before → after cycles", lambda r: f"{mb(r['cycles']['rss_before'])} → {mb(r['cycles']['rss_after'])}")
    row("RSS with slowloris held", lambda r: f"{mb(r['slowloris']['rss_held'])} ({r['slowloris']['held']:,} held)")
    row("PING p50 / p99 meanwhile", lambda r: f"{r['slowloris']['ping_p50_ms']:.3f} / {r['slowloris']['ping_p99_ms']:.3f} ms")
    row("RSS growth, stalled reader (3 s)", lambda r: mb(r['stalled']['rss_growth']))
    row("others served meanwhile", lambda r: "yes" if r['stalled']['others_served'] else "NO")
    print("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
