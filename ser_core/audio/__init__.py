"""From a file to the model's input: decode, chunks, log-Mel (numpy and differentiable torch), standardise, augment, is it speech."""
