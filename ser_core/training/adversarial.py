"""Adversarial training, starting from a trained bundle, written as a new bundle folder.

"fgsm": the study's defence (PAPER.md "Defence the authors tried", ART's AdversarialTrainer):
in every batch of 128 training examples a random 60 % is replaced by FGSM examples (Goodfellow,
Shlens, Szegedy 2015, "Explaining and harnessing adversarial examples", arXiv 1412.6572) with
eps 1.25, crafted on the model being trained; 30 epochs, Adam lr 1e-4.
"pgd": the stronger one (Madry et al. 2018, "Towards deep learning models resistant to
adversarial attacks", arXiv 1706.06083): the adversarial share is crafted with projected
gradient descent in the same Linf ball (random start, `pgd_steps` steps of 2.5 eps / steps), so
the model also sees the iterative attacks (BIM, PGD) that broke the FGSM-trained models.

"--domain waveform" crafts the adversarial share on the samples of the 3 s chunks, in the L2
ball of an SNR budget (`--snr`), through the differentiable front-end, with "pgd" (PGD-AT) or
"trades" (TRADES, Zhang et al. 2019); `--layers` fine-tunes only some layers, and a bundle that
fine-tunes only some stores only those as a delta over its base's weights
(ser_core/training/waveform_adversarial.py).

Training rows: the training speakers the base bundle records (config["split"]["speakers"]
["train"]: a speaker-split or shipped recipe bundle), else the split the protocol draws (the
study's paper bundles); its held-out speakers are never trained on.

Adversarial examples are crafted here on the training model directly (not through the attack
registry), because registry attacks score through the bundle's fixed ONNX session.

Resuming: after every epoch the model, the optimiser and every random generator are saved to
`<out>/defence-checkpoint.pt` (written atomically). Run the same command again after an
interruption and training goes on from the last finished epoch, to the same weights as an
uninterrupted run (tested); a checkpoint from another recipe or base model is refused with a
ParameterError naming the difference. The checkpoint is deleted once the bundle is written.

The recipe is `DefenceConfig`; its fields declare their command-line flags, from which both
`python -m export defend` builds its options (`add_arguments`) and the evaluation report writes
the command that rebuilds a defended bundle (`defend_command`)."""
from __future__ import annotations

import copy
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ser_core.errors import ParameterError

METHODS = ("fgsm", "pgd", "trades")
DOMAINS = ("feature", "waveform")
DOMAIN_METHODS = {"feature": ("fgsm", "pgd"), "waveform": ("pgd", "trades")}
CHECKPOINT = "defence-checkpoint.pt"


def _flag(default, flag: str | None, help: str = "", rebuild: bool = True):
    """A recipe field with its `python -m export defend` flag (None: not on the command line);
    rebuild: whether the report's rebuild command writes it where it differs from the default."""
    return field(default=default, metadata={"flag": flag, "help": help, "rebuild": rebuild and flag is not None})


