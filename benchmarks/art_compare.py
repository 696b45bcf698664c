"""Our eight attacks against the study's toolbox, IBM ART (Nicolae et al. 2018), on the same
model and the same examples, in one run.

    nice -n 15 .venv/bin/python benchmarks/art_compare.py [--model emodb] [--n 16]
        [--attacks fgsm,bim,...] [--cap jsma=4 ...] [--out results.json]

ART is a development dependency only (`pip install adversarial-robustness-toolbox`). The
examples are the bundle's held-out test-speaker chunks, unaugmented, as tests/conftest.py's
`test_examples` fixture builds them (gender-interleaved so any prefix is balanced); attack k uses the
first min(n, cap_k) of them for both toolboxes. Settings are the study's (PAPER.md), one per
attack; both toolboxes attack untargeted against the clean decision (ART's JSMA, given no
labels, picks a random other class as its target, as in the study). ART runs with its own
default batch sizes, as the study did, unless --art-batch-size is given.

Model access for ART: `PyTorchClassifier` around `bundle.torch_model()` (logits,
CrossEntropyLoss, clip_values = bundle.clip_range, input_shape (261, 128)). ART's PixelAttack
reads rows, columns and channels from input_shape, so it gets the same model behind a wrapper
that takes (N, 261, 128, 1) images, channels last.

ART treats a model that holds an LSTM as recurrent and computes its gradients in training mode
(with BatchNorm and `nn.Dropout` layers frozen, a cuDNN workaround); the model's own dropout on
the LSTM inputs would then be live and ART's gradients random. The wrapper therefore puts the
model in evaluation mode at every call, so both toolboxes differentiate the same deterministic
function (the study's Keras model is differentiated in inference mode too).

Our white-box attacks differentiate `bundle.gradient_model()` (ser_core/models/fast.py), the same
function as `bundle.torch_model()` rewritten for speed; ART runs `bundle.torch_model()`. ONNX
Runtime (our black-box attacks' queries and the success scorer) runs on `--threads` threads
without spinning (`bundle.configure_onnx`), like torch.

Success: the ONNX decision on the adversarial input differs from the one on the clean input
(the same scorer for both toolboxes). Perturbation: mean absolute difference over all cells,
averaged over all attacked examples, as the study reports it. Seconds: wall time of the whole
attack call, and CPU seconds of this process (`time.process_time`), which a busy machine
disturbs far less than wall time; torch runs on `--threads` threads (default 1, so that the two
toolboxes are not slowed by oversubscribing a loaded 2-core machine). Compare ratios in one run.
Before timing an attack, each toolbox runs it once, untimed, on one example (`warm_up`).

Work: a hook on the shared torch module counts, for each toolbox, the example rows it pushed
forward through the model and the example rows a backward pass reached (one per output
cotangent: DeepFool's per-class gradients count once per class). On a CPU, where time follows
arithmetic, (ours' forward + 2 x backward rows) / (ART's) is about the best time ratio the same
algorithm can reach; ART's backward passes also compute parameter gradients, which ours skip."""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ser_core.attacks import get_attack, registry  # noqa: E402
from ser_core.models.bundle import ModelBundle  # noqa: E402

