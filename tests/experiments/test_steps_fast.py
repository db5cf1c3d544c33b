"""Each of the eight reproduce steps on fake inputs, in seconds: a tiny drawn dataset, no training.

The heavy pieces a step calls (training the grid, the mask cache, ensemble training and Table 3, the trained
predictors) are replaced by fakes that return data of the real shapes, so what is tested is the step itself: its
result schema and that its report section renders from it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_reproduce import make_sperm_dataset

from spermseg.experiments.document import Figure, ReportContext, Table
from spermseg.experiments.pipeline import Reproduction
from spermseg.experiments.reproduce import reproduce_config
from spermseg.experiments.runner import StepContext
from spermseg.experiments.steps import STEP_MODULES, build_steps

MODELS = ["unet", "att_unet"]


class FakeRep(Reproduction):
    """The pipeline with its trained parts faked: probabilities are blurred references (plus a model offset)."""

    def train_all(self, runs: Any, say: Any, fill_from: Any = ()) -> dict[tuple, dict]:
        return {r: {"validation": {"ap": 0.5 + 0.01 * r[2]}, "threshold": 0.5, "wall_time_s": 1.0} for r in runs}

    def build_cache(self, splits: Any, say: Any) -> dict[str, Any]:
        return {"splits": {s: {} for s in splits}, "models": {}}

    def _fake_probs(self, split: str, offset: float) -> np.ndarray:
        refs = np.stack(self.full_refs(split)).astype(np.float32)
        return np.clip(0.8 * refs + offset, 0.0, 1.0)

    def cached(self, split: str, ids: Any) -> np.ndarray:
        return np.stack([self._fake_probs(split, 0.05 * (i + 1)) for i, _ in enumerate(ids)], axis=1)

    def predictors(self, results: dict[str, Any], with_all_base: bool = True) -> dict[str, Any]:
        def fn(offset: float) -> Any:
            return lambda images: np.clip(0.9 - np.stack(images).astype(np.float32) + offset, 0.0, 1.0)

        preds = {"avg|E3": fn(0.0), "ens_att_v2|E3": fn(0.05)}
        if with_all_base:
            preds.update({m: fn(0.1) for m in MODELS})
        return preds


@pytest.fixture(scope="module")
def rep(tmp_path_factory: pytest.TempPathFactory) -> FakeRep:
    import shutil

    root = make_sperm_dataset(tmp_path_factory.mktemp("data"))
    frames = root / "videos" / "v0" / "frames"  # a frame sequence for the temporal step
    frames.mkdir(parents=True)
    for i, image in enumerate(sorted((root / "test" / "images").iterdir())[:3]):
        shutil.copy(image, frames / f"{i:03d}.png")
    cfg = reproduce_config("demo", overrides=[f"data={root}", f"models=[{','.join(MODELS)}]", "seeds=[0,1]"])
    return FakeRep(cfg, tmp_path_factory.mktemp("out"), log=lambda _m: None)


def _ctx(rep: FakeRep, name: str, results: dict[str, Any]) -> StepContext:
    d = rep.out / "steps" / name
    d.mkdir(parents=True, exist_ok=True)
    return StepContext(name=name, dir=d, out_dir=rep.out, results=results, log=lambda _m: None)


def _render(module: Any, res: dict[str, Any], rep: FakeRep, results: dict[str, Any]) -> list[Any]:
    fig_dir = rep.out / "figures"
    fig_dir.mkdir(exist_ok=True)
    blocks = module.section(res, ReportContext(rep.out, fig_dir, False, {**results, module.NAME: res}))
    assert blocks and all(isinstance(b, Table | Figure | str) for b in blocks)
    return blocks


@pytest.fixture(scope="module")
def results(rep: FakeRep, monkeypatch_module: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """Every step in pipeline order, each on the results of the ones before (as the runner passes them)."""
    from spermseg.ensembling import selection, table3

    class _Sel:
        def __init__(self, archs: list[str]) -> None:
            self.architectures, self.model_ids = archs, [f"{a}_s0" for a in archs]

    sels = {e: _Sel(MODELS if e == "E1" else MODELS[:1]) for e in ("E1", "E2", "E3", "E4")}
    monkeypatch_module.setattr(selection, "all_selections", lambda manifest, rank_on="val": sels)
    monkeypatch_module.setattr("spermseg.ensembling.ensemble_training.train_ensemble", lambda *a, **k: {})

    def evaluate(cache: Any, runs: list[str], root: Any, **kw: Any) -> dict[str, Any]:
        full = {"ap": 0.6, "iou_0.5": 0.5, "iou_opt": 0.55, "t_opt": 0.5}
        recs = [{"kind": "avg", "select": e, "metrics": {"full": full}} for e in sels]
        recs += [{"kind": r.split("/")[-3], "select": r.split("/")[-2], "metrics": {"full": full}} for r in runs]
        return {"records": recs, "leaks_test": False}

    monkeypatch_module.setattr(table3, "evaluate_ensembles", evaluate)
    monkeypatch_module.setattr("spermseg.experiments.headline.headline", lambda ev, featured, rater: None)
    out: dict[str, dict[str, Any]] = {}
    for module in STEP_MODULES:
        out[module.NAME] = module.run(rep, _ctx(rep, module.NAME, out))
    return out


@pytest.fixture(scope="module")
def monkeypatch_module() -> Any:
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_steps_are_the_eight_in_order(rep: FakeRep) -> None:
    names = [s.name for s in build_steps(rep)]
    assert names == ["agreement", "normalization", "base", "ensembles", "raters", "blur", "qualitative", "temporal"]
    assert {s.name: s.requires for s in build_steps(rep)}["raters"] == ("base", "ensembles")


def test_agreement(results: dict[str, Any], rep: FakeRep) -> None:
    res = results["agreement"]
    assert res["raters"] == ["GT1", "GT2", "GT3"] and set(res["iou"]) >= {"full"}
    _render(STEP_MODULES[0], res, rep, results)


def test_normalization(results: dict[str, Any], rep: FakeRep) -> None:
    res = results["normalization"]
    assert res and "ap" in res
    _render(STEP_MODULES[1], res, rep, results)


def test_base(results: dict[str, Any], rep: FakeRep) -> None:
    res = results["base"]
    assert set(res["summary"]) == set(MODELS) and res["summary"]["unet"]["ap"]["n"] == 2
    assert res["ranking"] and set(res["curves"]) == set(MODELS)
    _render(STEP_MODULES[2], res, rep, results)


def test_ensembles(results: dict[str, Any], rep: FakeRep) -> None:
    res = results["ensembles"]
    assert res["best_base"] == "unet" and "avg" in res["table"]["ap"]
    _render(STEP_MODULES[3], res, rep, results)


@pytest.mark.parametrize("index", [4, 5, 6, 7])
def test_prediction_steps(results: dict[str, Any], rep: FakeRep, index: int) -> None:
    module = STEP_MODULES[index]
    res = results[module.NAME]
    assert isinstance(res, dict) and res.get("status") != "not_applicable", res
    _render(module, res, rep, results)
