"""How a bundle stores its CNN-LSTM weights (model.safetensors): float32, float16, or int8 with a
scale per output row (4.26 MB for the 3.96 M parameters), and the model as it is after that
round trip, so that the metrics a card reports are those of the shipped weights."""
from __future__ import annotations

import torch

from ser_core.models.cnn_lstm import CNNLSTM

WEIGHT_DTYPES = ("float32", "float16", "int8")


def pack_weights(state: dict, dtype: str) -> dict[str, torch.Tensor]:
    """The state dict as stored: float32, float16, or int8 with one float32 scale per row
    (`<name>.scale`) for tensors of two or more dimensions; integer buffers are left out."""
    out = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if not v.is_floating_point():
            continue  # BatchNorm's num_batches_tracked
        if dtype == "float16":
            out[k] = v.half()
        elif dtype == "int8" and v.ndim >= 2:
            rows = v.reshape(v.shape[0], -1).float()
            scale = rows.abs().amax(1).clamp_min(1e-12) / 127.0
            out[k] = torch.round(rows / scale[:, None]).to(torch.int8).reshape(v.shape)
            out[k + ".scale"] = scale
        else:
            out[k] = v.float()
    return out


def unpack_weights(tensors: dict) -> dict[str, torch.Tensor]:
    """The float32 state dict back from stored tensors (the standardiser's entries skipped)."""
    out = {}
    for k, v in tensors.items():
        if k.endswith(".scale") or k.startswith("standardizer."):
            continue
        if v.dtype == torch.int8:
            scale = tensors[k + ".scale"]
            v = (v.reshape(v.shape[0], -1).float() * scale[:, None]).reshape(v.shape)
        out[k] = v.float()
    return out


def quantize_roundtrip(model: CNNLSTM, dtype: str) -> CNNLSTM:
    """The model as it will be after saving with `dtype` (so reported metrics are the shipped ones)."""
    q = unpack_weights(pack_weights(model.state_dict(), dtype))
    model.load_state_dict(q, strict=False)
    return model
