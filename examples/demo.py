"""End-to-end demo: YOLO detection of handwritten digits with YOLO-RD and YOLOR implicit knowledge.

    python -m nox -s demo                 # the full run: a fixed schedule, minutes on 2 CPU cores
    python examples/demo.py --quick       # a smoke run of the same steps (about a minute)

Every step is what a user does with the ``yolo-heads`` command line, called from Python (the
same functions), all on the CPU with nothing downloaded:

1. data: real handwritten digits (scikit-learn's 8x8 set, upscaled) placed on 64-px canvases,
   written as COCO JSON + PNG; train and val splits from disjoint digit samples;
2. train a baseline detector from the built-in ``digits`` config (timm resnet18 at 1/4 width,
   PAN neck, anchor-free DFL head), validated with pycocotools every epoch;
3. build a dictionary with dict-init from the baseline backbone's ``layer2`` (the stage feeding
   the stride-8 level, where YOLO-RD puts its module) and save it as an artifact;
4. train the same detector with that Retriever-Dictionary after ``layer2`` and YOLOR implicit
   knowledge (``model.rd.dictionary=...``, ``model.implicit.enabled=true``), same schedule;
5. print the AP table of both (same seed: the numbers repeat run to run);
6. fold implicit knowledge and BatchNorm into the convolutions, export to ONNX with NMS inside
   and check that onnxruntime finds the same boxes as ``predict``;
7. reload the best checkpoint (a Hub folder) through ``timm.create_model`` and
   ``hub_knowledge.load``, and draw ground truth and predictions into ``predictions.png``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime
import timm
import torch

import hub_knowledge
from dict_init import build_dictionary
from dict_init.encoders import VisionEncoder
from yolo_heads import export_onnx, fuse_for_inference, load_checkpoint
from yolo_heads.config import load_config
from yolo_heads.data import create_dataset, make_digits_detection
from yolo_heads.plots import draw_detections
from yolo_heads.run import run_training

# One fixed schedule (never shortened because the machine is busy). Chosen to finish in a few
# minutes on 2 idle cores: see the README for its AP and wall time.
SETTINGS = {
    "full": {"train_images": 640, "val_images": 160, "epochs": 16, "num_atoms": 64},
    "quick": {"train_images": 48, "val_images": 16, "epochs": 1, "num_atoms": 16},
}
RECIPE = ["schedule.val_interval=2"]  # on top of the built-in digits config (lr 4e-3, no AMP)


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def train_detector(name: str, out: Path, data: dict[str, str], settings: dict, extra=()):
    cfg = load_config(
        "digits",
        [
            f"data.train={data['train']}",
            f"data.val={data['val']}",
            f"out={out / name}",
            f"schedule.epochs={settings['epochs']}",
            *RECIPE,
            *extra,
        ],
    )
    start = time.perf_counter()
    result = run_training(cfg, progress=False)
    seconds = time.perf_counter() - start
    best = max(result.history, key=lambda row: row.get("AP", -1))
    print(
        f"   [{name}] {len(result.history)} epochs in {seconds:.0f} s; best epoch "
        f"{best['epoch']}: AP {best['AP']:.3f}, AP50 {best['AP50']:.3f} -> {result.best}",
        flush=True,
    )
    return cfg, result, best, seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run of every step")
    parser.add_argument("--out", default="outputs/demo", help="where outputs go")
    args = parser.parse_args()
    settings = SETTINGS["quick" if args.quick else "full"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t0 = time.perf_counter()

    section("1. data: handwritten digits on 64-px canvases (COCO JSON + PNG)")
    common = {"image_size": 64, "digit_size": (64 // 6, int(64 / 2.5)), "progress": False}
    data = {
        "train": str(
            make_digits_detection(out / "digits", settings["train_images"], seed=0, **common)
        ),
        "val": str(
            make_digits_detection(
                out / "digits", settings["val_images"], seed=1, split="val", **common
            )
        ),
    }
    print(
        f"   {settings['train_images']} train / {settings['val_images']} val images in {out}/digits"
    )

    section("2. baseline detector (no RD, no implicit knowledge), seed 0")
    _, baseline, best_base, time_base = train_detector("baseline", out, data, settings)

    section("3. dictionary with dict-init from the baseline backbone's layer2")
    plain_train = create_dataset(data["train"], image_size=64)
    images = torch.stack([plain_train[i][0] for i in range(min(160, len(plain_train)))])
    trained = load_checkpoint(baseline.best)
    encoder = VisionEncoder(trained.backbone.body, "layer2", image_size=64)
    dictionary = build_dictionary(
        encoder,
        images,
        num_atoms=settings["num_atoms"],
        seed=0,
        positions_per_image=64,
        progress=False,
    )
    dictionary_path = dictionary.save(out / "dictionary_layer2.safetensors")
    print(
        f"   {tuple(dictionary.atoms.shape)} atoms from {dictionary.metadata['num_vectors']} "
        f"feature vectors (k-means) -> {dictionary_path}"
    )

    section("4. detector with RD after layer2 and implicit knowledge, same schedule and seed")
    knowledge = [
        "model.rd.enabled=true",
        f"model.rd.dictionary={dictionary_path}",
        "model.implicit.enabled=true",
    ]
    _, rd_run, best_rd, time_rd = train_detector("rd_implicit", out, data, settings, knowledge)

    section("5. COCO evaluation (pycocotools) on the held-out val split, best epoch of each")
    rows = {"baseline": best_base, "RD + implicit": best_rd}
    print("| metric | " + " | ".join(rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for metric in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        print(f"| {metric} | " + " | ".join(f"{r[metric]:.3f}" for r in rows.values()) + " |")
    print(f"| train time (s) | {time_base:.0f} | {time_rd:.0f} |")
    print(
        "   (APm / APl = -1: every digit here is small, under 32 x 32 px, so pycocotools has no "
        "medium or large ground truth to score)"
    )

    section("6. fuse (implicit knowledge + BatchNorm), export to ONNX with NMS, onnxruntime")
    model = load_checkpoint(rd_run.best).eval()
    val_set = create_dataset(data["val"], image_size=64)
    batch = torch.stack([val_set[i][0] for i in range(8)])
    fused = fuse_for_inference(model)
    params = (
        sum(p.numel() for p in model.parameters()),
        sum(p.numel() for p in fused.parameters()),
    )
    onnx_path = export_onnx(model, out / "detector.onnx", image_size=64, conf=0.05, iou=0.65)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (detections,) = session.run(None, {"images": batch.numpy()})
    preds = model.predict(batch, conf=0.05, iou=0.65)
    worst, matched, total = 0.0, 0, sum(len(p["scores"]) for p in preds)
    for b, pred in enumerate(preds):
        rows_b = detections[detections[:, 0] == b]
        for box, score, label in zip(pred["boxes"], pred["scores"], pred["labels"]):
            same = rows_b[
                (rows_b[:, 6] == int(label))
                & (np.abs(rows_b[:, 1:5] - box.numpy()).max(axis=1) < 1e-2)
            ]
            if len(same):
                matched += 1
                worst = max(worst, float(np.abs(same[:, 5] - float(score)).min()))
    print(
        f"   parameters {params[0] / 1e6:.3f} M -> {params[1] / 1e6:.3f} M after fusing; "
        f"{onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB)"
    )
    print(
        f"   onnxruntime found {matched} of predict's {total} boxes on 8 val images "
        f"({len(detections)} rows), max score difference {worst:.1e}"
    )

    section("7. reload the best checkpoint (Hub folder) and draw predictions")
    via_timm = timm.create_model(f"local-dir:{rd_run.best}", pretrained=True).eval()
    via_hub = hub_knowledge.load(rd_run.best).eval()
    with torch.no_grad():
        reference = model(batch)
        same = all(
            torch.equal(a, b) and torch.equal(a, c)
            for a, b, c in zip(reference, via_timm(batch), via_hub(batch))
        )
    print(
        "   timm.create_model('local-dir:...') and hub_knowledge.load give the same outputs: "
        f"{same}"
    )
    targets = [val_set[i][1] for i in range(8)]
    # conf 0.1: a 16-epoch detector is still shy, and the picture should show what it finds
    shown = model.predict(batch, conf=0.1, iou=0.65)
    png = draw_detections(
        batch, targets, shown, val_set.class_names, out / "predictions.png", conf=0.1
    )
    found = sum(len(p["scores"]) for p in shown)
    print(
        f"   {png}: 8 val images, ground truth dashed, {found} predictions (conf >= 0.1) "
        "with class and score"
    )
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
