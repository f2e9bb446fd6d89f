"""The daemon's configuration: one TOML file -> frozen dataclasses, validated once at load.

Defaults follow where the daemon runs: systemd's directory variables when set, the system paths
(/etc/vfpd, /var/lib/vfpd, /run/vfpd) for root, and the user's platformdirs directories otherwise.
Every key, with its default, is documented in docs/config.md.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from vfpd.files import DEFAULT_EXCLUDE, VIDEO_EXTENSIONS, FileRules

APP = "vfpd"
CONFIG_NAME = "config.toml"
SOCKET_NAME = "vfpd.sock"
SYSTEM_CONFIG_DIR = Path("/etc/vfpd")
SYSTEM_STATE_DIR = Path("/var/lib/vfpd")
SYSTEM_RUNTIME_DIR = Path("/run/vfpd")
SYSTEM_CACHE_DIR = Path("/var/cache/vfpd")

# Long enough for a copy over SMB/NFS to show a size change between two looks, short enough that a
# person dropping a file in hears about it within seconds.
DEFAULT_SETTLE_SECONDS = 2.0
# Polling a network mount walks the whole tree; once a minute keeps a NAS idle most of the time.
DEFAULT_POLL_INTERVAL = 60.0
# Frames of several videos go through the network together; 8 videos keeps memory under ~200 MB.
DEFAULT_BATCH_SIZE = 8
# The model takes ~100 MB; five quiet minutes covers a burst of copies without a reload each time.
DEFAULT_IDLE_UNLOAD_SECONDS = 300.0
# The base time limit of one decode (worker start-up included); long files get more, below.
# Five minutes on top of the per-second share means the decoder hangs.
DEFAULT_DECODE_TIMEOUT = 300.0
# Address space of a decode worker: the interpreter with numpy and PyAV reserves ~0.5 GB of it and
# a 4K decode with frame threads well under 1 GB more; 3 GB leaves room and stops a decoder bomb.
DEFAULT_DECODE_MEMORY_MB = 3072
# On top of timeout_seconds, a file gets this much per second of its declared length: the slowest
# decode path (every reference frame of 1080p H.264) runs at ~4x realtime on one busy core.
DEFAULT_TIMEOUT_PER_VIDEO_SECOND = 0.25
# A crash can be a passing memory squeeze; three tries tell that from a file that always fails.
DEFAULT_MAX_ATTEMPTS = 3
# A failed try is repeated after this long, doubling each time: a crash under memory pressure
# gets a calmer moment, a file that hangs does not occupy a decoder every few seconds.
DEFAULT_RETRY_SECONDS = 30.0
DEFAULT_WEBHOOK_TIMEOUT = 10.0
# With exponential back-off from 1 s, 5 retries span ~30 s: a receiver restarting is covered.
DEFAULT_WEBHOOK_RETRIES = 5
DEFAULT_EXEC_TIMEOUT = 60.0
# Neighbours fetched from the index per new file and verified frame by frame. The shipped model's
# video vectors rank copies high but not always first (candidates.VIDEO_MIN_SIM is off for that
# reason); 50 verifications cost ~50 ms per new file and keep copies from being missed.
DEFAULT_CANDIDATES = 50
LOG_LEVELS = ("debug", "info", "warning", "error")
# The sampling presets of vfpd/presets.py, by name (that module imports the matcher and FAISS,
# which checking a config does not need; tests/test_daemon_model_change.py checks the two agree).
PRESET_NAMES = ("accurate", "fast")
DEFAULT_PRESET = "accurate"
# Where the video vectors live ([index] backend): the FAISS file in the state directory (the
# embedded default), or a Milvus collection (issue 18: an embedded Milvus Lite file or a server).
INDEX_BACKENDS = ("faiss", "milvus")
DEFAULT_INDEX_BACKEND = "faiss"
# Milvus Lite's data directory in the state directory when [index] uri is not given.
DEFAULT_MILVUS_LITE_NAME = "milvus.db"
# Server addresses pymilvus speaks to; anything else is a Milvus Lite path, which pymilvus
# recognises by its .db ending.
MILVUS_SERVER_SCHEMES = ("http://", "https://", "tcp://", "unix:")
MILVUS_LITE_SUFFIX = ".db"
# Collections are named PREFIX_<digest of the model version> (vfpd/video_indexes.py): Milvus
# allows letters, digits and underscores, starting with a letter or underscore, 255 at most;
# 200 leaves room for the suffix.
DEFAULT_MILVUS_COLLECTION = "vfpd_videos"
MILVUS_COLLECTION_MAX = 200
# Retraining: an hour of CPU is what a weekly night run can spare; fewer than 20 videos give too
# few negatives (and a held-out split of two) to learn or judge anything.
DEFAULT_RETRAIN_MINUTES = 60.0
DEFAULT_RETRAIN_MIN_VIDEOS = 20
# One core: the daemon's own embedder and decoders keep working beside the training process.
DEFAULT_RETRAIN_THREADS = 1
# A candidate must beat the running model's average precision on the library's held-out split
# by this much: less than that is within what one seed against another changes.
DEFAULT_RETRAIN_MIN_GAIN = 0.005


class ConfigError(Exception):
    """A config the daemon cannot run with; the message names the file, the key and the problem."""

    def __init__(self, source: Path | None, key: str, problem: str) -> None:
        where = str(source) if source else "<defaults>"
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")
        self.source = source
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class WatchConfig:
    paths: tuple[Path, ...] = ()
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS
    recursive: bool = True
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    settle_seconds: float = DEFAULT_SETTLE_SECONDS
    poll: tuple[Path, ...] = ()  # roots watched by polling (network filesystems)
    poll_interval: float = DEFAULT_POLL_INTERVAL

    @property
    def rules(self) -> FileRules:
        return FileRules.of(self.extensions, self.exclude, self.recursive)


@dataclass(frozen=True)
class DetectConfig:
    threshold: float | None = None  # None: the [model] preset's threshold
    candidates: int = DEFAULT_CANDIDATES


@dataclass(frozen=True)
class StorageConfig:
    state_dir: Path
    cache_dir: Path


@dataclass(frozen=True)
class ControlConfig:
    socket: Path
    socket_mode: int = 0o600
    socket_group: str | None = None


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    timeout: float = DEFAULT_WEBHOOK_TIMEOUT
    retries: int = DEFAULT_WEBHOOK_RETRIES
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class NotifyConfig:
    log: bool = True
    desktop: bool = True  # only acts where a session bus and notify-send exist
    webhook: WebhookConfig | None = None
    exec: tuple[str, ...] = ()
    exec_timeout: float = DEFAULT_EXEC_TIMEOUT


@dataclass(frozen=True)
class ModelConfig:
    device: str = "auto"
    weights: Path | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    idle_unload_seconds: float = DEFAULT_IDLE_UNLOAD_SECONDS
    preset: str = DEFAULT_PRESET  # how files are sampled and matched (vfpd/presets.py)


@dataclass(frozen=True)
class DecodeConfig:
    workers: int = 1
    timeout_seconds: float = DEFAULT_DECODE_TIMEOUT
    timeout_per_video_second: float = DEFAULT_TIMEOUT_PER_VIDEO_SECOND
    memory_mb: int = DEFAULT_DECODE_MEMORY_MB
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_seconds: float = DEFAULT_RETRY_SECONDS


@dataclass(frozen=True)
class RetrainConfig:
    """[retrain]: when and how the model is adapted to the library (docs/config.md)."""

    schedule: str = ""  # a cron expression (minute hour day month day-of-week); "" disables
    max_minutes: float = DEFAULT_RETRAIN_MINUTES
    min_videos: int = DEFAULT_RETRAIN_MIN_VIDEOS
    device: str = "cpu"  # auto | cpu | cuda; CPU by default: the GPU may be the user's
    threads: int = DEFAULT_RETRAIN_THREADS
    min_gain: float = DEFAULT_RETRAIN_MIN_GAIN  # the gate's margin on the held-out split
    max_steps: int = 0  # 0: as many as max_minutes allows; else at most this many (reproducible)


@dataclass(frozen=True)
class IndexConfig:
    """[index]: where the video vectors are kept (docs/config.md)."""

    backend: str = DEFAULT_INDEX_BACKEND
    uri: str | None = None  # milvus: a Milvus Lite path (.db) or a server URL; None with faiss
    collection: str = DEFAULT_MILVUS_COLLECTION  # milvus: the prefix of the collections' names


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"


@dataclass(frozen=True)
class Config:
    storage: StorageConfig
    control: ControlConfig
    watch: WatchConfig = field(default_factory=WatchConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    log: LogConfig = field(default_factory=LogConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    source: Path | None = None  # the file it was read from; None for built-in defaults
    system: bool = False  # running as the system service (system paths as defaults)


def is_system(env: Mapping[str, str]) -> bool:
    """Whether defaults should be the system service's: systemd's directory variables point into
    /etc or /var/lib, or we run as root without them."""
    conf = env.get("CONFIGURATION_DIRECTORY", "")
    state = env.get("STATE_DIRECTORY", "")
    if conf or state:
        return conf.startswith("/etc/") or state.startswith("/var/lib/")
    return os.geteuid() == 0


def _first_dir(env: Mapping[str, str], name: str) -> Path | None:
    # systemd joins several directories with ':' when the unit lists more than one; ours is first.
    value = env.get(name, "")
    return Path(value.split(":")[0]) if value else None


def _place(env: Mapping[str, str], variable: str, system: Path,
           user: Callable[[str], str]) -> Path:
    """Where systemd's `variable` points, else the system location, else the user's. `user` is
    asked only when needed: platformdirs warns when, say, root has no XDG_RUNTIME_DIR."""
    given = _first_dir(env, variable)
    if given is not None:
        return given
    return system if is_system(env) else Path(user(APP))


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return _place(env, "CONFIGURATION_DIRECTORY", SYSTEM_CONFIG_DIR,
                  platformdirs.user_config_dir) / CONFIG_NAME


def default_state_dir(env: Mapping[str, str]) -> Path:
    return _place(env, "STATE_DIRECTORY", SYSTEM_STATE_DIR, platformdirs.user_state_dir)


def default_cache_dir(env: Mapping[str, str]) -> Path:
    return _place(env, "CACHE_DIRECTORY", SYSTEM_CACHE_DIR, platformdirs.user_cache_dir)


def default_socket(env: Mapping[str, str]) -> Path:
    return _place(env, "RUNTIME_DIRECTORY", SYSTEM_RUNTIME_DIR,
                  platformdirs.user_runtime_dir) / SOCKET_NAME


def load(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config.

    An explicit `path` must exist. Without one, the default location is read when it exists and
    the built-in defaults are used when it does not (a fresh install watches nothing yet).
    """
    env = os.environ if env is None else env
    if path is None:
        path = default_config_path(env)
        if not path.exists():
            return parse({}, None, env)
    path = Path(path).expanduser()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except OSError as e:
        raise ConfigError(path, "", f"cannot read: {e.strerror or e}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(path, "", f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "", f"not valid TOML: {e}") from None
    return parse(data, path.resolve(), env)


class _Section:
    """Typed reads from one TOML table that remember which keys were used, to reject typos."""

    def __init__(self, data: Mapping[str, Any], name: str, source: Path | None) -> None:
        self.name = name
        self.source = source
        self.data = data
        self.used: set[str] = set()

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.source, f"[{self.name}] {key}" if key else f"[{self.name}]", problem)

    def get(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key)

    def has(self, key: str) -> bool:
        return key in self.data

    def boolean(self, key: str, default: bool) -> bool:
        v = self.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.error(key, f"must be true or false, got {v!r}")
        return v

    def number(self, key: str, default: float, low: float, high: float | None = None,
               strict_low: bool = False) -> float:
        v = self.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.error(key, f"must be a number, got {v!r}")
        if (v <= low if strict_low else v < low) or (high is not None and v > high):
            bound = f"> {low}" if strict_low else f">= {low}"
            rng = f"{bound} and <= {high}" if high is not None else bound
            raise self.error(key, f"must be {rng}, got {v!r}")
        return float(v)

    def integer(self, key: str, default: int, low: int, high: int | None = None) -> int:
        v = self.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(key, f"must be a whole number, got {v!r}")
        if v < low or (high is not None and v > high):
            rng = f"between {low} and {high}" if high is not None else f">= {low}"
            raise self.error(key, f"must be {rng}, got {v!r}")
        return v

    def string(self, key: str, default: str | None, choices: tuple[str, ...] = ()) -> str | None:
        v = self.get(key)
        if v is None:
            return default
        if not isinstance(v, str) or not v:
            raise self.error(key, f"must be a non-empty string, got {v!r}")
        if choices and v.lower() not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, got {v!r}")
        return v.lower() if choices else v

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        v = self.get(key)
        if v is None:
            return default
        if not isinstance(v, list) or not all(isinstance(s, str) and s for s in v):
            raise self.error(key, f"must be a list of non-empty strings, got {v!r}")
        return tuple(v)

    def path(self, key: str, default: Path | None) -> Path | None:
        v = self.string(key, None)
        return default if v is None else _resolve(v, self.source)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key (misspelt? see docs/config.md)")


