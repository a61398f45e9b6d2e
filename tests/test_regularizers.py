"""Property tests of word dropout / historyless, and the free-bits floor."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from seqvae.testing import TINY_CTX, build_component

CTX = TINY_CTX


@st.composite
def decoder_inputs(draw):
    """``<bos> words.. <eos> pad..`` rows, the shape decoder inputs have."""
    b = draw(st.integers(1, 6))
    lengths = draw(st.lists(st.integers(0, 12), min_size=b, max_size=b))
    width = max(lengths) + 2
    rows = []
    for n in lengths:
        words = draw(st.lists(st.integers(3, CTX.vocab_size - 1), min_size=n, max_size=n))
        row = [CTX.bos_id, *words, CTX.eos_id]
        rows.append(row + [CTX.pad_id] * (width - len(row)))
    return torch.tensor(rows), torch.tensor(lengths) + 1


def _dropout(rate):
    return build_component("regularizer", "word-dropout", rate=rate)


@given(decoder_inputs(), st.floats(0, 1), st.integers(0, 2**31))
def test_specials_are_never_touched(batch, rate, seed):
    inputs, lengths = batch
    out = _dropout(rate).corrupt_inputs(inputs, lengths, 0, torch.Generator().manual_seed(seed))
    special = (inputs == CTX.bos_id) | (inputs == CTX.pad_id) | (inputs == CTX.eos_id)
    assert torch.equal(out[special], inputs[special])
    changed = out != inputs
    assert torch.all(out[changed] == CTX.unk_id)


@given(decoder_inputs(), st.integers(0, 2**31))
def test_rate_zero_is_identity_and_rate_one_replaces_every_word(batch, seed):
    inputs, lengths = batch
    g = torch.Generator().manual_seed(seed)
    assert torch.equal(_dropout(0.0).corrupt_inputs(inputs, lengths, 0, g), inputs)
    words = (inputs >= 4)
    for reg in (_dropout(1.0), build_component("regularizer", "historyless")):
        out = reg.corrupt_inputs(inputs, lengths, 0, g)
        assert torch.all(out[words] == CTX.unk_id)
        assert torch.equal(out[~words & (inputs != CTX.unk_id)], inputs[~words & (inputs != CTX.unk_id)])


@given(st.floats(0.05, 0.95), st.integers(0, 2**31))
def test_empirical_rate_matches(rate, seed):
    inputs = torch.randint(4, CTX.vocab_size, (200, 100))
    inputs[:, 0] = CTX.bos_id
    out = _dropout(rate).corrupt_inputs(inputs, torch.full((200,), 100), 0, torch.Generator().manual_seed(seed))
    observed = (out[:, 1:] == CTX.unk_id).float().mean().item()
    # 19,800 Bernoulli draws: 5 standard deviations is at most 0.018
    assert abs(observed - rate) < 5 * (rate * (1 - rate) / 19_800) ** 0.5 + 1e-9


def test_eval_mode_does_not_corrupt():
    reg = _dropout(1.0).eval()
    inputs = torch.randint(4, CTX.vocab_size, (3, 7))
    assert torch.equal(reg.corrupt_inputs(inputs, torch.full((3,), 7), 0), inputs)


def test_free_bits_floor_per_dimension():
    reg = build_component("regularizer", "free-bits", threshold=0.5)
    kl = torch.tensor([[0.1, 2.0, 0.4], [0.3, 1.0, 0.8]], requires_grad=True)  # batch means: 0.2, 1.5, 0.6
    out = reg.transform_kl(kl, 0)
    torch.testing.assert_close(out.mean(0), torch.tensor([0.5, 1.5, 0.6]))
    out.sum().backward()
    torch.testing.assert_close(kl.grad, torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]]))
