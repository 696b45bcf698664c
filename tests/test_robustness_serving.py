"""What the app says about robustness (ser_core/serving/robustness.py, the catalogue) and where it
reads it from (ser_core/evaluation/robustness/card.py): the SNR an attacked clip flipped at or
that it held at the budget, each model's robust accuracy at 40 and 30 dB with n from its bundle,
defended models beside their base, and bundles that read their base's weights."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ser_core.errors import ModelBundleError
from ser_core.serving.robustness import model_robustness, snr_outcome
from ser_core.serving.texts import prediction_markdown, summary_markdown


def waveform_result(**kw):
    r = {"domain": "waveform", "attack": "apgd", "params": {"snr_db": 30.0, "eps_16bit": None}, "snr_db": 33.42,
         "flipped": True, "label_before": "anger", "label_after": "sadness", "target": None, "target_reached": True}
    return dict(r, **kw)


def test_a_flip_is_stated_at_the_snr_of_its_wav_and_the_budget():
    out = snr_outcome(waveform_result())
    assert out["flip_snr_db"] == 33.42
    assert "flipped at 33.4 dB SNR" in out["snr_outcome"] and "budget 30 dB SNR" in out["snr_outcome"]


def test_a_clip_that_did_not_flip_held_at_the_budget_with_no_flip_snr():
    out = snr_outcome(waveform_result(flipped=False, target_reached=False, snr_db=30.05))
    assert out["flip_snr_db"] is None
    assert out["snr_outcome"].startswith("The clip held at the budget") and "within 30 dB SNR" in out["snr_outcome"]
    linf = snr_outcome(waveform_result(flipped=False, params={"snr_db": None, "eps_16bit": 64}, snr_db=35.0))
    assert "64 16-bit steps" in linf["snr_outcome"]


def test_a_targeted_attack_counts_only_landing_on_its_target():
    missed = snr_outcome(waveform_result(target="happiness", target_reached=False, flipped=True))
    assert missed["flip_snr_db"] is None and "no verified landing" in missed["snr_outcome"]
    landed = snr_outcome(waveform_result(target="happiness", target_reached=True))
    assert "landed on happiness at 33.4 dB" in landed["snr_outcome"]


def test_feature_attacks_have_no_snr():
    assert snr_outcome({"domain": "features", "flipped": True}) == {"flip_snr_db": None, "snr_outcome": None}


def test_the_attack_summary_says_the_snr_outcome():
    r = waveform_result()
    r.update(snr_outcome(r))
    assert r["snr_outcome"] in summary_markdown(r)


BLOCK = {"n": 40, "view": None, "defence": None, "budgets": {
    "l2@40dB": {"robust": 8, "n": 40, "accuracy": 0.2, "wilson95": [0.105, 0.349], "speaker_bootstrap95": [0.1, 0.3]},
    "l2@30dB": {"robust": 0, "n": 40, "accuracy": 0.0, "wilson95": [0.0, 0.088], "speaker_bootstrap95": [0, 0]},
    "linf@30dB": {"robust": 4, "n": 40, "accuracy": 0.1, "wilson95": [0.04, 0.23], "speaker_bootstrap95": [0, 0]}}}


def test_model_robustness_states_40_and_30_db_with_n_and_interval():
    r = model_robustness({"robustness": BLOCK})
    assert list(r["budgets"]) == ["l2@40dB", "l2@30dB"] and r["n"] == 40
    assert "0.20 at 40 dB SNR (8/40 clips, 95% CI 0.10-0.35)" in r["text"]
    assert "0.00 at 30 dB SNR (0/40 clips" in r["text"]
    assert "not measured" in model_robustness({})["text"]
    assert r["text"] in prediction_markdown({"model_robustness": r})


def test_a_defended_model_says_its_defence():
    r = model_robustness({"robustness": dict(BLOCK, view="adaptive", defence="resample"),
                          "defence": {"chain": [{"name": "resample", "rate": 8000}], "seed": 0},
                          "defended_from": "emodb"})
    assert r["text"].startswith("Defended: behind the input defence resample") and "adaptive attacks" in r["text"]
    trained = model_robustness({"defence": {"method": "pgd-at", "domain": "waveform", "snr": 40.0, "base": "emodb"}})
    assert "pgd-at, waveform, 40 dB SNR" in trained["text"]


def _suite_row(clip, speaker, gender, label, robust40, robust30, model="emodb", sha="x"):
    b = lambda ok: {"robust": ok, "found_by": None if ok else "apgd-ce@l2@30dB", "member_correct": {"apgd-ce": ok}}
    return {"model": model, "weights_sha": sha, "suite": "s1", "clip": clip, "speaker": speaker, "gender": gender,
            "label": label, "clean_pred": label, "clean_correct": True, "budgets": {"l2@40dB": b(robust40),
            "l2@30dB": b(robust30)}, "flip_snr_db": None if robust30 else 35.0, "cpu_seconds": 1.0,
            "runs": [{"member": "apgd-ce"}], "defence": None, "defence_spec": None, "view": "none", "labels": ["a", "b"]}


@pytest.fixture()
def copied_bundle(tmp_path, bundle):
    from ser_core.models.bundle import ModelBundle
    folder = tmp_path / "models" / "emodb"
    folder.mkdir(parents=True)
    for f in ("config.json", "model.safetensors", "README.md"):
        shutil.copy(bundle.folder / f, folder / f)
    return ModelBundle.from_folder(folder)


def test_the_robustness_card_writes_the_block_and_its_section_once(copied_bundle, tmp_path):
    from ser_core.evaluation.robustness.card import CARD_MARK, write_block
    sha = copied_bundle.config["weights_sha"]
    rows = [_suite_row(f"c{i}", "03" if i % 2 else "08", "male" if i < 3 else "female", i % 2, i < 3, i < 1, sha=sha)
            for i in range(6)] + [_suite_row("other", "03", "male", 0, True, True, sha="old-weights")]
    results = tmp_path / "robustness"
    results.mkdir()
    (results / "suite.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    block = write_block(copied_bundle, results)
    assert block["n"] == 6  # the row of other weights is not this bundle's
    assert (block["budgets"]["l2@40dB"]["robust"], block["budgets"]["l2@30dB"]["robust"]) == (3, 1)
    lo, hi = block["budgets"]["l2@40dB"]["wilson95"]
    assert lo < 0.5 < hi
    assert json.loads((copied_bundle.folder / "config.json").read_text())["robustness"] == block
    readme = (copied_bundle.folder / "README.md").read_text()
    assert readme.count(CARD_MARK) == 1 and "| l2@40dB | 3/6 | 0.50 |" in readme
    universal = readme.find("<!-- universal")
    assert universal == -1 or readme.index(CARD_MARK) < universal  # before a later generated section
    write_block(copied_bundle, results)
    assert (copied_bundle.folder / "README.md").read_text() == readme  # rewritten in place, not appended


def test_defend_input_reads_its_base_weights_and_costs_no_weight_budget(copied_bundle, tmp_path):
    from export.cli import main
    from ser_core.models.bundle import ModelBundle
    out = copied_bundle.folder.parent / "emodb-quantise"
    assert main(["defend-input", "--model", str(copied_bundle.folder), "--defence", "quantise:bits=8",
                 "--out", str(out)]) == 0
    d = ModelBundle.load(out)
    assert d.config["weights_from"] == "../emodb" and (out / "model.safetensors").stat().st_size < 100
    base, mine = copied_bundle.torch_model().state_dict(), d.torch_model().state_dict()
    assert base.keys() == mine.keys() and all(torch_equal(base[k], mine[k]) for k in base)
    assert np.array_equal(d.standardizer.mean, copied_bundle.standardizer.mean)
    assert "## Defence" in (out / "README.md").read_text()
    # a changed base is refused, as changed weights of any bundle are
    data = bytearray((copied_bundle.folder / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (copied_bundle.folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelBundleError, match="weights_sha"):
        ModelBundle.load(out).onnx_path()


def torch_equal(a, b):
    import torch
    return torch.equal(a, b)


def test_a_delta_bundle_stores_only_its_trained_layers(copied_bundle, tmp_path):
    import torch
    from ser_core.models.bundle import ModelBundle
    model = copied_bundle.torch_model()
    changed = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.dense.bias += 1.0
    try:
        out = copied_bundle.folder.parent / "emodb-delta"
        d = ModelBundle.save(out, model, copied_bundle.standardizer, dict(copied_bundle.config, name="emodb-delta"),
                             "int8", base=copied_bundle, layers=("cnn", "dense"))
    finally:
        model.load_state_dict(changed)
    from safetensors.torch import load_file
    stored = load_file(str(out / "model.safetensors"))
    assert stored and all(k.split(".")[0] in ("cnn", "dense") for k in stored)
    assert (out / "model.safetensors").stat().st_size < 100_000  # the LSTM's 4 MB stay in the base
    mine = ModelBundle.load(out).torch_model().state_dict()
    assert torch.allclose(mine["dense.bias"], changed["dense.bias"] + 1.0, atol=1e-6)
    assert torch.equal(mine["lstm.weight_ih_l0"], changed["lstm.weight_ih_l0"])


def test_defended_models_are_listed_after_their_base_and_say_so(copied_bundle, monkeypatch):
    from ser_core.models import bundle as bundle_module
    from ser_core.serving import catalogue
    root = copied_bundle.folder.parent
    for name, extra in (("emodb-zz-resample", {"defended_from": "emodb", "defence": {
                             "chain": [{"name": "resample", "rate": 8000}], "seed": 0}}),
                        ("emovo", {}), ("aaa", {})):
        (root / name).mkdir()
        cfg = dict(copied_bundle.config, name=name, **extra)
        (root / name / "config.json").write_text(json.dumps(cfg))
        (root / name / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(bundle_module, "MODELS_DIR", root)
    monkeypatch.delenv("SER_APP_MODELS", raising=False)
    assert catalogue.available_models() == ["emodb", "emodb-zz-resample", "emovo", "aaa"]
    info = catalogue.model_info("emodb-zz-resample")
    assert "defended: input defence resample" in info["title"] and "resample" in info["defence"]
    assert catalogue.model_info("emodb")["defence"] is None


def test_a_bundle_on_its_base_weights_is_not_pushed_alone(copied_bundle):
    from export.cli import main
    from export.push import push
    from ser_core.models.bundle import ModelBundle
    out = copied_bundle.folder.parent / "emodb-lowpass"
    assert main(["defend-input", "--model", str(copied_bundle.folder), "--defence", "lowpass", "--out", str(out)]) == 0

    class NoApi:
        def __getattr__(self, name):
            raise AssertionError("nothing may be uploaded")
    with pytest.raises(ModelBundleError, match="weights_from"):
        push(ModelBundle.load(out), "someone/ser-emodb-lowpass", api=NoApi())
