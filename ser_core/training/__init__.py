"""Training: the study's recipe, our recipes, pre-training, speaker cross-validation, shipping, the eGeMAPS baseline, adversarial training.

  recipes.py          our named recipes (each a parent plus the fields it changes), their first
                      names as aliases, the default and the shipped ones (TrainConfig: ser_core/config.py)
  study.py            the study's training loop and its bundles (the "paper" protocol)
  loop.py             our training loop: augmentation, AdamW, selection on UAR, weight averaging
  pretrain.py         pre-training on the other corpora; their clips for co-training
  crossval.py         speaker-fold cross-validation of a recipe (local or one Ray task per fold)
  crossval_report.py  reports/crossval/README.md from the results
  baseline.py         chance, majority class and eGeMAPS + SVM on the same folds
  ship.py             a shipped speaker-protocol bundle trained with a recipe
  multicorpus.py      one model of every emotion over all corpora: labels, loss mask, folds, training
  multicorpus_run.py  its protocols (pooled speaker folds, leave one corpus out), baseline, test-time shifts
  multicorpus_ship.py its shipped bundle (models/any) with the training range of length and loudness
  multicorpus_report.py  reports/multicorpus/README.md from the results
  adversarial.py      adversarial training (FGSM, PGD; waveform PGD-AT, TRADES) of a trained bundle
  waveform_adversarial.py  its waveform domain: training chunks, the SNR ball, PGD / TRADES
                      crafting through the differentiable front-end, frozen layers"""
