#!/usr/bin/env python3
"""A fleet of N peerix daemons and one tracker on one machine, driven by benches/fleet.sh (which
builds the release binary and runs this inside a network namespace of its own, so every byte the
fleet sends stays on that namespace's loopback and is counted there).

Fixture: one Nix store (`master`) holding BASE paths every node has and OWN paths per node (small
signed text files, ~600 B NARs), plus spare paths for the freshness trials. Every node gets a
store root whose `nix/store` is a symlink to master's and whose Nix DB lists only its own paths
and the base, so N stores cost one copy of the files. Nodes run in `ipfs` mode (the DHT among
themselves, `--bootstrap` to the first three, `--dht-server`) with the tracker, `--upstream none`,
`--no-mdns`; nothing is dialled outside the namespace.

Scenarios, one table each:
  idle       after the fleet settles: per node CPU %, RSS, connections, control bytes/s (all of the
             namespace's loopback traffic over the window, divided by N), DHT announcements/s;
             the tracker's CPU, RSS, announcements/s, DB size.
  lookup     a node asks for a path only one other node holds (p50/p99, by whether a have-summary
             of the holder was at hand), and for a path nobody holds.
  freshness  a node gains a new signed path (a row in its Nix DB, as `nix-store` writes it): time
             until every other node answers its narinfo 200; then the node goes silent (SIGSTOP,
             no FIN: a closed lid): time until every other node answers 404.
"""

import argparse
import http.client
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time

P = argparse.ArgumentParser()
P.add_argument("--peerix", required=True)
P.add_argument("--work", required=True)
P.add_argument("--nodes", type=int, default=100)
P.add_argument("--own", type=int, default=200)
P.add_argument("--base", type=int, default=2000)
P.add_argument("--idle", type=float, default=30.0, help="seconds of the idle window")
P.add_argument("--settle-max", type=float, default=600.0)
P.add_argument("--lookups", type=int, default=300)
P.add_argument("--trials", type=int, default=3, help="freshness trials (each takes one node out)")
P.add_argument("--tracker", choices=["yes", "no"], default="yes")
P.add_argument("--daemon-arg", action="append", default=[], help="one more argument for every `peerix serve`")
A = P.parse_args()
W = A.work
NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, **kw).stdout


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


# --- fixture ------------------------------------------------------------------------------------
def fixture():
    master = f"{W}/master"
    spare = A.trials
    total = A.base + A.nodes * A.own + spare
    os.makedirs(f"{W}/src", exist_ok=True)
    salt = random.getrandbits(64)
    names = []
    for i in range(total):
        f = f"{W}/src/fleet-{i}"
        with open(f, "w") as fh:
            fh.write(f"fleet {salt} path {i}\n" * 30)
        names.append(f)
    paths = []
    for k in range(0, total, 4000):
        paths += sh("nix-store", "--store", master, "--add", *names[k:k + 4000]).split()
    for k in range(0, total, 4000):
        sh("nix", "store", "sign", "--store", master, "--key-file", f"{W}/sk", *paths[k:k + 4000])
    base = paths[:A.base]
    own = [paths[A.base + n * A.own:A.base + (n + 1) * A.own] for n in range(A.nodes)]
    spares = paths[A.base + A.nodes * A.own:]
    m = sqlite3.connect(f"{master}/nix/var/nix/db/db.sqlite")
    schema = [r[0] for r in m.execute("SELECT sql FROM sqlite_master WHERE sql NOT NULL AND name NOT LIKE 'sqlite_%'")]
    m.close()
    for n in range(A.nodes):
        root = f"{W}/node-{n}/root"
        os.makedirs(f"{root}/nix/var/nix/db")
        os.symlink(f"{master}/nix/store", f"{root}/nix/store")
        with open(f"{root}/nix/var/nix/db/schema", "w") as fh:
            fh.write("10")
        db = sqlite3.connect(f"{root}/nix/var/nix/db/db.sqlite")
        for s in schema:
            db.execute(s)
        db.execute("ATTACH ? AS m", (f"{master}/nix/var/nix/db/db.sqlite",))
        mine = base + own[n]
        db.executemany("INSERT INTO ValidPaths SELECT * FROM m.ValidPaths WHERE path = ?", [(p,) for p in mine])
        db.commit()
        db.close()
    return base, own, spares


# --- processes ----------------------------------------------------------------------------------
PROCS = []


def start(name, args, want):
    """Starts a peerix process logging to WORK/NAME.log; waits for each regex in `want`, returns
    (proc, [first group of each])."""
    logf = f"{W}/{name}.log"
    p = subprocess.Popen([A.peerix, *args], stderr=open(logf, "w"), stdout=subprocess.DEVNULL,
                         env={**os.environ, "RUST_LOG": os.environ.get("FLEET_RUST_LOG", "info")})
    PROCS.append(p)
    deadline = time.time() + 60
    while time.time() < deadline:
        text = open(logf).read()
        found = [re.search(w, text) for w in want]
        if all(found):
            return p, [f.group(1) for f in found]
        if p.poll() is not None:
            break
        time.sleep(0.02)
    sys.exit(f"{name} did not start:\n{open(logf).read()[-3000:]}")


