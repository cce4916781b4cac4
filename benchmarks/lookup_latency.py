""" "Are my photos in it?" at MegaFace's size: lookups by account, photo id and URL in a 4.2M-row meta.sqlite.

    .venv/bin/python -m benchmarks.lookup_latency [--rows 4200000] [--queries 1000] [--naive-queries 20]

A synthetic meta.sqlite written by the store's own writer (index/store.py: ``MetadataWriter``,
the indexes a build makes): ~700k accounts with random NSIDs (``<8 digits>@N0<digit>``),
photos per account drawn with a mean of 6 (MegaFace: 4.2M photos of ~672k accounts), 10-digit
photo ids, rows in MegaFace's scan order (an account's photos together), licence and date.
Measured, each over ``--queries`` random queries (p50 / p99 / max, milliseconds):

- ``by NSID``, ``by photo id``, ``by URL``: what the lookup screen runs, ``index.lookup.lookup``
  (the text parsed, removals.jsonl stat()ed, the photo's rows and its account's rows from the
  indexes, removed rows masked, the count, the first 60 photos' entries), on a ``lookup.Source``
  opened as the kiosk opens it; ``--removed-accounts`` accounts (default 1000) are in the index's
  removals.jsonl, so the mask is applied as in an installation that honoured removal requests;
- the naive way in the same run: the same answer from SELECTs with SQLite's ``NOT INDEXED`` (a
  full scan of the table), ``--naive-queries`` of each (each reads every row);
- a missing account (the common answer at a kiosk), and a removed one;
- opening the lookup source as the kiosk does (``lookup.Source.open``: the manifest,
  ``store.Metadata``'s checks (quick_check, columns, indexes, row count), the removals).

And the build's metadata join at that size (index/photo_metadata.py): a 4.2M-row
``flickr_metadata.csv`` imported into SQLite and looked up per photo, next to the naive way of
reading it into a Python dict: seconds and resident memory of each. `uptime` before and after.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from index import flickr, lookup, photo_metadata, removals, store
from messages import DIM

LICENCES = ("All Rights Reserved", "CC BY 2.0", "CC BY-NC 2.0", "CC BY-NC-SA 2.0", "CC BY-ND 2.0", "CC BY-SA 2.0")


def accounts(rows: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Random NSIDs (sorted as the scan meets them), each account's photo count (mean ~6, sum ``rows``)
    and every row's photo id (unique, 10 digits)."""
    rng = np.random.default_rng(seed)
    counts = rng.geometric(1 / 6, size=rows // 5)
    counts = counts[: int(np.searchsorted(np.cumsum(counts), rows)) + 1]
    counts[-1] -= int(counts.sum()) - rows
    counts = counts[counts > 0]
    numbers = np.unique(rng.integers(10_000_000, 100_000_000, size=len(counts) * 2))
    numbers = rng.permutation(numbers)[: len(counts)]
    suffixes = rng.choice(np.array([0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]), size=len(counts))
    nsids = sorted(f"{n}@N0{s}" for n, s in zip(numbers, suffixes, strict=True))
    photo_ids = 1_000_000_000 + np.cumsum(rng.integers(1, 2_000, size=rows))
    rng.shuffle(photo_ids)
    return nsids, counts, photo_ids


def entries(nsids: list[str], counts: np.ndarray, photo_ids: np.ndarray, seed: int) -> Iterator[store.Entry]:
    rng = np.random.default_rng(seed + 1)
    licence = rng.integers(0, len(LICENCES), size=len(photo_ids))
    days = rng.integers(0, 3650, size=len(photo_ids))
    row = 0
    for nsid, n in zip(nsids, counts, strict=True):
        for _ in range(int(n)):
            pid = str(photo_ids[row])
            yield store.Entry(
                nsid,
                f"FlickrFinal2/{nsid[:3]}/{nsid}/{pid}_0.jpg",
                (10, 10, 110, 110),
                "",
                LICENCES[licence[row]],
                nsid=nsid,
                photo_id=pid,
                date_taken=str(np.datetime64("2005-01-01") + int(days[row])),
            )
            row += 1


def manifest(rows: int) -> store.Manifest:
    """The manifest Metadata checks its row count against (no shards are needed to look photos up)."""
    shard = store.ShardInfo("shard_000.npy", 0, rows, 0, "0" * 64)
    return store.Manifest(DIM, "float16", rows, rows, rows, (shard,), {}, {})


def write_manifest(folder: Path, rows: int) -> store.Manifest:
    """manifest.json as a build writes it, so the lookup source opens the folder as the kiosk does
    (store.read_manifest checks it key by key; the shard it names is never opened by a lookup)."""
    m = manifest(rows)
    (folder / "manifest.json").write_text(json.dumps(m.to_json()))
    return store.read_manifest(folder)


def naive_answer(con, text: str, limit: int = lookup.LIMIT) -> tuple[int, list]:
    """The lookup's count and photos without the indexes: every SELECT a full scan of the table."""
    q = flickr.parse_flickr_query(text)
    nsids = {q.nsid} if q.nsid else set()
    if q.photo_id:
        found = con.execute("SELECT nsid FROM entries NOT INDEXED WHERE photo_id = ?", [q.photo_id]).fetchall()
        nsids.update(n for (n,) in found if n)
    rows = []
    for nsid in sorted(nsids):
        rows += con.execute("SELECT * FROM entries NOT INDEXED WHERE nsid = ? ORDER BY row", [nsid]).fetchall()
    return len(rows), rows[:limit]


def timed(queries: list[str], ask: Callable[[str], object]) -> dict:
    took = []
    for q in queries:
        started = time.perf_counter()
        ask(q)
        took.append((time.perf_counter() - started) * 1000)
    return {
        "queries": len(queries),
        "p50_ms": round(float(np.percentile(took, 50)), 3),
        "p99_ms": round(float(np.percentile(took, 99)), 3),
        "max_ms": round(max(took), 3),
    }


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4_200_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--naive-queries", type=int, default=20)
    ap.add_argument("--removed-accounts", type=int, default=1000, help="accounts in removals.jsonl")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--dir", type=Path, default=None, help="where the synthetic files go (default: a temporary folder)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    print(f"uptime before: {uptime()}")
    folder = Path(tempfile.mkdtemp(prefix="lookup-latency-", dir=args.dir))
    out: dict = {"rows": args.rows, "uptime_before": uptime()}
    try:
        nsids, counts, photo_ids = accounts(args.rows, args.seed)
        out["accounts"] = len(nsids)
        started = time.monotonic()
        with store.MetadataWriter(folder / "meta.sqlite") as writer:
            writer.add(entries(nsids, counts, photo_ids, args.seed))
        out["write_s"] = round(time.monotonic() - started, 1)
        out["meta_sqlite_mb"] = round((folder / "meta.sqlite").stat().st_size / 1e6)
        print(
            f"{args.rows:,} rows of {len(nsids):,} accounts written in {out['write_s']} s "
            f"({out['meta_sqlite_mb']} MB with its indexes)"
        )
        rng = np.random.default_rng(args.seed + 2)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        gone = rng.choice(len(nsids), size=min(args.removed_accounts, len(nsids) // 2), replace=False)
        wanted = min(args.queries, len(nsids) - len(gone))
        kept = np.setdiff1d(np.arange(len(nsids)), gone)
        picked = rng.choice(kept, size=wanted, replace=False)
        by_nsid = [nsids[i] for i in picked]
        owner = rng.choice(kept, size=wanted, replace=False)
        rows = starts[owner] + rng.integers(0, counts[owner])
        by_photo = [str(photo_ids[r]) for r in rows]
        by_url = [f"https://www.flickr.com/photos/{nsids[o]}/{photo_ids[r]}/" for o, r in zip(owner, rows, strict=True)]
        missing = [f"{n}@N09" for n in rng.integers(10_000_000, 99_999_999, size=wanted)]
        removed = [nsids[i] for i in gone[:wanted]]

        written = write_manifest(folder, args.rows)
        here = removals.index_id(written)
        removals.write(
            folder,
            [
                removals.Removal(
                    "account",
                    nsids[i],
                    removals.now_utc(),
                    here,
                    tuple(range(int(starts[i]), int(starts[i] + counts[i]))),
                )
                for i in gone
            ],
        )
        out["removed_accounts"] = len(gone)
        out["removed_rows"] = int(counts[gone].sum())
        started = time.perf_counter()
        source = lookup.Source.open(folder)
        out["open_ms"] = round((time.perf_counter() - started) * 1000, 1)
        assert not source.unavailable, source.unavailable

        def ask(text: str) -> lookup.LookupAnswer:
            return lookup.lookup(source, text)

        check = ask(by_url[0])  # the lookups answer what was generated
        assert check.accounts == (nsids[owner[0]],) and check.total == counts[owner[0]], check
        assert check.photos[0].photo_id == by_photo[0] and check.photos[0].asked
        assert ask(missing[0]).kind == lookup.NONE  # @N09 is never generated
        if removed:
            assert ask(removed[0]).kind == lookup.NONE  # removed accounts are not found
        assert source.meta is not None
        con = source.meta._con  # the same connection, the same answer, without the indexes
        assert naive_answer(con, by_url[0])[0] == check.total

        n = args.naive_queries
        out["lookups"] = {
            "by NSID (indexed)": timed(by_nsid, ask),
            "by photo id (indexed)": timed(by_photo, ask),
            "by URL (indexed)": timed(by_url, ask),
            "missing account (indexed)": timed(missing, ask),
            "removed account (indexed)": timed(removed, ask) if removed else None,
            "by NSID (NOT INDEXED: full scan)": timed(by_nsid[:n], lambda t: naive_answer(con, t)),
            "by photo id (NOT INDEXED: full scan)": timed(by_photo[:n], lambda t: naive_answer(con, t)),
        }
        source.close()
        print(
            f"\nopening the lookup source (lookup.Source.open: store.Metadata's checks, {out['removed_accounts']:,} "
            f"removed accounts, {out['removed_rows']:,} rows): {out['open_ms']} ms"
        )
        print(f"{'index.lookup.lookup':40} {'queries':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for name, t in out["lookups"].items():
            if t is not None:
                print(f"{name:40} {t['queries']:>7} {t['p50_ms']:>8} {t['p99_ms']:>8} {t['max_ms']:>8}")
        print(f"uptime after the lookups: {uptime()}")

        # the build's join of a flickr_metadata.csv of the same size
        csv_path = folder / "flickr_metadata.csv"
        order = rng.permutation(args.rows)
        owners = np.repeat(np.arange(len(nsids)), counts)
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["photo_id", "nsid", "licence", "date_taken"])
            for r in order:
                w.writerow([photo_ids[r], nsids[owners[r]], LICENCES[r % len(LICENCES)], "2010-01-01"])
        lookups = [str(photo_ids[r]) for r in rng.choice(args.rows, size=min(100_000, args.rows), replace=False)]
        gc.collect()
        before = rss_mb()
        started = time.monotonic()
        table = photo_metadata.PhotoMetadata(csv_path, folder / photo_metadata.TABLE_FILE)
        imported = time.monotonic() - started
        grown = rss_mb() - before
        started = time.perf_counter()
        assert all(table.match(pid) is not None for pid in lookups)
        per_photo = (time.perf_counter() - started) / len(lookups) * 1e6
        table.close()
        gc.collect()
        before = rss_mb()
        started = time.monotonic()
        with open(csv_path, newline="") as f:
            reader = csv.reader(f)
            next(reader)
            held = {row[0]: (row[1], row[2], row[3]) for row in reader}
        loaded = time.monotonic() - started
        dict_grown = rss_mb() - before
        started = time.perf_counter()
        assert all(pid in held for pid in lookups)
        dict_per_photo = (time.perf_counter() - started) / len(lookups) * 1e6
        del held
        out["metadata_join"] = {
            "csv_rows": args.rows,
            "csv_mb": round(csv_path.stat().st_size / 1e6),
            "sqlite_import_s": round(imported, 1),
            "sqlite_rss_growth_mb": round(grown),
            "sqlite_lookup_us_per_photo": round(per_photo, 1),
            "dict_load_s": round(loaded, 1),
            "dict_rss_growth_mb": round(dict_grown),
            "dict_lookup_us_per_photo": round(dict_per_photo, 2),
        }
        j = out["metadata_join"]
        print(f"\njoining a {args.rows:,}-row flickr_metadata.csv ({j['csv_mb']} MB):")
        print(
            f"  SQLite table (the build's way): import {j['sqlite_import_s']} s, "
            f"resident memory +{j['sqlite_rss_growth_mb']} MB, {j['sqlite_lookup_us_per_photo']} µs per photo"
        )
        print(
            f"  Python dict (naive):            load {j['dict_load_s']} s, "
            f"resident memory +{j['dict_rss_growth_mb']} MB, {j['dict_lookup_us_per_photo']} µs per photo"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out["uptime_after"] = uptime()
    print(f"\nuptime after: {out['uptime_after']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
