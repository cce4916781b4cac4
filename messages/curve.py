"""CURVE authentication and encryption for the shard topics (queries, candidates).

Only needed when matchers run on other hosts (galleries that outgrow one machine). The *query
side* is the two processes that bind the shard topics, the detector (``queries``) and the reducer
(``candidates``); they share one certificate (``curve.secret_key_file``) and bind as CURVE
servers. A matcher connects as CURVE client with its own certificate and the query side's public
one (``curve.server_key_file``). The reducer also subscribes to ``queries`` (so it can answer,
partially, when every shard is down): it connects with the query side's certificate, which is
the server key it needs too, so it sets no ``server_key_file``.

Who may connect is decided by this module's ZAP handler (:class:`KeyGuard`, one thread per
process that binds): the query side's own certificate, and every public certificate in
``curve.authorized_keys_dir`` (read again when the folder changes, so a matcher can be let in
without a restart). Certificates are ZeroMQ's own format (``zmq.auth.create_certificates``);
relative paths are taken from the project folder, like every path setting.

Refusals are logged on both ends, at most once a minute per peer and cause: the binding side's
ZAP handler names the peer's address, its public key and the reason; a socket monitor on every
CURVE socket logs failed handshakes (a refused certificate, a wrong server key, a peer without
CURVE) with the endpoint and what to check, and each successful one.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

import config
from messages.topics import TOPICS

log = logging.getLogger("curve")
# The roles that bind a shard topic: they share the query side's certificate.
QUERY_SIDE = frozenset(t.binder for t in TOPICS.values() if t.remote)
ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # where libzmq asks a context's ZAP handler
REPEAT_S = 60.0  # the same refusal is logged again at most this often

_guards: dict[int, KeyGuard] = {}
_monitors = itertools.count()


def secure(sock: zmq.Socket, ctx: zmq.Context, cfg: config.Config, topic: str, role: str, binding: bool) -> None:
    """Apply CURVE to ``sock`` (before bind/connect) when enabled and the topic crosses hosts."""
    curve = cfg["curve"]
    if not curve["enabled"] or not TOPICS[topic].remote:
        return
    public, secret = _certificate(cfg, "secret_key_file", need_secret=True)
    sock.curve_publickey, sock.curve_secretkey = public, secret
    if binding:
        _guard(ctx, cfg, public)
        sock.zap_domain = topic.encode()
        sock.curve_server = True
    elif curve["server_key_file"]:
        sock.curve_serverkey, _ = _certificate(cfg, "server_key_file", need_secret=False)
    elif role in QUERY_SIDE:
        sock.curve_serverkey = public  # the reducer on queries: the detector holds the same certificate
    else:
        raise config.ConfigError("curve.server_key_file must be set when curve.enabled = true")
    _watch(ctx, sock, topic, binding, public)


def stop(ctx: zmq.Context) -> None:
    """Stop the context's ZAP handler, if one was started."""
    guard = _guards.pop(id(ctx), None)
    if guard is not None:
        guard.stop()


class Throttle:
    """Says whether a message about ``key`` may be logged now: once per ``every_s``, with the count."""

    def __init__(self, every_s: float = REPEAT_S):
        self.every_s = every_s
        self._last: dict[object, tuple[float, int]] = {}

    def __call__(self, key: object, now: float | None = None) -> int:
        """0 if not now; else how many times ``key`` happened since it was last logged (1 the first time)."""
        now = time.monotonic() if now is None else now
        last, count = self._last.get(key, (None, 0))
        if last is not None and now - last < self.every_s:
            self._last[key] = (last, count + 1)
            return 0
        self._last[key] = (now, 0)
        return count + 1


class KeyGuard:
    """The ZAP handler of one context: lets in the query side's own key and the authorised ones."""

    def __init__(self, ctx: zmq.Context, keys_dir: Path, own_public: bytes):
        self.folder = keys_dir
        self.own = own_public  # Z85, as zmq.auth reads certificates
        self._keys: set[bytes] = set()
        self._stamp: float | None = None
        self.load()
        self.throttle = Throttle()
        self._stop = threading.Event()
        self.sock = ctx.socket(zmq.REP)  # bound here, before any CURVE socket; used by the thread only
        self.sock.linger = 0
        self.sock.bind(ZAP_ENDPOINT)
        self.thread = threading.Thread(target=self._run, name="zap", daemon=True)
        self.thread.start()

    def load(self) -> None:
        """(Re)read the authorised public keys when the folder has changed."""
        stamp = self.folder.stat().st_mtime
        if stamp != self._stamp:
            self._keys = set(zmq.auth.load_certificates(str(self.folder)))
            self._stamp = stamp
            log.info("CURVE: %d authorised public keys in %s", len(self._keys), self.folder)

    def answer(self, request: list[bytes]) -> list[bytes]:
        """The ZAP reply (RFC 27) to one request: 200 for a known key, 400 with the reason otherwise."""
        if len(request) < 6:
            return [b"1.0", request[1] if len(request) > 1 else b"", b"400", b"malformed ZAP request", b"", b""]
        version, request_id, domain, address, _identity, mechanism, *credentials = request
        if version != b"1.0":
            return [b"1.0", request_id, b"400", b"unknown ZAP version", b"", b""]
        if mechanism != b"CURVE":  # a local, unencrypted topic of this process: not ours to judge
            return [b"1.0", request_id, b"200", b"OK", b"", b""]
        key = z85.encode(credentials[0]) if credentials and len(credentials[0]) == 32 else b"?"
        try:
            self.load()
        except OSError as e:
            log.error("CURVE: cannot read curve.authorized_keys_dir %s: %s", self.folder, e)
        if key == self.own or key in self._keys:
            return [b"1.0", request_id, b"200", b"OK", key, b""]
        reason = f"its public key {key.decode()} is not in curve.authorized_keys_dir ({self.folder})"
        if times := self.throttle((address, key)):
            log.warning(
                "CURVE: refused a peer on %s from %s: %s; add its .key file there to let it in%s",
                domain.decode(errors="replace"),
                address.decode(errors="replace") or "?",
                reason,
                f" ({times} attempts since the last report)" if times > 1 else "",
            )
        return [b"1.0", request_id, b"400", b"unknown public key", b"", b""]

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self.sock.poll(100):
                    self.sock.send_multipart(self.answer(self.sock.recv_multipart()))
        except zmq.ContextTerminated:
            pass
        finally:
            self.sock.close(0)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(2)


