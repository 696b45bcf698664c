"""The exported Space folder on its own: nothing over 10 MB ships, it starts from its folder and
answers, every third-party package its code imports while serving is in its own
requirements.txt (or is gradio, which the Space's SDK installs), and every requirement is pinned
to the version the tests ran with."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.test_app_api import EXAMPLE, MODEL, running_app, warm_start

# import name -> requirement name, for the packages the exported code may import (gradio's own
# dependencies, which the Space's SDK installs with it at its versions, count as gradio)
DISTRIBUTIONS = {"PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn", "silero_vad": "silero-vad",
                 "huggingface_hub": "huggingface_hub", "gradio_client": "gradio", "onnxruntime": "onnxruntime",
                 "starlette": "gradio", "fastapi": "gradio"}

PROBE = r"""
import ast, json, sys
from pathlib import Path
root = Path.cwd().resolve()
sys.path.insert(0, str(root))
import app
from ser_core.serving import service
service.warm_up()
service.run_attack(sys.argv[1], sys.argv[2], "fgsm", {"eps": 0.5}, "features")
service.run_attack(sys.argv[1], sys.argv[2], "pgd", {"steps": 3}, "waveform")
names = set()
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None)
    if f and Path(f).is_absolute() and Path(f).resolve().is_relative_to(root) and f.endswith(".py"):
        for node in ast.walk(ast.parse(Path(f).read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
local = {p.stem for p in root.iterdir()} | {"ser_core", "export", "tests"}
print(json.dumps(sorted(n for n in names if n not in sys.stdlib_module_names and n not in local)))
"""


def _pins(lines) -> dict[str, str]:
    """{normalised name: version} of the `name==version` lines."""
    import re
    out = {}
    for line in lines:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*==\s*(\S+)\s*", line.split("#")[0])
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


def test_the_space_pins_what_the_tests_ran_with():
    """The Space exports and parity-checks ONNX at every start: an unpinned torch, onnxruntime,
    onnx, numpy or librosa release could break it on its next restart. Every requirement is
    pinned, to requirements.txt's version where both name the package (torch from the CPU index,
    onnxruntime at onnxruntime-gpu's), else to the version installed here."""
    from importlib.metadata import version
    from export.space import REPO, load_space_config
    lines = [line for line in load_space_config()[1]["requirements"] if not line.startswith("-")]
    assert lines and not [line for line in lines if "==" not in line], "unpinned Space requirements"
    space = _pins(lines)
    ours = {{"onnxruntime-gpu": "onnxruntime"}.get(n, n): v
            for n, v in _pins((REPO / "requirements.txt").read_text().splitlines()).items()}
    both = space.keys() & ours.keys()
    assert {"torch", "onnxruntime", "onnx", "numpy", "librosa", "soundfile"} <= both
    assert {n: space[n].split("+")[0] for n in both} == {n: ours[n] for n in both}
    assert {n: space[n] for n in space.keys() - both} == {n: version(n) for n in space.keys() - both}
    assert space["torch"].endswith("+cpu") and any("download.pytorch.org/whl/cpu" in line
                                                   for line in load_space_config()[1]["requirements"])


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    from export.space import render_space
    out = tmp_path_factory.mktemp("space") / "space"
    render_space(out)
    return out


def test_no_file_over_10_mb_and_no_onnx_ships(space):
    from export.space import MAX_FILE_BYTES
    files = [p for p in space.rglob("*") if p.is_file()]
    assert files and max(p.stat().st_size for p in files) <= MAX_FILE_BYTES
    assert not list(space.rglob("*.onnx"))


@pytest.mark.slow
def test_everything_the_served_code_imports_is_in_its_requirements(space, tmp_path):
    env = {"SER_CACHE_DIR": str(tmp_path / "cache"), "SER_APP_MODELS": MODEL, "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-I", "-c", PROBE, str(EXAMPLE), MODEL], cwd=space, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    imported = json.loads(run.stdout.strip().splitlines()[-1])
    required = {line.split("==")[0].split(">=")[0].strip().lower().replace("_", "-")
                for line in (space / "requirements.txt").read_text().splitlines()
                if line.strip() and not line.startswith(("-", "#"))} | {"gradio"}
    missing = [n for n in imported
               if DISTRIBUTIONS.get(n, n).lower().replace("_", "-") not in required]
    assert imported and not missing, f"imported but not in requirements.txt: {missing}"


@pytest.mark.slow
def test_the_exported_folder_starts_and_answers_at_once(space, tmp_path):
    from gradio_client import Client, handle_file
    with running_app(app_dir=space, env={"SER_CACHE_DIR": str(tmp_path / "cache")}) as url:
        client = Client(url, verbose=False)
        # at once: the first call's work (model, ONNX session, one HTTP /predict) done at start-up
        warm = warm_start(url)
        assert MODEL in warm["models"] and warm["http"] is not None
        result, label, note = client.predict(handle_file(str(EXAMPLE)), MODEL, api_name="/predict")
        assert result["label"] == label["label"] and result["model_accuracy"]["accuracy"] is not None
