"""The vocabulary layer and the token cross-entropy as one operation, computed in row blocks.

``linear_cross_entropy(features, layer, targets)`` equals
``F.cross_entropy(layer(features), targets, reduction="none")`` but never builds the ``n v`` logits
in full: the logits of ``block`` rows at a time are made, reduced to their log-sum-exp and (when a
gradient is wanted) turned into ``softmax - onehot`` right away, while they are still in the cache.
The backward pass is then two matrix products and no pass over ``n v`` values at all: the per-row
upstream gradient scales the ``n h`` side of each product instead. The bias rides in the products
(a ones column in the features, the bias as a column of the weight), so its gradient is a column of
the weight gradient's product.

Under CPU or CUDA autocast (Lightning's ``bf16-mixed``) the three matrix products run in the autocast
dtype (bf16: the AMX / tensor-core path) with the log-sum-exp, the target logit and every reduction
in float32 (softmax accumulates in float32 and rounds only its output). The target logit is taken
from the same rounded operands as the products, so the value is the cross-entropy of the logits
that the gradient is computed for (see ``tests/test_fast_paths.py``). Outside autocast everything
is float32 and the result matches the unfused layer to float32 rounding (``tests/test_fast_paths.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["CE_BLOCK_ROWS", "ROW_MULTIPLE", "linear_cross_entropy"]

CE_BLOCK_ROWS = 256
"""Rows per block: with a 10k vocabulary on the project's CPU, 256 was as fast as or faster than 64, 128,
512 and 1024 in repeated timings of the PTB step (the differences were within the machine's noise)."""


ROW_MULTIPLE = 64
"""Rows are padded to a multiple of this. oneDNN builds (JIT-compiles) a kernel for every new matrix
shape, about 25 ms each for the vocabulary products on the project's CPU, more than the product
itself; the number of real tokens changes every batch, so without padding nearly every step paid it."""

_TINY = 1e-30
_TRANSPOSE_AFTER = 8  # blocks
_K_MULTIPLE = 32  # columns of the folded operands: whole AMX tiles (32 bf16)


def _compute_dtype(device: torch.device) -> torch.dtype:
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return torch.float32


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor,
                dtype: torch.dtype, block: int, want_grad: bool) -> Tensor:
        n, h = features.shape
        x, w = _operands(features, weight, bias, dtype)  # n k, v k (k > h when the bias is folded in)
        # d loss / d logits = softmax - onehot, kept in the compute dtype for the backward products
        grad_logits = x.new_empty(n, w.shape[0]) if want_grad else None  # n v
        lse = torch.empty(n, dtype=torch.float32, device=features.device)  # n
        rows = torch.arange(min(block, n), device=features.device)
        # many blocks (evaluation, IW-NLL): a contiguous k v copy of the weight makes each product
        # about 2x faster on oneDNN, which pays for the transposing copy after a few blocks
        w_t = w.T.contiguous() if n > _TRANSPOSE_AFTER * block else w.T  # k v
        for i in range(0, n, block):
            j = min(i + block, n)
            r, t = rows[: j - i], targets[i:j]
            logits = x[i:j] @ w_t  # r v, the bias included
            # one fused pass: softmax accumulates in float32 and writes the compute dtype
            probs = torch.softmax(logits, dim=-1)  # r v
            p_t = probs[r, t].float()  # r
            # lse = logit_t - log p_t; a target too unlikely for p_t to be a normal float takes the slow road
            lse[i:j] = logits[r, t].float() - p_t.log()
            tiny = p_t < _TINY
            if bool(tiny.any()):
                lse[i:j][tiny] = torch.logsumexp(logits[tiny].float(), dim=-1)
            if grad_logits is not None:
                grad_logits[i:j] = probs
                grad_logits[r + i, t] -= 1.0
        # the target logit from the same operands as the products (the bias column included), accumulated
        # in float32: the loss is then the cross-entropy of the logits the products compute, the function
        # whose gradient backward() returns. From the float32 operands instead, the bf16 value of a
        # bf16-trained PTB LM came out 0.087 nats per sentence below its float32 value (this way: +0.008)
        target_logit = (x.float() * w.index_select(0, targets).float()).sum(-1)  # n
        if grad_logits is not None:
            ctx.save_for_backward(x, w, grad_logits)
            ctx.shapes = (h, features.dtype, weight.dtype, None if bias is None else bias.dtype)
        return lse - target_logit

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, w, grad_logits = ctx.saved_tensors
        h, f_dtype, w_dtype, b_dtype = ctx.shapes
        g = grad_out.float()  # n
        grad_features = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_features = ((grad_logits @ w[:, :h]).float() * g[:, None]).to(f_dtype)  # n h
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            # one product gives both: x's column h is all ones, so column h of the result is the bias gradient
            grad_wb = grad_logits.T @ (x.float() * g[:, None]).to(x.dtype)  # v k
            if ctx.needs_input_grad[1]:
                grad_weight = grad_wb[:, :h].to(w_dtype)
            if ctx.needs_input_grad[2]:
                grad_bias = grad_wb[:, h].to(b_dtype)
        return grad_features, grad_weight, grad_bias, None, None, None, None


