"""Pixel attack: change at most `th` cells of the spectrogram, found by differential evolution.

Su, Vargas, Sakurai, "One Pixel Attack for Fooling Deep Neural Networks", IEEE TEVC 2019
(arXiv 1710.08864); Kotyan, Vargas, "Adversarial Robustness Assessment: Why both L0 and Linf
Attacks Are Necessary", 2019 (arXiv 1906.06026). The study ran ART's `PixelAttack` with es=1
(differential evolution, Storn & Price 1997), th 1, 5, 10 and 20 iterations; this follows
ART 1.x `art/attacks/evasion/pixel_threshold.py`:

  - `th` is the number of cells (ART's "pixels" of a (261, 128, 1) image) that may change;
  - a candidate encodes th triples (frame, band, value) with bounds [0, 261], [0, 128],
    [0, 255]; a cell is set to clip_min + int(value) / 255 * (clip_max - clip_min), i.e. to
    one of 256 levels spanning the clip range (ART maps the input to 0..255 and back);
  - the population has max(5, max(1, 400 // (3 th)) * 3 th) members (about 400), drawn by
    Latin hypercube sampling; strategy best1bin with recombination 1 (a trial is
    best + F (r0 - r1) in full), F dithered in [0.5, 1) each generation, out-of-bounds genes
    redrawn uniformly;
  - the fitness to minimise is the probability of the class to move away from; a trial
    replaces its parent when it is fitter.

Black-box: candidates are scored through ONNX Runtime only (`QueryCounter`), the candidates
of every live example in one call per generation, each counted against its example. Two
departures from ART, both saving work and neither changing the search: an example stops as
soon as any scored candidate flips its decision (ART checks only the best member, with an
extra query, after each generation), and the flipping candidate is returned as found (ART
re-scores it). As in ART an example the search cannot flip is returned unchanged. A candidate
differs from its example in at most th of the model's 9 time blocks, so where the model's graph
allows it only those blocks' CNN runs, and the LSTM's forward direction resumes at the first
changed block, its backward direction at the last (`blockwise.BlockScorer`: the same ONNX graph
in parts, probabilities bit for bit the whole graph's; every candidate still one counted query).

Targeted (an Objective with targets): the fitness is the probability of the target class,
maximised (ART's targeted PixelAttack minimises 1 - p_t, as here), and an example stops at the
first candidate decided as t; extra "best_target_class_probability" replaces the untargeted
"best_true_class_probability".

Distance bounded: L0 (at most th cells). Fixed-budget.
Arguments: th (cells, default 10), max_iter (generations, default 20), seed. Targeted: yes.
Shapes: x (batch, 261, 128) standardised features -> x_adv of the same shape.
Example: `get_attack("pixel", bundle, th=5)(x).summary()`."""
from __future__ import annotations

import numpy as np

from ser_core.control import should_stop
from ser_core.attacks.base import FixedBudgetAttack, register
from ser_core.attacks.features.base import FeatureAttack
from ser_core.attacks.features.blockwise import BlockScorer
from ser_core.attacks.params import Param

LEVELS = 255  # ART's 8-bit value range for a cell


