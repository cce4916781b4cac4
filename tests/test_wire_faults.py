"""Faults on the wire and around it: stray peers, a second graph on the same ports, a killed honcho.

- Every endpoint the graph binds (taken from the topic registry, so a new topic is covered
  without touching this file) gets malformed traffic of every kind: bare DEALER frames, an empty
  frame, an oversized one, a wrong envelope, REQ garbage, PUSH garbage, random bytes over raw
  TCP, a bogus ZMTP greeting, a greeting whose READY command claims 4 GB, half a greeting left
  hanging, a subscriber that never reads. The graph keeps publishing, still answers requests,
  and every actor stops within a second of SIGTERM with those connections still open.
- A second instance of a binding actor on the same addresses exits with code 2 and
  "address in use: ... — is another graph running?", before it has connected anything.
- SIGKILL to honcho: every actor notices its supervisor is gone and stops.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

import config
from actors import runtime
from actors.camera import replay_control
from benchmarks.graph import Graph, display_results, holds, logged
from messages import TOPICS, BindError, PrintJob, encode, open_socket
from messages.inbox import Inbox
from messages.sockets import address
from tests import factories
from tests.conftest import DEMO_CLIP, PROJECT

pytestmark = pytest.mark.slow  # starts actor processes

BINDERS = sorted({t.binder for t in TOPICS.values()})  # every actor that binds an endpoint
STOP_WITHIN_S = 1.0


def _config_file(tmp_path: Path, base: str = "test", **sections: str) -> Path:
    """``config/<base>.toml`` on a free port range, with extra TOML ``sections`` appended."""
    path = tmp_path / f"{base}-wire.toml"
    extra = "".join(f"\n[{name}]\n{body}\n" for name, body in sections.items())
    path.write_text(
        (PROJECT / "config" / f"{base}.toml").read_text()
        + f"\n[network]\nport_offset = {factories.free_port_offset()}\n"
        + extra
    )
    return path


@pytest.fixture
def tcp_env(demo_index: Path, tmp_path: Path) -> dict[str, str]:
    """The test graph on loopback TCP (raw TCP attacks need TCP), a free port range, its own spool."""
    cfg = _config_file(tmp_path, printer=f'spool_dir = "{tmp_path / "spool"}"')
    return {
        "MEGAPIXELS_CONFIG": str(cfg),
        "MEGAPIXELS_INDEX": str(demo_index),
        "MEGAPIXELS_SOURCE": str(DEMO_CLIP),
        "MEGAPIXELS_HEADLESS": "1",
    }


# --- the attacks -----------------------------------------------------------------------------------

ZMTP_SIGNATURE = b"\xff" + bytes(8) + b"\x7f"


def _greeting(mechanism: bytes) -> bytes:
    """A ZMTP 3.0 greeting: signature, version 3.0, mechanism (20 bytes), as-server 0, filler."""
    return ZMTP_SIGNATURE + b"\x03\x00" + mechanism.ljust(20, b"\0") + b"\0" + bytes(31)


def _zmq_strays(ctx: zmq.Context, where: str, topic: str) -> list[zmq.Socket]:
    """Every kind of malformed ZeroMQ traffic at ``where``; the sockets stay open (closed by the caller)."""
    oversized = b"x" * (TOPICS[topic].max_bytes + 1)
    body = encode(factories.SAMPLES[6])  # a real message, of the wrong topic for most endpoints
    socks = []

    def peer(kind: int) -> zmq.Socket:
        s = ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 1000)
        s.connect(where)
        socks.append(s)
        return s

    def send(s: zmq.Socket, parts: list[bytes]) -> None:
        # A REQ already waiting for its reply, a full pipe: it's all stray traffic anyway.
        with contextlib.suppress(zmq.ZMQError):
            s.send_multipart(parts, flags=zmq.NOBLOCK)

    dealer = peer(zmq.DEALER)
    for parts in (
        [b"hello"],  # a single frame: no envelope (the message that froze the camera's REP)
        [b""],  # an empty frame
        [topic.encode(), b"\x80"],  # a message without the empty delimiter
        [b"not-an-envelope", b"\x01", topic.encode(), b"\x80"],  # a wrong envelope
        [b"", topic.encode(), b"\xc1 not msgpack"],  # an envelope and garbage
        [b"", *body],  # an envelope and a message of another topic
        [b"", oversized],  # over the topic's size limit: the connection is dropped
    ):
        send(dealer, parts)
    for parts in ([b"garbage"], [topic.encode(), b"\xc1"], [b""]):
        send(peer(zmq.REQ), parts)  # a REQ that never reads its reply
    push = peer(zmq.PUSH)
    for parts in ([b"garbage"], [topic.encode(), b"\xc1"], [b""], body, [oversized]):
        send(push, parts)
    sub = peer(zmq.SUB)  # subscribes to everything and never reads
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    return socks


def _raw_strays(host: str, port: int, seed: int) -> list[socket.socket]:
    """Raw TCP at the endpoint: garbage, bogus greetings, a READY claiming 4 GB, a hanging half greeting."""
    rng = random.Random(seed)
    payloads = [
        bytes(rng.randrange(256) for _ in range(4096)),  # random bytes
        b"GET / HTTP/1.1\r\nHost: kiosk\r\n\r\n",  # somebody's browser
        _greeting(b"CURVE") + bytes(rng.randrange(256) for _ in range(64)),  # a mechanism nobody speaks
        ZMTP_SIGNATURE[:1] + b"\x7f" * 8 + b"\x7f",  # a ZMTP 1.0 length of 2^63
        # A proper NULL greeting, then READY with a Socket-Type property claiming 4 GB.
        _greeting(b"NULL") + b"\x04\x13\x05READY\x0bSocket-Type\xff\xff\xff\xff",
    ]
    conns = []
    for payload in payloads:
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(payload)
        conns.append(s)
    hanging = socket.create_connection((host, port), timeout=5)
    hanging.sendall(ZMTP_SIGNATURE[:5])  # half a signature, then nothing: held open
    conns.append(hanging)
    return conns


def _bound_endpoints(cfg: config.Config) -> dict[str, str]:
    """Every endpoint the graph binds, by topic (from the registry)."""
    return {topic: address(cfg, topic, binding=True) for topic in TOPICS}


# --- liveness ----------------------------------------------------------------------------------


def _fresh(ctx: zmq.Context, cfg: config.Config, topic: str, n: int, deadline_s: float) -> int:
    """How many good ``topic`` messages (up to ``n``) a new subscriber receives within the deadline."""
    sock = open_socket(ctx, cfg, topic, "display", receiving=True)
    box = Inbox(sock, topic, limit=100)
    got = 0
    end = time.monotonic() + deadline_s
    try:
        while got < n and time.monotonic() < end:
            if sock.poll(100):
                got += len(box.receive(time.monotonic_ns()))
    finally:
        sock.close(0)
    return min(got, n)


def _print(ctx: zmq.Context, cfg: config.Config, query_id: int, deadline_s: float):
    """A valid print job through a REQ socket, as the display sends it; the printer's reply (or None)."""
    req = open_socket(ctx, cfg, "print", "display", receiving=False)
    replies = Inbox(req, "print")
    try:
        req.send_multipart(encode(PrintJob(factories.header(src="display"), query_id, [factories.result()])))
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if req.poll(100) and (got := replies.receive(time.monotonic_ns())):
                return got[0]
        return None
    finally:
        req.close(0)


