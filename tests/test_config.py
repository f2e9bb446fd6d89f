"""Config: TOML -> frozen dataclasses, defaults from systemd/platformdirs, clear errors, CLI check."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from vfpd import config
from vfpd.config import ConfigError

FULL = """
[watch]
paths = ["videos", "~/nas"]
extensions = ["mp4", ".MKV"]
recursive = false
exclude = [".*", "*/tmp/*"]
settle_seconds = 1.5
poll = ["~/nas"]
poll_interval = 30

[detect]
threshold = 0.8
candidates = 5

[storage]
state_dir = "state"
cache_dir = "/var/tmp/vfpd-cache"

[control]
socket = "/run/vfpd-test/s.sock"
socket_mode = "0660"
socket_group = "video"

[notify]
log = true
desktop = false
exec = ["/usr/local/bin/on-dup", "--flag"]
exec_timeout = 5

[notify.webhook]
url = "https://example.org/hook"
timeout = 3
retries = 2
headers = { Authorization = "Bearer x" }

[model]
device = "cpu"
batch_size = 4
idle_unload_seconds = 60

[decode]
workers = 2
timeout_seconds = 30
timeout_per_video_second = 0.1
memory_mb = 512
max_attempts = 2
retry_seconds = 1

[log]
level = "DEBUG"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_every_key(tmp_path: Path) -> None:
    home = Path("~").expanduser()
    cfg = config.load(write(tmp_path, FULL), env={})
    assert cfg.source == (tmp_path / "config.toml").resolve()
    assert cfg.watch.paths == (tmp_path / "videos", home / "nas")
    assert cfg.watch.extensions == (".mp4", ".mkv")
    assert cfg.watch.recursive is False
    assert cfg.watch.exclude == (".*", "*/tmp/*")
    assert cfg.watch.settle_seconds == 1.5
    assert cfg.watch.poll == (home / "nas",)
    assert cfg.watch.poll_interval == 30.0
    assert (cfg.detect.threshold, cfg.detect.candidates) == (0.8, 5)
    assert cfg.storage.state_dir == tmp_path / "state"
    assert cfg.storage.cache_dir == Path("/var/tmp/vfpd-cache")
    assert cfg.control == config.ControlConfig(Path("/run/vfpd-test/s.sock"), 0o660, "video")
    assert cfg.notify.desktop is False
    assert cfg.notify.exec == ("/usr/local/bin/on-dup", "--flag")
    assert cfg.notify.webhook == config.WebhookConfig("https://example.org/hook", 3.0, 2,
                                                      (("Authorization", "Bearer x"),))
    assert cfg.model == config.ModelConfig("cpu", None, 4, 60.0)
    assert cfg.decode == config.DecodeConfig(2, 30.0, 0.1, 512, 2, 1.0)
    assert cfg.log.level == "debug"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.watch.settle_seconds = 3  # type: ignore[misc]


def test_retrain_section(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "[retrain]\nschedule = ' 0  3 * * 0 '\nmax_minutes = 0.5\n"
                                      "min_videos = 6\ndevice = 'AUTO'\nthreads = 2\n"
                                      "min_gain = -1\n"), env={})
    assert cfg.retrain == config.RetrainConfig("0 3 * * 0", 0.5, 6, "auto", 2, -1.0, 0)
    assert config.parse({}, None, {}).retrain.schedule == ""  # disabled unless asked for
    assert config.parse({"retrain": {"schedule": ""}}, None, {}).retrain.schedule == ""
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.retrain.threads = 3  # type: ignore[misc]