def _guard(ctx: zmq.Context, cfg: config.Config, own_public: bytes) -> None:
    if id(ctx) in _guards:
        return
    keys_dir = cfg["curve"]["authorized_keys_dir"]
    folder = cfg.path("curve", "authorized_keys_dir")
    if not keys_dir or not folder.is_dir():
        raise config.ConfigError(f"curve.authorized_keys_dir = {keys_dir!r} is not a folder")
    _guards[id(ctx)] = KeyGuard(ctx, folder, own_public)


_WATCHED = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_MONITOR_STOPPED
)


def handshake_report(topic: str, binding: bool, event: int, value: int, endpoint: str, own: str) -> str | None:
    """The log line for one monitor event of a CURVE socket (None: nothing to say)."""
    if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
        return f"CURVE: {topic}: handshake with {endpoint} succeeded"
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        if binding:
            return None  # the ZAP handler has said who and why
        return (
            f"CURVE: {topic}: {endpoint} refused this process (status {value}): its public key {own} must be "
            "in the query side's curve.authorized_keys_dir"
        )
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        try:
            cause = zmq.Event(value).name
        except ValueError:
            cause = hex(value)
        hint = (
            "the peer does not use CURVE (is curve.enabled = true on both sides?)"
            if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
            else "the peer's server key is not this certificate (check its curve.server_key_file)"
            if binding
            else "check curve.server_key_file: it must be the query side's public certificate"
        )
        return f"CURVE: {topic}: handshake with {endpoint} failed ({cause}): {hint}"
    if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        return (
            f"CURVE: {topic}: handshake with {endpoint} failed without detail (errno {value}): a peer without "
            "CURVE, or with a different server key"
        )
    return None


def _watch(ctx: zmq.Context, sock: zmq.Socket, topic: str, binding: bool, public: bytes) -> None:
    """Log the handshakes of ``sock`` from a thread that ends when the socket closes."""
    address = f"inproc://curve-monitor-{next(_monitors)}"
    sock.monitor(address, _WATCHED)
    pair = ctx.socket(zmq.PAIR)  # connected here so no event is lost; read by the thread only
    pair.linger = 0
    pair.connect(address)
    own = public.decode()

    def run() -> None:
        throttle = Throttle()
        try:
            while True:
                event = recv_monitor_message(pair)
                if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                    return
                endpoint = event["endpoint"].decode(errors="replace")
                text = handshake_report(topic, binding, event["event"], event["value"], endpoint, own)
                if text is None or not (times := throttle((event["event"], event["value"], endpoint))):
                    continue
                more = f" ({times} times since the last report)" if times > 1 else ""
                if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    log.info("%s%s", text, more)
                else:
                    log.warning("%s%s", text, more)
        except zmq.ContextTerminated:
            pass
        finally:
            pair.close(0)

    threading.Thread(target=run, name=f"curve-monitor-{topic}", daemon=True).start()


def _certificate(cfg: config.Config, setting: str, need_secret: bool) -> tuple[bytes, bytes | None]:
    """The certificate named by ``curve.<setting>`` (relative paths from the project folder)."""
    path, key = cfg["curve"][setting], f"curve.{setting}"
    if not path:
        raise config.ConfigError(f"{key} must be set when curve.enabled = true")
    try:
        public, secret = zmq.auth.load_certificate(cfg.path("curve", setting))
    except (OSError, ValueError) as e:
        raise config.ConfigError(f"{key} = {path!r}: not a readable ZeroMQ certificate ({e})") from e
    if need_secret and secret is None:
        raise config.ConfigError(f"{key} = {path!r} holds no secret key (use the .key_secret file)")
    return public, secret
