"""Layers, partition, attention/CAF, beta assignment, temperature."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import kernelwarehouse as kw
from kernelwarehouse.attention import assign_cells, contrasting_attention
from kernelwarehouse.partition import CellShape, partition_kernel, plan_cell_shape


def test_cell_plan_uses_gcd_and_halves_below_one():
    shapes = [(64, 64, 3, 3), (128, 64, 3, 3), (128, 64, 1, 1)]
    assert plan_cell_shape(shapes).as_tuple() == (64, 64, 1, 1)
    assert plan_cell_shape(shapes, 0.5, 0.5).as_tuple() == (32, 32, 1, 1)
    assert plan_cell_shape([(32, 1, 3, 3), (96, 1, 3, 3)], 0.5, 0.5).as_tuple() == (16, 1, 1, 1)
    # halving an odd divisor snaps to a divisor only when asked (the default for b < 1)
    assert plan_cell_shape([(5, 16)], 0.5, 0.5, snap=True).as_tuple() == (1, 8)
    assert plan_cell_shape([(5, 16)], 0.5, 0.5).as_tuple() == (2, 8)
    cell = plan_cell_shape([(64, 64, 3, 3)], spatial_partition=False)
    assert cell.as_tuple() == (64, 64, 3, 3)
    assert partition_kernel((64, 64, 3, 3), cell).num_mixtures == 1


def test_partition_counts_and_errors():
    part = partition_kernel((128, 64, 3, 3), CellShape(64, 32, (1, 1)))
    assert (part.out_groups, part.in_groups, part.spatial_groups) == (2, 2, 9)
    with pytest.raises(ValueError, match="output channels 100 cannot be partitioned"):
        partition_kernel((100, 64, 3, 3), CellShape(64, 64, (1, 1)))
    with pytest.raises(ValueError, match="mixes kernel ranks"):
        plan_cell_shape([(8, 8, 3, 3), (8, 8)])
    with pytest.raises(ValueError, match="one kernel size per warehouse"):
        plan_cell_shape([(8, 8, 3, 3), (8, 8, 1, 1)], spatial_partition=False)


def test_caf_formula_against_hand_computation():
    torch.manual_seed(0)
    z = torch.randn(3, 4, 6)
    beta, _ = assign_cells(4, 5, 0, 1.0)
    for tau in (0.0, 0.3, 1.0):
        out = contrasting_attention(z, beta, tau, eps=1e-3)
        expected = tau * beta + (1 - tau) * z / (z.abs().sum(-1, keepdim=True) + 1e-3)
        torch.testing.assert_close(out, expected[..., :-1])
    assert out.shape == (3, 4, 5)


def test_assign_cells_rules():
    beta, end = assign_cells(4, 8, start=2, cells_per_mixture=2.0)
    assert beta.argmax(1).tolist() == [2, 4, 6, 8]  # last one ran out -> zero cell
    assert end == 10
    beta, end = assign_cells(8, 4, start=0, cells_per_mixture=0.5)
    # diagonal: mixtures 0, 3, 4, 7 get cells (group convolution with 2 groups at tau = 1)
    assert beta.argmax(1).tolist() == [0, 4, 4, 1, 2, 4, 4, 3]
    assert end == 4
    beta, _ = assign_cells(8, 4, start=0, cells_per_mixture=0.5, rule="strided")
    assert beta.argmax(1).tolist() == [0, 4, 1, 4, 2, 4, 3, 4]
    assert torch.all(beta.sum(1) == 1)
    with pytest.raises(ValueError, match="rule='bogus'"):
        assign_cells(2, 2, 0, 1.0, rule="bogus")


@pytest.mark.parametrize(
    "layer, x",
    [
        (lambda: kw.KWConv1d(8, 16, 3, padding=1, bias=True), torch.randn(3, 8, 12)),
        (lambda: kw.KWConv2d(8, 16, 3, stride=2, padding=1), torch.randn(3, 8, 10, 10)),
        (lambda: kw.KWConv2d(4, 8, 3, padding=1, bias=True), torch.randn(2, 4, 18, 18)),
        # 1/2x halves the cells: 2 x 2 channel groups per offset in the per-offset path
        (lambda: kw.KWConv2d(8, 16, 3, padding=1, budget=0.5), torch.randn(3, 8, 6, 6)),
        (lambda: kw.KWConv2d(8, 8, 3, padding=2, dilation=2, bias=True), torch.randn(2, 8, 9, 9)),
        (lambda: kw.KWConv2d(8, 16, 3, padding=1, bias=True), torch.randn(1, 8, 7, 7)),
        (lambda: kw.KWConv2d(8, 8, 3, padding=1, spatial_partition=False), torch.randn(2, 8, 7, 7)),
        (lambda: kw.KWConv2d(16, 16, 3, padding=1, groups=16), torch.randn(3, 16, 9, 9)),
        (lambda: kw.KWConv2d(8, 16, 1, budget=0.5), torch.randn(3, 8, 7, 7)),
        (lambda: kw.KWConv3d(4, 8, 3, padding=1, budget=2.0), torch.randn(3, 4, 5, 5, 5)),
        (lambda: kw.KWLinear(16, 24, budget=4.0), torch.randn(3, 5, 16)),
        (lambda: kw.KWLinear(16, 24), torch.randn(3, 16)),
        # one sample: the assembled kernel in a plain convolution
        (lambda: kw.KWConv2d(8, 8, 3, stride=2, padding=1), torch.randn(1, 8, 20, 20)),
        (lambda: kw.KWConv2d(16, 16, 3, padding=1, groups=4), torch.randn(1, 16, 9, 9)),
        (lambda: kw.KWLinear(16, 24, budget=0.5), torch.randn(1, 5, 16)),
    ],
)
@pytest.mark.parametrize("offset_block", [1 << 22, 1], ids=["offsets-together", "offset-by-offset"])
def test_fast_executor_matches_reference_forward_and_backward(layer, x, offset_block, monkeypatch):
    # a block of one element assembles each kernel offset with its own matrix product, as the
    # fast path does for full-size ResNet layers
    monkeypatch.setattr(kw.per_offset, "PER_OFFSET_BLOCK", offset_block)
    # every 1 x 1-cell k x k layer here takes the per-offset path, whatever its width and batch
    every_layer = {"inference": ((0.0, 1),), "training": ((0.0, 1),)}
    monkeypatch.setattr(kw.functional, "PER_OFFSET_RULES", every_layer)
    torch.manual_seed(0)
    ref = layer().train()
    fast = ref  # same module, two executors
    kw.set_temperature(ref, 0.3)
    x1 = x.clone().requires_grad_(True)
    ref.executor = "reference"
    y_ref = ref(x1)
    y_ref.square().sum().backward()
    g_ref = [p.grad.clone() for p in ref.parameters()] + [x1.grad.clone()]
    ref.zero_grad()
    x2 = x.clone().requires_grad_(True)
    fast.executor = "fast"
    y_fast = fast(x2)
    y_fast.square().sum().backward()
    g_fast = [p.grad.clone() for p in fast.parameters()] + [x2.grad.clone()]
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # the inference path reuses buffers and accumulates in place
        torch.testing.assert_close(fast(x), y_ref, rtol=1e-4, atol=1e-5)
    for a, b in zip(g_fast, g_ref):
        # float32 summation order: attention gradients reach ~1e3 on these random layers, where
        # the paths differ by ~2e-7 of the largest entry (the rounding, not a wrong kernel)
        atol = max(1e-4, 1e-5 * float(b.abs().max()))
        torch.testing.assert_close(a, b, rtol=1e-4, atol=atol)


@pytest.mark.parametrize(
    "hw, batch, grad, per_offset",
    [
        (2, 4, True, True),  # 16 channels over 4 positions: the kernels outweigh the columns
        (2, 2, True, False),  # training below batch 4: grouped conv
        (2, 2, False, True),  # the same batch in inference
        (2, 1, False, True),  # inference, one sample: per-offset, not the assembled kernel
        (2, 1, True, False),  # training, one sample: the assembled kernel in a plain conv
        (4, 1, False, False),  # 16 channels over 16 positions, one sample: plain conv
        (4, 8, False, False),  # ... up to batch 8 in inference
        (4, 16, False, True),  # ... from batch 16 per-offset (the batch's kernels outgrow caches)
        (4, 16, True, False),  # ... but not in training
        (6, 16, False, False),  # 16 channels over 36 positions: grouped conv
    ],
)
def test_fast_executor_picks_per_offset_by_width_and_batch(
    hw, batch, grad, per_offset, monkeypatch
):
    calls = []
    real = kw.functional.per_offset_conv2d
    monkeypatch.setattr(kw.functional, "per_offset_conv2d", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    conv = kw.KWConv2d(8, 16, 3, padding=1, bias=False)
    kw.set_temperature(conv, 0.3)
    x = torch.randn(batch, 8, hw, hw)
    with torch.set_grad_enabled(grad):
        y = conv(x)
    conv.executor = "reference"
    torch.testing.assert_close(y, conv(x), rtol=1e-4, atol=1e-5)
    assert bool(calls) is per_offset


def test_float64_model_computes_attention_in_float64():
    torch.manual_seed(0)
    conv = kw.KWConv2d(4, 6, 3, padding=1).double().eval()
    kw.set_temperature(conv, 0.3)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    pooled = x.mean(dim=(2, 3))
    assert conv.attention(pooled).dtype == torch.float64
    # CAF written out: tau * beta + (1 - tau) * z / (sum |z| + eps), zero cell dropped
    z = conv.attention.logits(pooled)
    caf = 0.3 * conv.attention.beta + 0.7 * z / (z.abs().sum(-1, keepdim=True) + 1e-3)
    torch.testing.assert_close(conv.attention(pooled), caf[..., :-1], rtol=1e-12, atol=1e-12)
    assert conv(x).dtype == torch.float64


def test_kernel_at_tau_one_is_assigned_cells():
    conv = kw.KWConv2d(4, 6, 3, padding=1, bias=False)
    kw.set_temperature(conv, 1.0)
    kernel = conv.kernel(torch.randn(2, 4, 5, 5))
    cells = conv.shared_warehouse.cells  # [9, 6, 4] (1 x 1 cells): cell s is spatial position s
    expected = cells.permute(1, 2, 0).reshape(6, 4, 3, 3)
    torch.testing.assert_close(kernel[0], expected)
    torch.testing.assert_close(kernel[1], expected)
    static = nn.functional.conv2d(torch.ones(1, 4, 5, 5), expected, padding=1)
    torch.testing.assert_close(conv(torch.ones(1, 4, 5, 5)), static)


def test_batch_size_one_trains_and_keeps_running_stats():
    conv = kw.KWConv2d(8, 8, 3, padding=1).train()
    norm = conv.attention.norm1
    before = norm.running_mean.clone()
    conv(torch.randn(1, 8, 6, 6)).sum().backward()
    assert conv.shared_warehouse.cells.grad is not None
    torch.testing.assert_close(norm.running_mean, before)
    conv(torch.randn(2, 8, 6, 6))
    assert not torch.equal(norm.running_mean, before)


def test_temperature_is_a_buffer_and_scheduler_is_linear():
    model = nn.Sequential(kw.KWConv2d(4, 4, 3), kw.KWLinear(4, 4))
    assert "0.attention.temperature" in model.state_dict()
    sched = kw.TemperatureScheduler(model, total=10)
    values = [sched.step() for _ in range(12)]
    assert values[0] == pytest.approx(0.9)
    assert values[4] == pytest.approx(0.5)
    assert values[-1] == 0.0
    assert kw.get_temperature(model) == 0.0
    state = sched.state_dict()
    other = kw.TemperatureScheduler(model, total=3)
    other.load_state_dict({**state, "count": 5})
    assert kw.get_temperature(model) == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"tau=1\.5"):
        kw.set_temperature(model, 1.5)
    with pytest.raises(ValueError, match="total=0"):
        kw.TemperatureScheduler(model, total=0)


def test_shared_warehouse_registered_once():
    mgr = kw.WarehouseManager(budget=1.0)
    mgr.reserve("a", nn.Conv2d(8, 8, 3, padding=1, bias=False), "g")
    mgr.reserve("b", nn.Conv2d(8, 16, 3, padding=1, bias=False), "g")
    layers = mgr.build()
    model = nn.Sequential(layers["a"], layers["b"])
    names = [n for n, _ in model.named_parameters() if "warehouse" in n]
    assert names == ["0.warehouse.cells"]
    assert layers["b"].shared_warehouse is layers["a"].shared_warehouse
    assert layers["a"].shared_warehouse.num_cells == 9 + 18
    # beta hands out cells without repetition across the two layers
    first = layers["a"].attention.beta.argmax(1)
    second = layers["b"].attention.beta.argmax(1)
    assert torch.cat([first, second]).tolist() == list(range(27))
    copy = __import__("copy").deepcopy(model)
    assert copy[1].shared_warehouse is copy[0].shared_warehouse


def test_bad_input_errors():
    with pytest.raises(ValueError, match="budget=0"):
        kw.KWConv2d(8, 8, 3, budget=0)
    with pytest.raises(ValueError, match="budget=-1"):
        _plan_with(-1)
    with pytest.raises(TypeError, match="cannot replace"):
        kw.WarehouseManager().reserve("bn", nn.BatchNorm2d(4), "g")
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        kw.KWConv2d(4, 4, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="expects a"):
        kw.KWConv2d(4, 4, 3)(torch.randn(4, 5, 5))
    wrong_channels = r"expects a \[B, 4, 2 spatial dims\] input, got shape \(2, 5, 6, 6\)"
    with pytest.raises(ValueError, match=wrong_channels):
        kw.KWConv2d(4, 4, 3)(torch.randn(2, 5, 6, 6))
    for bad in (float("inf"), float("nan"), "1x", True, 1e9):
        with pytest.raises(ValueError, match=r"budget=.* is invalid: expected a finite number"):
            kw.KWConv2d(4, 4, 3, budget=bad)
        with pytest.raises(ValueError, match=r"budget=.* is invalid"):
            kw.convert(nn.Sequential(nn.Conv2d(4, 4, 3)), budget=bad)
    with pytest.raises(ValueError, match=r"kernel_size=0 is invalid: expected an int >= 1"):
        kw.KWConv2d(4, 4, 0)
    with pytest.raises(ValueError, match=r"stride=\(1, 0\) is invalid"):
        kw.KWConv2d(4, 4, 3, stride=(1, 0))
    with pytest.raises(ValueError, match=r"exclude=\['heed'\] is invalid: \['heed'\] match no"):
        kw.convert(nn.Sequential(nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3)), exclude=["heed"])
    with pytest.raises(TypeError, match=r"model=.* is invalid: expected a torch.nn.Module"):
        kw.convert({"conv": nn.Conv2d(4, 4, 3)})
    mgr = kw.WarehouseManager(cell_in_ratio=0.75)
    mgr.reserve("a", nn.Conv2d(6, 6, 1), "g")
    with pytest.raises(ValueError, match=r"input channels 6 .* into cells of 4"):
        mgr.plan()


def _plan_with(budget):
    mgr = kw.WarehouseManager(budget=budget)
    mgr.reserve("a", nn.Conv2d(4, 4, 1), "g")
    return mgr.plan()


@pytest.mark.parametrize("budget", [1.0, 0.5])  # 1/2x: 2 x 2 channel groups per offset
@pytest.mark.parametrize("offset_block", [1 << 22, 1])
def test_per_offset_backward_passes_gradcheck(budget, offset_block, monkeypatch):
    monkeypatch.setattr(kw.per_offset, "PER_OFFSET_BLOCK", offset_block)
    torch.manual_seed(0)
    part = kw.KWConv2d(4, 8, 3, budget=budget).partition
    n = 5
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    attention = torch.randn(2, part.num_mixtures, n, dtype=torch.float64, requires_grad=True)
    cells = torch.randn(n, *part.cell.as_tuple(), dtype=torch.float64, requires_grad=True)

    def conv(x, attention, cells):
        return kw.per_offset.per_offset_conv2d(
            x, attention, cells, part, (2, 2), (1, 1), (1, 1), (3, 3)
        )

    assert torch.autograd.gradcheck(conv, (x, attention, cells))
