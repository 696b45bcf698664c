"""Rebuild the app's example clips from the RAVDESS corpus copy (../shared/data/ravdess).

Six strong-intensity utterances of five emotions by actors 01 (male) and 02 (female), the
speakers the shipped `ravdess` model never trained on, trimmed of
leading/trailing silence as the study trims (top_db 30) with 0.1 s kept either side, written as
16 kHz mono 16-bit WAV. RAVDESS: CC BY-NC-SA 4.0, Livingstone & Russo (2018)."""
from __future__ import annotations

import sys
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
# RAVDESS file name MM-VV-EE-II-SS-RR-AA: EE emotion, II intensity (02 strong), AA actor
# Only actors 01 (male) and 02 (female): the validation speakers of the shipped `ravdess` model
# (ser_core/folds.SHIP_VALIDATION), which it never trained on.
PICKS = {
    "happiness": "03-01-03-02-01-01-01",
    "sadness": "03-01-04-02-01-01-02",
    "fear": "03-01-06-02-02-01-01",
    "disgust": "03-01-07-02-01-01-02",
    "surprise": "03-01-08-02-02-01-01",
    "happiness-2": "03-01-03-02-02-01-02",
}
PAD = 0.1


def main(data_dir: Path, picks: dict[str, str] = PICKS) -> None:
    for name, stem in picks.items():
        actor = stem.rsplit("-", 1)[1]
        y, sr = sf.read(data_dir / f"Actor_{actor}" / f"{stem}.flac", dtype="float32")
        _, (start, end) = librosa.effects.trim(y, top_db=30, frame_length=512, hop_length=64)
        pad = int(PAD * sr)
        y = y[max(0, start - pad):end + pad]
        gender = "m" if int(actor) % 2 else "f"
        out = HERE / f"ravdess-{name.split('-')[0]}-actor{actor}{gender}.wav"
        sf.write(out, np.clip(y, -1, 1), sr, subtype="PCM_16")
        print(f"{out.name}: {len(y) / sr:.2f} s")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent.parent / "shared" / "data" / "ravdess")
