"""Conformance checks that every component must pass; plugin authors run them on their own components.

Each ``check_*`` function builds the component from its default ``Config`` on a tiny context and
raises ``AssertionError`` with a message when the contract is broken. Usage in a plugin's tests::

    from seqvae.testing import check_component

    def test_my_decoder_conforms():
        check_component("decoder", "my-decoder")
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from seqvae.interfaces import BuildContext, DiagonalGaussian, Posterior
from seqvae.registry import get_registry

__all__ = [
    "TINY_CTX",
    "build_component",
    "check_component",
    "check_config_roundtrip",
    "check_decoder",
    "check_encoder",
    "check_prior",
    "check_registry_metadata",
    "check_regularizer",
    "check_schedule",
    "check_strategy",
    "random_batch_tokens",
]

#: A tiny shared context: 13 words plus the 4 specials (pad 0, bos 1, eos 2, unk 3).
TINY_CTX = BuildContext(
    vocab_size=17, pad_id=0, bos_id=1, eos_id=2, unk_id=3, latent_dim=4, embed_dim=8, hidden_size=16
)


def build_component(kind: str, name: str, ctx: BuildContext = TINY_CTX, **params: Any) -> Any:
    """Build registered component ``name`` of ``kind`` from its Config (defaults plus ``params``).

    A component without latent (``has_latent = False``, the LM baseline's ``none``) is built with
    ``latent_dim = 0``, as the composer does.
    """
    cls = get_registry(kind).get(name)
    if not getattr(cls, "has_latent", True):
        ctx = dataclasses.replace(ctx, latent_dim=0)
    return cls(cls.Config(kind=name, **params), ctx)


def random_batch_tokens(
    lengths: list[int], ctx: BuildContext = TINY_CTX, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random word ids ``b t`` padded after each length (no specials inside), and ``lengths: b``."""
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    words = torch.randint(4, ctx.vocab_size, (len(lengths), t), generator=g)
    lens = torch.tensor(lengths)
    mask = torch.arange(t)[None, :] < lens[:, None]
    return torch.where(mask, words, ctx.pad_id), lens


def _assert_grads(module: torch.nn.Module, what: str) -> None:
    missing = [n for n, p in module.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"{what}: no gradient reaches parameters {missing}"


def check_registry_metadata(kind: str, name: str) -> None:
    """The entry point is sound: a valid lower-case name, a package and version, status ``ok``, a
    subclass of the kind's base class with a docstring, and a nested ``Config`` (a
    [`ComponentConfig`][seqvae.config.ComponentConfig]) whose ``kind`` field accepts the name."""
    import importlib
    import re

    from seqvae.config import ComponentConfig
    from seqvae.registry import KINDS

    reg = get_registry(kind)
    entries = [e for e in reg.check() if e.name == name]
    assert entries, f"{kind} '{name}' is not registered in the entry-point group {KINDS[kind][0]}"
    for e in entries:
        assert re.fullmatch(r"[a-z][a-z0-9-]*", e.name), f"{kind} '{name}': names are lower-case words joined by '-'"
        assert e.dist and e.version, f"{kind} '{name}': the entry point has no package name or version"
        assert e.status in ("ok", "shadowed"), f"{kind} '{name}' ({e.alias}) is {e.status}: {e.error}"
    cls = reg.get(name)
    module, _, attr = KINDS[kind][1].partition(":")
    base = getattr(importlib.import_module(module), attr)
    assert isinstance(cls, type) and issubclass(cls, base), f"{kind} '{name}' must subclass {base.__qualname__}"
    assert (cls.__doc__ or "").strip(), f"{kind} '{name}': the class needs a docstring (it is shown in the docs)"
    config = getattr(cls, "Config", None)
    assert isinstance(config, type) and issubclass(config, ComponentConfig), (
        f"{kind} '{name}': needs a nested Config subclassing seqvae.config.ComponentConfig"
    )
    config(kind=name, **config_example(config))


def check_config_roundtrip(kind: str, name: str) -> None:
    """``Config`` survives a JSON round trip and forbids unknown fields.

    A Config with required fields is checked on the first entry of its
    ``model_config["json_schema_extra"]["examples"]`` (which it must then provide).
    """
    cls = get_registry(kind).get(name)
    params = config_example(cls.Config)
    cfg = cls.Config(kind=name, **params)
    again = cls.Config.model_validate(cfg.model_dump(mode="json"))
    assert again == cfg, f"{kind} '{name}': Config changes in a JSON round trip"
    try:
        cls.Config(kind=name, **params, surely_not_a_field=1)
    except Exception:
        pass
    else:
        raise AssertionError(f"{kind} '{name}': Config accepts unknown fields")


def config_example(config_cls: type) -> dict[str, Any]:
    """Field values for a Config with required fields (its first schema example); ``{}`` otherwise."""
    required = [n for n, f in config_cls.model_fields.items() if f.is_required() and n != "kind"]
    if not required:
        return {}
    extra = config_cls.model_config.get("json_schema_extra") or {}
    examples = extra.get("examples") if isinstance(extra, dict) else None
    assert examples, (
        f"{config_cls.__qualname__} has required fields {required}: give an example in "
        "model_config['json_schema_extra']['examples']"
    )
    return {k: v for k, v in examples[0].items() if k != "kind"}


def check_encoder(name: str, ctx: BuildContext = TINY_CTX) -> None:
    """Shapes, gradients to every parameter, and padding invariance."""
    enc = build_component("encoder", name, ctx)
    tokens, lengths = random_batch_tokens([5, 3, 1], ctx)
    post = enc(tokens, lengths)
    b, d = 3, enc.ctx.latent_dim
    assert isinstance(post, Posterior), f"encoder '{name}' must return a seqvae.interfaces.Posterior"
    assert post.mean.shape == (b, d), f"encoder '{name}': want mean b d = {(b, d)}, got {tuple(post.mean.shape)}"
    logvar = getattr(post, "logvar", None)
    assert logvar is None or logvar.shape == (b, d), (
        f"encoder '{name}': want logvar b d = {(b, d)}, got {tuple(logvar.shape)}")
    if any(p.requires_grad for p in enc.parameters()):
        (post.mean.sum() + (logvar.sum() if logvar is not None else 0)).backward()
        _assert_grads(enc, f"encoder '{name}'")
    enc.eval()
    with torch.no_grad():
        full = enc(tokens, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone = enc(tokens[i : i + 1, :n], lengths[i : i + 1])
            torch.testing.assert_close(alone.mean[0], full.mean[i], msg=f"encoder '{name}': padding changes the mean")
            if logvar is not None:
                torch.testing.assert_close(
                    alone.logvar[0], full.logvar[i], msg=f"encoder '{name}': padding changes logvar"
                )


def check_decoder(name: str, ctx: BuildContext = TINY_CTX) -> None:
    """Shapes, gradients, causality, ``step()`` equal to the teacher-forced ``forward``, and ``reorder_state``."""
    dec = build_component("decoder", name, ctx)
    tokens, lengths = random_batch_tokens([6, 4], ctx)
    inputs = torch.cat([torch.full((2, 1), ctx.bos_id), tokens[:, :-1]], 1)
    z = torch.randn(2, ctx.latent_dim, requires_grad=True)
    logits = dec(inputs, z, lengths)
    want = (2, inputs.shape[1], ctx.vocab_size)
    assert logits.shape == want, f"decoder '{name}': want logits b t v = {want}, got {tuple(logits.shape)}"
    logits.logsumexp(-1).sum().backward()
    _assert_grads(dec, f"decoder '{name}'")
    assert z.grad is not None and z.grad.abs().sum() > 0, f"decoder '{name}': logits do not depend on z"
    dec.eval()
    with torch.no_grad():
        z = z.detach()
        base = dec(inputs, z, lengths)
        for t in range(inputs.shape[1] - 1):
            changed = inputs.clone()
            changed[:, t + 1 :] = torch.randint(4, ctx.vocab_size, changed[:, t + 1 :].shape)
            torch.testing.assert_close(
                dec(changed, z, lengths)[:, : t + 1], base[:, : t + 1],
                msg=f"decoder '{name}' is not causal: logits at <= {t} depend on later inputs",
            )
        state = dec.init_state(z)
        for t in range(inputs.shape[1]):
            step_logits, state = dec.step(inputs[:, t], state)
            torch.testing.assert_close(
                step_logits, base[:, t], atol=1e-5, rtol=1e-4,
                msg=f"decoder '{name}': step() differs from forward() at position {t}",
            )
        # reorder_state (beam search): swapping the rows of a mid-sentence state swaps the next logits
        state = dec.init_state(z)
        for t in range(3):
            _, state = dec.step(inputs[:, t], state)
        swap = torch.tensor([1, 0])
        swapped_logits, _ = dec.step(inputs[swap, 3], dec.reorder_state(state, swap))
        torch.testing.assert_close(
            swapped_logits, base[swap, 3], atol=1e-5, rtol=1e-4,
            msg=f"decoder '{name}': reorder_state() does not reorder the batch rows of the state",
        )


def check_prior(name: str, ctx: BuildContext = TINY_CTX) -> None:
    """``log_prob``, ``sample`` and ``kl`` shapes; KL >= 0 and equal to a Monte Carlo estimate.

    The prior is bound to an ``lstm`` encoder first (the VampPrior needs one) and the posterior goes
    through its ``adapt_posterior``. A Monte Carlo KL (``analytic`` False) is averaged over 400 calls.
    """
    prior = build_component("prior", name, ctx)
    d = prior.ctx.latent_dim
    prior.bind(build_component("encoder", "lstm", ctx))
    z = prior.sample(5)
    assert z.shape == (5, d), f"prior '{name}': sample(n) must be n d = {(5, d)}, got {tuple(z.shape)}"
    lp = prior.log_prob(torch.zeros(3, 5, d))
    assert lp.shape == (3, 5), f"prior '{name}': log_prob(... d) must be ... = (3, 5), got {tuple(lp.shape)}"
    g = torch.Generator().manual_seed(0)
    post = prior.adapt_posterior(
        DiagonalGaussian(torch.randn(3, d, generator=g), torch.randn(3, d, generator=g) * 0.3)
    )
    with torch.no_grad():
        kl = prior.kl(post, g)
        assert kl.per_dim.shape == (3, d), f"prior '{name}': kl() must be b d = {(3, d)}, got {tuple(kl.per_dim.shape)}"
        total = kl.per_dim.sum(-1)
        if not kl.analytic:
            total = torch.stack([prior.kl(post, g).per_dim.sum(-1) for _ in range(400)]).mean(0)
        zs = post.rsample(20_000, generator=g)  # k b d
        mc = (post.log_prob(zs) - prior.log_prob(zs)).mean(0)
    assert (total > -1e-3).all(), f"prior '{name}': negative KL {total}"
    torch.testing.assert_close(total, mc, atol=0.15, rtol=0.05, msg=f"prior '{name}': KL disagrees with Monte Carlo")
    _check_sample_matches_log_prob(prior, name)


def _check_sample_matches_log_prob(prior: Any, name: str, n: int = 4000) -> None:
    """``sample()`` draws from the density that ``log_prob()`` describes (Stein's identities).

    For x ~ p and a smooth density, E[grad log p(x)] = 0 and E[laplacian log p(x) + |grad log p(x)|^2] = 0.
    Samples from another density break them: with a Gaussian prior, samples twice as wide give
    d (4 - 1) instead of 0, samples shifted by m give a mean score of -m. A ``log_prob`` that does not
    depend on z in R^d (a uniform density on the sphere) has nothing to check and passes.
    """
    torch.manual_seed(1)
    with torch.no_grad():
        x = prior.sample(n).float()
    x = x.detach().requires_grad_(True)
    lp = prior.log_prob(x)
    if not lp.requires_grad:  # constant in z
        return
    (score,) = torch.autograd.grad(lp.sum(), x, create_graph=True, allow_unused=True)
    if score is None or not score.requires_grad:
        return
    d = x.shape[-1]
    laplacian = sum(torch.autograd.grad(score[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(d))
    sq = (score.detach() ** 2).sum(-1)
    stein = float((laplacian.detach() + sq).mean())
    mean_score = score.detach().mean(0)
    scale = float(sq.mean()) ** 0.5 / d ** 0.5  # the score's typical size per dimension
    assert abs(stein) <= 0.1 * float(sq.mean()) + 0.3, (
        f"prior '{name}': sample() does not draw from log_prob()'s density "
        f"(E[laplacian + |score|^2] = {stein:.3f}, want about 0; e.g. samples of another scale)")
    assert float(mean_score.abs().max()) <= 0.1 * scale + 0.1, (
        f"prior '{name}': sample() does not draw from log_prob()'s density "
        f"(mean score {[round(v, 3) for v in mean_score.tolist()]}, want about 0; e.g. shifted samples)")


def check_regularizer(name: str, ctx: BuildContext = TINY_CTX) -> None:
    """Hooks keep shapes, never touch padding, and do nothing in eval mode on the inputs."""
    reg = build_component("regularizer", name, ctx)
    tokens, lengths = random_batch_tokens([5, 2], ctx)
    inputs = torch.cat([torch.full((2, 1), ctx.bos_id), tokens], 1)
    out = reg.corrupt_inputs(inputs, lengths, step=0, generator=torch.Generator().manual_seed(0))
    assert out.shape == inputs.shape and out.dtype == inputs.dtype, f"regularizer '{name}': corrupt_inputs shape"
    assert torch.equal(out[inputs == ctx.pad_id], inputs[inputs == ctx.pad_id]), f"regularizer '{name}' changes padding"
    assert torch.equal(out[:, 0], inputs[:, 0]), f"regularizer '{name}' changes <bos>"
    reg.eval()
    assert torch.equal(reg.corrupt_inputs(inputs, lengths, step=0), inputs), f"regularizer '{name}' corrupts in eval mode"
    kl = torch.rand(3, ctx.latent_dim)
    got = reg.transform_kl(kl, step=0).shape
    assert got == kl.shape, f"regularizer '{name}': transform_kl must keep b d = {tuple(kl.shape)}, got {tuple(got)}"
    post = reg.transform_posterior(DiagonalGaussian(torch.zeros(3, ctx.latent_dim), torch.zeros(3, ctx.latent_dim)), 0)
    assert post.mean.shape == (3, ctx.latent_dim), (
        f"regularizer '{name}': transform_posterior must keep b d = {(3, ctx.latent_dim)}, got {tuple(post.mean.shape)}")
    reg.train()  # a bf16 posterior, as an encoder gives under bf16-mixed autocast, must work too
    g = torch.Generator().manual_seed(0)
    half = DiagonalGaussian(torch.randn(3, ctx.latent_dim, generator=g).bfloat16(), torch.zeros(3, ctx.latent_dim).bfloat16())
    post = reg.transform_posterior(half, 0)
    assert post.mean.shape == (3, ctx.latent_dim) and bool(torch.isfinite(post.mean).all()), (
        f"regularizer '{name}': transform_posterior must accept a bf16 posterior (bf16-mixed training)"
    )
    _check_extra_loss(name)


def _check_extra_loss(name: str) -> None:
    """``extra_loss`` on a real forward pass: a dict of finite scalar tensors (shape ``()``) with gradients."""
    from seqvae.composer import build_model
    from seqvae.config import validate_experiment
    from seqvae.data.batch import Batch
    from seqvae.data.vocab import Vocab

    words = [f"w{i}" for i in range(TINY_CTX.vocab_size - 4)]
    vocab = Vocab.build([words])
    cfg = validate_experiment({"regularizers": [name], "model": {"latent_dim": 4, "embed_dim": 8, "hidden_size": 16}})
    model = build_model(cfg, vocab).train()
    tokens, lengths = random_batch_tokens([5, 3], TINY_CTX)
    bos, eos = torch.full((2, 1), vocab.bos_id), torch.full((2, 1), vocab.pad_id)
    full = torch.cat([bos, tokens, eos], 1)
    full[torch.arange(2), lengths + 1] = vocab.eos_id
    batch = Batch(full, lengths + 1, vocab.pad_id)
    from seqvae.interfaces import ComponentError

    try:
        out = model(batch, step=3, total_steps=10, generator=torch.Generator().manual_seed(0), beta=1.0)
    except ComponentError as exc:  # the model's own boundary check saw it first
        raise AssertionError(str(exc)) from None
    reg = model.regularizers[0]
    extra = reg.extra_loss(out, batch, 3)
    assert isinstance(extra, dict), f"regularizer '{name}': extra_loss must return a dict of name -> scalar tensor"
    for key, value in extra.items():
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        assert isinstance(value, torch.Tensor) and value.dim() == 0, (
            f"regularizer '{name}': extra_loss['{key}'] must be a scalar tensor (shape ()), got {shape}")
        assert bool(torch.isfinite(value)), f"regularizer '{name}': extra_loss['{key}'] is {float(value)}"


def check_strategy(name: str) -> None:
    """beta is finite and non-negative at every step; ``state()`` is JSON-serialisable."""
    import json

    strategy = build_component("strategy", name)
    sched = build_component("schedule", "linear")
    values = [strategy.beta(sched, s, 1000) for s in range(0, 1001, 7)]
    assert all(isinstance(v, float) and 0 <= v < float("inf") for v in values), f"strategy '{name}': beta {values[:5]}"
    json.dumps(strategy.state())


def check_schedule(name: str) -> None:
    """beta is a finite, non-negative float at every step, and a pure function of the step."""
    sched = build_component("schedule", name)
    total = 1000
    values = [sched(s, total) for s in range(0, total + 1, 7)]
    assert all(isinstance(v, float) and v >= 0 and v == v and v != float("inf") for v in values), (
        f"schedule '{name}' returned {values[:5]}..."
    )
    assert values == [sched(s, total) for s in range(0, total + 1, 7)], f"schedule '{name}' is not pure"
    top = getattr(type(sched), "max_beta", 1.0)
    assert max(values) <= top, (
        f"schedule '{name}' returns beta {max(values):g} > {top:g} under its default config; a schedule "
        "meant to go above 1 declares it with the class attribute max_beta")


_CHECKS = {
    "encoder": check_encoder,
    "decoder": check_decoder,
    "prior": check_prior,
    "regularizer": check_regularizer,
    "schedule": check_schedule,
    "strategy": check_strategy,
}


def check_component(kind: str, name: str) -> None:
    """Run every check that applies to ``kind`` (registry metadata and config round trip included)."""
    check_registry_metadata(kind, name)
    check_config_roundtrip(kind, name)
    if kind in _CHECKS:
        torch.manual_seed(0)
        _CHECKS[kind](name)
