"""The model bundle: storage, ONNX parity, clip prediction, lazy ONNX build, Hub loading."""
import json
import shutil

import numpy as np
import pytest
import torch

from ser_core.models.bundle import ModelBundle
from ser_core.errors import ModelBundleError, TooShortAudioError
from ser_core.models.cnn_lstm import CNNLSTM
from tests.helpers import voiced


def test_shipped_bundle_records_protocol_speakers_and_metrics(bundle):
    c = bundle.config
    assert c["protocol"] in ("speaker", "paper") and c["parameter_count"] == 3_960_389
    m = c["metrics"]["test"]
    assert m["n"] == m["n_male"] + m["n_female"] and 0 <= m["accuracy"] <= 1
    assert np.array(m["confusion"]["matrix"]).sum() == m["n"]
    assert len(bundle.labels) == 5 and bundle.clip_range[0] < 0 < bundle.clip_range[1]


@pytest.mark.parametrize("batch", [1, 64])
def test_onnx_matches_torch_on_real_features(bundle, test_examples, batch):
    x = np.resize(test_examples[0], (batch,) + test_examples[0].shape[1:])
    with torch.no_grad():
        p_torch = torch.softmax(bundle.torch_model()(torch.from_numpy(x)), 1).numpy()
    p_onnx = bundle.predict_features(x)
    # the parity bound a bundle must pass to load (the default emodb weights measure 1.0e-4)
    from ser_core.models.onnx_export import PARITY_ATOL
    assert np.abs(p_torch - p_onnx).max() < PARITY_ATOL
    assert np.array_equal(p_torch.argmax(1), p_onnx.argmax(1))


def test_clip_prediction_is_the_mean_of_its_chunks(bundle, tmp_path):
    pred = bundle.predict_clip(voiced(7.0), 16000)
    assert pred.chunk_probabilities.shape == (3, len(bundle.labels))
    assert np.allclose(pred.chunk_probabilities.sum(1), 1, atol=1e-5)
    clip = pred.chunk_probabilities.mean(0)
    assert pred.label == bundle.labels[int(clip.argmax())]
    assert np.isclose(sum(pred.probabilities.values()), 1, atol=1e-5)
    with pytest.raises(TooShortAudioError):
        bundle.predict_clip(voiced(0.1, pad=0), 16000)


@pytest.mark.parametrize("dtype,tol", [("float32", 0), ("float16", 1e-3), ("int8", 2e-2)])
def test_weights_storage_roundtrip(tmp_path, bundle, dtype, tol):
    model = CNNLSTM()
    ref = {k: v.clone() for k, v in model.state_dict().items()}
    saved = ModelBundle.save(tmp_path / dtype, model, bundle.standardizer,
                             dict(bundle.config, name="t"), dtype)
    loaded = saved.torch_model().state_dict()
    for k, v in ref.items():
        if v.is_floating_point() and v.numel():
            assert (loaded[k] - v).abs().max() <= tol * max(1.0, v.abs().max())
    assert json.loads((tmp_path / dtype / "config.json").read_text())["weights_dtype"] == dtype


def test_missing_onnx_is_built_from_weights_with_parity(tmp_path, bundle, monkeypatch):
    monkeypatch.setenv("SER_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "b"
    folder.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(bundle.folder / f, folder / f)
    b = ModelBundle.from_folder(folder)
    assert b.onnx_path() == folder / "model.onnx" and (folder / "model.onnx").is_file()
    p = b.predict_clip(voiced(2.0), 16000)
    assert p.label == bundle.predict_clip(voiced(2.0), 16000).label


def test_bad_bundle_locations_raise(tmp_path):
    with pytest.raises(ModelBundleError, match="not a model bundle"):
        ModelBundle.load(tmp_path / "nothing")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelBundleError, match="no model.safetensors"):
        ModelBundle.from_folder(tmp_path)


def test_loads_a_hub_repo_from_the_offline_cache(tmp_path, bundle, monkeypatch):
    """A bundle pushed to the Hub is fetched by repo id; here from a local cache, Hub offline."""
    commit = "0" * 40
    snap = tmp_path / "hub" / "models--someone--ser-emodb" / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in ("config.json", "model.safetensors", "README.md"):
        shutil.copy(bundle.folder / f, snap / f)
    refs = tmp_path / "hub" / "models--someone--ser-emodb" / "refs"
    refs.mkdir()
    (refs / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    b = ModelBundle.load("hf://someone/ser-emodb")
    assert b.labels == bundle.labels and b.config["weights_sha"] == bundle.config["weights_sha"]
    assert b.config["hub"] == {"repo_id": "someone/ser-emodb", "revision": "main", "commit": commit}
    pinned = ModelBundle.load(f"hf://someone/ser-emodb@{commit}")
    assert pinned.config["hub"]["revision"] == commit == pinned.config["hub"]["commit"]
    with pytest.raises(ModelBundleError, match="cannot fetch"):
        ModelBundle.load("hf://someone/not-cached")
    with pytest.raises(ModelBundleError, match="cannot fetch"):
        ModelBundle.load(f"hf://someone/ser-emodb@{'1' * 40}")


def test_a_repo_id_without_hf_prefix_is_not_fetched_from_the_hub(monkeypatch):
    """'a/b' with no such folder is an error that names the explicit Hub form; nothing is
    downloaded."""
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda *a, **k: pytest.fail("went to the Hub"))
    with pytest.raises(ModelBundleError, match="hf://someone/ser-emodb@<revision>"):
        ModelBundle.load("someone/ser-emodb")
    with pytest.raises(ModelBundleError, match="not a Hub model id"):
        ModelBundle.load("hf://no-slash")


def _bundle_copy(bundle, folder):
    folder.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(bundle.folder / f, folder / f)
    return ModelBundle.from_folder(folder)


def test_an_onnx_file_from_other_weights_is_refused_and_rebuilt(tmp_path, bundle, monkeypatch):
    """A model.onnx that is not the bundle's weights (here: an untrained CNN-LSTM) fails the
    parity check and is never served: it is rebuilt from the weights in its place."""
    from ser_core.models.onnx_export import export_onnx
    monkeypatch.setenv("SER_CACHE_DIR", str(tmp_path / "cache"))
    b = _bundle_copy(bundle, tmp_path / "b")
    torch.manual_seed(0)
    export_onnx(CNNLSTM(len(b.labels)).eval(), b.folder / "model.onnx", b.feature_config.input_shape)
    stale = (b.folder / "model.onnx").read_bytes()
    with pytest.raises(ModelBundleError, match="parity check failed"):
        b.verify_onnx(b.folder / "model.onnx")
    assert b.onnx_path() == b.folder / "model.onnx" and (b.folder / "model.onnx").read_bytes() != stale
    assert json.loads((b.folder / "model.onnx.verified.json").read_text())["parity"]["same_decisions"]


def test_a_checked_onnx_is_recorded_and_changed_weights_are_refused(tmp_path, bundle, monkeypatch):
    """The first check of a model.onnx records its hash with the weights'; later loads trust the
    record (no parity run), and weights edited after saving are refused."""
    import ser_core.models.onnx_export as onnx_export
    monkeypatch.setenv("SER_CACHE_DIR", str(tmp_path / "cache"))
    b = _bundle_copy(bundle, tmp_path / "b")
    path = b.onnx_path()
    record = json.loads((b.folder / "model.onnx.verified.json").read_text())
    assert record["weights_sha"] == b.config["weights_sha"] and record["parity"]["same_decisions"]
    monkeypatch.setattr(onnx_export, "check_parity", lambda *a, **k: pytest.fail("parity re-run"))
    again = ModelBundle.from_folder(b.folder)
    assert again.onnx_path() == path
    data = bytearray((b.folder / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (b.folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelBundleError, match="differs from config.json's weights_sha"):
        ModelBundle.from_folder(b.folder).onnx_path()


def test_onnx_with_external_data_is_refused(tmp_path, bundle, monkeypatch):
    import onnx
    monkeypatch.setenv("SER_CACHE_DIR", str(tmp_path / "cache"))
    b = _bundle_copy(bundle, tmp_path / "b")
    proto = onnx.load(str(b.onnx_path()))
    (b.folder / "model.onnx").unlink()
    onnx.save_model(proto, str(b.folder / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.data", size_threshold=0)
    with pytest.raises(ModelBundleError, match="external data"):
        ModelBundle.from_folder(b.folder).verify_onnx(b.folder / "model.onnx")
    # never served: rebuilt self-contained in its place
    from ser_core.models.onnx_export import refuse_external_data
    refuse_external_data(ModelBundle.from_folder(b.folder).onnx_path())


def test_push_uploads_config_weights_and_card(bundle):
    from export.push import FILES, push

    class FakeApi:
        calls = []

        def create_repo(self, repo_id, **kw):
            self.calls.append(("create", repo_id, kw))

        def upload_folder(self, **kw):
            self.calls.append(("upload", kw))
            return "https://hub/commit/1"

    api = FakeApi()
    assert push(bundle, "someone/ser-emodb", api=api) == "https://hub/commit/1"
    (_, repo, _), (_, up) = api.calls
    assert repo == "someone/ser-emodb" and up["allow_patterns"] == FILES
    assert up["folder_path"] == str(bundle.folder)
    with pytest.raises(ModelBundleError, match="not a Hub repo id"):
        push(bundle, "no-slash", api=api)


def test_onnx_threads_follow_the_configuration_and_keep_the_outputs(bundle, test_examples):
    b = ModelBundle.from_folder(bundle.folder)
    x = test_examples[0][:6]
    default = b.predict_features(x)
    assert b.onnx_session().get_session_options().intra_op_num_threads == 0  # ONNX Runtime's default
    b.configure_onnx(threads=1)
    session = b.onnx_session()
    assert session.get_session_options().intra_op_num_threads == 1 and b.onnx_threads == 1
    assert np.array_equal(b.predict_features(x), default)
    b.configure_onnx(threads=1)
    assert b.onnx_session() is session  # the same options keep the session
    with pytest.raises(ModelBundleError, match="threads"):
        b.configure_onnx(threads=0)
