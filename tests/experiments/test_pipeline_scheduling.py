"""How reproduce fills its pool of training workers: no worker idles in a step's last round when a later step
has runs to give it (3 normalization runs on 2 workers took 2 rounds with one worker idle in the second)."""

from __future__ import annotations

from spermseg.experiments.pipeline import fill_last_round

NORM = [("unet", "none", 0), ("unet", "mean", 0), ("unet", "minmax", 0)]
BASE = [("unet", "minmax", 0), ("unet", "minmax", 1), ("att_unet", "minmax", 0), ("att_unet", "minmax", 1)]


def test_an_odd_round_takes_the_next_step_run_that_is_not_already_planned() -> None:
    # ("unet", "minmax", 0) is in both lists: it is trained once, and the spare worker gets seed 1 instead
    assert fill_last_round(NORM, BASE, jobs=2) == [*NORM, ("unet", "minmax", 1)]


def test_a_full_last_round_takes_nothing() -> None:
    assert fill_last_round(NORM[:2], BASE, jobs=2) == NORM[:2]
    assert fill_last_round(NORM, BASE, jobs=3) == NORM


def test_spare_workers_take_as_many_runs_as_there_are() -> None:
    assert fill_last_round(NORM[:1], BASE, jobs=4) == [NORM[0], *BASE[:3]]
    assert fill_last_round(NORM[:1], NORM[:1], jobs=4) == NORM[:1]  # only the planned run: nothing to add
    assert fill_last_round(NORM[:1], BASE[:1], jobs=4) == [NORM[0], BASE[0]]
    assert fill_last_round([], BASE, jobs=2) == []


def test_one_worker_never_trains_ahead() -> None:
    assert fill_last_round(NORM, BASE, jobs=1) == NORM


def test_predictors_compute_a_base_model_once_per_set_of_pixels(tmp_path, monkeypatch) -> None:
    """Table 4, the difference maps and the blur sweep ask for one base model on the same images several times
    (itself, inside avg|E, inside the ensemble): it runs once per set of pixels, the arrays are the same (read-only,
    shared), and other pixels (a blurred copy) are computed anew."""
    import numpy as np
    import torch

    import spermseg.inference.forward as forward
    from spermseg.experiments.config import ReproduceConfig
    from spermseg.experiments.pipeline import Reproduction
    from spermseg.models import create_model
    from spermseg.models.checkpoints import save_checkpoint

    torch.manual_seed(0)
    run = tmp_path / "out" / "runs" / "base" / "unet" / "minmax" / "s0"
    save_checkpoint(run / "best", create_model("unet", width=4), {"normalization": "minmax", "threshold": 0.5})
    (tmp_path / "data").mkdir()
    rep = Reproduction(ReproduceConfig(data=str(tmp_path / "data"), models=["unet"], device="cpu"), tmp_path / "out")
    results = {
        "base": {"best_seed": {"unet": 0}, "runs": {"unet": {"0": {"run": str(run.relative_to(rep.out))}}}},
        "ensembles": {"selections": {"E3": ["unet"]}, "runs": {}},
    }
    calls = []
    real = forward.predict_probs
    monkeypatch.setattr(forward, "predict_probs", lambda *a, **k: calls.append(1) or real(*a, **k))
    images = [np.random.default_rng(i).random((32, 32), dtype=np.float32) for i in range(3)]
    preds = rep.predictors(results)
    first = preds["unet"](images)
    again = rep.predictors(results)["unet"]([im.copy() for im in images])  # same pixels, other arrays and call
    avg = preds["avg|E3"](images)
    assert len(calls) == 1 and again is first and not first.flags.writeable
    np.testing.assert_array_equal(avg, first)
    preds["unet"]([im * 0.5 for im in images])
    assert len(calls) == 2
