#!/usr/bin/env python3
"""Failover timing, the founding document's step 7 measured: a 3+3 cluster
on loopback (cluster-node-timeout 5000) built with `redis-cli --cluster
create`, then `redis-cli -p <master> shutdown`; time until every remaining
node reports cluster_state:ok AND slot 0 (the dead master's first slot) has
a new, non-failed owner in that node's own CLUSTER NODES. The same for real
redis-server and for slotway nodes, interleaved per round.

Meanwhile a client runs SET+GET in a loop — through the slotway proxy when
it answers, else a small direct cluster client (MOVED-following, slot map
refresh on errors) — and the errors it sees and its longest stall (the
longest gap between two successful operations) are recorded, as are the
errors after recovery and the keys written before the crash that can no
longer be read.

A run with no failover within FAILOVER_DEADLINE seconds is reported as
such, never waited on forever. Prints a markdown section on stdout, the
figures as JSON to --json PATH, progress on stderr. Every process it starts
is stopped by PID.
Usage: bench/failover.py [--json PATH]   (FAILOVER_ROUNDS=3 FAILOVER_DEADLINE=45)
"""
import argparse, signal, json, os, random, shutil, socket, statistics, subprocess, sys, tempfile, threading, time

ROUNDS = int(os.environ.get("FAILOVER_ROUNDS", "3"))
DEADLINE = float(os.environ.get("FAILOVER_DEADLINE", "45"))
NODE_TIMEOUT = 5000
AFTER = 3.0  # seconds the client keeps going after recovery
PRELOAD = 1000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLOTWAY = os.environ.get("SLOTWAY", os.path.join(ROOT, "target", "release", "slotway"))
KINDS = ["redis", "slotway"]
CONFIG = {"redis": "redis-server cluster", "slotway": "slotway nodes"}
procs = []


def log(*a):
    print("failover:", *a, file=sys.stderr, flush=True)


# --- a minimal RESP2 client ----------------------------------------------

class RespError(Exception):
    pass


class Conn:
    def __init__(self, port, timeout=1.0):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.s.settimeout(timeout)
        self.buf = b""

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return RespError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode(errors="replace")
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise ConnectionError(f"bad reply {line[:40]!r}")

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.s.sendall(b"".join(out))
        return self._reply()


def query(port, *args, timeout=1.0):
    """One command on a fresh connection; None when the node does not answer."""
    try:
        c = Conn(port, timeout)
        try:
            return c.call(*args)
        finally:
            c.close()
    except (OSError, ConnectionError, ValueError):
        return None


def _crc16_table():
    t = []
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        t.append(c & 0xFFFF)
    return t


CRC = _crc16_table()


def key_slot(key: bytes) -> int:
    s = key.find(b"{")
    if s >= 0:
        e = key.find(b"}", s + 1)
        if e > s + 1:
            key = key[s + 1:e]
    crc = 0
    for b in key:
        crc = ((crc << 8) & 0xFFFF) ^ CRC[((crc >> 8) ^ b) & 0xFF]
    return crc % 16384


class ClusterClient:
    """Follows MOVED, refreshes its slot map from any seed after errors."""

    def __init__(self, ports):
        self.seeds = list(ports)
        self.owner = [None] * 16384
        self.conns = {}
        self.refresh()

    def refresh(self):
        for p in random.sample(self.seeds, len(self.seeds)):
            r = query(p, "CLUSTER", "SLOTS", timeout=0.5)
            if isinstance(r, list):
                for lo, hi, master, *_ in r:
                    for s in range(lo, hi + 1):
                        self.owner[s] = int(master[1])
                return

    def _conn(self, port):
        c = self.conns.get(port)
        if c is None:
            c = self.conns[port] = Conn(port)
        return c

    def call(self, key, *args):
        port = self.owner[key_slot(key.encode())] or self.seeds[0]
        for _ in range(3):
            try:
                r = self._conn(port).call(*args)
            except (OSError, ConnectionError):
                c = self.conns.pop(port, None)
                if c:
                    c.close()
                self.refresh()
                raise
            if isinstance(r, RespError) and str(r).startswith("MOVED "):
                port = int(str(r).split()[2].rsplit(":", 1)[1])
                self.owner[key_slot(key.encode())] = port
                continue
            if isinstance(r, RespError):
                raise r
            return r
        raise RespError("too many redirects")


