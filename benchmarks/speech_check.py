"""The speech check (ser_core/audio/speech.py) on every corpus clip and on synthetic non-speech.

Prints, per corpus, the share of clips the check rejects (a false rejection: every corpus clip is
speech) before (the old rule: seconds and share of Silero frames >= 0.15 only) and after (the
whole check), for the clean clips and, with --variants, the same clips with pink noise at 10 dB
SNR, band-limited to 300-3400 Hz (a phone line) and in a reverberant room (RT60 0.6 s); the
measures' percentiles over the clean clips; then the decision on synthetic tones, hums,
white/pink/brown noise and music-like chords and melodies made here (seeded), before and after.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/speech_check.py [--every 1]
        [--variants [NAME ...]] [--dump measures.json]     # --variants alone: all four"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ser_core.audio import speech  # noqa: E402
from ser_core.audio.decode import load_audio  # noqa: E402
from ser_core.data.corpora import CORPORA, read_corpus  # noqa: E402
from ser_core.data.held_out import data_root  # noqa: E402

SR = speech.SAMPLE_RATE
MEASURES = ("speech_fraction", "mean_probability", "max_probability", "flatness", "shape_change",
            "sound_shape_change", "steady_peaks")


def before(m: dict) -> str:
    """The check as it was: Silero frames >= 0.15 only."""
    if m["speech_seconds"] < speech.MIN_SPEECH_SECONDS:
        return speech.NONE
    return speech.LITTLE if m["speech_fraction"] < speech.MIN_SPEECH_FRACTION else speech.SPEECH


# --- synthetic non-speech ----------------------------------------------------------------------
def _t(seconds):
    return np.arange(int(seconds * SR)) / SR


def _harmonic(f0, t, n=10, decay=1.0, phase_seed=0):
    """Harmonics of f0 (an array or a number), amplitude k**-decay, random phases."""
    rng = np.random.default_rng(phase_seed)
    phase = 2 * np.pi * np.cumsum(np.broadcast_to(f0, t.shape)) / SR
    return sum(np.sin(k * phase + rng.uniform(0, 6)) / k ** decay for k in range(1, n + 1)
               if k * np.max(f0) < SR / 2)


def _norm(y, peak=0.5):
    return (peak * y / np.max(np.abs(y))).astype(np.float32)


def tone(freq, seconds=3.0):
    return _norm(np.sin(2 * np.pi * freq * _t(seconds)))


def hum(f0, seconds=3.0, syllables=False, seed=0):
    """A hummed 'mmm': harmonics through a nasal resonance, vibrato, a slow melodic glide, and
    with syllables=True an 'mm-mm-mm' envelope at 3 Hz."""
    from scipy.signal import lfilter
    t = _t(seconds)
    rng = np.random.default_rng(seed)
    glide = 2 ** (rng.uniform(-3, 3) / 12 * np.sin(2 * np.pi * t / seconds + rng.uniform(0, 6)))
    f = f0 * glide * (1 + 0.015 * np.sin(2 * np.pi * 5.5 * t))
    y = _harmonic(f, t, n=20, decay=1.0, phase_seed=seed)
    r, fc = 0.97, 250.0  # nasal resonance
    y = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * fc / SR), r * r], y)
    y = lfilter([1.0], [1, -0.9], y) * 0.1  # the lips' low-pass of a closed mouth
    if syllables:
        y = y * (0.15 + 0.85 * np.sin(2 * np.pi * 1.5 * t) ** 2)
    return _norm(y)


def noise(colour, seconds=3.0, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(int(seconds * SR))
    if colour == "white":
        return _norm(w, 0.3)
    spec = np.fft.rfft(w)
    f = np.maximum(np.fft.rfftfreq(len(w), 1 / SR), 20.0)
    spec /= np.sqrt(f) if colour == "pink" else f
    return _norm(np.fft.irfft(spec, len(w)), 0.3)


NOTE = {n: 440 * 2 ** (i / 12) for n, i in
        (("A3", -12), ("C4", -9), ("D4", -7), ("E4", -5), ("F4", -4), ("G4", -2), ("A4", 0), ("B4", 2),
         ("C5", 3), ("E5", 7), ("G5", 10))}


def _notes(seq, dur, seconds, decay=3.0):
    t_note = _t(dur)
    env = np.exp(-decay * t_note) * np.minimum(1, t_note / 0.01)
    y = np.concatenate([env * sum(_harmonic(NOTE[n], t_note, n=8, decay=1.5, phase_seed=i) for n in chord)
                        for i, chord in enumerate(seq)])
    return np.resize(y, int(seconds * SR))


def chords(seconds=3.0):
    """C - G - Am - F, 0.75 s each, piano-like notes."""
    return _norm(_notes([("C4", "E4", "G4"), ("B4", "D4", "G4"), ("A3", "C4", "E4"), ("A3", "C4", "F4")],
                        0.75, seconds, decay=2.0))


def melody(seconds=3.0):
    """An arpeggiated melody, 0.2 s a note, over a held bass."""
    seq = [(n,) for n in ("C4", "E4", "G4", "C5", "G4", "E4", "D4", "F4", "A4", "B4", "G4", "E5")]
    bass = 0.4 * _harmonic(NOTE["A3"] / 2, _t(seconds), n=6)
    return _norm(_notes(seq, 0.2, seconds, decay=4.0) + bass)


def chords_drums(seconds=3.0, seed=0):
    """The chords with a kick drum every 0.5 s and a hi-hat every 0.25 s."""
    rng = np.random.default_rng(seed)
    y = chords(seconds).astype(np.float64)
    t = _t(0.15)
    kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-30 * t)) * t) * np.exp(-20 * t)
    hat = rng.standard_normal(len(t)) * np.exp(-60 * t) * 0.3
    for start in range(0, len(y) - len(t), int(0.25 * SR)):
        y[start:start + len(t)] += hat + (kick if (start // int(0.25 * SR)) % 2 == 0 else 0)
    return _norm(y)


def synthetic() -> dict[str, np.ndarray]:
    out = {f"tone {f} Hz": tone(f) for f in (100, 440, 1000, 3000)}
    out.update({f"hum {f0:g} Hz": hum(f0, seed=i) for i, f0 in enumerate((110, 165, 220))})
    out.update({f"hum {f0:g} Hz mm-mm": hum(f0, syllables=True, seed=i) for i, f0 in enumerate((100, 130, 150, 180, 220))})
    out.update({f"{c} noise": noise(c) for c in ("white", "pink", "brown")})
    out.update({"chords": chords(), "melody": melody(), "chords + drums": chords_drums(),
                "chords 10 s": chords(10.0), "hum 165 Hz 10 s": hum(165, 10.0, syllables=True)})
    return out


# --- corpus clips --------------------------------------------------------------------------------
def pink_at_snr(y, snr_db, seed=0):
    n = np.resize(noise("pink", len(y) / SR + 0.01, seed), len(y)).astype(np.float64)
    gain = np.sqrt(np.mean(y.astype(np.float64) ** 2) / (np.mean(n ** 2) * 10 ** (snr_db / 10)))
    return (y + gain * n).astype(np.float32)


def phone_band(y):
    from scipy.signal import butter, sosfiltfilt
    return sosfiltfilt(butter(6, [300, 3400], btype="band", fs=SR, output="sos"), y).astype(np.float32)


def reverberant(y, rt60=0.6, seed=0):
    """A room: the clip convolved with an exponentially decaying noise tail (RT60 0.6 s) after
    the direct sound, at the same peak."""
    from scipy.signal import fftconvolve
    t = np.arange(int(rt60 * SR)) / SR
    rir = np.random.default_rng(seed).standard_normal(len(t)) * np.exp(-6.9 * t / rt60) * 0.3
    rir[0] = 1.0
    out = fftconvolve(y, rir)[: len(y)]
    return (out * np.abs(y).max() / np.abs(out).max()).astype(np.float32)


VARIANTS = {"clean": lambda y: y, "pink noise 10 dB": lambda y: pink_at_snr(y, 10), "300-3400 Hz": phone_band,
            "reverb RT60 0.6 s": reverberant}


def corpus_table(every: int, variants: list[str], dump: dict) -> None:
    for name in CORPORA:
        root = data_root() / name
        if not root.is_dir():
            print(f"{name}: no folder {root}")
            continue
        utts = read_corpus(name, root, classes="all").utterances[::every]
        for variant in variants:
            t0 = time.perf_counter()
            rows = []
            for u in utts:
                m = speech.measure(VARIANTS[variant](load_audio(u.path)))
                m["before"], m["after"] = before(m), speech.verdict(m)[0]
                m["why"] = speech.verdict(m)[1]
                rows.append(m)
                dump.setdefault(f"{name}/{variant}", {})[u.path.name] = m
            rej_b = sum(r["before"] != speech.SPEECH for r in rows)
            rej_a = sum(r["after"] != speech.SPEECH for r in rows)
            print(f"{name:8s} {variant:17s} n={len(rows):5d}  rejected before {rej_b:4d} ({rej_b / len(rows):6.2%})"
                  f"  after {rej_a:4d} ({rej_a / len(rows):6.2%})  [{(time.perf_counter() - t0) / len(rows) * 1e3:.0f} ms a clip]",
                  flush=True)
            if variant == "clean":
                for k in MEASURES:
                    v = np.array([r[k] for r in rows])
                    q = np.percentile(v, [0, 0.5, 1, 5, 50, 95, 99, 100])
                    print(f"    {k:17s} min {q[0]:.3f}  p0.5 {q[1]:.3f}  p1 {q[2]:.3f}  p5 {q[3]:.3f}  "
                          f"median {q[4]:.3f}  p95 {q[5]:.3f}  p99 {q[6]:.3f}  max {q[7]:.3f}")
            for r, u in zip(rows, utts):
                if r["after"] != speech.SPEECH:
                    print(f"      rejected {u.path.name}: {r['why']}")


def synthetic_table(dump: dict) -> None:
    print(f"\n{'synthetic clip':22s} {'before':14s} {'after':10s} " + " ".join(f"{k[:10]:>10s}" for k in MEASURES))
    for name, y in synthetic().items():
        m = speech.measure(y)
        v, why = speech.verdict(m)
        dump.setdefault("synthetic", {})[name] = dict(m, why=why)
        print(f"{name:22s} {before(m):14s} {v:10s} " + " ".join(f"{m[k]:10.3f}" for k in MEASURES)
              + f"   {why or ''}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, default=1, help="every n-th clip of each corpus (1: all)")
    ap.add_argument("--variants", nargs="*", choices=list(VARIANTS), default=["clean"],
                    help="the clips as they are (clean), with pink noise at 10 dB SNR, band-limited to "
                         "300-3400 Hz, in a reverberant room; no name: all")
    ap.add_argument("--no-corpora", action="store_true")
    ap.add_argument("--dump", type=Path, help="write every clip's measures to this JSON file")
    a = ap.parse_args(argv)
    print(f"{speech.detector_name()}; limits {speech.limits()}")
    dump: dict = {}
    if not a.no_corpora:
        corpus_table(a.every, a.variants or list(VARIANTS), dump)
    synthetic_table(dump)
    if a.dump:
        a.dump.write_text(json.dumps(dump, indent=0))


if __name__ == "__main__":
    main()
