"""Equation 8 and compress(): the loss, sampling/chunking, a short run whose loss falls."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from rd_core import (
    RetrieverDictionary,
    attach,
    attached,
    compress,
    distillation_loss,
    student_from_teacher,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _reference_loss(student, teacher, tau):
    """Equation 8 with explicit loops over positions (slow, obviously correct)."""
    s = student.permute(0, 2, 3, 1).reshape(-1, student.shape[1])
    t = teacher.permute(0, 2, 3, 1).reshape(-1, teacher.shape[1])
    total = 0.0
    for i in range(s.shape[0]):
        sims = torch.stack([F.cosine_similarity(s[i], t[j], dim=0) for j in range(t.shape[0])])
        total += -(sims[i] / tau - torch.logsumexp(sims / tau, dim=0))
    return total / s.shape[0]


def test_loss_matches_equation_8():
    s, t = torch.randn(2, 5, 3, 2), torch.randn(2, 5, 3, 2)
    torch.testing.assert_close(distillation_loss(s, t, 0.2), _reference_loss(s, t, 0.2))


def test_loss_prefers_matching_positions():
    t = torch.randn(2, 16, 4, 4)
    aligned = distillation_loss(t * 3.0, t, 0.1)  # cosine ignores the scale
    shuffled = distillation_loss(t.flip(0), t, 0.1)
    assert aligned < shuffled
    assert aligned < 0.5


def test_chunked_loss_and_gradients_equal_full():
    s = torch.randn(2, 8, 5, 5, requires_grad=True)
    t = torch.randn(2, 8, 5, 5)
    full = distillation_loss(s, t, 0.1)
    (g_full,) = torch.autograd.grad(full, s)
    chunked = distillation_loss(s, t, 0.1, chunk_size=7)
    (g_chunk,) = torch.autograd.grad(chunked, s)
    torch.testing.assert_close(chunked, full)
    torch.testing.assert_close(g_chunk, g_full)


def test_sampling_uses_the_same_positions_for_both():
    s, t = torch.randn(4, 8, 6, 6), torch.randn(4, 8, 6, 6)
    sampled = distillation_loss(
        s, t, 0.1, max_positions=20, generator=torch.Generator().manual_seed(3)
    )
    index = torch.randperm(4 * 36, generator=torch.Generator().manual_seed(3))[:20]
    flat_s = s.permute(0, 2, 3, 1).reshape(-1, 8)[index]
    flat_t = t.permute(0, 2, 3, 1).reshape(-1, 8)[index]
    torch.testing.assert_close(sampled, distillation_loss(flat_s, flat_t, 0.1))
    # Fewer positions than the cap: nothing is sampled.
    torch.testing.assert_close(
        distillation_loss(s, t, 0.1, max_positions=10_000), distillation_loss(s, t, 0.1)
    )


def test_sampled_loss_on_a_large_map_builds_only_the_sampled_matrix(monkeypatch):
    # 4 x 64 x 80 x 80 has 25600 positions: a 2.6 GB similarity matrix unsampled. With
    # max_positions only the sampled 1024 x 1024 one is built (the benchmark runs the paper's
    # 32 x 512 x 80 x 80 case).
    s = torch.randn(4, 64, 80, 80)
    t = s + 0.1 * torch.randn_like(s)
    shapes = []
    original = torch.Tensor.__matmul__

    def spy(a, b):
        shapes.append((a.shape[0], b.shape[1]))
        return original(a, b)

    monkeypatch.setattr(torch.Tensor, "__matmul__", spy)
    loss = distillation_loss(s, t, 0.1, max_positions=1024)
    assert shapes == [(1024, 1024)]
    assert torch.isfinite(loss)
    assert loss < distillation_loss(s, t.roll(1, 0), 0.1, max_positions=1024)


def test_loss_errors():
    with pytest.raises(ValueError, match="student shape"):
        distillation_loss(torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 3))
    with pytest.raises(
        ValueError, match=r"temperature=0.0 is invalid: expected a finite float > 0"
    ):
        distillation_loss(torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2), 0.0)
    with pytest.raises(ValueError, match=r"temperature=None is invalid"):
        distillation_loss(torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2), None)


@pytest.mark.parametrize("variant", ["paper", "authors"])
def test_student_inherits_the_kept_atoms_and_channels(variant):
    teacher = RetrieverDictionary(8, num_atoms=16, variant=variant)
    with torch.no_grad():
        for p in teacher.parameters():
            p.normal_()
    teacher.eval()
    index = torch.tensor([3, 7, 1, 12])
    student = student_from_teacher(teacher, index).eval()
    torch.testing.assert_close(student.atoms, teacher.atoms[index])
    x = torch.randn(1, 8, 5, 5)
    # The student's raw coefficients are exactly the teacher's for the kept atoms.
    torch.testing.assert_close(student.retriever(x), teacher.retriever(x)[:, index])


def _trained_teacher_model():
    model = timm.create_model("test_resnet", num_classes=4).eval()
    rd = attach(model, at="layer2", num_atoms=32, image_size=32)
    with torch.no_grad():  # stand-in for a trained RD: strongly varied atoms and coefficients
        for p in rd.parameters():
            p.normal_(0, 1)
    return model, rd


def test_compress_swaps_in_a_student_whose_loss_falls():
    model, teacher = _trained_teacher_model()
    data = [(torch.randn(4, 3, 32, 32), torch.zeros(4)) for _ in range(3)]
    backbone_before = {k: v.clone() for k, v in model.state_dict().items() if ".rd." not in k}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    report = compress(model, teacher, 8, data, epochs=6, lr=3e-3, max_positions=64, progress=False)
    assert report.student_atoms == 8 and report.teacher_atoms == 32
    assert report.student_parameters < report.teacher_parameters
    assert report.final_loss < report.initial_loss
    assert len(report.loss_history) == 18
    assert 0.0 < report.cosine_similarity <= 1.0
    # Swapped in; backbone and teacher untouched; flags and modes restored.
    assert attached(model)["layer2"].rd is report.student
    after = model.state_dict()
    for k, v in backbone_before.items():
        torch.testing.assert_close(after[k], v)
    assert {n: p.requires_grad for n, p in model.named_parameters() if ".rd." not in n} == {
        n: f for n, f in flags.items() if ".rd." not in n
    }
    assert not model.training
    # The most used atoms were kept (by mean |c'|), most used first.
    assert torch.equal(report.kept_atoms, torch.argsort(report.usage.mean_abs, descending=True)[:8])
    assert model(data[0][0]).shape == (4, 4)
    assert "atoms 32 -> 8" in report.summary()


def test_compress_errors():
    model, teacher = _trained_teacher_model()
    with pytest.raises(ValueError, match=r"num_atoms must be an int in \[2, 32\)"):
        compress(model, teacher, 32, [torch.randn(1, 3, 32, 32)], progress=False)
    stray = RetrieverDictionary(48, num_atoms=16)
    with pytest.raises(ValueError, match="not a submodule"):
        compress(model, stray, 8, [torch.randn(1, 3, 32, 32)], progress=False)
    with pytest.raises(TypeError, match="a batch must be"):
        compress(model, teacher, 8, ["not an image"], progress=False)
    with pytest.raises(ValueError, match="empty"):
        compress(model, teacher, 8, [], progress=False)


def test_compressed_with_rd_model_saved_by_timm_rebuilds_with_its_atom_count(tmp_path):
    """Issue 25: timm's save_for_hf writes the build arguments timm recorded; after compress
    they must name the student's atom count, or the saved folder cannot be loaded."""
    from timm.models import save_for_hf

    model = timm.create_model(
        "with_rd",
        base_architecture="resnet18",
        rd_attachments=[{"at": "layer2", "num_atoms": 16}],
        num_classes=3,
        channels=(8, 16, 32, 64),
        stem_width=8,
    ).eval()
    data = [torch.randn(2, 3, 32, 32) for _ in range(2)]
    compress(model, attached(model)["layer2"].rd, 4, data, progress=False)
    save_for_hf(model, str(tmp_path / "small"), safe_serialization=True)
    clone = timm.create_model(f"local-dir:{tmp_path / 'small'}", pretrained=True).eval()
    assert attached(clone)["layer2"].rd.num_atoms == 4
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(clone(images), model(images))


def test_cosine_loss_of_algorithm_1_pulls_outputs_to_the_teacher():
    """loss="cosine" (Algorithm 1 line 21): the loss is 1 - cos over positions, written out
    here, and training raises the student's cosine similarity to the teacher."""
    from rd_core.compression import cosine_distance

    s, t = torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3, 3)
    reference = (
        1
        - torch.stack(
            [
                F.cosine_similarity(s[b, :, i, j], t[b, :, i, j], dim=0)
                for b in range(2)
                for i in range(3)
                for j in range(3)
            ]
        ).mean()
    )
    torch.testing.assert_close(cosine_distance(s, t), reference)
    model, teacher = _trained_teacher_model()
    data = [torch.randn(4, 3, 32, 32) for _ in range(3)]
    report = compress(model, teacher, 8, data, epochs=4, lr=3e-3, loss="cosine", progress=False)
    # equal batches: the mean loss over batches is 1 - the mean cosine over all positions
    assert report.final_loss == pytest.approx(1 - report.cosine_similarity, abs=1e-5)
    assert report.final_loss < report.initial_loss
    with pytest.raises(ValueError, match=r"loss='l2' is invalid: expected one of \['contrastive'"):
        compress(model, report.student, 4, data, loss="l2", progress=False)
