"""Clip -> attacked clip, as the app's /attack answers it: the decisions before and after, the
perturbation, log-Mel images, playable audio and the features for download, under this Space's
parameter caps and wall-clock deadline.

Everything this module asks of ser_core.attacks sits in two functions, `_check_target` (before
any audio work) and `_attack_clip` (the one call of `ser_core.attacks.clip.attack_clip`); what
differs by domain after the call is what the page can play:
  - waveform: the attack's adversarial 16-bit WAV, whose decision by the serving path is the
    one that counts (`flipped`);
  - features (the study): a listening copy, the attacked features turned back into sound by
    Griffin-Lim inversion (ser_core.serving.inversion) and re-scored; not what the model saw."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ser_core.attacks.clip import attack_clip
from ser_core.attacks.waveform.verify import serving_features
from ser_core.control import run_control, stop_reason
from ser_core.errors import AttackCancelledError, ParameterError, excerpt
from ser_core.serving.catalogue import DOMAIN_FEATURES, default_domain, domains, get_bundle
from ser_core.serving.files import output_folder
from ser_core.serving.limits import (ATTACK_DEADLINE_S, MAX_ATTACK_SECONDS, check_params, parse_params,
                                     parse_target, read_clip)
from ser_core.serving.prediction import jsonable, model_accuracy, speech_check, withhold_emotion
from ser_core.serving.robustness import model_robustness, snr_outcome


@dataclass
class AttackOutcome:
    """result: the JSON the API returns. The files live in `folder`."""

    result: dict
    folder: Path
    images: dict[str, Path] = field(default_factory=dict)  # before, after, difference (PNG)
    attacked_audio: Path | None = None  # playable: listening copy, or the verified adversarial WAV
    features: Path | None = None        # adversarial standardised features (.npy)


def run_attack(path, model: str, attack: str, params=None, domain: str | None = None,
               max_seconds: float = MAX_ATTACK_SECONDS, progress=None, out_dir=None,
               deadline_s: float | None = None, cancel: threading.Event | None = None,
               target=None) -> AttackOutcome:
    """Attack a clip with `attack` on `model` and gather what the app shows.

    domain None: the default domain (waveform where available). Waveform domain: the attack
    perturbs the samples; the playable audio is its adversarial 16-bit WAV, and `flipped` is
    the serving path's decision on that file. Feature domain (the study): attack_clip attacks
    the standardised log-Mel chunks; the playable audio is a listening copy made by Griffin-Lim
    inversion, re-scored by the serving path. params '' or None: the attack's own defaults.
    target: an emotion of the model to land on (attacks with a targeted mode; for a waveform
    attack the result's `target_reached` is the serving path's decision on the written WAV), or
    None/'none' for any other emotion.

    The attack runs under this Space's parameter caps (SPACE_CAPS) and wall-clock deadline
    (deadline_s, default ATTACK_DEADLINE_S): at the deadline, or when `cancel` is set, it stops
    and the result is the best so far, with stopped_early, stop_reason ('deadline' or
    'cancelled') and the seconds spent. A clip the speech check does not call speech is
    attacked all the same, but `emotion_shown` is False and `no_emotion_reason` says why: the
    model's classes before and after are not emotions (its summary says so, not "Flipped")."""
    t0 = time.perf_counter()
    deadline_s = ATTACK_DEADLINE_S if deadline_s is None else float(deadline_s)
    domain = domain or default_domain()
    if domain not in domains():
        raise ParameterError(f"domain {excerpt(domain)} is not available (accepted: {', '.join(domains())})")
    b = get_bundle(model)
    params = parse_params(params)
    check_params(b, attack, params, domain)
    target = parse_target(target)
    _check_target(b, target, attack, domain)
    sr = b.feature_config.sample_rate
    y = read_clip(path, max_seconds, sr)
    speech = speech_check(y, sr)  # a clip that is not speech is attacked, but shows no emotion
    out = Path(out_dir) if out_dir else output_folder()
    out.mkdir(parents=True, exist_ok=True)
    with run_control(deadline_s=deadline_s, cancel=cancel):
        r = _attack_clip(b, y, attack, params, domain, max_seconds, progress, out, target)
        _stop_if_cancelled(attack)
        if domain == DOMAIN_FEATURES:
            outcome = _feature_outcome(b, y, r, progress, out)
        else:
            outcome = _waveform_outcome(b, y, r, out)
    outcome.result.update(domain=domain, model=model, language=b.config.get("language"),
                          seconds_of_audio=round(len(y) / sr, 3), deadline_seconds=deadline_s,
                          model_accuracy=model_accuracy(b.config), model_robustness=model_robustness(b.config),
                          speech=speech, **withhold_emotion(speech), total_seconds=round(time.perf_counter() - t0, 3))
    outcome.result.update(snr_outcome(outcome.result))  # the SNR it flipped at, or that it held
    outcome.result = jsonable(outcome.result)
    return outcome


