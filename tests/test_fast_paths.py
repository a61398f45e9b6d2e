"""The fast paths: the fused vocabulary layer + cross-entropy (``seqvae.fused_ce``), the fast (bf16)
precision, the unpacked encoder and the CPU dropout (``seqvae.layers``).

Tolerances, stated once: in float32 the fused operation equals ``F.cross_entropy(layer(x))`` to
float32 rounding (1e-5) in value and gradients. Under bf16 autocast the per-token loss is within
0.02 nats of float32 and the gradients within 3 % (relative to the largest entry): bf16 keeps 8
significant bits, and the softmax rounds only its output (float32 accumulation).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqvae.fused_ce import linear_cross_entropy
from tests.test_model import VOCAB, tiny_model, tiny_store


def _reference(x, layer, y, weights):
    x = x.detach().clone().requires_grad_()
    layer.zero_grad()
    loss = F.cross_entropy(layer(x), y, reduction="none")
    (loss * weights).sum().backward()
    return loss.detach(), _grads(x, layer)


def _grads(x, layer):
    return [x.grad, layer.weight.grad.clone()] + ([] if layer.bias is None else [layer.bias.grad.clone()])


def _fused(x, layer, y, weights, block, bf16=False):
    x = x.detach().clone().requires_grad_()
    layer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = linear_cross_entropy(x, layer, y, block=block)
    (loss * weights).sum().backward()
    return loss.detach(), _grads(x, layer)


@pytest.mark.parametrize("block", [1, 7, 64, 1000])
@pytest.mark.parametrize(("features", "bias"), [(24, True), (31, True), (24, False)])
def test_fused_equals_the_unfused_layer_in_float32(block, features, bias):
    """With a bias folded into the products (31 + 1 columns fill the padding exactly) and without one."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(features, 300, bias=bias)
    x, y = torch.randn(50, features), torch.randint(0, 300, (50,))
    weights = torch.rand(50)  # an arbitrary upstream gradient per row, as a sentence mean makes
    ref, ref_grads = _reference(x, layer, y, weights)
    out, grads = _fused(x, layer, y, weights, block)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_fused_under_bf16_autocast_is_within_the_stated_tolerance():
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 2000)
    x, y = torch.randn(300, 64), torch.randint(0, 2000, (300,))
    weights = torch.rand(300)
    ref, ref_grads = _reference(x, layer, y, weights)
    out, grads = _fused(x, layer, y, weights, 128, bf16=True)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.02
    for got, want in zip(grads, ref_grads):
        assert got.dtype == want.dtype
        assert ((got - want).abs().max() / want.abs().max()) < 0.03


def test_the_bf16_value_is_the_cross_entropy_of_the_logits_its_gradient_is_for():
    """Under bf16 autocast the products see bf16-rounded features and weights; the value must be the
    cross-entropy of those logits (what backward() differentiates), not their log-sum-exp minus a
    target logit from the float32 operands. Features of 1.003 all round down to 1.0, so the two
    differ by about 0.003 x the target row's sum per token (0.1 nats here): the value must match
    the rounded operands' cross-entropy on average (up to the rounding of the bf16 logits), and not
    the mixed one."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(32, 50)
    with torch.no_grad():  # positive rows, and a bias that brings the logits back to a few nats
        layer.weight.copy_(torch.rand(50, 32) + 0.5)
        layer.bias.copy_(-layer.weight.sum(1) + 2 * torch.randn(50))
    x, y = torch.full((512, 32), 1.003), torch.randint(0, 50, (512,))
    x = x + torch.randn(512, 32) * 1e-4  # all still round to 1.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_cross_entropy(x, layer, y).float()
    r = lambda t: t.bfloat16().float()  # noqa: E731
    logits = r(x) @ r(layer.weight).T + r(layer.bias)
    consistent = F.cross_entropy(logits, y, reduction="none")
    mixed = torch.logsumexp(logits, -1) - (x @ layer.weight.T + layer.bias).gather(1, y[:, None])[:, 0]
    assert float((consistent - mixed).mean()) > 0.05  # the case tells the two apart
    assert abs(float((got - consistent).mean())) < 0.01


def test_a_target_too_unlikely_for_a_float_probability_still_gets_its_exact_loss():
    """Logits 150 nats apart: p(target) underflows, and the log-sum-exp road gives the loss."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 300)
    with torch.no_grad():
        layer.weight.mul_(40)
    x, y = torch.randn(50, 16), torch.randint(0, 300, (50,))
    ref = F.cross_entropy(layer(x), y, reduction="none")
    assert ref.max() > 100
    torch.testing.assert_close(linear_cross_entropy(x, layer, y).detach(), ref.detach(), atol=1e-4, rtol=1e-6)


