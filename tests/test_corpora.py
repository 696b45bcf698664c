"""Corpus readers: names -> emotion, speaker, gender, language, sentence; odd names reported."""
import numpy as np
import pytest

from ser_core.data.corpora import read_corpus
from ser_core.errors import CorpusError
from tests.helpers import voiced, write


@pytest.fixture
def tiny_corpora(tmp_path):
    y = voiced(1.0)
    for name in ["03a01Fa.wav", "08b02Lb.flac", "10a05Wc.wav", "notes.wav", "16a01Xa.wav"]:
        write(tmp_path / "emodb" / name, y)
    for name in ["f1/dis-f1-b1.wav", "m2/gio-m2-n3.flac", "m2/rab-m2-n3.wav", "m2/xyz-m2-n3.wav"]:
        write(tmp_path / "emovo" / name, y)
    for name in ["Actor_01/03-01-03-01-01-01-01.wav", "Actor_02/03-01-08-02-02-02-02.flac",
                 "Actor_02/03-01-02-01-01-01-02.wav", "Actor_02/03-02-03-01-01-01-02.wav"]:
        write(tmp_path / "ravdess" / name, y)
    (tmp_path / "emodb" / "metadata.csv").write_text("not audio")
    return tmp_path


def test_emodb_names_parse_to_the_paper_classes(tiny_corpora):
    c = read_corpus("emodb", tiny_corpora / "emodb")
    assert [(u.emotion, u.speaker, u.gender, u.sentence) for u in c.utterances] == [
        ("happiness", "03", "male", "a01"), ("boredom", "08", "female", "b02")]
    assert {u.language for u in c.utterances} == {"German"}
    # anger is not one of the study's five; notes.wav and the unknown letter X are reported
    assert sorted(p.name for p, _ in c.skipped) == ["16a01Xa.wav", "notes.wav"]
    assert read_corpus("emodb", tiny_corpora / "emodb", "all").utterances[-1].emotion == "anger"


def test_emovo_and_ravdess_read_wav_and_flac_alike(tiny_corpora):
    e = read_corpus("emovo", tiny_corpora / "emovo")
    assert [(u.emotion, u.speaker, u.gender) for u in e.utterances] == [
        ("disgust", "f1", "female"), ("happiness", "m2", "male")]
    assert len(e.skipped) == 1
    r = read_corpus("ravdess", tiny_corpora / "ravdess", "all")
    assert [(u.emotion, u.speaker, u.gender, u.path.suffix) for u in r.utterances] == [
        ("happiness", "01", "male", ".wav"), ("calm", "02", "female", ".wav"),
        ("surprise", "02", "female", ".flac")]
    # song (vocal channel 02) is not RAVDESS speech: reported, not guessed
    assert [p.name for p, _ in r.skipped] == ["03-02-03-01-01-01-02.wav"]


def test_bad_corpus_requests_raise_typed_errors(tiny_corpora):
    with pytest.raises(CorpusError, match="unknown corpus"):
        read_corpus("iemocap", tiny_corpora)
    with pytest.raises(CorpusError, match="does not exist"):
        read_corpus("emodb", tiny_corpora / "missing")
    with pytest.raises(CorpusError, match="no classes"):
        read_corpus("emodb", tiny_corpora / "emodb", ("joy",))


@pytest.mark.parametrize("corpus,clips,all_clips,speakers,male,female", [
    ("emodb", 339, 535, 10, 137, 202), ("emovo", 420, 588, 6, 210, 210),
    ("ravdess", 960, 1440, 24, 480, 480)])
def test_real_corpora_counts(data_dir, corpus, clips, all_clips, speakers, male, female):
    c = read_corpus(corpus, data_dir / corpus)
    assert len(c.utterances) == clips and not c.skipped
    assert len(read_corpus(corpus, data_dir / corpus, "all").utterances) == all_clips
    assert len({u.speaker for u in c.utterances}) == speakers
    genders = [u.gender for u in c.utterances]
    assert (genders.count("male"), genders.count("female")) == (male, female)
    counts = np.unique([u.emotion for u in c.utterances], return_counts=True)
    assert set(counts[0]) == set(c.spec.paper_classes)


def test_one_list_of_corpora_names_every_corpus_everywhere():
    """ser_core.data.corpora.CORPORA is the one list: pre-training's other corpora, train-defaults'
    corpora and the commands' --corpus choices derive from it, and pre-training's outputs cover
    every emotion of every corpus."""
    from export import defaults
    from export.cli import build_parser
    from ser_core.data.corpora import CORPORA
    from ser_core.training.pretrain import EMOTIONS, other_corpora
    assert list(CORPORA) == ["emodb", "emovo", "ravdess"]
    assert [s.title for s in CORPORA.values()] == ["EmoDB", "EMOVO", "RAVDESS"]
    assert other_corpora("emovo") == ["emodb", "ravdess"] and defaults.CORPORA is CORPORA
    assert set(EMOTIONS) == {e for s in CORPORA.values() for e in s.all_classes}
    for command in (["stats"], ["train", "--out", "x"], ["crossval"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*command, "--corpus", "iemocap", "--data-dir", "x"])
        assert build_parser().parse_args([*command, "--corpus", "ravdess", "--data-dir", "x"]).corpus == "ravdess"
