"""Fingerprints (one per content and model version), their change log, and the sampled frames."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from vfpd.catalog.codecs import (
    decode_frames,
    encode_frames,
    f32,
    fingerprint_from_row,
    frames_blob,
    frames_sampling,
    sampling_tag,
)
from vfpd.catalog.core import ITER_BATCH, CatalogCore, chunks, stream
from vfpd.catalog.vocabulary import FileState
from vfpd.detail import Stills
from vfpd.fingerprint import VECTOR_DIM, Fingerprint
from vfpd.media import SampledVideo, SamplingSettings


@dataclass(frozen=True)
class StoredFingerprint:
    id: int
    """Catalog row id: the id of this vector in the FAISS index."""
    hash: str
    fingerprint: Fingerprint


@dataclass(frozen=True)
class Change:
    """One entry of the fingerprint change log, in sequence order."""

    seq: int
    op: str  # "add" | "remove"
    fingerprint_id: int
    vector: np.ndarray | None  # for "add" (unless the fingerprint was removed since)


_FP_COLS = ("id, hash, vector, frame_features, timestamps, informative, duration, model_version, "
            "stills")


def _stored(row: tuple) -> StoredFingerprint:
    return StoredFingerprint(row[0], row[1], fingerprint_from_row(row[2:]))


class FingerprintStore(CatalogCore):
    """Fingerprints and sampled frames of contents."""

    def has_fingerprint(self, content_hash: str, model_version: str) -> bool:
        return self._reader().execute(
            "SELECT 1 FROM fingerprints WHERE hash = ? AND model_version = ?",
            (content_hash, model_version)).fetchone() is not None

    def fingerprint(self, content_hash: str, model_version: str) -> StoredFingerprint | None:
        row = self._reader().execute(
            f"SELECT {_FP_COLS} FROM fingerprints WHERE hash = ? AND model_version = ?",
            (content_hash, model_version)).fetchone()
        return _stored(row) if row else None

    def ids_without_stills(self, model_version: str) -> list[int]:
        """Fingerprints of one model version stored before still pictures were kept."""
        return [r[0] for r in self._reader().execute(
            "SELECT id FROM fingerprints WHERE model_version = ? AND stills IS NULL ORDER BY id",
            (model_version,))]

    def put_stills(self, fingerprint_id: int, stills: Stills) -> None:
        """Keep the still pictures of a fingerprint stored before they were kept (the index is
        not concerned: they take no part in it)."""
        with self.transaction() as w:
            w.execute("UPDATE fingerprints SET stills = ? WHERE id = ?",
                      (stills.encode(), fingerprint_id))

    def fingerprints_by_ids(self, ids: Iterable[int]) -> dict[int, StoredFingerprint]:
        """Fingerprints for index ids (k-NN results); unknown ids are left out."""
        ids = [int(i) for i in ids if int(i) >= 0]
        out: dict[int, StoredFingerprint] = {}
        conn = self._reader()
        for chunk, marks in chunks(ids):
            for row in conn.execute(f"SELECT {_FP_COLS} FROM fingerprints WHERE id IN ({marks})",
                                    chunk):
                out[row[0]] = _stored(row)
        return out

    def iter_fingerprints(self, model_version: str) -> Iterator[StoredFingerprint]:
        """Every fingerprint of one model version, in id order, streamed."""
        sql = f"SELECT {_FP_COLS} FROM fingerprints WHERE model_version = ? ORDER BY id"
        yield from (_stored(row) for row in stream(self._reader(), sql, (model_version,)))

    def snapshot_vectors(self, model_version: str, batch: int = ITER_BATCH
                         ) -> tuple[int, Iterator[tuple[np.ndarray, np.ndarray]]]:
        """(sequence, batches) read in one read transaction, so the vectors are exactly the
        catalog state at that sequence (an index rebuilt from them covers it). Exhaust or close
        the iterator promptly: it holds a read snapshot."""
        conn = self._connect(readonly=True)
        conn.execute("BEGIN")
        seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM fingerprint_changes").fetchone()[0]

        def gen() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            try:
                cur = conn.execute("SELECT id, vector FROM fingerprints WHERE model_version = ? "
                                   "ORDER BY id", (model_version,))
                while rows := cur.fetchmany(batch):
                    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                    vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(
                        len(rows), VECTOR_DIM)
                    yield ids, vectors
            finally:
                conn.close()
        return seq, gen()

    def sequence(self) -> int:
        """The catalog's fingerprint sequence: grows with every fingerprint added or removed."""
        return self._reader().execute(
            "SELECT COALESCE(MAX(seq), 0) FROM fingerprint_changes").fetchone()[0]

    def changes_since(self, model_version: str, seq: int) -> Iterator[Change]:
        """Fingerprint adds and removes of one model version after `seq`, in order (index
        catch-up). An add whose fingerprint was removed later comes with vector None."""
        sql = ("SELECT c.seq, c.op, c.fingerprint_id, f.vector FROM fingerprint_changes c "
               "LEFT JOIN fingerprints f ON f.id = c.fingerprint_id "
               "WHERE c.model_version = ? AND c.seq > ? ORDER BY c.seq")
        for s, op, fid, vec in stream(self._reader(), sql, (model_version, seq)):
            yield Change(s, op, fid, np.frombuffer(vec, dtype="<f4") if vec is not None else None)

    def model_versions(self) -> dict[str, int]:
        """Fingerprint count per model version."""
        return dict(self._reader().execute(
            "SELECT model_version, COUNT(*) FROM fingerprints GROUP BY model_version"))

    def count_unfingerprinted(self, model_version: str) -> int:
        """Contents that a path in good standing points at and that have no fingerprint of
        `model_version`: what re-fingerprinting after a model change still has to do."""
        return self._reader().execute(
            "SELECT COUNT(*) FROM (SELECT DISTINCT hash FROM files "
            f"WHERE state = '{FileState.OK}' AND hash IS NOT NULL) h "
            "WHERE NOT EXISTS (SELECT 1 FROM fingerprints f "
            "WHERE f.hash = h.hash AND f.model_version = ?)", (model_version,)).fetchone()[0]

    def put_fingerprints(self, items: Iterable[tuple[str, Fingerprint]]) -> list[int]:
        """Store fingerprints of known contents in one transaction (re-embedding for another model
        version: the files and jobs are not touched). Returns their ids."""
        now = time.time()
        with self.transaction() as w:
            return [put_fingerprint(w, h, fp, now) for h, fp in items]

    def fingerprinted_without(self, have: str, lacking: str, limit: int) -> list[str]:
        """Up to `limit` contents that a path in good standing points at, with a fingerprint of
        model version `have` and none of `lacking`: what re-embedding still has to do."""
        return [r[0] for r in self._reader().execute(
            "SELECT DISTINCT f.hash FROM fingerprints f JOIN files p ON p.hash = f.hash "
            f"WHERE f.model_version = ? AND p.state = '{FileState.OK}' AND NOT EXISTS "
            "(SELECT 1 FROM fingerprints g WHERE g.hash = f.hash AND g.model_version = ?) "
            "ORDER BY f.hash LIMIT ?", (have, lacking, limit))]

    def hashes_with_frames(self) -> list[str]:
        """Contents with stored sampled frames that a path in good standing points at, in hash
        order (retraining's data: no decoding)."""
        return [r[0] for r in self._reader().execute(
            "SELECT DISTINCT fr.hash FROM frames fr JOIN files p ON p.hash = fr.hash "
            f"WHERE p.state = '{FileState.OK}' ORDER BY fr.hash")]

    # -- sampled frames ---------------------------------------------------------------------------

    def load_frames(self, content_hash: str, sampling: SamplingSettings | None = None
                    ) -> SampledVideo | None:
        """The frames sampled from this content, as stored (no decoding of the video). With
        `sampling`: only if they were sampled that way (else None, as if none were stored)."""
        row = self._reader().execute("SELECT data FROM frames WHERE hash = ?",
                                     (content_hash,)).fetchone()
        if row is None:
            return None
        if sampling is not None and frames_sampling(row[0]) != sampling_tag(sampling):
            return None
        return decode_frames(row[0])


