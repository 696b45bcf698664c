"""Speech emotion recognition under adversarial attack, one package a stage. Data flows down the
page; imports point down only (a package uses those listed below it, never one above).

  serving/     what the app (app.py) and its API call: catalogue, limits, prediction, attack, files
  evaluation/  the study's systematic evaluation as a grid: plan and costs, cells, executors, run,
               report (tables and plots beside the study's numbers)
  training/    the study's recipe, our recipes, pre-training, speaker cross-validation, shipping,
               the eGeMAPS + SVM baseline, adversarial training
  attacks/     every attack, one call: `get_attack(name, bundle, **params)(inputs, objective)`;
               features/ (the study's, on log-Mel), waveform/ (on audio, verified on the WAV),
               clip.py (one audio clip, any attack)
  models/      the CNN-LSTM (cnn_lstm), the bundle (weights, labels, standardiser, ONNX session),
               ONNX export, model cards
  data/        corpus folders -> utterances -> chunk tables -> splits, speaker folds, held-out sets
  audio/       file -> clip (decode) -> 3 s chunks -> log-Mel (features; frontend in torch) ->
               standardised; augmentation; is it speech
  stats.py     accuracy, UAR, F1, Wilson and bootstrap intervals
  tasks.py     a local or Ray map of independent tasks (folds, grid batches)
  config.py    the study's constants; errors.py typed errors; control.py cooperative stop
Each package's __init__ lists its modules."""
