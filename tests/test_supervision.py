"""Production supervision: `make systemd` exports one restarting unit per actor, and they run.

honcho stops the whole graph when one process exits, which is right while developing; an
unattended kiosk instead wants each actor restarted on its own. These tests generate the units
the README tells operators to install and check them, then start one unit's command the way
systemd would (its Environment lines, its WorkingDirectory) to prove the command works.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from tests.conftest import PROJECT


def _procfile() -> dict[str, str]:
    lines = (PROJECT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


@pytest.fixture(scope="module")
def units(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("units") / "systemd"
    done = subprocess.run(
        ["make", "-s", "systemd", f"SYSTEMD_DIR={out}", "MATCHERS=3"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KIOSK_USER": "kiosk", "DISPLAY": ":7"},
    )
    assert done.returncode == 0, done.stderr
    return {p.name: p.read_text() for p in out.iterdir()}


def _service(text: str) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            keys.setdefault(key, []).append(value)
    return keys


def test_one_restarting_unit_per_actor_and_matcher_process(units):
    procfile = _procfile()
    expected = {f"megapixels-{name}-1.service" for name in procfile if name != "matcher"}
    expected |= {f"megapixels-matcher-{n}.service" for n in (1, 2, 3)}
    assert expected == {name for name in units if name.endswith(".service")}
    assert "megapixels.target" in units
    for name in expected:
        unit = _service(units[name])
        actor = name.removeprefix("megapixels-").rsplit("-", 1)[0]
        assert unit["ExecStart"] == [f"/bin/sh -c '{procfile[actor]}'"], name
        assert unit["Restart"] == ["always"] and unit["RestartSec"] == ["1"]
        assert unit["TimeoutStopSec"] == ["5"] and unit["User"] == ["kiosk"]
        env = dict(e.split("=", 1) for e in unit["Environment"])
        assert env["MEGAPIXELS_CONFIG"].endswith("config/kiosk.toml")
        assert env["PATH"].startswith(str(PROJECT / ".venv" / "bin"))
        assert env["DISPLAY"] == ":7"
        assert env["MEGAPIXELS_MATCHERS"] == "3", "every unit knows how the matchers split the shards"
    assert "HONCHO_PROCESS_NAME=matcher.3" in units["megapixels-matcher-3.service"]


@pytest.mark.timeout(300)  # includes building the demo index when run alone
def test_a_unit_command_starts_its_actor_as_systemd_would(units, demo_index, ipc_dir):
    unit = _service(units["megapixels-matcher-2.service"])
    env = dict(e.split("=", 1) for e in unit["Environment"])
    env.update(MEGAPIXELS_INDEX=str(demo_index), MEGAPIXELS_IPC_DIR=str(ipc_dir))
    command = re.fullmatch(r"/bin/sh -c '(.*)'", unit["ExecStart"][0]).group(1)
    actor = subprocess.Popen(
        ["/bin/sh", "-c", command], cwd=unit["WorkingDirectory"][0], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        for line in actor.stderr:  # matcher.2 of 3 on the 2-shard demo index: shard 1
            if "shards 1 of 2" in line:
                break
        else:
            pytest.fail("the matcher unit's command never loaded its shard")
        actor.send_signal(signal.SIGTERM)
        assert actor.wait(timeout=5) == 0
    finally:
        if actor.poll() is None:
            actor.kill()


@pytest.mark.timeout(120)
def test_a_matcher_process_beyond_search_matchers_refuses_naming_the_numbers(demo_index_3, ipc_dir):
    """`honcho start -c matcher=2` without MEGAPIXELS_MATCHERS=2 would leave matcher.1 serving every
    shard and matcher.2 nothing: matcher.2 refuses, says what to set, and honcho stops the graph."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEGAPIXELS_")}
    env.update(
        HONCHO_PROCESS_NAME="matcher.2",
        MEGAPIXELS_CONFIG=str(PROJECT / "config" / "test.toml"),
        MEGAPIXELS_INDEX=str(demo_index_3),
        MEGAPIXELS_IPC_DIR=str(ipc_dir),
    )
    done = subprocess.run(
        [sys.executable, "-m", "actors.matcher"], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=100
    )
    assert done.returncode == 2
    assert (
        "matcher.2 of 1: set search.matchers = 2 (MEGAPIXELS_MATCHERS=2) to run 2 matcher processes, "
        "or start one matcher: it serves all 3 shards"
    ) in done.stderr, done.stderr


def test_units_pass_systemd_analyze(units, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    done = subprocess.run(
        [analyze, "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr
