"""The app's universal mode and its "through a room" switch, as the API's /universal and /room
answer them: no optimisation at request time, so each request is a few model scorings and, in a
room, two convolutions.

  run_universal(path, model, snr_db, target, room, seed)
      the model's shipped universal perturbation (ser_core.attacks.universal) added to the clip
      at its SNR: decisions and distributions before and after, the clip and its perturbed copy
      as 16-bit WAVs; with room, both played in the same random held-out room (the bank the
      optimisation never saw, ser_core.audio.room) and scored again, so the page shows whether
      the flip survived there
  run_room(path, model, clean, seed)
      any clip (clean, or attacked: the /attack WAV with its clean clip) played in a random
      held-out room and scored; with the clean clip, the clean recording's decision too
  universal_choices(model)   the (SNR, target) pairs a model ships, for the page's pickers

Both follow /predict's and /attack's rules: every value is checked before any audio work and a
bad one is a typed error that says what is accepted (ParameterError, or the AudioError of
read_clip), the clip is at most MAX_LAB_SECONDS long (refused from its header), the files go to a
fresh output folder of this instance (files.output_folder: capped in bytes and age). `seed`
None draws a fresh room; the seed used is in the result, so any answer can be replayed."""
from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ser_core.attacks.over_the_air import HELD_OUT_ROOMS, through_room, universal_clip
from ser_core.attacks.universal import load_universal, shipped_universal
from ser_core.attacks.waveform.base import to_pcm
from ser_core.attacks.waveform.verify import write_wav16
from ser_core.errors import ParameterError, excerpt
from ser_core.serving.catalogue import get_bundle
from ser_core.serving.files import output_folder
from ser_core.serving.limits import MAX_ATTACK_SECONDS, parse_target, read_clip
from ser_core.serving.prediction import jsonable, model_accuracy, speech_check, withhold_emotion

# Universal and room requests hold the clip and up to four copies of it (perturbed, two
# recordings, files): the attack's length cap keeps that, and the WAVs, small (30 s: 1 MB each).
MAX_LAB_SECONDS = MAX_ATTACK_SECONDS
MAX_SEED = 2 ** 31 - 1


@dataclass
class LabOutcome:
    """result: the JSON the API returns; files: what the page plays (16-bit WAVs in `folder`)."""

    result: dict
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)


# --- parameters ---------------------------------------------------------------------------------
def parse_snr(snr_db) -> float:
    """The SNR a shipped perturbation is applied at: a finite number (or its text)."""
    if isinstance(snr_db, bool) or snr_db is None:
        raise ParameterError(f"snr_db={excerpt(snr_db)} (accepted: a number of dB, e.g. 25)")
    try:
        v = float(snr_db) if isinstance(snr_db, (int, float)) else float(str(snr_db)[:30])
    except ValueError:
        raise ParameterError(f"snr_db={excerpt(snr_db)} is not a number (accepted: a number of dB, e.g. 25)") from None
    if not math.isfinite(v):
        raise ParameterError(f"snr_db={excerpt(snr_db)} is not finite (accepted: a number of dB, e.g. 25)")
    return v


def parse_seed(seed) -> int | None:
    """A room seed: a whole number 0..2^31-1, or None / '' / -1 for a fresh random room."""
    if seed is None or (isinstance(seed, str) and not seed.strip()):
        return None
    if isinstance(seed, bool):
        raise ParameterError(f"seed={seed} (accepted: a whole number 0..{MAX_SEED}, or -1 for a random room)")
    try:
        v = float(seed) if isinstance(seed, (int, float)) else float(str(seed)[:30])
    except ValueError:
        v = math.nan
    if not math.isfinite(v) or v != int(v) or not -1 <= v <= MAX_SEED:
        raise ParameterError(f"seed={excerpt(seed)} (accepted: a whole number 0..{MAX_SEED}, or -1 for a "
                             "random room)")
    return None if v == -1 else int(v)


