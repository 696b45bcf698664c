"""Chunk table + split -> trained CNN-LSTM, with the study's recipe (PAPER.md "Training";
ser_core/config.py STUDY_TRAIN and PAPER_TRAIN, the per-corpus values): Adam, categorical
cross-entropy, up to 100 epochs, early stopping on validation loss (patience 10, best weights
restored), learning rate x0.1 on plateau (patience 6, min delta 1e-4), training rows reshuffled
every epoch, seeded. Resumable: a checkpoint is written after
every epoch and picked up when the same run folder is trained again."""
from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ser_core.config import TrainConfig
from ser_core.data.dataset import ChunkTable
from ser_core.errors import ParameterError
from ser_core.models.cnn_lstm import CNNLSTM
from ser_core.data.splits import Split
from ser_core.audio.standardize import Standardizer
from ser_core.stats import accuracy, confusion


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
        return "amx_bf16" in flags or "avx512_bf16" in flags
    except OSError:
        return False


def resolve_precision(precision: str) -> str:
    """'auto': bfloat16 autocast where the hardware runs it natively (CUDA, or a CPU with AMX or
    AVX512-BF16: about 1.8x faster training here), else float32."""
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() or cpu_has_bf16() else "fp32"
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision {precision!r} (accepted: auto, bf16, fp32)")
    return precision


@dataclass
class TrainResult:
    model: CNNLSTM
    standardizer: Standardizer
    history: list = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    precision: str = "fp32"


def load_rows(table: ChunkTable, rows: np.ndarray, standardizer: Standardizer) -> torch.Tensor:
    """Standardised features of `rows` as one float32 tensor (read in sorted order for the memmap)."""
    order = np.argsort(rows)
    x = np.empty((len(rows),) + table.features.shape[1:], np.float32)
    for i in range(0, len(rows), 512):
        sel = order[i:i + 512]
        x[sel] = standardizer.transform(table.features[rows[sel]])
    return torch.from_numpy(x)


def train(table: ChunkTable, split: Split, cfg: TrainConfig, run_dir: Path | None = None,
          precision: str = "auto", device: str | None = None, log=None) -> TrainResult:
    if cfg.loop != "study":
        raise ParameterError(f"training config {cfg.name!r} is trained by ser_core/training/loop.py, "
                         f"not the study's loop")
    log = log or sys.stderr  # looked up per call: a default bound at import outlives a replaced stderr
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    precision = resolve_precision(precision)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    standardizer = Standardizer.fit(table.features[np.sort(split.standardizer_rows)])
    labels = table.labels
    x_tr, y_tr = load_rows(table, split.train, standardizer), torch.from_numpy(labels[split.train])
    x_va, y_va = load_rows(table, split.val, standardizer), torch.from_numpy(labels[split.val])
    n_classes = len(table.corpus.classes)
    model = CNNLSTM(n_classes, cfg.dropout, cfg.lstm_input_dropout, table.cfg.input_shape).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.learning_rate, eps=1e-7)  # Keras's Adam epsilon
    state = {"epoch": 0, "best_loss": float("inf"), "best_state": None, "best_epoch": 0,
             "es_wait": 0, "plateau_best": float("inf"), "plateau_wait": 0, "history": [],
             "seconds": 0.0}
    ckpt = run_dir / "checkpoint.pt" if run_dir else None
    if ckpt and ckpt.exists():
        saved = torch.load(ckpt, weights_only=False)
        model.load_state_dict(saved["model"]); opt.load_state_dict(saved["opt"])
        state = saved["state"]
        torch.set_rng_state(saved["torch_rng"])
        print(f"resuming at epoch {state['epoch'] + 1}", file=log, flush=True)
    rng = np.random.default_rng(cfg.seed + state["epoch"])
    amp = dict(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16,
               enabled=precision == "bf16")
    while state["epoch"] < cfg.max_epochs and state["es_wait"] < cfg.patience:
        t0 = time.time()
        model.train()
        perm = rng.permutation(len(x_tr))
        total, correct, n = 0.0, 0, 0
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            xb, yb = x_tr[idx].to(device), y_tr[idx].to(device)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(**amp):
                logits = model(xb)
            loss = F.cross_entropy(logits.float(), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx); n += len(idx)
            correct += (logits.argmax(1) == yb).sum().item()
        val_loss, val_acc = evaluate_loss(model, x_va, y_va, device, amp)
        state["epoch"] += 1
        lr = opt.param_groups[0]["lr"]
        # ReduceLROnPlateau (Keras: improvement means below best - min_delta)
        if val_loss < state["plateau_best"] - cfg.lr_plateau_min_delta:
            state["plateau_best"], state["plateau_wait"] = val_loss, 0
        else:
            state["plateau_wait"] += 1
            if state["plateau_wait"] >= cfg.lr_plateau_patience:
                for g in opt.param_groups:
                    g["lr"] *= cfg.lr_plateau_factor
                state["plateau_wait"] = 0
        # EarlyStopping with restore_best_weights
        if val_loss < state["best_loss"]:
            state.update(best_loss=val_loss, best_epoch=state["epoch"], es_wait=0,
                         best_state=copy.deepcopy(model.state_dict()))
        else:
            state["es_wait"] += 1
        state["seconds"] += time.time() - t0
        row = {"epoch": state["epoch"], "loss": round(total / n, 5), "accuracy": round(correct / n, 4),
               "val_loss": round(val_loss, 5), "val_accuracy": round(val_acc, 4), "lr": lr,
               "seconds": round(time.time() - t0, 1)}
        state["history"].append(row)
        print(json.dumps(row), file=log, flush=True)
        if ckpt:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state,
                        "torch_rng": torch.get_rng_state()}, tmp)
            tmp.replace(ckpt)
    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    model.eval().cpu()
    return TrainResult(model, standardizer, state["history"], state["best_epoch"],
                       state["seconds"], precision)


