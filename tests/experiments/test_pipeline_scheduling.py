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
