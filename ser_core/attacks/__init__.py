"""The study's attacks, one module each; `REGISTRY` maps a name to its class.

Every module in this package except `base` is imported here, and each registers its attack
with `@register`, so adding an attack means adding one file."""
from __future__ import annotations

import importlib
import pkgutil

from .base import REGISTRY, Attack, AttackResult, Param, QueryCounter, register
from ..errors import ParameterError

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")


def get_attack(name: str, bundle, **params) -> Attack:
    """An attack instance by registry name, parameters checked."""
    try:
        cls = REGISTRY[name]
    except KeyError:
        raise ParameterError(f"unknown attack {name!r} (accepted: {', '.join(sorted(REGISTRY))})") from None
    return cls(bundle, **params)


def describe_attacks() -> list[dict]:
    """Name, kind, goal, parameters (default, range, meaning) and the study's settings of each."""
    return [{"name": c.name, "kind": c.kind, "goal": c.goal, "doc": (c.__doc__ or "").strip().split("\n")[0],
             "params": {k: {"default": p.default, "type": p.type.__name__, "low": p.low, "high": p.high,
                            "choices": p.choices, "help": p.help} for k, p in c.params.items()},
             "paper_settings": c.paper_settings}
            for c in sorted(REGISTRY.values(), key=lambda c: c.name)]
