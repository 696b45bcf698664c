"""Is there speech in the clip? A check before an emotion is shown at all.

The emotion models answer for any sound: a 440 Hz tone came back "boredom 0.91", white noise
"sadness 0.89", music-like chords "sadness 0.94". So the app shows an emotion only for a clip
this check calls speech. It reads two kinds of evidence.

1. A voice detector: Silero VAD (Silero Team, "Silero VAD: pre-trained enterprise-grade Voice
   Activity Detector", github.com/snakers4/silero-vad; the ONNX model inside the `silero-vad`
   wheel, nothing is downloaded) gives a speech probability for every 32 ms frame. From it:
   the seconds of frames at or above FRAME_THRESHOLD (0.15, below Silero's usual 0.5: shouted,
   laughing speech peaks near 0.3), their share of the clip, the largest probability, and the
   mean over the frames that carry sound (within ACTIVE_RANGE_DB of the loudest, so silence
   around speech does not dilute it; music or noise around a voice does).
2. The spectrum, after Scheirer & Slaney ("Construction and evaluation of a robust
   multifeature speech/music discriminator", ICASSP 1997: spectral flux, steady spectral
   peaks) and Gray & Markel (spectral flatness, 1974). Speech is a string of phonemes: the
   shape of its spectrum (formants, voiced against voiceless sounds) moves every few tens of
   ms, and its pitch never holds still. Over the frames the detector took for a voice (or, when
   they are under MIN_SPEECH_SECONDS, every frame that carries sound), the median of:
     - flatness: geometric over arithmetic mean of the power spectrum, 100 Hz-7 kHz; white noise
       0.57, pink noise 0.35, corpus speech under 0.16 (0.32 with pink noise at 10 dB SNR);
     - shape change: how far the level-free log-Mel envelope (cepstral coefficients 1-12 of 24
       bands, each frame floored 40 dB under its loudest band) moves in 50 ms; tones, hums and
       held chords move it under 4 dB, stationary noise under 6 (its estimate's own jitter),
       corpus speech over 13 (over 6.5 with pink noise at 10 dB SNR or in a reverberant room);
     - steady peaks: the share of spectral peaks' energy that stays on one frequency bin for
       0.2 s; tones and hums near 1, corpus speech up to 0.87.
   And the shape change over every frame that carries sound: is the sound as a whole speech?

The verdict (`verdict`): no voice at all (largest probability under MIN_PEAK_PROBABILITY), a
noise-like spectrum, a steady sound or held pitches are "no speech" whatever else; past those,
a voice the detector heard (heard_voice) or a sound that as a whole changes like speech though
the detector hardly reacts (speech_like_sound: shouted, whispered, phone-band speech) is
"speech"; a voice heard too briefly for the clip or drowned in other sound is "little speech";
no voice frames "no speech". Only "speech" lets the app show an emotion; for the others it shows
the model's output marked as no emotion, with the reason. The limits below were set on synthetic
tones, hums, noise and music and on every clip of EmoDB, EMOVO and RAVDESS (clean, with pink
noise at 10 dB SNR, band-limited to 300-3400 Hz, reverberant): benchmarks/speech_check.py
prints the false rejections and the decisions, before (the detector's frames alone) and after."""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field

import numpy as np

SAMPLE_RATE = 16_000
FRAME_SAMPLES = 512  # Silero's 16 kHz frame
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
FRAME_THRESHOLD = 0.15
MIN_SPEECH_SECONDS = 0.25
MIN_SPEECH_FRACTION = 0.10
ACTIVE_RANGE_DB = 35.0          # a frame carries sound within this of the clip's loudest frame
# The limits (benchmarks/speech_check.py; the module docstring says what each measure gives):
MIN_VOICE_PROBABILITY = 0.05    # mean Silero probability over the frames that carry sound
MAX_FLATNESS = 0.40             # median spectral flatness
MIN_SHAPE_CHANGE = 6.0          # median cepstral distance (dB) between frames 50 ms apart
MAX_STEADY_PEAKS = 0.95         # share of peak energy held on one bin for 200 ms
MIN_PEAK_PROBABILITY = 0.10     # speech the detector is unsure of: its largest frame probability
SPEECH_LIKE_CHANGE = 15.0       # ... and the shape change over all the sound
SPEECH, LITTLE, NONE = "speech", "little speech", "no speech"

# spectral analysis: 32 ms frames every 10 ms
_N_FFT, _HOP = 512, 160
_BANDS = 24               # Mel bands of the spectral envelope
_CHANGE_LAG = 5           # frames: 50 ms
_STEADY_FRAMES = 20       # frames: 200 ms
_FLOOR_DB = 40.0          # below the frame's loudest band: floored (quantisation, digital silence)