def test_index_section(tmp_path: Path) -> None:
    assert config.parse({}, None, {}).index == config.IndexConfig("faiss", None)
    cfg = config.load(write(tmp_path, "[storage]\nstate_dir = 'state'\n[index]\n"
                                      "backend = 'Milvus'\n"), env={})
    assert cfg.index == config.IndexConfig("milvus", str(tmp_path / "state" / "milvus.db"))
    cfg = config.load(write(tmp_path, "[index]\nbackend = 'milvus'\nuri = 'vectors/v.db'\n"
                                      "collection = 'lib_2'\n"), env={})
    assert cfg.index == config.IndexConfig("milvus", str(tmp_path / "vectors" / "v.db"), "lib_2")
    cfg = config.load(write(tmp_path, "[index]\nbackend = 'milvus'\n"
                                      "uri = 'http://milvus.lan:19530'\n"), env={})
    assert cfg.index.uri == "http://milvus.lan:19530"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.index.backend = "faiss"  # type: ignore[misc]


def test_defaults_follow_systemd_directories(tmp_path: Path) -> None:
    env = {"STATE_DIRECTORY": "/var/lib/vfpd", "RUNTIME_DIRECTORY": "/run/vfpd",
           "CONFIGURATION_DIRECTORY": str(tmp_path), "CACHE_DIRECTORY": "/var/cache/vfpd:/x"}
    assert config.default_config_path(env) == tmp_path / "config.toml"
    cfg = config.load(None, env)  # no file there yet: built-in defaults
    assert cfg.source is None
    assert cfg.storage.state_dir == Path("/var/lib/vfpd")
    assert cfg.storage.cache_dir == Path("/var/cache/vfpd")
    assert cfg.control.socket == Path("/run/vfpd/vfpd.sock")
    assert cfg.control.socket_mode == 0o600
    assert cfg.system
    write(tmp_path, "[watch]\npaths = ['/srv/v']\n")
    assert config.load(None, env).watch.paths == (Path("/srv/v"),)


def test_user_service_directories_are_not_system(tmp_path: Path) -> None:
    env = {"STATE_DIRECTORY": str(tmp_path / "state"), "RUNTIME_DIRECTORY": "/run/user/1000/vfpd",
           "CONFIGURATION_DIRECTORY": str(tmp_path / "conf")}
    cfg = config.load(None, env)
    assert not cfg.system
    assert cfg.control.socket == Path("/run/user/1000/vfpd/vfpd.sock")
    assert cfg.storage.state_dir == tmp_path / "state"


def test_defaults_match_docs() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "config.md").read_text()
    cfg = config.parse({}, None, {"STATE_DIRECTORY": "/s", "RUNTIME_DIRECTORY": "/r"})
    for section, obj in (("watch", cfg.watch), ("detect", cfg.detect), ("model", cfg.model),
                         ("decode", cfg.decode), ("notify", cfg.notify),
                         ("retrain", cfg.retrain), ("index", cfg.index)):
        for f in dataclasses.fields(obj):
            assert f"`{f.name}`" in doc, f"[{section}] {f.name} is not documented"