def _resolve(value: str, source: Path | None) -> Path:
    """`~` is the home directory; a relative path is relative to the config file's folder."""
    p = Path(value).expanduser()
    if not p.is_absolute():
        p = (source.parent if source else Path.cwd()) / p
    return Path(os.path.normpath(p))


SECTIONS = ("watch", "detect", "storage", "control", "notify", "model", "decode", "log",
            "retrain", "index")


def parse(data: Mapping[str, Any], source: Path | None = None,
          env: Mapping[str, str] | None = None) -> Config:
    """Validate a parsed TOML document into a Config; raise ConfigError on the first problem."""
    env = os.environ if env is None else env
    for name, value in data.items():
        if name not in SECTIONS:
            raise ConfigError(source, f"[{name}]", "unknown section (misspelt? see docs/config.md)")
        if not isinstance(value, dict):
            raise ConfigError(source, name, "must be a table, e.g. [" + name + "]")

    def section(name: str) -> _Section:
        return _Section(data.get(name, {}), name, source)

    watch = _watch(section("watch"))
    s = section("detect")
    detect = DetectConfig(
        threshold=(s.number("threshold", 0.0, 0.0, 1.0) if s.has("threshold") else None),
        candidates=s.integer("candidates", DEFAULT_CANDIDATES, 1, 1000),
    )
    s.finish()

    s = section("storage")
    storage = StorageConfig(
        state_dir=s.path("state_dir", default_state_dir(env)),  # type: ignore[arg-type]
        cache_dir=s.path("cache_dir", default_cache_dir(env)),  # type: ignore[arg-type]
    )
    s.finish()

    control = _control(section("control"), env)
    notify = _notify(section("notify"), source, env)

    s = section("model")
    model = ModelConfig(
        device=s.string("device", "auto", ("auto", "cpu", "cuda")) or "auto",
        weights=s.path("weights", None),
        preset=s.string("preset", DEFAULT_PRESET, PRESET_NAMES) or DEFAULT_PRESET,
        batch_size=s.integer("batch_size", DEFAULT_BATCH_SIZE, 1, 1024),
        idle_unload_seconds=s.number("idle_unload_seconds", DEFAULT_IDLE_UNLOAD_SECONDS, 0.0),
    )
    if model.weights is not None and not model.weights.is_file():
        raise s.error("weights", f"no such file: {model.weights}")
    s.finish()

    s = section("decode")
    decode = DecodeConfig(
        workers=s.integer("workers", 1, 1, 64),
        timeout_seconds=s.number("timeout_seconds", DEFAULT_DECODE_TIMEOUT, 0.0, strict_low=True),
        timeout_per_video_second=s.number("timeout_per_video_second",
                                          DEFAULT_TIMEOUT_PER_VIDEO_SECOND, 0.0),
        memory_mb=s.integer("memory_mb", DEFAULT_DECODE_MEMORY_MB, 256),
        max_attempts=s.integer("max_attempts", DEFAULT_MAX_ATTEMPTS, 1, 100),
        retry_seconds=s.number("retry_seconds", DEFAULT_RETRY_SECONDS, 0.0),
    )
    s.finish()

    s = section("log")
    log = LogConfig(level=s.string("level", "info", LOG_LEVELS) or "info")
    s.finish()

    retrain = _retrain(section("retrain"))
    index = _index(section("index"), storage.state_dir)
    return Config(storage=storage, control=control, watch=watch, detect=detect, notify=notify,
                  model=model, decode=decode, log=log, retrain=retrain, index=index,
                  source=source, system=is_system(env))