@dataclass(frozen=True)
class DefenceConfig:
    """The adversarial-training recipe (defaults: the study's FGSM recipe, and our PGD steps)."""

    method: str = _flag("fgsm", "--method", "fgsm: the study's defence; pgd: Madry et al.; trades: Zhang et al. "
                        "(waveform)", rebuild=False)
    domain: str = _flag("feature", "--domain", "feature: Linf on standardised log-Mel (the study's); waveform: "
                        "L2 at an SNR budget on the samples")
    snr: float = _flag(40.0, "--snr", "waveform: the SNR budget in dB (L2 ball of each 3 s chunk)")
    beta: float = _flag(6.0, "--beta", "trades: weight of the KL term")
    layers: str = _flag("all", "--layers", "layers fine-tuned (all, or a comma list of cnn,lstm,dense); a bundle "
                        "that trains only some stores only those, as a delta over its base's weights")
    eps: float = _flag(1.25, "--eps", "Linf radius of the adversarial examples, standardised units")
    adversarial_fraction: float = _flag(0.6, "--fraction", "adversarial share of each batch")
    epochs: int = _flag(30, "--epochs", "training epochs")
    learning_rate: float = _flag(1e-4, "--lr", "Adam's learning rate")
    batch_size: int = _flag(128, "--batch-size", "training examples per batch")
    pgd_steps: int = _flag(7, "--pgd-steps", "pgd: projected gradient steps per adversarial example")
    max_steps: int | None = _flag(None, "--max-steps", "stop after this many optimiser steps (smoke runs)",
                                  rebuild=False)
    train_rows: int | None = _flag(None, None)  # cap on training examples, a seeded draw (smoke runs)
    seed: int = _flag(1938, None)

    def check(self) -> "DefenceConfig":
        if self.method not in METHODS or self.domain not in DOMAINS:
            raise ParameterError(f"defence method {self.method!r}, domain {self.domain!r} (accepted: "
                                 f"{', '.join(METHODS)}; {', '.join(DOMAINS)})")
        if self.method not in DOMAIN_METHODS[self.domain]:
            raise ParameterError(f"defence method {self.method!r} in domain {self.domain!r} (accepted: fgsm and "
                                 f"pgd in the feature domain; pgd and trades in the waveform domain)")
        from ser_core.training.waveform_adversarial import parse_layers
        parse_layers(self.layers)
        for name, ok, accepted in (("eps", self.eps > 0, "> 0"),
                                   ("adversarial_fraction", 0 <= self.adversarial_fraction <= 1, "0..1"),
                                   ("snr", self.snr > 0, "> 0 dB"), ("beta", self.beta >= 0, ">= 0"),
                                   ("epochs", self.epochs >= 1, ">= 1"), ("learning_rate", self.learning_rate > 0, "> 0"),
                                   ("batch_size", self.batch_size >= 1, ">= 1"), ("pgd_steps", self.pgd_steps >= 1, ">= 1"),
                                   ("max_steps", self.max_steps is None or self.max_steps >= 1, ">= 1 or unset"),
                                   ("train_rows", self.train_rows is None or self.train_rows >= 1, ">= 1 or unset")):
            if not ok:
                raise ParameterError(f"defence {name}={getattr(self, name)!r} (accepted: {accepted})")
        return self


def add_arguments(parser) -> None:
    """`python -m export defend`'s recipe options, one per DefenceConfig field with a flag."""
    for f in fields(DefenceConfig):
        flag = f.metadata["flag"]
        if flag is None:
            continue
        kind = {"int": int, "int | None": int, "float": float}.get(str(f.type))
        extra = {"choices": {"method": METHODS, "domain": DOMAINS}[f.name]} if f.name in ("method", "domain") \
            else {"type": kind}
        parser.add_argument(flag, dest=f.name, default=f.default, help=f.metadata["help"], **extra)


def config_from_arguments(args) -> DefenceConfig:
    """The DefenceConfig of parsed `add_arguments` options."""
    return DefenceConfig(**{f.name: getattr(args, f.name) for f in fields(DefenceConfig) if f.metadata["flag"]})


def defend_command(d: dict) -> str:
    """The `python -m export defend` command that rebuilds a defended bundle from its recipe
    `d` (a DefenceConfig as a dict, with "base" and "folder"): a flag only where the recipe
    differs from DefenceConfig's default, pgd_steps only for PGD."""
    method = str(d.get("method", "fgsm")).removesuffix("-at")
    flags = []
    for f in fields(DefenceConfig):
        v = d.get(f.name)
        if not f.metadata["rebuild"] or v is None or v == f.default or (f.name == "pgd_steps" and method == "fgsm"):
            continue
        flags.append(f"{f.metadata['flag']} {v:g}" if isinstance(v, float) else f"{f.metadata['flag']} {v}")
    return " ".join([f"python -m export defend --model {d.get('base')} --method {method}", *flags,
                     f"--out {d.get('folder', '<folder>')}"])


def is_study_recipe(d: dict) -> bool:
    """Whether recipe `d` is the study's: FGSM training with DefenceConfig's defaults."""
    return d.get("method") == "fgsm-at" and all(
        d.get(f.name, f.default) == f.default  # a recipe written before a field existed had its default
        for f in fields(DefenceConfig) if f.metadata["rebuild"] and f.name != "pgd_steps")


def _loss_grad(model, x, y):
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    return torch.autograd.grad(loss, x)[0]


def fgsm_examples(model, x, y, eps, lo, hi):
    """One signed-gradient step of size eps on the true labels (FGSM)."""
    return (x + eps * _loss_grad(model, x, y).sign()).clamp(lo, hi).detach()


