"""The kiosk's verdicts on whole clips: the real actor graph replaying a clip against an index.

Runs the Procfile's camera, detector, encoder, two matchers, reducer and headless display
(``benchmarks.graph``; ipc sockets in a private folder) on each clip, with a config (default
``config/demo.toml``) and an index (default the demo index), until ``--results`` result lists
have been printed. For each clip it reports the share of result lists whose best match was told
"likely you": by the graph itself (the index's calibration.json, the config's
``index.enrolled_share``), and, recomputed from the same lists (``index.calibration``, no
synthetic rows hidden in them), by another calibration file (``--before``: main's per-distance
model, at its prior 0.5) and by the graph's model at other priors.

    python -m benchmarks.accuracy.clips --before /tmp/main_calibration.json \\
        demo/clips/obama_2s.mp4 ../shared/data/clips/ocasio_cortez_8s.mp4 ../shared/data/clips/katie_hill_8s.mp4
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.graph import Graph
from config import loader
from index import calibration, store

PROJECT = Path(__file__).resolve().parents[2]
MATCHERS = 2  # honcho start -c matcher=2, as the run


def run_clip(clip: Path, index_dir: Path, config_file: Path, results: int, deadline_s: float) -> list[dict]:
    """The headless display's result lists for one clip, from the real graph."""
    with tempfile.TemporaryDirectory(prefix="mp-clips-") as ipc:
        env = {
            "MEGAPIXELS_CONFIG": str(config_file),
            "MEGAPIXELS_IPC_DIR": ipc,
            "MEGAPIXELS_INDEX": str(index_dir),
            "MEGAPIXELS_SOURCE": str(clip),
            "MEGAPIXELS_HEADLESS": "1",
        }
        graph = Graph(env, matchers=MATCHERS)
        try:
            for name in graph.names:
                if not name.startswith("printer"):
                    graph.start(name)
            return graph.results(lambda found: len(found) >= results, deadline_s)[:results]
        finally:
            graph.stop_all()


def shares(lists: list[dict], judge) -> dict:
    """Share of result lists whose best match ``judge`` calls "likely you", and the identities it named."""
    said = [judge(r["results"]) for r in lists if r["results"]]
    likely = [who for who in said if who]
    return {"lists": len(said), "likely_you": len(likely) / max(1, len(said)), "named": dict(Counter(likely))}


def judge_with(cal: calibration.Calibration, n_rows: int, prior: float):
    """A judge: the best result's identity when ``cal`` at ``prior`` says "likely you", else None."""

    def judge(results: list[dict]) -> str | None:
        ordered = sorted(results, key=lambda r: r["distance"])
        p = calibration.p_same(cal, [r["distance"] for r in ordered], [r["identity"] for r in ordered], n_rows, prior)
        return ordered[0]["identity"] if calibration.verdict(p[0]) == calibration.LIKELY_YOU else None

    return judge


def graph_judge(results: list[dict]) -> str | None:
    best = min(results, key=lambda r: r["distance"])
    return best["identity"] if best["verdict"] == calibration.LIKELY_YOU else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="+", type=Path)
    ap.add_argument("--index", type=Path, default=PROJECT / "build" / "demo-index-2shards")
    ap.add_argument("--config", type=Path, default=loader.CONFIG_DIR / "demo.toml")
    ap.add_argument("--before", type=Path, help="a calibration file to judge the same lists with, at prior 0.5")
    ap.add_argument("--results", type=int, default=130)
    ap.add_argument("--deadline-s", type=float, default=300)
    ap.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "clips.json")
    a = ap.parse_args(argv)

    cal = calibration.load(a.index)
    if cal is None:
        raise SystemExit(f"{a.index} has no {calibration.FILENAME}")
    n_rows = store.read_manifest(a.index).count
    prior = loader.load(a.config, env={})["index"]["enrolled_share"]
    kiosk = loader.SETTINGS["index"]["enrolled_share"].default
    judges = {
        f"graph (prior {prior:g})": graph_judge,
        f"this model, kiosk prior {kiosk:g}": judge_with(cal, n_rows, kiosk),
        "this model, prior 0.5": judge_with(cal, n_rows, 0.5),
    }
    if a.before:
        before = replace(calibration.read(a.before), neighbourhood=None)
        judges["before (prior 0.5)"] = judge_with(before, n_rows, 0.5)
    out: dict = {"index": str(a.index), "rows": n_rows, "config": str(a.config), "clips": {}}
    for clip in a.clips:
        lists = run_clip(clip.resolve(), a.index.resolve(), a.config.resolve(), a.results, a.deadline_s)
        best = [min(r["results"], key=lambda x: x["distance"]) for r in lists if r["results"]]
        row = {name: shares(lists, j) for name, j in judges.items()}
        row["best_distance"] = {
            "median": float(np.median([b["distance"] for b in best])),
            "min": float(min(b["distance"] for b in best)),
            "max": float(max(b["distance"] for b in best)),
        }
        row["best_identity"] = dict(Counter(b["identity"] for b in best))
        out["clips"][clip.name] = row
        print(f"{clip.name}: {json.dumps(row)}", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
