"""The study's reference numbers (Facchinetti et al. 2024, ../shared/PAPER.md): its clean
accuracy, its table "Accuracy under attack", its defended models' figures and its compute, and
how a grid setting is matched to a row of its table."""
from __future__ import annotations

import math

from ser_core.evaluation.report.common import fmt

STUDY_GPU_HOURS = 16

# The study's clean accuracy and its table "Accuracy under attack" (paper split; all / male /
# female). Each row: label, attack name in our registry, which setting (parameter-name fragment
# -> value; None = every setting pooled, as the study's "any eps"), {corpus: (all, male, female)}.
STUDY_CLEAN = {"emodb": (.909, .895, .918), "emovo": (.872, .893, .852), "ravdess": (.911, .911, .911)}
STUDY_TABLE = [
    ("FGSM 0.25", "fgsm", {"eps": 0.25}, {"emodb": (.171, .114, .205), "emovo": (.073, .061, .084), "ravdess": (.146, .127, .164)}),
    ("FGSM 1.25", "fgsm", {"eps": 1.25}, {"emodb": (.109, .089, .121), "emovo": (.081, .076, .086), "ravdess": (.198, .188, .209)}),
    ("BIM (any eps)", "bim", None, {"emodb": (.067, .070, .065), "emovo": (.076, .064, .088), "ravdess": (.059, .057, .060)}),
    ("DeepFool 5 it", "deepfool", {"iter": 5}, {"emodb": (.061, .070, .056), "emovo": (.086, .068, .104), "ravdess": (.052, .056, .049)}),
    ("JSMA theta 1", "jsma", {"theta": 1.0}, {"emodb": (.013, .019, .010), "emovo": (.022, .020, .024), "ravdess": (.017, .016, .019)}),
    ("CW-L2", "cw_l2", None, {"emodb": (.188, .127, .224), "emovo": (.092, .076, .108), "ravdess": (.124, .122, .126)}),
    ("CW-Linf", "cw_linf", None, {"emodb": (.069, .076, .065), "emovo": (.085, .068, .102), "ravdess": (.060, .058, .063)}),
    ("Pixel th 10", "pixel", {"th": 10}, {"emodb": (.547, .454, .603), "emovo": (.364, .389, .339), "ravdess": (.322, .225, .419)}),
    ("Boundary", "boundary", None, {"emodb": (.045, .057, .038), "emovo": (.076, .070, .082), "ravdess": (.204, .202, .205)}),
]


def matches(setting: dict, want: dict | None) -> bool:
    """Does a grid setting match the study's row? Keys are matched by fragment ("iter" matches
    "max_iter"), so the table survives an attack naming its parameter differently."""
    if want is None:
        return True
    for frag, value in want.items():
        hit = [k for k, v in setting.items() if frag in k.lower() and isinstance(v, (int, float))
               and math.isclose(float(v), float(value), rel_tol=1e-6)]
        if not hit:
            return False
    return True


# The study's defended models (PAPER.md "Defence the authors tried": FGSM adversarial training,
# eps 1.25, 60 % adversarial, 30 epochs, lr 1e-4, batch 128): the range over its three corpora,
# (low, high), per row of STUDY_TABLE it reported; clean accuracy 0.90-0.92.
STUDY_DEFENCE_CLEAN = (.90, .92)
STUDY_DEFENCE = {"FGSM 1.25": (.68, .89), "BIM (any eps)": (.06, .06), "DeepFool 5 it": (.05, .06),
                 "JSMA theta 1": (.02, .04), "CW-Linf": (.06, .06), "Pixel th 10": (.32, .56),
                 "Boundary": (.03, .20)}


def study_defence(attack: str, setting: dict) -> str:
    """The study's defended figure for this attack setting, as a range over its corpora."""
    for label, name, want, _ in STUDY_TABLE:
        if name == attack and matches(setting, want) and label in STUDY_DEFENCE:
            lo, hi = STUDY_DEFENCE[label]
            return fmt(lo, 2) if lo == hi else f"{fmt(lo, 2)}-{fmt(hi, 2)}"
    return "not reported"
