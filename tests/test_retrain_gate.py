"""The retraining pieces without a daemon: gate metrics and decision, the regression suite, the
model store, crontab weekdays, and the catalog's APScheduler job store."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from vfpd.catalog import Catalog
from vfpd.catalog.schedule import CatalogJobStore
from vfpd.cron import cron_trigger
from vfpd.retrain import gate, suite
from vfpd.retrain.gate import Scores, decide, metrics
from vfpd.retrain.models import ModelStore


def test_metrics_ap_recall_at_precision_and_false_positives() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([1, 1, 0, 1, 0])
    accepted = scores >= 0.65
    m = metrics(scores, labels, accepted)
    assert m.ap == pytest.approx((1 + 1 + 3 / 4) / 3)
    assert m.recall_at_p99 == pytest.approx(2 / 3)  # the cut before the first negative
    assert m.false_positives == 1 and m.positives == 3 and m.pairs == 5
    perfect = metrics(np.array([0.9, 0.1]), np.array([1, 0]), np.array([True, False]))
    assert (perfect.ap, perfect.recall_at_p99, perfect.false_positives) == (1.0, 1.0, 0)
    # Tied scores cannot be cut between: the negative tied with the positive costs precision.
    tied = metrics(np.array([0.5, 0.5]), np.array([1, 0]), np.array([False, False]))
    assert tied.recall_at_p99 == 0.0


def _s(ap: float, recall: float = 0.5, fp: int = 0, positives: int = 20) -> Scores:
    return Scores(ap, recall, fp, positives, 100)


def test_decide_needs_a_gain_on_the_library_and_no_loss_on_the_suite() -> None:
    cur = {"library": _s(0.80), "suite": _s(0.70)}
    assert decide(cur, {"library": _s(0.82), "suite": _s(0.70)}, 0.01).promote
    no_gain = decide(cur, {"library": _s(0.805), "suite": _s(0.70)}, 0.01)
    assert not no_gain.promote and "not above" in no_gain.reason
    forgot = decide(cur, {"library": _s(0.90), "suite": _s(0.65)}, 0.01)
    assert not forgot.promote and "regression suite AP" in forgot.reason
    # Recall may move by one copy of the suite (1/20), not two.
    assert decide(cur, {"library": _s(0.9), "suite": _s(0.70, 0.45)}, 0.01).promote
    lost = decide(cur, {"library": _s(0.9), "suite": _s(0.70, 0.40)}, 0.01)
    assert not lost.promote and "recall" in lost.reason
    fp = decide(cur, {"library": _s(0.9, fp=1), "suite": _s(0.70)}, 0.01)
    assert not fp.promote and "false positives on the library" in fp.reason
    assert not decide(cur, {"library": _s(0.9), "suite": _s(0.7, fp=1)}, 0.01).promote


def test_regression_suite_is_fixed_and_has_fixed_camera_negatives() -> None:
    a, b = suite.regression_videos(), suite.regression_videos()
    assert len(a) == suite.SCENES + suite.FIXED_CAMERA_SCENES
    for x, y in zip(a, b):
        assert x.name == y.name
        np.testing.assert_array_equal(x.frames, y.frames)
    # Two takes of a still camera: same background, different movers.
    t0, t1 = a[0].frames, a[1].frames
    assert a[0].name.startswith("suite-0-") and a[1].name.startswith("suite-0-")
    assert np.mean(t0 == t1) > 0.3 and not np.array_equal(t0, t1)
    es = gate.eval_set(a)
    es2 = gate.eval_set(b)
    assert len(es.copies) == gate.QUERIES_PER_VIDEO * len(a)
    for c, d in zip(es.copies, es2.copies):
        np.testing.assert_array_equal(c.frames, d.frames)


def test_model_store_active_previous_and_a_changed_base(tmp_path: Path) -> None:
    base = tmp_path / "base.pt"
    base.write_bytes(b"base weights")
    store = ModelStore(tmp_path / "state", base)
    assert store.active_weights() == base
    cands = []
    for i in range(3):
        w = tmp_path / f"c{i}.pt"
        w.write_bytes(f"candidate {i}".encode())
        cands.append(store.record(w, "kept-aside", {"x": i}, f"reason {i}", store.base_version))
    store.activate(cands[0]["version"])
    assert store.active_weights().read_bytes() == b"candidate 0"
    store.activate(cands[1]["version"])
    status = {v["version"]: v["status"] for v in store.listing()}
    assert status[cands[1]["version"]] == "active" and status[cands[0]["version"]] == "previous"
    assert status[store.base_version] == "base" and status[cands[2]["version"]] == "kept-aside"
    store.activate(cands[2]["version"])
    status = {v["version"]: v["status"] for v in store.listing()}
    assert status[cands[0]["version"]] == "retired"
    assert not (store.dir / cands[0]["file"]).exists()  # retired: its weights deleted
    assert store.weights_of(cands[1]["version"][:6]).exists()
    assert store.weights_of(store.base_version) == base
    with pytest.raises(KeyError):
        store.weights_of("ffffffff")
    store.activate(store.base_version)  # a rollback to the configured weights
    assert store.active_weights() == base
    # Other configured weights: the versions made from the old ones no longer apply.
    other = tmp_path / "other.pt"
    other.write_bytes(b"other weights")
    store.activate(cands[2]["version"])
    assert ModelStore(tmp_path / "state", other).active_weights() == other


def test_crontab_weekdays_are_sunday_zero() -> None:
    after = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)  # a Monday
    for expr, weekday in (("0 3 * * 0", 6), ("0 3 * * 7", 6), ("0 3 * * 1", 0),
                          ("0 3 * * sat", 5)):
        fire = cron_trigger(expr, timezone="UTC").get_next_fire_time(None, after)
        assert fire.weekday() == weekday and fire.hour == 3, expr
    fire = cron_trigger("15 0 3 * * *", timezone="UTC").get_next_fire_time(None, after)
    assert (fire.hour, fire.minute, fire.second) == (3, 0, 15)
    with pytest.raises(ValueError):
        cron_trigger("0 3 * * 8")


def _noop() -> None:
    pass


def test_catalog_job_store_keeps_a_missed_run(tmp_path: Path) -> None:
    with Catalog(tmp_path / "c.db") as cat:
        sched = BackgroundScheduler(jobstores={"default": CatalogJobStore(cat)})
        sched.start(paused=True)
        sched.add_job(_noop, cron_trigger("0 3 * * 0"), id="retrain")
        sched.shutdown(wait=False)
    with Catalog(tmp_path / "c.db") as cat:
        store = CatalogJobStore(cat)
        (job,) = store.get_all_jobs()
        assert job.id == "retrain" and job.next_run_time.weekday() == 6
        job.next_run_time = job.next_run_time - dt.timedelta(days=30)
        store.update_job(job)
        assert store.get_due_jobs(dt.datetime.now(dt.UTC))[0].id == "retrain"
        assert store.get_next_run_time() == job.next_run_time
        store.remove_job("retrain")
        assert store.get_all_jobs() == [] and store.lookup_job("retrain") is None


def test_library_videos_and_verdicts_from_the_catalog(tmp_path: Path) -> None:
    from test_catalog import h, make_fp, make_sampled, stat

    from vfpd.retrain import data

    with Catalog(tmp_path / "c.db") as cat:
        for i in range(6):
            cat.store_result(f"/v/{i}.mp4", stat(i), h(i), fingerprint=make_fp(i),
                             frames=make_sampled(i))
        cat.remove_file("/v/5.mp4")  # gone: not training data
        for a, b, verdict in ((0, 1, "confirmed"), (2, 3, "not_duplicate"), (0, 4, None)):
            cat.add_duplicate(h(a), h(b), 0.9, "near", None)
            if verdict:
                cat.set_verdict(h(a), h(b), verdict)
        videos = data.library_videos(cat)
        assert [v.name for v in videos] == sorted(h(i) for i in range(5))
        assert videos[0].frames.shape == (4, 64, 64, 3) and videos[0].thumbs.shape == (4, 64)
        some = data.library_videos(cat, limit=3, seed=1)
        assert len(some) == 3 and [v.name for v in some] == sorted(v.name for v in some)
        assert [v.name for v in data.library_videos(cat, limit=3, seed=1)] == [
            v.name for v in some]
        index = {v.name: k for k, v in enumerate(videos)}
        links = {(videos[x.a].name, videos[x.b].name, x.same)
                 for x in data.verdict_links(cat, index)}
        assert links == {(*sorted((h(0), h(1))), True), (*sorted((h(2), h(3))), False)}
