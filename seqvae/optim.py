"""The optimizers of training and their gradient clipping: fused Adam and SGD, the clip folded into
their step, and SGD on sparse embedding gradients (``sparse_embedding_gradients``).

Torch only (layer 0 of docs/concepts/architecture.md): the training system and aggressive
training's inner encoder updates both build their optimizers here.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["RowSparseSGD", "adam", "clip_gradients", "sgd", "sparse_embedding_gradients"]


def clip_gradients(optimizer: torch.optim.Optimizer, params: Any, max_norm: float) -> None:
    """Scale the gradients so that their global L2 norm is at most ``max_norm`` (``clip_grad_norm_``).

    For the fused Adam and SGD the scaling is left to their kernels, which divide every gradient by
    ``optimizer.grad_scale`` as they read it: the same update as ``clip_grad_norm_`` followed by the
    step, with one pass over the 10 M gradients fewer (about 4 ms of a PTB step on 2 cores in a
    micro-benchmark; see docs/results/speed.md). ``tests/test_fast_paths.py`` checks that both give the same parameters.

    Sparse gradients (embeddings under ``sparse_embedding_gradients``) are coalesced in place first, so
    that a word seen twice counts once with its summed gradient, as in the dense norm; ``torch``'s own
    ``clip_grad_norm_`` refuses them.
    """
    grads = []
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()
            grads.append(p.grad.values())
        else:
            grads.append(p.grad)
    if not grads:
        return
    norm = torch.nn.utils.get_total_norm(grads)
    scale = torch.clamp((norm + 1e-6) / max_norm, min=1.0).to(torch.float32)
    fused = isinstance(optimizer, (torch.optim.Adam, torch.optim.SGD)) and all(
        g.get("fused") for g in optimizer.param_groups)
    if fused:
        optimizer.grad_scale = scale
        return
    # clip_grad_norm_ multiplies by max_norm / (norm + 1e-6) when that is below 1
    for g in grads:
        g.div_(scale)


def adam(params: Any, lr: float) -> torch.optim.Optimizer:
    """Adam with the fused kernel (the same update, one pass over all parameters: 8x faster than the
    per-tensor loop on CPU for the PTB model's 10M parameters, measured in benchmarks/speed).

    Adam needs dense gradients (its moments decay on every row at every step); leave embeddings dense."""
    return _stay_fused(torch.optim.Adam(params, lr=lr, fused=True))


class RowSparseSGD(torch.optim.SGD):
    """Plain SGD (no momentum, no weight decay) that takes dense and sparse gradients in one step.

    Dense gradients go through PyTorch's fused kernel (which divides them by ``grad_scale``, the
    clipping of ``clip_gradients``); a sparse gradient, an embedding's with ``sparse=True``, updates
    only the rows it holds, ``p[rows] -= lr * grad[rows] / grad_scale``: the update plain SGD makes,
    since every other row's gradient is zero. What it saves is the embedding tables' dense gradient:
    zero-filling it, adding the rows into it, its norm and its update, all over ``vocabulary x embedding``
    numbers per table and step (see ``sparse_embedding_gradients``).
    """

    def __init__(self, params: Any, lr: float):
        super().__init__(params, lr=lr, fused=True)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        sparse = [(p, p.grad, group["lr"]) for group in self.param_groups for p in group["params"]
                  if p.grad is not None and p.grad.is_sparse]
        for p, _, _ in sparse:
            p.grad = None  # the fused kernel takes dense gradients only
        try:
            super().step()
        finally:
            for p, g, _ in sparse:
                p.grad = g
        scale = getattr(self, "grad_scale", None)
        for p, g, lr in sparse:
            g = g.coalesce()  # a no-op after clip_gradients, which coalesces for the norm
            values = g.values() if scale is None else g.values() / scale
            p.index_add_(0, g.indices()[0], values.to(p.dtype), alpha=-lr)
        return loss


def sgd(params: Any, lr: float) -> torch.optim.Optimizer:
    """Plain SGD (no momentum): ``RowSparseSGD``, fused for dense gradients, so that clipping folds into
    its step as for Adam (``clip_gradients``): clipping and the step of the PTB model's 8.8 M parameters
    on one thread 16.6 -> 13.1 ms, on two 13.1 -> 10.5 ms (medians of 40 alternating calls;
    docs/results/speed.md); with ``sparse_embedding_gradients`` the embeddings' rows only."""
    return _stay_fused(RowSparseSGD(params, lr))


def sparse_embedding_gradients(model: torch.nn.Module) -> int:
    """Give every ``nn.Embedding`` of ``model`` sparse gradients (``sparse=True``); returns how many.

    For an optimizer that takes sparse gradients (``sgd``; not Adam): a batch of 32 PTB sentences
    touches a few hundred of the 10,002 rows, and the dense gradient costs a zero-filled table, its
    norm and its update at every step. An embedding whose weight another module shares (tied
    weights) keeps its dense gradient, since the other use would add a dense gradient to it.
    Only the backward pass changes; the parameters and checkpoints are the same.
    """
    uses: dict[int, int] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            uses[id(p)] = uses.get(id(p), 0) + 1
    n = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding) and module.max_norm is None and uses[id(module.weight)] == 1:
            module.sparse = True
            n += 1
    return n


def _stay_fused(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Set ``fused`` again after every ``load_state_dict``: a loaded state brings the saved groups'
    flags, and a state saved by an unfused optimizer (an older run's resume.ckpt) would otherwise turn
    the kernel off and leave ``grad_scale`` to a step that does not take it. ``fused`` is how the
    step runs, not a setting of the training."""

    def refuse_unfused(opt: torch.optim.Optimizer) -> None:
        for group in opt.param_groups:
            group["fused"] = True

    optimizer.register_load_state_dict_post_hook(refuse_unfused)
    return optimizer