def cpu(pid):
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as fh:
        return int(re.search(r"VmRSS:\s+(\d+)", fh.read()).group(1)) / 1024


def lo_bytes():
    with open("/sys/class/net/lo/statistics/tx_bytes") as fh:
        return int(fh.read())


class Http:
    """One kept-alive connection per daemon (nix keeps its connections too)."""

    def __init__(self, url):
        self.hostport = url.removeprefix("http://")
        self.c = None

    def get(self, path, timeout=30):
        for attempt in (0, 1):
            try:
                if self.c is None:
                    self.c = http.client.HTTPConnection(self.hostport, timeout=timeout)
                self.c.request("GET", path)
                r = self.c.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, OSError):
                self.c = None
                if attempt:
                    raise


def status(url):
    return json.loads(Http(url).get("/api/status")[1])


def hash32(path):
    return path[len("/nix/store/"):][:32]


def main():
    with open(f"{W}/pk") as fh:
        pk = fh.read().strip()
    t0 = time.time()
    base, own, spares = fixture()
    log(f"fixture: {A.nodes} stores, {A.base} base + {A.own} own paths each, in {time.time() - t0:.0f} s")

    common = ["--upstream", "none", "--no-mdns", "--mode", "ipfs", "--dht-server", "--index-rate", "0",
              "--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--trusted-public-key", pk, "--listen", "127.0.0.1:0",
              *A.daemon_arg]
    tracker_url = None
    tracker = None
    if A.tracker == "yes":
        tracker, (tracker_url,) = start("tracker", ["tracker", "--listen", "127.0.0.1:0", "--state-dir",
                                                    f"{W}/tracker", "--p2p-listen", "/ip4/127.0.0.1/tcp/0"],
                                        [r"tracker listening on (http://[0-9.:]+)"])
        common += ["--tracker", tracker_url]
    nodes = []  # (proc, url, p2p addr)
    t0 = time.time()
    for n in range(A.nodes):
        boot = [a for _, _, a in nodes[:3]]
        args = ["serve", "--state-dir", f"{W}/node-{n}/state", "--store-root", f"{W}/node-{n}/root", *common]
        for b in boot or ["none"]:
            args += ["--bootstrap", b]
        p, (url, addr) = start(f"node-{n}", args, [r"listening on (http://[0-9.:]+)",
                                                   r"p2p listening on (/ip4/\S+/p2p/\w+)"])
        nodes.append((p, url, addr))
    log(f"{A.nodes} daemons started in {time.time() - t0:.0f} s")
    pids = [p.pid for p, _, _ in nodes]
    urls = [u for _, u, _ in nodes]
    ids = [a.rsplit("/", 1)[1] for _, _, a in nodes]

    # Settle: every store indexed, then until the fleet's CPU falls under 1 % of a core per node
    # (the goal) over 10 s — or --settle-max.
    t0 = time.time()
    want = A.base + A.own
    while any(status(u)["index"]["published_paths"] < want for u in urls):
        time.sleep(0.5)
    indexed = time.time() - t0
    while True:
        c0 = sum(cpu(p) for p in pids)
        time.sleep(10)
        load = (sum(cpu(p) for p in pids) - c0) / 10 / A.nodes
        if load < 0.01 or time.time() - t0 > A.settle_max:
            break
    settled = time.time() - t0
    log(f"indexed in {indexed:.0f} s, settled in {settled:.0f} s (last 10 s: {load * 100:.2f} % of a core per node)")

    # --- idle ---
    def announced(n):
        db = sqlite3.connect(f"file:{W}/node-{n}/state/peerix.sqlite?mode=ro", uri=True, timeout=10)
        v = db.execute("SELECT count(*) FROM paths WHERE announced_at IS NOT NULL").fetchone()[0]
        db.close()
        return v

    c0 = [cpu(p) for p in pids]
    tc0 = cpu(tracker.pid) if tracker else 0
    a0 = sum(announced(n) for n in range(A.nodes)) if True else 0
    b0 = lo_bytes()
    t0 = time.time()
    time.sleep(A.idle)
    b1 = lo_bytes()
    dt = time.time() - t0
    c1 = [cpu(p) for p in pids]
    tc1 = cpu(tracker.pid) if tracker else 0
    a1 = sum(announced(n) for n in range(A.nodes))
    sts = [status(u) for u in urls]
    conns = [len(s["connected_peers"]) for s in sts]
    summaries = [sum(1 for p in s["p2p"]["peers"] if p["connected"] and p["summary_paths"] is not None) for s in sts]
    cpus = [(b - a) / dt * 100 for a, b in zip(c0, c1)]
    rss = [rss_mib(p) for p in pids]
    print(f"\n## idle, {A.nodes} nodes ({A.base} base + {A.own} own paths each), {dt:.0f} s window after settling "
          f"({settled:.0f} s)")
    print("| per node | mean | p99 | max |\n|---|---|---|---|")
    for name, xs, f in [("CPU % of a core", cpus, "{:.2f}"), ("RSS MiB", rss, "{:.0f}"),
                        ("connections", conns, "{:.0f}"), ("have-summaries held", summaries, "{:.0f}")]:
        print(f"| {name} | {f.format(sum(xs) / len(xs))} | {f.format(pct(xs, 0.99))} | {f.format(max(xs))} |")
    print(f"| control traffic B/s (namespace loopback / N) | {(b1 - b0) / dt / A.nodes:.0f} | | |")
    print(f"| DHT path announcements/s (each 2 provider records) | {(a1 - a0) / dt / A.nodes:.2f} | | |")
    if tracker:
        m = Http(tracker_url).get("/metrics")[1].decode()
        tpaths = re.search(r"^peerix_tracker_paths (\d+)", m, re.M).group(1)
        tdb = sum(os.path.getsize(f"{W}/tracker/{f}") for f in os.listdir(f"{W}/tracker") if f.startswith("tracker"))
        print(f"\ntracker: CPU {(tc1 - tc0) / dt * 100:.2f} % of a core, RSS {rss_mib(tracker.pid):.0f} MiB, "
              f"{tpaths} (peer, path) rows, DB {tdb / 1e6:.1f} MB")

    # --- lookup ---
    conn = [Http(u) for u in urls]
    summary_of = [{p["peer_id"] for p in s["p2p"]["peers"] if p["connected"] and p["summary_paths"] is not None}
                  for s in sts]
    rng = random.Random(1)
    hit = {"summary": [], "tracker": []}
    bad = {"summary": 0, "tracker": 0, "miss": 0}
    for _ in range(A.lookups):
        i, j = rng.sample(range(A.nodes), 2)
        path = rng.choice(own[j])
        t = time.perf_counter()
        st, _ = conn[i].get(f"/{hash32(path)}.narinfo")
        ms = (time.perf_counter() - t) * 1000
        way = "summary" if ids[j] in summary_of[i] else "tracker"
        bad[way] += st != 200
        hit[way].append(ms)
    miss = []
    for _ in range(A.lookups):
        i = rng.randrange(A.nodes)
        h = "".join(rng.choice(NIX32) for _ in range(32))
        t = time.perf_counter()
        st, _ = conn[i].get(f"/{h}.narinfo")
        miss.append((time.perf_counter() - t) * 1000)
        bad["miss"] += st != 404
    print(f"\n## lookup ({A.lookups} of each)")
    print("| narinfo | n | wrong answers | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|")
    for name, way, xs in [("one holder, summary at hand", "summary", hit["summary"]),
                          ("one holder, via tracker", "tracker", hit["tracker"]), ("nobody holds it", "miss", miss)]:
        if xs:
            print(f"| {name} | {len(xs)} | {bad[way]} | {pct(xs, 0.5):.2f} | {pct(xs, 0.99):.2f} | {max(xs):.2f} |")

    # --- freshness and departure ---
    print("\n## freshness (a node gains a path; then goes silent, SIGSTOP)")
    print("| trial | node | all others 200 after s (p50 / max) | all others 404 after silence, s (p50 / max) |")
    print("|---|---|---|---|")
    m = sqlite3.connect(f"{W}/master/nix/var/nix/db/db.sqlite")
    alive = list(range(A.nodes))
    for trial, path in enumerate(spares):
        k = alive.pop(rng.randrange(len(alive)))
        row = m.execute("SELECT * FROM ValidPaths WHERE path = ?", (path,)).fetchone()
        db = sqlite3.connect(f"{W}/node-{k}/root/nix/var/nix/db/db.sqlite")
        db.execute(f"INSERT INTO ValidPaths VALUES ({','.join('?' * len(row))})", row)
        db.commit()
        db.close()
        found = poll_all(alive, urls, hash32(path), 200, time.time())
        os.kill(pids[k], signal.SIGSTOP)
        gone = poll_all(alive, urls, hash32(path), 404, time.time())
        os.kill(pids[k], signal.SIGKILL)
        os.kill(pids[k], signal.SIGCONT)
        print(f"| {trial + 1} | {k} | {pct(found, 0.5):.2f} / {max(found):.2f} | {pct(gone, 0.5):.2f} / {max(gone):.2f} |")


def poll_all(nodes, urls, h, want, t0, limit=120):
    """Polls every node's narinfo for h (one thread each, every 50 ms) until it answers `want`;
    the seconds after t0 each took."""
    out = {}

    def one(n):
        c = Http(urls[n])
        while time.time() - t0 < limit:
            st, _ = c.get(f"/{h}.narinfo")
            if st == want:
                out[n] = time.time() - t0
                return
            time.sleep(0.05)

    ts = [threading.Thread(target=one, args=(n,)) for n in nodes]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    late = [n for n in nodes if n not in out]
    if late:
        log(f"{len(late)} nodes never answered {want} within {limit} s (e.g. node {late[0]})")
    return [out.get(n, float(limit)) for n in nodes]


signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped"))
try:
    main()
finally:
    for p in PROCS:
        if p.poll() is None:
            p.kill()
            p.wait()