# --- the attack call -------------------------------------------------------------------------
def _check_target(b, target: str | None, attack: str, domain: str) -> None:
    """A target is an emotion of the model, for attacks with a targeted mode (None: untargeted);
    checked before any audio work by the attacks' one rule."""
    from ser_core.attacks import attack_class
    from ser_core.attacks.base import check_target
    check_target(attack_class(attack, domain), b, target)


def _attack_clip(b, y, attack, params, domain, max_seconds, progress, out: Path, target):
    """The one call of the attack for both domains: a ClipAttackResult."""
    return attack_clip(b, y, attack, params, domain=domain, sample_rate=b.feature_config.sample_rate,
                       max_seconds=max_seconds, out_dir=out, progress=progress, target=target)


# --- what the page shows ----------------------------------------------------------------------
def _feature_outcome(b, y, r, progress, out: Path) -> AttackOutcome:
    from ser_core.serving.inversion import LABEL, listening_copy
    if progress:
        progress(0.95, "listening copy (Griffin-Lim inversion)")
    copy = listening_copy(b, y, r.features, r.adversarial_features, out)
    features = out / "adversarial_features.npy"
    np.save(features, r.adversarial_features.astype(np.float32))
    result = r.to_dict()
    result["listening_copy"] = copy.to_dict(r.before.label)
    result["attacked_audio"] = LABEL
    images = _images(b, r.features, r.adversarial_features, out)
    return AttackOutcome(result, out, images, copy.path, features)


def _waveform_outcome(b, y, r, out: Path) -> AttackOutcome:
    result = r.to_dict()
    result["flipped"] = r.flipped  # the decision on the written WAV: the only one that counts
    wav = Path(r.wav_path)
    # the images compare what the serving path computes from the clean clip and the WAV (the
    # attack computed both already: serving_features keeps them)
    x, x_adv = serving_features(b, y), serving_features(b, r.adversarial_audio)
    if x_adv.shape != x.shape:  # the perturbed clip trims into another number of chunks
        n = min(len(x), len(x_adv))
        x, x_adv = x[:n], x_adv[:n]
    features = out / "adversarial_features.npy"
    np.save(features, x_adv)
    result["attacked_audio"] = "adversarial audio (16-bit WAV), its decision verified by the serving path"
    return AttackOutcome(result, out, _images(b, x, x_adv, out), wav, features)


def _stop_if_cancelled(attack: str) -> None:
    """A cancelled run skips the images, inversion and files nobody will see."""
    if stop_reason() == "cancelled":
        raise AttackCancelledError(f"{attack}: cancelled by the caller")


def _images(b, x, x_adv, out: Path) -> dict[str, Path]:
    from ser_core.serving.plots import log_mel_images
    images = log_mel_images(b.standardizer.inverse(x), b.standardizer.inverse(x_adv))
    paths = {}
    for name, img in images.items():
        paths[name] = out / f"log_mel_{name}.png"
        img.save(paths[name])
    return paths