def put_fingerprint(w: sqlite3.Connection, content_hash: str, fp: Fingerprint,
                    now: float) -> int:
    """Store (or replace) the fingerprint of `content_hash` for its model version, logging the
    change. Returns its id."""
    vector = np.asarray(fp.vector, dtype=np.float32)
    if not np.all(np.isfinite(vector)):
        raise ValueError("fingerprint vector has NaN or infinite values")
    delete_fingerprints(w, "hash = ? AND model_version = ?", (content_hash, fp.model_version))
    cur = w.execute(
        "INSERT INTO fingerprints(hash, model_version, vector, frame_features, timestamps, "
        "informative, duration, stills, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (content_hash, fp.model_version, f32(vector), frames_blob(fp.frame_features),
         np.asarray(fp.timestamps, dtype="<f8").tobytes(),
         np.asarray(fp.informative, dtype=np.uint8).tobytes(), float(fp.duration),
         None if fp.stills is None else fp.stills.encode(), now))
    fid = cur.lastrowid
    w.execute("INSERT INTO fingerprint_changes(fingerprint_id, model_version, op) "
              "VALUES (?, ?, 'add')", (fid, fp.model_version))
    return fid


def delete_fingerprints(w: sqlite3.Connection, where: str, args: tuple) -> int:
    """Delete the fingerprints matching `where`, logging each removal for the index."""
    rows = w.execute(f"SELECT id, model_version FROM fingerprints WHERE {where}",
                     args).fetchall()
    w.executemany("INSERT INTO fingerprint_changes(fingerprint_id, model_version, op) "
                  "VALUES (?, ?, 'remove')", rows)
    w.executemany("DELETE FROM fingerprints WHERE id = ?", [(r[0],) for r in rows])
    return len(rows)


def put_frames(w: sqlite3.Connection, content_hash: str, sampled: SampledVideo,
               now: float, sampling: SamplingSettings | None = None) -> None:
    w.execute("INSERT OR REPLACE INTO frames(hash, data, created) VALUES (?, ?, ?)",
              (content_hash, encode_frames(sampled, sampling), now))
