"""Model registry: factory functions by name.

Families register themselves with ``@register_model("name")`` in their module; the registry imports the family
modules lazily on first use, so ``import spermseg`` stays light.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from spermseg.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

# The ten base families of the paper, in the order of its Table 3, and the module of each.
BASE_MODEL_MODULES: dict[str, str] = {
    "unet": "spermseg.models.unet",
    "fc_densenet": "spermseg.models.fc_densenet",
    "unet_pp": "spermseg.models.unet_pp",
    "att_unet": "spermseg.models.att_unet",
    "manet": "spermseg.models.manet",
    "sa_unet": "spermseg.models.sa_unet",
    "deeplabv3p": "spermseg.models.deeplabv3p",
    "fpn": "spermseg.models.fpn",
    "unet3p": "spermseg.models.unet3p",
    "uctransnet": "spermseg.models.uctransnet",
}

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a factory ``f(in_channels=1, out_channels=1, width=..., **kw) -> nn.Module``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        previous = _FACTORIES.get(name)
        if previous is not None and previous.__qualname__ != fn.__qualname__:
            # Two families under one name: the later would silently replace the earlier.
            raise ValueError(f"model name '{name}' is registered twice ({previous.__module__}, {fn.__module__})")
        _FACTORIES[name] = fn
        return fn

    return deco


def _load_all() -> None:
    for name, module in BASE_MODEL_MODULES.items():
        if name not in _FACTORIES:
            importlib.import_module(module)  # a missing family module is an error, not a smaller registry
            if name not in _FACTORIES:
                raise ValueError(f"module {module} does not register model '{name}'")


def list_models() -> list[str]:
    """Names of the registered base models, in the paper's order."""
    _load_all()
    order = list(BASE_MODEL_MODULES)
    return sorted(_FACTORIES, key=lambda n: (order.index(n) if n in order else len(order), n))


def model_kwargs(name: str) -> dict[str, Any]:
    """The keyword arguments (with defaults) accepted by the factory of ``name``."""
    factory = _get_factory(name)
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in inspect.signature(factory).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _get_factory(name: str) -> Callable[..., nn.Module]:
    _load_all()
    if name not in _FACTORIES:
        raise ConfigError(f"unknown model '{name}'; valid models: {', '.join(list_models())}")
    return _FACTORIES[name]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a base segmentation model by name.

    Args:
        name: one of :func:`list_models`.
        **kwargs: ``in_channels`` (default 1), ``out_channels`` (1), ``width`` (the family's base channel count
            or multiplier; defaults follow the original paper) and family-specific options.

    Returns:
        An ``nn.Module`` mapping (B, in_channels, H, W) to logits (B, out_channels, H, W) for any H, W.

    Raises:
        ConfigError: unknown name or keyword (the message lists the valid ones).
    """
    factory = _get_factory(name)
    valid = model_kwargs(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown argument(s) {', '.join(unknown)} for model '{name}'; valid: {', '.join(sorted(valid))}"
        )
    model = factory(**kwargs)
    model.spermseg_name = name  # type: ignore[attr-defined]
    model.spermseg_kwargs = dict(kwargs)  # type: ignore[attr-defined]
    return model
