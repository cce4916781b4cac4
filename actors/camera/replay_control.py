"""Send one replay command to the running camera and print its answer (a CameraStatus).

    python -m actors.camera.replay_control pause | resume | step | status
    python -m actors.camera.replay_control rate 0.5
    python -m actors.camera.replay_control seek 3.2

Uses the same config (MEGAPIXELS_CONFIG, MEGAPIXELS_IPC_DIR, ``network.port_offset``) as the graph to
find the camera: the socket is opened from the topic registry like every actor's.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import zmq

import config
from messages import CameraStatus, DecodeError, Header, Inbox, ReplayControl, encode, open_socket

COMMANDS = ("pause", "resume", "step", "rate", "seek", "status")
ROLE = "replay_control"  # the operator's shell: connects, never binds


def send(cfg: config.Config, command: str, value: float = 0.0, timeout_ms: int = 2000) -> CameraStatus:
    """One request/reply with the camera; TimeoutError when it doesn't answer, DecodeError when garbled.

    The reply is read through an Inbox, never blocking: a poll that said "ready" is no promise of a
    reply (a stray message without an envelope wakes it and is dropped), and the deadline runs on.
    """
    sock = open_socket(zmq.Context.instance(), cfg, "replay_control", ROLE, receiving=False)
    try:
        header = Header(seq=1, t_ns=time.monotonic_ns(), src=ROLE, frame_id=-1)
        try:
            sock.send_multipart(encode(ReplayControl(header, command, float(value))), flags=zmq.NOBLOCK)
        except zmq.Again:
            raise TimeoutError("the command could not be handed to the camera's socket") from None
        replies = Inbox(sock, "replay_control")
        deadline = time.monotonic() + timeout_ms / 1000
        while (left_s := deadline - time.monotonic()) > 0:
            if not sock.poll(left_s * 1000, zmq.POLLIN):
                continue
            for reply in replies.receive(time.monotonic_ns()):
                if reply is None:
                    raise DecodeError("the camera's answer could not be read")
                return reply
        raise TimeoutError(f"the camera did not answer within {timeout_ms} ms (is it running?)")
    finally:
        sock.close(linger=0)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS or (argv[0] in ("rate", "seek")) != (len(argv) == 2):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        status = send(config.load(), argv[0], float(argv[1]) if len(argv) == 2 else 0.0)
    except (config.ConfigError, TimeoutError, DecodeError, ValueError) as e:
        print(f"replay_control: {e}", file=sys.stderr)
        return 1
    fields = dataclasses.asdict(status)
    fields.pop("header")
    print(json.dumps(fields))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
