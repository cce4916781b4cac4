"""How fast a removal takes effect in a running graph: from `index remove` to the first answer without the person.

    .venv/bin/python -m benchmarks.optout --removals 10 --rate 50
    .venv/bin/python -m benchmarks.optout --removals 10 --hog 4      # beside 4 busy loops
    .venv/bin/python -m benchmarks.optout --sql-rows 4200000         # what resolving a removal costs at 4.2M rows

Runs the Procfile's matcher and reducer (benchmarks/graph.py, ipc sockets in a private folder) on
a copy of the index, and sends them one query every 1/rate s (a real gallery row's descriptor with
a little noise, as the detector would) while reading ``matches`` as the display does. For each of
the first ``--removals`` identities in turn it queries one of its rows until the person is shown,
removes the identity (``index.optout.remove``, what the command runs) and measures, from the
moment the removals file was written, how long until the first answer without that identity
arrives; it also counts answers that still named the person although their query was sent after
the file was written (there should be none: a matcher checks the file before every batch).
Nothing is restarted. The command line itself (a Python start-up and the write) is timed once,
separately. ``--sql-rows N`` instead times, on a MegaFace-shaped meta.sqlite of N rows (6 photos
per account), what a removal costs to resolve in the metadata (by identity: indexed; by photo:
one scan, the photo column has no index) and to count the people it removes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

import config
from benchmarks.graph import Graph, hog, logged
from config.loader import PROJECT_ROOT as PROJECT
from index import optout, store
from messages import Headers, Query, decode, encode, open_socket


def measure(index_dir: Path, n_removals: int, rate_hz: float, hogs: int = 0) -> dict:
    work = Path(tempfile.mkdtemp(prefix="optout-", dir="/tmp"))
    index = work / "idx"
    shutil.copytree(index_dir, index)
    ipc_dir = work / "ipc"
    ipc_dir.mkdir()
    env = {
        "MEGAPIXELS_CONFIG": str(PROJECT / "config" / "test.toml"),
        "MEGAPIXELS_IPC_DIR": str(ipc_dir),
        "MEGAPIXELS_INDEX": str(index),
    }
    manifest = store.read_manifest(index)
    stored, _ = store.open_shard(index, 0, manifest=manifest)
    meta = store.Metadata(index, manifest)
    entries = meta.lookup(list(range(min(manifest.real, len(stored)))))
    meta.close()
    targets: dict[str, int] = {}  # one row of each of the first identities: its own descriptor finds it
    for row in sorted(entries):
        targets.setdefault(entries[row].identity, row)
    targets = dict(list(targets.items())[:n_removals])
    rng = np.random.default_rng(1)
    descriptor = store.decode_rows(np.asarray(stored[:1]), manifest.codec)[0]
    graph = Graph(env)
    ctx = zmq.Context()
    cfg = config.load(env=env)
    pub = open_socket(ctx, cfg, "queries", "detector", receiving=False)
    sub = open_socket(ctx, cfg, "matches", "display", receiving=True)
    headers = Headers("benchmark")
    sent: dict[int, float] = {}
    qid = 0
    out: dict = {"effect_s": [], "stale_after_write": 0, "command_s": [], "answers": 0}

    def pump(until: float) -> list[tuple[float, object]]:
        """Send queries at the rate and collect (arrival, matches) until ``until``."""
        nonlocal qid
        got = []
        next_send = time.monotonic()
        while (now := time.monotonic()) < until:
            if now >= next_send:
                qid += 1
                noisy = (descriptor + rng.normal(0, 0.005, descriptor.shape)).astype("<f4")
                pub.send_multipart(encode(Query(headers.next(qid), qid, time.monotonic_ns(), 5, noisy.tobytes())))
                sent[qid] = now
                next_send += 1 / rate_hz
            if sub.poll(max(0.0, min(next_send, until) - time.monotonic()) * 1000):
                got.append((time.monotonic(), decode(sub.recv_multipart(), expect="matches")))
        while not graph.lines.empty():
            graph.history.append(graph.lines.get_nowait())
        return got

    with hog(hogs):
        graph.start("matcher.1")
        graph.start("reducer.1")
        try:
            graph.wait_for(logged("matcher.1", "shards "), "the matcher", 120)
            for person, row in targets.items():
                descriptor = store.decode_rows(np.asarray(stored[row : row + 1]), manifest.codec)[0]
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:  # until the person is shown (the sockets joined at first)
                    got = pump(time.monotonic() + 0.2)
                    if any(r.identity == person for _, m in got for r in m.results):
                        break
                else:
                    raise RuntimeError(f"{person} not found within 120 s:\n{graph.transcript()}")
                started = time.monotonic()
                optout.remove(index, "identity", person)
                written = time.monotonic()
                out["command_s"].append(written - started)
                effect = None
                end = written + 10
                while effect is None and time.monotonic() < end:
                    for arrived, m in pump(min(end, time.monotonic() + 0.05)):
                        named = any(r.identity == person for r in m.results)  # [] at scale: synthetic look-alikes
                        out["answers"] += 1
                        if named and sent.get(m.query_id, 0) > written:
                            out["stale_after_write"] += 1
                        if not named and effect is None:
                            effect = arrived - written
                if effect is None:
                    raise RuntimeError(f"{person} still shown 10 s after the removal:\n{graph.transcript()}")
                out["effect_s"].append(effect)
                for _, m in pump(time.monotonic() + 0.2):  # a few more answers, checked for stale ones
                    out["stale_after_write"] += any(r.identity == person for r in m.results)
            cli_started = time.monotonic()
            cli = subprocess.run(
                [str(Path(sys.executable).parent / "megapixels"), "index", "remove", str(index), "--identity", "X"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            out["cli_s"] = time.monotonic() - cli_started
            if cli.returncode != 0 or json.loads(cli.stdout)["rows_matched"] != 0:
                raise RuntimeError(f"megapixels index remove failed: {cli.stderr}")
        finally:
            pub.close(0)
            sub.close(0)
            ctx.term()
            graph.stop_all()
            shutil.rmtree(work, ignore_errors=True)
    return out


def sql_costs(n_rows: int) -> None:
    """Time resolving removals against a MegaFace-shaped metadata table of ``n_rows`` rows."""
    import sqlite3

    from index import removals
    from index.removals import Removal

    work = Path(tempfile.mkdtemp(prefix="optout-sql-", dir="/tmp"))
    try:
        entries = [
            store.Entry(
                f"{i // 6:08d}@N01", f"FlickrFinal2/{i // 6 % 1000:03d}/{i // 6:08d}@N01/{i}_0.jpg", (1, 2, 3, 4)
            )
            for i in range(n_rows)
        ]
        started = time.monotonic()
        store._write_metadata(work / "meta.sqlite", entries)
        written = time.monotonic() - started
        del entries
        con = sqlite3.connect(work / "meta.sqlite")
        account = f"{n_rows // 12:08d}@N01"
        for removal in (
            Removal("identity", account, ""),
            Removal("account", account, ""),
            Removal("photo", f"FlickrFinal2/{n_rows // 12 % 1000:03d}/{account}/{n_rows // 2}_0.jpg", ""),
        ):
            started = time.monotonic()
            (rows,) = removals.resolve(con, [removal])
            took = time.monotonic() - started
            print(f"{n_rows:,} rows: resolve --{removal.kind}: {1000 * took:.1f} ms ({len(rows)} rows)")
        many = np.arange(0, n_rows, max(1, n_rows // 10_000))
        started = time.monotonic()
        people = removals.people_removed(con, many)
        print(
            f"{n_rows:,} rows: people wholly removed among {len(many):,} removed rows: {people}, "
            f"{1000 * (time.monotonic() - started):.0f} ms"
        )
        con.close()
        print(f"(writing the table took {written:.0f} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=PROJECT / "build" / "demo-index-2shards")
    parser.add_argument("--removals", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50.0, help="queries per second")
    parser.add_argument("--hog", type=int, default=0, help="busy-loop processes beside the graph")
    parser.add_argument("--sql-rows", type=int, default=0, help="time resolving removals in a table this big")
    args = parser.parse_args()
    if args.sql_rows:
        sql_costs(args.sql_rows)
        return 0
    if not (args.index / "manifest.json").exists():
        from index import build

        build.build(PROJECT / "demo" / "gallery", args.index, n_shards=2)
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    started = time.monotonic()
    imported = subprocess.run([sys.executable, "-c", "import index.cli"], timeout=60, cwd=PROJECT).returncode == 0
    import_s = time.monotonic() - started
    r = measure(args.index, args.removals, args.rate, args.hog)
    ms = [1000 * s for s in r["effect_s"]]
    print(
        f"opt-out under a running matcher + reducer ({args.index}, {store.read_manifest(args.index).count} rows, "
        f"{args.rate:g} queries/s, {args.hog} hog processes; load before {' '.join(load_before)}, "
        f"after {' '.join(Path('/proc/loadavg').read_text().split()[:3])})"
    )
    print(
        f"removal written -> first answer without the person, over {len(ms)} removals: "
        f"min {min(ms):.0f} ms, median {statistics.median(ms):.0f} ms, max {max(ms):.0f} ms "
        f"(one query every {1000 / args.rate:.0f} ms)"
    )
    print(f"answers still naming a removed person to a query sent after the write: {r['stale_after_write']}")
    print(
        f"index.optout.remove itself: median {1000 * statistics.median(r['command_s']):.1f} ms; "
        f"the `megapixels index remove` command, Python start-up included: {r['cli_s']:.2f} s "
        f"(importing index.cli alone: {import_s:.2f} s{'' if imported else ', failed'})"
    )
    return 0 if r["stale_after_write"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