def parse_switch(value) -> bool:
    """The room switch: true/false (or their text)."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ParameterError(f"room={excerpt(value)} (accepted: true or false)")


def universal_choices(model: str | None) -> list[dict]:
    """The perturbations `model` ships: [{snr_db, target, file}] (none for an unknown model)."""
    if not model:
        return []
    try:
        return shipped_universal(get_bundle(model))
    except ParameterError:
        return []


# --- the requests -------------------------------------------------------------------------------
def _room_seed(seed) -> int:
    seed = parse_seed(seed)
    return secrets.randbelow(MAX_SEED) if seed is None else seed


def _common(b, y, model: str) -> dict:
    sr = b.feature_config.sample_rate
    speech = speech_check(y, sr)
    return dict(model=model, language=b.config.get("language"), seconds_of_audio=round(len(y) / sr, 3),
                model_accuracy=model_accuracy(b.config), speech=speech, **withhold_emotion(speech))


def _wav(folder: Path, name: str, y: np.ndarray, sr: int) -> tuple[Path, int]:
    """y written as a 16-bit WAV; and how many samples saturated (a room can raise the peak)."""
    pcm = to_pcm(y)
    saturated = int(np.sum(np.abs(np.asarray(y, np.float64)) * 32768.0 > 32767.5))
    return write_wav16(folder / name, pcm, sr), saturated


def run_universal(path, model: str, snr_db=25.0, target=None, room=False, seed=None,
                  max_seconds: float = MAX_LAB_SECONDS, out_dir=None) -> LabOutcome:
    """The model's shipped universal perturbation for (snr_db, target) added to the clip (its
    speech span, at snr_db against the speech): the serving path's decisions before and after,
    `flipped`, `target_reached`, the measured SNR; files `original` and `perturbed`. room: both
    clips also played in one held-out room (seed: which; None a fresh one) and scored there:
    `room.differs_in_room` whether the perturbed recording is decided differently from the clean
    recording, `room.flip_survived` whether that is the digital flip surviving (flipped and
    differs_in_room); files `room_original` and `room_perturbed`."""
    b = get_bundle(model)
    snr = parse_snr(snr_db)
    target = parse_target(target)
    in_room = parse_switch(room)
    seed = _room_seed(seed) if in_room else parse_seed(seed)
    load_universal(b, snr, target)  # not shipped: refused before any audio work, naming those shipped
    sr = b.feature_config.sample_rate
    y = read_clip(path, max_seconds, sr)
    u = universal_clip(b, y, snr, target, sample_rate=sr)
    out = Path(out_dir) if out_dir else output_folder()
    out.mkdir(parents=True, exist_ok=True)
    files = {"original": _wav(out, "original.wav", y, sr)[0], "perturbed": _wav(out, "universal.wav", u.audio, sr)[0]}
    result = dict(u.to_dict(), mode="universal", **_common(b, y, model))
    if in_room:
        adv = through_room(b, u.audio, sr, clean=y, seed=seed)  # the clean clip recorded in the same room too
        files["room_original"], sat_clean = _wav(out, "room-original.wav", adv.clean_audio, sr)
        files["room_perturbed"], sat_adv = _wav(out, "room-universal.wav", adv.audio, sr)
        # decided differently in the room, and whether that is the digital flip surviving (a room
        # alone can move a recording's decision when there was no flip to begin with)
        result["room"] = dict(adv.to_dict(), seed=seed, bank_size=HELD_OUT_ROOMS,
                              differs_in_room=adv.flip_survived, flip_survived=u.flipped and adv.flip_survived,
                              clean_probabilities_in_room=adv.clean_recorded.probabilities,
                              saturated_samples={"original": sat_clean, "perturbed": sat_adv})
    return LabOutcome(jsonable(result), out, files)


def run_room(path, model: str, clean=None, seed=None, max_seconds: float = MAX_LAB_SECONDS,
             out_dir=None) -> LabOutcome:
    """`path` (a clean clip, or an attacked one) played in a held-out room (seed: which; None a
    fresh one) and scored: the decision on the clip as given and on its recording. clean: the
    clean clip an attacked one came from (same length): its recording in the same room is scored
    too and `flip_survived` says whether the two are decided differently. Files `recording`
    (and `clean_recording`)."""
    b = get_bundle(model)
    seed = _room_seed(seed)
    sr = b.feature_config.sample_rate
    y = read_clip(path, max_seconds, sr)
    c = None if clean is None or (isinstance(clean, str) and not clean.strip()) else read_clip(clean, max_seconds, sr)
    r = through_room(b, y, sr, clean=c, seed=seed)
    out = Path(out_dir) if out_dir else output_folder()
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    files["recording"], sat = _wav(out, "room-recording.wav", r.audio, sr)
    result = dict(r.to_dict(), mode="room", seed=seed, bank_size=HELD_OUT_ROOMS, saturated_samples=sat,
                  probabilities_digital=r.digital.probabilities, **_common(b, y, model))
    if c is not None:
        files["clean_recording"], _ = _wav(out, "room-clean.wav", r.clean_audio, sr)
        result["clean_probabilities_in_room"] = r.clean_recorded.probabilities
    return LabOutcome(jsonable(result), out, files)


def lab_markdown(result: dict) -> str:
    """What the page says about a /universal or /room result."""
    if not result.get("emotion_shown", True):
        return f"**Not speech: no emotion to flip** ({result.get('no_emotion_reason')})."
    lines = []
    if result.get("mode") == "universal":
        goal = f" towards **{result['target']}**" if result.get("target") else ""
        verdict = ("**Flipped**" if result["flipped"] else "**Not flipped**")
        if result.get("target"):
            verdict += f"; target {'reached' if result['target_reached'] else 'not reached'}"
        lines.append(f"{verdict}: **{result['label_before']}** -> **{result['label_after']}** with the shipped "
                     f"universal perturbation{goal} at {result['snr_db']:.1f} dB SNR against the speech "
                     "(no optimisation on your clip).")
        room = result.get("room")
        if room:
            survived = ("**the flip survived the room**" if room["flip_survived"] else
                        "**the room alone moved it** (no digital flip)" if room["differs_in_room"] else
                        "**no flip in the room**")
            lines.append(f"In held-out room #{room['room']['index']} (RT60 {room['room']['rt60']:.2f} s, seed "
                         f"{room['seed']}): clean recording **{room['clean_label_in_room']}**, perturbed recording "
                         f"**{room['label_in_room']}**: {survived}.")
    else:
        lines.append(f"In held-out room #{result['room']['index']} (RT60 {result['room']['rt60']:.2f} s, seed "
                     f"{result['seed']}): **{result['label_digital']}** as given -> **{result['label_in_room']}** "
                     "recorded.")
        if result.get("clean_label_in_room") is not None:
            lines.append(f"The clean clip's recording there: **{result['clean_label_in_room']}**: the attacked recording "
                         + ("is decided differently (**the flip survived the room**)." if result["flip_survived"]
                            else "is decided the same (**no flip in the room**)."))
    return "\n\n".join(lines)

