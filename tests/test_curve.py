"""Shards on other hosts: CURVE keys on the shard topics, tested on loopback TCP with two key pairs.

The query side (detector's queries PUB, reducer's candidates PULL) binds as CURVE server and
lets in only its own certificate (the reducer's queries) and authorised matcher certificates;
an unknown key pair, or no CURVE at all, gets nothing through in either direction while the
authorised matcher works, and is logged on both ends. The last test follows RELIABILITY.md's
steps literally on the real graph.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

import config
from messages import TOPICS, curve, decode, encode, open_socket
from tests import factories
from tests.conftest import DEMO_CLIP, PROJECT


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """Certificates: the query side, an authorised matcher (a) and an unknown one (b)."""
    made = {}
    for name in ("server", "a", "b"):
        public, secret = zmq.auth.create_certificates(str(tmp_path), name)
        made[name], made[f"{name}_secret"] = Path(public), Path(secret)
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    shutil.copy(made["a"], authorized / "a.key")
    made["authorized"] = authorized
    return made


def _curve_cfg(keys: dict[str, Path], offset: int, who: str | None) -> config.Config:
    raw = config.load(PROJECT / "config" / "test.toml", env={}).copy()
    raw["network"] = {"transport": "tcp", "port_offset": offset}
    if who is not None:
        raw["curve"] = {
            "enabled": True,
            "secret_key_file": str(keys[f"{who}_secret"]),
            "server_key_file": str(keys["server"]),
            "authorized_keys_dir": str(keys["authorized"]),
        }
    else:
        raw.pop("curve", None)
    return config.validate(raw)


@pytest.mark.timeout(60)
def test_only_the_authorised_matcher_gets_through(keys):
    offset = factories.free_port_offset()
    server_ctx, ctxs = zmq.Context(), {name: zmq.Context() for name in ("a", "b", "plain")}
    server_cfg = _curve_cfg(keys, offset, "server")
    pub = open_socket(server_ctx, server_cfg, "queries", "detector", receiving=False)
    pull = open_socket(server_ctx, server_cfg, "candidates", "reducer", receiving=True)
    subs, pushes = {}, {}
    for name, ctx in ctxs.items():
        cfg = _curve_cfg(keys, offset, None if name == "plain" else name)
        subs[name] = open_socket(ctx, cfg, "queries", "matcher", receiving=True)
        pushes[name] = open_socket(ctx, cfg, "candidates", "matcher", receiving=False)
    assert pub.getsockopt(zmq.LAST_ENDPOINT).decode() == f"tcp://127.0.0.1:{TOPICS['queries'].port + offset}"
    got: dict[str, int] = {name: 0 for name in ctxs}
    pulled: set[str] = set()
    try:
        end = time.monotonic() + 20
        while time.monotonic() < end and (got["a"] < 20 or "a" not in pulled):
            pub.send_multipart(encode(factories.query(1)))
            for name, sub in subs.items():
                while sub.poll(0):
                    assert decode(sub.recv_multipart()).query_id == 1
                    got[name] += 1
                with contextlib.suppress(zmq.Again):  # each matcher hands the query side a tagged message
                    pushes[name].send_multipart([b"from", name.encode()], zmq.NOBLOCK)
            while pull.poll(50):
                pulled.add(pull.recv_multipart()[1].decode())
        assert got["a"] >= 20 and "a" in pulled, "the authorised matcher was not let in"
        assert got["b"] == 0 and got["plain"] == 0, f"a peer without the right key received queries: {got}"
        assert pulled == {"a"}, f"a peer without the right key delivered candidates: {pulled}"
    finally:
        for sock in [pub, pull, *subs.values(), *pushes.values()]:
            sock.close(0)
        curve.stop(server_ctx)
        for ctx in [server_ctx, *ctxs.values()]:
            ctx.term()


def test_exposing_the_shard_topics_needs_curve(keys):
    with pytest.raises(config.ConfigError, match=r"network.bind_host = '0.0.0.0' would expose"):
        config.validate({"network": {"bind_host": "0.0.0.0"}})
    with pytest.raises(config.ConfigError, match=r"curve.secret_key_file must be set"):
        config.validate({"curve": {"enabled": True}})
    no_server_key = _curve_cfg(keys, 0, "a")
    no_server_key["curve"]["server_key_file"] = ""
    with pytest.raises(config.ConfigError, match=r"curve.server_key_file must be set"):
        open_socket(zmq.Context.instance(), no_server_key, "queries", "matcher", receiving=True)
    public_only = _curve_cfg(keys, 0, "a")
    public_only["curve"]["secret_key_file"] = str(keys["a"])
    with pytest.raises(config.ConfigError, match="holds no secret key"):
        open_socket(zmq.Context.instance(), public_only, "queries", "matcher", receiving=True)


def test_other_topics_stay_on_loopback_whatever_bind_host_says(keys):
    cfg = _curve_cfg(keys, factories.free_port_offset(), "server")
    cfg["network"]["bind_host"] = "0.0.0.0"  # allowed with CURVE, for the shard topics only
    ctx = zmq.Context()
    try:
        frames = open_socket(ctx, cfg, "frames", "camera", receiving=False)
        queries = open_socket(ctx, cfg, "queries", "detector", receiving=False)
        assert frames.getsockopt(zmq.LAST_ENDPOINT).decode().startswith("tcp://127.0.0.1:")
        assert queries.getsockopt(zmq.LAST_ENDPOINT).decode().startswith("tcp://0.0.0.0:")
        assert queries.getsockopt(zmq.CURVE_SERVER) == 1 and frames.getsockopt(zmq.CURVE_SERVER) == 0
        frames.close(0)
        queries.close(0)
    finally:
        curve.stop(ctx)
        ctx.term()


def test_the_reducer_subscribes_to_queries_with_the_query_sides_own_certificate(keys):
    """The query side's config has no server_key_file: the reducer's queries connection uses the
    certificate it shares with the detector, and the detector's ZAP handler lets it in."""
    offset = factories.free_port_offset()
    cfg = _curve_cfg(keys, offset, "server")
    cfg["curve"]["server_key_file"] = ""
    detector_ctx, reducer_ctx = zmq.Context(), zmq.Context()
    pub = open_socket(detector_ctx, cfg, "queries", "detector", receiving=False)
    sub = open_socket(reducer_ctx, cfg, "queries", "reducer", receiving=True)
    try:
        end = time.monotonic() + 20
        while time.monotonic() < end and not sub.poll(50):
            pub.send_multipart(encode(factories.query(5)))
        assert sub.poll(0), "the reducer was refused its own side's queries"
        assert decode(sub.recv_multipart()).query_id == 5
    finally:
        pub.close(0)
        sub.close(0)
        for ctx in (detector_ctx, reducer_ctx):
            curve.stop(ctx)
            ctx.term()


