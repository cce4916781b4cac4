"""The operator's opt-out commands: ``megapixels index remove`` and ``megapixels index compact``.

:func:`remove` records a removal beside the shards (index/removals.py says how it is recorded and
who honours it, within a second, without a restart). :func:`compact` writes the index again
without the removed rows, through the build's staging folder and atomic swap (index/publish.py):

- the shards keep their dtype (the stored bytes are copied, never decoded and encoded again, so
  every remaining row, synthetic rows included, is bit for bit what it was), their count and the
  int8 range; rows are renumbered in order;
- meta.sqlite keeps every column and index it had (whatever a newer build adds), the removed rows
  left out; the manifest keeps the build parameters and the provenance, with a ``compactions``
  entry (when, how many rows); calibration.json and the distractor model are copied;
- the build journal loses the lines of removed photos (their descriptors are then on no disk of
  the index, and no later build can reuse them), and build_report.json the removed photos'
  entries; removals.jsonl is kept (carried by the publishing step): the removals still apply to
  later builds of the same --out.

A compaction holds the build lock (a build of the same --out refuses meanwhile, and the other way
round); a removal may land while it runs: it is carried into the compacted index and honoured there.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from index import journal, publish, removals, store
from index.removals import Removal

COPY_BLOCK_ROWS = 262_144  # rows copied at a time (32 MiB of float16)


def photo_key(text: str, dataset_root: str) -> str:
    """The photo path as the index stores it (relative to the dataset root) from what the operator
    typed: that stored path itself, or a path to the file inside the dataset."""
    path = Path(text)
    root = Path(dataset_root).resolve() if dataset_root else None
    if path.is_absolute() or path.exists():
        full = path.resolve()
        if root is not None and full.is_relative_to(root):
            return full.relative_to(root).as_posix()
        if path.is_absolute():
            raise ValueError(f"--photo {text} is not inside the dataset this index was built from ({dataset_root})")
    return Path(text).as_posix().removeprefix("./")


def remove(index_dir: Path, kind: str, value: str) -> dict[str, Any]:
    """Record the removal of what ``kind`` (account, identity, photo) and ``value`` select in the
    index at ``index_dir``; what was asked, when, and how many rows it removed.

    ValueError for a bad argument, IndexStoreError for a folder that is no usable index; a removal
    that selects nothing is recorded all the same (a later build will not add those photos).
    """
    if kind not in removals.KINDS:
        raise ValueError(f"remove by {kind!r}: allowed {', '.join(removals.KINDS)}")
    value = value.strip()
    if not value:
        raise ValueError(f"--{kind} must not be empty")
    out = publish.target(index_dir)
    store.Metadata(out, store.read_manifest(out)).close()  # no usable index: named before anything is written
    with removals.Lock(out):  # the index can't be swapped meanwhile: the line lands in the one published
        manifest = store.read_manifest(out)
        if kind == "photo":
            value = photo_key(value, manifest.dataset_root)
        here = removals.index_id(manifest)
        con = removals.open_metadata(out)
        if con is None:
            raise store.IndexStoreError(f"{out / 'meta.sqlite'} does not exist: rebuild the index")
        try:
            earlier = removals.read(out)
            # Lines recorded for another index (a copied file) are resolved for this one, once.
            foreign = [r for r in earlier if r.index != here]
            again = iter(removals.resolve(con, foreign))
            earlier = [
                r if r.index == here else dataclasses.replace(r, index=here, rows=tuple(next(again))) for r in earlier
            ]
            before = removals.removed_rows(earlier, here, manifest.real, con)
            line = Removal(kind, value, removals.now_utc(), here)
            (rows,) = removals.resolve(con, [line])
            against = removals.account_column(removals.meta_columns(con)) if kind == "account" else kind
        finally:
            con.close()
        line = dataclasses.replace(line, rows=tuple(rows))
        removals.write(out, [*earlier, line])
    new = np.setdiff1d(np.asarray(rows, np.int64), before)
    return {
        "index": str(out),
        "asked": {kind: value},
        "at": line.at,
        "matched_against": against,  # "identity" for --account when the metadata has no nsid column
        "rows_matched": len(rows),
        "rows_removed": len(new),
        "rows_removed_in_all": len(before) + len(new),
    }


def compact(index_dir: Path, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write the index at ``index_dir`` again without its removed rows and swap it in atomically.

    Returns what it did; nothing is written when no row is removed.
    """
    started = time.monotonic()
    out = publish.target(index_dir)
    store.read_manifest(out)  # a folder that is no index is named before a lock file is made beside it
    with publish.BuildLock(out):
        manifest = store.verify(out)  # every part, as the matchers open it
        con = removals.open_metadata(out)
        assert con is not None  # verify() opened it
        try:
            asked = removals.read(out)
            gone = removals.removed_rows(asked, removals.index_id(manifest), manifest.real, con)
        finally:
            con.close()
        summary: dict[str, Any] = {"index": str(out), "rows_before": manifest.count, "rows_removed": len(gone)}
        if not len(gone):
            return {**summary, "rows_after": manifest.count, "written": False}
        if len(gone) == manifest.real:
            raise ValueError(f"every real row of {out} is removed: nothing would be left to show; build a new index")
        staging = publish.prepare_staging(out)
        if log:
            log(f"compacting in {staging}; published as {out} once complete and checked")
        new = write_compacted(out, staging, manifest, gone, asked)
        publish.publish(staging, out)  # carries removals.jsonl, including removals made meanwhile
    return {
        **summary,
        "rows_after": new.count,
        "identities_before": manifest.identities,
        "identities_after": new.identities,
        "written": True,
        "seconds": round(time.monotonic() - started, 2),
    }


