"""Learning-rate schedules: the paper's MultiStepLR, cosine with warm-up, plateau decay; resumable state."""

from __future__ import annotations

import math

import pytest
import torch

from spermseg.errors import ConfigError
from spermseg.training.config import ScheduleConfig, train_config
from spermseg.training.schedules import CosineWithWarmup, build_scheduler, step_scheduler


def _lrs(cfg: ScheduleConfig, losses: list[float]) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = build_scheduler(cfg, opt)
    out = []
    for loss in losses:
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        step_scheduler(sched, loss)
    return out


def test_multistep_is_the_papers() -> None:
    lrs = _lrs(ScheduleConfig(epochs=6, milestones=(2, 4), gamma=0.3), [1.0] * 6)
    assert lrs == pytest.approx([1, 1, 0.3, 0.3, 0.09, 0.09])


def test_cosine_warms_up_then_decays_to_the_floor() -> None:
    lrs = _lrs(ScheduleConfig(epochs=12, name="cosine", warmup_epochs=2, min_lr_ratio=0.01), [1.0] * 12)
    assert lrs[0] == pytest.approx(0.1) and lrs[1] == pytest.approx(0.55) and lrs[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))  # monotone decay after warm-up
    assert lrs[-1] == pytest.approx(0.01)
    f = CosineWithWarmup(12, 2, 0.0)
    assert f(7) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 9)))  # hand-computed


def test_plateau_decays_only_when_the_loss_stops_falling() -> None:
    losses = [1.0, 0.8, 0.6, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    lrs = _lrs(ScheduleConfig(epochs=9, name="plateau", patience=2, gamma=0.5), losses)
    assert lrs[:6] == pytest.approx([1.0] * 6)  # falling, then two flat epochs within the patience
    assert lrs[-1] < 1.0


def test_schedule_config_errors() -> None:
    with pytest.raises(ConfigError, match="warmup_epochs"):
        train_config("cpu", overrides=["schedule.warmup_epochs=500"])
    with pytest.raises(ConfigError):
        train_config("cpu", overrides=["schedule.name=linear"])


def test_cpu_preset_and_its_alias() -> None:
    cfg = train_config("cpu")
    assert cfg.schedule.name == "cosine" and cfg.model.bias_prior and cfg.data.crop_foreground > 0
    assert train_config("cpu-small") == cfg  # the old name is an alias for one release


@pytest.mark.parametrize(("n", "one_pass"), [(1, 1), (3, 1), (7, 2), (20, 5)])
def test_exact_steps_fill_every_epoch_with_full_batches(n: int, one_pass: int) -> None:
    """schedule.exact_steps: a fixed step budget for any training-set size (scripts/data_efficiency.py); without it
    steps_per_epoch only caps one pass over the images."""
    from spermseg.training.distributed import DistInfo
    from spermseg.training.step import epoch_order, steps_per_epoch

    one = DistInfo()
    capped = train_config("cpu", overrides=["schedule.batch_size=4", "schedule.steps_per_epoch=5"])
    exact = train_config("cpu", overrides=["schedule.batch_size=4", "schedule.steps_per_epoch=5",
                                           "schedule.exact_steps=true"])  # fmt: skip
    assert steps_per_epoch(capped, n, one) == one_pass  # batches of 4 (a last one of >= 2 images kept)
    assert steps_per_epoch(exact, n, one) == 5
    order = epoch_order(exact, 3, n, one, 5)
    assert len(order) >= 20 and set(order) == set(range(n))
    for k in range(0, len(order) - n + 1, n):  # every pass is a permutation of all images
        assert sorted(order[k : k + n]) == list(range(n))
    assert order[:n] == epoch_order(capped, 3, n, one, 5)  # the first pass is the capped run's pass
    assert epoch_order(exact, 3, n, one, 5) == order  # deterministic
    with pytest.raises(ConfigError, match="exact_steps"):
        train_config("cpu", overrides=["schedule.exact_steps=true", "schedule.steps_per_epoch=0"])
