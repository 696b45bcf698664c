"""Every attack, both domains: one registry by (domain, name), one way to make an attack, one
catalogue.

The study's feature attacks live here, one module each; every module in this package except
`base` is imported below and registers its attack with `@register`, so adding a feature attack
means adding one file. The waveform attacks live in `ser_core.attacks.waveform` (they share its 16-bit
arithmetic, clip model and serving path) and register the same way when that package is
imported, which `registry("waveform")` does on first use.

    get_attack("fgsm", bundle, eps=0.5)                      # a feature attack (the default domain)
    get_attack("apgd", bundle, domain="waveform", snr_db=30)  # a waveform attack
    describe_attacks()                                       # both domains, for the CLI and the app
To attack a clip in either domain, see `ser_core.attacks.clip.attack_clip`."""
from __future__ import annotations

import importlib
import pkgutil

from ser_core.attacks.base import (BATCH, DOMAINS, REGISTRY, Attack, AttackResult, FeatureAttack, Param, QueryCounter,
                   logit_margin, register)
from ser_core.errors import ParameterError

from ser_core.attacks import features, waveform  # noqa: E402,F401  each attack registers on import


def registry(domain: str = "features") -> dict[str, type[Attack]]:
    """name -> attack class of one domain ("features" or "waveform")."""
    if domain not in DOMAINS:
        raise ParameterError(f"unknown domain {domain!r} (accepted: {', '.join(DOMAINS)})")
    return REGISTRY[domain]


def attack_class(name: str, domain: str = "features") -> type[Attack]:
    """The class registered as `name` in `domain`; a ParameterError naming the accepted names
    (and the other domain, when the name belongs there) otherwise."""
    attacks = registry(domain)
    if not isinstance(name, str) or name not in attacks:
        other = [d for d in DOMAINS if d != domain and isinstance(name, str) and name in registry(d)]
        hint = f"; {name} is a {other[0]} attack: pass domain {other[0]!r}" if other else ""
        raise ParameterError(f"unknown {domain} attack {name!r} (accepted: {', '.join(sorted(attacks))}){hint}")
    return attacks[name]


def get_attack(name: str, bundle, domain: str = "features", **params) -> Attack:
    """An attack instance by registry name and domain, parameters checked (ParameterError on
    an unknown name or a bad parameter)."""
    return attack_class(name, domain)(bundle, **params)


def describe_attacks(domain: str | None = None) -> list[dict]:
    """`Attack.describe()` of every attack of `domain` (None: both, features first), by name."""
    return [cls.describe() for d in ([domain] if domain else DOMAINS)
            for cls in sorted(registry(d).values(), key=lambda c: c.name)]


__all__ = ["Attack", "AttackResult", "BATCH", "DOMAINS", "FeatureAttack", "Param", "QueryCounter", "REGISTRY",
           "attack_class", "describe_attacks", "get_attack", "logit_margin", "register", "registry"]