def _index(s: _Section, state_dir: Path) -> IndexConfig:
    backend = s.string("backend", DEFAULT_INDEX_BACKEND, INDEX_BACKENDS) or DEFAULT_INDEX_BACKEND
    raw_uri = s.string("uri", None)
    collection = s.string("collection", DEFAULT_MILVUS_COLLECTION) or DEFAULT_MILVUS_COLLECTION
    if backend != "milvus":
        for key in ("uri", "collection"):
            if s.has(key):
                raise s.error(key, f"applies to backend = \"milvus\" only (backend is "
                                   f"{backend!r})")
        s.finish()
        return IndexConfig(backend)
    if raw_uri is None:
        uri = str(state_dir / DEFAULT_MILVUS_LITE_NAME)
    elif raw_uri.startswith(MILVUS_SERVER_SCHEMES):
        uri = raw_uri
    elif "://" in raw_uri:
        raise s.error("uri", f"must be a Milvus server URL ({', '.join(MILVUS_SERVER_SCHEMES)}) "
                             f"or a Milvus Lite file ending in {MILVUS_LITE_SUFFIX}, got "
                             f"{raw_uri!r}")
    elif not raw_uri.endswith(MILVUS_LITE_SUFFIX):
        raise s.error("uri", f"a Milvus Lite file must end in {MILVUS_LITE_SUFFIX} (pymilvus "
                             f"tells it from a server by that), got {raw_uri!r}")
    else:
        uri = str(_resolve(raw_uri, s.source))
    if (len(collection) > MILVUS_COLLECTION_MAX
            or not (collection[0].isascii() and (collection[0].isalpha() or collection[0] == "_"))
            or not all(c.isascii() and (c.isalnum() or c == "_") for c in collection)):
        raise s.error("collection", f"must be letters, digits and underscores, starting with a "
                                    f"letter or underscore, at most {MILVUS_COLLECTION_MAX} "
                                    f"characters, got {collection!r}")
    s.finish()
    return IndexConfig(backend, uri, collection)


