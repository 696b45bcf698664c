"""Is there speech in the clip? A voice activity check before the emotion is trusted.

The emotion models answer for any sound: a pure tone, white noise and a full-scale square wave
all get an emotion at 0.6-0.8 probability. The check runs Silero VAD (Silero Team, "Silero VAD:
pre-trained enterprise-grade Voice Activity Detector", github.com/snakers4/silero-vad), the ONNX
model that ships inside the `silero-vad` wheel (nothing is downloaded), over 32 ms frames of the
16 kHz clip, and counts the frames whose speech probability reaches FRAME_THRESHOLD.

FRAME_THRESHOLD is 0.15, below Silero's usual 0.5, because one of the app's RAVDESS examples
(strong happiness, actor 06: shouted, laughing speech) peaks at 0.30 and would otherwise count
as no speech. Measured with this module (frames >= 0.15, seconds):
  - 240 random clips of EmoDB, EMOVO and RAVDESS (80 each): every one >= 1 s of speech;
  - the six example clips: 0.32 s (actor 06) to 3 s;
  - 3 s of pure tones (100 Hz-3 kHz), white noise (0.01-0.5 RMS), square waves (110-440 Hz)
    and a chirp: 0 s, largest frame probability 0.13.
Verdicts: "no speech" under MIN_SPEECH_SECONDS, "little speech" when speech covers less than
MIN_SPEECH_FRACTION of the clip, else "speech". The prediction is still made; callers show it
flagged."""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

import numpy as np

SAMPLE_RATE = 16_000
FRAME_SECONDS = 512 / SAMPLE_RATE  # Silero's 16 kHz frame
FRAME_THRESHOLD = 0.15
MIN_SPEECH_SECONDS = 0.25
MIN_SPEECH_FRACTION = 0.10
SPEECH, LITTLE, NONE = "speech", "little speech", "no speech"

_model = None
_lock = threading.Lock()


@dataclass
class SpeechCheck:
    verdict: str             # "speech" | "little speech" | "no speech"
    speech_seconds: float    # frames at or above the threshold, in seconds
    speech_fraction: float   # of the clip
    max_probability: float   # largest frame speech probability
    detector: str
    threshold: float = FRAME_THRESHOLD

    @property
    def has_speech(self) -> bool:
        return self.verdict == SPEECH

    @property
    def note(self) -> str | None:
        if self.has_speech:
            return None
        what = "no speech" if self.verdict == NONE else f"little speech ({self.speech_seconds:.2f} s)"
        return (f"The speech detector found {what} in this clip. The model was trained on acted "
                "speech only; its emotion for other sounds (tones, noise, music, silence) means "
                "nothing.")

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
        return f"silero-vad {version('silero-vad')} (ONNX, frame threshold {FRAME_THRESHOLD})"
    except Exception:
        return f"silero-vad (ONNX, frame threshold {FRAME_THRESHOLD})"


def warm_up() -> None:
    check_speech(np.zeros(SAMPLE_RATE // 2, np.float32))


def check_speech(y: np.ndarray, sample_rate: int = SAMPLE_RATE) -> SpeechCheck:
    """Speech verdict for a decoded mono clip at 16 kHz (the features' rate)."""
    if sample_rate != SAMPLE_RATE:
        import librosa
        y = librosa.resample(np.asarray(y, np.float32), orig_sr=sample_rate, target_sr=SAMPLE_RATE)
    import torch
    y = np.ascontiguousarray(y, dtype=np.float32)
    with _lock:  # the ONNX wrapper keeps its recurrent state between frames
        model = _detector()
        probs = model.audio_forward(torch.from_numpy(y), SAMPLE_RATE).numpy().ravel()
    seconds = len(y) / SAMPLE_RATE
    speech = float((probs >= FRAME_THRESHOLD).sum() * FRAME_SECONDS)
    speech = min(speech, seconds)
    fraction = speech / seconds if seconds else 0.0
    verdict = NONE if speech < MIN_SPEECH_SECONDS else LITTLE if fraction < MIN_SPEECH_FRACTION else SPEECH
    return SpeechCheck(verdict, round(speech, 3), round(fraction, 3),
                       round(float(probs.max()) if len(probs) else 0.0, 3), detector_name())