class ProxyClient:
    def __init__(self, port):
        self.port, self.c = port, None

    def call(self, key, *args):
        try:
            if self.c is None:
                self.c = Conn(self.port)
            r = self.c.call(*args)
        except (OSError, ConnectionError):
            if self.c:
                self.c.close()
            self.c = None
            raise
        if isinstance(r, RespError):
            raise r
        return r


class Load(threading.Thread):
    """SET+GET in a loop until stopped; bounded by the caller's deadline."""

    def __init__(self, client):
        super().__init__(daemon=True)
        self.client, self.stop = client, threading.Event()
        self.ops, self.errors, self.stall = 0, [], 0.0

    def run(self):
        last_ok = time.monotonic()
        i = 0
        while not self.stop.is_set():
            k = f"fo:{i % 10000}"
            i += 1
            try:
                self.client.call(k, "SET", k, i)
                if self.client.call(k, "GET", k) is None:
                    raise RespError("GET returned nil")
                now = time.monotonic()
                self.stall = max(self.stall, now - last_ok)
                last_ok = now
                self.ops += 1
            except (OSError, ConnectionError, RespError) as e:
                self.errors.append((time.monotonic(), str(e)[:80]))
                time.sleep(0.01)
        self.stall = max(self.stall, time.monotonic() - last_ok)


# --- processes -------------------------------------------------------------

def free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def pick_base():
    # Node ports and their bus ports (+10000) below the ephemeral range.
    for _ in range(500):
        base = random.randrange(13000, 22000)
        if all(free(base + i) and free(base + i + 10000) for i in range(6)):
            return base
    raise SystemExit("no free port range")


def spawn(cmd, logfile):
    with open(logfile, "ab") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    procs.append(p)
    return p


def stop_all():
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    procs.clear()


def wait(what, cond, deadline):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    log(f"timed out waiting for {what}")
    return False


def nodes_view(port):
    r = query(port, "CLUSTER", "NODES")
    if not isinstance(r, str):
        return None
    out = []
    for line in r.splitlines():
        f = line.split(" ")
        if len(f) >= 8:
            out.append({"id": f[0], "port": int(f[1].split("@")[0].rsplit(":", 1)[1]), "flags": f[2].split(","),
                        "master": f[3], "link": f[7], "slots": f[8:]})
    return out


def owns_slot0(n):
    for r in n["slots"]:
        if r.startswith("["):
            continue
        lo, _, hi = r.partition("-")
        if int(lo) == 0:
            return True
    return False


def healthy(port, total):
    v = nodes_view(port)
    info = query(port, "CLUSTER", "INFO")
    return (v is not None and isinstance(info, str) and "cluster_state:ok" in info and len(v) == total
            and all(n["link"] == "connected" and not {"fail", "fail?", "handshake"} & set(n["flags"]) for n in v))


def build(kind, tmp):
    base = pick_base()
    ports = [base + i for i in range(6)]
    for p in ports:
        d = os.path.join(tmp, str(p))
        os.makedirs(d, exist_ok=True)
        common = ["--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                  "--cluster-node-timeout", str(NODE_TIMEOUT), "--dir", d, "--save", "", "--appendonly", "no"]
        if kind == "redis":
            cmd = ["redis-server", *common, "--cluster-config-file", "nodes.conf", "--daemonize", "no"]
        else:
            cmd = [SLOTWAY, "node", *common]
        spawn(cmd, os.path.join(d, "log"))
    if not wait("nodes to answer PING", lambda: all(query(p, "PING") == "PONG" for p in ports), 20):
        return None
    r = subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                        "--cluster-replicas", "1", "--cluster-yes"], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        log(f"{kind}: cluster create failed: {r.stdout[-500:]} {r.stderr[-500:]}")
        return None
    if not wait("cluster_state:ok everywhere", lambda: all(healthy(p, 6) for p in ports), 60):
        return None

    def synced():
        for p in ports:
            info = query(p, "INFO", "replication")
            if isinstance(info, str) and "role:slave" in info and "master_link_status:up" not in info:
                return False
        return True

    # A replica that never synced refuses to fail over (data age); slotway
    # replicas without replication are given a short chance, then go on.
    wait("replicas in sync", synced, 20 if kind == "redis" else 3)
    return ports