def _retrain(s: _Section) -> RetrainConfig:
    raw = s.get("schedule")
    if raw is None:
        schedule = ""
    elif not isinstance(raw, str):
        raise s.error("schedule", f"must be a cron expression such as \"0 3 * * 0\" or \"\", "
                                  f"got {raw!r}")
    else:
        schedule = " ".join(raw.split())
        if schedule:
            problem = cron_problem(schedule)
            if problem:
                raise s.error("schedule", f"{problem}, got {raw!r}")
    r = RetrainConfig(
        schedule=schedule,
        max_minutes=s.number("max_minutes", DEFAULT_RETRAIN_MINUTES, 0.0, 24 * 60.0,
                             strict_low=True),
        min_videos=s.integer("min_videos", DEFAULT_RETRAIN_MIN_VIDEOS, 4, 10_000_000),
        device=s.string("device", "cpu", ("auto", "cpu", "cuda")) or "cpu",
        threads=s.integer("threads", DEFAULT_RETRAIN_THREADS, 1, 256),
        min_gain=s.number("min_gain", DEFAULT_RETRAIN_MIN_GAIN, -1.0, 1.0),
        max_steps=s.integer("max_steps", 0, 0, 10_000_000),
    )
    s.finish()
    return r


def cron_problem(expr: str) -> str | None:
    """Why `expr` is not a five-field cron expression APScheduler accepts (None when it is)."""
    if len(expr.split()) not in (5, 6):
        return ("must have five fields (minute hour day month day-of-week), e.g. \"0 3 * * 0\", "
                "or six with seconds first")
    try:
        from vfpd.cron import cron_trigger

        cron_trigger(expr, timezone="UTC")
    except (ValueError, TypeError) as e:
        return f"not a valid cron expression ({e})"
    return None