@torch.no_grad()
def evaluate_loss(model, x, y, device="cpu", amp=None, batch=256):
    model.eval()
    total, correct = 0.0, 0
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch].to(device), y[i:i + batch].to(device)
        with torch.autocast(**(amp or {"device_type": "cpu", "enabled": False})):
            logits = model(xb).float()
        total += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return total / max(1, len(x)), correct / max(1, len(x))


def classification_metrics(probs: np.ndarray, labels: np.ndarray, genders: np.ndarray,
                           class_names) -> dict:
    """Accuracy overall, male and female; confusion matrix (rows true, columns predicted);
    mean top-class confidence; counts behind each figure."""
    pred = probs.argmax(1)
    out = {"n": int(len(labels)), "accuracy": accuracy(labels, pred),
           "mean_confidence": float(probs.max(1).mean()) if len(labels) else None}
    for g in ("male", "female"):
        m = genders == g
        out[f"n_{g}"] = int(m.sum())
        out[f"accuracy_{g}"] = accuracy(labels[m], pred[m])
    out["confusion"] = {"labels": list(class_names),
                        "matrix": confusion(labels, pred, len(class_names)).tolist()}
    return out


def clip_range(table: ChunkTable, rows: np.ndarray, standardizer: Standardizer) -> tuple[float, float]:
    """floor(min) .. ceil(max) of the standardised rows: the study's attack clip range."""
    lo, hi = np.inf, -np.inf
    rows = np.sort(rows)
    for i in range(0, len(rows), 512):
        x = standardizer.transform(table.features[rows[i:i + 512]])
        lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
    return float(np.floor(lo)), float(np.ceil(hi))


def predict_rows(model, table: ChunkTable, rows: np.ndarray, standardizer: Standardizer,
                 batch: int = 128) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            x = torch.from_numpy(standardizer.transform(table.features[rows[i:i + batch]]))
            out.append(torch.softmax(model(x), 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(table.corpus.classes)))


