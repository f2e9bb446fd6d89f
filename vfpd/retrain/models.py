"""The model versions the daemon has run or judged: weights files under <state>/models/ and one
JSON registry of them (which is active, which came before, each one's gate scores and reason)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from vfpd.atomic import atomic_writer
from vfpd.model.version import weights_version

MODELS_DIR = "models"
REGISTRY_NAME = "models.json"

ACTIVE = "active"
PREVIOUS = "previous"  # the one before the active one: kept (weights, fingerprints) for a rollback
KEPT_ASIDE = "kept-aside"  # judged and not promoted, kept with its scores and the reason
RETIRED = "retired"
BASE = "base"  # the configured (or shipped) weights, never copied


class ModelStore:
    """<state>/models/: weights by version and the registry. Thread-safe; writes are atomic."""

    def __init__(self, state_dir: Path, configured: Path) -> None:
        """`configured`: the [model] weights (or the shipped ones) the versions derive from."""
        self.dir = state_dir / MODELS_DIR
        self.path = self.dir / REGISTRY_NAME
        self.configured = configured
        self.base_version = weights_version(configured)
        self._lock = threading.Lock()

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError):
            # A damaged registry must not stop the daemon: the configured weights serve.
            data = {}
        if data.get("base") != self.base_version:
            # Another [model] weights was configured since: its versions do not apply.
            data = {"base": self.base_version, "active": None, "versions": []}
        data.setdefault("versions", [])
        return data

    def _write(self, data: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with atomic_writer(self.path) as f:
            f.write(json.dumps(data, indent=2).encode())

    def weights_of(self, version: str) -> Path:
        """The weights file of a version (a unique prefix will do; the base's is the configured
        file). KeyError when unknown."""
        data = self._read()
        if self.base_version.startswith(version):
            return self.configured
        found = [v for v in data["versions"] if v["version"].startswith(version)]
        if len(found) != 1:
            raise KeyError(version)
        return self.dir / found[0]["file"]

    def active_weights(self) -> Path:
        """What the daemon runs: the active promoted version, else the configured weights."""
        with self._lock:
            data = self._read()
        active = data.get("active")
        if active and active != self.base_version:
            path = self.dir / f"{active}.pt"
            if path.is_file():
                return path
        return self.configured

    def record(self, weights: Path, status: str, scores: dict[str, Any], reason: str,
               parent: str) -> dict[str, Any]:
        """Keep a judged candidate's weights and what the gate said of it."""
        version = weights_version(weights)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        dest = self.dir / f"{version}.pt"
        if not dest.exists():
            tmp = dest.with_suffix(".tmp")
            shutil.copyfile(weights, tmp)
            tmp.replace(dest)
        rec = {"version": version, "file": dest.name, "created": time.time(), "parent": parent,
               "status": status, "scores": scores, "reason": reason}
        with self._lock:
            data = self._read()
            data["versions"] = [v for v in data["versions"] if v["version"] != version] + [rec]
            self._write(data)
        return rec

    def activate(self, version: str) -> None:
        """Make `version` (or the base) the active one; the one active before becomes previous,
        and an older previous is retired (its weights file is deleted)."""
        with self._lock:
            data = self._read()
            old = data.get("active") or self.base_version
            for v in data["versions"]:
                if v["status"] == PREVIOUS and v["version"] != version:
                    v["status"] = RETIRED
                    (self.dir / v["file"]).unlink(missing_ok=True)
                if v["version"] == old and old != version:
                    v["status"] = PREVIOUS
                if v["version"] == version:
                    v["status"] = ACTIVE
            data["active"] = None if version == self.base_version else version
            data["previous"] = old if old != version else data.get("previous")
            self._write(data)

    def listing(self) -> list[dict[str, Any]]:
        """Every version, the base first, with its status, scores and reason."""
        with self._lock:
            data = self._read()
        active = data.get("active") or self.base_version
        base = {"version": self.base_version, "file": str(self.configured), "status":
                ACTIVE if active == self.base_version else
                (PREVIOUS if data.get("previous") == self.base_version else BASE),
                "scores": None, "reason": "the configured weights", "created": None,
                "parent": None}
        return [base] + list(data["versions"])
