"""Bad values on every public entry point: the project's own error, naming the function, the
argument, the value and what would be valid (never a raw AttributeError / torch error)."""

# ruff: noqa: E501 - the table reads best one case per line

from __future__ import annotations

import math

import pytest
import timm
import torch

from rd_core import (
    ConvBNDictionary,
    ConvNormAct,
    FusedRetriever,
    NormalizedDictionary,
    PositionalNorm,
    RetrieverDictionary,
    SplitRetriever,
    as_atoms,
    atom_usage,
    attach,
    attached,
    attachments,
    coefficient_maps,
    compress,
    detach,
    distillation_loss,
    get_variant,
    iter_rd_inputs,
    official,
    plot_coefficients,
    positional_norm,
    rd_inputs,
    reattach,
    student_from_teacher,
)
from rd_core.factory import export_config

NAN = math.nan
X = torch.randn(1, 8, 4, 4)


@pytest.fixture(scope="module")
def rd():
    return RetrieverDictionary(8, num_atoms=16).eval()


def _model():
    return timm.create_model("test_resnet")


CASES = {
    "rd-eps-negative": (lambda rd: RetrieverDictionary(8, num_atoms=16, eps=-1.0),
                        r"RetrieverDictionary: eps=-1.0 is invalid: expected a finite float > 0"),
    "rd-eps-nan": (lambda rd: RetrieverDictionary(8, num_atoms=16, eps=NAN), r"eps=nan is invalid"),
    "rd-trainable-str": (lambda rd: RetrieverDictionary(8, num_atoms=16, trainable_dictionary="no"),
                         r"trainable_dictionary='no' is invalid: expected True or False"),
    "rd-fused-int": (lambda rd: RetrieverDictionary(8, num_atoms=16, fused_retriever=1),
                     r"fused_retriever=1 is invalid"),
    "pono-eps": (lambda rd: PositionalNorm(16, eps=0.0), r"PositionalNorm: eps=0.0 is invalid"),
    "pono-affine": (lambda rd: PositionalNorm(16, affine="yes"), r"PositionalNorm: affine='yes'"),
    "positional-norm-list": (lambda rd: positional_norm([1.0, 2.0]),
                             r"positional_norm: x \(with a channel axis\) must be a .*got list"),
    "positional-norm-eps": (lambda rd: positional_norm(X, eps=-1e-5), r"positional_norm: eps=-1e-05"),
    "normalized-dictionary-0": (lambda rd: NormalizedDictionary(0, 4),
                                r"NormalizedDictionary: num_atoms=0 is invalid: expected an int >= 1"),
    "convbn-dictionary-dim": (lambda rd: ConvBNDictionary(4, 0), r"ConvBNDictionary: dim=0 is invalid"),
    "split-retriever-0": (lambda rd: SplitRetriever(0, 4), r"SplitRetriever: in_channels=0 is invalid"),
    "split-retriever-even-k": (lambda rd: SplitRetriever(8, 4, 4),
                               r"SplitRetriever: kernel_size=4 is invalid: expected an odd int"),
    "fused-retriever-0": (lambda rd: FusedRetriever(8, 0), r"FusedRetriever: num_atoms=0 is invalid"),
    "conv-norm-act": (lambda rd: ConvNormAct(8, 4, 0), r"ConvNormAct: kernel_size=0 is invalid"),
    "attach-image-size-0": (lambda rd: attach(_model(), at="layer1", image_size=0),
                            r"attach: image_size=0 is invalid: expected a positive int or \(height, width\)"),
    "attach-image-size-3-tuple": (lambda rd: attach(_model(), at="layer1", image_size=(3, 32, 32)),
                                  r"attach: image_size=\(3, 32, 32\) is invalid"),
    "attach-in-chans": (lambda rd: attach(_model(), at="layer1", in_chans=0), r"attach: in_chans=0 is invalid"),
    "attach-at-int": (lambda rd: attach(_model(), at=3), r"attach: at must be a module name \(str\), got int"),
    "detach-at-int": (lambda rd: detach(_model(), 3), r"detach: at must be a module name \(str\), got int"),
    "reattach-dict": (lambda rd: reattach(_model(), {"at": "layer1"}),
                      r"reattach: config=\{'at': 'layer1'\} is invalid: expected a list of dicts"),
    "reattach-no-at": (lambda rd: reattach(_model(), [{"in_channels": 8}]),
                       r"reattach: config\[0\]=\{'in_channels': 8\} is invalid: expected a dict with an 'at'"),
    "reattach-bad-key": (lambda rd: reattach(_model(), [{"at": "layer1", "in_channels": 8, "bogus": 1}]),
                         r"reattach: config\[0\] for at='layer1': .*'bogus'"),
    "coefficient-maps-rd": (lambda rd: coefficient_maps(3, X),
                            r"coefficient_maps: rd must be a RetrieverDictionary, got int"),
    "coefficient-maps-3d": (lambda rd: coefficient_maps(rd, X[0]),
                            r"coefficient_maps: features must be a 4-D tensor, got \(8, 4, 4\)"),
    "atom-usage-rd": (lambda rd: atom_usage(None, [X]), r"atom_usage: rd must be a RetrieverDictionary"),
    "atom-usage-max-batches": (lambda rd: atom_usage(rd, [X], max_batches=0),
                               r"atom_usage: max_batches=0 is invalid: expected an int >= 1 or None"),
    "plot-dpi": (lambda rd: plot_coefficients(rd, X, "x.png", dpi=0), r"plot_coefficients: dpi=0 is invalid"),
    "plot-features": (lambda rd: plot_coefficients(rd, [X], "x.png"), r"plot_coefficients: features must be"),
    "loss-list": (lambda rd: distillation_loss([1.0], [1.0]), r"distillation_loss: student must be"),
    "loss-max-positions": (lambda rd: distillation_loss(X, X, max_positions=1.5),
                           r"distillation_loss: max_positions=1.5 is invalid: expected an int >= 2"),
    "student-teacher": (lambda rd: student_from_teacher(3, torch.arange(3)),
                        r"student_from_teacher: teacher must be a RetrieverDictionary"),
    "compress-lr-nan": (lambda rd: compress(None, rd, 8, [X], lr=NAN),
                        r"compress: lr=nan is invalid: expected a finite float > 0"),
    "compress-lr-negative": (lambda rd: compress(None, rd, 8, [X], lr=-1e-3), r"compress: lr=-0.001"),
    "compress-weight-decay": (lambda rd: compress(None, rd, 8, [X], weight_decay=-1.0),
                              r"compress: weight_decay=-1.0 is invalid: expected a finite float >= 0"),
    "compress-temperature": (lambda rd: compress(None, rd, 8, [X], temperature=0.0),
                             r"compress: temperature=0.0 is invalid"),
    "compress-epochs-bool": (lambda rd: compress(None, rd, 8, [X], epochs=True),
                             r"compress: epochs=True is invalid: expected an int >= 1"),
    "compress-max-batches": (lambda rd: compress(None, rd, 8, [X], max_batches=0),
                             r"compress: max_batches=0 is invalid"),
    "compress-usage-score": (lambda rd: compress(None, rd, 8, [X], usage_score="popular"),
                             r"compress: usage_score='popular' is invalid: expected one of \['mean_abs'"),
    "compress-model": (lambda rd: compress("model", rd, 8, [X]), r"compress: model must be an nn.Module or None"),
    "official-prefix": (lambda rd: official.load({"a": torch.zeros(1)}, prefix=3),
                        r"official.load: prefix must be a str or None, got int"),
    "export-config-model": (lambda rd: export_config(3, {}), r"export_config: model must be an nn.Module"),
    "export-config-config": (lambda rd: export_config(_model(), {"model_args": {}}),
                             r"export_config: config=.* is invalid: expected timm's config.json"),
    "as-atoms-dim": (lambda rd: as_atoms(torch.ones(4, 8), dim=-1), r"as_atoms: dim=-1 is invalid: expected an int >= 1 or None"),
    "attached-model": (lambda rd: attached(None), r"attached: model must be an nn.Module, got NoneType"),
    "attachments-model": (lambda rd: attachments("resnet18"), r"attachments: model must be an nn.Module, got str"),
    "atom-usage-data": (lambda rd: atom_usage(rd, 3), r"atom_usage: data must be a tensor or an iterable of batches .*got int"),
    "compress-data": (lambda rd: compress(None, rd, 8, None), r"compress: data must be a tensor or an iterable of batches .*got NoneType"),
    "iter-rd-inputs-rd": (lambda rd: iter_rd_inputs(None, "rd", [X]), r"iter_rd_inputs: rd must be an nn.Module, got str"),
    "iter-rd-inputs-max-batches": (lambda rd: iter_rd_inputs(None, rd, [X], max_batches="2"),
                                   r"iter_rd_inputs: max_batches='2' is invalid: expected an int >= 1 or None"),
    "rd-inputs-model": (lambda rd: rd_inputs(0, rd, X), r"rd_inputs: model must be an nn.Module, got int"),
    "rd-inputs-images": (lambda rd: rd_inputs(_model(), rd, None), r"rd_inputs: images must be a 4-D tensor, got NoneType"),
    "get-variant": (lambda rd: get_variant(None), r"get_variant: name=None: unknown variant None; valid variants are \['authors', 'paper'\]"),
    "loss-temperature": (lambda rd: distillation_loss(X, X, temperature="0.1"), r"distillation_loss: temperature='0.1' is invalid"),
    "student-index": (lambda rd: student_from_teacher(rd, None), r"student_from_teacher: index must be a tensor or sequence .*got NoneType"),
    "student-index-float": (lambda rd: student_from_teacher(rd, torch.tensor([0.5, 1.5])), r"student_from_teacher: index must hold integers"),
    "plot-path": (lambda rd: plot_coefficients(rd, X, None), r"plot_coefficients: path must be a file path \(str or os.PathLike\), got NoneType"),
    "plot-path-empty": (lambda rd: plot_coefficients(rd, X, ""), r"plot_coefficients: path='' is invalid: expected a non-empty file path"),
}  # fmt: skip


@pytest.mark.parametrize(("call", "message"), CASES.values(), ids=CASES)
def test_bad_value_is_named(rd, tmp_path, monkeypatch, call, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises((ValueError, TypeError), match=message):
        call(rd)
    assert list(tmp_path.iterdir()) == []  # nothing written on the way


@pytest.mark.parametrize(
    ("content", "suffix"),
    [(b"\x10\x00\x00\x00\x00\x00\x00\x00{", ".safetensors"), (b"<html>", ".safetensors")],
    ids=["truncated", "foreign"],
)
def test_unreadable_safetensors_checkpoint(tmp_path, content, suffix):
    path = tmp_path / f"ckpt{suffix}"
    path.write_bytes(content)
    message = rf"^official.read_checkpoint: {path} is not a readable safetensors file \(.+\)$"
    with pytest.raises(ValueError, match=message):
        official.load(path)


def test_empty_torch_checkpoint(tmp_path):
    (tmp_path / "ckpt.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"ckpt.pt' is an empty file \(0 bytes\)"):
        official.load(tmp_path / "ckpt.pt")
