"""The model bundle: one object that the CLI, the app, the attacks and the evaluation share.

A bundle folder holds
  config.json        labels, feature config, standardiser summary, clip range, hyperparameters,
                     protocol and split, data provenance, test metrics
  model.safetensors  CNN-LSTM weights (float32, float16 or int8 with per-row scales) and the
                     standardiser's mean and scale (float32)
                     or, with config "weights_from" (a base bundle's folder, relative to this
                     one), only the tensors that differ from the base's, the rest read from the
                     base (a bundle behind an input defence stores none: no second copy)
  model.onnx         built from the weights on first use if absent, with the parity check; one
                     found on disk is served only once it is shown to come from these weights
                     (a hash recorded when it was checked, else the parity check) and holds
                     no external data; one that is not (unreadable, stale) is rebuilt
  README.md          the model card
It hands out the torch module (training, export), its exact faster rewrite for gradients (the
white-box attacks: `gradient_model`, ser_core/models/fast.py) and an ONNX Runtime session
(serving, black-box attacks: CUDA when present, else CPU), and predicts clips: probabilities
per 3 s chunk and for the clip (the mean over its chunks)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ser_core.audio.decode import load_audio, validate_waveform
from ser_core.audio.defences import parse_defence
from ser_core.config import FeatureConfig
from ser_core.errors import ModelBundleError
from ser_core.audio.features import clip_features
from ser_core.models.cnn_lstm import CNNLSTM
from ser_core.models.fast import FastCNNLSTM
from ser_core.models.weights import WEIGHT_DTYPES, pack_weights, unpack_weights
from ser_core.audio.standardize import Standardizer

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = Path(os.environ.get("SER_MODELS_DIR", REPO_ROOT / "models"))
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
ONNX = "model.onnx"
VERIFIED = ".verified.json"  # beside model.onnx: the hashes that passed the parity check
HUB_PREFIX = "hf://"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ONNX_BATCH = 16  # chunks per ONNX Runtime run (predict_features)
_EXPORT_LOCK = threading.Lock()  # torch.onnx.export keeps global state: one export at a time
_log = logging.getLogger(__name__)


@dataclass
class ClipPrediction:
    label: str
    probabilities: dict[str, float]
    chunk_probabilities: np.ndarray  # (n_chunks, n_classes)
    labels: list[str]

    def to_dict(self) -> dict:
        return {"label": self.label, "probabilities": self.probabilities,
                "chunks": [dict(zip(self.labels, map(float, p))) for p in self.chunk_probabilities]}


class ModelBundle:
    def __init__(self, folder: Path, config: dict):
        self.folder = Path(folder)
        self.config = config
        self.labels: list[str] = list(config["labels"])
        self.feature_config = FeatureConfig.from_dict(config["feature_config"])
        self.clip_range: tuple[float, float] = tuple(config["clip_range"])
        self.defence = parse_defence(config.get("defence"))  # an input defence (audio/defences.py) or None
        self._torch = None
        self._gradient = None
        self._session = None
        self._standardizer = None
        self._onnx_options: dict = {}
        self._lock = threading.RLock()

    # --- locating and loading -------------------------------------------------------------
    @classmethod
    def load(cls, name_or_path) -> "ModelBundle":
        """A bundle folder, a shipped model's name (models/<name>), or a Hugging Face Hub model
        named explicitly as 'hf://user/repo@revision' (or 'hf://user/repo': its current commit,
        resolved and recorded), fetched with huggingface_hub (cached; works offline from the
        cache with HF_HUB_OFFLINE=1). A name that is none of these is an error, never a
        silent trip to the Hub."""
        s = str(name_or_path)
        if s.startswith(HUB_PREFIX):
            repo_id, revision = parse_hub_id(s)
            return cls.from_hub(repo_id, revision)
        path = Path(s)
        if (path / CONFIG).is_file():
            return cls.from_folder(path)
        if (MODELS_DIR / s / CONFIG).is_file():
            return cls.from_folder(MODELS_DIR / s)
        shipped = sorted(p.name for p in MODELS_DIR.glob("*") if (p / CONFIG).is_file())
        hint = (f"; for the Hub model write {HUB_PREFIX}{s}@<revision>" if _HUB_ID.match(s) else "")
        raise ModelBundleError(f"{s}: not a model bundle folder or a shipped model "
                               f"({', '.join(shipped) or 'none shipped'}) (accepted: a folder with "
                               f"{CONFIG} and {WEIGHTS}, a shipped name, or {HUB_PREFIX}user/repo"
                               f"@revision){hint}")

    @classmethod
    def from_folder(cls, folder) -> "ModelBundle":
        folder = Path(folder)
        for f in (CONFIG, WEIGHTS):
            if not (folder / f).is_file():
                raise ModelBundleError(f"{folder}: bundle has no {f}")
        return cls(folder, json.loads((folder / CONFIG).read_text()))

    @classmethod
    def from_hub(cls, repo_id: str, revision: str | None = None) -> "ModelBundle":
        """The bundle of Hub model repo `repo_id` at `revision` (a commit, tag or branch; None:
        the current main). The commit actually fetched is recorded in config["hub"]."""
        from huggingface_hub import snapshot_download
        if not _HUB_ID.match(str(repo_id)):
            raise ModelBundleError(f"{repo_id!r}: not a Hub repo id (accepted: user/repo)")
        try:
            folder = snapshot_download(repo_id, revision=revision,
                                       allow_patterns=[CONFIG, WEIGHTS, ONNX, "README.md"])
        except Exception as exc:
            raise ModelBundleError(f"{repo_id}: cannot fetch the bundle from the Hugging Face Hub "
                                   f"({type(exc).__name__}: {exc})") from None
        b = cls.from_folder(folder)
        # snapshot folders are named by the commit they hold
        b.config["hub"] = {"repo_id": repo_id, "revision": revision or "main", "commit": Path(folder).name}
        return b

    @property
    def name(self) -> str:
        return self.config.get("name", self.folder.name)

    @property
    def held_out_speakers(self) -> list[str]:
        """Speakers whose clips the model never trained on: the test speakers of a speaker-split
        bundle, or the validation speakers of a shipped recipe bundle (ser_core/training/ship.py); none
        for the paper protocol."""
        speakers = self.config["split"].get("speakers", {})
        return list(speakers.get("test") or speakers.get("held_out") or [])

    @property
    def held_out_rows(self) -> int | None:
        """How many 3 s chunks the bundle records for what it is evaluated on: its held-out
        speakers' (recipe bundles), or its test split's."""
        rows = self.config.get("split", {}).get("rows", {})
        return rows.get("held_out", rows.get("test"))

    # --- the pieces ----------------------------------------------------------------------
    @property
    def base(self) -> "ModelBundle | None":
        """The bundle whose weights this one reuses (config "weights_from"), or None."""
        rel = self.config.get("weights_from")
        return ModelBundle.from_folder((self.folder / rel).resolve()) if rel else None

    def _tensors(self) -> dict:
        from safetensors.torch import load_file
        base = self.base
        return {**(base._tensors() if base else {}), **load_file(str(self.folder / WEIGHTS))}

    @property
    def standardizer(self) -> Standardizer:
        if self._standardizer is None:
            t = self._tensors()
            self._standardizer = Standardizer(t["standardizer.mean"].numpy(),
                                              t["standardizer.scale"].numpy())
        return self._standardizer

    def torch_model(self) -> CNNLSTM:
        """float32 CNN-LSTM in eval mode (weights dequantised, LSTM unrolled, CNN channels-last),
        for gradients."""
        with self._lock:
            if self._torch is None:
                hp = self.config["hyperparameters"]
                m = CNNLSTM(len(self.labels), hp["dropout"], hp["lstm_input_dropout"],
                            self.feature_config.input_shape,
                            input_norm=hp.get("input_norm", "none"))
                missing, unexpected = m.load_state_dict(unpack_weights(self._tensors()), strict=False)
                missing = [k for k in missing if not k.endswith("num_batches_tracked")]
                if missing or unexpected:
                    raise ModelBundleError(f"{self.folder}: weights do not fit the model "
                                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
                m.unroll_lstm = True  # faster gradients at small batches (ser_core/models/cnn_lstm.py)
                m.use_channels_last()  # faster CNN on CPU, same values (ser_core/models/cnn_lstm.py)
                self._torch = m.eval()
            return self._torch

    def gradient_model(self) -> FastCNNLSTM:
        """What every white-box attack differentiates: `torch_model()` rewritten exactly and
        faster (ser_core/models/fast.py), on that model's device; rebuilt when it moved (a copy:
        weights changed in place in torch_model() afterwards are not seen)."""
        with self._lock:
            model = self.torch_model()
            device = next(model.parameters()).device
            if self._gradient is None or self._gradient.device != device:
                self._gradient = FastCNNLSTM(model)
            return self._gradient

    def onnx_path(self) -> Path:
        """model.onnx in the bundle, or built from the weights (with the parity check) into the
        bundle folder, or into the cache folder if the bundle folder is read-only. An ONNX file
        found on disk is served only once verified against these weights (verify_onnx); one that
        fails (unreadable, external data, stale: from other weights) is rebuilt in its place.
        Changed weights (config's weights_sha) are a ModelBundleError: no rebuild fixes them."""
        with self._lock:
            p = self.folder / ONNX
            from ser_core.data.dataset import cache_dir
            from ser_core.models.onnx_export import export_onnx
            self._check_weights()
            targets = [p, cache_dir() / "onnx" / f"{self.name}-{self.config.get('weights_sha', 'x')}.onnx"]
            for target in targets:
                if target.is_file():
                    try:
                        self.verify_onnx(target)
                        return target
                    except Exception as exc:  # unreadable, refused by ONNX Runtime, stale: rebuilt
                        _log.warning("%s: %s: %s; rebuilding it from the weights", target, type(exc).__name__, exc)
            model = self.torch_model()
            for target in targets:
                try:
                    with _EXPORT_LOCK:
                        export_onnx(model, target, self.feature_config.input_shape)
                except OSError:
                    continue
                self.verify_onnx(target)
                return target
            raise ModelBundleError(f"{self.folder}: cannot write the ONNX model anywhere")

    def weights_sha(self) -> str:
        """sha256 (16 hex digits, as config's weights_sha) of model.safetensors as it is now; with a
        base, of that and the base's weights_sha (a changed base changes it too)."""
        own, base = _sha256(self.folder / WEIGHTS), self.base
        return hashlib.sha256(f"{base.weights_sha()}+{own}".encode()).hexdigest()[:16] if base else own[:16]

    def _check_weights(self) -> str:
        """The weights' sha (weights_sha), or ModelBundleError if they differ from config's."""
        weights, recorded = self.weights_sha(), self.config.get("weights_sha")
        if recorded and weights != recorded:
            raise ModelBundleError(f"{self.folder / WEIGHTS}: sha256 {weights} differs from config.json's "
                                   f"weights_sha {recorded} (the weights were changed after saving)")
        return weights

    def verify_onnx(self, path: Path) -> dict:
        """Raise ModelBundleError unless the ONNX file at `path` may be served for this bundle:
        no external data; the weights file matches config's weights_sha; and either a record
        beside it (or in the cache) says this very file (sha256) passed the parity check against
        these weights, or the parity check passes now (and is recorded)."""
        path = Path(path)
        from ser_core.models.onnx_export import refuse_external_data
        refuse_external_data(path)
        weights = self._check_weights()
        onnx_sha = _sha256(path)
        from ser_core.data.dataset import cache_dir
        records = [path.with_name(path.name + VERIFIED), cache_dir() / "onnx" / f"verified-{onnx_sha[:32]}.json"]
        for rec in records:
            try:
                r = json.loads(rec.read_text())
            except (OSError, ValueError):
                continue
            if r.get("onnx_sha256") == onnx_sha and r.get("weights_sha") == weights:
                return r
        from ser_core.models.onnx_export import check_parity, make_session
        parity = check_parity(self.torch_model(), make_session(path), self.parity_features())
        r = {"onnx_sha256": onnx_sha, "weights_sha": weights, "parity": parity}
        for rec in records:
            try:
                rec.parent.mkdir(parents=True, exist_ok=True)
                rec.write_text(json.dumps(r, indent=1))
                break
            except OSError:
                continue
        return r

    def parity_features(self) -> np.ndarray:
        """Real standardised features for parity checks: the committed example clips when
        present, else seeded standard-normal features."""
        ex = sorted((REPO_ROOT / "examples").glob("*.wav"))[:4]
        feats = [self.features(load_audio(p)) for p in ex]
        if feats:
            return np.concatenate(feats)
        return np.random.default_rng(0).standard_normal((4,) + self.feature_config.input_shape).astype(np.float32)

    def onnx_session(self):
        if self._session is None:
            with self._lock:
                if self._session is None:
                    from ser_core.models.onnx_export import make_session
                    self._session = make_session(self.onnx_path(), **self._onnx_options)
        return self._session

    @property
    def onnx_threads(self) -> int | None:
        """Intra-op threads of the ONNX Runtime session (None: ONNX Runtime's default)."""
        return self._onnx_options.get("threads")

    def configure_onnx(self, threads: int | None = None, cuda: bool | None = None) -> None:
        """How the ONNX Runtime session is built: `threads` intra-op threads (None: ONNX Runtime's
        default, one per core; a worker given n CPUs should use n) and CUDA or not (None: when
        present). A session built with other options is dropped and rebuilt on next use."""
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ModelBundleError(f"{self.folder}: ONNX threads {threads!r} (accepted: an integer >= 1, or None)")
        with self._lock:
            if self._onnx_options != {"threads": threads, "cuda": cuda}:
                self._onnx_options = {"threads": threads, "cuda": cuda}
                self._session = None

    # --- prediction ----------------------------------------------------------------------
    def features(self, y: np.ndarray) -> np.ndarray:
        """Decoded clip -> (the input defence, if any) -> standardised (n_chunks, 261, 128) features."""
        return self.standardizer.transform(clip_features(self.defence(y) if self.defence else y, self.feature_config))

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """Standardised features -> probabilities through ONNX Runtime, ONNX_BATCH chunks a run:
        the session's memory arena keeps what its largest run needed (a 200-chunk batch of a
        boundary attack left 1 GB resident), so no run is larger."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        session = self.onnx_session()
        if len(x) <= ONNX_BATCH:
            return session.run(["probabilities"], {"features": x})[0]
        return np.concatenate([session.run(["probabilities"], {"features": x[i:i + ONNX_BATCH]})[0]
                               for i in range(0, len(x), ONNX_BATCH)])

    def predict_clip(self, audio, sample_rate: int | None = None, max_seconds: float | None = None) -> ClipPrediction:
        """audio: a path, or a waveform with its sample_rate."""
        if isinstance(audio, (str, Path)):
            y = load_audio(audio, self.feature_config.sample_rate, max_seconds=max_seconds)
        else:
            y = validate_waveform(audio, sample_rate, sample_rate=self.feature_config.sample_rate,
                                  max_seconds=max_seconds)
        return self.prediction_from_probabilities(self.predict_features(self.features(y)))

    def prediction_from_probabilities(self, chunk_probs: np.ndarray) -> ClipPrediction:
        clip = chunk_probs.mean(0)
        return ClipPrediction(self.labels[int(clip.argmax())],
                              {l: float(p) for l, p in zip(self.labels, clip)}, chunk_probs, self.labels)

    # --- writing -------------------------------------------------------------------------
    @staticmethod
    def save(folder, model: CNNLSTM | None, standardizer: Standardizer, config: dict,
             weights_dtype: str = "float32", base: "ModelBundle | None" = None,
             layers: tuple[str, ...] = ()) -> "ModelBundle":
        """Write a bundle. With `base` (a bundle folder on disk), model.safetensors holds only the
        tensors of the top-level modules named in `layers` (none: model may be None) and the rest
        is read from the base (config "weights_from"); the standardiser must be the base's."""
        from safetensors.torch import save_file
        if weights_dtype not in WEIGHT_DTYPES:
            raise ValueError(f"weights dtype {weights_dtype!r} (accepted: {', '.join(WEIGHT_DTYPES)})")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = pack_weights(model.state_dict(), weights_dtype) if model is not None else {}
        config = {k: v for k, v in config.items() if k != "weights_from"}
        if base is not None:
            tensors = {k: v for k, v in tensors.items() if k.split(".")[0] in layers}
            config["weights_from"] = os.path.relpath(base.folder.resolve(), folder.resolve())
        else:
            tensors["standardizer.mean"] = torch.from_numpy(standardizer.mean.astype(np.float32))
            tensors["standardizer.scale"] = torch.from_numpy(standardizer.scale.astype(np.float32))
        save_file(tensors, str(folder / WEIGHTS))
        config = dict(config, weights_dtype=weights_dtype, weights_sha=ModelBundle(folder, config).weights_sha())
        (folder / CONFIG).write_text(json.dumps(config, indent=1))
        stale = folder / ONNX
        if stale.exists():
            stale.unlink()
        return ModelBundle.from_folder(folder)


@torch.no_grad()
def torch_probabilities(bundle, x: np.ndarray, batch: int = 128) -> np.ndarray:
    """Probabilities of standardised features x from the bundle's torch model (on its device), in
    batches: what white-box attacks see, beside `predict_features` (ONNX Runtime, what is served)."""
    model = bundle.torch_model()
    device = next(model.parameters()).device
    out = [torch.softmax(model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch])).to(device)), 1).cpu().numpy()
           for i in range(0, len(x), batch)]
    return np.concatenate(out)


def parse_hub_id(s: str) -> tuple[str, str | None]:
    """'hf://user/repo@revision' -> ('user/repo', 'revision'); revision None when absent."""
    body = s.removeprefix(HUB_PREFIX)
    repo_id, _, revision = body.partition("@")
    if not _HUB_ID.match(repo_id) or (revision == "" and "@" in body):
        raise ModelBundleError(f"{s!r}: not a Hub model id (accepted: {HUB_PREFIX}user/repo@revision)")
    return repo_id, revision or None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