def write_compacted(
    out: Path, staging: Path, manifest: store.Manifest, gone: np.ndarray, asked: list[Removal]
) -> store.Manifest:
    """The index at ``out`` without the rows ``gone`` (sorted real rows), written into ``staging``."""
    keep = np.ones(manifest.count, bool)
    keep[gone] = False
    count, real = manifest.count - len(gone), manifest.real - len(gone)
    shards = _copy_rows(out, staging, manifest, keep, count)
    identities = _copy_metadata(out / "meta.sqlite", staging / "meta.sqlite", gone)
    for name in ("calibration.json", manifest.synthetic.model_file if manifest.synthetic else ""):
        if name and (out / name).is_file():
            shutil.copyfile(out / name, staging / name)
    _copy_journal(out, staging, asked)
    _copy_report(out, staging, asked, real, identities)
    compactions = [
        *manifest.provenance.get("compactions", []),
        {"at": removals.now_utc(), "rows_removed": len(gone), "rows_before": manifest.count},
    ]
    new = dataclasses.replace(
        manifest,
        count=count,
        real=real,
        identities=identities,
        shards=tuple(shards),
        provenance={**manifest.provenance, "compactions": compactions},
        synthetic=dataclasses.replace(manifest.synthetic, start=real, stop=count) if manifest.synthetic else None,
        codes=None,
    )
    new = dataclasses.replace(new, codes=store.write_codes(staging, new))  # the bounded kernel's codes, anew
    store.write_manifest(staging, new)
    return new


def _copy_rows(out: Path, staging: Path, manifest: store.Manifest, keep: np.ndarray, count: int) -> list:
    """The kept stored rows, in order, into as many shards as before (their bytes, not decoded)."""

    def kept_blocks():
        for k in range(len(manifest.shards)):
            stored, first = store.open_shard(out, k, verify=False, manifest=manifest)  # verified by the caller
            for at in range(0, len(stored), COPY_BLOCK_ROWS):
                block = stored[at : at + COPY_BLOCK_ROWS]
                yield np.asarray(block[keep[first + at : first + at + len(block)]])
            del stored

    blocks = kept_blocks()
    pending: np.ndarray | None = None
    shards = []
    for k, (start, stop) in enumerate(store.split(count, len(manifest.shards))):
        writer = store.ShardWriter(staging / f"shard_{k:03d}.npy", stop - start, manifest.dtype)
        need = stop - start
        while need:
            if pending is None or not len(pending):
                pending = next(blocks)
                continue
            part, pending = pending[:need], pending[need:]
            writer.add(part)
            need -= len(part)
        shards.append(store.ShardInfo(start=start, stop=stop, **writer.close()))
    return shards