def pgd_examples(model, x, y, eps, lo, hi, steps, generator=None):
    """Projected gradient ascent in the Linf ball of radius eps, random start (Madry et al.)."""
    step = 2.5 * eps / steps
    noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device) * 2 - 1
    x_adv = (x + eps * noise).clamp(lo, hi)
    for _ in range(steps):
        x_adv = x_adv + step * _loss_grad(model, x_adv, y).sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(lo, hi).detach()
    return x_adv


def training_rows(table, config: dict, seed: int) -> np.ndarray:
    """Rows of `table` a defence trains on: those of the training speakers the bundle's config
    records (speaker-split and shipped recipe bundles), else the training split its protocol
    draws (the study's paper bundles)."""
    from ser_core.data.splits import make_split
    speakers = config["split"].get("speakers", {}).get("train")
    if speakers:
        return np.flatnonzero(np.isin(table.speakers, speakers))
    return make_split(table, config.get("protocol", config["split"]["protocol"]), config["split"].get("seed", seed)).train


def adversarial_train(bundle, out, cfg: DefenceConfig = DefenceConfig(), data_dir=None,
                      device: str | None = None, log=sys.stderr):
    """Fine-tune `bundle`'s model with adversarial training on its own training rows (same
    protocol, same split) and write the result to bundle folder `out`, evaluated on the
    bundle's test examples. Returns the new ModelBundle."""
    from ser_core.models import bundle as bundle_mod
    from ser_core.models.bundle import ModelBundle
    from ser_core.models.weights import quantize_roundtrip
    from ser_core.data.corpora import read_corpus
    from ser_core.data.dataset import build_table
    from ser_core.data.held_out import bundle_test_rows, data_root
    from ser_core.models.bundle import torch_probabilities
    from ser_core.models.card import render
    from ser_core.models.onnx_export import check_parity, export_onnx, make_session
    from ser_core.training.study import classification_metrics, load_rows
    from ser_core.training import waveform_adversarial as wav

    cfg.check()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rng = np.random.default_rng(cfg.seed)
    c = bundle.config
    corpus = read_corpus(c["corpus"], Path(data_dir or data_root()) / c["corpus"], tuple(bundle.labels))
    waveform = cfg.domain == "waveform"
    table = build_table(corpus, bundle.feature_config, augmentation=c.get("augmentation", True) and not waveform,
                        progress=False)
    train = training_rows(table, c, cfg.seed)
    if cfg.train_rows is not None and cfg.train_rows < len(train):
        train = np.sort(rng.choice(train, cfg.train_rows, replace=False))
    x_tr = torch.from_numpy(wav.training_chunks(table, train)) if waveform else load_rows(table, train, bundle.standardizer)
    y_tr = torch.from_numpy(table.labels[train]).long()
    lo, hi = (-1.0, 1.0) if waveform else (float(v) for v in bundle.clip_range)
    model = copy.deepcopy(bundle.torch_model()).to(device)
    layers = wav.parse_layers(cfg.layers)
    frontend = wav.LogMelFrontEnd.for_bundle(bundle).to(device) if waveform else torch.nn.Identity()
    opt = torch.optim.Adam(wav.freeze(model, layers), lr=cfg.learning_rate, eps=1e-7)
    gen = torch.Generator().manual_seed(cfg.seed)
    # seeded here, after the data and model are loaded: seeded before them, the first run in a
    # process took other dropout draws than a second run of the same recipe (found by the resume test)
    torch.manual_seed(cfg.seed)
    history, steps, t_start, before = [], 0, time.time(), 0.0
    ckpt = Path(out) / CHECKPOINT
    recipe = {**asdict(cfg), "base": bundle.name, "base_weights": c.get("weights_sha"),
              "train_rows_used": int(len(train))}
    state = _load_checkpoint(ckpt, recipe)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        history, steps, before = state["history"], state["steps"], state["seconds"]
        print(json.dumps({"resumed": str(ckpt), "epochs_done": len(history), "steps": steps}), file=log, flush=True)
    for epoch in range(len(history), cfg.epochs):
        if cfg.max_steps and steps >= cfg.max_steps:
            break
        t0 = time.time()
        perm = rng.permutation(len(x_tr))
        total, correct, n = 0.0, 0, 0
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            xb, yb = x_tr[idx].to(device), y_tr[idx].to(device)
            k = int(round(cfg.adversarial_fraction * len(idx)))
            adv, xa = None, None
            if k:
                adv = torch.from_numpy(rng.choice(len(idx), k, replace=False)).to(device)
                model.eval()  # crafted as the deployed model sees it (ART: training_mode=False)
                if waveform:
                    xa = wav.craft(model, frontend, xb[adv], yb[adv], cfg.snr, cfg.pgd_steps, cfg.method, gen)
                elif cfg.method == "fgsm":
                    xa = fgsm_examples(model, xb[adv], yb[adv], cfg.eps, lo, hi)
                else:
                    xa = pgd_examples(model, xb[adv], yb[adv], cfg.eps, lo, hi, cfg.pgd_steps, gen)
            wav.train_mode(model, layers)
            opt.zero_grad(set_to_none=True)
            loss, logits = wav.batch_loss(model, frontend, xb, yb, adv, xa, cfg.method, cfg.beta)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx); n += len(idx)
            correct += (logits.argmax(1) == yb).sum().item()
            steps += 1
            if cfg.max_steps and steps >= cfg.max_steps:
                break
        row = {"epoch": epoch + 1, "loss": round(total / n, 5), "accuracy": round(correct / n, 4),
               "steps": steps, "seconds": round(time.time() - t0, 1)}
        history.append(row)
        _save_checkpoint(ckpt, {"recipe": recipe, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                "numpy_rng": rng.bit_generator.state, "generator": gen.get_state(),
                                "torch_rng": torch.get_rng_state(),
                                "cuda_rng": torch.cuda.get_rng_state_all() if device.startswith("cuda") else None,
                                "history": history, "steps": steps,
                                "seconds": before + time.time() - t_start})
        print(json.dumps(row), file=log, flush=True)
    model = quantize_roundtrip(model.eval().cpu(), c.get("weights_dtype", "float32"))
    out = Path(out)
    config = dict(c, name=out.name,
                  defence={**asdict(cfg), "method": f"{cfg.method}-at", "base": bundle.name,
                           "reference": {"fgsm": "Goodfellow et al. 2015 (FGSM AT, as the study)",
                                         "pgd": "Madry et al. 2018 (PGD AT)",
                                         "trades": "Zhang et al. 2019 (TRADES)"}[cfg.method]},
                  training={"epochs": len(history), "best_epoch": len(history), "steps": steps,
                            "seconds": round(before + time.time() - t_start, 1), "precision": "fp32",
                            "hardware": f"{platform.machine()}, {torch.get_num_threads()} threads"
                                        + (", CUDA" if device.startswith("cuda") else ""),
                            "history": history, "from": str(bundle.folder)},
                  retrain_command=defend_command({**asdict(cfg), "base": bundle.name, "folder": str(out)}))
    config.pop("onnx_parity", None)
    config.pop("crossval", None)  # the base's cross-validation, not this model's (never cross-validated)
    config.pop("robustness", None)  # the base's measured robustness, likewise
    new = ModelBundle.save(out, model, bundle.standardizer, config, c.get("weights_dtype", "float32"),
                           base=bundle if layers != wav.LAYERS else None, layers=layers)
    table_t, rows = bundle_test_rows(new, data_dir)
    probs = torch_probabilities(new, new.standardizer.transform(table_t.features[rows]))
    config = json.loads((out / "config.json").read_text())
    config["metrics"] = {"test": classification_metrics(probs, table_t.labels[rows], table_t.genders[rows], new.labels)}
    onnx = export_onnx(new.torch_model(), out / bundle_mod.ONNX, new.feature_config.input_shape)
    config["onnx_parity"] = check_parity(new.torch_model(), make_session(onnx),
                                         new.standardizer.transform(table_t.features[rows[:64]]))
    (out / "config.json").write_text(json.dumps(config, indent=1))
    (out / "README.md").write_text(render(config))  # with its defence section (models/card.py)
    ckpt.unlink(missing_ok=True)
    return ModelBundle.from_folder(out)


def _save_checkpoint(path: Path, state: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, recipe: dict) -> dict | None:
    """The saved training state if `path` holds one for this recipe; None if there is none."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    saved = state.get("recipe", {})
    diff = sorted(k for k in set(saved) | set(recipe) if saved.get(k) != recipe.get(k))
    if diff:
        what = "; ".join(f"{k}: {saved.get(k)!r} there, {recipe.get(k)!r} now" for k in diff)
        raise ParameterError(f"{path} was written for another recipe ({what}); delete it or pass another --out")
    return state