def test_bad_shapes_are_refused_with_both_shapes_named():
    layer = torch.nn.Linear(4, 10)
    with pytest.raises(ValueError, match=r"\(got \(2, 3, 4\) and \(2, 3\)\)"):
        linear_cross_entropy(torch.randn(2, 3, 4), layer, torch.zeros(2, 3, dtype=torch.long))


@pytest.mark.parametrize("decoder", ["lstm", "gru"])
def test_the_fast_precision_gives_the_fp32_loss_on_a_fixed_batch(decoder):
    """One fixed batch, one fixed z noise: the bf16-mixed loss and its terms match fp32 within 1 %
    (0.02 nats per token), and so do the gradients' norms within 5 %."""
    model = tiny_model(decoder=decoder, encoder=decoder)
    batch = tiny_store(16).batch(torch.arange(16), VOCAB)

    def run(bf16: bool):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(batch, step=0, total_steps=1, generator=torch.Generator().manual_seed(3), beta=1.0)
        out.loss.backward()
        norm = torch.sqrt(sum(p.grad.float().pow(2).sum() for p in model.parameters() if p.grad is not None))
        return out, norm

    out32, norm32 = run(False)
    out16, norm16 = run(True)
    assert out16.loss.dtype == torch.float32 and out16.kl.dtype == torch.float32
    tokens = int(batch.lengths.sum())
    assert abs(float((out16.rec.sum() - out32.rec.sum()).detach())) / tokens < 0.02
    assert abs(float((out16.loss - out32.loss).detach())) / float(out32.loss.detach()) < 0.01
    torch.testing.assert_close(out16.kl.detach(), out32.kl.detach(), rtol=0.05, atol=0.02)
    assert abs(float(norm16 / norm32) - 1) < 0.05


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_the_unpacked_encoder_equals_the_packed_one(cell, layers):
    """The one-directional encoder runs padded and takes the output at length - 1: it must equal the
    final state of the packed run, for every sentence, whatever the padding."""
    from torch.nn.utils.rnn import pack_padded_sequence

    model = tiny_model(encoder={"kind": cell, "num_layers": layers}).eval()
    batch = tiny_store(13).batch(torch.arange(13), VOCAB)
    enc = model.encoder
    with torch.no_grad():
        post = enc(batch.targets, batch.lengths)
        packed = pack_padded_sequence(enc.embed(batch.targets), batch.lengths, batch_first=True, enforce_sorted=False)
        _, state = enc.rnn(packed)
        h_n = state[0] if isinstance(state, tuple) else state
        mean, logvar = enc.to_params(h_n[-1]).chunk(2, dim=-1)
    torch.testing.assert_close(post.mean, mean)
    torch.testing.assert_close(post.logvar, logvar)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_the_cpu_dropout_drops_p_and_keeps_the_mean(p):
    from seqvae.layers import Dropout

    torch.manual_seed(0)
    drop = Dropout(p)
    x = torch.ones(400, 500, requires_grad=True)
    y = drop(x)
    dropped = float((y == 0).float().mean())
    assert abs(dropped - p) < 0.01  # 200k draws: 4 standard errors at most
    assert abs(float(y.detach().mean()) - 1.0) < 0.03
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y.detach() != 0).float() / (1 - p))  # the same mask in the backward
    assert torch.equal(drop.eval()(x), x)  # identity in evaluation
    assert float(Dropout(1.0).train()(x).abs().sum()) == 0.0


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("scale", [0.01, 100.0])  # gradient norm far below and far above the clip
def test_clipping_inside_the_fused_step_equals_clip_grad_norm_then_the_step(scale, optimizer):
    from seqvae import training
    from seqvae.training import clip_gradients

    def run(fold: bool):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
        opt = getattr(training, optimizer)(net.parameters(), 1e-2)
        assert fold or not hasattr(opt, "grad_scale")
        for step in range(3):
            net.zero_grad()
            (net(torch.randn(5, 8, generator=torch.Generator().manual_seed(step))).sum() * scale).backward()
            if fold:
                clip_gradients(opt, net.parameters(), 1.0)
            else:
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
        return [p.detach().clone() for p in net.parameters()]

    for folded, plain in zip(run(True), run(False)):
        torch.testing.assert_close(folded, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_fused_optimizers_stay_fused_after_loading_an_unfused_state(optimizer):
    """A resume from a state saved by an unfused optimizer (an older run) keeps the fused kernel,
    so the clip factor handed to it as ``grad_scale`` is still applied (not refused or dropped)."""
    from seqvae import training
    from seqvae.training import clip_gradients

    net = torch.nn.Linear(4, 2)
    old = (torch.optim.Adam(net.parameters(), lr=0.1) if optimizer == "adam"
           else torch.optim.SGD(net.parameters(), lr=0.1))
    net(torch.ones(3, 4)).sum().backward()
    old.step()
    opt = getattr(training, optimizer)(net.parameters(), 0.1)
    opt.load_state_dict(old.state_dict())
    assert all(g["fused"] for g in opt.param_groups)
    before = net.weight.detach().clone()
    net.zero_grad()
    (net(torch.ones(3, 4)).sum() * 1e4).backward()  # a norm far above the clip
    clip_gradients(opt, net.parameters(), 1.0)
    assert float(opt.grad_scale) > 1.0
    opt.step()
    if optimizer == "sgd":  # the step is lr x the clipped gradient: its norm over all parameters is lr x 1.0
        assert float((net.weight.detach() - before).norm()) <= 0.1 + 1e-4


@pytest.mark.parametrize("clip", [None, 0.5])  # 0.5: below the gradients' norm, so clipping acts
def test_sparse_embedding_gradients_with_sgd_give_the_dense_sgd_parameters(clip):
    """SGD on the embeddings' rows (``sparse_embedding_gradients`` + ``sgd``) makes the dense update:
    the same parameters as dense gradients, ``clip_grad_norm_`` and PyTorch's plain SGD, float32."""
    from seqvae.training import clip_gradients, sgd, sparse_embedding_gradients

    store = tiny_store(16)

    def run(sparse: bool):
        model = tiny_model(decoder="lstm").train()
        params = list(model.parameters())
        if sparse:
            assert sparse_embedding_gradients(model) == 2  # the encoder's and the decoder's
            opt = sgd(params, 0.5)
        else:
            opt = torch.optim.SGD(params, lr=0.5)
        for step in range(3):
            batch = store.batch(torch.arange(step * 4, step * 4 + 8), VOCAB)
            torch.manual_seed(step)
            opt.zero_grad(set_to_none=True)
            model(batch, step=step, total_steps=3, beta=1.0).loss.backward()
            assert model.encoder.embed.weight.grad.is_sparse == sparse  # fails if nothing turned sparse
            if clip and sparse:
                clip_gradients(opt, params, clip)
                assert float(opt.grad_scale) > 1.0
            elif clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
        return dict(model.named_parameters())

    dense, sparse = run(False), run(True)
    for name, p in dense.items():
        torch.testing.assert_close(sparse[name], p, rtol=1e-5, atol=1e-6, msg=name)
    # and the embeddings did move (rows seen in the batches), so the comparison is not of untouched tables
    assert float((sparse["encoder.embed.weight"] - tiny_model(decoder="lstm").encoder.embed.weight).abs().max()) > 1e-3


def test_clip_gradients_coalesces_a_sparse_gradient_before_its_norm():
    """A row seen twice counts once with its summed gradient (the dense norm), and the unfused path
    scales sparse gradients in place as ``clip_grad_norm_`` scales dense ones."""
    from seqvae.training import clip_gradients

    emb = torch.nn.Embedding(6, 3, sparse=True)
    emb(torch.tensor([2, 2, 4])).sum().backward()  # row 2 twice: gradient 2 per entry; row 4: 1
    assert not emb.weight.grad.is_coalesced()
    dense_norm = float(torch.tensor([2.0] * 3 + [1.0] * 3).norm())  # sqrt(15), not sqrt(9) from three rows of 1
    opt = torch.optim.SGD(emb.parameters(), lr=1.0)  # unfused: the gradients are scaled in place
    clip_gradients(opt, emb.parameters(), 1.0)
    g = emb.weight.grad
    assert g.is_coalesced()
    torch.testing.assert_close(g.to_dense()[2], torch.full((3,), 2.0 / dense_norm), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(float(g.to_dense().norm()), 1.0, rtol=1e-5, atol=1e-6)


def test_sgd_training_turns_embeddings_sparse_and_adam_training_does_not():
    """The training system gives SGD runs sparse embedding gradients; Adam (which needs dense
    gradients) keeps them dense. On more than one device (data-parallel training all-reduces
    dense gradients only) they stay dense too."""
    from seqvae.composer import build_model
    from seqvae.config import validate_experiment
    from seqvae.training import VAESystem

    for optimizer, devices, expect in (("sgd", 1, True), ("adam", 1, False), ("sgd", 2, False)):
        cfg = validate_experiment({"model": {"latent_dim": 3, "embed_dim": 8, "hidden_size": 12},
                                   "train": {"optimizer": optimizer, "lr": 0.1, "devices": devices}})
        model = build_model(cfg, VOCAB)
        VAESystem(model, cfg).configure_optimizers()
        assert model.encoder.embed.sparse is expect and model.decoder.embed.sparse is expect, (optimizer, devices)


def _casts_of(weight: torch.Tensor, fn) -> int:
    """How many times ``fn()`` converts ``weight`` to another dtype (autocast's weight casts)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._to_copy.default and args[0].data_ptr() == weight.data_ptr():
                Count.n += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.n


def test_cached_autocast_casts_a_recurrent_weight_once_per_step_not_once_per_time_step():
    """Lightning's bf16-mixed autocast has its weight cache off; PyTorch's CPU GRU then casts its recurrent
    weight at every time step. ``cached_autocast`` turns the cache back on for the model's forward: one
    cast, the same loss, and every parameter still gets its gradient."""
    from seqvae.training.system import _autocast_cache_is_safe, cached_autocast

    assert _autocast_cache_is_safe("cpu")  # this torch keeps gradient history in its cache
    model = tiny_model(decoder="gru", encoder="gru")
    batch = tiny_store(16).batch(torch.arange(16), VOCAB)
    w_hh = model.decoder.rnn.weight_hh_l0
    time_steps = batch.inputs.shape[1]  # the decoder's time steps

    def step(cache: bool):
        model.zero_grad()
        out = {}

        def forward():
            with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):  # as Lightning's bf16-mixed
                with cached_autocast(torch.device("cpu")) if cache else torch.autocast("cpu", enabled=True):
                    out["loss"] = model(batch, step=0, total_steps=1, generator=torch.Generator().manual_seed(3),
                                        beta=1.0).loss
        casts = _casts_of(w_hh, forward)
        out["loss"].backward()
        return casts, out["loss"].detach(), {n: p.grad for n, p in model.named_parameters()}

    casts_off, loss_off, grads_off = step(False)
    casts_on, loss_on, grads_on = step(True)
    assert casts_off == time_steps > 1 and casts_on == 1
    torch.testing.assert_close(loss_on, loss_off)
    assert all(g is not None for g in grads_on.values())
    for name, g in grads_on.items():  # only the per-time-step sums change: they are now added in bf16
        rel = float((g - grads_off[name]).norm() / grads_off[name].norm().clamp_min(1e-12))
        assert rel < 0.03, name


def test_cached_autocast_is_a_no_op_without_autocast_or_with_the_cache_already_on():
    from seqvae.training.system import cached_autocast

    cpu = torch.device("cpu")
    with cached_autocast(cpu):
        assert not torch.is_autocast_enabled("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        with cached_autocast(cpu):
            assert torch.is_autocast_cache_enabled() and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert not torch.is_autocast_cache_enabled()