@pytest.mark.timeout(60)
def test_a_refused_matcher_is_logged_on_both_ends_with_the_reason(keys, caplog):
    caplog.set_level("INFO", logger="curve")
    offset = factories.free_port_offset()
    server_ctx, matcher_ctx = zmq.Context(), zmq.Context()
    pub = open_socket(server_ctx, _curve_cfg(keys, offset, "server"), "queries", "detector", receiving=False)
    sub = open_socket(matcher_ctx, _curve_cfg(keys, offset, "b"), "queries", "matcher", receiving=True)
    b_public = zmq.auth.load_certificate(keys["b"])[0].decode()
    try:
        end = time.monotonic() + 20
        while time.monotonic() < end:
            texts = [r.getMessage() for r in caplog.records if r.name == "curve"]
            binding = [t for t in texts if "refused a peer on queries from 127.0.0.1" in t]
            refused = [t for t in texts if "refused this process" in t]
            if binding and refused:
                break
            time.sleep(0.05)
        assert binding and f"its public key {b_public} is not in curve.authorized_keys_dir" in binding[0], texts
        assert refused and f"its public key {b_public} must be in the query side's" in refused[0], texts
        assert not sub.poll(0)
        # Logged once a minute per peer, however often it reconnects.
        time.sleep(0.5)
        assert len([r for r in caplog.records if "refused a peer" in r.getMessage()]) == 1
    finally:
        pub.close(0)
        sub.close(0)
        for ctx in (server_ctx, matcher_ctx):
            curve.stop(ctx)
            ctx.term()


def test_the_refusal_log_is_throttled_per_peer():
    throttle = curve.Throttle(every_s=60)
    assert throttle("a", now=0.0) == 1
    assert throttle("a", now=1.0) == 0 and throttle("a", now=2.0) == 0
    assert throttle("b", now=2.0) == 1
    assert throttle("a", now=61.0) == 3  # the first report after a minute counts what was held back


# -- RELIABILITY.md's steps, literally, on the real graph -------------------------------------------


