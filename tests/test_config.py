"""One loader, defaults for everything, and errors that name the key."""

from __future__ import annotations

import pytest

import config
from config.loader import CONFIG_DIR, SETTINGS


@pytest.mark.parametrize("name", ["demo", "kiosk", "test"])
def test_shipped_files_load(name):
    cfg = config.load(CONFIG_DIR / f"{name}.toml", env={})
    assert set(cfg) == set(SETTINGS)


def test_every_setting_has_a_default():
    cfg = config.validate({})
    for section, settings in SETTINGS.items():
        assert set(cfg[section]) == set(settings)


def test_kiosk_file_is_kiosk_mode():
    assert config.load(CONFIG_DIR / "kiosk.toml", env={})["mode"]["kiosk"] is True


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"camera": {"fps": "fast"}}, "camera.fps = 'fast': expected float"),
        ({"camera": {"fpz": 10}}, "unknown key camera.fpz; allowed keys: source, loop"),
        ({"camrea": {}}, r"unknown section \[camrea\]"),
        ({"search": {"top_k": 0}}, "search.top_k = 0: allowed range is 1 to 100"),
        ({"network": {"transport": "udp"}}, "network.transport = 'udp': allowed values are 'tcp', 'ipc'"),
        ({"network": {"transport": "ipc"}}, "network.ipc_dir must name a folder"),
        ({"display": {"headless": "yes"}}, "display.headless = 'yes': expected bool"),
    ],
)
def test_wrong_values_name_the_key_and_what_is_allowed(raw, message):
    with pytest.raises(config.ConfigError, match=message):
        config.validate(raw)


def test_environment_overrides(tmp_path):
    clip = tmp_path / "clip.mp4"
    env = {
        "MEGAPIXELS_SOURCE": str(clip),
        "MEGAPIXELS_INDEX": str(tmp_path / "idx"),
        "MEGAPIXELS_HEADLESS": "1",
        "MEGAPIXELS_IPC_DIR": str(tmp_path),
    }
    cfg = config.load(CONFIG_DIR / "demo.toml", env=env)
    assert cfg["camera"]["source"] == str(clip)
    assert cfg.path("index", "path") == tmp_path / "idx"
    assert cfg["display"]["headless"] is True
    assert (cfg["network"]["transport"], cfg["network"]["ipc_dir"]) == ("ipc", str(tmp_path))
    assert config.load(CONFIG_DIR / "test.toml", env={"MEGAPIXELS_HEADLESS": "0"})["display"]["headless"] is False


def test_matcher_processes_from_environment_and_their_wrong_values():
    assert config.load(CONFIG_DIR / "demo.toml", env={})["search"]["matchers"] == 1  # one serves every shard
    assert config.load(CONFIG_DIR / "demo.toml", env={"MEGAPIXELS_MATCHERS": "2"})["search"]["matchers"] == 2
    with pytest.raises(config.ConfigError, match=r"MEGAPIXELS_MATCHERS = 'two': expected a whole number"):
        config.load(CONFIG_DIR / "demo.toml", env={"MEGAPIXELS_MATCHERS": "two"})
    with pytest.raises(config.ConfigError, match=r"search.matchers = 0: allowed range is 1 to 256"):
        config.load(CONFIG_DIR / "demo.toml", env={"MEGAPIXELS_MATCHERS": "0"})


def test_webcam_index_from_environment_stays_an_index():
    assert config.load(CONFIG_DIR / "demo.toml", env={"MEGAPIXELS_SOURCE": "0"})["camera"]["source"] == "0"


def test_config_path_from_environment(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text("[search]\ntop_k = 3\n")
    assert config.load(env={"MEGAPIXELS_CONFIG": str(path)})["search"]["top_k"] == 3


def test_missing_or_broken_file_is_a_config_error(tmp_path):
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[camera\n")
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.load(bad, env={})
