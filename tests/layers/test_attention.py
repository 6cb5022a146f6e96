"""MHSA against a brute-force per-position formula (the paper's relative attention) and against timm's BottleneckAttn."""

import contextlib

import numpy as np
import pytest
import torch

from botnet.layers import MHSA, POSITION_ENCODINGS, attention, relative_logits, resize_position_table

SIZES = [(4, 4), (5, 7), (7, 3), (1, 6)]


def interp_half_pixel(table: torch.Tensor, length: int) -> torch.Tensor:
    """Independent 1-D linear resampling with half-pixel centres (numpy)."""
    old = table.shape[0]
    src = (np.arange(length) + 0.5) * old / length - 0.5
    data = table.detach().double().numpy()
    cols = [np.interp(src, np.arange(old), data[:, c]) for c in range(data.shape[1])]
    return torch.from_numpy(np.stack(cols, axis=1))


def brute_force(layer: MHSA, x: torch.Tensor) -> torch.Tensor:
    """The paper's formula (Fig. 4, relative logits), one query position at a time, in float64."""
    x = x.double()
    batch, _, height, width = x.shape
    heads, d, d_v = layer.heads, layer.qk_head_dim, layer.head_dim
    s = d**-0.5
    s_pos = s if layer.scale_position else 1.0
    qkv = torch.nn.functional.conv2d(x, layer.qkv.weight.double())
    q, k, v = (t.reshape(batch, heads, -1, height, width) for t in qkv.split([heads * d, heads * d, heads * d_v], 1))
    encoding = layer.position_encoding
    if encoding in ("relative", "relative_only"):
        r_h = interp_half_pixel(layer.rel_h, 2 * height - 1)
        r_w = interp_half_pixel(layer.rel_w, 2 * width - 1)
    if encoding == "absolute":
        a_h = interp_half_pixel(layer.abs_h, height)
        a_w = interp_half_pixel(layer.abs_w, width)
    out = torch.zeros(batch, heads, d_v, height, width, dtype=torch.float64)
    rows, cols = torch.arange(height), torch.arange(width)
    for i in range(height):
        for j in range(width):
            q_ij = q[..., i, j]  # (B, heads, d)
            logits = torch.zeros(batch, heads, height, width, dtype=torch.float64)
            if encoding != "relative_only":
                logits += s * torch.einsum("bhd,bhdkl->bhkl", q_ij, k)
            if encoding in ("relative", "relative_only"):
                pos = r_h[rows - i + height - 1][:, None, :] + r_w[cols - j + width - 1][None, :, :]
            elif encoding == "absolute":
                pos = a_h[:, None, :] + a_w[None, :, :]
            if encoding != "none":
                logits += s_pos * torch.einsum("bhd,kld->bhkl", q_ij, pos)
            attn = logits.flatten(-2).softmax(-1).reshape(batch, heads, height, width)
            out[..., i, j] = torch.einsum("bhkl,bhdkl->bhd", attn, v)
    return out.reshape(batch, heads * d_v, height, width)


