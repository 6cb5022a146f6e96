"""torch.func.vmap over MHSA and a whole model equals a per-sample loop, on every attention path,
with and without gradients (the no-grad calls take the blocked-bias and in-place kernels eagerly)."""

import pytest
import torch

from botnet import create_model
from botnet.layers import IMPLS, MHSA, POSITION_ENCODINGS, attention

CASES = [
    (encoding, impl)
    for encoding in POSITION_ENCODINGS
    for impl in IMPLS
    if impl not in attention.RELATIVE_ONLY_IMPLS or encoding in ("relative", "relative_only")
]


def test_cases_cover_every_accepted_impl():
    """CASES follows MHSA's own rule: the impls an encoding rejects are exactly the ones left out."""
    for encoding in POSITION_ENCODINGS:
        for impl in IMPLS:
            layer = MHSA(16, 4, position_encoding=encoding)
            try:
                layer.impl = impl
            except Exception:
                assert (encoding, impl) not in CASES
            else:
                assert (encoding, impl) in CASES


def layer_and_input(encoding: str, impl: str) -> tuple[MHSA, torch.Tensor]:
    torch.manual_seed(3)
    layer = MHSA(16, (4, 4), heads=4, position_encoding=encoding, impl=impl).double()
    return layer, torch.randn(3, 2, 16, 5, 3, dtype=torch.float64)  # another size than built: tables resampled


@pytest.mark.parametrize(("encoding", "impl"), CASES)
def test_vmap_without_gradients_equals_a_loop(encoding, impl):
    layer, x = layer_and_input(encoding, impl)
    with torch.no_grad():
        out = torch.func.vmap(layer)(x)
        expected = torch.stack([layer(batch) for batch in x])
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize(("encoding", "impl"), CASES)
def test_vmap_with_gradients_equals_a_loop(encoding, impl):
    if impl == "flex":
        pytest.skip("the loop's calls with gradients are refused on CPU: FlexAttention trains on CUDA only")
    layer, x = layer_and_input(encoding, impl)
    out = torch.func.vmap(layer)(x)
    expected = torch.stack([layer(batch) for batch in x])
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("encoding", ["relative", "relative_only"])
def test_vmap_equals_the_blocked_bias_loop(encoding, monkeypatch):
    """A bias budget of one head's rows: the eager no-grad loop builds the bias in blocks of query
    rows into a reused buffer, vmap in one piece; the results agree."""
    layer, x = layer_and_input(encoding, "fused")
    tokens = 5 * 3
    monkeypatch.setattr(attention, "CPU_BIAS_CALL_BYTES", tokens * tokens * 8 - 1)
    monkeypatch.setattr(attention, "CPU_BIAS_ROWS", 4)
    assert attention.bias_blocks(2, 4, tokens, 8, "cpu") == (1, 1, 4)
    with torch.no_grad():
        out = torch.func.vmap(layer)(x)
        expected = torch.stack([layer(batch) for batch in x])
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("impl", ["fused", "probs", "one_call"])
def test_per_sample_gradients_equal_a_loop(impl):
    """vmap(grad(...)) over the parameters (per-example gradients) on the relative paths."""
    layer, x = layer_and_input("relative", impl)
    params = {name: p.detach() for name, p in layer.named_parameters()}

    def loss(params, sample):
        return torch.func.functional_call(layer, params, (sample,)).square().sum()

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, x)
    for i, sample in enumerate(x):
        layer.zero_grad()
        layer(sample).square().sum().backward()
        for name, p in layer.named_parameters():
            torch.testing.assert_close(per_sample[name][i], p.grad, atol=1e-10, rtol=1e-10)


def test_vmap_over_a_model_without_gradients_equals_a_loop():
    torch.manual_seed(0)
    model = create_model("botnet_tiny").eval()
    x = torch.randn(2, 2, 3, 24, 24)
    with torch.no_grad():
        out = torch.func.vmap(model)(x)
        expected = torch.stack([model(batch) for batch in x])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