def start_proxy(ports, tmp):
    """The slotway proxy in front of `ports`, or (None, reason)."""
    if not os.access(SLOTWAY, os.X_OK):
        return None, f"{SLOTWAY} missing"
    listen = pick_base() + 50
    metrics = listen + 1
    log_path = os.path.join(tmp, "proxy.log")
    p = spawn([SLOTWAY, "proxy", "--listen", f"127.0.0.1:{listen}", "--nodes",
               ",".join(f"127.0.0.1:{x}" for x in ports), "--metrics", f"127.0.0.1:{metrics}"], log_path)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if p.poll() is not None:
            with open(log_path, errors="replace") as f:
                first = (f.readline() or "").strip()
            return None, f"slotway proxy exited: {first}"
        if query(listen, "PING") == "PONG":
            return listen, None
        time.sleep(0.1)
    return None, "slotway proxy did not answer PING within 10 s"


def one_round(kind):
    tmp = tempfile.mkdtemp(prefix=f"slotway-failover-{kind}-")
    res = {"config": CONFIG[kind], "failed_over": False}
    try:
        ports = build(kind, tmp)
        if ports is None:
            res["error"] = "cluster did not come up"
            return res
        view = nodes_view(ports[0])
        dead = next(n for n in view if owns_slot0(n))
        others = [p for p in ports if p != dead["port"]]
        cc = ClusterClient(ports)
        for i in range(PRELOAD):
            cc.call(f"pre:{i}", "SET", f"pre:{i}", i)
        proxy, why = start_proxy(ports, tmp)
        client = ProxyClient(proxy) if proxy else ClusterClient(ports)
        res["client"] = "slotway proxy" if proxy else f"direct cluster client ({why})"
        load = Load(client)
        load.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        subprocess.run(["redis-cli", "-p", str(dead["port"]), "shutdown"], capture_output=True, timeout=10)
        detect = recovered = None
        while time.monotonic() - t0 < DEADLINE:
            views = {p: nodes_view(p) for p in others}
            now = time.monotonic() - t0
            if detect is None and any(v and any(n["id"] == dead["id"] and "fail" in n["flags"] for n in v)
                                      for v in views.values()):
                detect = now
            ok = True
            for p, v in views.items():
                info = query(p, "CLUSTER", "INFO")
                owner = next((n for n in v or [] if owns_slot0(n)), None)
                if not (isinstance(info, str) and "cluster_state:ok" in info and owner
                        and owner["id"] != dead["id"] and "fail" not in owner["flags"]):
                    ok = False
                    break
            if ok:
                recovered = now
                break
            time.sleep(0.1)
        t_rec = t0 + recovered if recovered is not None else None
        if recovered is not None:
            time.sleep(AFTER)
        load.stop.set()
        load.join(timeout=10)
        res.update({
            "detect_s": detect, "recovery_s": recovered, "failed_over": recovered is not None,
            "errors": len(load.errors), "ops": load.ops, "stall_ms": load.stall * 1000,
            "errors_after": sum(1 for t, _ in load.errors if t_rec is not None and t > t_rec),
            "first_error": load.errors[0][1] if load.errors else "",
            # From the first failed operation to the last one: how long the
            # dead master's keys were unavailable to this client.
            "error_window_s": (load.errors[-1][0] - load.errors[0][0]) if load.errors else 0.0,
        })
        if recovered is not None:
            cc = ClusterClient(others)
            lost = 0
            for i in range(PRELOAD):
                try:
                    if cc.call(f"pre:{i}", "GET", f"pre:{i}") != str(i):
                        lost += 1
                except (OSError, ConnectionError, RespError):
                    lost += 1
            res["keys_lost"] = lost
        return res
    except Exception as e:  # one bad round must not lose the others
        res["error"] = f"{type(e).__name__}: {e}"
        return res
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def med(xs, fmt="{:.1f}"):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    args = ap.parse_args()
    # `timeout` (bench/run.sh) sends SIGTERM: unwind so `finally` stops
    # every server this script started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    title = "## Failover: master SHUTDOWN → cluster_state:ok again"
    for t in ("redis-server", "redis-cli"):
        if shutil.which(t) is None:
            print(f"{title}\n\nSkipped: `{t}` not found (apt-get install redis-server redis-tools).\n")
            return
    kinds = [k for k in KINDS if k == "redis" or os.access(SLOTWAY, os.X_OK)]
    rounds = {k: [] for k in kinds}
    try:
        for rnd in range(ROUNDS):
            for k in (kinds if rnd % 2 == 0 else list(reversed(kinds))):
                r = one_round(k)
                rounds[k].append(r)
                log(f"round {rnd + 1}/{ROUNDS} {k}: {json.dumps(r)}")
    finally:
        stop_all()
    lines = [title, "",
             f"3 masters + 3 replicas on loopback, `cluster-node-timeout {NODE_TIMEOUT}`, built with",
             "`redis-cli --cluster create 127.0.0.1:P0 ... 127.0.0.1:P5 --cluster-replicas 1 --cluster-yes`;",
             "then `redis-cli -p <master of slot 0> shutdown`. Recovery = every remaining node reports",
             "`cluster_state:ok` and shows slot 0 owned by a live node other than the dead one.",
             "Detection = first remaining node that flags the dead master `fail`.",
             f"A client runs SET+GET in a loop throughout (1 s socket timeout); {PRELOAD} keys written before",
             f"the crash are read back after it. Deadline {DEADLINE:.0f} s per run; {ROUNDS} interleaved rounds;",
             "medians with (min–max).", "",
             "| cluster | failed over | recovery s | detection s | client errors | error window s | errors after recovery | longest stall ms | keys lost | client |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    figures = []
    for k in kinds:
        rs = rounds[k]
        ok = [r for r in rs if r.get("failed_over")]
        clients = sorted({r.get("client", "") for r in rs if r.get("client")})
        lines.append("| {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            CONFIG[k], len(ok), len(rs),
            med([r.get("recovery_s") for r in ok]) if ok else f"none within {DEADLINE:.0f} s",
            med([r.get("detect_s") for r in rs]),
            med([r.get("errors") for r in rs], "{:.0f}"),
            med([r.get("error_window_s") for r in rs]),
            med([r.get("errors_after") for r in ok], "{:.0f}"),
            med([r.get("stall_ms") for r in rs], "{:.0f}"),
            med([r.get("keys_lost") for r in ok], "{:.0f}"),
            "; ".join(clients)))
        rec = [r["recovery_s"] for r in ok]
        figures.append({
            "part": "failover", "config": CONFIG[k], "test": "master shutdown",
            "recovery_s": statistics.median(rec) if rec else None,
            "recovery_s_min": min(rec) if rec else None, "recovery_s_max": max(rec) if rec else None,
            "failed_over_rounds": len(ok), "rounds": len(rs), "deadline_s": DEADLINE,
            "errors": statistics.median([r.get("errors", 0) for r in rs]) if rs else None,
            "stall_ms": statistics.median([r.get("stall_ms", 0) for r in rs]) if rs else None,
            "runs": rs,
        })
    lines += ["", "Per round:", "", "| round | cluster | recovery s | detection s | errors | errors after | stall ms | ops | note |",
              "|---|---|---|---|---|---|---|---|---|"]
    for k in kinds:
        for i, r in enumerate(rounds[k]):
            f = lambda v, fmt="{:.1f}": "–" if v is None else fmt.format(v)
            note = r.get("error") or ("" if r.get("failed_over") else f"no failover within {DEADLINE:.0f} s")
            if r.get("first_error"):
                note = (note + "; " if note else "") + f"first error: `{r['first_error']}`"
            lines.append(f"| {i + 1} | {CONFIG[k]} | {f(r.get('recovery_s'))} | {f(r.get('detect_s'))} | "
                         f"{f(r.get('errors'), '{:.0f}')} | {f(r.get('errors_after'), '{:.0f}')} | "
                         f"{f(r.get('stall_ms'), '{:.0f}')} | {f(r.get('ops'), '{:.0f}')} | {note} |")
    print("\n".join(lines) + "\n")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=1)


if __name__ == "__main__":
    main()
