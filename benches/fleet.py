#!/usr/bin/env python3
"""A fleet of N peerix daemons and one tracker on one machine, driven by benches/fleet.sh (which
builds the release binary and runs this inside a network namespace of its own, so every byte the
fleet sends stays on that namespace's loopback and is counted there).

Fixture: one Nix store (`master`) holding BASE paths every node has and OWN paths per node (small
signed text files, ~600 B NARs), spare paths for the freshness trials, and the flash-crowd closure
(a top path referring to FLASH_PATHS files of random bytes, FLASH_MB together; built in the machine's
store, copied to master and deleted there). Every node gets a store of its own whose
files are hard links to master's (N stores cost one copy of the bytes) and whose Nix DB lists only
its own paths and the base; node 0 also holds the flash closure. nix substitutes into these stores,
so a path a node received is one its daemon re-shares. Nodes run in `ipfs` mode (the DHT among
themselves, `--bootstrap` to the first three, `--dht-server`) with the tracker, `--upstream none`,
`--no-mdns`; nothing is dialled outside the namespace.

Scenarios, one table each:
  idle       after the fleet settles: per node CPU %, RSS, connections, control bytes/s (all of the
             namespace's loopback traffic over the window, divided by N), DHT announcements/s;
             the tracker's CPU, RSS, announcements/s, DB size.
  lookup     a node asks for a path only one other node holds (p50/p99, by whether a have-summary
             of the holder was at hand), and for a path nobody holds.
  flash      FLASH nodes run `nix-store --realise` of the flash closure's top at the same moment, each
             through its own daemon only (no second substituter: a failure counts): total time,
             p50/p99 per node, and the bytes node 0 (the only holder at the start) sent to peers.
  churn      for CHURN_MINUTES, every minute CHURN_FRAC of the nodes restart (SIGTERM, started
             again on the same state) while the others realise paths held by one other node each,
             through their daemon and then an ordinary cache (`file://`, as a second substituter):
             failed realisations (the goal is 0), where the paths came from, and narinfo lookups
             of one-holder paths during the churn (p50/p99, wrong answers).
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
import shutil
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
P.add_argument("--flash", type=int, default=50, help="nodes in the flash crowd (0: skip)")
P.add_argument("--flash-mb", type=float, default=20.0)
P.add_argument("--flash-paths", type=int, default=20)
P.add_argument("--churn-minutes", type=float, default=5.0, help="0: skip")
P.add_argument("--churn-frac", type=float, default=0.1)
P.add_argument("--churn-workers", type=int, default=4, help="realisations running at once during churn")
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
    flash = []
    if A.flash:
        # A closure as nix realises one: a top path referring to FLASH_PATHS blobs (nix asks the
        # top's narinfo, then its references'). `nix-store --add` makes no references, so it is
        # built in the machine's store, copied to the master store and deleted again.
        size = int(A.flash_mb * 1e6 / A.flash_paths)
        def drv(name, script):
            return (f'builtins.derivation {{ name = "{name}"; system = builtins.currentSystem; builder = "/bin/sh"; '
                    f'PATH = "/usr/bin:/bin"; salt = "{salt}"; args = [ "-c" "{script}" ]; }}')
        deps = " ".join(f"d{i} = " + drv(f"flash-{i}", f"head -c {size} /dev/urandom > $out") + ";"
                        for i in range(A.flash_paths))
        links = " ".join(f"ln -s ${{d{i}}} $out/d{i};" for i in range(A.flash_paths))
        with open(f"{W}/flash.nix", "w") as fh:
            fh.write(f"let {deps} in " + drv("flash-top", f"mkdir $out; {links}"))
        top = sh("nix-build", f"{W}/flash.nix", "--no-out-link", "--max-jobs", "2", "--option",
                 "build-users-group", "", "--option", "sandbox", "false").strip()
        flash = [top] + [p for p in sh("nix-store", "-qR", top).split() if p != top]
        sh("nix", "copy", "--no-check-sigs", "--to", master, top)
        subprocess.run(["nix-store", "--delete", *flash], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sh("nix", "store", "sign", "--store", master, "--key-file", f"{W}/sk", *flash)
    m = sqlite3.connect(f"{master}/nix/var/nix/db/db.sqlite")
    schema = [r[0] for r in m.execute("SELECT sql FROM sqlite_master WHERE sql NOT NULL AND name NOT LIKE 'sqlite_%'")]
    m.close()
    for n in range(A.nodes):
        root = f"{W}/node-{n}/root"
        os.makedirs(f"{root}/nix/var/nix/db")
        os.makedirs(f"{root}/nix/store")
        mine = base + own[n] + (flash if n == 0 else [])
        for p in mine:
            if os.path.isdir(f"{master}{p}"):
                shutil.copytree(f"{master}{p}", f"{root}{p}", symlinks=True, copy_function=os.link)
            else:
                os.link(f"{master}{p}", f"{root}{p}")
        with open(f"{root}/nix/var/nix/db/schema", "w") as fh:
            fh.write("10")
        db = sqlite3.connect(f"{root}/nix/var/nix/db/db.sqlite")
        for s in schema:
            db.execute(s)
        db.execute("ATTACH ? AS m", (f"{master}/nix/var/nix/db/db.sqlite",))
        db.executemany("INSERT INTO ValidPaths SELECT * FROM m.ValidPaths WHERE path = ?", [(p,) for p in mine])
        db.execute("INSERT INTO Refs SELECT r.* FROM m.Refs r WHERE r.referrer IN (SELECT id FROM ValidPaths) "
                   "AND r.reference IN (SELECT id FROM ValidPaths)")
        db.commit()
        db.close()
    return base, own, spares, flash


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


def start_node(n, args, name):
    """Starts daemon n; (proc, HTTP URL, p2p address)."""
    p, (url, addr) = start(name, args, [r"listening on (http://[0-9.:]+)", r"p2p listening on (/ip4/\S+/p2p/\w+)"])
    return p, url, addr


def realise(root, paths, substituters, pk, tag):
    """`nix-store --realise` of `paths` into the store at `root` from `substituters`, logging to
    WORK/nix-TAG.log; the running process."""
    return subprocess.Popen(["nix-store", "--store", root, "--realise", *paths, "--option", "substituters",
                             " ".join(substituters), "--option", "trusted-public-keys", pk],
                            stdout=subprocess.DEVNULL, stderr=open(f"{W}/nix-{tag}.log", "w"),
                            env={**os.environ, "XDG_CACHE_HOME": f"{W}/xdg-{tag}"})


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
    base, own, spares, flash = fixture()
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
    argv = []
    t0 = time.time()
    for n in range(A.nodes):
        boot = [a for _, _, a in nodes[:3]]
        args = ["serve", "--state-dir", f"{W}/node-{n}/state", "--store-root", f"{W}/node-{n}/root", *common]
        for b in boot or ["none"]:
            args += ["--bootstrap", b]
        argv.append(args)
        nodes.append(start_node(n, args, f"node-{n}"))
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

    if flash:
        flash_crowd(flash, urls, pk, rng)
    if A.churn_minutes:
        churn(argv, nodes, urls, pids, ids, own, pk, rng)

    # --- freshness and departure ---
    print("\n## freshness (a node gains a path; then goes silent, SIGSTOP)")
    print("| trial | node | all others 200 after s (p50 / max) | all others 404 after silence, s (p50 / max) |")
    print("|---|---|---|---|")
    m = sqlite3.connect(f"{W}/master/nix/var/nix/db/db.sqlite")
    alive = list(range(A.nodes))
    for trial, path in enumerate(spares):
        k = alive.pop(rng.randrange(len(alive)))
        cur = m.execute("SELECT * FROM ValidPaths WHERE path = ?", (path,))
        cols = [d[0] for d in cur.description if d[0] != "id"]
        row = dict(zip([d[0] for d in cur.description], cur.fetchone()))
        os.link(f"{W}/master{path}", f"{W}/node-{k}/root{path}")
        db = sqlite3.connect(f"{W}/node-{k}/root/nix/var/nix/db/db.sqlite")
        db.execute(f"INSERT INTO ValidPaths ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                   [row[c] for c in cols])
        db.commit()
        db.close()
        found = poll_all(alive, urls, hash32(path), 200, time.time())
        os.kill(pids[k], signal.SIGSTOP)
        gone = poll_all(alive, urls, hash32(path), 404, time.time())
        os.kill(pids[k], signal.SIGKILL)
        os.kill(pids[k], signal.SIGCONT)
        print(f"| {trial + 1} | {k} | {pct(found, 0.5):.2f} / {max(found):.2f} | {pct(gone, 0.5):.2f} / {max(gone):.2f} |")


def flash_crowd(flash, urls, pk, rng):
    """A.flash nodes realise the flash closure at once; node 0 holds it."""
    crowd = rng.sample(range(1, A.nodes), min(A.flash, A.nodes - 1))
    served = lambda k: status(urls[k])["requests"]["peer_bytes_served"]
    up0 = {k: served(k) for k in [0, *crowd]}
    t0 = time.time()
    running = {k: realise(f"{W}/node-{k}/root", flash[:1], [urls[k]], pk, f"flash-{k}") for k in crowd}
    took, failed = {}, []
    while running:
        for k, p in list(running.items()):
            if p.poll() is not None:
                took[k] = time.time() - t0
                if p.returncode:
                    failed.append(k)
                del running[k]
        time.sleep(0.02)
    total = time.time() - t0
    seeder = served(0) - up0[0]
    crowd_up = sum(served(k) - up0[k] for k in crowd)
    xs = [took[k] for k in crowd if k not in failed]
    size = A.flash_mb * 1e6
    print(f"\n## flash crowd: {len(crowd)} nodes realise one {A.flash_mb:.0f} MB closure ({len(flash)} paths) "
          "at once from node 0, each through its own daemon only")
    print("| total s | p50 s | p99 s | max s | p99 / p50 | failed | node 0 uploaded | the crowd uploaded |")
    print("|---|---|---|---|---|---|---|---|")
    if xs:
        print(f"| {total:.1f} | {pct(xs, 0.5):.1f} | {pct(xs, 0.99):.1f} | {max(xs):.1f} | "
              f"{pct(xs, 0.99) / pct(xs, 0.5):.2f} | {len(failed)} | {seeder / 1e6:.0f} MB = {seeder / size:.1f}× | "
              f"{crowd_up / 1e6:.0f} MB |")
    for k in failed[:3]:
        with open(f"{W}/nix-flash-{k}.log") as fh:
            log(f"flash: node {k} failed: {fh.read()[-600:]}")


def churn(argv, nodes, urls, pids, ids, own, pk, rng):
    """CHURN_FRAC of the nodes restart every minute while the others realise one-holder paths
    through their daemon, then an ordinary `file://` cache."""
    pool = [p for paths in own for p in paths[:40]]
    holder = {p: j for j, paths in enumerate(own) for p in paths[:40]}
    t0 = time.time()
    for k in range(0, len(pool), 2000):
        sh("nix", "copy", "--store", f"{W}/master", "--to", f"file://{W}/cache?compression=none", *pool[k:k + 2000],
           stderr=subprocess.DEVNULL)
    # Second after the daemon (priority 30), as cache.nixos.org (40) is: a file:// store without a
    # Priority in its nix-cache-info would come first (0).
    cache = f"file://{W}/cache?priority=50"
    log(f"churn: ordinary cache of {len(pool)} paths in {time.time() - t0:.0f} s")
    lock = threading.Lock()
    busy, down = set(), set()
    up_since = [0.0] * A.nodes
    have = [set() for _ in range(A.nodes)]
    runs, fails, sources, lookups, wrong = [], [], {"peerix": 0, "cache": 0}, [], [0]
    end = time.time() + A.churn_minutes * 60
    restarts = [0]

    def restarter():
        gen = 0
        while time.time() < end:
            minute = time.time() + 60
            with lock:
                out = rng.sample([n for n in range(A.nodes) if n not in busy], max(1, int(A.churn_frac * A.nodes)))
                down.update(out)
            for n in out:
                nodes[n][0].terminate()
            for n in out:
                try:
                    nodes[n][0].wait(20)
                except subprocess.TimeoutExpired:
                    nodes[n][0].kill()
                    nodes[n][0].wait()
            gen += 1
            for n in out:
                nodes[n] = start_node(n, argv[n], f"node-{n}-r{gen}")
                with lock:
                    urls[n], pids[n] = nodes[n][1], nodes[n][0].pid
                    up_since[n] = time.time()
                    down.discard(n)
                restarts[0] += 1
            time.sleep(max(0.0, minute - time.time()))

    def worker(w):
        r = random.Random(w)
        while time.time() < end:
            with lock:
                i = r.choice([n for n in range(A.nodes) if n not in busy and n not in down])
                busy.add(i)
                url = urls[i]
            left = [p for p in pool if holder[p] != i and p not in have[i]]
            if len(left) < 5:
                with lock:
                    busy.discard(i)
                continue
            paths = r.sample(left, 5)
            t = time.time()
            p = realise(f"{W}/node-{i}/root", paths, [url, cache], pk, f"churn-{w}")
            p.wait()
            with lock:
                busy.discard(i)
            runs.append(time.time() - t)
            with open(f"{W}/nix-churn-{w}.log") as fh:
                text = fh.read()
            if p.returncode:
                fails.append(text[-600:])
            else:
                have[i].update(paths)
                sources["peerix"] += text.count("from 'http://")
                sources["cache"] += text.count("from 'file://")

    def prober():
        r = random.Random(99)
        conns = {}
        while time.time() < end:
            with lock:
                i, j = r.sample([n for n in range(A.nodes) if n not in down], 2)
                url, settled = urls[i], time.time() - up_since[j] > 10 and j not in down
            c = conns.get(url) or conns.setdefault(url, Http(url))
            t = time.perf_counter()
            try:
                st, _ = c.get(f"/{hash32(r.choice(own[j]))}.narinfo", timeout=10)
            except OSError:
                st = None  # node i went down meanwhile
            if st is not None:
                lookups.append((time.perf_counter() - t) * 1000)
                with lock:
                    wrong[0] += st != 200 and settled and j not in down
            time.sleep(0.05)

    threads = [threading.Thread(target=restarter), threading.Thread(target=prober),
               *[threading.Thread(target=worker, args=(w,)) for w in range(A.churn_workers)]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"\n## churn: {A.churn_frac * 100:.0f} % of the nodes restart every minute for {A.churn_minutes:.0f} min "
          f"({restarts[0]} restarts) while {A.churn_workers} realisations of 5 one-holder paths run at once, "
          "substituters = the node's daemon, then a file:// cache")
    print("| realisations | failed | paths from peerix | from the cache | realise p50 s | p99 s | "
          "lookups | wrong (holder up ≥ 10 s) | lookup p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {len(runs)} | {len(fails)} | {sources['peerix']} | {sources['cache']} | {pct(runs, 0.5):.2f} | "
          f"{pct(runs, 0.99):.2f} | {len(lookups)} | {wrong[0]} | {pct(lookups, 0.5):.2f} | {pct(lookups, 0.99):.2f} |")
    for f in fails[:3]:
        log(f"churn: a realisation failed: {f}")


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
