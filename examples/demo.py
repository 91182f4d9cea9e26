"""End-to-end demo: YOLO detection of handwritten digits with YOLO-RD and YOLOR implicit knowledge.

    python -m nox -s demo                 # the full run: a fixed schedule, minutes on 2 CPU cores
    python examples/demo.py --quick       # a smoke run of the same steps (about a minute)

It runs on one torch thread (see ``THREADS``), so its numbers repeat with the seed whatever the
machine is doing; it prints them next to the recorded 3-seed measurement of the same comparison.

Every step is what a user does with the ``yolo-heads`` command line, called from Python (the
same functions), all on the CPU with nothing downloaded:

1. data: real handwritten digits (scikit-learn's 8x8 set, upscaled) placed on 64-px canvases,
   written as COCO JSON + PNG; train and val splits from disjoint digit samples;
2. train a baseline detector from the built-in ``digits`` config with the demo's recipe
   (``RECIPE``: timm resnet18 at (32, 64, 128, 224) channels, PAN neck of 64, anchor-free DFL
   head: 3.05 M parameters, YOLOv8n's size), validated with pycocotools;
3. build a dictionary with dict-init from the baseline backbone's ``layer2`` (the stage feeding
   the stride-8 level, where YOLO-RD puts its module) and save it as an artifact;
4. train the same detector with that Retriever-Dictionary after ``layer2`` and YOLOR implicit
   knowledge (``model.rd.dictionary=...``, ``model.implicit.enabled=true``), same schedule;
5. print the AP table of both final models (same seed: the numbers repeat run to run), the
   recorded 3-seed spread of the same comparison, and the per-class AP;
6. fold implicit knowledge and BatchNorm into the convolutions, export to ONNX with NMS inside
   and check that onnxruntime finds the same boxes as ``predict``;
7. reload the final checkpoint (a Hub folder) through ``timm.create_model`` and
   ``hub_knowledge.load``, and draw ground truth and predictions into ``predictions.png``.
"""

from __future__ import annotations

import argparse
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
from yolo_heads.evaluate import coco_evaluator, predict_dataset
from yolo_heads.plots import draw_detections
from yolo_heads.run import run_training

