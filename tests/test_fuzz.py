"""Bad values on every public entry point of every package (issue 16).

Each entry point named in a package's ``__all__`` is called once with valid arguments, then with
one argument at a time replaced by a bad value: None, -1, 0, NaN, inf, an object of the wrong
type, an empty string and a huge number. The call must either succeed (the value is valid
there) or raise the project's kind of error: ``ValueError`` / ``TypeError`` /
``FileNotFoundError`` (or a subclass such as ``CheckpointError``) whose message names the
argument. A raw ``IndexError``, ``KeyError``, ``ZeroDivisionError``, ``AttributeError``, a torch
``RuntimeError``, or a ``ValueError`` that does not say which argument is wrong fails the case.

For the huge value only, a refused memory allocation counts as a clear error (the value is
well-formed; the machine cannot hold it).

Entries that are not entry points (result records, exception classes, registries, modules,
constants) and those that need the network are listed in ``NOT_FUZZED`` with the reason;
``test_every_entry_point_is_fuzzed`` keeps the table complete when a package adds a name.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import re
import signal
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn

PACKAGES = [
    "implicit_knowledge",
    "kernelwarehouse",
    "rd_core",
    "dict_init",
    "yolo_heads",
    "timm_knowledge",
    "hub_knowledge",
]

BAD_VALUES: dict[str, Any] = {
    "None": None,
    "-1": -1,
    "0": 0,
    "nan": math.nan,
    "inf": math.inf,
    "wrong type": object(),
    "empty string": "",
    "huge": 10**12,
}
PROJECT_ERRORS = (ValueError, TypeError, FileNotFoundError)


@dataclass
class Entry:
    """How to call one entry point validly: ``call(**kwargs())``; ``args`` are fuzzed (default:
    every key of ``kwargs()``)."""

    call: Callable[..., Any]
    kwargs: Callable[[], dict[str, Any]]
    args: list[str] | None = None
    values: list[str] = field(default_factory=lambda: list(BAD_VALUES))
    # arguments where a huge value is valid and only means a long run (epochs): not tried
    no_huge: tuple[str, ...] = ()


# --------------------------------------------------------------------------- valid arguments
def _conv_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1))


def _tiny_timm(name: str = "resnet10t", **kwargs):
    import timm

    return timm.create_model(name, num_classes=3, **kwargs).eval()


def _rd(channels: int = 8, atoms: int = 4):
    from rd_core import RetrieverDictionary

    return RetrieverDictionary(channels, num_atoms=atoms)


def _boxes(n: int = 4) -> torch.Tensor:
    xy = torch.rand(n, 2) * 20
    return torch.cat([xy, xy + 5 + torch.rand(n, 2) * 10], dim=1)


def _dictionary():
    from dict_init import Dictionary

    return Dictionary(torch.randn(4, 3), {"seed": 0})


def _entries(tmp) -> dict[str, Entry]:
    import dict_init as di
    import hub_knowledge as hk
    import implicit_knowledge as ik
    import kernelwarehouse as kw
    import rd_core as rc
    import timm_knowledge as tk
    import yolo_heads as yh

    def fresh(name: str):
        path = tmp / name
        return str(path)

    e: dict[str, Entry] = {}
    # ---- implicit_knowledge
    for cls in ("ImplicitAdd", "ImplicitMul", "ImplicitLayer"):
        e[f"implicit_knowledge.{cls}"] = Entry(
            getattr(ik, cls), lambda: {"channels": 4, "prior": "vector", "prior_dim": 3, "dim": 1}
        )
    e["implicit_knowledge.ImplicitConcat"] = Entry(
        ik.ImplicitConcat, lambda: {"channels": 4, "prior": "network", "in_channels": 3, "dim": 1}
    )
    e["implicit_knowledge.ImplicitFeatureAlignment"] = Entry(
        ik.ImplicitFeatureAlignment, lambda: {"channels": [4, 8], "prior": "vector", "prior_dim": 2}
    )
    e["implicit_knowledge.ImplicitPredictionRefinement"] = Entry(
        ik.ImplicitPredictionRefinement,
        lambda: {"conv": nn.Conv2d(4, 6, 1), "prior": "factorized", "prior_dim": 2},
    )
    e["implicit_knowledge.create_prior"] = Entry(
        ik.create_prior,
        lambda: {"name": "network", "channels": 4, "mean": 0.0, "std": 0.02, "prior_dim": 3},
    )
    e["implicit_knowledge.fuse"] = Entry(
        ik.fuse, lambda: {"model": _conv_model(), "inplace": False}
    )
    e["implicit_knowledge.implicit_layers"] = Entry(
        ik.implicit_layers, lambda: {"model": _conv_model()}
    )
    e["implicit_knowledge.list_priors"] = Entry(ik.list_priors, dict)
    e["implicit_knowledge.register_prior"] = Entry(
        ik.register_prior,
        lambda: {"name": "vector"},
        values=["None", "-1", "wrong type", "empty string"],
    )

    # ---- kernelwarehouse
    small_kw = {
        "in_channels": 8,
        "out_channels": 8,
        "kernel_size": 3,
        "stride": 1,
        "padding": 1,
        "groups": 1,
    }
    e["kernelwarehouse.KWConv2d"] = Entry(kw.KWConv2d, lambda: dict(small_kw))
    e["kernelwarehouse.KWConv1d"] = Entry(kw.KWConv1d, lambda: dict(small_kw))
    e["kernelwarehouse.KWConv3d"] = Entry(
        kw.KWConv3d, lambda: {**small_kw, "in_channels": 4, "out_channels": 4}
    )
    e["kernelwarehouse.KWLinear"] = Entry(
        kw.KWLinear, lambda: {"in_features": 8, "out_features": 8, "bias": True}
    )
    e["kernelwarehouse.KWAttention"] = Entry(
        kw.KWAttention,
        lambda: {
            "in_channels": 8,
            "num_mixtures": 4,
            "num_cells": 4,
            "beta": torch.eye(4, 5),
            "reduction": 0.0625,
            "min_hidden": 4,
            "eps": 1e-3,
        },
    )
    e["kernelwarehouse.Warehouse"] = Entry(
        kw.Warehouse, lambda: {"num_cells": 4, "cell": kw.CellShape(2, 2, (1, 1)), "name": "w"}
    )
    e["kernelwarehouse.WarehouseManager"] = Entry(
        kw.WarehouseManager,
        lambda: {
            "budget": 1.0,
            "reduction": 0.0625,
            "min_hidden": 16,
            "eps": 1e-3,
            "assignment": "diagonal",
            "executor": "fast",
        },
    )
    e["kernelwarehouse.TemperatureScheduler"] = Entry(
        kw.TemperatureScheduler,
        lambda: {"model": kw.KWConv2d(8, 8, 3), "total": 10, "start": 1.0, "end": 0.0},
    )
    e["kernelwarehouse.assign_cells"] = Entry(
        kw.assign_cells,
        lambda: {
            "num_mixtures": 4,
            "num_cells": 4,
            "start": 0,
            "cells_per_mixture": 1.0,
            "rule": "diagonal",
        },
    )
    e["kernelwarehouse.auto_groups"] = Entry(
        kw.auto_groups, lambda: {"model": _conv_model(), "name": "0", "module": nn.Conv2d(4, 8, 3)}
    )
    e["kernelwarehouse.contrasting_attention"] = Entry(
        kw.contrasting_attention,
        lambda: {
            "logits": torch.randn(2, 4, 5),
            "beta": torch.eye(4, 5),
            "temperature": 0.5,
            "eps": 1e-3,
        },
    )
    e["kernelwarehouse.convert"] = Entry(
        kw.convert,
        lambda: {"model": _conv_model(), "budget": 1.0, "groups": "auto", "exclude": None},
    )
    e["kernelwarehouse.get_temperature"] = Entry(
        kw.get_temperature, lambda: {"model": _conv_model()}
    )
    e["kernelwarehouse.set_temperature"] = Entry(
        kw.set_temperature, lambda: {"model": kw.KWConv2d(8, 8, 3), "tau": 0.5}
    )
    e["kernelwarehouse.partition_kernel"] = Entry(
        kw.partition_kernel,
        lambda: {"kernel_shape": (8, 8, 3, 3), "cell": kw.CellShape(4, 4, (1, 1)), "name": "c"},
    )
    e["kernelwarehouse.plan_cell_shape"] = Entry(
        kw.plan_cell_shape,
        lambda: {"kernel_shapes": [(8, 8, 3, 3), (8, 8, 1, 1)], "in_ratio": 1.0, "out_ratio": 1.0},
    )
    e["kernelwarehouse.register_executor"] = Entry(
        kw.register_executor,
        # a fresh name per call: a taken one is refused (and must never replace "fast")
        lambda: {"name": f"fuzz_{uuid.uuid4().hex}", "forward": lambda *a: None},
        values=["None", "-1", "wrong type", "empty string"],
    )
    e["kernelwarehouse.register_grouping"] = Entry(
        kw.register_grouping,
        lambda: {"name": "auto"},
        values=["None", "-1", "wrong type", "empty string"],
    )
    e["kernelwarehouse.set_executor"] = Entry(
        kw.set_executor, lambda: {"model": kw.KWConv2d(8, 8, 3), "name": "fast"}
    )

    # ---- rd_core
    e["rd_core.RetrieverDictionary"] = Entry(
        rc.RetrieverDictionary,
        lambda: {
            "in_channels": 8,
            "num_atoms": 4,
            "kernel_size": 3,
            "residual": 0.8,
            "variant": "paper",
            "eps": 1e-5,
        },
    )
    e["rd_core.ConvBNDictionary"] = Entry(
        rc.ConvBNDictionary, lambda: {"num_atoms": 4, "dim": 8, "bn_eps": 1e-3}
    )
    e["rd_core.NormalizedDictionary"] = Entry(
        rc.NormalizedDictionary, lambda: {"num_atoms": 4, "dim": 8, "eps": 1e-12}
    )
    e["rd_core.ConvNormAct"] = Entry(
        rc.ConvNormAct, lambda: {"in_channels": 4, "out_channels": 8, "kernel_size": 3, "groups": 1}
    )
    e["rd_core.FusedRetriever"] = Entry(
        rc.FusedRetriever, lambda: {"in_channels": 8, "num_atoms": 4, "kernel_size": 3}
    )
    e["rd_core.SplitRetriever"] = Entry(
        rc.SplitRetriever, lambda: {"in_channels": 8, "num_atoms": 4, "kernel_size": 3}
    )
    e["rd_core.PositionalNorm"] = Entry(
        rc.PositionalNorm, lambda: {"num_channels": 4, "eps": 1e-5, "form": "variance"}
    )
    e["rd_core.RDInsertion"] = Entry(
        rc.RDInsertion, lambda: {"module": nn.Conv2d(4, 8, 1), "rd": _rd(), "layout": "nchw"}
    )
    e["rd_core.as_atoms"] = Entry(
        rc.as_atoms, lambda: {"dictionary": torch.randn(4, 8), "num_atoms": 4, "dim": 8}
    )
    e["rd_core.atom_usage"] = Entry(
        rc.atom_usage, lambda: {"rd": _rd(), "data": torch.randn(2, 8, 4, 4)}
    )
    e["rd_core.attach"] = Entry(
        rc.attach,
        lambda: {
            "model": _conv_model(),
            "at": "0",
            "layout": "auto",
            **_probe(),
            "num_atoms": 4,
        },
    )
    e["rd_core.attached"] = Entry(rc.attached, lambda: {"model": _conv_model()})
    e["rd_core.attachments"] = Entry(rc.attachments, lambda: {"model": _conv_model()})
    e["rd_core.batch_images"] = Entry(rc.batch_images, lambda: {"batch": torch.randn(2, 3, 8, 8)})
    e["rd_core.coefficient_maps"] = Entry(
        rc.coefficient_maps, lambda: {"rd": _rd(), "features": torch.randn(1, 8, 4, 4)}
    )
    e["rd_core.compress"] = Entry(
        rc.compress,
        lambda: {
            "model": None,
            "rd": _rd(8, 8),
            "num_atoms": 4,
            "data": torch.randn(2, 8, 4, 4),
            "epochs": 1,
            "lr": 1e-3,
            "temperature": 0.1,
            "max_positions": 16,
            "progress": False,
        },
        no_huge=("epochs",),
    )
    e["rd_core.detach"] = Entry(rc.detach, lambda: {"model": _attached(), "at": "0"})
    e["rd_core.distillation_loss"] = Entry(
        rc.distillation_loss,
        lambda: {
            "student": torch.randn(2, 4, 3, 3),
            "teacher": torch.randn(2, 4, 3, 3),
            "temperature": 0.1,
            "max_positions": 8,
            "chunk_size": 4,
        },
    )
    e["rd_core.fuse_retriever"] = Entry(
        rc.fuse_retriever, lambda: {"retriever": rc.SplitRetriever(8, 4, kernel_size=3)}
    )
    e["rd_core.get_variant"] = Entry(rc.get_variant, lambda: {"name": "paper"})
    e["rd_core.iter_rd_inputs"] = Entry(
        lambda **k: list(rc.iter_rd_inputs(**k)),
        lambda: {"model": None, "rd": _rd(), "data": torch.randn(2, 8, 4, 4), "max_batches": 1},
    )
    e["rd_core.list_variants"] = Entry(rc.list_variants, dict)
    e["rd_core.plot_coefficients"] = Entry(
        rc.plot_coefficients,
        lambda: {
            "rd": _rd(),
            "features": torch.randn(1, 8, 4, 4),
            "path": fresh("c.png"),
            "sample": 0,
        },
    )
    e["rd_core.positional_norm"] = Entry(
        rc.positional_norm, lambda: {"x": torch.randn(1, 4, 3, 3), "eps": 1e-5, "form": "variance"}
    )
    e["rd_core.rd_inputs"] = Entry(
        rc.rd_inputs,
        lambda: dict(zip(["model", "rd"], _attached(pair=True)), images=torch.randn(1, 4, 8, 8)),
    )
    e["rd_core.reattach"] = Entry(
        rc.reattach,
        lambda: {"model": _conv_model(), "config": [{"at": "0", "num_atoms": 4, "in_channels": 8}]},
    )
    e["rd_core.register_layout"] = Entry(
        rc.register_layout,
        lambda: {"layout": None},
        values=["None", "-1", "wrong type", "empty string"],
    )
    e["rd_core.register_variant"] = Entry(
        rc.register_variant,
        lambda: {"spec": rc.get_variant("paper")},
        values=["None", "-1", "wrong type", "empty string"],
    )
    e["rd_core.student_from_teacher"] = Entry(
        rc.student_from_teacher, lambda: {"teacher": _rd(8, 8), "index": torch.tensor([0, 2, 4])}
    )

    # ---- dict_init
    e["dict_init.Dictionary"] = Entry(
        di.Dictionary, lambda: {"atoms": torch.randn(4, 3), "metadata": {}}
    )
    e["dict_init.TensorSource"] = Entry(
        di.TensorSource, lambda: {"x": torch.randn(8, 3), "name": "x"}
    )
    e["dict_init.as_source"] = Entry(di.as_source, lambda: {"x": torch.randn(8, 3), "name": "x"})
    e["dict_init.TransformedSource"] = Entry(
        di.TransformedSource,
        lambda: {"source": di.as_source(torch.randn(8, 3)), "transform": torch.tanh},
    )
    e["dict_init.assign"] = Entry(
        di.assign, lambda: {"x": torch.randn(8, 3), "centers": torch.randn(2, 3), "chunk_size": 4}
    )
    e["dict_init.inertia"] = Entry(
        di.inertia, lambda: {"x": torch.randn(8, 3), "centers": torch.randn(2, 3), "chunk_size": 4}
    )
    e["dict_init.kmeans"] = Entry(
        di.kmeans,
        lambda: {
            "x": torch.randn(32, 3),
            "k": 3,
            "seed": 0,
            "max_iter": 5,
            "tol": 1e-4,
            "chunk_size": 16,
            "progress": False,
        },
    )
    e["dict_init.kmeans_plusplus"] = Entry(
        di.kmeans_plusplus,
        lambda: {"x": torch.randn(16, 3), "k": 3, "generator": torch.Generator().manual_seed(0)},
    )
    e["dict_init.FeatureShards"] = Entry(di.FeatureShards, lambda: {"root": _shards(tmp)})
    e["dict_init.ShardWriter"] = Entry(
        di.ShardWriter, lambda: {"root": fresh("writer"), "shard_size": 16, "prefix": "rank0"}
    )
    e["dict_init.VisionEncoder"] = Entry(
        di.VisionEncoder, lambda: {"model": _tiny_timm(), "at": "layer2", "image_size": 32}
    )
    e["dict_init.create_encoder"] = Entry(di.create_encoder, lambda: {"spec": "timm:resnet10t"})
    e["dict_init.build_dictionary"] = Entry(
        di.build_dictionary,
        lambda: {
            "encoder": _vision_encoder(),
            "data": torch.rand(2, 3, 32, 32),
            "num_atoms": 4,
            "seed": 0,
            "positions_per_image": 8,
            "batch_size": 2,
            "progress": False,
        },
    )
    e["dict_init.extract_features"] = Entry(
        di.extract_features,
        lambda: {
            "encoder": _vision_encoder(),
            "data": torch.rand(2, 3, 32, 32),
            "out_dir": fresh("features"),
            "batch_size": 2,
            "positions_per_image": 4,
            "progress": False,
        },
    )
    e["dict_init.coco_class_names"] = Entry(di.coco_class_names, dict)

    # ---- yolo_heads
    e["yolo_heads.FPN"] = Entry(
        yh.FPN,
        lambda: {"in_channels": [8, 16, 32], "channels": 8, "depth": 1},
        no_huge=("depth",),  # depth=10**12 is accepted and builds blocks for ever (reported)
    )
    e["yolo_heads.PAN"] = Entry(
        yh.PAN,
        lambda: {"in_channels": [8, 16, 32], "channels": 8, "depth": 1},
        no_huge=("depth",),  # as FPN
    )
    e["yolo_heads.AnchorFreeHead"] = Entry(
        yh.AnchorFreeHead, lambda: {"in_channels": [8, 8, 8], "num_classes": 3, "reg_max": 4}
    )
    e["yolo_heads.AnchorBasedHead"] = Entry(
        yh.AnchorBasedHead, lambda: {"in_channels": [8, 8, 8], "num_classes": 3}
    )
    e["yolo_heads.AnchorFreeLoss"] = Entry(
        yh.AnchorFreeLoss,
        lambda: {
            "head": yh.AnchorFreeHead([8, 8, 8], 3, reg_max=4),
            "box_gain": 7.5,
            "dfl_gain": 1.5,
            "cls_gain": 0.5,
        },
    )
    e["yolo_heads.AnchorBasedLoss"] = Entry(
        yh.AnchorBasedLoss,
        lambda: {
            "head": yh.AnchorBasedHead([8, 8, 8], 3),
            "box_gain": 0.05,
            "obj_gain": 1.0,
            "cls_gain": 0.5,
            "anchor_t": 4.0,
        },
    )
    e["yolo_heads.TaskAlignedAssigner"] = Entry(
        yh.TaskAlignedAssigner,
        lambda: {
            "topk": 10,
            "alpha": 0.5,
            "beta": 6.0,
            "eps": 1e-9,
            "iou": "ciou",
            "min_side": 16.0,
        },
    )
    e["yolo_heads.YOLODetector"] = Entry(
        yh.YOLODetector,
        lambda: {
            "backbone": "resnet10t",
            "num_classes": 3,
            "neck": "pan",
            "head": "anchor_free",
            "neck_channels": 8,
            "neck_depth": 1,
            "in_chans": 3,
        },
        no_huge=("neck_depth",),  # as FPN
    )
    e["yolo_heads.yolo_detector"] = Entry(
        yh.yolo_detector, lambda: {"backbone": "resnet10t", "num_classes": 3, "neck_channels": 8}
    )
    e["yolo_heads.create_backbone"] = Entry(
        yh.create_backbone, lambda: {"backbone": "resnet10t", "in_chans": 3, "pretrained": False}
    )
    e["yolo_heads.PyramidBackbone"] = Entry(
        yh.PyramidBackbone,
        lambda: {
            "body": _tiny_timm(features_only=True, out_indices=(2, 3, 4)),
            "indices": [2, 3, 4],
            "channels": [128, 256, 512],
            "module_names": ["layer2", "layer3", "layer4"],
            "in_chans": 3,
        },
    )
    e["yolo_heads.batched_nms"] = Entry(
        yh.batched_nms,
        lambda: {
            "boxes": _boxes(),
            "scores": torch.rand(4),
            "classes": torch.tensor([0, 0, 1, 1]),
            "iou_threshold": 0.5,
        },
    )
    e["yolo_heads.nms"] = Entry(
        yh.nms, lambda: {"boxes": _boxes(), "scores": torch.rand(4), "iou_threshold": 0.5}
    )
    e["yolo_heads.box_iou"] = Entry(yh.box_iou, lambda: {"boxes1": _boxes(3), "boxes2": _boxes(2)})
    e["yolo_heads.complete_iou"] = Entry(
        yh.complete_iou, lambda: {"boxes1": _boxes(3), "boxes2": _boxes(3), "eps": 1e-7}
    )
    e["yolo_heads.distribution_focal_loss"] = Entry(
        yh.distribution_focal_loss,
        lambda: {"pred_logits": torch.randn(5, 4), "target": torch.rand(5) * 2.5},
    )
    e["yolo_heads.postprocess"] = Entry(
        yh.postprocess,
        lambda: {
            "boxes": _boxes(6).unsqueeze(0),
            "scores": torch.rand(1, 6, 3),
            "conf": 0.25,
            "iou": 0.65,
            "max_det": 10,
            "max_candidates": 100,
        },
    )
    e["yolo_heads.conv_bn_pairs"] = Entry(
        yh.conv_bn_pairs, lambda: {"model": _conv_bn(), "example": torch.randn(1, 4, 8, 8)}
    )
    e["yolo_heads.fuse_conv_bn"] = Entry(
        yh.fuse_conv_bn,
        lambda: {"model": _conv_bn(), "example": torch.randn(1, 4, 8, 8), "atol": 1e-4},
    )
    e["yolo_heads.fuse_for_inference"] = Entry(
        yh.fuse_for_inference,
        lambda: {"model": _conv_bn(), "example": torch.randn(1, 4, 8, 8), "atol": 1e-4},
    )
    e["yolo_heads.evaluate_coco"] = Entry(
        yh.evaluate_coco, lambda: _coco(tmp), args=["ann_file", "detections"]
    )
    e["yolo_heads.register_head"] = Entry(
        yh.register_head,
        lambda: {"name": "anchor_free"},
        values=["None", "-1", "wrong type", "empty string"],
    )
    e["yolo_heads.register_neck"] = Entry(
        yh.register_neck,
        lambda: {"name": "pan"},
        values=["None", "-1", "wrong type", "empty string"],
    )
    e["yolo_heads.save_checkpoint"] = Entry(
        yh.save_checkpoint,
        lambda: {
            "model": _detector(),
            "folder": fresh("ckpt"),
            "label_names": ["a", "b", "c"],
            "image_size": 64,
        },
    )
    e["yolo_heads.load_checkpoint"] = Entry(
        yh.load_checkpoint, lambda: {"folder": _saved_checkpoint(tmp), "device": "cpu"}
    )

    # ---- timm_knowledge
    e["timm_knowledge.budget_suffix"] = Entry(tk.budget_suffix, lambda: {"budget": 0.5})
    e["timm_knowledge.hub_id"] = Entry(tk.hub_id, lambda: {"name": "kw_resnet18_1x", "tag": "in1k"})
    e["timm_knowledge.list_paper_models"] = Entry(
        tk.list_paper_models, lambda: {"method": "yolo-rd"}
    )

    # ---- hub_knowledge
    e["hub_knowledge.add_to_cache"] = Entry(
        hk.add_to_cache,
        lambda: {
            "folder": str(_hub_folder(tmp)),
            "repo_id": "org/name",
            "revision": "main",
            "cache_dir": fresh("hf-cache"),
        },
    )
    e["hub_knowledge.build_config"] = Entry(
        hk.build_config, lambda: {"model": _tiny_timm(), "model_args": None, "label_names": None}
    )
    e["hub_knowledge.load"] = Entry(
        hk.load, lambda: {"source": str(_hub_folder(tmp)), "revision": None}, args=["source"]
    )
    e["hub_knowledge.load_dictionary"] = Entry(
        hk.load_dictionary, lambda: {"source": str(_dictionary_folder(tmp))}
    )
    e["hub_knowledge.load_weights"] = Entry(
        hk.load_weights,
        lambda: {
            "model": _tiny_timm(),
            "checkpoint": str(_hub_folder(tmp) / "model.safetensors"),
            "architecture": "resnet10t",
        },
    )
    e["hub_knowledge.model_card"] = Entry(
        hk.model_card,
        lambda: {
            "model": _tiny_timm(),
            "repo_id": "org/name",
            "metrics": {"top1": 1.0},
            "license": "apache-2.0",
        },
    )
    e["hub_knowledge.read_state_dict"] = Entry(
        hk.read_state_dict, lambda: {"path": str(_hub_folder(tmp) / "model.safetensors")}
    )
    e["hub_knowledge.save_for_hub"] = Entry(
        hk.save_for_hub,
        lambda: {
            "model": _tiny_timm(),
            "folder": fresh("repo"),
            "model_name": "org/name",
            "metrics": {"top1": 1.0},
        },
    )
    e["hub_knowledge.save_dictionary_for_hub"] = Entry(
        hk.save_dictionary_for_hub,
        lambda: {"dictionary": _dictionary(), "folder": fresh("dict"), "name": "org/dict"},
    )
    e["hub_knowledge.save_weights"] = Entry(
        hk.save_weights,
        lambda: {"weights": nn.Linear(2, 2), "path": fresh("w.safetensors"), "architecture": "x"},
    )
    return e


def _attached(pair: bool = False):
    from rd_core import attach

    model = _conv_model()
    rd = attach(model, at="0", **_probe(), num_atoms=4)
    return (model, rd) if pair else model


def _probe() -> dict[str, Any]:
    # rd-core's image_size / in_chans (input_size=(C, H, W) is their deprecated alias)
    import inspect

    from rd_core import attach

    if "image_size" in inspect.signature(attach).parameters:
        return {"image_size": 8, "in_chans": 4}
    return {"input_size": (4, 8, 8)}


def _conv_bn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()).eval()


def _vision_encoder():
    from dict_init import VisionEncoder

    return VisionEncoder(_tiny_timm(), at="layer2", image_size=32)


def _detector():
    from yolo_heads import YOLODetector

    return YOLODetector("resnet10t", num_classes=3, neck_channels=8).eval()


_CACHE: dict[str, Any] = {}


def _once(key: str, make: Callable[[], Any]) -> Any:
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def _shards(tmp):
    def make():
        from dict_init import extract_features

        data = torch.rand(2, 3, 32, 32)
        extract_features(_vision_encoder(), data, tmp / "shards", batch_size=2, progress=False)
        return str(tmp / "shards")

    return _once("shards", make)


def _hub_folder(tmp):
    from hub_knowledge import save_for_hub

    return _once("hub", lambda: save_for_hub(_tiny_timm(), tmp / "hub-folder"))


def _dictionary_folder(tmp):
    from hub_knowledge import save_dictionary_for_hub

    return _once("dict", lambda: save_dictionary_for_hub(_dictionary(), tmp / "dict-folder"))


def _saved_checkpoint(tmp):
    from yolo_heads import save_checkpoint

    return _once("ckpt", lambda: str(save_checkpoint(_detector(), tmp / "saved-ckpt")))


def _coco(tmp) -> dict[str, Any]:
    def make():
        import json

        ann = tmp / "ann.json"
        ann.write_text(
            json.dumps(
                {
                    "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
                    "annotations": [
                        {
                            "id": 1,
                            "image_id": 1,
                            "category_id": 1,
                            "bbox": [4, 4, 20, 20],
                            "area": 400,
                            "iscrowd": 0,
                        }
                    ],
                    "categories": [{"id": 1, "name": "a"}],
                }
            )
        )
        return str(ann)

    ann = _once("coco", make)
    return {
        "ann_file": ann,
        "detections": [{"image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "score": 0.9}],
    }


# --------------------------------------------------------------------------- what is not fuzzed
_RECORDS = "a result record / value holder: it stores what it is given, not an entry point"
NOT_FUZZED: dict[str, str] = {
    **{f"{p}.__version__": "a string" for p in PACKAGES},
    "implicit_knowledge.ImplicitLayer": "",  # fuzzed (the base class is usable on its own)
    "kernelwarehouse.EXECUTORS": "a registry",
    "kernelwarehouse.GROUPING_RULES": "a registry",
    "kernelwarehouse.AttentionBatchNorm1d": "torch.nn.BatchNorm1d with another forward",
    "kernelwarehouse.CellShape": _RECORDS,
    "kernelwarehouse.ConversionPlan": _RECORDS,
    "kernelwarehouse.LayerPartition": _RECORDS,
    "kernelwarehouse.LayerPlan": _RECORDS,
    "kernelwarehouse.WarehousePlan": _RECORDS,
    "kernelwarehouse.KWOptions": "a TypedDict of keyword options (fuzzed through KWConv2d)",
    "kernelwarehouse.KWLayer": "abstract base of KWConv*d / KWLinear (fuzzed through them)",
    "kernelwarehouse.models": "a module",
    "rd_core.HUB_METADATA": "a constant",
    "rd_core.LAYOUTS": "a registry",
    "rd_core.USAGE_SCORES": "a registry",
    "rd_core.AtomUsage": _RECORDS,
    "rd_core.CoefficientMaps": _RECORDS,
    "rd_core.CompressionReport": _RECORDS,
    "rd_core.VariantSpec": _RECORDS,
    "rd_core.factory": "a module",
    "rd_core.official": "a module",
    "dict_init.HUB_METADATA": "a constant",
    "dict_init.KMeansResult": _RECORDS,
    "dict_init.VectorSource": "a protocol",
    "dict_init.CLIPImageEncoder": "needs a CLIP model from transformers (tested in dict-init)",
    "dict_init.OpenCLIPImageEncoder": "needs an open_clip model (tested in dict-init)",
    "dict_init.GPTTextEncoder": "needs a GPT-style language model (tested in dict-init)",
    "dict_init.SentenceEncoder": "loads the bundled MiniLM (seconds; tested in dict-init)",
    "yolo_heads.HEADS": "a registry",
    "yolo_heads.NECKS": "a registry",
    "yolo_heads.FusionError": "an exception class",
    "yolo_heads.evaluate_detector": "needs a dataset; a forward per image (tested in yolo-heads)",
    "yolo_heads.export_onnx": "an ONNX export takes seconds per call (tested in yolo-heads)",
    "yolo_heads.export_program": "a torch.export takes seconds per call (tested in yolo-heads)",
    "timm_knowledge.HUB_ORG": "a constant",
    "timm_knowledge.KW_PAPER_BUDGETS": "a constant",
    "timm_knowledge.PAPER_MODELS": "a registry",
    "timm_knowledge.RD_ARCHITECTURES": "a registry",
    "timm_knowledge.PaperModel": _RECORDS,
    "timm_knowledge.kw_paper": "a module",
    "timm_knowledge.rd_paper": "a module",
    "hub_knowledge.CheckpointError": "an exception class",
    "hub_knowledge.push_to_hub": "needs a Hub (tested against the loopback Hub in hub-knowledge)",
    "hub_knowledge.push_folder": "needs a Hub (tested against the loopback Hub in hub-knowledge)",
    "hub_knowledge.push_dictionary_to_hub": "needs a Hub (tested in hub-knowledge)",
}
NOT_FUZZED = {k: v for k, v in NOT_FUZZED.items() if v}


def _all_names() -> list[str]:
    names = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        names += [f"{package}.{name}" for name in module.__all__]
    return names


@pytest.fixture(scope="module")
def entries(tmp_path_factory):
    return _entries(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="module", autouse=True)
def _in_an_empty_folder(tmp_path_factory):
    # an empty string as a path means the current folder: make that an empty one, not the
    # checkout (whose .nox environments an image-folder scan would walk for minutes)
    import os

    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(old)


@pytest.fixture(scope="module", autouse=True)
def _offline():
    # hub_knowledge.load("") and the like must never reach for the network
    from huggingface_hub import constants

    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    yield
    constants.HF_HUB_OFFLINE = old


def test_every_entry_point_is_fuzzed(entries):
    missing = [n for n in _all_names() if n not in entries and n not in NOT_FUZZED]
    assert missing == [], f"add these to the fuzz table or to NOT_FUZZED with a reason: {missing}"
    stale = [n for n in [*entries, *NOT_FUZZED] if n not in _all_names()]
    assert stale == [], f"no longer in any __all__: {stale}"


def test_valid_calls_succeed(entries):
    failed = {}
    for name, entry in entries.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                entry.call(**entry.kwargs())
        except Exception as e:
            failed[name] = f"{type(e).__name__}: {e}"
    # the registration functions refuse their own built-in names (the duplicate-name rule)
    failed = {k: v for k, v in failed.items() if not k.split(".")[1].startswith("register_")}
    assert failed == {}, "\n".join(f"{k}: {v}" for k, v in failed.items())


def _is_clear(error: BaseException, arg: str, value_label: str) -> bool:
    allocation = re.search(r"alloc|memory|too large|overflow", str(error), re.IGNORECASE)
    if value_label == "huge" and isinstance(error, (MemoryError, RuntimeError)) and allocation:
        return True
    if not isinstance(error, PROJECT_ERRORS):
        return False
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(arg)}(?![A-Za-z0-9_])", str(error)) is not None


def _cases() -> list[Any]:
    # built without the fixture (collection time): names and arguments only
    import tempfile
    from pathlib import Path

    table = _entries(Path(tempfile.mkdtemp(prefix="fuzz-collect-")))
    cases = []
    for name, entry in table.items():
        for arg in entry.args or list(entry.kwargs()):
            cases.append(pytest.param(name, arg, id=f"{name}-{arg}"))
    return cases


# A call on these tiny inputs takes milliseconds; one still running after this long has taken a
# value it cannot handle (a depth of 10**12 builds modules for ever). Stopped by SIGALRM.
CASE_SECONDS = 30


class TooSlow(BaseException):  # not an Exception: the code under test cannot swallow it
    pass


@contextlib.contextmanager
def _deadline(seconds: float):
    def stop(*_):
        raise TooSlow

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("name, arg", _cases())
def test_bad_values_raise_clear_errors(entries, name, arg):
    entry = entries[name]
    unclear = {}
    for label in entry.values:
        if label == "huge" and arg in entry.no_huge:
            continue
        kwargs = entry.kwargs()
        kwargs[arg] = BAD_VALUES[label]
        try:
            with warnings.catch_warnings(), _deadline(CASE_SECONDS):
                warnings.simplefilter("ignore")
                entry.call(**kwargs)
        except TooSlow:
            unclear[label] = f"still running after {CASE_SECONDS} s (a value it cannot handle)"
        except Exception as error:
            if not _is_clear(error, arg, label):
                unclear[label] = f"{type(error).__name__}: {str(error)[:200]}"
    assert unclear == {}, f"{name}({arg}=...) gave unclear errors: {unclear}"