def _documented_curve_steps() -> tuple[str, str, str]:
    """The shell block and the two TOML blocks (query side, matcher host) of RELIABILITY.md's CURVE section."""
    text = (PROJECT / "RELIABILITY.md").read_text()
    section = text[text.index("## Remote shards") :]
    section = section[: section.index("\n## ", 1)]
    shell = re.findall(r"```sh\n(.*?)```", section, re.S)
    tomls = re.findall(r"```toml\n(.*?)```", section, re.S)
    query_side = next(t for t in tomls if t.startswith("# query side"))
    matcher_host = next(t for t in tomls if t.startswith("# matcher host"))
    return shell[0], query_side, matcher_host


def _on_loopback(documented: str, keys_home: Path, offset: int) -> str:
    """A documented TOML block with loopback for its addresses, the keys where the test made them and
    free ports: the only changes the test makes."""
    out = re.sub(r'"(0\.0\.0\.0|10\.0\.0\.5)"', '"127.0.0.1"', documented)
    out = out.replace('"keys/', f'"{keys_home}/keys/')
    return out.replace("[network]\n", f"[network]\nport_offset = {offset}\n")


def _first_complete_obama(results: list[dict]) -> bool:
    best = results[-1]
    return not best["partial"] and bool(best["results"]) and best["results"][0]["identity"] == "barack_obama"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_documented_curve_setup_works_on_the_real_graph(demo_index: Path, tmp_path: Path):
    from benchmarks.graph import Graph, logged

    shell, query_side, matcher_host = _documented_curve_steps()
    venv = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["bash", "-euc", shell], cwd=tmp_path, env={**os.environ, **venv}, check=True, timeout=60)
    assert (tmp_path / "keys" / "matchers" / "matcher1.key").exists()
    # An intruder: a certificate made the same way but never put in keys/matchers.
    subprocess.run(
        [sys.executable, "-c", 'import zmq.auth; zmq.auth.create_certificates("keys", "intruder")'],
        cwd=tmp_path,
        check=True,
    )
    offset = factories.free_port_offset()
    test_settings = (PROJECT / "config" / "test.toml").read_text()
    configs = {}
    for name, block in (("query-side", query_side), ("matcher-host", matcher_host)):
        configs[name] = tmp_path / f"{name}.toml"
        configs[name].write_text(test_settings + "\n" + _on_loopback(block, tmp_path, offset))
    intruder = tmp_path / "intruder.toml"
    intruder.write_text(configs["matcher-host"].read_text().replace("matcher1.key_secret", "intruder.key_secret"))
    for path in (*configs.values(), intruder):
        assert config.load(path, env={})["curve"]["enabled"]
    env = {
        "MEGAPIXELS_CONFIG": str(configs["query-side"]),
        "MEGAPIXELS_INDEX": str(demo_index),
        "MEGAPIXELS_SOURCE": str(DEMO_CLIP),
        "MEGAPIXELS_HEADLESS": "1",
        "MEGAPIXELS_IPC_DIR": "",  # TCP, as between hosts
    }
    graph = Graph(env)
    try:
        for name in ("camera.1", "detector.1", "encoder.1", "reducer.1", "display.1"):
            graph.start(name)
        graph.start("matcher.1", MEGAPIXELS_CONFIG=str(configs["matcher-host"]))
        graph.results(_first_complete_obama, 150)
        assert graph.wait_for(logged("matcher.1", "shards 0,1 of 2"), "the matcher's shards", 5, since=0)

        # A matcher with an unknown certificate: refused on both topics, logged on both ends.
        graph.start("matcher.2", MEGAPIXELS_CONFIG=str(intruder), MEGAPIXELS_SHARD="0")
        intruder_key = zmq.auth.load_certificate(tmp_path / "keys" / "intruder.key")[0].decode()
        for actor, topic in (("detector.1", "queries"), ("reducer.1", "candidates")):
            line = graph.wait_for(logged(actor, f"refused a peer on {topic}"), f"{actor}'s refusal", 60, since=0)
            assert f"its public key {intruder_key} is not in curve.authorized_keys_dir" in line, line
            print(actor, "|", line)
        line = graph.wait_for(logged("matcher.2", "refused this process"), "the intruder's own log", 30, since=0)
        assert intruder_key in line, line
        print("matcher.2 |", line)
        results = graph.results(lambda r: len(r) >= 3, 60)
        assert all(not r["partial"] for r in results[-3:]), "the intruder must not be let in to add candidates"

        # Every matcher down: the reducer, which gets the queries itself, still answers, partially.
        graph.kill("matcher.1")
        graph.kill("matcher.2")
        partial = graph.results(lambda r: r[-1]["partial"], 60)[-1]
        assert partial["missing_shards"] == [0, 1] and partial["results"] == []
        graph.wait_for(logged("reducer.1", "is missing from results"), "the reducer's warning", 60, since=0)
    finally:
        graph.stop_all()
