"""Send one replay command to the running camera and print its answer (a CameraStatus).

    python -m actors.replay_control pause | resume | step | status
    python -m actors.replay_control rate 0.5
    python -m actors.replay_control seek 3.2

Uses the same config (MEGAPIXELS_CONFIG, MEGAPIXELS_IPC_DIR) as the graph to find the camera.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import zmq

import config
from messages import DecodeError, Header, decode, encode, endpoint
from messages.schemas import CameraStatus, ReplayControl

COMMANDS = ("pause", "resume", "step", "rate", "seek", "status")


def send(cfg: config.Config, command: str, value: float = 0.0, timeout_ms: int = 2000) -> CameraStatus:
    """One request/reply with the camera; TimeoutError when it doesn't answer."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint("replay_control", cfg["network"]["transport"], cfg["network"]["ipc_dir"]))
        header = Header(seq=1, t_ns=time.monotonic_ns(), src="replay_control", frame_id=-1)
        sock.send_multipart(encode(ReplayControl(header, command, float(value))))
        if not sock.poll(timeout_ms, zmq.POLLIN):
            raise TimeoutError(f"the camera did not answer within {timeout_ms} ms (is it running?)")
        return decode(sock.recv_multipart(), expect="camera_status")
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
