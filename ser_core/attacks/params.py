"""Declared attack parameters, checked in one place (ART's habit): every attack lists its
parameters as `Param`s, and `check_settings` converts, range-checks and refuses unknown names
before any audio or model work, with a ParameterError that says what is accepted."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ser_core.errors import ParameterError, excerpt

_BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
# Floats are exact integers only up to here; an integral float beyond it (1e30) is refused for an
# int parameter rather than turned into another integer (int(1e30) = 1000000000000000019884624838656).
_EXACT_FLOAT_INT = 2 ** 53


@dataclass(frozen=True)
class Param:
    """One declared parameter: default, type, accepted range (inclusive) or choices, meaning."""

    default: Any
    type: type = float
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    help: str = ""

    def check(self, attack: str, name: str, value):
        value = self._coerce(attack, name, value)
        if self.choices is not None and value not in self.choices:
            raise ParameterError(f"{attack}: {name}={excerpt(value)} (accepted: {', '.join(map(str, self.choices))})")
        if isinstance(value, float) and not np.isfinite(value):
            raise ParameterError(f"{attack}: {name}={excerpt(value)} is not finite")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ParameterError(f"{attack}: {name}={excerpt(value)} is outside [{self.low}, {self.high}]")
        return value

    def _coerce(self, attack: str, name: str, value):
        """Strings from a CLI or an API become the declared type; nothing is silently truncated
        or rounded (integers are read as integers, never through a float)."""
        bad = ParameterError(f"{attack}: {name}={excerpt(value)} is not a {self.type.__name__}")
        if self.type is bool:
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
                return _BOOL_WORDS[value.strip().lower()]
            if isinstance(value, (int, np.integer)) and value in (0, 1):
                return bool(value)
            raise ParameterError(f"{attack}: {name}={excerpt(value)} is not a boolean (accepted: true, false)")
        if isinstance(value, (bool, np.bool_)):
            raise bad
        try:
            if self.type is int:
                return _exact_int(value, bad)
            return self.type(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float range
            raise bad from None

    def describe(self) -> dict:
        return {"default": self.default, "type": self.type.__name__, "low": self.low, "high": self.high,
                "choices": self.choices, "help": self.help}


def _exact_int(value, bad: ParameterError) -> int:
    """The integer `value` denotes, exactly: an int as is, an integer string by int() (any
    number of digits, no float on the way), an integral float or float string only while floats
    are exact (|x| < 2**53); anything else is `bad`."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    f = float(value)  # "3.0", 3.0, "1e3": integral values written as floats
    if not np.isfinite(f) or f != int(f) or abs(f) >= _EXACT_FLOAT_INT:
        raise bad
    return int(f)


def check_settings(attack: str, params: dict[str, Param], given: dict) -> dict:
    """Every declared parameter, checked, from `given` or its default; unknown names refused.
    A parameter whose default is None is optional: left out, it stays None."""
    unknown = set(given) - set(params)
    if unknown:
        shown = ", ".join(excerpt(k) for k in sorted(map(str, unknown))[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ParameterError(f"{attack}: unknown parameters [{shown}]{more} "
                             f"(accepted: {', '.join(params) or 'none'})")
    settings = {}
    for k, p in params.items():
        v = given.get(k, p.default)
        settings[k] = None if v is None and p.default is None else p.check(attack, k, v)
    return settings