# the study's setting for each attack: (our parameters, ART class, ART keyword arguments)
STUDY = {
    "fgsm": ({"eps": 0.25}, "FastGradientMethod", {"eps": 0.25}),
    "bim": ({"eps": 0.25, "eps_step": 0.1, "max_iter": 100, "early_stop": False}, "BasicIterativeMethod",
            {"eps": 0.25, "eps_step": 0.1, "max_iter": 100}),
    "deepfool": ({"max_iter": 5, "overshoot": 1e-5, "nb_grads": 5, "range_scaled_step": True}, "DeepFool",
                 {"max_iter": 5, "epsilon": 1e-5, "nb_grads": 5}),
    "jsma": ({"theta": 1.0, "gamma": 1.0}, "SaliencyMapMethod", {"theta": 1.0, "gamma": 1.0}),
    "cw_l2": ({"initial_const": 0.01, "learning_rate": 0.01, "max_iter": 10, "binary_search_steps": 20,
               "confidence": 0.0}, "CarliniL2Method",
              {"initial_const": 0.01, "learning_rate": 0.01, "max_iter": 10, "binary_search_steps": 20,
               "confidence": 0.0}),
    "cw_linf": ({"initial_const": 1e-4, "learning_rate": 0.01, "max_iter": 10, "largest_const": 20.0,
                 "decrease_factor": 0.8, "const_factor": 4.0, "confidence": 0.0}, "CarliniLInfMethod",
                {"initial_const": 1e-4, "learning_rate": 0.01, "max_iter": 10, "largest_const": 20.0,
                 "decrease_factor": 0.8, "const_factor": 4.0, "confidence": 0.0}),
    "pixel": ({"th": 10, "max_iter": 20}, "PixelAttack", {"th": 10, "es": 1, "max_iter": 20}),
    "boundary": ({"delta": 0.01, "epsilon": 0.01, "step_adapt": 0.5, "max_iter": 100, "num_trial": 3,
                  "sample_size": 10, "init_size": 100, "init_steps": 0, "persist": False}, "BoundaryAttack",
                 {"targeted": False, "delta": 0.01, "epsilon": 0.01, "step_adapt": 0.5, "max_iter": 100,
                  "num_trial": 3, "sample_size": 10, "init_size": 100}),
}
# ART is very slow on CPU for these: examples attacked per run (sized for ~10-15 min here)
DEFAULT_CAPS = {"jsma": 4, "cw_l2": 4, "cw_linf": 4, "pixel": 2, "boundary": 4}
MINIMISATION = {"deepfool", "jsma", "cw_l2", "cw_linf", "boundary"}
TEN_X = {"deepfool", "jsma", "cw_l2", "cw_linf"}


def held_out_examples(bundle, data_dir: Path, n: int) -> np.ndarray:
    """Standardised unaugmented chunks of the bundle's test speakers, as tests/conftest.py
    picks them (seed 0, at most 16 per gender), interleaved male/female."""
    from ser_core.data.corpora import read_corpus
    from ser_core.data.dataset import build_table
    corpus = read_corpus(bundle.config["corpus"], data_dir / bundle.config["corpus"])
    table = build_table(corpus, bundle.feature_config, augmentation=False, progress=False)
    test_speakers = bundle.config["split"]["speakers"].get("test") or sorted(set(table.speakers))
    rows = np.flatnonzero(np.isin(table.speakers, test_speakers))
    rng = np.random.default_rng(0)
    g = table.genders[rows]
    by_gender = [np.sort(rng.permutation(rows[g == s])[:max(16, n)]) for s in ("male", "female")]
    order = [r for pair in zip(*by_gender) for r in pair][:n]
    return bundle.standardizer.transform(table.features[np.array(order)])


class _ForART(torch.nn.Module):
    """The model as ART calls it. Inputs are cast to float32: under NumPy 2, ART 1.20's
    BoundaryAttack hands float64 arrays to the model. channels_last: (N, 261, 128, 1) images,
    which ART's PixelAttack needs to read rows, columns and channels from input_shape."""

    def __init__(self, model, channels_last: bool = False):
        super().__init__()
        self.model = model
        self.channels_last = channels_last

    def forward(self, x):
        self.model.eval()  # see the module docstring: no live dropout inside ART's gradients
        x = x.float()
        return self.model(x[..., 0] if self.channels_last else x)


def art_attack(bundle, name: str, batch_size: int | None):
    import art.attacks.evasion as evasion
    from art.estimators.classification import PyTorchClassifier
    _, cls_name, kwargs = STUDY[name]
    model = _ForART(bundle.torch_model(), channels_last=name == "pixel")
    shape = tuple(bundle.feature_config.input_shape) + ((1,) if name == "pixel" else ())
    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=shape,
                            nb_classes=len(bundle.labels), clip_values=tuple(map(float, bundle.clip_range)),
                            channels_first=name != "pixel", device_type="cpu")
    kwargs = dict(kwargs)
    if batch_size:
        kwargs["batch_size"] = batch_size
    cls = getattr(evasion, cls_name)
    if "verbose" in inspect.signature(cls.__init__).parameters:
        kwargs["verbose"] = False  # no progress bars
    return cls(clf, **kwargs)


