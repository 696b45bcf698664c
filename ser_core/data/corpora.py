"""Corpus readers: a folder of EmoDB, EMOVO or RAVDESS speech files -> `Utterance` records.

Both the original `.wav` layout and the 16 kHz `.flac` copies are read; the label comes from
the file name only (conventions in PAPER.md). A name that does not follow the convention is
reported in `Corpus.skipped` with the reason and left out: never guessed."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from ser_core.errors import CorpusError

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".flac"}


@dataclass(frozen=True)
class Utterance:
    path: Path
    corpus: str
    emotion: str
    speaker: str
    gender: str  # "male" | "female"
    language: str
    sentence: str

    @property
    def name(self) -> str:
        return self.path.stem


@dataclass
class CorpusSpec:
    name: str
    language: str
    paper_classes: tuple[str, ...]  # the study's five, in the study's order
    all_classes: tuple[str, ...]
    pattern: re.Pattern
    codes: dict[str, str]  # emotion code in the file name -> emotion name
    title: str = ""  # as reports and cards print it: EmoDB, EMOVO, RAVDESS

    def parse(self, path: Path) -> Utterance | str:
        """An Utterance, or the reason the name is not one."""
        m = self.pattern.fullmatch(path.stem)
        if not m:
            return f"name does not match the {self.name} convention {self.pattern.pattern}"
        g = m.groupdict()
        if g["emotion"] not in self.codes:
            return f"unknown emotion code {g['emotion']!r}"
        speaker, gender, sentence = self._speaker_gender_sentence(g)
        if gender is None:
            return f"unknown speaker {g.get('speaker')!r}"
        return Utterance(path=path, corpus=self.name, emotion=self.codes[g["emotion"]],
                         speaker=speaker, gender=gender, language=self.language, sentence=sentence)

    def _speaker_gender_sentence(self, g):
        raise NotImplementedError


class _EmoDB(CorpusSpec):
    MALE = {"03", "10", "11", "12", "15"}
    FEMALE = {"08", "09", "13", "14", "16"}

    def _speaker_gender_sentence(self, g):
        s = g["speaker"]
        gender = "male" if s in self.MALE else "female" if s in self.FEMALE else None
        return s, gender, g["text"]


class _EMOVO(CorpusSpec):
    def _speaker_gender_sentence(self, g):
        s = g["speaker"]
        return s, "male" if s[0] == "m" else "female", g["sentence"]


class _RAVDESS(CorpusSpec):
    def _speaker_gender_sentence(self, g):
        actor = int(g["speaker"])
        if not 1 <= actor <= 24:
            return g["speaker"], None, ""
        return f"{actor:02d}", "male" if actor % 2 else "female", g["statement"]


EMODB = _EmoDB(
    name="emodb", title="EmoDB", language="German",
    paper_classes=("boredom", "disgust", "happiness", "sadness", "neutral"),
    all_classes=("anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"),
    pattern=re.compile(r"(?P<speaker>\d\d)(?P<text>[ab]\d\d)(?P<emotion>[WLEAFTN])(?P<version>[a-z])"),
    codes={"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness",
           "T": "sadness", "N": "neutral"},
)
EMOVO = _EMOVO(
    name="emovo", title="EMOVO", language="Italian",
    paper_classes=("disgust", "happiness", "neutral", "fear", "surprise"),
    all_classes=("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"),
    pattern=re.compile(r"(?P<emotion>[a-z]{3})-(?P<speaker>[fm][123])-(?P<sentence>[a-z]\d)"),
    codes={"dis": "disgust", "gio": "happiness", "neu": "neutral", "pau": "fear",
           "rab": "anger", "sor": "surprise", "tri": "sadness"},
)
RAVDESS = _RAVDESS(
    name="ravdess", title="RAVDESS", language="English",
    paper_classes=("happiness", "sadness", "fear", "disgust", "surprise"),
    all_classes=("neutral", "calm", "happiness", "sadness", "anger", "fear", "disgust", "surprise"),
    # modality 03 = audio only, vocal channel 01 = speech
    pattern=re.compile(r"03-01-(?P<emotion>0[1-8])-(?P<intensity>0[12])-(?P<statement>0[12])"
                       r"-(?P<repetition>0[12])-(?P<speaker>\d\d)"),
    codes={"01": "neutral", "02": "calm", "03": "happiness", "04": "sadness", "05": "anger",
           "06": "fear", "07": "disgust", "08": "surprise"},
)

# The one list of corpora (name -> spec), in the study's order; everything else derives from it.
CORPORA: dict[str, CorpusSpec] = {c.name: c for c in (EMODB, EMOVO, RAVDESS)}


def corpus_spec(name: str) -> CorpusSpec:
    try:
        return CORPORA[name]
    except KeyError:
        raise CorpusError(f"unknown corpus {name!r} (accepted: {', '.join(CORPORA)})") from None


@dataclass
class Corpus:
    spec: CorpusSpec
    root: Path
    classes: tuple[str, ...]
    utterances: list[Utterance]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    def label_index(self, utt: Utterance) -> int:
        return self.classes.index(utt.emotion)


def read_corpus(name: str, root, classes: str | tuple[str, ...] = "paper") -> Corpus:
    """Every speech file under `root` (recursively) of corpus `name`, sorted by path.

    classes: "paper" (the study's five), "all", or an explicit tuple of emotion names."""
    spec = corpus_spec(name)
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: corpus folder does not exist (expected a folder of "
                          f"{spec.name} .wav or .flac files)")
    if classes == "paper":
        classes = spec.paper_classes
    elif classes == "all":
        classes = spec.all_classes
    else:
        unknown = set(classes) - set(spec.all_classes)
        if unknown:
            raise CorpusError(f"{spec.name} has no classes {sorted(unknown)} "
                              f"(accepted: {', '.join(spec.all_classes)})")
        classes = tuple(classes)
    utterances, skipped = [], []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        parsed = spec.parse(path)
        if isinstance(parsed, str):
            skipped.append((path, parsed))
            log.warning("skipping %s: %s", path, parsed)
        elif parsed.emotion in classes:
            utterances.append(parsed)
    if not utterances:
        raise CorpusError(f"{root}: no {spec.name} files of classes {list(classes)} found "
                          f"(expected .wav or .flac files named like the {spec.name} corpus)")
    return Corpus(spec=spec, root=root, classes=classes, utterances=utterances, skipped=skipped)


# What a model card must say about the data it was trained on (../shared/data/README.md).
DATA_LICENCES = {
    "emodb": {"licence": "published for public research use; no explicit licence text",
              "citation": "Burkhardt, Paeschke, Rolfes, Sendlmeier, Weiss, \"A Database of German "
                          "Emotional Speech\", Interspeech 2005"},
    "emovo": {"licence": "distributed on request for research; no explicit licence text",
              "citation": "Costantini, Iaderola, Paoloni, Todisco, \"EMOVO Corpus: an Italian "
                          "Emotional Speech Database\", LREC 2014"},
    "ravdess": {"licence": "CC BY-NC-SA 4.0 (a model trained on it is for non-commercial use and "
                           "shares alike)",
                "citation": "Livingstone & Russo (2018), The Ryerson Audio-Visual Database of "
                            "Emotional Speech and Song (RAVDESS), PLoS ONE 13(5): e0196391"},
}
