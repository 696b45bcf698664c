"""Every attack, both domains, one call:

    attack = get_attack("fgsm", bundle, eps=0.5)            # any registered name, either domain
    result = attack(inputs, objective)                       # -> AttackResult, one shape
    attack_clip(bundle, "clip.wav", "apgd", {"snr_db": 30})  # one audio clip, decisions before/after

  params.py     declared parameters, checked in one place
  objective.py  untargeted (away from labels) or targeted (onto targets); the logit margin
  result.py     AttackResult: adversarial inputs, decisions, perturbation figures, queries, seconds
  base.py       Attack (the one call, the targeted-mode check), the two contracts
                (FixedBudgetAttack, MinimisationAttack), the registry by (domain, name)
  features/     the study's attacks on standardised log-Mel features, one file each (+ base.py)
  waveform/     attacks on the 16-bit samples of whole clips, flips verified on the written WAV
  clip.py       one clip, any attack: decode, attack, the serving path's decision before and after
  universal.py  universal perturbations: one waveform for every voice, applied at an SNR, crafted
  over_the_air.py  fooling rates on unseen speakers, scoring after held-out rooms, the app's calls
Adding an attack means adding one file to features/ or waveform/ (it registers on import)."""
from __future__ import annotations

from ser_core.attacks.base import DOMAINS, REGISTRY, Attack, FixedBudgetAttack, MinimisationAttack, domain_of, register
from ser_core.attacks.objective import Objective, logit_margin
from ser_core.attacks.params import Param
from ser_core.attacks.result import AttackResult
from ser_core.errors import ParameterError, excerpt

from ser_core.attacks import features, waveform  # noqa: E402,F401  each attack registers on import


def registry(domain: str | None = None) -> dict[str, type[Attack]]:
    """name -> attack class of one domain ("features" or "waveform"; None: both)."""
    if domain is None:
        return {n: c for d in DOMAINS for n, c in REGISTRY[d].items()}
    if domain not in DOMAINS:
        raise ParameterError(f"unknown domain {excerpt(domain)} (accepted: {', '.join(DOMAINS)})")
    return REGISTRY[domain]


def attack_class(name: str, domain: str | None = None) -> type[Attack]:
    """The class registered as `name` (names are unique across domains); `domain`, when given,
    must be the attack's. A ParameterError naming the accepted names otherwise."""
    found = domain_of(name)
    if found is None:
        raise ParameterError(f"unknown attack {excerpt(name)} (accepted: {', '.join(sorted(registry(domain)))})")
    if domain is not None and domain != found:
        registry(domain)  # an unknown domain is refused first
        raise ParameterError(f"{name} is a {found} attack, not a {domain} one (accepted domain: {found!r})")
    return REGISTRY[found][name]


def get_attack(name: str, bundle, domain: str | None = None, **params) -> Attack:
    """An attack instance by registry name, parameters checked (ParameterError on an unknown name,
    a domain that is not the attack's, or a bad parameter)."""
    return attack_class(name, domain)(bundle, **params)


def describe_attacks(domain: str | None = None) -> list[dict]:
    """`Attack.describe()` of every attack of `domain` (None: both, features first), by name."""
    return [cls.describe() for d in ([domain] if domain else DOMAINS)
            for cls in sorted(registry(d).values(), key=lambda c: c.name)]


__all__ = ["Attack", "AttackResult", "DOMAINS", "FixedBudgetAttack", "MinimisationAttack", "Objective", "Param",
           "REGISTRY", "attack_class", "describe_attacks", "get_attack", "logit_margin", "register", "registry"]