@register
class PixelAttack(FixedBudgetAttack, FeatureAttack):
    """Pixel attack (Su et al. 2019; Kotyan & Vargas 2019): differential evolution over th cells."""

    name = "pixel"
    kind = "black-box"
    targeted = True
    budget_params = ("th",)
    batch_size = None  # the whole input in one call: candidates are scored population-wide
    blockwise = True  # changed blocks only (blockwise.py); False: the whole graph (benchmarks/pixel_session.py)
    params = {
        "th": Param(10, int, 1, 1000, help="number of spectrogram cells that may change (ART's th)"),
        "max_iter": Param(20, int, 0, 1000, help="differential-evolution generations"),
        "seed": Param(0, int, 0, 2**31 - 1, help="random seed of the evolution"),
    }
    paper_settings = [{"th": 1, "max_iter": 20}, {"th": 5, "max_iter": 20}, {"th": 10, "max_iter": 20}]

    # --- encoding --------------------------------------------------------------------------
    def _genes(self) -> tuple[int, int, np.ndarray]:
        """(genes per candidate, population size, upper bound of each gene)."""
        frames, bands = self.bundle.feature_config.input_shape
        genes = 3 * self.settings["th"]
        population = max(5, max(1, 400 // genes) * genes)
        upper = np.tile(np.array([frames, bands, LEVELS], np.float64), self.settings["th"])
        return genes, population, upper

    def _apply(self, x: np.ndarray, genomes: np.ndarray, upper: np.ndarray) -> np.ndarray:
        """x (n, F, B) clean features of each candidate's example, genomes (n, genes) in [0, 1]
        -> candidates with th cells set."""
        frames, bands = x.shape[1:]
        v = (genomes * upper).astype(np.int64).reshape(len(x), -1, 3)  # ART truncates to int
        rows = np.repeat(np.arange(len(x)), v.shape[1])
        out = x.copy()
        out[rows, (v[..., 0] % frames).ravel(), (v[..., 1] % bands).ravel()] = (
            self.clip_min + v[..., 2].ravel() / LEVELS * (self.clip_max - self.clip_min))
        return out

    def _score(self, x, genomes, owners, upper, query, blocks=None) -> np.ndarray:
        """Probabilities of the candidates, built and scored in blocks to bound memory; with
        blocks = (BlockScorer, the clean examples' block outputs), only changed blocks re-run."""
        block = 1024
        probs = []
        for i in range(0, len(owners), block):
            o = owners[i:i + block]
            cand = self._apply(x[o], genomes[i:i + block], upper)
            scorer = None if blocks is None else (lambda c, sl, o=o: blocks[0](c, o[sl], x, blocks[1]))
            probs.append(query(cand, o, scorer))
        return np.concatenate(probs)

    def _blocks(self, x):
        """(BlockScorer, what its candidates reuse of the clean examples) where the model allows
        it, else None."""
        scorer = BlockScorer.for_bundle(self.bundle) if self.blockwise else None
        if scorer is None:
            return None
        return scorer, scorer.clean(x)

    # --- search ----------------------------------------------------------------------------
    def _attack_batch(self, x, objective, query, progress):
        y = objective.classes
        rng = np.random.default_rng(self.settings["seed"])
        genes, size, upper = self._genes()
        n = len(x)
        x_adv = x.copy()
        found = np.zeros(n, bool)
        # Latin hypercube: one draw per stratum of every gene, strata shuffled per gene
        strata = (rng.random((n, size, genes)) + np.arange(size)[None, :, None]) / size
        pop = np.take_along_axis(strata, np.argsort(rng.random((n, size, genes)), axis=1), axis=1)
        energy = np.full((n, size), np.inf)
        live = np.arange(n)
        best_energy = np.ones(n)

        blocks = self._blocks(x)

        def evaluate(ex, genomes):
            """Score genomes (len(ex), size, genes); record successes; return the energies
            (untargeted: the probability of y; targeted: 1 - the probability of the target y)."""
            owners = np.repeat(ex, size)
            probs = self._score(x, genomes.reshape(-1, genes), owners, upper, query, blocks)
            prob = probs[np.arange(len(owners)), y[owners]].reshape(len(ex), size)
            e = 1 - prob if objective.targeted else prob
            flips = objective[owners].reached(probs.argmax(1)).reshape(len(ex), size)
            for k in np.flatnonzero(flips.any(1)):  # a few examples per generation at most
                i = ex[k]
                pick = np.flatnonzero(flips[k])[e[k, flips[k]].argmin()]
                x_adv[i] = self._apply(x[i:i + 1], genomes[k, pick][None], upper)[0]
                found[i] = True
            return e

        for generation in range(self.settings["max_iter"] + 1):
            if len(live) == 0 or should_stop():
                break
            if generation == 0:
                energy[live] = evaluate(live, pop[live])
                # the fittest member sits in slot 0, as in ART's solver
                b = energy[live].argmin(1)
                for arr in (pop, energy):
                    first = arr[live, 0].copy()
                    arr[live, 0] = arr[live, b]
                    arr[live, b] = first
            else:
                p = pop[live]
                m = len(live)
                # best1bin, recombination 1: trial = best + F (r0 - r1), r0 != r1 != candidate
                k0 = rng.integers(0, size - 1, (m, size))
                k1 = rng.integers(0, size - 2, (m, size))
                k1 = k1 + (k1 >= k0)
                c = np.arange(size)[None, :]
                r0, r1 = (c + 1 + k0) % size, (c + 1 + k1) % size
                f = rng.uniform(0.5, 1.0, (m, 1, 1))  # dither, one F per generation
                rows = np.arange(m)[:, None]
                trial = p[:, :1] + f * (p[rows, r0] - p[rows, r1])
                outside = (trial < 0) | (trial > 1)
                trial[outside] = rng.random(int(outside.sum()))
                e = evaluate(live, trial)
                better = e < energy[live]
                p = np.where(better[..., None], trial, p)
                en = np.where(better, e, energy[live])
                # slot 0 keeps the fittest of the old best and every trial
                t = e.argmin(1)
                improve = e[np.arange(m), t] < en[:, 0]
                p[improve, 0] = trial[np.flatnonzero(improve), t[improve]]
                en[improve, 0] = e[np.flatnonzero(improve), t[improve]]
                pop[live], energy[live] = p, en
            best_energy[live] = energy[live, 0]
            live = live[~found[live]]
            progress((generation + 1) / (self.settings["max_iter"] + 1),
                     f"pixel: generation {generation}, {int(found.sum())}/{n} flipped")
        if objective.targeted:
            return x_adv, {"best_target_class_probability": (1 - best_energy).tolist(), "population": size}
        return x_adv, {"best_true_class_probability": best_energy.tolist(), "population": size}