def _operands(features: Tensor, weight: Tensor, bias: Tensor | None, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(x, w)`` in ``dtype`` with ``x @ w.T`` the logits: with a bias, ``x = [features, 1, 0 ...]`` and
    ``w = [weight, bias, 0 ...]``, ``k`` columns (a multiple of ``_K_MULTIPLE``).

    Folding the bias into the product is cheaper than adding it: ``addmm`` (or a separate ``add_`` over
    the ``r v`` block) cost about 1 ms of 3.7 per 256-row block on the project's CPU, and the bias
    gradient comes out of the weight-gradient product instead of a separate pass over the ``n v``
    gradient (measured on the speed page, ``docs/results/speed.md``).
    """
    if bias is None:
        return features.to(dtype), weight.to(dtype)
    (n, h), v = features.shape, weight.shape[0]
    k = -(-(h + 1) // _K_MULTIPLE) * _K_MULTIPLE
    x = features.new_zeros(n, k, dtype=dtype)
    x[:, :h] = features
    x[:, h] = 1.0
    w = weight.new_zeros(v, k, dtype=dtype)
    w[:, :h] = weight
    w[:, h] = bias
    return x, w


def linear_cross_entropy(features: Tensor, layer: nn.Linear, targets: Tensor,
                         block: int = CE_BLOCK_ROWS) -> Tensor:
    """Per-row cross-entropy ``n`` of ``layer(features)`` against ``targets: n``, for ``features: n h``.

    Differentiable with respect to ``features`` and the layer's parameters. Runs in the autocast
    dtype when autocast is on (float32 reductions), else in float32.
    """
    if features.dim() != 2 or targets.shape != features.shape[:1]:
        raise ValueError(f"features must be n h and targets n (got {tuple(features.shape)} and {tuple(targets.shape)})")
    if features.shape[0] == 0:
        return features.new_zeros(0, dtype=torch.float32)
    dtype = _compute_dtype(features.device)
    params = [features, layer.weight] + ([] if layer.bias is None else [layer.bias])
    want_grad = torch.is_grad_enabled() and any(t.requires_grad for t in params)
    n = features.shape[0]
    pad = -n % ROW_MULTIPLE
    if pad:  # zero rows up to a multiple of ROW_MULTIPLE: few distinct matrix shapes (see ROW_MULTIPLE)
        features = torch.cat([features, features.new_zeros(pad, features.shape[1])])
        targets = torch.cat([targets, targets.new_zeros(pad)])
    with torch.autocast(features.device.type, enabled=False):
        out = _LinearCrossEntropy.apply(features, layer.weight, layer.bias, targets, dtype, block, want_grad)
    return out[:n]  # the padding rows get no gradient: their slice of the upstream gradient is zero
