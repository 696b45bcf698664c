"""Expectation over transformations for waveform attacks (ser_core/attacks/waveform/eot.py):
seeded draws from the training rooms only, the gradient the average of the per-room gradients,
and Auto-PGD's eot parameters declared and checked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ser_core.attacks.objective import Objective

pytest.importorskip("pyroomacoustics")


def test_the_sampler_is_seeded_and_draws_training_rooms_only(bundle):
    from ser_core.attacks.waveform.eot import room_sampler
    a, b, c = room_sampler(bundle, 5), room_sampler(bundle, 5), room_sampler(bundle, 6)
    da, db, dc = ([t.key for t in s.draw(20)] for s in (a, b, c))
    assert da == db and da != dc
    assert {t.room.spec.bank for t in a.transforms} == {"training"}


def test_the_eot_gradient_is_the_average_over_the_sampled_rooms(bundle):
    from ser_core.attacks.waveform.eot import EOTClipModel, room_sampler
    rng = np.random.default_rng(0)
    pcm = np.round(rng.standard_normal(20000) * 3000 * np.hanning(20000))
    model = EOTClipModel(bundle, pcm, room_sampler(bundle, 1), k=3)
    x = torch.from_numpy(pcm).float()[None].requires_grad_(True)
    lp = model(x)
    assert lp.shape == (3, len(bundle.labels))
    grad, = torch.autograd.grad(model.objective_for(Objective(np.array([0]))).margin(lp).mean(), x)
    drawn = {t.key: t for t in model.sampler.transforms}
    per_room = []
    for key in model.drawn:
        state, label = model._state[key]
        xi = x.detach().clone().requires_grad_(True)
        m = Objective(np.array([label])).margin(model._log_probs([drawn[key]], [state], xi))[0]
        per_room.append(torch.autograd.grad(m, xi)[0])
    expected = torch.stack(per_room).mean(0)
    assert torch.allclose(grad, expected, rtol=1e-3, atol=1e-6 * float(expected.abs().max()))


def test_apgd_declares_and_checks_its_eot_parameters(bundle):
    from ser_core.attacks import get_attack
    from ser_core.errors import ParameterError
    a = get_attack("apgd", bundle, eot=4, eot_seed=3)
    assert (a.settings["eot"], a.settings["eot_space"], a.settings["eot_seed"]) == (4, "room", 3)
    assert get_attack("apgd", bundle).settings["eot"] == 0
    with pytest.raises(ParameterError):
        get_attack("apgd", bundle, eot=-1)
    with pytest.raises(ParameterError):
        get_attack("apgd", bundle, eot_space="wind")


@pytest.mark.slow
def test_an_eot_attack_counts_its_forward_passes(bundle):
    """Two steps of EOT Auto-PGD on a short clip: one model forward per step (of eot rows)."""
    from ser_core.attacks import get_attack
    y = (np.random.default_rng(3).standard_normal(16000) * 0.1 * np.hanning(16000)).astype(np.float32)
    r = get_attack("apgd", bundle, snr_db=20, steps=2, eot=2)([y])
    assert r.extra["run"][0]["iterations"] <= 2


def test_room_plus_digital_keeps_the_digital_clip_in_every_draw(bundle):
    from ser_core.attacks.waveform.eot import SPACES
    s = SPACES["room+digital"](bundle, 0)
    for _ in range(5):
        d = s.draw(4)
        assert d[0].key == ("digital",) and all(t.key[0] == "room" for t in d[1:])
