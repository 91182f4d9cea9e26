"""End-to-end demo (grows with each package; see README.md).

Implicit knowledge: train a tiny classifier with YOLOR implicit layers for a few steps, fuse the
implicit layers into the convolutions, and show that outputs are identical and the fused model
is as fast as one without implicit knowledge.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from implicit_knowledge import ImplicitAdd, ImplicitMul, ImplicitPredictionRefinement, fuse, implicit_layers


def tiny_classifier(num_classes: int = 4) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, stride=2, padding=1),
        ImplicitMul(32, prior="factorized"),
        nn.ReLU(),
        ImplicitAdd(32, prior="network"),
        nn.Conv2d(32, 64, 1),
        ImplicitMul(64),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        ImplicitPredictionRefinement(nn.Linear(64, num_classes), prior="factorized"),
    )


def latency(model: nn.Module, x: torch.Tensor, repeats: int = 20) -> float:
    with torch.inference_mode():
        model(x)
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    torch.manual_seed(0)
    # Colour task: which of four colour channels mixes dominates the image.
    x = torch.rand(256, 3, 32, 32)
    y = (x.mean((2, 3)) @ torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, -1]])).argmax(1)
    model = tiny_classifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(60):
        batch = torch.randint(0, len(x), (32,))
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 0 or step == 59:
            print(f"step {step:3d}  loss {loss.item():.4f}")

    model.eval()
    fused = fuse(model)
    with torch.no_grad():
        diff = (model(x) - fused(x)).abs().max().item()
    print(f"\nimplicit layers: {len(implicit_layers(model))} before fusion, {len(implicit_layers(fused))} after")
    print(f"max |unfused - fused| = {diff:.2e}")
    assert diff <= 1e-5, diff
    batch = x[:64]
    t_unfused, t_fused = latency(model, batch), latency(fused, batch)
    print(f"latency (batch 64): unfused {t_unfused * 1e3:.2f} ms, fused {t_fused * 1e3:.2f} ms")
    print(f"parameters: unfused {sum(p.numel() for p in model.parameters()):,}, "
          f"fused {sum(p.numel() for p in fused.parameters()):,}")


if __name__ == "__main__":
    main()