def _counters(graph: Graph, name: str) -> str:
    """The counters an actor logged when it stopped."""
    return next((line for line in reversed(graph.output) if line.startswith(f"{name} |") and "stopped;" in line), "")


def _count(counters: str, key: str) -> int:
    m = re.search(rf"'{re.escape(key)}': (\d+)", counters)
    return int(m.group(1)) if m else 0


@pytest.mark.timeout(400)
def test_stray_traffic_at_every_bound_endpoint_freezes_nothing(tcp_env: dict[str, str]):
    cfg = config.load(env=tcp_env)
    graph = Graph(tcp_env)
    graph.start_all()
    ctx = zmq.Context()
    strays: list[zmq.Socket] = []
    conns: list[socket.socket] = []
    took: dict[str, float | None] = {}
    try:
        graph.results(lambda r: r[-1]["results"] and r[-1]["results"][0]["identity"] == "barack_obama", 200)
        assert _print(ctx, cfg, 1, 20) is not None, "the printer did not answer before the attack"
        endpoints = _bound_endpoints(cfg)
        for seed, (topic, where) in enumerate(sorted(endpoints.items())):
            strays += _zmq_strays(ctx, where, topic)
            host, port = where.removeprefix("tcp://").rsplit(":", 1)
            conns += _raw_strays(host, int(port), seed)
        mark = graph.mark()

        # Everything still flows and answers, with the stray connections still open.
        for topic in ("frames", "faces", "camera_status"):
            assert _fresh(ctx, cfg, topic, 5, 30) == 5, f"{topic} stopped after the stray traffic"
        status = replay_control.send(cfg, "status", timeout_ms=10_000)
        assert status.state == "replay" and status.frames > 0, status
        reply = _print(ctx, cfg, 2, 20)
        assert reply is not None and reply.ok and Path(reply.detail).is_file(), reply
        graph.wait_for(
            holds(lambda seen: any(r["results"] and not r["partial"] for r in display_results(seen))),
            "a complete result after the stray traffic",
            120,
            since=mark,
        )
        for name in graph.names:
            assert graph.procs[name].poll() is None, f"{name} died"
        took = graph.stop_all(timeout_s=5)
    finally:
        for s in strays:
            s.close(0)
        for c in conns:
            c.close()
        ctx.term()
        graph.kill_all()
    print("SIGTERM to exit, s:", {n: None if t is None else round(t, 2) for n, t in took.items()})
    slow = {n: t for n, t in took.items() if t is None or t >= STOP_WITHIN_S}
    assert not slow, f"not stopped within {STOP_WITHIN_S} s of SIGTERM: {slow}"
    # The requests without an envelope were counted and dropped, the garbage ones answered with a refusal.
    for name, topic in (("camera.1", "replay_control"), ("printer.1", "print")):
        counters = _counters(graph, name)
        assert _count(counters, f"{topic}.unanswerable") >= 2, counters
        assert _count(counters, f"{topic}.answered") >= 2, counters
    for name, topic in (("detector.1", "chips"), ("reducer.1", "candidates")):
        assert _count(_counters(graph, name), f"{topic}.malformed") >= 1, _counters(graph, name)
    for name in ("camera.1", "printer.1", "detector.1", "reducer.1"):
        print(_counters(graph, name))


