"""A start that survives: a bad or stale model.onnx is rebuilt from the weights, a model whose
files cannot be served is taken out of service with its reason logged while the others serve,
and the app serves its default model before the others' ONNX files are built (in the
background)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ser_core.errors import ModelBundleError
from tests.helpers import wait_until
from tests.test_app_api import EXAMPLE, app_log, running_app, warm_start


def _copy(bundle, folder: Path, onnx: bytes | None = None, flip_weights: bool = False) -> Path:
    """The bundle's config, weights and card in `folder`; a model.onnx of `onnx`'s bytes; the
    weights changed after saving (one bit) when flip_weights."""
    folder.mkdir(parents=True)
    for f in ("config.json", "model.safetensors", "README.md"):
        shutil.copy(bundle.folder / f, folder / f)
    if onnx is not None:
        (folder / "model.onnx").write_bytes(onnx)
    if flip_weights:
        data = bytearray((folder / "model.safetensors").read_bytes())
        data[-1] ^= 1
        (folder / "model.safetensors").write_bytes(bytes(data))
    return folder


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """An empty models/ folder served by the catalogue, with its own cache and no served or
    disabled models remembered."""
    from ser_core.models import bundle as bundle_module
    from ser_core.serving import catalogue
    monkeypatch.setenv("SER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SER_APP_MODELS", raising=False)
    monkeypatch.setattr(bundle_module, "MODELS_DIR", tmp_path / "models")
    monkeypatch.setattr(catalogue, "_bundles", {})
    monkeypatch.setattr(catalogue, "_disabled", {})
    return tmp_path / "models"


def test_an_unreadable_model_onnx_is_rebuilt_from_the_weights(bundle, tmp_path, monkeypatch):
    from ser_core.models.bundle import ModelBundle
    monkeypatch.setenv("SER_CACHE_DIR", str(tmp_path / "cache"))
    folder = _copy(bundle, tmp_path / "b", onnx=b"not an ONNX model")
    b = ModelBundle.from_folder(folder)
    with pytest.raises(ModelBundleError, match="not a readable ONNX model"):
        b.verify_onnx(folder / "model.onnx")
    assert b.onnx_path() == folder / "model.onnx"
    record = json.loads((folder / "model.onnx.verified.json").read_text())
    assert record["parity"]["same_decisions"] and record["weights_sha"] == b.config["weights_sha"]
    assert b.predict_clip(str(EXAMPLE)).label in b.labels


def test_a_model_whose_files_fail_is_out_of_service_and_the_others_serve(bundle, models_dir):
    """Weights changed after saving: no rebuild fixes them, so warm-up takes the model out of
    service (the reason kept for the log) and the next one becomes the page's default."""
    from ser_core.serving import service
    _copy(bundle, models_dir / "broken", flip_weights=True)
    _copy(bundle, models_dir / "good", onnx=b"\x00" * 64)
    assert service.available_models() == ["broken", "good"]
    assert list(service.warm_up(ready=1)) == ["good"]
    assert "differs from config.json's weights_sha" in service.disabled_models()["broken"]
    assert service.available_models() == ["good"]
    with pytest.raises(ModelBundleError, match="out of service") as err:
        service.predict(str(EXAMPLE), "broken")
    assert str(models_dir) not in str(err.value)  # the reason's paths stay in the server's log
    assert service.predict(str(EXAMPLE), "good")["model"] == "good"


@pytest.mark.slow
def test_the_app_serves_its_default_first_and_builds_the_others_in_the_background(bundle, tmp_path):
    """A fresh start of three models: one whose weights changed (out of service, the app still
    serves), one with a corrupt model.onnx (rebuilt before the first page: the page's default),
    one with none (built in the background, after the server listens)."""
    from gradio_client import Client, handle_file
    models = tmp_path / "models"
    _copy(bundle, models / "broken", flip_weights=True)
    _copy(bundle, models / "good", onnx=b"garbage")
    _copy(bundle, models / "other")
    env = {"SER_MODELS_DIR": str(models), "SER_CACHE_DIR": str(tmp_path / "cache")}
    with running_app("broken,good,other", env=env) as url:
        assert set(warm_start(url)["models"]) == {"good"}
        log = app_log(url)
        assert "model broken is out of service" in log and "rebuilding it from the weights" in log
        line = wait_until(lambda: "background warm-up:" in app_log(url), timeout=300, interval=0.2,
                          what="the background warm-up to end")
        assert line and "'other'" in app_log(url).split("background warm-up:")[1]
        assert (models / "other" / "model.onnx").is_file()
        client = Client(url, verbose=False)
        result = client.predict(handle_file(str(EXAMPLE)), "other", api_name="/predict")[0]
        assert result["model"] == "other"
        with pytest.raises(Exception, match="out of service"):
            client.predict(handle_file(str(EXAMPLE)), "broken", api_name="/predict")