@pytest.mark.parametrize("encoding", POSITION_ENCODINGS)
@pytest.mark.parametrize("scale_position", [True, False])
@pytest.mark.parametrize("size", SIZES)
def test_matches_brute_force_at_built_size(encoding, scale_position, size):
    torch.manual_seed(0)
    layer = MHSA(16, size, heads=4, position_encoding=encoding, scale_position=scale_position)
    x = torch.randn(2, 16, *size)
    torch.testing.assert_close(layer(x).double(), brute_force(layer, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("encoding", POSITION_ENCODINGS)
@pytest.mark.parametrize("qk_head_dim", [2, 7])
@pytest.mark.parametrize("grad", [False, True])
def test_qk_head_dim_apart_from_values(encoding, qk_head_dim, grad):
    """Queries and keys narrower (2) or wider (7) than the values (4 per head), inference and training paths."""
    torch.manual_seed(3)
    layer = MHSA(16, (5, 4), heads=4, position_encoding=encoding, qk_head_dim=qk_head_dim)
    assert layer.qkv.weight.shape[0] == 2 * 4 * qk_head_dim + 16
    x = torch.randn(2, 16, 6, 3)
    with torch.set_grad_enabled(grad):
        out = layer(x)
    assert out.shape == (2, 16, 6, 3)
    torch.testing.assert_close(out.double(), brute_force(layer, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("encoding", POSITION_ENCODINGS)
@pytest.mark.parametrize(("built", "run"), [((4, 4), (7, 5)), ((6, 5), (3, 2)), ((5, 5), (5, 9)), ((1, 1), (3, 4))])
def test_matches_brute_force_at_other_sizes(encoding, built, run):
    torch.manual_seed(1)
    layer = MHSA(16, built, heads=2, position_encoding=encoding)
    x = torch.randn(2, 16, *run)
    torch.testing.assert_close(layer(x).double(), brute_force(layer, x), atol=1e-5, rtol=1e-5)


# Blocks of the inference bias path, (batch elements, heads, query rows) per kernel call, for batch 3
# and 4 heads: one call; 2 batch elements; 3 heads; 1 head; 4 query rows. Each leaves a shorter last block.
BLOCKINGS = {"one call": None, "2 batch elements": (2, 4, 0), "3 heads": (1, 3, 0), "1 head": (1, 1, 0), "rows": (1, 1, 4)}


@pytest.mark.parametrize("blocking", BLOCKINGS)
@pytest.mark.parametrize(("built", "run", "batch"), [((5, 7), (5, 7), 3), ((4, 4), (9, 6), 3)])
def test_inference_bias_blocks_match_brute_force(built, run, batch, blocking):
    """Without gradients the relative term is an additive bias, built a block at a time."""
    torch.manual_seed(7)
    layer = MHSA(16, built, heads=4, impl="fused")
    x = torch.randn(batch, 16, *run)
    with torch.no_grad():
        out = layer(x)
        if BLOCKINGS[blocking]:  # the same attention in the blocks named (0 rows: all of them)
            height, width = run
            qkv = layer.qkv(x).flatten(2).transpose(1, 2)
            q, k, v = layer._split_heads(qkv)
            rel_h = resize_position_table(layer.rel_h, 2 * height - 1) * 0.5
            rel_w = resize_position_table(layer.rel_w, 2 * width - 1) * 0.5
            rel = relative_logits(q.unflatten(-2, run), rel_h, rel_w)
            b, h, rows = BLOCKINGS[blocking]
            blocked = attention._attend_with_bias(q, k, v, rel, height, 0.5, (b, h, rows or height * width))
            out = blocked.transpose(1, 2).reshape(batch, height, width, 16).permute(0, 3, 1, 2)
    torch.testing.assert_close(out.double(), brute_force(layer, x), atol=1e-5, rtol=1e-5)


def test_bias_blocks_plan():
    # CPU: 14x14, batch 8, 4 heads: 4.9 MB of bias in one call.
    assert attention.bias_blocks(8, 4, 196, 4, "cpu") == (8, 4, 196)
    # 32x32: 4 MB per head, one head per call; 64x64: 64 MB per head, blocks of query rows.
    assert attention.bias_blocks(8, 4, 1024, 4, "cpu") == (1, 1, 1024)
    assert attention.bias_blocks(2, 4, 4096, 4, "cpu") == (1, 1, attention.CPU_BIAS_ROWS)
    # Whole batch elements per call when several fit.
    assert attention.bias_blocks(8, 4, 256, 4, "cpu") == (attention.CPU_BIAS_CALL_BYTES // (256 * 256 * 4) // 4, 4, 256)
    # Other devices: one call unless the bias passes BIAS_BLOCK_BYTES, then blocks of query rows.
    assert attention.bias_blocks(64, 4, 196, 2, "cuda") == (64, 4, 196)
    batch, heads, rows = attention.bias_blocks(4, 4, 4096, 2, "cuda")
    assert (batch, heads) == (4, 4) and rows * 4 * 4 * 4096 * 2 <= attention.BIAS_BLOCK_BYTES < 2 * rows * 4 * 4 * 4096 * 2


def dense_reference(layer: MHSA, x: torch.Tensor) -> torch.Tensor:
    """The relative-position layer as full N x N logits in float64, differentiable in x and in every
    parameter: the autograd reference for the training paths."""
    batch, _, height, width = x.shape
    heads, d, d_v = layer.heads, layer.qk_head_dim, layer.head_dim
    s = d**-0.5
    s_pos = s if layer.scale_position else 1.0
    qkv = torch.nn.functional.conv2d(x.double(), layer.qkv.weight.double())
    q, k, v = (
        t.reshape(batch, heads, -1, height * width).transpose(-1, -2)  # (B, heads, N, d)
        for t in qkv.split([heads * d, heads * d, heads * d_v], 1)
    )
    rows, cols = torch.arange(height), torch.arange(width)
    r_h = resize_position_table(layer.rel_h, 2 * height - 1).double()[rows[None, :] - rows[:, None] + height - 1]
    r_w = resize_position_table(layer.rel_w, 2 * width - 1).double()[cols[None, :] - cols[:, None] + width - 1]
    pos = r_h[:, None, :, None, :] + r_w[None, :, None, :, :]  # (i, j, k, l, d)
    pos = pos.reshape(height * width, height * width, d)
    logits = s_pos * torch.einsum("bhnd,nmd->bhnm", q, pos)
    if layer.position_encoding == "relative":
        logits = logits + s * q @ k.transpose(-1, -2)
    out = logits.softmax(-1) @ v
    return out.transpose(-1, -2).reshape(batch, heads * d_v, height, width)


RELATIVE_PATHS = ["fused", "probs", "one_call", "reference"]


def layer_and_reference_grads(layer: MHSA, x: torch.Tensor, weight: torch.Tensor):
    """The layer's output and gradients (input, then every parameter), and the dense reference's in float64."""
    x = x.clone().requires_grad_()
    out = layer(x)
    (out * weight).sum().backward()
    grads = [x.grad] + [p.grad for p in layer.parameters()]
    layer.zero_grad()
    x_ref = x.detach().double().requires_grad_()
    expected = dense_reference(layer, x_ref)
    (expected * weight.double()).sum().backward()
    expected_grads = [x_ref.grad] + [p.grad for p in layer.parameters()]
    layer.zero_grad()
    return (out, grads), (expected, expected_grads)


@pytest.mark.parametrize("encoding", ["relative", "relative_only"])
@pytest.mark.parametrize("impl", RELATIVE_PATHS + ["probs in blocks"])
@pytest.mark.parametrize(("scale_position", "qk_head_dim"), [(True, None), (False, None), (False, 3)])
@pytest.mark.parametrize(("built", "run"), [((5, 7), (5, 7)), ((4, 4), (7, 3)), ((3, 6), (1, 5))])
def test_each_path_matches_dense_reference_with_gradients(encoding, impl, scale_position, qk_head_dim, built, run):
    """Outputs and the gradients of the input and of every parameter, each path called by name."""
    torch.manual_seed(11)
    layer = MHSA(16, built, heads=4, position_encoding=encoding, scale_position=scale_position, qk_head_dim=qk_head_dim)
    layer.impl = "probs" if impl == "probs in blocks" else impl
    if impl == "probs in blocks":  # the backward's score gradient a few query rows at a time
        layer.forward = lambda x: forward_probs_in_blocks(layer, x, block_bytes=3000)
    x, weight = torch.randn(2, 16, *run), torch.randn(2, 16, *run)
    (out, grads), (expected, expected_grads) = layer_and_reference_grads(layer, x, weight)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got.double(), want.double(), atol=1e-5, rtol=1e-5)


def forward_probs_in_blocks(layer: MHSA, x: torch.Tensor, block_bytes: int) -> torch.Tensor:
    """The layer's probs path with a small backward block, through the path function itself."""
    batch, _, height, width = x.shape
    q, k, v = layer._split_heads(layer.qkv(x).flatten(2).transpose(1, 2))
    scale = layer.qk_head_dim**-0.5
    out = attention.probs_attention(
        q, k, v, resize_position_table(layer.rel_h, 2 * height - 1), resize_position_table(layer.rel_w, 2 * width - 1),
        height, width, scale, scale if layer.scale_position else 1.0,
        content=layer.position_encoding == "relative", grad_block_bytes=block_bytes,
    )  # fmt: skip
    return out.transpose(-1, -2).reshape(batch, layer.dim, height, width)


@pytest.mark.parametrize("encoding", POSITION_ENCODINGS)
@pytest.mark.parametrize("grad", [False, True])
def test_reference_and_fused_paths_of_every_encoding(encoding, grad):
    torch.manual_seed(13)
    for impl in ("fused", "reference"):
        layer = MHSA(16, (4, 5), heads=4, position_encoding=encoding, impl=impl)
        x = torch.randn(2, 16, 6, 3)
        with torch.set_grad_enabled(grad):
            out = layer(x)
        torch.testing.assert_close(out.double(), brute_force(layer, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("encoding", "impl"),
    [(e, i) for e in POSITION_ENCODINGS for i in RELATIVE_PATHS if e.startswith("relative") or i in ("fused", "reference")],
)
def test_double_backward_matches_dense_reference(encoding, impl):
    """Second derivatives (a gradient penalty: d/dtheta |d out / dx|^2) on every path, in float64."""
    torch.manual_seed(14)
    layer = MHSA(8, (3, 4), heads=2, position_encoding=encoding, impl=impl).double()
    x = torch.randn(2, 8, 4, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 8, 4, 3, dtype=torch.float64)

    def penalty(forward):
        (grad_x,) = torch.autograd.grad((forward(x) * weight).sum(), x, create_graph=True)
        params = list(layer.parameters())
        return torch.autograd.grad(grad_x.square().sum(), [x] + params)

    got = penalty(layer)
    want = penalty(lambda inp: brute_force_differentiable(layer, inp))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)


def brute_force_differentiable(layer: MHSA, x: torch.Tensor) -> torch.Tensor:
    """The layer's formula with full N x N logits, built from its parameters (every encoding)."""
    batch, _, height, width = x.shape
    heads, d = layer.heads, layer.qk_head_dim
    s = d**-0.5
    s_pos = s if layer.scale_position else 1.0
    qkv = torch.nn.functional.conv2d(x, layer.qkv.weight)
    q, k, v = (
        t.reshape(batch, heads, -1, height * width).transpose(-1, -2)
        for t in qkv.split([heads * d, heads * d, layer.dim], 1)
    )
    logits = torch.zeros(batch, heads, height * width, height * width, dtype=x.dtype)
    if layer.position_encoding != "relative_only":
        logits = logits + s * q @ k.transpose(-1, -2)
    if layer.position_encoding in ("relative", "relative_only"):
        rows, cols = torch.arange(height), torch.arange(width)
        r_h = resize_position_table(layer.rel_h, 2 * height - 1)[rows[None, :] - rows[:, None] + height - 1]
        r_w = resize_position_table(layer.rel_w, 2 * width - 1)[cols[None, :] - cols[:, None] + width - 1]
        pos = (r_h[:, None, :, None, :] + r_w[None, :, None, :, :]).reshape(height * width, height * width, d)
        logits = logits + s_pos * torch.einsum("bhnd,nmd->bhnm", q, pos)
    elif layer.position_encoding == "absolute":
        a_h = resize_position_table(layer.abs_h, height)
        a_w = resize_position_table(layer.abs_w, width)
        pos = (a_h[:, None, :] + a_w[None, :, :]).reshape(height * width, d)
        logits = logits + s_pos * q @ pos.T
    out = logits.softmax(-1) @ v
    return out.transpose(-1, -2).reshape(batch, layer.dim, height, width)


def test_auto_path_choice():
    """What "auto" runs: fused without gradients, probs for CPU fp32 training that fits, one_call past
    SAVED_PROBS_BYTES or under torch.func, one_call always for relative_only."""
    layer = MHSA(16, 4, heads=4)
    small, large = torch.randn(2, 16, 4, 4), torch.randn(1, 16, 96, 96)
    with torch.no_grad():
        assert layer._path(small, 2, 16) == "fused"
    assert layer._path(small, 2, 16) == "probs"
    tokens = 96 * 96
    assert 4 * tokens**2 * 4 > attention.SAVED_PROBS_BYTES
    assert layer._path(large, 1, tokens) == "one_call"
    assert torch.func.vmap(lambda x: torch.tensor(["fused", "probs", "one_call"].index(layer._path(x, 2, 16))))(
        small[None]
    ).item() == 2
    assert MHSA(16, 4, position_encoding="relative_only")._path(small, 2, 16) == "one_call"
    assert MHSA(16, 4, position_encoding="absolute")._path(small, 2, 16) == "fused"
    layer.impl = "one_call"
    assert layer._path(small, 2, 16) == "one_call"


def test_softmax_hook_sees_the_probabilities():
    """The reference path's softmax module receives (B, heads, N, N) probabilities, position term included."""
    torch.manual_seed(15)
    layer = MHSA(16, (4, 5), heads=4, impl="reference").double()
    x = torch.randn(2, 16, 3, 6, dtype=torch.float64)
    seen = []
    layer.softmax.register_forward_hook(lambda module, args, out: seen.append(out))
    layer(x)
    (probs,) = seen
    assert probs.shape == (2, 4, 18, 18)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4, 18, dtype=torch.float64))
    # The probabilities times v give the layer's output.
    qkv = torch.nn.functional.conv2d(x, layer.qkv.weight)
    v = qkv[:, 32:].reshape(2, 4, 4, 18).transpose(-1, -2)
    out = (probs @ v).transpose(-1, -2).reshape(2, 16, 3, 6)
    torch.testing.assert_close(out, brute_force(layer, x), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize(
    ("encoding", "impl", "match"),
    [("relative", "flash", "unknown attention impl 'flash'"), ("absolute", "probs", "does not have")],
)
def test_impl_errors(encoding, impl, match):
    with pytest.raises(ValueError, match=match):
        MHSA(16, 4, position_encoding=encoding, impl=impl)
    layer = MHSA(16, 4, position_encoding=encoding)
    with pytest.raises(ValueError, match=match):
        layer.impl = impl


def test_torch_func_grad_matches_autograd():
    """Functional transforms (per-sample gradients, meta-learning) trace the layer too."""
    torch.manual_seed(12)
    layer = MHSA(8, (3, 4), heads=2)
    x = torch.randn(2, 8, 3, 4)
    params = dict(layer.named_parameters())
    grads = torch.func.grad(lambda p: torch.func.functional_call(layer, p, (x,)).square().sum())(params)
    layer(x).square().sum().backward()
    for name, param in layer.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("heads", "size"), [(2, (1, 1)), (1, (2, 3)), (2, (3, 4))])
def test_output_can_be_modified_in_place(heads, size):
    layer = MHSA(8, size, heads=heads)
    x = torch.randn(2, 8, *size).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = layer(x)
    out.add_(1.0)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_memory_format_follows_input():
    layer = MHSA(16, 4).eval()
    x = torch.randn(2, 16, 4, 5)
    assert layer(x).is_contiguous()
    assert layer(x.contiguous(memory_format=torch.channels_last)).is_contiguous(memory_format=torch.channels_last)


def test_float64_exact():
    torch.manual_seed(2)
    layer = MHSA(8, (3, 5), heads=2).double()
    x = torch.randn(1, 8, 4, 6, dtype=torch.float64)
    torch.testing.assert_close(layer(x), brute_force(layer, x), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("encoding", ["relative", "relative_only", "absolute"])
def test_gradients_reach_tables_at_any_size(encoding):
    torch.manual_seed(3)
    layer = MHSA(16, (4, 4), heads=4, position_encoding=encoding)
    for size in [(4, 4), (6, 3), (2, 5)]:
        layer.zero_grad()
        layer(torch.randn(2, 16, *size)).square().sum().backward()
        for name, param in layer.named_parameters():
            assert param.grad is not None and param.grad.abs().sum() > 0, (name, size)
            assert torch.isfinite(param.grad).all(), (name, size)


def test_resize_identity_and_rule():
    table = torch.randn(9, 4)
    assert resize_position_table(table, 9) is table
    for length in (13, 3, 1):
        expected = interp_half_pixel(table, length)
        torch.testing.assert_close(resize_position_table(table, length).double(), expected, atol=1e-6, rtol=1e-6)


def test_parameter_layout():
    layer = MHSA(64, (5, 7), heads=4)
    assert layer.qkv.weight.shape == (192, 64, 1, 1) and layer.qkv.bias is None
    assert layer.rel_h.shape == (9, 16) and layer.rel_w.shape == (13, 16)
    absolute = MHSA(64, (5, 7), heads=4, position_encoding="absolute")
    assert absolute.abs_h.shape == (5, 16) and absolute.abs_w.shape == (7, 16)
    assert [n for n, _ in MHSA(64, 5, position_encoding="none").named_parameters()] == ["qkv.weight"]


def test_heads_mix_independently():
    """Changing one head's v channels changes only that head's output channels."""
    torch.manual_seed(4)
    layer = MHSA(16, 4, heads=4)
    x = torch.randn(1, 16, 4, 4)
    before = layer(x)
    with torch.no_grad():
        layer.qkv.weight[32 + 4 : 32 + 8] += 1.0  # v of head 1
    after = layer(x)
    changed = (after - before).abs().amax(dim=(0, 2, 3)) > 1e-6
    assert changed.tolist() == [False] * 4 + [True] * 4 + [False] * 8


@pytest.mark.parametrize(("scale_position", "qk_head_dim"), [(True, None), (False, None), (False, 4)])
@pytest.mark.parametrize("size", [(6, 6), (5, 7), (8, 3)])
def test_matches_timm_bottleneck_attn(scale_position, qk_head_dim, size):
    timm_attn = pytest.importorskip("timm.layers.bottleneck_attn")
    torch.manual_seed(5)
    ours = MHSA(32, size, heads=4, scale_position=scale_position, qk_head_dim=qk_head_dim)
    theirs = timm_attn.BottleneckAttn(
        32, feat_size=size, num_heads=4, dim_head=qk_head_dim, scale_pos_embed=scale_position
    )
    with torch.no_grad():
        theirs.qkv.weight.copy_(ours.qkv.weight)
        theirs.pos_embed.height_rel.copy_(ours.rel_h)
        theirs.pos_embed.width_rel.copy_(ours.rel_w)
    x = torch.randn(3, 32, *size, requires_grad=True)
    out = ours(x)
    torch.testing.assert_close(out, theirs(x), atol=1e-5, rtol=1e-5)
    grad_ours = torch.autograd.grad(out.sin().sum(), [x, ours.rel_h])
    grad_theirs = torch.autograd.grad(theirs(x).sin().sum(), [x, theirs.pos_embed.height_rel])
    for a, b in zip(grad_ours, grad_theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("size", [(6, 5), (3, 7)])
def test_bfloat16_autocast_close_to_float32(size):
    """bf16 autocast on the inference and training paths (bias and one call): outputs within 5e-2 of fp32 (abs and rel), gradients within 5% of
    the fp32 gradient's norm (bf16 keeps 8 bits of mantissa)."""
    torch.manual_seed(6)
    layer = MHSA(32, (6, 5), heads=4)
    x = torch.randn(2, 32, *size)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # the bias path
        inference = layer(x)
    assert inference.dtype == torch.bfloat16
    torch.testing.assert_close(inference.float(), layer(x).detach(), atol=5e-2, rtol=5e-2)

    weight = torch.randn(2, 32, *size)
    x_low = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the training path
        low = layer(x_low)
    (low.float() * weight).sum().backward()
    low_grads = [x_low.grad] + [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    x_high = x.clone().requires_grad_()
    high = layer(x_high)
    (high * weight).sum().backward()
    high_grads = [x_high.grad] + [p.grad for p in layer.parameters()]
    torch.testing.assert_close(low.float(), high, atol=5e-2, rtol=5e-2)
    for got, want in zip(low_grads, high_grads):
        assert (got.float() - want).norm() <= 0.05 * want.norm()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(dim=30, feat_size=4, heads=4), ValueError, "heads=4 must divide the attention width dim=30"),
        (dict(dim=32, feat_size=4, position_encoding="rotary"), ValueError, "unknown position_encoding 'rotary'"),
        (dict(dim=32, feat_size=(4, 0)), ValueError, "feat_size"),
        (dict(dim=32, feat_size=4, heads=0), ValueError, "heads must be a positive int"),
    ],
)
def test_construction_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        MHSA(**kwargs)


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.randn(16, 4, 4), ValueError, "4-D"),
        (torch.randn(1, 8, 4, 4), ValueError, "built for 16 channels, got 8"),
        (torch.ones(1, 16, 4, 4, dtype=torch.int64), TypeError, "floating-point"),
    ],
)
def test_input_errors(x, error, match):
    with pytest.raises(error, match=match):
        MHSA(16, 4)(x)


