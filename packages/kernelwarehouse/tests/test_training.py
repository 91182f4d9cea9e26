"""Training corner cases: batch size 1, autocast, torch.compile, temperature in checkpoints
(export: test_export.py)."""

from __future__ import annotations

import timm
import torch
from torch import nn

import kernelwarehouse as kw


def _small() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    kw.convert(
        model, budget=1.0, groups=lambda m, n, mod: "all" if n != "6" else "head", exclude=[]
    )
    return model


def test_kw_resnet18_train_step_batch_size_one():
    # zero_init_last=False: timm zeroes the last BN of each block, which blocks those gradients
    model = timm.create_model(
        "kw_resnet18", budget=0.5, num_classes=3, zero_init_last=False
    ).train()
    kw.set_temperature(model, 0.5)  # at tau = 1 the attentions are beta: no gradient reaches them
    loss = nn.functional.cross_entropy(model(torch.randn(1, 3, 64, 64)), torch.tensor([1]))
    loss.backward()
    assert torch.isfinite(loss)
    grads = dict(model.named_parameters())
    cells = [p.grad for n, p in grads.items() if n.endswith("warehouse.cells")]
    assert len(cells) == 4 and all(g is not None and g.abs().sum() > 0 for g in cells)
    fc2 = [p.grad for n, p in grads.items() if n.endswith("attention.fc2.weight")]
    assert sum(g is not None and g.abs().sum() > 0 for g in fc2) >= len(fc2) - 2


def test_autocast_bfloat16_cpu_close_to_float32():
    model = _small().eval()
    kw.set_temperature(model, 0.5)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), ref, rtol=0.05, atol=0.05)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x).float().square().mean()
    loss.backward()
    cells = [m.shared_warehouse.cells.grad for m in model.modules() if isinstance(m, kw.KWLayer)]
    assert all(g is not None and torch.isfinite(g).all() for g in cells)


def test_torch_compile_matches_eager_forward_and_backward():
    # two small KW convolutions (~25 s to compile on 2 cores); while compiling, the per-offset
    # path is traced as plain ops instead of its custom autograd.Function
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        kw.KWConv2d(8, 16, 3, padding=1),
        torch.nn.ReLU(),
        kw.KWConv2d(16, 16, 3, padding=1, budget=0.5),
    ).train()
    kw.set_temperature(net, 0.3)
    x = torch.randn(4, 8, 7, 7, requires_grad=True)

    def run(module):
        net.zero_grad()
        x.grad = None
        out = module(x)
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in net.parameters()] + [x.grad.clone()]

    eager_out, eager_grads = run(net)
    compiled_out, compiled_grads = run(torch.compile(net))
    torch.testing.assert_close(compiled_out, eager_out, rtol=1e-4, atol=1e-5)
    for a, b in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


def test_temperature_travels_in_state_dict():
    model = _small()
    kw.set_temperature(model, 0.25)
    other = _small()
    other.load_state_dict(model.state_dict())
    assert kw.get_temperature(other) == 0.25