class PassCounter:
    """Example rows through the model's forward, and rows reached by a backward pass."""

    def __init__(self, model: torch.nn.Module):
        self.forward = self.backward = 0
        model.register_forward_hook(self._hook)

    def watch(self, model: torch.nn.Module) -> None:
        """Count a second module too (ours differentiate `bundle.gradient_model()`)."""
        model.register_forward_hook(self._hook)

    def _hook(self, module, inputs, out):
        rows = int(out.shape[0])
        self.forward += rows
        if out.requires_grad:
            out.register_hook(lambda g: self._backward(rows))

    def _backward(self, rows: int):
        self.backward += rows

    def take(self) -> tuple[int, int]:
        out = (self.forward, self.backward)
        self.forward = self.backward = 0
        return out


def warm_up(bundle, name: str, x: np.ndarray, art_batch: int | None, settings: list[dict]) -> None:
    """One untimed run of the attack in each toolbox (and each of our variants) on `x`, so that
    neither pays one-off start-up costs (imports, first-call dispatch, allocator growth) inside
    its timed run: without it the first attack of a run came out 1.4 times ART's time in one
    run and 0.56 in another. It runs before `compare` seeds the generators, so the timed runs
    draw the same random numbers as without it."""
    art_attack(bundle, name, art_batch).generate(x[..., None] if name == "pixel" else x.copy())
    for s in settings:
        get_attack(name, bundle, **{k: v for k, v in s.items() if k in registry()[name].params})(x)


def compare(bundle, name: str, x: np.ndarray, art_batch: int | None, passes: PassCounter,
            variants=(None,)) -> list[dict]:
    """ART once, then ours once per variant (parameter overrides on the study's setting).
    Both toolboxes first run the attack once, untimed, on one example (`warm_up`)."""
    warm_up(bundle, name, x[:1], art_batch, [{**STUDY[name][0], **(o or {})} for o in variants])
    passes.take()
    clean = bundle.predict_features(x).argmax(1)
    np.random.seed(0)
    torch.manual_seed(0)
    attack = art_attack(bundle, name, art_batch)
    passes.take()
    t0, c0 = time.perf_counter(), time.process_time()
    x_art = attack.generate(x[..., None] if name == "pixel" else x.copy())
    t_art, c_art = time.perf_counter() - t0, time.process_time() - c0
    fwd_art, bwd_art = passes.take()
    x_art = np.asarray(x_art, np.float32).reshape(x.shape)
    art_flip = bundle.predict_features(x_art).argmax(1) != clean
    art_pert = np.abs(x_art - x).reshape(len(x), -1).mean(1)
    rows = []
    for override in variants:
        params = {k: v for k, v in {**STUDY[name][0], **(override or {})}.items() if k in registry()[name].params}
        t0, c0 = time.perf_counter(), time.process_time()
        res = get_attack(name, bundle, **params)(x)
        t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
        fwd_ours, bwd_ours = passes.take()
        label = name + (" (ours: " + ", ".join(f"{k} {v}" for k, v in override.items()) + ")" if override else "")
        rows.append({"attack": label, "n": int(len(x)), "ours_params": params,
                     "success_art": float(art_flip.mean()), "success_ours": float(res.flipped.mean()),
                     "perturbation_art": float(art_pert.mean()), "perturbation_ours": float(res.mean_abs.mean()),
                     "seconds_art": t_art, "seconds_ours": t_ours, "ratio": t_ours / t_art,
                     "cpu_seconds_art": c_art, "cpu_seconds_ours": c_ours, "cpu_ratio": c_ours / c_art,
                     "queries_ours": int(res.queries.sum()),
                     "forward_rows_art": fwd_art, "backward_rows_art": bwd_art,
                     "forward_rows_ours": fwd_ours, "backward_rows_ours": bwd_ours,
                     # black-box: ours scores on ONNX Runtime, outside the torch module
                     "work_ratio": (fwd_ours + 2 * bwd_ours) / max(1, fwd_art + 2 * bwd_art)
                     if registry()[name].kind == "white-box" else None})
    return rows


def verdict(r: dict) -> str:
    name = r["attack"].split(" ")[0]
    misses = []
    # judged on CPU seconds: the wall clock of a shared 2-core machine moves with its load
    if r["cpu_seconds_ours"] > r["cpu_seconds_art"]:
        misses.append("slower")
    if name in TEN_X and r["cpu_ratio"] > 0.1:
        misses.append("<10x")
    if r["success_ours"] < r["success_art"] - 0.05:
        misses.append("success")
    if name in MINIMISATION and r["perturbation_ours"] > r["perturbation_art"] * 1.0001 + 1e-9:
        misses.append("perturbation")
    return "ok" if not misses else "MISS " + ",".join(misses)