def _watch(s: _Section) -> WatchConfig:
    paths = tuple(_resolve(p, s.source) for p in s.strings("paths", ()))
    for i, p in enumerate(paths):
        for q in paths[:i]:
            if p == q:
                raise s.error("paths", f"{p} is listed twice")
            if p.is_relative_to(q) or q.is_relative_to(p):
                raise s.error("paths", f"{p} and {q} overlap; list only the outer folder")
    exts = []
    for e in s.strings("extensions", VIDEO_EXTENSIONS):
        e = e.lower()
        exts.append(e if e.startswith(".") else "." + e)
    poll_raw = s.get("poll")
    if poll_raw is None or poll_raw is False:
        poll: tuple[Path, ...] = ()
    elif poll_raw is True:
        poll = paths
    elif isinstance(poll_raw, list) and all(isinstance(p, str) and p for p in poll_raw):
        poll = tuple(_resolve(p, s.source) for p in poll_raw)
        for p in poll:
            if p not in paths:
                raise s.error("poll", f"{p} is not one of [watch] paths")
    else:
        raise s.error("poll", f"must be true, false or a list of paths from [watch] paths, "
                              f"got {poll_raw!r}")
    w = WatchConfig(
        paths=paths,
        extensions=tuple(dict.fromkeys(exts)),
        recursive=s.boolean("recursive", True),
        exclude=s.strings("exclude", DEFAULT_EXCLUDE),
        settle_seconds=s.number("settle_seconds", DEFAULT_SETTLE_SECONDS, 0.0),
        poll=poll,
        poll_interval=s.number("poll_interval", DEFAULT_POLL_INTERVAL, 0.0, strict_low=True),
    )
    s.finish()
    return w