@pytest.mark.parametrize(("text", "key", "problem"), [
    ("[watch]\nsettle_seconds = 'soon'", "[watch] settle_seconds", "must be a number"),
    ("[watch]\nsettle_seconds = -1", "[watch] settle_seconds", "must be >= 0.0"),
    ("[watch]\npaths = '/one'", "[watch] paths", "must be a list"),
    ("[watch]\npaths = ['/a', '/a/b']", "[watch] paths", "overlap"),
    ("[watch]\npaths = ['/a']\npoll = ['/b']", "[watch] poll", "is not one of [watch] paths"),
    ("[watch]\nrecursive = 'yes'", "[watch] recursive", "must be true or false"),
    ("[watch]\npath = ['/a']", "[watch] path", "unknown key"),
    ("[wach]\npaths = []", "[wach]", "unknown section"),
    ("[detect]\nthreshold = 1.5", "[detect] threshold", "<= 1.0"),
    ("[control]\nsocket_mode = '0666'", "[control] socket_mode", "every local user"),
    ("[control]\nsocket_mode = 'rw'", "[control] socket_mode", "octal mode"),
    ("[notify.webhook]\nurl = 'ftp://x'", "[notify.webhook] url", "http:// or https://"),
    ("[notify.webhook]\ntimeout = 3", "[notify.webhook] url", "is required"),
    ("[notify]\nexec = 'rm -rf /'", "[notify] exec", "list of non-empty strings"),
    ("[model]\ndevice = 'tpu'", "[model] device", "one of auto, cpu, cuda"),
    ("[model]\nweights = 'nowhere.pt'", "[model] weights", "no such file"),
    ("[decode]\nworkers = 0", "[decode] workers", "between 1 and 64"),
    ("[decode]\nmax_attempts = 1.5", "[decode] max_attempts", "whole number"),
    ("[log]\nlevel = 'loud'", "[log] level", "one of debug"),
    ("watch = 3", "watch", "must be a table"),
    ("[retrain]\nschedule = '0 3 * *'", "[retrain] schedule", "five fields"),
    ("[retrain]\nschedule = '61 3 * * 0'", "[retrain] schedule", "not a valid cron"),
    ("[retrain]\nschedule = 3", "[retrain] schedule", "cron expression"),
    ("[retrain]\nmax_minutes = 0", "[retrain] max_minutes", "> 0.0"),
    ("[retrain]\nmax_minutes = 'long'", "[retrain] max_minutes", "must be a number"),
    ("[retrain]\nmin_videos = 2", "[retrain] min_videos", "between 4 and"),
    ("[retrain]\ndevice = 'tpu'", "[retrain] device", "one of auto, cpu, cuda"),
    ("[retrain]\nthreads = 0", "[retrain] threads", "between 1 and 256"),
    ("[retrain]\nmin_gain = 2", "[retrain] min_gain", "<= 1.0"),
    ("[retrain]\nmax_steps = -1", "[retrain] max_steps", "between 0 and"),
    ("[retrain]\nshedule = '0 3 * * 0'", "[retrain] shedule", "unknown key"),
    ("[index]\nbackend = 'annoy'", "[index] backend", "one of faiss, milvus"),
    ("[index]\nuri = 'http://m:19530'", "[index] uri", "backend = \"milvus\" only"),
    ("[index]\nbackend = 'milvus'\nuri = 'ftp://m'", "[index] uri", "server URL"),
    ("[index]\nbackend = 'milvus'\nuri = 'vectors.sqlite'", "[index] uri", "must end in .db"),
    ("[index]\nbackend = 'milvus'\nuri = ''", "[index] uri", "non-empty string"),
    ("[index]\nbackend = 'milvus'\ncollection = '9lives'", "[index] collection",
     "letters, digits and underscores"),
    ("[index]\nbackend = 'milvus'\nurl = 'x.db'", "[index] url", "unknown key"),
])
def test_errors_name_file_key_and_problem(tmp_path: Path, text: str, key: str,
                                          problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(path, env={})
    msg = str(err.value)
    assert msg.startswith(f"{path.resolve()}: {key}: "), msg
    assert problem in msg


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "missing.toml", env={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "[watch\n"), env={})
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        config.load(tmp_path / "bin.toml", env={})


def run_vfpd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vfpd.cli.daemon", *args], capture_output=True,
                          text=True, timeout=60)


def test_check_config_cli(tmp_path: Path) -> None:
    good = write(tmp_path, f"[watch]\npaths = ['{tmp_path}']\n[storage]\nstate_dir = 's'\n")
    done = run_vfpd("--config", str(good), "--check-config")
    assert done.returncode == 0, done.stderr
    assert "config ok" in done.stdout and str(tmp_path / "s") in done.stdout
    bad = write(tmp_path, "[watch]\nsettle_seconds = 'x'\n")
    done = run_vfpd("--config", str(bad), "--check-config")
    assert done.returncode == 2
    assert f"{bad.resolve()}: [watch] settle_seconds: must be a number" in done.stderr
    # Without --check-config a broken config stops start-up the same way.
    done = run_vfpd("--config", str(bad))
    assert done.returncode == 2 and "bad config" in done.stderr
    done = run_vfpd("--config", str(tmp_path / "nope.toml"))
    assert done.returncode == 2 and "file not found" in done.stderr