@pytest.mark.parametrize("encoding", POSITION_ENCODINGS)
def test_vmap_equals_a_loop(encoding):
    """torch.func.vmap over an extra leading dim (e.g. several batches, or per-example use in functorch code)."""
    torch.manual_seed(2)
    layer = MHSA(16, (4, 4), heads=4, position_encoding=encoding)
    x = torch.randn(3, 2, 16, 5, 3)
    out = torch.func.vmap(layer)(x)
    with torch.no_grad():
        expected = torch.stack([layer(batch) for batch in x])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
# The dtype autocast computes in (None: float32 throughout, TF32 off), and the largest relative error
# |got - float64| / |float64| allowed for the output and for each gradient: float32 rounds at 6e-8,
# float16 at 5e-4 and bfloat16 at 4e-3 per operation.
PRECISIONS = {"float32": (None, 1e-4), "float16": (torch.float16, 1e-2), "bfloat16": (torch.bfloat16, 4e-2)}
# (dim, heads, qk_head_dim, built size, run size): square with head dim 16; non-square with head dim 10
# (not a multiple of 8: padded for the GPU kernels); odd sizes unlike the built one, with query and key
# dims (12) apart from the values' (16).
LAYER_SHAPES = [(32, 2, None, (6, 6), (6, 6)), (40, 4, None, (5, 7), (5, 7)), (32, 2, 12, (4, 4), (7, 3))]


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.detach().double().cpu() - want.detach()).norm() / want.detach().norm())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("impl", ["auto", "fused", "probs", "one_call", "flex", "reference"])
@pytest.mark.parametrize(("dim", "heads", "qk_head_dim", "built", "run"), LAYER_SHAPES)
def test_every_path_on_every_device_and_precision(device, precision, impl, dim, heads, qk_head_dim, built, run):
    """Output and gradients (input and every parameter) of each path against the float64 formula, in float32
    and under float16 and bfloat16 autocast. On a GPU the SDPA paths must run on a fused kernel (the math
    kernel, which holds N x N logits, is switched off), so head dims that need padding are padded."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(21)
    dtype, bound = PRECISIONS[precision]
    layer = MHSA(dim, built, heads=heads, qk_head_dim=qk_head_dim, impl=impl)
    x, weight = torch.randn(2, dim, *run), torch.randn(2, dim, *run)
    x_ref = x.double().requires_grad_()
    expected = dense_reference(layer, x_ref)
    (expected * weight.double()).sum().backward()
    expected_grads = [x_ref.grad] + [p.grad for p in layer.parameters()]
    layer.zero_grad()

    layer.to(device)
    fused_only = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    kernels = sdpa_kernel(fused_only) if device == "cuda" else contextlib.nullcontext()
    autocast = torch.autocast(device, dtype=dtype, enabled=dtype is not None)
    x_dev = x.to(device).requires_grad_()
    with kernels, autocast, torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        with torch.no_grad():
            inference = layer(x_dev)
        if impl == "flex" and device == "cpu":
            with pytest.raises(ValueError, match="impl='flex' trains on CUDA only"):
                layer(x_dev)
            out = grads = None
        else:
            out = layer(x_dev)
    assert relative_error(inference, expected) < bound
    if out is None:
        return
    (out.float() * weight.to(device)).sum().backward()
    grads = [x_dev.grad] + [p.grad for p in layer.parameters()]
    assert relative_error(out, expected) < bound
    for (name, _), got, want in zip([("input", None), *layer.named_parameters()], grads, expected_grads):
        assert relative_error(got, want) < bound, name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("encoding", ["absolute", "none"])
def test_fused_kernel_without_relative_logits_on_every_device(device, encoding):
    """``absolute`` and ``none`` attention (one fused call) on each device, with head dims that need padding."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(22)
    layer = MHSA(40, (5, 3), heads=4, position_encoding=encoding, qk_head_dim=6)
    x = torch.randn(2, 40, 5, 3)
    expected = brute_force(layer, x)
    layer.to(device)
    fused_only = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    with sdpa_kernel(fused_only) if device == "cuda" else contextlib.nullcontext():
        out = layer(x.to(device).requires_grad_())
    assert relative_error(out, expected) < 1e-4