def _control(s: _Section, env: Mapping[str, str]) -> ControlConfig:
    group = s.string("socket_group", None)
    mode_raw = s.get("socket_mode")
    if mode_raw is None:
        mode = 0o660 if group else 0o600
    elif isinstance(mode_raw, str) and mode_raw.strip().lstrip("0o").isdigit():
        try:
            mode = int(mode_raw.strip().removeprefix("0o"), 8)
        except ValueError:
            raise s.error("socket_mode", f"must be an octal mode such as \"0600\", "
                                         f"got {mode_raw!r}") from None
    elif isinstance(mode_raw, int) and not isinstance(mode_raw, bool):
        mode = mode_raw  # TOML's 0o600 arrives as an int
    else:
        raise s.error("socket_mode", f"must be an octal mode such as \"0600\", got {mode_raw!r}")
    if mode & ~0o777:
        raise s.error("socket_mode", f"must be within 0777, got {oct(mode)}")
    if mode & 0o007:
        raise s.error("socket_mode", f"{oct(mode)} lets every local user in; use 0600 or 0660")
    c = ControlConfig(socket=s.path("socket", default_socket(env)),  # type: ignore[arg-type]
                      socket_mode=mode, socket_group=group)
    s.finish()
    return c


def _header_value(h: _Section, name: str, value: object, env: Mapping[str, str]) -> str:
    """A header's value: a string, or { credential = "ID" }, read from the service's systemd
    credentials ($CREDENTIALS_DIRECTORY/ID, LoadCredential=), so the secret stays out of a config
    file that others can read (docs/systemd.md)."""
    if isinstance(value, str):
        return value
    if not (isinstance(value, dict) and set(value) == {"credential"}
            and isinstance(value["credential"], str) and value["credential"]
            and "/" not in value["credential"]):
        raise h.error("headers", f"{name} must be a \"value\" string or {{ credential = \"ID\" }}")
    directory = env.get("CREDENTIALS_DIRECTORY", "")
    if not directory:
        raise h.error("headers", f"{name} names the credential {value['credential']!r}, but no "
                                 "credentials were passed (LoadCredential= in the unit)")
    try:
        return (Path(directory) / value["credential"]).read_text(encoding="utf-8").strip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        raise h.error("headers", f"{name}: cannot read the credential "
                                 f"{value['credential']!r}: {e}") from None


def _notify(s: _Section, source: Path | None, env: Mapping[str, str]) -> NotifyConfig:
    hook_raw = s.get("webhook")
    webhook = None
    if hook_raw is not None:
        if isinstance(hook_raw, str):
            hook_raw = {"url": hook_raw}
        if not isinstance(hook_raw, dict):
            raise s.error("webhook", "must be a table [notify.webhook] with url = \"http://...\"")
        h = _Section(hook_raw, "notify.webhook", source)
        url = h.string("url", None)
        if url is None:
            raise h.error("url", "is required")
        if not url.startswith(("http://", "https://")):
            raise h.error("url", f"must start with http:// or https://, got {url!r}")
        headers_raw = h.get("headers") or {}
        if not isinstance(headers_raw, dict):
            raise h.error("headers", "must be a table of header = \"value\" strings")
        headers_raw = {k: _header_value(h, k, v, env) for k, v in headers_raw.items()}
        webhook = WebhookConfig(
            url=url,
            timeout=h.number("timeout", DEFAULT_WEBHOOK_TIMEOUT, 0.0, strict_low=True),
            retries=h.integer("retries", DEFAULT_WEBHOOK_RETRIES, 0, 100),
            headers=tuple(sorted(headers_raw.items())),
        )
        h.finish()
    argv = s.strings("exec", ())
    n = NotifyConfig(
        log=s.boolean("log", True),
        desktop=s.boolean("desktop", True),
        webhook=webhook,
        exec=argv,
        exec_timeout=s.number("exec_timeout", DEFAULT_EXEC_TIMEOUT, 0.0, strict_low=True),
    )
    s.finish()
    return n
