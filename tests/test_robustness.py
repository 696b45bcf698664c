"""The robustness suite and the input defences: the worst case is never above a member's accuracy,
a defence that only masks gradients is caught, EOT is seeded and averages over draws, a defended
bundle serves and its defence runs before ONNX, and suite runs resume clip by clip."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from ser_core.attacks.objective import Objective
from ser_core.attacks.waveform.apgd import cross_entropy
from ser_core.audio.defences import parse_defence
from ser_core.errors import ParameterError
from ser_core.evaluation.robustness.report import summarise
from ser_core.evaluation.robustness.run import run_suite, suite_clips, with_defence
from ser_core.evaluation.robustness.suite import Budget, ClipRecord, SuiteConfig, record_row

L2_40, L2_30, LINF_30 = Budget("l2", 40.0), Budget("l2", 30.0), Budget("linf", 30.0)


def run(member, budget, flipped, snr=None, linf=0):
    return {"member": member, "budget": budget, "flipped": flipped, "snr_db": snr, "linf_16bit": linf,
            "cpu_seconds": 0.1}


def test_a_flip_counts_at_every_budget_it_lies_in_and_the_first_finder_is_named():
    rec = ClipRecord("c", "s", "male", 1, 1, [run("apgd-ce", "l2@40dB", False, None),
                                             run("apgd-t", "l2@40dB", True, 41.0, 20),
                                             run("cw", None, True, 43.5, 9)], {"linf@30dB": 10})
    assert rec.found_by(L2_40) == "apgd-t@l2@40dB"
    assert rec.found_by(L2_30) == "apgd-t@l2@40dB"  # a 41 dB flip lies in the 30 dB ball
    assert rec.found_by(LINF_30) == "cw@None"      # only C&W's Linf (9) is within eps 10
    assert rec.flip_snr_db == 43.5
    assert rec.member_correct("apgd-ce", L2_40) is True
    assert rec.member_correct("apgd-ce", L2_30) is None  # never run there: unknown, not robust
    assert ClipRecord("c", "s", "male", 1, 2).found_by(L2_40) == "clean"


@pytest.mark.parametrize("seed", range(5))
def test_robust_accuracy_is_at_most_every_members_accuracy_on_the_same_clips(seed):
    rng = np.random.default_rng(seed)
    members = ("apgd-ce", "apgd-t", "square", "cw")
    cfg = SuiteConfig(budgets=(L2_40, L2_30, LINF_30), every_member=True)
    rows = []
    for i in range(12):
        runs = [run(m, key, bool(rng.random() < 0.4), float(rng.uniform(25, 50)), int(rng.integers(1, 20)))
                for m in members for key in ([None] if m == "cw" else [b.key for b in cfg.budgets])]
        rec = ClipRecord(f"c{i}", f"s{i % 3}", ("male", "female")[i % 2], i % 5, i % 5 if rng.random() < 0.9 else 0,
                         runs, {"linf@30dB": 10})
        rows.append(record_row(rec, cfg, "m", None, {"labels": list("abcde")}))
    s = summarise(rows, list("abcde"), members)
    for key, b in s["budgets"].items():
        for m, acc in b["member_accuracy"].items():
            assert b["robust_accuracy"] <= acc + 1e-12, (key, m)
        assert b["robust"] <= s["clean_correct"]


def test_cross_entropy_ascends_the_label_and_descends_onto_the_target():
    lp = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]]), 1)
    assert torch.allclose(cross_entropy(lp, Objective(np.array([0]))), lp[:, 0])
    assert torch.allclose(cross_entropy(lp, Objective(np.array([0]), np.array([2]))), -lp[:, 2])


def test_defence_specs_parse_and_bad_ones_are_refused():
    d = parse_defence("resample:rate=8000+quantise:bits=8")
    assert [p.spec() for p in d.parts] == [{"name": "resample", "rate": 8000}, {"name": "quantise", "bits": 8}]
    assert parse_defence(d.to_config()).spec() == d.spec()
    assert parse_defence(None) is None and parse_defence("none") is None
    for bad in ("blur", "quantise:bits=1", "lowpass:cutoff=9000", "noise:sigma=x", "quantise:depth=8"):
        with pytest.raises(ParameterError):
            parse_defence(bad)


def test_the_serving_defence_is_reproducible_for_a_clip_and_fresh_for_another():
    y = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    d = parse_defence("noise:sigma=0.01")
    assert np.array_equal(d(y), d(y))
    z = y.copy()
    z[0] += 1e-3
    assert not np.allclose(d(z)[1:] - z[1:], d(y)[1:] - y[1:])
    q = parse_defence("quantise:bits=8")(y)
    assert np.allclose(q * 128, np.round(q * 128)) and np.abs(q - y).max() <= 0.5 / 128 + 1e-7


def test_bpda_keeps_the_exact_value_and_passes_a_gradient_where_the_implementation_has_none():
    y = torch.from_numpy((0.1 * np.random.default_rng(1).standard_normal(8000)).astype(np.float32))[None]
    d = parse_defence("quantise:bits=8")
    exact = torch.from_numpy(d(y[0].numpy()))
    for mode, zero in (("through", True), ("adaptive", False)):
        x = y.clone().requires_grad_(True)
        out = d.view(mode)(x)
        assert torch.equal(out.detach()[0], exact)
        g, = torch.autograd.grad((out * torch.arange(8000.0)).sum(), x)
        assert bool((g == 0).all()) == zero
    lp = parse_defence("lowpass:cutoff=2000")
    assert np.allclose(lp.view("through")(y).detach()[0].numpy(), lp(y[0].numpy()), atol=1e-6)


def test_eot_averages_the_probability_over_seeded_draws():
    d = parse_defence("noise:sigma=0.05")
    w = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))

    def clip_log_probs(x):
        return torch.log_softmax(x[:, :64] @ w * 50, 1)

    pcm = torch.randn(2, 64, generator=torch.Generator().manual_seed(1)) * 3000
    a = d.view("adaptive", eot=6, seed=3).expect(pcm, clip_log_probs, 32768.0)
    b = d.view("adaptive", eot=6, seed=3).expect(pcm, clip_log_probs, 32768.0)
    c = d.view("adaptive", eot=6, seed=4).expect(pcm, clip_log_probs, 32768.0)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    # the same six draws one at a time: the log of their mean probability
    v = d.view("adaptive", eot=6, seed=3)
    draws = v(pcm.repeat_interleave(6, 0) / 32768.0) * 32768.0
    p = clip_log_probs(draws).exp().reshape(2, 6, -1).mean(1)
    assert torch.allclose(a.exp(), p, atol=1e-6)
    assert parse_defence("quantise").view("adaptive", eot=6).eot == 1  # nothing random to average


@pytest.fixture()
def defended_folder(tmp_path, bundle):
    folder = tmp_path / "emodb-quantise"
    folder.mkdir()
    for f in ("model.safetensors", "README.md", "model.onnx"):  # the ONNX file is checked against the weights
        if (bundle.folder / f).is_file():
            shutil.copy(bundle.folder / f, folder / f)
    config = dict(bundle.config, name="emodb-quantise", defence=parse_defence("quantise:bits=8").to_config())
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_defended_bundle_loads_serves_and_its_defence_runs_before_onnx(defended_folder, bundle, monkeypatch):
    from ser_core.audio.features import clip_features
    from ser_core.models.bundle import ModelBundle
    from ser_core.serving import prediction
    d = ModelBundle.load(defended_folder)
    assert d.defence is not None and d.defence.name == "quantise"
    y = (0.2 * np.sin(np.arange(32000) / 7.0) * np.hanning(32000)).astype(np.float32)
    x = d.standardizer.transform(clip_features(d.defence(y), d.feature_config))
    served = d.predict_clip(y, 16000)
    assert np.allclose(served.chunk_probabilities, d.predict_features(x), atol=1e-6)  # ONNX on defended features
    assert not np.allclose(x, bundle.features(y))  # not the undefended input
    # the ONNX model the defended bundle serves matches its torch model (parity, as any bundle's)
    torch_probs = torch.softmax(d.torch_model()(torch.from_numpy(x)), 1).detach().numpy()
    assert np.abs(torch_probs - d.predict_features(x)).max() < 1e-3
    monkeypatch.setattr(prediction, "get_bundle", lambda name: d)
    wav = defended_folder / "clip.wav"
    import soundfile as sf
    sf.write(str(wav), y, 16000, subtype="PCM_16")
    out = prediction.predict(str(wav), "emodb-quantise")
    assert out["probabilities"] == pytest.approx(d.predict_clip(wav).probabilities)


def test_the_torch_path_sees_an_exact_defence_as_the_serving_path_applies_it(bundle, data_dir):
    from ser_core.attacks.waveform.base import ClipModel, from_pcm, to_pcm
    from ser_core.audio.chunkmap import chunk_index_map
    from ser_core.audio.decode import load_audio
    u = suite_clips(bundle, 1, data_dir=data_dir)[0]
    pcm = to_pcm(load_audio(u.path))
    b = with_defence(bundle, "lowpass:cutoff=3000", "through")
    served = b.predict_clip(from_pcm(pcm), 16000)
    index_map = chunk_index_map(b.defence(from_pcm(pcm)), bundle.feature_config)
    with torch.no_grad():
        lp = ClipModel(b, index_map)(torch.from_numpy(pcm).float()[None])[0].exp().numpy()
    assert np.abs(lp - [served.probabilities[l] for l in bundle.labels]).max() < 1e-2


def test_robustness_runs_resume_clip_by_clip(bundle, data_dir, tmp_path, monkeypatch):
    from ser_core.evaluation.robustness import run as run_module
    clips = suite_clips(bundle, 2, data_dir=data_dir)
    cfg = SuiteConfig(budgets=(L2_30,), members=("square",), square_queries=3)
    out = tmp_path / "suite.jsonl"
    first = run_suite(bundle, clips, cfg, out)
    assert [r["clip"] for r in first] == [u.name for u in clips]

    def refuse(*a, **k):
        raise AssertionError("a done clip was attacked again")
    monkeypatch.setattr(run_module, "attack_one", refuse)
    again = run_suite(bundle, clips, cfg, out)
    assert again == first and len(out.read_text().splitlines()) == 2
    # another defence or suite setting is another run: its clips are not done
    assert run_module.done_clips(out, bundle.name, bundle.config.get("weights_sha"), cfg.key(),
                                 run_module.variant_key(with_defence(bundle, "quantise"), "ignore", 1)) == set()


@pytest.mark.slow
def test_a_hard_quantiser_masks_gradients_and_bpda_catches_it(bundle, data_dir):
    """8-bit quantisation differentiated as implemented gives APGD no gradient: it never moves,
    and the clip looks robust. BPDA's straight-through gradient flips the same clip inside the
    same 40 dB ball (Square, 300 queries, does not flip this one even at 20 dB)."""
    from ser_core.attacks import get_attack
    from ser_core.audio.decode import load_audio
    y = load_audio(next((data_dir / "emodb" / "wav").glob("08a07Fd.*")))
    label = bundle.labels.index("happiness")
    outcome = {}
    for mode in ("through", "adaptive"):
        b = with_defence(bundle, "quantise:bits=8", mode)
        assert b.predict_clip(y, 16000).label == "happiness"
        r = get_attack("apgd", b, snr_db=40.0, loss="ce", steps=20)([y], Objective(np.array([label])))
        outcome[mode] = (bool(r.flipped[0]), r.extra["linf_16bit"][0])
    assert outcome["through"] == (False, 0)  # no gradient, no perturbation
    assert outcome["adaptive"][0]  # verified on the quantised serving path's decision of the WAV


@pytest.mark.slow
def test_the_suite_on_real_clips_is_at_most_each_member(bundle, data_dir, tmp_path):
    clips = suite_clips(bundle, 2, data_dir=data_dir)
    cfg = SuiteConfig(budgets=(L2_40, LINF_30), steps=10, targets=1, square_queries=20, cw_steps=5,
                      cw_binary_steps=1, every_member=True)
    rows = run_suite(bundle, clips, cfg, tmp_path / "suite.jsonl")
    s = summarise(rows, bundle.labels)
    for key, b in s["budgets"].items():
        assert set(b["member_accuracy"]) == {"apgd-ce", "apgd-t", "square", "cw"}
        assert all(b["robust_accuracy"] <= acc for acc in b["member_accuracy"].values())


def test_defend_input_writes_a_bundle_that_serves_behind_its_defence(tmp_path, bundle):
    from export.cli import main
    from ser_core.models.bundle import ModelBundle
    out = tmp_path / "emodb-lowpass"
    assert main(["defend-input", "--model", "emodb", "--defence", "lowpass:cutoff=3000", "--out", str(out)]) == 0
    d = ModelBundle.load(out)
    assert d.name == "emodb-lowpass" and d.defence.spec() == [{"name": "lowpass", "cutoff": 3000.0}]
    y = (0.2 * np.sin(np.arange(32000) * 0.9)).astype(np.float32)  # 2.3 kHz: passes the defence
    z = (0.2 * np.sin(np.arange(32000) * 2.5)).astype(np.float32)  # 6.4 kHz: removed by it
    defended = np.abs(d.features(y + z) - d.features(y)).mean()
    assert defended < 0.1 * np.abs(bundle.features(y + z) - bundle.features(y)).mean()


@pytest.mark.slow
def test_crossval_attacks_each_fold_bundle_on_the_speakers_it_never_heard(tmp_path, bundle, data_dir):
    from export.cli import main
    folds = tmp_path / "folds"
    fold = folds / "emodb-fold0"
    fold.mkdir(parents=True)
    for f in ("model.safetensors", "model.onnx"):
        if (bundle.folder / f).is_file():
            shutil.copy(bundle.folder / f, fold / f)
    (fold / "config.json").write_text(json.dumps(dict(bundle.config, name="emodb-fold0")))
    out = tmp_path / "out"
    assert main(["robustness", "--model", "emodb", "--crossval", str(folds), "--clips", "1", "--members", "square",
                 "--square-queries", "2", "--budgets", "l2@30", "--data-dir", str(data_dir), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "suite.jsonl").read_text().splitlines()]
    assert [r["model"] for r in rows] == ["emodb-fold0"]
    assert rows[0]["speaker"] not in bundle.config["split"]["speakers"]["train"]
    assert "Robust accuracy" in (out / "README.md").read_text()


def test_the_verdict_names_a_defence_that_only_holds_against_a_non_adaptive_attacker():
    from ser_core.evaluation.robustness.defences import verdict
    assert verdict((4, 16), (13, 16), (3, 16), (3, 16)) == "only looks robust"
    assert verdict((2, 16), (2, 16), (14, 16), (1, 16)) == "more robust than undefended"
    assert verdict((4, 16), (5, 16), (4, 16), (3, 16)) == "no gain shown"


def _untimed(row):
    """A result row without its timings (CPU and wall seconds differ between any two runs)."""
    if isinstance(row, dict):
        return {k: _untimed(v) for k, v in row.items() if k not in ("cpu_seconds", "seconds")}
    if isinstance(row, list):
        return [_untimed(v) for v in row]
    return row


def test_an_interrupted_robustness_run_resumes_to_the_rows_and_page_of_an_uninterrupted_one(bundle, data_dir, tmp_path):
    """As the grid: stopped after its first clip and run again, the run attacks only the rest and
    its results file and generated page (timings aside) are those of a run never stopped."""
    from ser_core.evaluation.robustness.page import render
    clips = suite_clips(bundle, 2, data_dir=data_dir)
    cfg = SuiteConfig(budgets=(L2_30,), members=("square",), square_queries=3)
    (tmp_path / "whole").mkdir()
    (tmp_path / "resumed").mkdir()
    whole = run_suite(bundle, clips, cfg, tmp_path / "whole" / "suite.jsonl")
    run_suite(bundle, clips[:1], cfg, tmp_path / "resumed" / "suite.jsonl")  # the interruption
    resumed = run_suite(bundle, clips, cfg, tmp_path / "resumed" / "suite.jsonl")
    assert _untimed(resumed) == _untimed(whole)
    lines = (tmp_path / "resumed" / "suite.jsonl").read_text().splitlines()
    assert [json.loads(line)["clip"] for line in lines] == [u.name for u in clips]  # each clip once

    def untimed_page(folder):  # the CPU-seconds column aside
        return [line.rsplit("|", 2)[0] for line in render(folder).splitlines()]
    assert untimed_page(tmp_path / "resumed") == untimed_page(tmp_path / "whole")


def test_a_bundle_reading_its_base_weights_round_trips_through_onnx_with_parity(bundle, tmp_path):
    """A defended bundle that stores no weights of its own (defend-input: `weights_from`) builds
    its own ONNX file from its base's weights, which passes the parity check against its torch
    model, and serves behind its defence."""
    from export.cli import main
    from ser_core.models.bundle import ModelBundle
    from ser_core.models.onnx_export import check_parity, make_session
    base = tmp_path / "emodb"
    base.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(bundle.folder / f, base / f)
    out = tmp_path / "emodb-noise"
    assert main(["defend-input", "--model", str(base), "--defence", "noise:sigma=0.002", "--out", str(out)]) == 0
    d = ModelBundle.load(out)
    path = d.onnx_path()
    assert path.parent == out and (out / "model.onnx").is_file()
    x = d.parity_features()
    parity = check_parity(d.torch_model(), make_session(path), x)
    assert parity["same_decisions"] and parity["max_abs_probability_difference"] < 1e-3
    y = (0.2 * np.sin(np.arange(32000) / 7.0) * np.hanning(32000)).astype(np.float32)
    a, b = d.predict_clip(y, 16000), d.predict_clip(y, 16000)
    assert a.probabilities == b.probabilities  # the noise is seeded by the clip
    assert not np.allclose(d.features(y), bundle.features(y))  # and applied before the features
