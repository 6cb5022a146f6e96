"""Multi-head self-attention over a 2-D feature map: the layer that turns a
ResNet bottleneck into a BoT block (Srinivas et al., "Bottleneck Transformers
for Visual Recognition", CVPR 2021, Sec. 3 and Fig. 4).

For one head of dimension d (s = d ** -0.5), a query at (i, j) and a key at
(k, l) of an H x W map:

    relative       logit = s q.k + s' q.(r_h[k - i + H - 1] + r_w[l - j + W - 1])
    relative_only  logit =         s' q.(r_h[k - i + H - 1] + r_w[l - j + W - 1])
    absolute       logit = s q.k + s' q.(a_h[k] + a_w[l])
    none           logit = s q.k

with s' = s when ``scale_position=True`` (the authors' reference code scales q
before both terms; timm's ``scale_pos_embed=True``) and s' = 1 otherwise
(timm's default). Softmax runs over the H*W keys; the output is attention . v
with the heads concatenated and no output projection. ``r_h``, ``r_w``
(relative offsets) and ``a_h``, ``a_w`` (absolute rows and columns) are
learned and shared by all heads.

Any input size
    The tables are built for ``feat_size``. At another size (H', W') each
    table is resampled along its position axis by 1-D linear interpolation
    with half-pixel centres (``F.interpolate(mode="linear",
    align_corners=False)``, the rule of ``tf.image.resize`` that
    keras-cv-attention-models applies): ``rel_h`` from 2H-1 to 2H'-1 offsets,
    ``abs_h`` from H to H' rows, and likewise for the width. At the built size
    the tables are used unchanged, so the layer is exactly the fixed-size one;
    at every size gradients reach the tables through the interpolation.

How it is computed (``impl``)
    No N x N tensor (N = H*W) of position embeddings is built. The relative
    term is, per query, H row logits q.r_h[k - i] and W column logits
    q.r_w[l - j] (O(N (H + W) d) work); each path below brings them into the
    attention in its own way and applies its own scaling. All of them compute
    the same function and its gradients (second derivatives too, except ``flex``).

    * ``"fused"``: the logits become an additive bias for
      ``F.scaled_dot_product_attention``, so the fused kernel runs at head
      dim d. Without gradients the bias is built a block at a time
      (``bias_blocks``; on CPU a block small enough to be read back from
      cache); with gradients it is one differentiable bias.
    * ``"probs"``: batched matrix products that keep the attention
      probabilities for a hand-written backward (``_RelativeAttention``);
      on CPU in fp32/fp64 about 1.4x faster to train than ``one_call``.
    * ``"one_call"``: the row and column logits are appended to q and
      matching one-hot (row, column) indicators to k, so one fused attention
      call computes content plus position logit, its backward included; v is
      zero-padded to the same head dim because the fused kernels need equal
      head dims. Memory O(N).
    * ``"flex"``: PyTorch's FlexAttention, whose ``score_mod`` adds each key's
      row and column logit to its score: no N x N bias and no padded head dim,
      at the cost of a kernel compiled per input shape. Training on CUDA only.
    * ``"reference"``: the formula written out (logits, ``self.softmax``,
      probabilities times v). Its softmax is a module, so forward hooks,
      ``torch.fx`` and timm-style attention extraction see the attention
      probabilities; symbolic tracing (FX, ``torch.export``, ONNX) uses it.
    * ``"auto"`` (default) picks per call: ``reference`` while being traced
      or exported; ``one_call`` for ``relative_only``; ``fused`` without
      gradients; ``probs`` for training on CPU in fp32/fp64 while the
      probabilities fit in ``SAVED_PROBS_BYTES`` (and not under
      ``torch.compile`` or ``torch.func``); else ``one_call``.

    ``absolute`` and ``none`` have no relative logits: their fast path is one
    fused call (the absolute term folds into the keys, q.k + q.a = q.(k + a)),
    and they accept ``"auto"``, ``"fused"`` and ``"reference"``.

    Under ``torch.func`` transforms (``vmap``, ``grad``; with or without
    gradients) ``fused`` builds its bias in one piece (not in blocks) and
    ``probs`` runs the written-out products: their eager forms write into
    preallocated buffers (``out=`` and in-place ops), which ``vmap`` has no
    batching rule for, and ``probs``' autograd.Function has no functorch
    rules. The results are those of the eager paths; eager calls are
    unaffected.

    Second derivatives (gradient penalties, ``create_graph=True``): where a
    fused kernel or the hand-written backward has none, the backward
    recomputes the reference formula differentiably when asked for a graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..torch_private import functorch_active, softmax_

__all__ = [
    "IMPLS",
    "MHSA",
    "POSITION_ENCODINGS",
    "flex_attention",
    "fused_attention",
    "one_call_attention",
    "probs_attention",
    "reference_attention",
    "relative_logits",
    "resize_position_table",
    "restore_attention_impl",
    "set_attention_impl",
    "to_pair",
]

POSITION_ENCODINGS = ("relative", "relative_only", "absolute", "none")
IMPLS = ("auto", "fused", "probs", "one_call", "flex", "reference")
RELATIVE_ONLY_IMPLS = ("probs", "one_call", "flex")  # paths that exist only where there are relative logits


def to_pair(size: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    size = tuple(size)
    if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
        raise ConfigError(f"{name} must be a positive int or a pair (height, width) of positive ints, got {size!r}")
    return size  # type: ignore[return-value]


@torch.fx.wrap  # an FX leaf: its size check runs when a traced graph runs, not while tracing
def resize_position_table(table: Tensor, length: int) -> Tensor:
    """Resample a (L, d) table of position embeddings to (length, d) by 1-D
    linear interpolation with half-pixel centres; identity when L == length."""
    if not torch.compiler.is_exporting() and table.shape[0] == length:  # (export: no guard on the size)
        return table
    resized = F.interpolate(table.t().unsqueeze(0), size=length, mode="linear", align_corners=False)
    return resized.squeeze(0).t()


def _offset_index(length: int, device: torch.device) -> Tensor:
    """idx[a, b] = b - a + length - 1: the table row of key b seen from query a."""
    pos = torch.arange(length, device=device)
    return pos[None, :] - pos[:, None] + (length - 1)


def relative_logits(q: Tensor, rel_h: Tensor, rel_w: Tensor) -> Tensor:
    """Row and column relative logits of every query.

    Args:
        q: (..., H, W, d) queries on their grid.
        rel_h: (2H - 1, d) and rel_w: (2W - 1, d) relative tables at this size.

    Returns:
        (..., H*W, H + W): for the query at (i, j), entry k < H is
        q_ij . rel_h[k - i + H - 1] and entry H + l is q_ij . rel_w[l - j + W - 1].
    """
    height, width = q.shape[-3], q.shape[-2]
    emb_h = rel_h[_offset_index(height, q.device)].to(q.dtype)  # (H query rows, H key rows, d)
    emb_w = rel_w[_offset_index(width, q.device)].to(q.dtype)  # (W query cols, W key cols, d)
    logits_h = torch.einsum("...ijd,ikd->...ijk", q, emb_h)
    logits_w = torch.einsum("...ijd,jld->...ijl", q, emb_w)
    logits = torch.cat([logits_h, logits_w], dim=-1)
    return logits.flatten(-3, -2)


def _position_one_hot(height: int, width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(H*W, H + W): key (k, l) has a one in column k and in column H + l."""
    token = torch.arange(height * width, device=device)
    one_hot = torch.cat([F.one_hot(token // width, height), F.one_hot(token % width, width)], dim=-1)
    return one_hot.to(dtype)


def _attend(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """softmax(scale q k^T) v through the fused kernel: zero-pad q, k and v to one
    head dim (padding changes no dot product) and cut the output back."""
    value_dim = v.shape[-1]
    dim = max(q.shape[-1], value_dim)
    if q.device.type != "cpu":  # the GPU kernels want head dims in multiples of 8 (else the O(N^2) math path)
        dim = -(-dim // 8) * 8
    if q.shape[-1] < dim:
        q = F.pad(q, (0, dim - q.shape[-1]))
        k = F.pad(k, (0, dim - k.shape[-1]))
    if value_dim < dim:
        v = F.pad(v, (0, dim - value_dim))
    return F.scaled_dot_product_attention(q, k, v, scale=scale)[..., :value_dim]


def _aligned_head_dims(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """On GPUs, q, k and v zero-padded to head dims in multiples of 8 (each on its own; no dot product
    changes): PyTorch's memory-efficient and flash kernels need them, and without them it falls back to
    the math kernel, which holds the N x N logits. The caller cuts the output back to v's head dim."""
    if q.device.type == "cpu":
        return q, k, v
    return tuple(F.pad(t, (0, -t.shape[-1] % 8)) if t.shape[-1] % 8 else t for t in (q, k, v))  # type: ignore[return-value]


def _position_bias(rel: Tensor, height: int, out: Tensor) -> Tensor:
    """Write bias[..., (k, l)] = rel[..., k] + rel[..., height + l] for every query into ``out``
    (..., N_queries, N_keys) and return it: the relative logits as the additive attention bias."""
    width = rel.shape[-1] - height
    torch.add(rel[..., :height, None], rel[..., None, height:], out=out.unflatten(-1, (height, width)))
    return out


# Inference path, how much position bias one kernel call gets. On CPU the bias of a call should
# still be in the last-level cache when the kernel reads it (measured: 25% faster at 32x32 than
# 64 MB blocks); a head whose bias alone is larger goes in blocks of query rows, a multiple of 256
# (the CPU kernel's largest query split, which it uses for 768 rows and more). Elsewhere (CUDA) one
# call is best, as long as the bias stays within a memory bound.
CPU_BIAS_CALL_BYTES = 6 * 2**20
CPU_BIAS_ROWS = 1024
BIAS_BLOCK_BYTES = 256 * 2**20


def bias_blocks(batch: int, heads: int, tokens: int, element_size: int, device_type: str) -> tuple[int, int, int]:
    """(batch elements, heads, query rows) per kernel call of the inference path."""
    head_bytes = tokens * tokens * element_size
    if device_type != "cpu":
        rows = max(1, min(tokens, BIAS_BLOCK_BYTES // (batch * heads * tokens * element_size)))
        return batch, heads, rows
    per_call = CPU_BIAS_CALL_BYTES // head_bytes  # whole heads whose bias fits
    if per_call >= batch * heads:
        return batch, heads, tokens
    if per_call >= heads:
        return per_call // heads, heads, tokens
    if per_call >= 1:
        return 1, per_call, tokens
    return 1, 1, min(tokens, CPU_BIAS_ROWS)


def _attend_with_bias(
    q: Tensor, k: Tensor, v: Tensor, rel: Tensor, height: int, scale: float, blocks: tuple[int, int, int]
) -> Tensor:
    """softmax(scale q k^T + bias) v without gradients: the (row, column) relative logits become an
    additive bias, built for ``blocks`` = (batch elements, heads, query rows) at a time (see
    ``bias_blocks``), so the fused kernel runs at head dim d (no padding) and memory stays bounded;
    the result equals the one-call path.

    One bias buffer serves every block: a fresh allocation of this size is new memory from the
    operating system each time, and its page faults cost about ten times the writes themselves.
    The output is laid out (B, N, heads, d), the layout the kernel itself returns, so that merging
    the heads afterwards is a view."""
    batch, heads, tokens, _ = q.shape
    batch_step, head_step, rows = blocks
    if (batch_step, head_step, rows) == (batch, heads, tokens):
        bias = _position_bias(rel, height, q.new_empty(batch, heads, tokens, tokens))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    buffer = q.new_empty(batch_step, head_step, rows, tokens)
    out = q.new_empty(batch, tokens, heads, v.shape[-1]).transpose(1, 2)
    for b in range(0, batch, batch_step):
        b_end = min(b + batch_step, batch)
        for h in range(0, heads, head_step):
            h_end = min(h + head_step, heads)
            for r in range(0, tokens, rows):
                r_end = min(r + rows, tokens)
                bias = buffer[: b_end - b, : h_end - h, : r_end - r]
                _position_bias(rel[b:b_end, h:h_end, r:r_end], height, out=bias)
                out[b:b_end, h:h_end, r:r_end] = F.scaled_dot_product_attention(
                    q[b:b_end, h:h_end, r:r_end], k[b:b_end, h:h_end], v[b:b_end, h:h_end], attn_mask=bias, scale=scale
                )
    return out


def _dense_bias(rel: Tensor, height: int) -> Tensor:
    """(..., N, H + W) row and column logits to the (..., N, N) bias they add (differentiable)."""
    return (rel[..., :height].unsqueeze(-1) + rel[..., height:].unsqueeze(-2)).flatten(-2)


def _dense_attention(
    q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, scale: float, content: bool = True, softmax=None
) -> Tensor:
    """softmax([scale q k^T] + bias) v written out, every step differentiable (twice too)."""
    if content:
        logits = torch.matmul(q * scale, k.transpose(-1, -2))
        logits = logits if bias is None else logits + bias
    else:
        logits = bias
    probs = softmax(logits) if softmax is not None else logits.softmax(-1)
    return torch.matmul(probs, v)


# Training path on CPU: attention probabilities up to this many bytes per layer are kept for the
# backward (32x32 maps at batch 8: 128 MB), which builds the score gradient for blocks of query rows
# of at most GRAD_BLOCK_BYTES. Larger maps take the one-call path, whose memory is O(N).
SAVED_PROBS_BYTES = 256 * 2**20
GRAD_BLOCK_BYTES = 64 * 2**20


class _RelativeAttention(torch.autograd.Function):
    """softmax([scale q k^T] + bias) v with bias[(i, j), (k, l)] = rel[(i, j), k] + rel[(i, j), H + l],
    and its backward, from batched matrix products at head dim d.

    The forward keeps the probabilities P (B * heads * N^2 floats) instead of recomputing them, so
    the backward is four products (dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q with
    dS = P (dP - rowsum(dO O))) and the position logits' gradient is dS summed over key columns
    (row logits) and key rows (column logits). On CPU this is about 1.4x faster than the fused
    kernel's backward at the padded head dim d + H + W; ``SAVED_PROBS_BYTES`` bounds its memory.
    Asked for a graph of the gradients (``create_graph=True``), the backward differentiates the
    written-out formula instead, so second derivatives exist.
    """

    @staticmethod
    def forward(
        ctx, q: Tensor, k: Tensor, v: Tensor, rel: Tensor, height: int, scale: float, content: bool, block_bytes: int
    ) -> Tensor:
        """q, k: (B * heads, N, d); v: (B * heads, N, d_v); rel: (B * heads, N, H + W)."""
        tokens = q.shape[1]
        probs = _position_bias(rel, height, q.new_empty(q.shape[0], tokens, tokens))
        if content:
            probs.baddbmm_(q, k.transpose(1, 2), alpha=scale)
        # In place: the CPU kernel reads each row before writing it (torch 2.14; the tests check it).
        softmax_(probs)
        out = torch.bmm(probs, v)
        ctx.save_for_backward(q, k, v, rel, probs, out)
        ctx.height, ctx.scale, ctx.content, ctx.block_bytes = height, scale, content, block_bytes
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, rel, probs, out = ctx.saved_tensors
        height, scale, content = ctx.height, ctx.scale, ctx.content
        if torch.is_grad_enabled():  # create_graph=True: second derivatives through the written-out formula
            inputs = _fresh_aliases(q, k, v, rel)
            with torch.enable_grad():
                again = _dense_attention(*inputs[:3], _dense_bias(inputs[3], height), scale, content)
            wanted = [t for t in inputs if t.requires_grad]
            found = iter(torch.autograd.grad(again, wanted, grad_out, create_graph=True, allow_unused=True))
            return (*(next(found) if t.requires_grad else None for t in inputs), None, None, None, None)
        tokens = q.shape[1]
        width = tokens // height
        grad_out = grad_out.contiguous()
        grad_v = torch.bmm(probs.transpose(1, 2), grad_out)
        delta = (grad_out * out).sum(-1, keepdim=True)  # rowsum(dO * O) = rowsum(dP * P)
        grad_q, grad_k = torch.empty_like(q), torch.zeros_like(k)
        grad_rel = q.new_empty(q.shape[0], tokens, height + width)
        rows = max(1, min(tokens, ctx.block_bytes // (q.shape[0] * tokens * q.element_size())))
        buffer = q.new_empty(q.shape[0], rows, tokens)
        for start in range(0, tokens, rows):  # blocks of query rows bound the dS buffer
            stop = min(start + rows, tokens)
            grad_s = buffer[:, : stop - start]
            torch.bmm(grad_out[:, start:stop], v.transpose(1, 2), out=grad_s)
            grad_s.sub_(delta[:, start:stop]).mul_(probs[:, start:stop])
            if content:
                torch.bmm(grad_s, k, out=grad_q[:, start:stop])
                grad_k.baddbmm_(grad_s.transpose(1, 2), q[:, start:stop])
            grid = grad_s.view(-1, stop - start, height, width)
            torch.sum(grid, -1, out=grad_rel[:, start:stop, :height])
            torch.sum(grid, -2, out=grad_rel[:, start:stop, height:])
        grad_q, grad_k = (grad_q.mul_(scale), grad_k.mul_(scale)) if content else (None, None)
        return grad_q, grad_k, grad_v, grad_rel, None, None, None, None


def _fresh_aliases(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Differentiable aliases of saved inputs, for a backward that recomputes its forward: the
    gradient with respect to an alias counts only the recomputed paths (an input may itself depend
    on another, as the relative logits depend on q, and autograd adds that path already)."""
    with torch.enable_grad():
        return tuple(t.view_as(t) if t.requires_grad else t for t in tensors)


class _SecondOrderByRecompute(torch.autograd.Function):
    """``fast(*inputs)`` with its own backward, plus second derivatives: asked for a graph of the
    gradients (``create_graph=True``), the backward differentiates ``slow(*inputs)``, the same
    function written out, instead. For fused kernels that have no derivative of their backward."""

    @staticmethod
    def forward(ctx, fast, slow, *inputs: Tensor) -> Tensor:
        detached = [t.detach().requires_grad_(t.requires_grad) for t in inputs]
        with torch.enable_grad():
            out = fast(*detached)
        ctx.slow, ctx.out, ctx.detached = slow, out, detached
        ctx.save_for_backward(*inputs)
        return out.detach().clone()  # a copy: the kernel's saved output stays intact if the caller edits this one

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():
            inputs = _fresh_aliases(*ctx.saved_tensors)
            with torch.enable_grad():
                out = ctx.slow(*inputs)
            create_graph = True
        else:
            inputs, out, create_graph = ctx.detached, ctx.out, False
        wanted = [t for t in inputs if t.requires_grad]
        # The kernel's graph is kept (retain_graph) so that a caller's retain_graph=True works as usual.
        found = iter(
            torch.autograd.grad(out, wanted, grad_out, retain_graph=True, create_graph=create_graph, allow_unused=True)
        )
        return (None, None, *(next(found) if t.requires_grad else None for t in inputs))


def _grid(q: Tensor, height: int, width: int) -> Tensor:
    return q.unflatten(-2, (height, width))


def fused_attention(
    q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor, height: int, width: int,
    scale: float, position_scale: float, content: bool = True,
) -> Tensor:  # fmt: skip
    """The ``"fused"`` path: the relative logits as an additive bias of the fused attention kernel.

    q, k: (B, heads, N, d); v: (B, heads, N, d_v); rel_h (2H - 1, d) and rel_w (2W - 1, d) are the
    tables at this size. Returns (B, heads, N, d_v) =
    softmax(scale q k^T + position_scale q.r) v (``content=False``: without the q k^T term)."""
    rel = relative_logits(_grid(q, height, width), rel_h * position_scale, rel_w * position_scale)
    if not content:  # a zero-width content term: zero queries and keys of one channel
        q = k = q.new_zeros(1, 1, 1, 1).expand(*q.shape[:-1], 1)
    # torch.func transforms take the one-bias form too: the blocked build writes into buffers
    # (out= ops, slice assignment), which vmap cannot batch, and their tensors may not report
    # requires_grad.
    value_dim = v.shape[-1]
    q, k, v = _aligned_head_dims(q, k, v)
    if functorch_active() or (
        torch.is_grad_enabled() and (rel.requires_grad or q.requires_grad or k.requires_grad or v.requires_grad)
    ):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=_dense_bias(rel, height), scale=scale)
    else:
        blocks = bias_blocks(q.shape[0], q.shape[1], q.shape[2], q.element_size(), q.device.type)
        out = _attend_with_bias(q, k, v, rel, height, scale, blocks)
    return out[..., :value_dim]


def probs_attention(
    q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor, height: int, width: int,
    scale: float, position_scale: float, content: bool = True, grad_block_bytes: int = GRAD_BLOCK_BYTES,
) -> Tensor:  # fmt: skip
    """The ``"probs"`` path (arguments as ``fused_attention``): probabilities kept for a hand-written
    backward (``_RelativeAttention``). Memory B * heads * N^2 floats per layer, plus a score-gradient
    buffer of at most ``grad_block_bytes`` (query rows a block at a time) in the backward."""
    rel = relative_logits(_grid(q, height, width), rel_h * position_scale, rel_w * position_scale)
    if functorch_active():
        # The same products written out: _RelativeAttention computes in place and out= (which vmap
        # cannot batch), and torch.func differentiates the written-out formula itself.
        return _dense_attention(q, k, v, _dense_bias(rel, height), scale, content)
    batch, heads, tokens = q.shape[:3]
    q, k, v, rel = (t.reshape(batch * heads, tokens, t.shape[-1]) for t in (q, k, v, rel))
    out = _RelativeAttention.apply(q, k, v, rel, height, scale, content, grad_block_bytes)
    # With one token or one head the layer's result is a view of ``out``, which the backward needs:
    # a copy keeps it intact if the caller edits the result in place.
    return out.view(batch, heads, tokens, -1) if tokens > 1 and heads > 1 else out.clone().view(batch, heads, tokens, -1)


def one_call_attention(
    q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor, height: int, width: int,
    scale: float, position_scale: float, content: bool = True,
) -> Tensor:  # fmt: skip
    """The ``"one_call"`` path (arguments as ``fused_attention``): the row and column logits appended
    to q, one-hot (row, column) indicators to k, one fused call. The kernel scales q.k by ``scale``,
    so the tables are multiplied by position_scale / scale."""
    factor = position_scale / scale
    rel = relative_logits(_grid(q, height, width), rel_h * factor, rel_w * factor)
    one_hot = _position_one_hot(height, width, q.dtype, q.device).expand(*q.shape[:-1], -1)

    def fast(q: Tensor, k: Tensor, v: Tensor, rel: Tensor) -> Tensor:
        if content:
            return _attend(torch.cat([q, rel], dim=-1), torch.cat([k, one_hot], dim=-1), v, scale)
        return _attend(rel, one_hot, v, scale)

    def slow(q: Tensor, k: Tensor, v: Tensor, rel: Tensor) -> Tensor:
        return _dense_attention(q, k, v, _dense_bias(rel * scale, height), scale, content)

    return _twice_differentiable(fast, slow, q, k, v, rel)


_compiled_flex = None


def _flex_kernel(device: torch.device):
    """PyTorch's FlexAttention: on CUDA compiled once per process, with a kernel generated per input shape
    (inside ``torch.compile`` the function is traced into the caller's graph instead). Elsewhere its eager
    form, an unfused reference, for checks rather than speed."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention as flex

    if torch.compiler.is_compiling() or device.type != "cuda":
        return flex
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex, dynamic=False)
    return _compiled_flex


def flex_attention(
    q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor, height: int, width: int,
    scale: float, position_scale: float, content: bool = True,
) -> Tensor:  # fmt: skip
    """The ``"flex"`` path (arguments as ``fused_attention``): PyTorch's FlexAttention with a ``score_mod``
    that adds each key's row and column logit to the score, so neither the N x N bias nor padded head
    dims exist; the kernel is generated by ``torch.compile`` for each input shape (the first call at a
    size compiles). CUDA for training: PyTorch's FlexAttention has no CPU backward."""
    rel = relative_logits(_grid(q, height, width), rel_h * position_scale, rel_w * position_scale)
    if functorch_active():
        return _dense_attention(q, k, v, _dense_bias(rel, height), scale, content)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, rel))
    if needs_grad and q.device.type != "cuda":
        raise ConfigError(
            "impl='flex' trains on CUDA only (PyTorch's FlexAttention has no CPU backward); use impl='auto'"
        )
    dtype = torch.promote_types(q.dtype, v.dtype)  # under autocast the projections may differ
    q, k, v, rel = (t.to(dtype) for t in (q, k, v, rel))

    def add_position(score: Tensor, b: Tensor, h: Tensor, query: Tensor, key: Tensor) -> Tensor:
        position = rel[b, h, query, key // width] + rel[b, h, query, height + key % width]
        return score + position if content else position

    # The kernel wants query, key and value head dims of one power of two (16 at least): zeros change nothing.
    dim = max(16, 1 << (max(q.shape[-1], v.shape[-1]) - 1).bit_length())
    value_dim = v.shape[-1]
    q, k, v = (F.pad(t, (0, dim - t.shape[-1])) if t.shape[-1] < dim else t for t in (q, k, v))
    return _flex_kernel(q.device)(q, k, v, score_mod=add_position, scale=scale)[..., :value_dim]


def plain_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """softmax(scale q k^T) v by the fused kernel (no relative logits: ``absolute`` and ``none``)."""

    def fast(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(*_aligned_head_dims(q, k, v), scale=scale)[..., : v.shape[-1]]

    def slow(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return _dense_attention(q, k, v, None, scale)

    return _twice_differentiable(fast, slow, q, k, v)


def _twice_differentiable(fast, slow, *inputs: Tensor) -> Tensor:
    """``fast(*inputs)``, wrapped for second derivatives when a graph is being recorded (torch.compile
    and torch.func trace ``fast`` itself: they have their own rules for derivatives)."""
    transformed = torch.compiler.is_compiling() or functorch_active()
    if transformed or not torch.is_grad_enabled() or not any(t.requires_grad for t in inputs):
        return fast(*inputs)
    return _SecondOrderByRecompute.apply(fast, slow, *inputs)


def reference_attention(
    q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor, height: int, width: int,
    scale: float, position_scale: float, content: bool = True, softmax: nn.Module | None = None,
) -> Tensor:  # fmt: skip
    """The ``"reference"`` path (arguments as ``fused_attention``): the (B, heads, N, N) logits
    written out, ``softmax`` (a module, so hooks see the probabilities), then times v."""
    rel = relative_logits(_grid(q, height, width), rel_h * position_scale, rel_w * position_scale)
    return _dense_attention(q, k, v, _dense_bias(rel, height), scale, content, softmax)


_RELATIVE_PATHS = {
    "fused": fused_attention, "probs": probs_attention, "one_call": one_call_attention, "flex": flex_attention,
}


class MHSA(nn.Module):
    """All-to-all multi-head self-attention over a (B, dim, H, W) feature map.

    Args:
        dim: input and output channels; split evenly over the heads.
        feat_size: the (H, W) the position tables are built for (an int for
            square maps). Other sizes work too, see the module docstring.
        heads: number of heads (paper: 4).
        position_encoding: "relative" (paper default, qk + q r_rel),
            "relative_only" (q r_rel), "absolute" (qk + q r_abs) or "none" (qk),
            the rows of the paper's position-encoding ablation.
        scale_position: scale q by d^-0.5 before the position term as well
            (the reference code); False scales only the content term (timm's
            default).
        qk_head_dim: the per-head dimension d of queries and keys (and of the
            position tables); default the value head dim ``dim // heads``.
            A smaller one (timm's eca_botnext26ts: 16 against 128) saves
            compute; the scale s is then qk_head_dim ** -0.5.
        impl: how the attention is computed: "auto" (default), "fused",
            "probs", "one_call", "flex" or "reference" (see the module docstring).
            Every path computes the same function; this is a speed, memory
            and introspection setting. It can be changed later
            (``layer.impl = "reference"``, or ``set_attention_impl`` for a
            whole model).

    Parameters: ``qkv``, a bias-free 1x1 conv whose output channels are q, k
    (``heads * qk_head_dim`` each) and v (``dim``) in that order, each with
    every head's channels contiguous (so a timm ``BottleneckAttn.qkv`` weight
    maps one to one); ``rel_h`` (2H-1, d) and ``rel_w`` (2W-1, d) for the
    relative encodings, ``abs_h`` (H, d) and ``abs_w`` (W, d) for the absolute one.
    ``softmax`` is the module the ``reference`` path computes the attention
    probabilities with: a forward hook on it receives them as (B, heads, N, N).
    """

    def __init__(
        self,
        dim: int,
        feat_size: int | tuple[int, int],
        heads: int = 4,
        position_encoding: str = "relative",
        scale_position: bool = True,
        qk_head_dim: int | None = None,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(heads, int) or heads < 1:
            raise ConfigError(f"heads must be a positive int, got {heads!r}")
        if not isinstance(dim, int) or dim < 1 or dim % heads:
            raise ConfigError(f"heads={heads} must divide the attention width dim={dim}; pick heads from its divisors")
        if position_encoding not in POSITION_ENCODINGS:
            raise ConfigError(
                f"unknown position_encoding {position_encoding!r}; choose one of {', '.join(POSITION_ENCODINGS)}"
            )
        if qk_head_dim is not None and (not isinstance(qk_head_dim, int) or qk_head_dim < 1):
            raise ConfigError(f"qk_head_dim must be a positive int or None, got {qk_head_dim!r}")
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads  # of the values
        self.qk_head_dim = qk_head_dim or self.head_dim
        self.feat_size = to_pair(feat_size, "feat_size")
        self.position_encoding = position_encoding
        self.scale_position = scale_position
        self.impl = impl
        self.qkv = nn.Conv2d(dim, 2 * heads * self.qk_head_dim + dim, kernel_size=1, bias=False)
        self.softmax = nn.Softmax(dim=-1)
        height, width = self.feat_size
        if position_encoding in ("relative", "relative_only"):
            self.rel_h = nn.Parameter(torch.empty(2 * height - 1, self.qk_head_dim))
            self.rel_w = nn.Parameter(torch.empty(2 * width - 1, self.qk_head_dim))
        elif position_encoding == "absolute":
            self.abs_h = nn.Parameter(torch.empty(height, self.qk_head_dim))
            self.abs_w = nn.Parameter(torch.empty(width, self.qk_head_dim))
        self.reset_parameters()

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, impl: str) -> None:
        if impl not in IMPLS:
            raise ConfigError(f"unknown attention impl {impl!r}; choose one of {', '.join(IMPLS)}")
        if impl in RELATIVE_ONLY_IMPLS and self.position_encoding not in ("relative", "relative_only"):
            raise ConfigError(
                f"impl={impl!r} routes relative position logits, which position_encoding="
                f"{self.position_encoding!r} does not have; use 'auto', 'fused' or 'reference'"
            )
        self._impl = impl

    def reset_parameters(self) -> None:
        nn.init.normal_(self.qkv.weight, std=self.dim**-0.5)
        # The paper's tables start at N(0, d^-0.5); the reference gist passes d^-0.5 as the mean by mistake.
        for name in ("rel_h", "rel_w", "abs_h", "abs_w"):
            if hasattr(self, name):
                nn.init.normal_(getattr(self, name), std=self.qk_head_dim**-0.5)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, feat_size={self.feat_size}, heads={self.heads}, qk_head_dim={self.qk_head_dim}, "
            f"position_encoding={self.position_encoding!r}, scale_position={self.scale_position}, impl={self.impl!r}"
        )

    def _check_input(self, x: Tensor) -> None:
        if isinstance(x, torch.fx.Proxy):  # symbolic tracing: the checks go into the graph
            torch._assert(x.dim() == 4, "MHSA expects a 4-D (batch, channels, height, width) tensor")
            torch._assert(x.shape[1] == self.dim, f"MHSA was built for {self.dim} input channels")
            return
        if not isinstance(x, Tensor):
            raise TypeError(f"MHSA expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"MHSA expects a 4-D (batch, channels, height, width) tensor, got shape {tuple(x.shape)}")
        if x.shape[1] != self.dim:
            raise ValueError(f"MHSA was built for {self.dim} channels, got {x.shape[1]} (input shape {tuple(x.shape)})")
        if not x.is_floating_point():
            raise TypeError(f"MHSA expects a floating-point tensor, got {x.dtype}")

    def _path(self, x: Tensor, batch: int, tokens: int) -> str:
        """The path this call takes: ``impl``, or for "auto" the rule in the module docstring."""
        symbolic = isinstance(x, torch.fx.Proxy)
        if symbolic and self.impl not in ("auto", "reference"):
            raise ConfigError(
                f"impl={self.impl!r} cannot be traced symbolically (it chooses blocks by input size); "
                f"trace with impl='auto' or 'reference'"
            )
        if torch.jit.is_tracing():
            raise ConfigError(
                "TorchScript tracing (torch.jit.trace, torch.onnx.export(..., dynamo=False)) records the position "
                "tables' resampling for one input size only; export with botnet.export.to_onnx or "
                "torch.onnx.export(..., dynamo=True), or trace with torch.export.export"
            )
        if self.impl != "auto":
            return self.impl
        if symbolic or torch.compiler.is_exporting():
            return "reference"
        if self.position_encoding not in ("relative", "relative_only"):
            return "fused"
        if self.position_encoding == "relative_only":
            return "one_call"
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        if not needs_grad:
            return "fused"
        fits = batch * self.heads * tokens * tokens * x.element_size() <= SAVED_PROBS_BYTES
        cpu_full_precision = x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
        # torch.compile and torch.func transforms (grad, vmap) take the one-call path, which they trace.
        traced = torch.compiler.is_compiling() or functorch_active()
        return "probs" if fits and cpu_full_precision and not traced else "one_call"

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        batch, _, height, width = x.shape
        path = self._path(x, batch, height * width)
        if path == "reference":
            return self._forward_reference(x)
        tokens = height * width
        scale = self.qk_head_dim**-0.5
        # The projection runs channels_last (oneDNN's fast layout on CPU); its output, read as
        # (B, N, channels) and split, gives q, k, v as strided (B, heads, N, d) views without a copy.
        # (torch.func transforms cannot ask for a memory format; their output layout is theirs to choose.)
        transformed = functorch_active()
        channels_last = not transformed and x.is_contiguous(memory_format=torch.channels_last)
        qkv = self.qkv(x if transformed else x.contiguous(memory_format=torch.channels_last))
        q, k, v = self._split_heads(qkv.permute(0, 2, 3, 1).reshape(batch, tokens, -1))
        position_scale = scale if self.scale_position else 1.0
        if self.position_encoding == "none":
            out = plain_attention(q, k, v, scale)
        elif self.position_encoding == "absolute":
            # s q.k + s' q.a = s q.(k + (s' / s) a): the position folds into the keys.
            out = plain_attention(q, k + self._absolute_keys(height, width, q) / scale, v, scale)
        else:
            rel_h = resize_position_table(self.rel_h, 2 * height - 1)
            rel_w = resize_position_table(self.rel_w, 2 * width - 1)
            content = self.position_encoding == "relative"
            out = _RELATIVE_PATHS[path](q, k, v, rel_h, rel_w, height, width, scale, position_scale, content)
        # (B, heads, N, d) -> (B, H, W, dim), returned as an NCHW view (channels_last memory).
        out = out.transpose(1, 2).reshape(batch, height, width, self.dim).permute(0, 3, 1, 2)
        return out if channels_last else out.contiguous()

    def _split_heads(self, qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, N, channels) projection to q, k (B, heads, N, qk_head_dim) and v (B, heads, N, head_dim)."""
        qk_channels = self.heads * self.qk_head_dim
        q, k, v = qkv.split([qk_channels, qk_channels, self.dim], dim=-1)
        return (
            q.unflatten(-1, (self.heads, self.qk_head_dim)).transpose(1, 2),
            k.unflatten(-1, (self.heads, self.qk_head_dim)).transpose(1, 2),
            v.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2),
        )

    def _absolute_keys(self, height: int, width: int, q: Tensor) -> Tensor:
        """s' (a_h[k] + a_w[l]) for every key (k, l): (N, d), the absolute term's key-side vectors."""
        abs_h = resize_position_table(self.abs_h, height).to(q.dtype)
        abs_w = resize_position_table(self.abs_w, width).to(q.dtype)
        position_scale = self.qk_head_dim**-0.5 if self.scale_position else 1.0
        return (abs_h.unsqueeze(1) + abs_w.unsqueeze(0)).flatten(0, 1) * position_scale

    def _forward_reference(self, x: Tensor) -> Tensor:
        """The ``reference`` path: plain tensor operations only (no size-dependent choices), so FX,
        torch.export and ONNX trace it at symbolic sizes, and ``self.softmax`` sees the probabilities."""
        batch, _, height, width = x.shape
        scale = self.qk_head_dim**-0.5
        position_scale = scale if self.scale_position else 1.0
        q, k, v = self._split_heads(self.qkv(x).flatten(2).transpose(1, 2))
        if self.position_encoding in ("relative", "relative_only"):
            rel_h = resize_position_table(self.rel_h, 2 * height - 1)
            rel_w = resize_position_table(self.rel_w, 2 * width - 1)
            content = self.position_encoding == "relative"
            out = reference_attention(q, k, v, rel_h, rel_w, height, width, scale, position_scale, content, self.softmax)
        else:
            bias = None
            if self.position_encoding == "absolute":
                bias = torch.matmul(q, self._absolute_keys(height, width, q).transpose(0, 1))
            out = _dense_attention(q, k, v, bias, scale, softmax=self.softmax)
        return out.transpose(-1, -2).reshape(batch, self.dim, height, width)


def set_attention_impl(model: nn.Module, impl: str) -> dict[str, str]:
    """Set ``impl`` on every MHSA of ``model``; returns the previous setting of each (by module name),
    which ``restore_attention_impl`` puts back."""
    layers = {name: module for name, module in model.named_modules() if isinstance(module, MHSA)}
    previous = {name: layer.impl for name, layer in layers.items()}
    for layer in layers.values():
        layer.impl = impl
    return previous


def restore_attention_impl(model: nn.Module, previous: dict[str, str]) -> None:
    modules = dict(model.named_modules())
    for name, impl in previous.items():
        modules[name].impl = impl
