"""Shards on other hosts: CURVE keys on the shard topics, tested on loopback TCP with two key pairs.

The query side (detector's queries PUB, reducer's candidates PULL) binds as CURVE server and
lets in only authorised matcher certificates; an unknown key pair, or no CURVE at all, gets
nothing through in either direction while the authorised matcher works.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

import config
from messages import TOPICS, curve, decode, encode, open_socket
from tests import factories
from tests.conftest import PROJECT


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
