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

    def __init__(self, cnn, head, blocks_in: str, cnn_out: str, head_in: str, n_blocks: int, lstm=None):
        self.cnn, self.head = cnn, head
        self.blocks_in, self.cnn_out, self.head_in, self.n_blocks = blocks_in, cnn_out, head_in, n_blocks
        self.lstm = lstm  # _SplitLSTM, or None: the head runs whole

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
        head_in = head[0].output[0]
        return cls(session(ex.extract_model([blocks_in], [cnn_out])),
                   session(ex.extract_model([head_in], ["probabilities"])),
                   blocks_in, cnn_out, head_in, n_blocks, _SplitLSTM.build(model, ex, head_in, session))

    def clean(self, x: np.ndarray) -> "CleanBlocks":
        """(n, 261, 128) clean examples -> their blocks' CNN outputs (n, blocks, features) and,
        where the LSTM is split, both directions' states after every number of blocks."""
        n, shape = len(x), (-1, 1, x.shape[1] // self.n_blocks, x.shape[-1])
        if n == 0:
            return CleanBlocks(np.zeros((0, self.n_blocks, 0), np.float32), None)
        z = np.concatenate([self._cnn(x[i:i + 256].reshape(shape)) for i in range(0, n, 256)])
        z = z.reshape(n, self.n_blocks, -1)
        return CleanBlocks(z, None if self.lstm is None else self.lstm.clean_states(z))

    def __call__(self, cand: np.ndarray, owners: np.ndarray, x: np.ndarray, base: "CleanBlocks") -> np.ndarray:
        """Probabilities of candidates cand (m, 261, 128), cand[i] a changed copy of x[owners[i]],
        whose clean blocks are base (`clean`, for the examples x)."""
        m = len(cand)
        cb = cand.reshape(m, self.n_blocks, -1)
        changed = (cb != x[owners].reshape(m, self.n_blocks, -1)).any(2)
        z = base.z[owners]
        rows, blocks = np.nonzero(changed)
        if len(rows):
            z[rows, blocks] = self._cnn(cand.reshape(m, self.n_blocks, 1, -1, cand.shape[-1])[rows, blocks])
        if self.lstm is None:
            return self.head.run(["probabilities"], {self.head_in: np.ascontiguousarray(z)})[0]
        return self.lstm(z, changed, base.states, owners)

    def _cnn(self, blocks: np.ndarray) -> np.ndarray:
        return self.cnn.run([self.cnn_out], {self.blocks_in: np.ascontiguousarray(blocks, np.float32)})[0]


class CleanBlocks:
    """What candidates of the clean examples reuse: z (n, blocks, features) CNN outputs and, for
    a split LSTM, the states (_SplitLSTM.clean_states)."""

    def __init__(self, z: np.ndarray, states):
        self.z, self.states = z, states


class _SplitLSTM:
    """The graph's bidirectional LSTM as its two directions, each resumable at any block: `pre`
    maps the head's input (n, blocks, features) to the LSTM's (blocks, n, features), `forward` and
    `backward` are unidirectional LSTM sessions (inputs X, sequence lengths L, h0, c0) with the
    node's weights for that direction (backward reads the blocks reversed), `tail` maps the last
    hidden states (2, n, H) to the probabilities."""

    def __init__(self, pre, forward, backward, tail, pre_in, pre_out, tail_in, hidden):
        self.pre, self.forward, self.backward, self.tail = pre, forward, backward, tail
        self.pre_in, self.pre_out, self.tail_in, self.hidden = pre_in, pre_out, tail_in, hidden

    @classmethod
    def build(cls, model, ex, head_in: str, session) -> "_SplitLSTM | None":
        """The split of model's LSTM node, or None unless it is bidirectional with default
        activations, weights stored in the graph, zero initial states, no sequence lengths, and
        only its last hidden states read after it."""
        from onnx import helper, numpy_helper
        nodes = list(model.graph.node)
        node = next(n for n in nodes if n.op_type == "LSTM")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        consts = {n.output[0]: n for n in nodes if n.op_type == "ConstantOfShape"}
        ins = list(node.input) + [""] * (8 - len(node.input))

        def zero(name):
            c = consts.get(name)
            return name == "" or (c is not None and not numpy_helper.to_array(c.attribute[0].t).any())
        read = {i for n in nodes for i in n.input} | {o.name for o in model.graph.output}
        if (set(attrs) != {"direction", "hidden_size"} or attrs["direction"] != b"bidirectional"
                or not all(i in init for i in ins[1:3]) or (ins[3] and ins[3] not in init) or ins[4]
                or not zero(ins[5]) or not zero(ins[6]) or ins[7] or node.output[0] in read
                or (len(node.output) > 2 and node.output[2] in read)):
            return None
        hid = int(attrs["hidden_size"])
        w, r = init[ins[1]], init[ins[2]]
        b = init[ins[3]] if ins[3] else np.zeros((2, 8 * hid), np.float32)

        def direction(d):
            f = helper.make_tensor_value_info
            graph = helper.make_graph(
                [helper.make_node("LSTM", ["X", "W", "R", "B", "L", "h0", "c0"], ["", "Yh", "Yc"],
                                  hidden_size=hid, direction="forward")], f"lstm_{d}",
                [f("X", 1, [None, None, w.shape[-1]]), f("L", 6, [None]), f("h0", 1, [1, None, hid]),
                 f("c0", 1, [1, None, hid])], [f("Yh", 1, [1, None, hid]), f("Yc", 1, [1, None, hid])],
                [numpy_helper.from_array(a[d:d + 1], k) for a, k in ((w, "W"), (r, "R"), (b, "B"))])
            m = helper.make_model(graph, opset_imports=list(model.opset_import))
            m.ir_version = model.ir_version
            return session(m)
        return cls(session(ex.extract_model([head_in], [ins[0]])), direction(0), direction(1),
                   session(ex.extract_model([node.output[1]], ["probabilities"])), head_in, ins[0],
                   node.output[1], hid)

    def _run(self, sess, xs, lengths, h0, c0):
        out = sess.run(["Yh", "Yc"], {"X": np.ascontiguousarray(xs), "L": lengths.astype(np.int32),
                                      "h0": np.ascontiguousarray(h0[None]), "c0": np.ascontiguousarray(c0[None])})
        return out[0][0], out[1][0]

    def clean_states(self, z: np.ndarray):
        """Each direction's (h, c) after k = 0 .. blocks-1 of its blocks, as (n, blocks, H)."""
        xs = self.pre.run([self.pre_out], {self.pre_in: np.ascontiguousarray(z)})[0]
        steps, n = xs.shape[:2]
        out = []
        for seq, sess in ((xs, self.forward), (xs[::-1], self.backward)):
            h = np.zeros((n, steps, self.hidden), np.float32)
            c = np.zeros_like(h)
            for k in range(1, steps):
                h[:, k], c[:, k] = self._run(sess, seq[:k], np.full(n, k), h[:, 0], c[:, 0])
            out.append((h, c))
        return out

    def __call__(self, z, changed, states, owners):
        """Probabilities of candidates z (m, blocks, features) whose changed blocks are changed
        (m, blocks), from the clean states of their examples owners."""
        xs = self.pre.run([self.pre_out], {self.pre_in: np.ascontiguousarray(z)})[0]
        steps, m = xs.shape[:2]
        hit = changed.any(1)
        first = np.where(hit, changed.argmax(1), steps - 1)  # an unchanged candidate: the last block
        last = np.where(hit, steps - 1 - changed[:, ::-1].argmax(1), 0)
        finals = np.empty((2, m, self.hidden), np.float32)
        for d, (seq, sess, start, (h, c)) in enumerate(((xs, self.forward, first, states[0]),
                                                        (xs[::-1], self.backward, steps - 1 - last, states[1]))):
            # one run per resuming block: ONNX Runtime computes the input products of every step
            # of a run's longest sequence for all its rows, so rows are grouped by length
            for s in np.unique(start):
                rows = np.flatnonzero(start == s)
                finals[d, rows] = self._run(sess, seq[s:, rows], np.full(len(rows), steps - s),
                                            h[owners[rows], s], c[owners[rows], s])[0]
        return self.tail.run(["probabilities"], {self.tail_in: finals})[0]
