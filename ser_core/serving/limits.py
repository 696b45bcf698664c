"""What one request may send to a 2-vCPU Space, checked before any audio work.

  parse_params    attack parameters from JSON text or a dict: flat, finite, short, or a
                  ParameterError that names the value and says what is accepted
  check_params    the attack exists in the domain, its parameters are valid, and the settings
                  that multiply the work stay inside SPACE_CAPS (tighter than the attacks' own
                  ranges, which the CLI and the evaluation keep)
  parse_target    the emotion a targeted attack should land on, or None
  read_clip       the decoded clip, refused from its header when longer than the request allows
The wall-clock deadline every attack request runs under is ATTACK_DEADLINE_S."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ser_core.attacks import get_attack
from ser_core.audio.decode import load_audio
from ser_core.errors import AudioError, EmptyAudioError, ParameterError, TooLongAudioError, excerpt
from ser_core.serving.catalogue import DOMAIN_FEATURES, DOMAIN_WAVEFORM, attack_catalogue

MAX_PREDICT_SECONDS = 120.0   # prediction is cheap: a couple of minutes of speech
MAX_ATTACK_SECONDS = 30.0     # white-box attacks cost per chunk: ten 3 s chunks at most
# Every attack request stops at this wall-clock deadline (seconds; SER_APP_ATTACK_DEADLINE_S)
# and returns the best result so far, marked stopped early. The CLI and the evaluation run
# attacks without it (ser_core.control: no run_control, no deadline).
ATTACK_DEADLINE_S = float(os.environ.get("SER_APP_ATTACK_DEADLINE_S", "60"))

MAX_PARAMS_CHARS = 2000
MAX_NUMBER_CHARS = 30   # digits of one JSON number
MAX_STRING_CHARS = 100  # one string value
ACCEPTED_PARAMS = 'accepted: a flat JSON object of numbers, true/false or short strings, e.g. {"eps": 0.25}'


# --- parameters -----------------------------------------------------------------------------
def _json_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ParameterError(f"a number of {len(text)} digits ({text[:12]}...) in the parameters "
                             f"(accepted: at most {MAX_NUMBER_CHARS} digits)")
    return int(text)


def _json_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise ParameterError(f"a number of {len(text)} characters ({text[:12]}...) in the parameters "
                             f"(accepted: at most {MAX_NUMBER_CHARS} characters)")
    return float(text)


def _json_constant(name: str):
    raise ParameterError(f"{name} in the parameters is not a number (accepted: finite numbers)")


def parse_params(params) -> dict:
    """Attack parameters from a dict or its JSON text ('' or None: the attack's defaults).
    Every malformed value is a ParameterError naming it: text over MAX_PARAMS_CHARS, invalid
    JSON, numbers of more than MAX_NUMBER_CHARS digits, NaN/Infinity, nesting of any depth
    (values are scalars), long strings."""
    if params is None or (isinstance(params, str) and not params.strip()):
        return {}
    if isinstance(params, (bytes, bytearray)):
        params = params.decode("utf-8", "replace")
    if isinstance(params, str):
        if len(params) > MAX_PARAMS_CHARS:
            raise ParameterError(f"parameters are {len(params)} characters long "
                                 f"(accepted: at most {MAX_PARAMS_CHARS}; {ACCEPTED_PARAMS})")
        try:
            params = json.loads(params, parse_int=_json_int, parse_float=_json_float,
                                parse_constant=_json_constant)
        except ParameterError:
            raise
        except json.JSONDecodeError as exc:
            raise ParameterError(f"parameters are not valid JSON ({exc.msg} at character {exc.pos}); "
                                 f"{ACCEPTED_PARAMS}") from None
        except RecursionError:
            raise ParameterError(f"parameters are nested too deeply to read ({ACCEPTED_PARAMS})") from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise ParameterError(f"parameters cannot be read ({type(exc).__name__}); {ACCEPTED_PARAMS}") from None
    if not isinstance(params, dict):
        raise ParameterError(f"parameters must be a JSON object, not {type(params).__name__} "
                             f"({ACCEPTED_PARAMS})")
    for k, v in params.items():
        name = excerpt(k)
        if isinstance(v, (dict, list, tuple)):
            raise ParameterError(f"parameter {name} is a nested {type(v).__name__} ({ACCEPTED_PARAMS})")
        if v is not None and not isinstance(v, (bool, int, float, str)):
            raise ParameterError(f"parameter {name} is a {type(v).__name__} ({ACCEPTED_PARAMS})")
        if isinstance(v, str) and len(v) > MAX_STRING_CHARS:
            raise ParameterError(f"parameter {name} is a string of {len(v)} characters "
                                 f"(accepted: at most {MAX_STRING_CHARS})")
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10 ** MAX_NUMBER_CHARS:
            raise ParameterError(f"parameter {name} is an integer of more than {MAX_NUMBER_CHARS} digits "
                                 f"(accepted: at most {MAX_NUMBER_CHARS} digits)")
        if isinstance(v, float) and not math.isfinite(v):
            raise ParameterError(f"parameter {name}={v} is not finite (accepted: finite numbers)")
    return params


# --- caps -----------------------------------------------------------------------------------
# What a 2-vCPU Space runs per attack request: (lowest, highest) accepted value of the settings
# that multiply the work, tighter than the attacks' own ranges (which the CLI and the evaluation
# keep). With them the defaults and the study's settings still run; each request also stops at
# ATTACK_DEADLINE_S. Measured before these caps on a 30 s clip: square with 100k queries 2 h,
# waveform cw 11.6 h, boundary and cw_l2 far more.
SPACE_CAPS = {
    (DOMAIN_WAVEFORM, "pgd"): {"steps": (1, 200)},
    (DOMAIN_WAVEFORM, "apgd"): {"steps": (1, 200), "restarts": (0, 3), "shrink": (0, 8)},
    (DOMAIN_WAVEFORM, "cw"): {"steps": (1, 100), "binary_steps": (1, 6)},
    (DOMAIN_WAVEFORM, "square"): {"max_queries": (1, 1000), "population": (1, 16)},
    (DOMAIN_FEATURES, "bim"): {"max_iter": (1, 200)},
    (DOMAIN_FEATURES, "deepfool"): {"max_iter": (1, 50)},
    (DOMAIN_FEATURES, "jsma"): {"max_iter": (1, 2000)},
    (DOMAIN_FEATURES, "cw_l2"): {"binary_search_steps": (1, 20), "max_iter": (0, 20),
                                 "max_halving": (1, 10), "max_doubling": (1, 10)},
    (DOMAIN_FEATURES, "cw_linf"): {"max_iter": (0, 20), "const_factor": (2.0, 1000.0),
                                   "decrease_factor": (1e-6, 0.9)},
    (DOMAIN_FEATURES, "boundary"): {"max_iter": (0, 200), "num_trial": (1, 5), "sample_size": (1, 20),
                                    "init_size": (1, 200), "init_steps": (0, 20)},
    (DOMAIN_FEATURES, "pixel"): {"max_iter": (0, 40), "th": (1, 20)},
}


def space_caps(attack: str, domain: str) -> dict:
    return SPACE_CAPS.get((domain, attack), {})


def _check_caps(attack: str, domain: str, settings: dict) -> None:
    for name, (low, high) in space_caps(attack, domain).items():
        v = settings.get(name)
        if v is not None and not low <= v <= high:
            raise ParameterError(f"{attack}: {name}={excerpt(v)} is outside this Space's limits [{low}, {high}] "
                                 "(2 vCPU; the command-line tool `python -m export attack` accepts "
                                 "the attack's full range)")


def check_params(bundle, attack: str, params: dict, domain: str) -> None:
    """Fail before any audio work when the attack or a parameter is not accepted."""
    if not isinstance(attack, str):
        raise ParameterError(f"attack must be a name, not {type(attack).__name__} "
                             f"(accepted: {', '.join(a['name'] for a in attack_catalogue(domain))})")
    runner = get_attack(attack, bundle, domain=domain, **params)  # an unknown name is told its domain
    _check_caps(attack, domain, runner.settings)


# --- target and audio -----------------------------------------------------------------------
def parse_target(target) -> str | None:
    """The emotion a targeted attack should land on; None, '' or 'none' mean untargeted."""
    if target is None or (isinstance(target, str) and target.strip().lower() in ("", "none")):
        return None
    if not isinstance(target, str):
        raise ParameterError(f"target must be an emotion name, not {type(target).__name__} "
                             "(accepted: one of the model's emotions, or none)")
    return target.strip()


def read_clip(path, max_seconds: float, sample_rate: int) -> np.ndarray:
    """Decoded, validated clip. The duration is checked from the file header first when the
    header can be read, so an hours-long upload is refused without decoding it."""
    if path is None or (isinstance(path, str) and not path.strip()):
        raise EmptyAudioError("<no audio>", "no audio was given", "upload or record a clip")
    path = Path(path)
    try:
        import soundfile as sf
        info = sf.info(str(path))
        seconds = info.frames / info.samplerate if info.samplerate else 0.0
    except Exception:  # not a header libsndfile knows: load_audio decides and explains
        seconds = 0.0
    if seconds > max_seconds:
        raise TooLongAudioError(path.name, f"{seconds:.1f} s long", f"at most {max_seconds:g} s")
    try:
        return load_audio(path, sample_rate, max_seconds=max_seconds)
    except AudioError as exc:  # name the file as its sender knows it, not the server's copy
        raise type(exc)(path.name, exc.problem, exc.accepted) from None
