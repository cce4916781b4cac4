"""CURVE authentication and encryption for the shard topics (queries, candidates).

Only needed when matchers run on other hosts (galleries that outgrow one machine). The query
side (detector, reducer) binds as CURVE server and lets in only matchers whose public
certificate lies in ``curve.authorized_keys_dir``; a matcher connects as CURVE client with its
own certificate and the query side's public one. Certificates are ZeroMQ's own format
(``zmq.auth.create_certificates``). A peer without an authorised key is refused by the ZAP
handler: its connection never delivers a message.
"""

from __future__ import annotations

from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

import config
from messages.topics import TOPICS

_authenticators: dict[int, ThreadAuthenticator] = {}


def secure(sock: zmq.Socket, ctx: zmq.Context, cfg: config.Config, topic: str, binding: bool) -> None:
    """Apply CURVE to ``sock`` (before bind/connect) when enabled and the topic crosses hosts."""
    curve = cfg["curve"]
    if not curve["enabled"] or not TOPICS[topic].remote:
        return
    public, secret = _certificate(curve["secret_key_file"], "curve.secret_key_file", need_secret=True)
    sock.curve_publickey, sock.curve_secretkey = public, secret
    if binding:
        _start_authenticator(ctx, curve["authorized_keys_dir"])
        sock.curve_server = True
    else:
        sock.curve_serverkey, _ = _certificate(curve["server_key_file"], "curve.server_key_file", need_secret=False)


def stop(ctx: zmq.Context) -> None:
    """Stop the context's authenticator thread, if one was started."""
    auth = _authenticators.pop(id(ctx), None)
    if auth is not None:
        auth.stop()


def _start_authenticator(ctx: zmq.Context, keys_dir: str) -> None:
    if id(ctx) in _authenticators:
        return
    folder = Path(keys_dir)
    if not keys_dir or not folder.is_dir():
        raise config.ConfigError(f"curve.authorized_keys_dir = {keys_dir!r} is not a folder")
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(folder))
    _authenticators[id(ctx)] = auth


def _certificate(path: str, key: str, need_secret: bool) -> tuple[bytes, bytes | None]:
    if not path:
        raise config.ConfigError(f"{key} must be set when curve.enabled = true")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise config.ConfigError(f"{key} = {path!r}: not a readable ZeroMQ certificate ({e})") from e
    if need_secret and secret is None:
        raise config.ConfigError(f"{key} = {path!r} holds no secret key (use the .key_secret file)")
    return public, secret