# One fixed schedule (never shortened because the machine is busy). Chosen so that seeds 0, 1, 2
# land within a narrow spread (RECORDED below: sd 0.002 AP) and the two trainings take minutes
# of one core (112-122 CPU s each in benchmarks/results/detection.md on 2026-12-02; 234-252 s
# in this demo from a clean clone on 2026-12-07, with its validations and checkpoints).
# The 1.01 M detector of the built-in digits config is not used here: over 3 seeds
# at 30 epochs it scored 0.527 +- 0.213 AP (one seed in three stalls near 0.28), too unstable
# for a one-seed comparison; this one is YOLOv8n's size (3.05 M parameters).
SETTINGS = {
    "full": {"train_images": 640, "val_images": 160, "epochs": 30, "num_atoms": 64},
    "quick": {"train_images": 48, "val_images": 16, "epochs": 1, "num_atoms": 16},
}
RECIPE = [  # on top of the built-in digits config (lr 4e-3, batch 16, 64 px, no AMP)
    "model.backbone_kwargs={channels: [32, 64, 128, 224]}",
    "model.neck_channels=64",
    "schedule.val_interval=10",
    "schedule.threads=1",
]
# One intra-op thread, for the process too (dictionary, export, predict): the thread count
# changes the float rounding of a training, and a small detector trained from scratch amplifies
# such differences, so only a pinned count gives numbers that repeat with the seed on any
# machine and under any load. One thread is also the fast choice on a shared machine (OpenMP
# threads spin while their siblings are descheduled). This wins over OMP_NUM_THREADS on purpose.
THREADS = 1
# The same comparison measured over seeds 0, 1, 2 (the final model of each run, this recipe,
# data and dictionary; steps 2-4 of `--seed S` run by a script, one torch thread, 268-293 CPU s
# per training on this project's 2-core machine under load 0.5-5); recorded, not recomputed by
# the demo.
RECORDED = {
    "date": "2026-12-07",
    "command": "OMP_NUM_THREADS=1 python examples/demo.py --seed S, S = 0, 1, 2 (steps 2-4)",
    "baseline": {"mean": 0.7726, "std": 0.0015, "seeds": (0.7709, 0.7730, 0.7739)},
    "RD + implicit": {"mean": 0.7779, "std": 0.0019, "seeds": (0.7758, 0.7796, 0.7782)},
}


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
            f"schedule.seed={settings['seed']}",
            *RECIPE,
            *extra,
        ],
    )
    start, start_cpu = time.perf_counter(), time.process_time()
    result = run_training(cfg, progress=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    # The final model, as the recorded seeds were scored (no pick of the best epoch on val).
    final = result.history[-1]
    print(
        f"   [{name}] {len(result.history)} epochs in {seconds:.0f} s ({cpu:.0f} CPU s); final "
        f"epoch {final['epoch']}: AP {final['AP']:.3f}, AP50 {final['AP50']:.3f} -> {result.last}",
        flush=True,
    )
    return cfg, result, final, seconds


def per_class_ap(model, ann_file: str, image_size: int) -> dict[str, float]:
    """pycocotools AP (IoU .50:.95, all areas, 100 detections) of each category on ``ann_file``."""
    dataset = create_dataset(ann_file, image_size=image_size)
    detections = predict_dataset(model, dataset, conf=0.001, iou=0.65, max_det=100)
    evaluator = coco_evaluator(ann_file, detections)
    if evaluator is None:
        return {name: 0.0 for name in dataset.class_names}
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # [iou, recall, category]
    names = {c["id"]: c["name"] for c in evaluator.cocoGt.loadCats(evaluator.params.catIds)}
    result = {}
    for k, category in enumerate(evaluator.params.catIds):
        valid = precision[:, :, k][precision[:, :, k] > -1]
        result[names[category]] = float(valid.mean()) if valid.size else -1.0
    return result


SHOW_CONF = 0.25  # predictions drawn in predictions.png (Ultralytics' default threshold)


def _matches(pred: dict, target: dict) -> int:
    """Predictions that overlap a ground-truth box of their class at IoU >= 0.5."""
    if not len(pred["boxes"]) or not len(target["boxes"]):
        return 0
    from torchvision.ops import box_iou

    iou = box_iou(pred["boxes"].float(), target["boxes"].float())
    same = pred["labels"][:, None] == target["labels"][None, :]
    return int(((iou >= 0.5) & same).any(dim=1).sum())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run of every step")
    parser.add_argument("--out", default="outputs/demo", help="where outputs go")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="training seed of both detectors (data and dictionary stay fixed); the recorded "
        "3-seed numbers are seeds 0, 1, 2",
    )
    args = parser.parse_args()
    settings = {**SETTINGS["quick" if args.quick else "full"], "seed": args.seed}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(THREADS)  # see THREADS: numbers that repeat with the seed
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

    section(f"2. baseline detector (no RD, no implicit knowledge), seed {args.seed}")
    _, baseline, final_base, time_base = train_detector("baseline", out, data, settings)

    section("3. dictionary with dict-init from the baseline backbone's layer2")
    plain_train = create_dataset(data["train"], image_size=64)
    images = torch.stack([plain_train[i][0] for i in range(min(160, len(plain_train)))])
    trained = load_checkpoint(baseline.last)
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
    _, rd_run, final_rd, time_rd = train_detector("rd_implicit", out, data, settings, knowledge)

    section("5. COCO evaluation (pycocotools) on the held-out val split, final model of each")
    rows = {"baseline": final_base, "RD + implicit": final_rd}
    print("| metric | " + " | ".join(rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for metric in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        print(f"| {metric} | " + " | ".join(f"{r[metric]:.3f}" for r in rows.values()) + " |")
    print(f"| train time (s) | {time_base:.0f} | {time_rd:.0f} |")
    print(
        "   (APm / APl = -1: every digit here is small, under 32 x 32 px, so pycocotools has no "
        "medium or large ground truth to score)"
    )
    diff = final_rd["AP"] - final_base["AP"]
    recorded = {k: RECORDED[k] for k in rows}
    spread = max(r["std"] for r in recorded.values())
    recorded_diff = recorded["RD + implicit"]["mean"] - recorded["baseline"]["mean"]
    print(
        f"\n   Recorded, not recomputed here ({RECORDED['date']}, `{RECORDED['command']}`): "
        "the same comparison over seeds 0, 1, 2 (final model of each run, mean +- sd):"
    )
    print("| AP over 3 seeds | " + " | ".join(rows) + " |")
    print("|---|" + "---:|" * len(rows))
    print(
        "| mean +- sd | "
        + " | ".join(f"{r['mean']:.3f} +- {r['std']:.3f}" for r in recorded.values())
        + " |"
    )
    print(
        "| seeds 0 / 1 / 2 | "
        + " | ".join(" / ".join(f"{v:.3f}" for v in r["seeds"]) for r in recorded.values())
        + " |"
    )
    per_seed = [
        rd - base
        for rd, base in zip(recorded["RD + implicit"]["seeds"], recorded["baseline"]["seeds"])
    ]
    verdict = "within" if abs(diff) <= 2 * spread else "beyond"
    print(
        f"   This run: RD + implicit - baseline = {diff:+.3f} AP (recorded: "
        + " / ".join(f"{d:+.3f}" for d in per_seed)
        + f" for seeds 0 / 1 / 2, mean {recorded_diff:+.3f}). A single-seed difference of "
        f"this size is {verdict} the seed spread (largest recorded sd {spread:.3f}; twice that, "
        f"{2 * spread:.3f}, is what the seed alone can move one detector): "
        + (
            "one run does not show that either detector is better."
            if verdict == "within"
            else "larger than what the seed moves either detector; a small gain, though, "
            "and measured on one data set."
        )
    )
    if args.quick:
        print("   (--quick: 1 epoch on 48 images; the numbers above are a smoke test only)")

    section("5b. per-class AP of the final models (pycocotools, IoU .50:.95, val split)")
    model = load_checkpoint(rd_run.last).eval()
    per_class = {
        "baseline": per_class_ap(load_checkpoint(baseline.last).eval(), data["val"], 64),
        "RD + implicit": per_class_ap(model, data["val"], 64),
    }
    names = list(per_class["RD + implicit"])
    print("| model | " + " | ".join(names) + " | mean |")
    print("|---|" + "---:|" * (len(names) + 1))
    for label, classes in per_class.items():
        values = [classes[name] for name in names]
        print(
            f"| {label} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {np.mean(values):.3f} |"
        )
    print("   (mean over the classes = the AP in the table above)")

    section("6. fuse (implicit knowledge + BatchNorm), export to ONNX with NMS, onnxruntime")
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

    section("7. reload the final checkpoint (Hub folder) and draw predictions")
    via_timm = timm.create_model(f"local-dir:{rd_run.last}", pretrained=True).eval()
    via_hub = hub_knowledge.load(rd_run.last).eval()
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
    shown = model.predict(batch, conf=SHOW_CONF, iou=0.65)
    png = draw_detections(
        batch, targets, shown, val_set.class_names, out / "predictions.png", conf=SHOW_CONF
    )
    found = sum(len(p["scores"]) for p in shown)
    right = sum(_matches(p, t) for p, t in zip(shown, targets))
    print(
        f"   {png}: 8 val images, ground truth dashed, {found} predictions (conf >= "
        f"{SHOW_CONF}) with class and score; {right} of them overlap a ground-truth digit of "
        f"the same class at IoU >= 0.5 (of {sum(len(t['labels']) for t in targets)} digits)"
    )
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
