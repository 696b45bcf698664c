"""The study's attacks on standardised log-Mel features (Facchinetti et al. 2024, via ART), one
file each; every module here registers its attack on import.

  base.py                 FeatureAttack: batching, clipping, counted ONNX queries (QueryCounter),
                          C&W's tanh change of variables (TanhSpace)
  fgsm.py                 "fgsm"     FGSM, white-box, fixed budget (Linf), targeted mode
  bim.py                  "bim"      BIM, white-box, fixed budget (Linf), targeted mode
  deepfool.py             "deepfool" DeepFool, white-box, minimisation (L2), untargeted only
  jsma.py                 "jsma"     JSMA, white-box, minimisation (L0)
  carlini_wagner_l2.py    "cw_l2"    C&W L2, white-box, minimisation
  carlini_wagner_linf.py  "cw_linf"  C&W Linf, white-box, minimisation
  boundary.py             "boundary" Boundary attack, black-box, minimisation (L2)
  pixel.py                "pixel"    Pixel attack (differential evolution), black-box, fixed budget (L0)
  blockwise.py            BlockScorer: the ONNX graph in two parts, so that a candidate changed in
                          a few time blocks re-runs the CNN on those only (Pixel's queries)"""
import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