def table(rows: list[dict]) -> str:
    out = ["| attack | n | success ART / ours | mean perturbation ART / ours | seconds ART / ours | ours/ART time "
           "| CPU seconds ART / ours | ours/ART CPU | forward rows ART / ours | backward rows ART / ours "
           "| work ours/ART | targets |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['attack']} | {r['n']} | {r['success_art']:.3f} / {r['success_ours']:.3f} | "
                   f"{r['perturbation_art']:.4g} / {r['perturbation_ours']:.4g} | "
                   f"{r['seconds_art']:.2f} / {r['seconds_ours']:.2f} | {r['ratio']:.3f} | "
                   f"{r['cpu_seconds_art']:.2f} / {r['cpu_seconds_ours']:.2f} | {r['cpu_ratio']:.3f} | "
                   f"{r['forward_rows_art']} / {r['forward_rows_ours']} | {r['backward_rows_art']} / "
                   f"{r['backward_rows_ours']} | {'-' if r['work_ratio'] is None else format(r['work_ratio'], '.3f')} | {verdict(r)} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="emodb")
    p.add_argument("--n", type=int, default=16, help="examples per attack (before caps)")
    p.add_argument("--attacks", default=",".join(STUDY), help="comma-separated subset")
    p.add_argument("--cap", action="append", default=[], metavar="ATTACK=N",
                   help=f"examples for a slow attack (defaults {DEFAULT_CAPS})")
    p.add_argument("--art-batch-size", type=int, default=None, help="override ART's default batch sizes")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    p.add_argument("--threads", type=int, default=1, help="torch threads for both toolboxes")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [a.strip() for a in args.attacks.split(",") if a.strip()]
    unknown = [a for a in names if a not in STUDY]
    missing = [a for a in names if a in STUDY and a not in registry()]
    if unknown:
        p.error(f"unknown attacks {unknown} (accepted: {', '.join(STUDY)})")
    if missing:
        print(f"not registered here, skipped: {missing}", file=sys.stderr)
        names = [a for a in names if a in registry()]
    caps = dict(DEFAULT_CAPS)
    for c in args.cap:
        k, _, v = c.partition("=")
        caps[k] = int(v)
    bundle = ModelBundle.load(args.model)
    # ONNX Runtime (our black-box attacks' queries) on as many threads as torch, not spinning
    bundle.configure_onnx(threads=args.threads)
    x_all = held_out_examples(bundle, args.data, args.n)
    passes = PassCounter(bundle.torch_model())  # the module ART runs
    passes.watch(bundle.gradient_model())  # ours: the same function rewritten for speed
    counts = {a: min(args.n, caps.get(a, args.n)) for a in names}
    print(f"model {bundle.name}, examples per attack: {counts}", file=sys.stderr)
    rows = []
    for name in names:
        print(f"[{time.strftime('%H:%M:%S')}] {name} on {counts[name]} examples ...", file=sys.stderr, flush=True)
        # Boundary: also our default (binary-searched start, walk that does not give up)
        # first row: ART's algorithm (the study's); further rows: our options beside it
        variants = {"boundary": (None, {"init_steps": 10, "persist": True}),
                    "bim": (None, {"early_stop": True}),
                    "deepfool": (None, {"range_scaled_step": False})}.get(name, (None,))
        new = compare(bundle, name, x_all[:counts[name]], args.art_batch_size, passes, variants)
        rows += new
        print("\n".join(table(new).splitlines()[2:]), file=sys.stderr, flush=True)
    print(f"\nModel `{bundle.name}`; examples per attack: "
          + ", ".join(f"{a} {c}" for a, c in counts.items())
          + f"; {args.threads} torch thread(s); ART {_art_version()} with {'batch size ' + str(args.art_batch_size) if args.art_batch_size else 'its default batch sizes'}.\n")
    print(table(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": bundle.name, "counts": counts, "rows": rows}, indent=1))
    return 0


def _art_version() -> str:
    import art
    return art.__version__


if __name__ == "__main__":
    raise SystemExit(main())