_model = None
_lock = threading.Lock()


@dataclass
class SpeechCheck:
    verdict: str             # "speech" | "little speech" | "no speech"
    speech_seconds: float    # Silero frames at or above the threshold, in seconds
    speech_fraction: float   # of the clip
    max_probability: float   # largest frame speech probability
    detector: str
    threshold: float = FRAME_THRESHOLD
    mean_probability: float = 0.0     # Silero's mean over the frames that carry sound
    flatness: float = 0.0             # median spectral flatness
    shape_change: float = 0.0         # median cepstral distance over 50 ms (dB), voice frames
    sound_shape_change: float = 0.0   # the same over every frame that carries sound
    steady_peaks: float = 0.0         # share of peak energy held still for 200 ms
    reason: str | None = None         # why it is not speech, in words; None for speech
    detector_unsure: bool = False     # speech by its sound, though the voice detector missed it
    limits: dict = field(default_factory=dict)

    @property
    def has_speech(self) -> bool:
        return self.verdict == SPEECH

    @property
    def note(self) -> str | None:
        if self.has_speech:
            return None
        what = "no speech" if self.verdict == NONE else f"little speech ({self.speech_seconds:.2f} s)"
        why = f" ({self.reason})" if self.reason else ""
        return (f"The speech detector found {what} in this clip{why}. The models know acted speech "
                "only; their output for other sounds (tones, hums, noise, music, silence) is not "
                "an emotion, so none is shown.")

    def to_dict(self) -> dict:
        return dict(asdict(self), has_speech=self.has_speech, note=self.note)


def _detector():
    """Silero VAD's ONNX model from its wheel, loaded once (torch's thread count is kept: the
    package sets it to 1 on import)."""
    global _model
    if _model is None:
        import torch
        threads = torch.get_num_threads()
        try:
            from silero_vad import load_silero_vad
            _model = load_silero_vad(onnx=True)
        finally:
            torch.set_num_threads(threads)
    return _model


def detector_name() -> str:
    try:
        from importlib.metadata import version
        name = f"silero-vad {version('silero-vad')}"
    except Exception:
        name = "silero-vad"
    return f"{name} (ONNX, frame threshold {FRAME_THRESHOLD}) + spectral measures"


