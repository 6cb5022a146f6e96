"""Every private torch call has a fallback that gives the same result: each is run with the private name
taken away."""

from __future__ import annotations

import torch
from torch.utils import flop_counter

import botnet
from botnet import torch_private
from botnet.layers import MHSA
from botnet.models import summarize


def test_functorch_active_sees_a_transform_and_without_the_check_assumes_one(monkeypatch):
    assert torch_private.functorch_active() is False
    seen = []
    torch.func.vmap(lambda x: seen.append(torch_private.functorch_active()) or x)(torch.zeros(2, 3))
    assert seen == [True]
    monkeypatch.delattr(torch._C, "_are_functorch_transforms_active")
    assert torch_private.functorch_active() is True  # the traceable paths: correct everywhere


def test_attention_without_the_private_calls_gives_the_same_outputs_and_gradients(monkeypatch):
    torch.manual_seed(0)
    layer = MHSA(32, (5, 6), heads=4)
    x = torch.randn(2, 32, 5, 6, requires_grad=True)
    out = layer(x)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    monkeypatch.setattr(torch.ops.aten, "_softmax", None, raising=False)  # the saved-probabilities path's kernel
    for _ in range(2):
        fallback = layer(x)
        (fallback_grad,) = torch.autograd.grad(fallback.square().sum(), x)
        torch.testing.assert_close(fallback, out)
        torch.testing.assert_close(fallback_grad, grad)
        monkeypatch.delattr(torch._C, "_are_functorch_transforms_active", raising=False)  # then the traceable paths


def test_the_softmax_fallback_is_the_softmax(monkeypatch):
    logits = torch.randn(3, 7, 7)
    fast = torch_private.softmax_(logits.clone())
    monkeypatch.setattr(torch.ops.aten, "_softmax", None, raising=False)
    slow = logits.clone()
    assert torch_private.softmax_(slow) is slow
    torch.testing.assert_close(slow, torch.softmax(logits, -1))
    torch.testing.assert_close(fast, slow)


def test_without_the_cpu_checks_bfloat16_is_not_fast(monkeypatch):
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    assert torch_private.cpu_has_fast_bfloat16() is False


def test_attention_flops_are_counted_and_without_the_registry_the_rest_still_is(monkeypatch):
    model = botnet.create_model("botnet_t3", num_classes=10)
    counted = summarize(model, 64).flops
    assert torch_private.register_cpu_attention_flops() is True
    monkeypatch.setattr(flop_counter, "register_flop_formula", None)
    assert torch_private.register_cpu_attention_flops() is False
    assert summarize(model, 64).flops == counted  # what was registered stays; nothing fails