def train_bundle(corpus_name: str, data_dir, out, protocol: str = "speaker", classes="paper",
                 augmentation: bool = True, max_epochs: int | None = None, precision: str = "auto",
                 weights_dtype: str = "float32", seed: int | None = None, run_dir=None,
                 name: str | None = None, command: str = ""):
    """Corpus folder -> trained, evaluated, ONNX-exported (parity-checked) bundle folder."""
    import dataclasses
    import platform
    from ser_core.models.weights import quantize_roundtrip
    from ser_core.config import PAPER_FEATURES, PAPER_SEED, PAPER_TRAIN
    from ser_core.data.corpora import DATA_LICENCES, read_corpus
    from ser_core.data.dataset import build_table
    from ser_core.models.cnn_lstm import keras_parameter_count
    from ser_core.data.splits import make_split

    corpus = read_corpus(corpus_name, data_dir, classes)
    table = build_table(corpus, PAPER_FEATURES, augmentation)
    seed = PAPER_SEED if seed is None else seed
    split = make_split(table, protocol, seed)
    cfg = PAPER_TRAIN[corpus_name]
    cfg = dataclasses.replace(cfg, seed=seed, **({"max_epochs": max_epochs} if max_epochs else {}))
    out = Path(out)
    run_dir = Path(run_dir) if run_dir else out.parent / f".run-{out.name}"
    run_dir.mkdir(parents=True, exist_ok=True)
    result = train(table, split, cfg, run_dir, precision)
    labels, genders = table.labels[split.test], table.genders[split.test]
    metrics = {}
    if weights_dtype != "float32":  # what compact storage costs, measured
        probs = predict_rows(result.model, table, split.test, result.standardizer)
        metrics["test_float32_weights"] = classification_metrics(probs, labels, genders, corpus.classes)
    model = quantize_roundtrip(result.model, weights_dtype)
    probs = predict_rows(model, table, split.test, result.standardizer)
    metrics["test"] = classification_metrics(probs, labels, genders, corpus.classes)
    config = {
        "name": name or out.name, "corpus": corpus_name, "language": corpus.spec.language,
        "labels": list(corpus.classes), "feature_config": PAPER_FEATURES.to_dict(),
        "hyperparameters": cfg.to_dict(), "augmentation": augmentation,
        "split": split.describe(), "protocol": protocol,
        "clip_range": list(clip_range(table, split.standardizer_rows, result.standardizer)),
        "data": {"corpus": corpus_name, "data_dir": str(corpus.root), "clips": len(corpus.utterances),
                 "chunks": len(table), **DATA_LICENCES[corpus_name]},
        "metrics": metrics, "parameter_count": keras_parameter_count(model),
        "training": {"epochs": len(result.history), "best_epoch": result.best_epoch,
                     "seconds": round(result.seconds, 1), "precision": result.precision,
                     "hardware": f"{platform.processor() or platform.machine()}, "
                                 f"{torch.get_num_threads()} threads"
                                 + (", CUDA" if torch.cuda.is_available() else ""),
                     "history": result.history},
        "retrain_command": command or (f"python -m export train --corpus {corpus_name} --data-dir "
                                       f"{data_dir} --protocol {protocol} --out {out}"),
    }
    return save_exported_bundle(out, model, result.standardizer, config, weights_dtype,
                                table.features[np.sort(split.test[:64])])


def save_exported_bundle(out: Path, model, standardizer: Standardizer, config: dict,
                         weights_dtype: str, parity_log_mel: np.ndarray):
    """Bundle folder with weights, config, ONNX model (parity-checked on `parity_log_mel`, whose
    result the config records) and model card."""
    from ser_core.models.bundle import ModelBundle
    from ser_core.models.onnx_export import make_session
    from ser_core.models.card import render
    from ser_core.models.onnx_export import check_parity, export_onnx
    from ser_core.models import bundle as bundle_mod
    bundle = ModelBundle.save(out, model, standardizer, config, weights_dtype)
    onnx = export_onnx(bundle.torch_model(), out / bundle_mod.ONNX, bundle.feature_config.input_shape)
    parity = check_parity(bundle.torch_model(), make_session(onnx), standardizer.transform(parity_log_mel))
    config = json.loads((out / "config.json").read_text())
    config["onnx_parity"] = parity
    (out / "config.json").write_text(json.dumps(config, indent=1))
    (out / "README.md").write_text(render(config))
    return ModelBundle.from_folder(out)

