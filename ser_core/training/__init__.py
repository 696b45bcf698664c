"""Training: the study's recipe, our recipes, pre-training, speaker cross-validation, shipping, the eGeMAPS baseline, adversarial training."""