def warm_up() -> None:
    check_speech(np.zeros(SAMPLE_RATE // 2, np.float32))


def voice_probabilities(y: np.ndarray) -> np.ndarray:
    """Silero's speech probability for every 32 ms frame of a 16 kHz clip."""
    import torch
    y = np.ascontiguousarray(y, dtype=np.float32)
    with _lock:  # the ONNX wrapper keeps its recurrent state between frames
        return _detector().audio_forward(torch.from_numpy(y), SAMPLE_RATE).numpy().ravel()


def _sounding(power: np.ndarray) -> np.ndarray:
    """Frames (of a per-frame power) within ACTIVE_RANGE_DB of the loudest."""
    db = 10 * np.log10(power + 1e-12)
    return db >= db.max() - ACTIVE_RANGE_DB


def spectral_measures(y: np.ndarray, probabilities: np.ndarray | None = None) -> dict:
    """flatness, shape_change and steady_peaks of a 16 kHz clip (module docstring), each the
    median (or share) over the frames the voice detector took for a voice (its `probabilities`
    at or above FRAME_THRESHOLD) when they make MIN_SPEECH_SECONDS, else over the frames that
    carry sound: is what sounded like a voice speech? And sound_shape_change, the shape change
    over every frame that carries sound: is the sound as a whole speech?"""
    import librosa
    y = np.asarray(y, np.float32)
    if len(y) < _N_FFT:
        y = np.pad(y, (0, _N_FFT - len(y)))
    power = np.abs(librosa.stft(y, n_fft=_N_FFT, hop_length=_HOP, center=True)) ** 2
    freqs = np.fft.rfftfreq(_N_FFT, 1 / SAMPLE_RATE)
    active = sounding = _sounding(power.sum(0))
    if probabilities is not None and len(probabilities):
        frame = np.minimum(np.arange(power.shape[1]) * _HOP // FRAME_SAMPLES, len(probabilities) - 1)
        voiced = active & (np.asarray(probabilities)[frame] >= FRAME_THRESHOLD)
        if voiced.sum() * _HOP / SAMPLE_RATE >= MIN_SPEECH_SECONDS:
            active = voiced
    band = (freqs >= 100) & (freqs <= 7000)
    p = power[band][:, active] + 1e-12
    flat = np.exp(np.mean(np.log(p), 0)) / np.mean(p, 0)

    mel = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=_N_FFT, n_mels=_BANDS, fmin=60, fmax=7600) @ power
    # 50 ms smoothing: the estimate's own noise (a few FFT bins a band), not the sound's change;
    # each frame floored below its own loudest band, so a change of level is no change of shape
    mel_db = _smooth(10 * np.log10(mel + 1e-12), _CHANGE_LAG)
    mel_db = np.maximum(mel_db, mel_db.max(0, keepdims=True) - _FLOOR_DB)
    cep = _dct_rows(_BANDS)[1:13] @ mel_db  # cepstral coefficients; c0 (the level) left out
    dist = np.sqrt(((cep[:, _CHANGE_LAG:] - cep[:, :-_CHANGE_LAG]) ** 2).sum(0))

    def median_change(frames):
        d = dist[frames[:-_CHANGE_LAG] & frames[_CHANGE_LAG:]]
        return float(np.median(d)) if len(d) else 0.0
    return {"flatness": float(np.median(flat)) if len(flat) else 1.0,
            "shape_change": median_change(active), "sound_shape_change": median_change(sounding),
            "steady_peaks": _steady_peaks(power, freqs, active)}


def _dct_rows(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix (n x n): row k is cepstral coefficient k."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    m = np.sqrt(2.0 / n) * np.cos(np.pi * k * (2 * i + 1) / (2 * n))
    m[0] /= np.sqrt(2.0)
    return m


def _smooth(x: np.ndarray, n: int) -> np.ndarray:
    kernel = np.ones(n) / n
    return np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 1, x)


def _steady_peaks(power: np.ndarray, freqs: np.ndarray, active: np.ndarray) -> float:
    """Share of the energy of spectral peaks (100 Hz-5 kHz, within 40 dB of their frame's
    loudest) that sit on the same bin for _STEADY_FRAMES frames or more."""
    band = (freqs >= 100) & (freqs <= 5000)
    p = power[band]
    db = 10 * np.log10(p + 1e-12)
    peak = np.zeros_like(p, dtype=bool)
    peak[1:-1] = (p[1:-1] > p[:-2]) & (p[1:-1] >= p[2:])
    peak &= db >= db.max(0, keepdims=True) - 40
    peak &= active[None, :]
    run = _run_lengths(peak)
    total = p[peak].sum()
    return float(p[peak & (run >= _STEADY_FRAMES)].sum() / total) if total > 0 else 0.0


def _run_lengths(mask: np.ndarray) -> np.ndarray:
    """For each True cell, the length of the run of Trues along time (axis 1) it belongs to."""
    fwd = np.zeros(mask.shape, np.int32)
    bwd = np.zeros(mask.shape, np.int32)
    n = mask.shape[1]
    for t in range(n):
        fwd[:, t] = np.where(mask[:, t], (fwd[:, t - 1] if t else 0) + 1, 0)
    for t in range(n - 1, -1, -1):
        bwd[:, t] = np.where(mask[:, t], (bwd[:, t + 1] if t < n - 1 else 0) + 1, 0)
    return np.where(mask, fwd + bwd - 1, 0)


def measure(y: np.ndarray, probabilities: np.ndarray | None = None) -> dict:
    """Every measure the verdict reads, for a decoded 16 kHz clip (`probabilities`: its
    voice_probabilities, when the caller has them already)."""
    y = np.asarray(y, np.float32)
    probs = voice_probabilities(y) if probabilities is None else np.asarray(probabilities)
    seconds = len(y) / SAMPLE_RATE
    speech = min(float((probs >= FRAME_THRESHOLD).sum() * FRAME_SECONDS), seconds)
    n = len(probs)
    blocks = np.pad(y, (0, n * FRAME_SAMPLES - len(y)))[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES)
    active = _sounding((blocks.astype(np.float64) ** 2).mean(1)) if n else np.zeros(0, bool)
    return dict(seconds=seconds, speech_seconds=speech, speech_fraction=speech / seconds if seconds else 0.0,
                active_fraction=float(active.mean()) if n else 0.0,
                max_probability=float(probs.max()) if n else 0.0,
                mean_probability=float(probs[active].mean()) if active.any() else 0.0,
                **spectral_measures(y, probs))


def verdict(m: dict) -> tuple[str, str | None]:
    """(verdict, reason) from `measure`'s values. Nothing the voice detector takes for a voice
    at all is no speech; then the spectrum: noise, a steady sound or held pitches are no speech
    whatever the detector says; then the voice: heard (enough frames, a mean over the sound)
    over MIN_SPEECH_FRACTION of the clip is speech, and so is a sound that as a whole changes
    like speech though the detector is unsure of it (shouted, whispered, phone-band speech)."""
    if m["max_probability"] < MIN_PEAK_PROBABILITY:
        return NONE, (f"no voice heard: the voice detector's largest frame probability is "
                      f"{m['max_probability']:.2f}, below {MIN_PEAK_PROBABILITY:g}")
    if m["flatness"] > MAX_FLATNESS:
        return NONE, f"a noise-like spectrum: flatness {m['flatness']:.2f}, speech stays below {MAX_FLATNESS:g}"
    if m["shape_change"] < MIN_SHAPE_CHANGE:
        return NONE, (f"a steady sound such as a tone, hum, drone or held chord: its spectrum's shape "
                      f"moves {m['shape_change']:.1f} dB in 50 ms, speech at least {MIN_SHAPE_CHANGE:g}")
    if m["steady_peaks"] > MAX_STEADY_PEAKS:
        return NONE, (f"held pitches, as in a tone, hum or music: {m['steady_peaks']:.0%} of its "
                      f"harmonics' energy holds one frequency for 0.2 s, speech at most {MAX_STEADY_PEAKS:.0%}")
    if heard_voice(m) or speech_like_sound(m):
        return SPEECH, None
    if m["speech_seconds"] < MIN_SPEECH_SECONDS:
        return NONE, f"no voice heard: {m['speech_seconds']:.2f} s of voice frames, at least {MIN_SPEECH_SECONDS:g} s needed"
    if m["speech_fraction"] < MIN_SPEECH_FRACTION:
        return LITTLE, f"voice in {m['speech_fraction']:.0%} of the clip, at least {MIN_SPEECH_FRACTION:.0%} needed"
    return LITTLE, (f"the voice is a small part of the sound: the voice detector's mean speech probability "
                    f"over it is {m['mean_probability']:.2f}, at least {MIN_VOICE_PROBABILITY:g} needed")


def heard_voice(m: dict) -> bool:
    """The voice detector's own evidence: MIN_SPEECH_SECONDS of voice frames making
    MIN_SPEECH_FRACTION of the clip, and a mean probability over the sound of at least
    MIN_VOICE_PROBABILITY (the voice is not a small part of what sounds)."""
    return (m["speech_seconds"] >= MIN_SPEECH_SECONDS and m["speech_fraction"] >= MIN_SPEECH_FRACTION
            and m["mean_probability"] >= MIN_VOICE_PROBABILITY)


def speech_like_sound(m: dict) -> bool:
    """Speech the voice detector is unsure of: its largest frame probability reaches
    MIN_PEAK_PROBABILITY (noise and a drum loop stay under 0.06), the sound's shape changes by
    SPEECH_LIKE_CHANGE or more over all its frames (noise, music and hums here stay under 12;
    the clean or phone-band corpus clips the detector misses, shouted or whispered, 14-26), and
    it sounds for MIN_SPEECH_FRACTION of the clip and MIN_SPEECH_SECONDS."""
    sounding = m["active_fraction"] * m["seconds"]
    return (m["max_probability"] >= MIN_PEAK_PROBABILITY and m["sound_shape_change"] >= SPEECH_LIKE_CHANGE
            and m["active_fraction"] >= MIN_SPEECH_FRACTION and sounding >= MIN_SPEECH_SECONDS)


def limits() -> dict:
    return {"min_speech_seconds": MIN_SPEECH_SECONDS, "min_speech_fraction": MIN_SPEECH_FRACTION,
            "min_voice_probability": MIN_VOICE_PROBABILITY, "max_flatness": MAX_FLATNESS,
            "min_shape_change": MIN_SHAPE_CHANGE, "max_steady_peaks": MAX_STEADY_PEAKS,
            "min_peak_probability": MIN_PEAK_PROBABILITY, "speech_like_change": SPEECH_LIKE_CHANGE}


def check_speech(y: np.ndarray, sample_rate: int = SAMPLE_RATE,
                 probabilities: np.ndarray | None = None) -> SpeechCheck:
    """Speech verdict for a decoded mono clip (resampled to 16 kHz when it is not; then
    `probabilities`, the 16 kHz clip's voice_probabilities, are recomputed)."""
    if sample_rate != SAMPLE_RATE:
        import librosa
        y = librosa.resample(np.asarray(y, np.float32), orig_sr=sample_rate, target_sr=SAMPLE_RATE)
        probabilities = None
    m = measure(y, probabilities)
    v, reason = verdict(m)
    r = {k: round(float(m[k]), 3) for k in ("speech_seconds", "speech_fraction", "max_probability", "mean_probability",
                                            "flatness", "shape_change", "sound_shape_change", "steady_peaks")}
    return SpeechCheck(v, detector=detector_name(), reason=reason, limits=limits(),
                       detector_unsure=v == SPEECH and not heard_voice(m), **r)