# --- a second graph on the same addresses --------------------------------------------------------


def _exit_of(graph: Graph, name: str, deadline_s: float) -> int:
    try:
        return graph.procs[name].wait(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{name} kept running on addresses already in use:\n{graph.transcript()}") from None


@pytest.mark.timeout(200)
@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_a_second_graph_on_the_same_addresses_exits_naming_the_address(transport, tcp_env, ipc_dir: Path):
    env = dict(tcp_env, MEGAPIXELS_IPC_DIR=str(ipc_dir)) if transport == "ipc" else tcp_env
    cfg = config.load(env=env)
    first, second = Graph(env), Graph(env)
    ctx = zmq.Context()
    binders = [f"{name}.1" for name in BINDERS]  # camera, detector, reducer, printer, button
    for name in binders:
        first.start(name)
    try:
        for name in binders:
            first.wait_for(logged(name, "started (pid"), f"{name} started", 60, since=0)
        started = time.monotonic()
        for name in BINDERS:
            second.start(f"{name}.1")
        for name in BINDERS:
            code = _exit_of(second, f"{name}.1", 60)
            print(f"second {name} exited ({code}) {time.monotonic() - started:.1f} s after the start")
            out = "\n".join(line for line in second.output if line.startswith(f"{name}.1 |"))
            topic = next(t for t, spec in TOPICS.items() if spec.binder == name and f"(topic {t})" in out)
            where = address(cfg, topic, binding=True)
            assert code == 2, out
            assert f"address in use: {where} (topic {topic}) — is another graph running?" in out, out
            assert "Traceback" not in out, out
        # The first graph goes on: the camera still publishes and still answers.
        assert _fresh(ctx, cfg, "frames", 5, 30) == 5
        assert replay_control.send(cfg, "status", timeout_ms=10_000).state == "replay"
        for name in binders:
            assert first.procs[name].poll() is None, f"the first graph's {name} died:\n{first.transcript()}"
    finally:
        ctx.term()
        first.stop_all()
        second.kill_all()


def test_every_bound_socket_is_bound_before_any_is_connected(ipc_config):
    """The detector of a second graph would connect to the first graph's frames before failing to
    bind faces; binding first, it fails before it connects anything (nothing accepted on frames)."""
    from actors.detector import Detector

    ctx, squatter_ctx = zmq.Context(), zmq.Context()
    pub = open_socket(ctx, ipc_config, "frames", "camera", receiving=False)  # the first graph's camera
    monitor = pub.get_monitor_socket(zmq.EVENT_ACCEPTED)
    squatter = open_socket(squatter_ctx, ipc_config, "faces", "detector", receiving=False)  # its detector
    detector = Detector(ipc_config)
    assert "frames" in detector.RECEIVES and TOPICS["faces"].binder == "detector"
    try:
        with pytest.raises(BindError, match=r"address in use: ipc://.*faces\.sock \(topic faces\)"):
            runtime.open_sockets(detector, ctx)
        assert not monitor.poll(500), "the failed detector connected to frames first"
        # Once the address is free the same actor opens everything, and does connect to frames.
        squatter.close(0)
        squatter_ctx.term()  # returns once the socket is closed and its ipc file gone
        inputs, outputs = runtime.open_sockets(detector, ctx)
        assert monitor.poll(5000), "the detector never connected to frames"
        for s in [*(b.sock for b in inputs.values()), *outputs.values()]:
            s.close(0)
    finally:
        if not squatter.closed:
            squatter.close(0)
            squatter_ctx.term()
        pub.disable_monitor()
        monitor.close(0)
        pub.close(0)
        ctx.term()


# --- honcho killed -------------------------------------------------------------------------------


@pytest.mark.timeout(400)
@pytest.mark.parametrize("base", ["test", "kiosk"])
def test_killing_honcho_stops_every_actor(base: str, demo_index: Path, tmp_path: Path):
    """honcho's forked helpers outlive a SIGKILLed honcho, so the actors watch honcho itself
    (kiosk mode: after each actor's execve restart, same pid)."""
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        PYTHONUNBUFFERED="1",
        MEGAPIXELS_CONFIG=str(_config_file(tmp_path, base)),  # nothing is printed
        MEGAPIXELS_INDEX=str(demo_index),
        MEGAPIXELS_SOURCE=str(DEMO_CLIP),
        MEGAPIXELS_HEADLESS="1",
    )
    env.pop("MEGAPIXELS_IPC_DIR", None)
    honcho = subprocess.Popen(
        [sys.executable, "-m", "honcho", "start"],  # plain, as an operator starts it
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(honcho.stdout), daemon=True).start()
    started = re.compile(r"^\S+ (\S+)\s+\| (?:\S+ INFO )?started \(pid (\d+)\)")
    actors: dict[str, int] = {}
    helpers: list[int] = []
    try:
        deadline = time.monotonic() + 200
        n_actors = len(Graph({}).names)
        while time.monotonic() < deadline and honcho.poll() is None:
            actors = {m.group(1): int(m.group(2)) for line in list(output) if (m := started.match(line))}
            if len(actors) == n_actors and any("| {" in line for line in output):  # all in their loop
                break
            time.sleep(0.2)
        assert len(actors) == n_actors, "not every actor started:\n" + "".join(output[-40:])
        helpers = factories.children(honcho.pid)
        assert helpers, "honcho has no helper processes"
        honcho.kill()  # SIGKILL: honcho can't stop anything now
        honcho.wait()
        killed = time.monotonic()
        while time.monotonic() - killed < 5 and any(factories.running(pid) for pid in actors.values()):
            time.sleep(0.05)
        left = {name: pid for name, pid in actors.items() if factories.running(pid)}
        took = time.monotonic() - killed
        assert not left, f"still running 5 s after honcho was killed: {left}\n" + "".join(output[-40:])
        print(f"every actor gone {took:.2f} s after honcho's SIGKILL ({base} config)")
        helper_deadline = time.monotonic() + 5
        while time.monotonic() < helper_deadline and any(factories.running(pid) for pid in helpers):
            time.sleep(0.05)
        assert not [pid for pid in helpers if factories.running(pid)], "honcho's helpers outlived their actors"
    finally:
        for pid in [*actors.values(), *helpers]:
            if factories.running(pid):
                os.kill(pid, signal.SIGKILL)
        if honcho.poll() is None:
            honcho.kill()
            honcho.wait()


WATCHER = """
import sys, time
sys.path.insert(0, {project!r})
from actors.runtime.supervisor import Supervisor
watch = Supervisor()
print("watching", watch.pid, flush=True)
while not watch.gone(time.monotonic_ns()):
    time.sleep(0.01)
print("gone", flush=True)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("forked", [False, True], ids=["parent", "forked helper"])
def test_a_process_sees_its_supervisor_die_through_a_forked_helper(forked: bool):
    boss = factories.start_supervised([sys.executable, "-c", WATCHER.format(project=str(PROJECT))], forked)
    try:
        assert boss.stdout.readline().split() == ["watching", str(boss.pid)]
        boss.kill()
        boss.wait()
        killed = time.monotonic()
        assert boss.stdout.readline().strip() == "gone"  # EOF (no line) if the watcher never noticed
        assert time.monotonic() - killed < 2
    finally:
        with contextlib.suppress(ProcessLookupError):  # the helper and the watcher, if anything went wrong
            os.killpg(boss.pid, signal.SIGKILL)
