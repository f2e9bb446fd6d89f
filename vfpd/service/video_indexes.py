"""Where the daemon keeps its video index ([index] backend): a FAISS file in the state directory,
or one Milvus collection per model version (a Milvus Lite file or a server). The daemon opens,
and promotion builds, its video indexes through one of these (wiring.video_indexes picks it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import blake3

from vfpd.config import MILVUS_LITE_SUFFIX
from vfpd.index import open_index

if TYPE_CHECKING:
    from vfpd.catalog import Catalog
    from vfpd.library import VideoIndex

MODEL_DIGEST_CHARS = 16
"""Hex digits of the model version's BLAKE3 in a collection's name: model versions hold
characters Milvus names may not, and 64 bits tell a library's few versions apart."""


class IndexBackendUnavailable(Exception):
    """The configured backend cannot be reached or is not installed; the daemon cannot start."""


class VideoIndexes(Protocol):
    def open(self, catalog: Catalog, model_version: str) -> VideoIndex:
        """The running model's index, caught up with the catalog or rebuilt from it."""

    def build(self, catalog: Catalog, model_version: str) -> VideoIndex:
        """Another model's index, built beside the running one (a promotion)."""

    def keep_only(self, model_versions: set[str]) -> None:
        """Drop the stored indexes of every other model version (after a promotion: the new
        model's and the one it replaced, which a rollback starts from, stay)."""

    def close(self) -> None:
        """Let go of what the indexes hold (connections); call after the last save."""


class FaissIndexes:
    """The embedded default: the index saved in one file (vfpd.index)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self, catalog: Catalog, model_version: str) -> VideoIndex:
        return open_index(catalog, model_version, self.path)

    def build(self, catalog: Catalog, model_version: str) -> VideoIndex:
        # Saved to self.path by the pipeline once swapped in; a file of its own until then.
        return open_index(catalog, model_version,
                          self.path.with_name(f"{self.path.name}.{model_version}"),
                          save_rebuilt=False)

    def keep_only(self, model_versions: set[str]) -> None:
        """Nothing to drop: the one file is replaced at each swap (the previous one kept
        beside it by promotion)."""

    def close(self) -> None:
        """Nothing held between saves."""


class MilvusIndexes:
    """Collections named PREFIX_<digest of the model version> in one Milvus: the running model's
    and a promoted one's side by side (the previous model's stays, as a rollback, like the FAISS
    file kept as .previous). A `uri` ending in .db is a Milvus Lite data directory, served in this
    process until close()."""

    def __init__(self, uri: str, prefix: str) -> None:
        try:
            from pymilvus import MilvusClient
            from pymilvus.exceptions import MilvusException
        except ImportError as e:
            raise IndexBackendUnavailable(
                f"[index] backend = \"milvus\" needs pymilvus and milvus-lite: pip install "
                f"'vfpd[scale]' ({e})") from e
        self.uri = uri
        self.prefix = prefix
        try:
            self.client = MilvusClient(uri)
        except MilvusException as e:
            raise IndexBackendUnavailable(f"cannot open Milvus at {uri}: {e}") from e

    def collection(self, model_version: str) -> str:
        digest = blake3.blake3(model_version.encode("utf-8")).hexdigest()[:MODEL_DIGEST_CHARS]
        return f"{self.prefix}_{digest}"

    def open(self, catalog: Catalog, model_version: str) -> VideoIndex:
        from vfpd.milvus_index import open_milvus_index

        return open_milvus_index(self.client, self.collection(model_version), catalog,
                                 model_version)

    def build(self, catalog: Catalog, model_version: str) -> VideoIndex:
        return self.open(catalog, model_version)

    def keep_only(self, model_versions: set[str]) -> None:
        """Each model's collection holds a copy of every vector: without this a weekly retrain
        would add one a week."""
        keep = {self.collection(v) for v in model_versions}
        for name in self.client.list_collections():
            if self._ours(name) and name not in keep:
                self.client.drop_collection(name)

    def _ours(self, name: str) -> bool:
        """A collection this prefix names (PREFIX_<digest>), not another instance's whose
        prefix merely starts with it."""
        head, _, digest = name.rpartition("_")
        return (head == self.prefix and len(digest) == MODEL_DIGEST_CHARS
                and all(c in "0123456789abcdef" for c in digest))

    def close(self) -> None:
        self.client.close()
        if self.uri.endswith(MILVUS_LITE_SUFFIX):
            # The Lite server runs in this process (gRPC threads) until released.
            from milvus_lite import server_manager_instance

            server_manager_instance.release_server(self.uri)
