"""The study's CNN-LSTM, the model bundle (weights, labels, standardiser, ONNX session), ONNX export, model cards."""
