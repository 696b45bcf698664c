"""`space`: render a folder ready to push as a Hugging Face Space.

    python -m export space --out DIR [--force]

Writes README.md (front matter from space.yaml, then what the Space is), app.py and the page's
other tab modules (app_*.py), ser_core/, requirements.txt (space.yaml's export.requirements),
models/<name>/ for every shipped bundle (config.json, model.safetensors, README.md, its universal
perturbations), examples/ (the clips and their licence), reports/
when present, and a .gitattributes that stores the binary files with Git LFS as the Hub
requires.

What ships: no file over MAX_FILE_BYTES (10 MB). model.onnx (16 MB of float32 per model) does
not: the Space builds it from the int8 weights at start-up and checks it against them (parity),
the default model's before it serves and the others' in the background, which the white-box
attacks need anyway (torch is in the Space). Since it exports at every start, the Space's
requirements are pinned to the versions the tests ran with (space.yaml, tests/test_space_export.py)."""
from __future__ import annotations

import shutil
from pathlib import Path

from .cli import emit

REPO = Path(__file__).resolve().parent.parent
SPACE_YAML = REPO / "space.yaml"
LFS_PATTERNS = ("*.safetensors", "*.onnx", "*.npy", "*.wav", "*.png")
MAX_FILE_BYTES = 10_000_000

BODY = """
# Speech emotion recognition under adversarial attack

Upload or record a short clip, pick the model of a language (German EmoDB, Italian EMOVO,
English RAVDESS) and an attack, and watch the predicted emotion flip. The models and attacks
reproduce Facchinetti, Simonetta, Ntalampiras, *A Systematic Evaluation of Adversarial Attacks
against Speech Emotion Recognition Models* (Intelligent Computing 2024, arXiv:2404.18514), on
held-out speakers.

Feature attacks (the study's) perturb the log-Mel features; their playable audio is a listening
copy made by Griffin-Lim inversion and re-scored, not a verified adversarial clip. Waveform
attacks perturb the samples and verify the flip on the written 16-bit WAV.

## API

```python
from gradio_client import Client, handle_file
client = Client("<user>/<space>")
result, label, note = client.predict(handle_file("clip.wav"), "{model}", api_name="/predict")
out = client.predict(handle_file("clip.wav"), "{model}", "fgsm", '{{"eps": 1.25}}', "features",
                     api_name="/attack")
result = out[0]   # JSON: label_before, label_after, flipped, probabilities, perturbation,
                  # stopped_early (at the Space's time limit), speech check, model accuracy, ...
```

## Models shipped here
{models}

## Licences
The RAVDESS model and the example clips are CC BY-NC-SA 4.0 (Livingstone & Russo 2018, PLoS ONE
13(5): e0196391): non-commercial use, share alike. EmoDB (Burkhardt et al., Interspeech 2005) and
EMOVO (Costantini et al., LREC 2014) were published for research use; see each model card.
"""


def register(sub):
    p = sub.add_parser("space", help="render a Hugging Face Space folder from the repository")
    p.add_argument("--out", required=True, help="folder to write (must be empty or absent)")
    p.add_argument("--force", action="store_true", help="replace --out if it is a previous export")
    p.set_defaults(func=run)


def load_space_config(path: Path = SPACE_YAML) -> tuple[dict, dict]:
    """(front matter, export settings) from space.yaml."""
    import yaml
    from ser_core.errors import ParameterError
    if not path.is_file():
        raise ParameterError(f"{path}: no Space configuration (accepted: a space.yaml at the repo root)")
    cfg = yaml.safe_load(path.read_text()) or {}
    export = cfg.pop("export", {}) or {}
    missing = [k for k in ("sdk", "sdk_version", "app_file", "license", "title") if k not in cfg]
    if missing:
        raise ParameterError(f"{path}: front matter lacks {', '.join(missing)}")
    return cfg, export


def shipped_bundles(models_dir: Path) -> list[Path]:
    from ser_core.models.bundle import CONFIG, WEIGHTS
    if not models_dir.is_dir():
        return []
    return [p for p in sorted(models_dir.iterdir()) if p.is_dir() and not p.name.startswith(".")
            and (p / CONFIG).is_file() and (p / WEIGHTS).is_file()]


def render_space(out: Path, force: bool = False, repo: Path = REPO) -> dict:
    """Write the Space folder; returns what was written."""
    import yaml
    from ser_core.errors import ParameterError
    front, export = load_space_config(repo / "space.yaml")
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()):
        if not force:
            raise ParameterError(f"{out}: not empty (accepted: an empty or absent folder, or --force "
                                 "to replace a previous export)")
        if not (out / "README.md").is_file() or not (out / "app.py").is_file():
            raise ParameterError(f"{out}: does not look like a previous Space export (no README.md "
                                 "and app.py); refusing to delete it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    shutil.copy2(repo / front["app_file"], out / front["app_file"])
    for ui in sorted(repo.glob("app_*.py")):  # the page's other tabs (app_lab.py)
        shutil.copy2(ui, out / ui.name)
    shutil.copytree(repo / "ser_core", out / "ser_core",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (out / "requirements.txt").write_text("\n".join(export.get("requirements", [])) + "\n")

    bundles = shipped_bundles(repo / "models")
    wanted = export.get("bundle_files", ["config.json", "model.safetensors", "README.md"])
    lines = []
    for b in bundles:
        (out / "models" / b.name).mkdir(parents=True)
        for pattern in wanted:  # names or glob patterns (universal-*.npz)
            for f in sorted(b.glob(pattern)):
                if f.is_file():
                    shutil.copy2(f, out / "models" / b.name / f.name)
        lines.append(f"- `{b.name}` ([model card](models/{b.name}/README.md))")

    examples = repo / "examples"
    if examples.is_dir():
        (out / "examples").mkdir()
        for f in sorted(examples.glob("*.wav")) + [examples / "README.md"]:
            if f.is_file():
                shutil.copy2(f, out / "examples" / f.name)
    if (repo / "reports").is_dir():
        shutil.copytree(repo / "reports", out / "reports", ignore=shutil.ignore_patterns("__pycache__"))

    model0 = bundles[0].name if bundles else "emodb"
    body = BODY.format(models="\n".join(lines) or "(none yet: train them first)", model=model0)
    (out / "README.md").write_text("---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True)
                                   + "---\n" + body)
    (out / ".gitattributes").write_text("".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n"
                                                for p in LFS_PATTERNS))
    files = [p for p in out.rglob("*") if p.is_file()]
    big = [f"{p.relative_to(out)} ({p.stat().st_size / 1e6:.1f} MB)" for p in files if p.stat().st_size > MAX_FILE_BYTES]
    if big:
        raise ParameterError(f"{out}: files over {MAX_FILE_BYTES / 1e6:g} MB would ship: {', '.join(big)} "
                             "(accepted: smaller files; model.onnx is built at start-up)")
    return {"out": str(out), "models": [b.name for b in bundles], "files": len(files),
            "megabytes": round(sum(p.stat().st_size for p in files) / 1e6, 2)}


def run(args):
    emit(render_space(Path(args.out), force=args.force))
