"""Scoring attacks away from the lab: universal perturbations on voices the model never heard,
and any clip after a room the optimisation never saw.

  training_clips(bundle, n)         clips of the bundle's training speakers (what universal
                                    perturbations learn on)
  unseen_clips(bundle, n)           clips of the speakers the bundle never trained on
  fooling_rate(bundle, pert, clips) share of clips whose decision the perturbation changes
                                    (targeted: that land on the target), digital and after
                                    held-out rooms, with 95 % Wilson intervals
  after_rooms(bundle, clean, adv)   decisions of attacked clips after held-out rooms
What the app shows (thin wrappers, one clip each):
  universal_clip(bundle, audio, snr_db, target)   the shipped perturbation added, before / after
  through_room(bundle, audio, clean=None, seed)   the clip played in a random held-out room

A flip "after a room" compares the adversarial clip's recording with the clean clip's recording
in the same room (same noise): it asks whether the attack still changes what the model decides
about that recording, not whether the room alone changed it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ser_core.attacks.universal import UniversalPerturbation, load_universal, speech_snr_db
from ser_core.audio.decode import load_audio, validate_waveform
from ser_core.audio.room import held_out_rooms
from ser_core.errors import ParameterError
from ser_core.stats import wilson

HELD_OUT_ROOMS = 16


def _corpus_clips(bundle, speakers, n: int | None, seed: int, data_dir=None, corpus: str | None = None):
    from ser_core.data.corpora import read_corpus
    from ser_core.data.held_out import data_root
    name = corpus or bundle.config["corpus"]
    c = read_corpus(name, Path(data_dir or data_root()) / name)
    utts = [u for u in c.utterances if speakers is None or u.speaker in speakers]
    if n is not None and n < len(utts):
        rng = np.random.default_rng(seed)
        utts = [utts[i] for i in np.sort(rng.permutation(len(utts))[:n])]
    sr = bundle.feature_config.sample_rate
    return [load_audio(u.path, sr) for u in utts], utts


def training_clips(bundle, n: int | None = None, seed: int = 0, data_dir=None):
    """(clips, utterances): up to n clips (seeded draw; None: all) of the bundle's training
    speakers (config split.speakers.train), in its classes."""
    train = set(bundle.config["split"].get("speakers", {}).get("train") or ())
    if not train:
        raise ParameterError(f"model {bundle.name} names no training speakers (a speaker-protocol bundle is needed)")
    clips, utts = _corpus_clips(bundle, train, None, seed, data_dir)
    keep = [i for i, u in enumerate(utts) if u.emotion in bundle.labels]
    if n is not None and n < len(keep):
        keep = list(np.sort(np.random.default_rng(seed).permutation(keep)[:n]))
    return [clips[i] for i in keep], [utts[i] for i in keep]


def unseen_clips(bundle, n: int | None = None, seed: int = 0, data_dir=None, corpus: str | None = None):
    """(clips, utterances): clips of speakers the bundle never trained on: its own corpus's
    other speakers (every emotion of theirs in the bundle's classes), or, with `corpus`, up to n
    clips of another corpus (any speaker, any emotion: a fooling rate needs no labels)."""
    if corpus is not None and corpus != bundle.config["corpus"]:
        return _corpus_clips(bundle, None, n, seed, data_dir, corpus)
    train = set(bundle.config["split"].get("speakers", {}).get("train") or ())
    clips, utts = _corpus_clips(bundle, None, None, seed, data_dir)
    keep = [i for i, u in enumerate(utts) if u.speaker not in train and u.emotion in bundle.labels]
    if n is not None and n < len(keep):
        keep = list(np.sort(np.random.default_rng(seed).permutation(keep)[:n]))
    return [clips[i] for i in keep], [utts[i] for i in keep]


def rate(k: int, n: int) -> dict:
    lo, hi = wilson(k, n)
    return {"k": int(k), "n": int(n), "rate": round(k / n, 4) if n else None, "wilson95": [round(lo, 4), round(hi, 4)]}


def after_rooms(bundle, clean: list, adversarial: list, rooms=None, offset: int = 0) -> dict:
    """Clip i (clean and adversarial) played in held-out room (i + offset) mod len(rooms):
    per clip, the two decisions there and whether they differ (the flip survived the room)."""
    rooms = rooms or held_out_rooms(HELD_OUT_ROOMS)
    sr = bundle.feature_config.sample_rate
    rows = []
    for i, (c, a) in enumerate(zip(clean, adversarial)):
        room = rooms[(i + offset) % len(rooms)]
        before = bundle.predict_clip(room.recording(c), sr).label
        after = bundle.predict_clip(room.recording(a, clean=c), sr).label
        rows.append({"room": room.spec.index, "clean": before, "adversarial": after, "flipped": before != after})
    return {"rows": rows, "flipped": rate(sum(r["flipped"] for r in rows), len(rows))}


def fooling_rate(bundle, pert: UniversalPerturbation, clips: list, snr_db: float | None = None,
                 rooms: bool | list = False, before: list | None = None) -> dict:
    """The perturbation added to every clip at snr_db (default its own): how many decisions
    change (fooling rate) and, targeted, how many land on the target (of all clips, and of the
    clips not already decided as it), with 95 % Wilson intervals; with rooms (True: the
    held-out bank, or a list), also after a held-out room per clip. before: the clean clips'
    decisions when already known."""
    snr = pert.snr_db if snr_db is None else snr_db
    sr = bundle.feature_config.sample_rate
    adv = [pert.apply(y, snr) for y in clips]
    before = before or [bundle.predict_clip(y, sr).label for y in clips]
    after = [bundle.predict_clip(a, sr).label for a in adv]
    out = {"snr_db": snr, "target": pert.target, "n": len(clips),
           "fooled": rate(sum(b != a for b, a in zip(before, after)), len(clips)),
           "measured_snr_db_median": round(float(np.median([speech_snr_db(y, a) for y, a in zip(clips, adv)])), 3)}
    if pert.target:
        out["target_reached"] = rate(sum(a == pert.target for a in after), len(clips))
        others = [a for b, a in zip(before, after) if b != pert.target]
        out["target_reached_not_already"] = rate(sum(a == pert.target for a in others), len(others))
    if rooms:
        room = after_rooms(bundle, clips, adv, None if rooms is True else rooms)
        out["after_room"] = room["flipped"]
        if pert.target:
            out["after_room_target"] = rate(sum(r["adversarial"] == pert.target for r in room["rows"]), len(clips))
    return out


# --- what the app shows ----------------------------------------------------------------------
@dataclass
class UniversalClip:
    """One clip with the model's shipped universal perturbation added: the serving path's
    decisions before and after, the audio after (float32, 16-bit grid), the SNR against the
    speech as measured, and whether the decision changed (targeted: landed on the target)."""

    before: object
    after: object
    audio: np.ndarray
    sample_rate: int
    snr_db: float
    target: str | None
    perturbation: dict

    @property
    def flipped(self) -> bool:
        return self.before.label != self.after.label

    def to_dict(self) -> dict:
        return {"label_before": self.before.label, "probabilities_before": self.before.probabilities,
                "label_after": self.after.label, "probabilities_after": self.after.probabilities,
                "flipped": self.flipped, "target": self.target,
                "target_reached": self.flipped if self.target is None else self.after.label == self.target,
                "snr_db": round(self.snr_db, 3), "perturbation": self.perturbation}


def _clip(bundle, audio, sample_rate):
    sr = bundle.feature_config.sample_rate
    if isinstance(audio, (str, Path)):
        return load_audio(audio, sr)
    if sample_rate is None:
        raise ParameterError("audio given as samples needs its sample_rate (accepted: an integer rate in Hz, "
                             "or a file path)")
    return validate_waveform(audio, sample_rate, sample_rate=sr)


def universal_clip(bundle, audio, snr_db: float = 25.0, target: str | None = None,
                   sample_rate: int | None = None) -> UniversalClip:
    """The bundle's shipped universal perturbation (for snr_db and target) added to `audio` (a
    path, or samples with their sample_rate): no optimisation at request time."""
    pert = load_universal(bundle, snr_db, target)
    y = _clip(bundle, audio, sample_rate)
    adv = pert.apply(y, snr_db)
    sr = bundle.feature_config.sample_rate
    return UniversalClip(bundle.predict_clip(y, sr), bundle.predict_clip(adv, sr), adv, sr, speech_snr_db(y, adv),
                         target, {k: pert.meta.get(k) for k in ("seed", "steps", "clips", "rooms", "snr_db")})


@dataclass
class RoomResult:
    """A clip played in a held-out room: the room, the recording (float32), the serving path's
    decision on the clip as given and on the recording; with `clean`, also the clean clip's
    decision in the same room and whether the attack's flip survived there."""

    room: dict
    audio: np.ndarray
    sample_rate: int
    digital: object
    recorded: object
    clean_recorded: object | None = None
    clean_audio: np.ndarray | None = None  # the clean clip's recording in the same room (with `clean`)

    @property
    def flip_survived(self) -> bool | None:
        return None if self.clean_recorded is None else self.recorded.label != self.clean_recorded.label

    def to_dict(self) -> dict:
        return {"room": self.room, "label_digital": self.digital.label, "label_in_room": self.recorded.label,
                "probabilities_in_room": self.recorded.probabilities,
                "clean_label_in_room": None if self.clean_recorded is None else self.clean_recorded.label,
                "flip_survived": self.flip_survived}


def through_room(bundle, audio, sample_rate: int | None = None, clean=None, seed: int | None = None) -> RoomResult:
    """`audio` (clean or attacked; a path or samples) played in a held-out room drawn with `seed`
    (None: a fresh random one) from the held-out bank and recorded. clean: the clean clip an
    attacked `audio` came from (same length), so the noise is set against it and its own decision
    in that room is given too."""
    y = _clip(bundle, audio, sample_rate)
    c = None if clean is None else _clip(bundle, clean, sample_rate)
    if c is not None and len(c) != len(y):
        raise ParameterError(f"clean clip has {len(c)} samples, the attacked one {len(y)} (accepted: the same clip)")
    rooms = held_out_rooms(HELD_OUT_ROOMS)
    room = rooms[int(np.random.default_rng(seed).integers(len(rooms)))]
    sr = bundle.feature_config.sample_rate
    rec = room.recording(y, clean=c)
    clean_rec = None if c is None else room.recording(c)
    return RoomResult(room.spec.to_dict(), rec, sr, bundle.predict_clip(y, sr), bundle.predict_clip(rec, sr),
                      None if c is None else bundle.predict_clip(clean_rec, sr), clean_rec)