def _copy_metadata(src: Path, dst: Path, gone: np.ndarray) -> int:
    """meta.sqlite without the rows ``gone``, renumbered in order, with every column and index it
    had; the number of identities left."""
    dst.unlink(missing_ok=True)
    con = sqlite3.connect(dst)
    try:
        con.execute("ATTACH DATABASE ? AS old", (str(src),))  # only read
        schema = con.execute("SELECT type, sql FROM old.sqlite_master WHERE tbl_name = 'entries' AND sql IS NOT NULL")
        statements: dict[str, list[str]] = {"tables": [], "indexes": []}
        for kind, sql in schema:
            statements["tables" if kind == "table" else "indexes"].append(sql)
        columns = [row[1] for row in con.execute("PRAGMA old.table_info(entries)")]
        others = ", ".join(f'"{c}"' for c in columns if c != "row")
        with con:
            for sql in statements["tables"]:
                con.execute(sql)
            con.execute("CREATE TEMP TABLE gone (row INTEGER PRIMARY KEY)")
            con.executemany("INSERT INTO gone VALUES (?)", ((int(r),) for r in gone))
            con.execute(
                f"INSERT INTO main.entries (row, {others}) SELECT ROW_NUMBER() OVER (ORDER BY row) - 1, {others} "
                "FROM old.entries WHERE row NOT IN (SELECT row FROM temp.gone) ORDER BY row"
            )
            for sql in statements["indexes"]:
                con.execute(sql)
        (identities,) = con.execute("SELECT COUNT(DISTINCT identity) FROM main.entries").fetchone()
        con.execute("DETACH DATABASE old")
    finally:
        con.close()
    return int(identities)


def _gone(asked: list[Removal], identity: str, photo: str) -> bool:
    account = removals.photo_account(identity, photo)
    return any(removals.selects(r, identity, photo, account) for r in asked)


def _copy_journal(out: Path, staging: Path, asked: list[Removal]) -> None:
    """The index's journal without the lines of removed photos (their descriptors leave the disk)."""
    (staging / journal.FILENAME).unlink(missing_ok=True)
    lines = journal.read(out / journal.FILENAME, repair=False)
    with journal.Writer(staging / journal.FILENAME) as writer:
        for outcome in lines.values():
            if not _gone(asked, outcome.identity, outcome.photo):
                writer.append(outcome)


def _copy_report(out: Path, staging: Path, asked: list[Removal], real: int, identities: int) -> None:
    """build_report.json without the removed photos (a folder dataset's identity is the photo's folder)."""
    try:
        report = json.loads((out / "build_report.json").read_text())
    except (OSError, json.JSONDecodeError):
        return
    if not isinstance(report, dict):
        return

    def kept(photo: Any) -> bool:
        return not (isinstance(photo, str) and _gone(asked, Path(photo).parent.name, photo))

    if isinstance(report.get("rejected_files"), list):
        report["rejected_files"] = [
            f for f in report["rejected_files"] if not isinstance(f, dict) or kept(f.get("photo"))
        ]
    if isinstance(report.get("several_faces_kept_largest"), list):
        report["several_faces_kept_largest"] = [p for p in report["several_faces_kept_largest"] if kept(p)]
    report.update(indexed=real, identities=identities)
    report["compacted_at"] = removals.now_utc()
    (staging / "build_report.json").write_text(json.dumps(report, indent=2))
