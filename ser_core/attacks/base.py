"""The one way every attack is used, in both domains:

    result = attack(inputs, objective=None, progress=None)      # -> AttackResult

`attack = get_attack(name, bundle, **params)` makes any registered attack, its parameters
checked in one place (`params.py`). `inputs` is what the attack's domain perturbs:
  - "features": standardised log-Mel features (batch, 261, 128), the study's attacks
    (`features/base.py`); the decision after is the model's on the adversarial features;
  - "waveform": decoded clips (one array of samples each, at the bundle's rate;
    `waveform/base.py`); a clip counts as flipped only by the serving path's decision on the
    written 16-bit WAV.
`objective` is None (untargeted, away from the clean decisions), an array of true labels
(untargeted, away from them) or an `Objective` (targeted with `targets`). Targeted mode is a
capability an attack declares (`targeted = True`) and is checked here, once.

Two contracts, as Foolbox 3 splits them, each a base class:
  - `FixedBudgetAttack`: given a budget (its `budget_params`), return the best input inside it;
  - `MinimisationAttack`: return the smallest perturbation found that reaches the objective.
An attack class is one of each: a domain (`FeatureAttack`, `WaveformAttack`) and a contract."""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from ser_core.attacks.objective import Objective, as_objective
from ser_core.attacks.params import Param, check_settings
from ser_core.attacks.result import AttackResult
from ser_core.errors import ParameterError, excerpt

DOMAINS = ("features", "waveform")


class Attack:
    """Base class of every attack. Subclasses set `name`, `kind` ("white-box" | "black-box"),
    `params` (name -> Param), `targeted` (whether a targeted objective is supported) and
    `paper_settings` (the study's settings, feature attacks only), derive from one domain class
    and one contract class, implement the domain's override point, and register with `@register`.
    Parameters whose declared default is None are optional."""

    name: ClassVar[str] = ""
    domain: ClassVar[str] = ""  # set by FeatureAttack and WaveformAttack
    goal: ClassVar[str] = ""  # set by FixedBudgetAttack and MinimisationAttack
    kind: ClassVar[str] = "white-box"
    targeted: ClassVar[bool] = False
    params: ClassVar[dict[str, Param]] = {}
    paper_settings: ClassVar[list[dict]] = []  # the study's settings (PAPER.md), for presets/grids
    # the settings the evaluation grid runs where the study has none (waveform attacks)
    grid_settings: ClassVar[list[dict]] = []

    def __init__(self, bundle, **kwargs):
        self.bundle = bundle
        self.settings = check_settings(self.name, self.params, kwargs)
        self._validate()

    def _validate(self):
        """Cross-parameter checks; raise ParameterError."""

    def __call__(self, inputs, objective=None, progress=None) -> AttackResult:
        """Attack `inputs` for `objective` (see the module docstring). progress(fraction, message)
        is called now and then for long attacks."""
        inputs = self._as_inputs(inputs)
        objective = as_objective(objective, len(inputs))
        if objective.targeted and not self.targeted:
            raise ParameterError(f"{self.name} has no targeted mode (accepted: an untargeted objective; "
                                 f"targeted attacks: {', '.join(targeted_attacks())})")
        objective.check(len(inputs), len(self.bundle.labels))
        return self._attack(inputs, objective, progress or (lambda f, m="": None))

    def _as_inputs(self, inputs):
        """The domain's inputs as a batch (e.g. one clip -> a list of one)."""
        return inputs

    def _attack(self, inputs, objective: Objective, progress) -> AttackResult:
        """The domain's loop (FeatureAttack, WaveformAttack)."""
        raise NotImplementedError

    def torch_decisions(self, result: AttackResult) -> np.ndarray | None:
        """The torch model's decisions on the adversarial inputs, where the attack was crafted on
        it and the serving path scores something else (the evaluation's "transfer" figure); None
        where there is no such pair."""
        return None

    def check_target(self, target) -> int | None:
        """A target emotion (a label of the bundle, or None) -> its class index, checked."""
        return check_target(type(self), self.bundle, target)

    @classmethod
    def describe(cls) -> dict:
        """The catalogue entry the CLI (`python -m export attacks`) and the app show: name,
        domain, kind, goal, whether it has a targeted mode, one-line doc, parameters (default,
        type, range, choices, meaning) and the study's settings."""
        return {"name": cls.name, "domain": cls.domain, "kind": cls.kind, "goal": cls.goal,
                "targeted": cls.targeted, "doc": (cls.__doc__ or "").strip().split("\n")[0],
                "params": {k: p.describe() for k, p in cls.params.items()},
                "paper_settings": cls.paper_settings}

    def model(self) -> torch.nn.Module:
        """The model white-box attacks differentiate: the bundle's gradient model (the torch
        model rewritten exactly for speed, ser_core/models/fast.py)."""
        if self.kind != "white-box":
            raise RuntimeError(f"{self.name} is black-box: it must not touch the torch model")
        return self.bundle.gradient_model()


class FixedBudgetAttack:
    """Contract: given a budget, return the best adversarial input inside it (FGSM, BIM, PGD,
    Auto-PGD, Pixel, Square). `budget_params` names the parameters that set the budget."""

    goal: ClassVar[str] = "fixed-budget"
    budget_params: ClassVar[tuple[str, ...]] = ()


class MinimisationAttack:
    """Contract: return the smallest perturbation found that reaches the objective (DeepFool,
    JSMA, C&W, Boundary); `distance` names the norm it minimises."""

    goal: ClassVar[str] = "minimisation"
    distance: ClassVar[str] = "l2"


# domain -> attack name -> class; names are unique across domains
REGISTRY: dict[str, dict[str, type[Attack]]] = {d: {} for d in DOMAINS}


def register(cls: type[Attack]) -> type[Attack]:
    if cls.domain not in REGISTRY:
        raise ValueError(f"{cls.__name__}: domain {cls.domain!r} (accepted: {', '.join(DOMAINS)})")
    if cls.goal not in ("fixed-budget", "minimisation"):
        raise ValueError(f"{cls.__name__}: derive from FixedBudgetAttack or MinimisationAttack")
    taken = [d for d in DOMAINS if d != cls.domain and cls.name in REGISTRY[d]]
    if taken:
        raise ValueError(f"{cls.__name__}: attack name {cls.name!r} is already a {taken[0]} attack")
    REGISTRY[cls.domain][cls.name] = cls
    return cls


def check_target(cls: type[Attack], bundle, target) -> int | None:
    """The one check of a target emotion: None (untargeted), or an emotion of the bundle's labels
    for an attack with a targeted mode -> its class index. ParameterError otherwise."""
    if target is None:
        return None
    if not cls.targeted:
        raise ParameterError(f"{cls.name} has no targeted mode (accepted: no target; targeted "
                             f"attacks: {', '.join(targeted_attacks())})")
    if target not in bundle.labels:
        raise ParameterError(f"target emotion {excerpt(target)} is not one of model {bundle.name}'s "
                             f"(accepted: {', '.join(bundle.labels)}, or none for untargeted)")
    return bundle.labels.index(target)


def targeted_attacks() -> list[str]:
    return sorted(n for d in DOMAINS for n, c in REGISTRY[d].items() if c.targeted)


def domain_of(name: str) -> str | None:
    """The domain an attack name is registered in, or None."""
    return next((d for d in DOMAINS if isinstance(name, str) and name in REGISTRY[d]), None)


