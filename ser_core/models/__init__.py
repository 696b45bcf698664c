"""The model and its packaging:

  cnn_lstm.py     the study's CNN-LSTM (standardised log-Mel -> logits)
  fast.py         the gradient model: the eval-mode CNN-LSTM rewritten exactly for fast input
                  gradients (what the white-box attacks differentiate)
  bundle.py       ModelBundle: weights, labels, feature config, standardiser, ONNX session; predict
                  a clip, hand out the torch model; load by name, folder or hf:// repo
  weights.py      how the weights are stored (float32, float16, int8 with row scales)
  onnx_export.py  the torch model -> ONNX, checked for parity
  card.py         the model card (README.md) of a bundle: data, licence, measured figures"""
