"""The transfer matrix (ser_core/evaluation/transfer.py): its diagonal is the white-box flip rate
on the same clips, the ensemble source averages its members' own margins, entries conditioned on
the source's flip count only those clips, and the SVM target never trains on held-out speakers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_app_api import REPO

CLIPS = ["ravdess-happiness-actor02f.wav", "ravdess-disgust-actor02f.wav", "ravdess-fear-actor01m.wav"]


def _clips():
    from ser_core.audio.decode import load_audio
    return [{"id": f"examples/{n}", "corpus": "emodb", "speaker": "x", "emotion": "x",
             "audio": load_audio(REPO / "examples" / n, 16_000)} for n in CLIPS]


def test_the_diagonal_is_the_white_box_flip_rate_on_the_same_clips(bundle):
    from ser_core.attacks import get_attack
    from ser_core.attacks.waveform.base import from_pcm, to_pcm
    from ser_core.evaluation.transfer import Targets, attack_row, matrix
    targets = Targets([bundle.name], corpora=(), bundles={bundle.name: bundle})
    clips = _clips()
    rows = []
    for c in clips:
        clean = targets.decide(from_pcm(to_pcm(c["audio"])), c["corpus"])
        rows.append(attack_row(bundle.name, c, 40.0, targets, clean, steps=5))
    white_box = get_attack("apgd", bundle, snr_db=40.0, steps=5, shrink=0)([c["audio"] for c in clips])
    entry = matrix(rows, 40.0)[(bundle.name, bundle.name)]
    assert entry["changed"]["k"] == int(white_box.flipped.sum()) and entry["changed"]["n"] == len(clips)
    assert entry["changed_given_source_flip"]["k"] == entry["changed_given_source_flip"]["n"]  # all of them
    assert [r["written_snr_db"] >= 40.0 for r in rows] == [True] * len(clips)


def test_an_ensemble_of_one_is_the_models_own_clip_model(bundle):
    from ser_core.attacks.waveform.base import ClipModel, to_pcm
    from ser_core.audio.chunkmap import chunk_index_map
    from ser_core.evaluation.transfer import EnsembleClipModel
    y = _clips()[0]["audio"]
    pcm = to_pcm(y)
    x = torch.from_numpy(pcm).float()[None]
    one = EnsembleClipModel([bundle], pcm)
    ref = ClipModel(bundle, chunk_index_map(y, bundle.feature_config))
    assert torch.allclose(one(x), ref(x), atol=1e-5)
    assert one.labels.tolist() == [bundle.labels.index(bundle.predict_clip(y, 16_000).label)]


def test_members_with_fewer_classes_are_padded_and_keep_their_own_clean_decision(bundle):
    from ser_core.attacks.objective import Objective
    from ser_core.attacks.waveform.base import to_pcm
    from ser_core.evaluation.transfer import PAD, EnsembleClipModel
    from ser_core.models.bundle import ModelBundle
    wide = ModelBundle.load("any")  # eight classes beside five
    y = _clips()[1]["audio"]
    pcm = to_pcm(y)
    m = EnsembleClipModel([bundle, wide], pcm)
    lp = m(torch.from_numpy(pcm).float()[None])
    assert lp.shape == (2, len(wide.labels))
    assert torch.all(lp[0, len(bundle.labels):] == PAD)
    rows = m.objective_for(Objective(np.array([0])))
    assert rows.labels.tolist() == [bundle.labels.index(bundle.predict_clip(y, 16_000).label),
                                    wide.labels.index(wide.predict_clip(y, 16_000).label)]
    assert (rows.margin(lp.detach()) > 0).all()  # the clean clip: every member still on its decision


def test_conditioned_entries_count_only_the_clips_the_source_flipped():
    from ser_core.evaluation.transfer import matrix
    rows = [{"source": "a", "snr_db": 20.0, "corpus": "emodb", "source_flipped": f,
             "clean": {"a": "x", "b": "x"}, "adversarial": {"a": "y" if f else "x", "b": b}}
            for f, b in [(True, "y"), (True, "x"), (False, "y"), (False, "x")]]
    m = matrix(rows, 20.0)
    assert (m[("a", "b")]["changed"]["k"], m[("a", "b")]["changed"]["n"]) == (2, 4)
    assert (m[("a", "b")]["changed_given_source_flip"]["k"], m[("a", "b")]["changed_given_source_flip"]["n"]) == (1, 2)
    assert m[("a", "a")]["changed"]["k"] == 2 and matrix(rows, 30.0) == {}


def test_the_svm_target_trains_on_the_training_speakers_only(bundle, data_dir):
    from ser_core.data.corpora import read_corpus
    from ser_core.evaluation.transfer import SvmTarget
    svm = SvmTarget(bundle.config["corpus"], data_dir)
    train = set(bundle.config["split"]["speakers"]["train"])
    held_out = set(bundle.config["split"]["speakers"].get("held_out") or [])
    c = read_corpus(bundle.config["corpus"], data_dir / bundle.config["corpus"])
    assert svm.n_train == sum(u.speaker in train and u.emotion in bundle.labels for u in c.utterances)
    assert not held_out & set(svm.speakers) and svm.labels == list(bundle.labels)
    assert svm.decide(_clips()[0]["audio"]) in bundle.labels


def test_the_command_line_reads_its_options():
    from export.cli import build_parser
    a = build_parser().parse_args(["transfer", "run", "--clips", "8", "--snr", "20", "--confidence", "5",
                                   "--sources", "emodb", "ensemble"])
    assert (a.clips, a.snr, a.confidence, a.sources) == (8, [20.0], 5.0, ["emodb", "ensemble"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["transfer", "run", "--sources", "nope"])


def test_the_noise_control_is_seeded_at_the_snr_and_only_over_the_speech():
    from ser_core.attacks.universal import speech_span
    from ser_core.attacks.waveform.base import from_pcm, snr_db, to_pcm
    from ser_core.evaluation.transfer import noise_clip
    y = from_pcm(to_pcm(_clips()[2]["audio"]))
    a, b = speech_span(y)
    n1, n2, other = noise_clip(y, 20.0, "k"), noise_clip(y, 20.0, "k"), noise_clip(y, 20.0, "j")
    assert np.array_equal(n1, n2) and not np.array_equal(n1, other)
    assert snr_db(y, n1) == pytest.approx(20.0, abs=0.05)
    assert np.array_equal(n1[:a], y[:a]) and np.array_equal(n1[b:], y[b:])


def test_the_defended_bundles_are_sources_and_targets_but_never_ensemble_members():
    from export.cli import build_parser
    from ser_core.evaluation.transfer import DEFENDED, MODELS, SVM, ensemble_members
    from ser_core.models.bundle import ModelBundle
    a = build_parser().parse_args(["transfer", "run", "--sources", "emodb-pgd-wave", "emodb-trades-wave",
                                   "--targets", *DEFENDED, "--bundle", "any=/x/any"])
    assert a.sources == ["emodb-pgd-wave", "emodb-trades-wave"] and a.targets == list(DEFENDED)
    assert a.bundle == ["any=/x/any"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["transfer", "run", "--sources", "emodb-resample"])  # an input defence: target only
    assert {ModelBundle.load(n).config["corpus"] for n in DEFENDED} == {"emodb"}
    pool = {n: n for n in MODELS + DEFENDED}
    assert ensemble_members("emodb", pool) == [n for n in MODELS if n != "emodb"] and SVM not in pool


def test_a_row_lacking_a_target_is_scored_for_it_only_where_the_rerun_reproduces_it():
    from ser_core.evaluation.transfer import matrix, rescore
    row = {"source": "a", "snr_db": 20.0, "corpus": "emodb", "source_flipped": True, "targets": ["a", "b"],
           "clean": {"a": "x", "b": "x"}, "adversarial": {"a": "y", "b": "x"}}
    fresh = dict(row, clean=dict(row["clean"], d="x"), adversarial=dict(row["adversarial"], d="y"), cpu_seconds=0.1)
    same = rescore(row, fresh, ["d"])
    assert same["adversarial"]["d"] == "y" and same["targets"] == ["a", "b", "d"] and "d" not in row["adversarial"]
    assert same["rescored"][0]["reproduced"] is True
    drifted = dict(fresh, adversarial=dict(fresh["adversarial"], b="y"))  # another WAV: b now changes
    kept = rescore(row, drifted, ["d"])
    assert "d" not in kept["adversarial"] and kept["rescored"][0]["reproduced"] is False
    m = matrix([same, kept], 20.0)
    assert (m[("a", "d")]["changed"]["k"], m[("a", "d")]["changed"]["n"]) == (1, 1)
    assert m[("a", "b")]["changed"]["n"] == 2
