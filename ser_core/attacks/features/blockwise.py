"""Black-box scoring of candidates that differ from their clean example in a few time blocks:
the bundle's own ONNX graph run in two parts, the clean blocks' part reused.

The study's model cuts its 261 x 128 input into 9 blocks of 29 frames and runs one CNN on each
block before the LSTM (ser_core/models/cnn_lstm.py). A Pixel candidate changes th cells, so at
most th of its 9 blocks differ from the clean example; the CNN, about three quarters of ONNX
Runtime's time for this model, need only run on those. `BlockScorer` splits model.onnx at the
block input (the Reshape of `features` into blocks) and at the LSTM's input (the blocks' CNN
outputs, reshaped), runs the CNN once on every clean block and, for each candidate, on its
changed blocks only, then the rest of the graph on the assembled CNN outputs. Same graph, same
kernels, same inputs to every node: the probabilities equal the whole graph's bit for bit
(tests/test_attacks_blackbox.py, on real chunks and Pixel runs).

It applies where the blocks are the graph input itself (the study's models, `input_norm`
"none"): a model that first normalises over the whole chunk (our speaker recipes' "global" or
"utterance" norm) changes every block when one cell changes, and `for_bundle` returns None.
Only ONNX Runtime is used (no torch): the attack stays black-box, and its queries are counted by
`QueryCounter` per candidate exactly as before."""
from __future__ import annotations

import threading
import weakref

import numpy as np

_scorers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


class BlockScorer:
    """(CNN session on blocks, head session on the CNN outputs) of one bundle's model.onnx."""

    def __init__(self, cnn, head, blocks_in: str, cnn_out: str, head_in: str, n_blocks: int):
        self.cnn, self.head = cnn, head
        self.blocks_in, self.cnn_out, self.head_in, self.n_blocks = blocks_in, cnn_out, head_in, n_blocks

    @classmethod
    def for_bundle(cls, bundle) -> "BlockScorer | None":
        """The bundle's scorer (built once, with its session's threads), or None when the graph
        does not feed the input straight into its blocks."""
        with _lock:
            key = (bundle.onnx_threads, tuple(bundle.onnx_session().get_providers()))
            got = _scorers.get(bundle)
            if got is None or got[0] != key:
                got = (key, cls._build(bundle))
                _scorers[bundle] = got
            return got[1]

    @classmethod
    def _build(cls, bundle) -> "BlockScorer | None":
        import onnx
        import onnxruntime as ort
        from onnx import numpy_helper
        from onnx.utils import Extractor
        model = onnx.load(str(bundle.onnx_path()))
        nodes = list(model.graph.node)
        feeds = [n for n in nodes if n.op_type == "Reshape" and n.input[0] == "features"]
        convs = [n for n in nodes if n.op_type == "Conv"]
        lstm = [n for n in nodes if n.op_type == "LSTM"]
        flat = [n for n in nodes if n.op_type == "Flatten"]
        if len(feeds) != 1 or not convs or convs[0].input[0] != feeds[0].output[0] or len(lstm) != 1 or len(flat) != 1:
            return None  # a normalisation (or anything else) between the input and the blocks
        blocks_in, cnn_out = feeds[0].output[0], flat[0].output[0]
        head = [n for n in nodes if n.op_type == "Reshape" and n.input[0] == cnn_out]
        if len(head) != 1:
            return None
        # frames per block: the third entry of the Concat that builds the blocks' shape (chunks x
        # blocks, 1, frames, bands), a constant in the exported graph
        consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in nodes if n.op_type == "Constant"}
        concat = next((n for n in nodes if n.op_type == "Concat" and n.output[0] == feeds[0].input[1]), None)
        block_frames = None if concat is None or len(concat.input) != 4 else consts.get(concat.input[2])
        frames = bundle.feature_config.input_shape[0]
        if block_frames is None or frames % int(np.ravel(block_frames)[0]):
            return None
        ex = Extractor(onnx.shape_inference.infer_shapes(model))
        opts = ort.SessionOptions()
        if bundle.onnx_threads is not None:  # as make_session: a fixed pool that does not spin
            opts.intra_op_num_threads = bundle.onnx_threads
            opts.inter_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = bundle.onnx_session().get_providers()

        def session(m):
            return ort.InferenceSession(m.SerializeToString(), opts, providers=providers)
        n_blocks = frames // int(np.ravel(block_frames)[0])
        return cls(session(ex.extract_model([blocks_in], [cnn_out])),
                   session(ex.extract_model([head[0].output[0]], ["probabilities"])),
                   blocks_in, cnn_out, head[0].output[0], n_blocks)

    def clean(self, x: np.ndarray) -> np.ndarray:
        """(n, 261, 128) clean examples -> (n, blocks, features) CNN outputs of their blocks."""
        n = len(x)
        return self._cnn(x.reshape(n * self.n_blocks, 1, -1, x.shape[-1])).reshape(n, self.n_blocks, -1)

    def __call__(self, cand: np.ndarray, owners: np.ndarray, x: np.ndarray, base: np.ndarray) -> np.ndarray:
        """Probabilities of candidates cand (m, 261, 128), cand[i] a changed copy of x[owners[i]],
        whose blocks' CNN outputs are base[owners[i]] (`clean`)."""
        m = len(cand)
        cb = cand.reshape(m, self.n_blocks, -1)
        changed = (cb != x[owners].reshape(m, self.n_blocks, -1)).any(2)
        z = base[owners]
        rows, blocks = np.nonzero(changed)
        if len(rows):
            z[rows, blocks] = self._cnn(cand.reshape(m, self.n_blocks, 1, -1, cand.shape[-1])[rows, blocks])
        return self.head.run(["probabilities"], {self.head_in: np.ascontiguousarray(z)})[0]

    def _cnn(self, blocks: np.ndarray) -> np.ndarray:
        return self.cnn.run([self.cnn_out], {self.blocks_in: np.ascontiguousarray(blocks, np.float32)})[0]
