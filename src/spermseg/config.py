"""Typed configuration: dataclasses loadable from YAML, with ``key=value`` overrides.

Every command that runs something long builds one config dataclass, resolves it from
(defaults or preset) <- YAML file <- ``--set`` overrides, and writes the resolved config next to its outputs.
Unknown keys are errors that list the valid ones.

Example:
    >>> cfg = resolve_config(TrainConfig, yaml_path="my.yaml", overrides=["optim.lr=3e-4", "epochs=20"])
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from spermseg.errors import ConfigError

T = TypeVar("T")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Return a plain, JSON/YAML-serializable dict of a (nested) config dataclass."""
    out = dataclasses.asdict(cfg)
    return _plain(out)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, base: T | None = None, where: str = "") -> T:
    """Build ``cls`` from ``data``, starting from ``base`` (or the class defaults); nested dataclasses recurse.

    Raises:
        ConfigError: on an unknown key (the message lists the valid ones) or a value of the wrong type.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"config section '{where or cls.__name__}' must be a mapping, got {type(data).__name__}")
    cfg = base if base is not None else cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    updates: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key).replace("-", "_")
        if key not in fields:
            raise ConfigError(f"unknown config key '{where + key}'; valid keys: {', '.join(sorted(fields))}")
        tp = hints[key]
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current) and not isinstance(current, type):
            updates[key] = config_from_dict(type(current), value, base=current, where=f"{where}{key}.")
        else:
            updates[key] = _coerce(value, tp, where + key)
    return dataclasses.replace(cfg, **updates)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert a YAML value to the annotated type (int->float, list->tuple, str->Path)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"bad value for '{key}': {value!r}")
    if origin is typing.Literal:
        if isinstance(value, bool) and value not in args:
            # YAML 1.1 reads a bare on/off/yes/no as a boolean: give it back as the choice it was written as
            words = ("on", "yes", "true") if value else ("off", "no", "false")
            value = next((w for w in words if w in args), value)
        if value not in args:
            raise ConfigError(f"bad value for '{key}': {value!r}; valid values: {', '.join(map(str, args))}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str):  # "5,15" from a --set override
            import yaml

            value = [v.strip() if args and args[0] is str else yaml.safe_load(v) for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            value = [value]
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"bad value for '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"bad value for '{key}': expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"bad value for '{key}': expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"bad value for '{key}': expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            return str(value)
        return value
    if tp is Path:
        return Path(value)
    return value


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """Turn ``["a.b=3", "c=[1, 2]"]`` into a nested dict; values are parsed as YAML (so ``1e-3`` is a float)."""
    import yaml

    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"bad override '{item}': use key=value, e.g. --set optim.lr=0.001")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str) and _looks_like_float(value):
            value = float(value)  # YAML 1.1 reads '1e-3' as a string
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def _looks_like_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "infinity")


def _deep_merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def resolve_config(
    cls: type[T],
    *,
    base: T | None = None,
    yaml_path: str | Path | None = None,
    overrides: Iterable[str] = (),
) -> T:
    """Resolve a config: ``base`` (or defaults) <- YAML file <- ``key=value`` overrides.

    Args:
        cls: the config dataclass.
        base: starting point (e.g. a preset); defaults to ``cls()``.
        yaml_path: optional YAML file with a (partial) mapping of the config.
        overrides: ``key=value`` strings; dotted keys reach nested sections.
    """
    import yaml

    data: dict[str, Any] = {}
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse config file {path}: {str(exc).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded
    data = _deep_merge(data, parse_overrides(overrides))
    return config_from_dict(cls, data, base=base)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    import yaml

    from spermseg.utils.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def load_config_file(cls: type[T], path: str | Path) -> T:
    """Read a config written by :func:`save_config`."""
    return resolve_config(cls, yaml_path=path)


def parse_seeds(text: str) -> list[int]:
    """Parse ``0-4``, ``0,2,5`` or ``3`` (and mixtures like ``0-2,7``) into a sorted list of distinct seeds.

    Args:
        text: the ``--seeds`` value.

    Returns:
        The seeds, ascending, each once.

    Raises:
        ConfigError: on malformed input (a negative seed, a reversed range, nothing).
    """
    seeds: set[int] = set()
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            if "-" in part:
                lo, hi = part.split("-", 1)
                a, b = int(lo), int(hi)
                if b < a or a < 0:
                    raise ValueError
                seeds.update(range(a, b + 1))
            else:
                seeds.add(int(part))
                if int(part) < 0:
                    raise ValueError
    except ValueError:
        raise ConfigError(f"bad --seeds '{text}'; use e.g. 0-4 or 0,1,2") from None
    if not seeds:
        raise ConfigError(f"bad --seeds '{text}'; use e.g. 0-4 or 0,1,2")
    return sorted(seeds)
