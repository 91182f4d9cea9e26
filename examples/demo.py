"""End-to-end demo: YOLO detection of handwritten digits with YOLO-RD and YOLOR implicit knowledge.

    python -m nox -s demo                 # the full run: at most 10 minutes on 2 CPU cores
    python examples/demo.py --quick       # a smoke run of the same steps (about a minute)

Steps (all on the CPU, nothing downloaded):

1. generate a detection set of real handwritten digits (scikit-learn's 8x8 digits, upscaled and
   placed several per canvas) as COCO JSON + PNG images: a train split and a held-out val split
   drawn from disjoint digit samples;
2. train a baseline detector: timm ``resnet18`` at 1/4 width (``features_only``, strides 8/16/32),
   PAN neck, anchor-free DFL head with task-aligned assignment;
3. build a Retriever-Dictionary with dict-init from the baseline backbone's ``layer2`` (the stage
   that feeds the stride-8 level, where YOLO-RD puts the module): every position of the training
   images is a vector, k-means gives the atoms;
4. train the same detector with that RD after ``layer2`` and YOLOR implicit knowledge (feature
   alignment on the neck, prediction refinement on the output convolutions);
5. evaluate both on the val split with pycocotools and print the AP table side by side;
6. fold the implicit knowledge into the convolutions (``implicit_knowledge.fuse``) and check the
   predictions do not change;
7. save a PNG with predicted boxes and the checkpoint (safetensors) under ``outputs/demo/``.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from dict_init import build_dictionary
from dict_init.encoders import VisionEncoder
from implicit_knowledge import fuse
from yolo_heads import YOLODetector, evaluate_detector
from yolo_heads.checkpoint import save_checkpoint
from yolo_heads.data import CocoDetection, collate, make_digits_detection
from yolo_heads.train import train

# The full run is sized for <= 10 minutes on 2 CPU cores (both trainings included); on a
# slower or busy machine the epochs are cut to fit --budget (see affordable_epochs).
SETTINGS = {
    "full": {
        "image_size": 64,
        "train_images": 640,
        "val_images": 160,
        "epochs": 30,
        "width": 16,
        "num_atoms": 64,
        "batch_size": 16,
        "lr": 4e-3,
    },
    "quick": {
        "image_size": 64,
        "train_images": 48,
        "val_images": 16,
        "epochs": 1,
        "width": 8,
        "num_atoms": 16,
        "batch_size": 16,
        "lr": 4e-3,
    },
}


def build_detector(width: int, image_size: int, **knowledge) -> YOLODetector:
    """resnet18 at ``width / 64`` of its channels, PAN neck, anchor-free head, 10 digit classes."""
    torch.manual_seed(0)
    return YOLODetector(
        "resnet18",
        num_classes=10,
        channels=(width, 2 * width, 4 * width, 8 * width),
        stem_width=width,
        neck_channels=2 * width,
        head_kwargs={"image_size_hint": image_size},
        **knowledge,
    )


def affordable_epochs(model: YOLODetector, train_set, cfg: dict, seconds: float) -> int:
    """Epochs (at most the configured ones, at least 2) that fit in ``seconds`` on this machine,
    from the time of a few training steps on a copy of the model: a slow or busy machine trains
    for fewer epochs instead of overrunning the demo's time budget."""
    probe = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-4)
    images, targets = collate([train_set[i] for i in range(cfg["batch_size"])])
    for step in range(4):
        if step == 1:  # the first step pays one-off costs
            start = time.perf_counter()
        loss, _ = probe.loss(probe(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    per_step = (time.perf_counter() - start) / 3 * 1.1  # + data loading and EMA
    steps_per_epoch = len(train_set) // cfg["batch_size"]
    affordable = int(seconds // (per_step * max(steps_per_epoch, 1)))
    return max(min(2, cfg["epochs"]), min(cfg["epochs"], affordable))


def fit(name: str, model: YOLODetector, train_set, val_set, cfg: dict, out: Path, epochs: int):
    start = time.perf_counter()
    result = train(
        model,
        train_set,
        epochs=epochs,
        batch_size=cfg["batch_size"],
        lr=cfg["lr"],
        out_dir=out / name,
    )
    seconds = time.perf_counter() - start
    metrics = evaluate_detector(result.model, val_set, show_progress=False)
    print(
        f"[{name}] trained in {seconds:.0f} s, final loss {result.history[-1]['loss']:.3f}, "
        f"AP50 {metrics['AP50']:.3f}",
        flush=True,
    )
    return result, metrics, seconds


def dictionary_from(model: YOLODetector, train_set: CocoDetection, cfg: dict, count: int = 160):
    """dict-init atoms from ``model``'s backbone layer that the RD will follow."""
    images = torch.stack([train_set[i][0] for i in range(min(count, len(train_set)))])
    encoder = VisionEncoder(model.backbone.body, "layer2", image_size=cfg["image_size"])
    return build_dictionary(
        encoder,
        images,
        num_atoms=cfg["num_atoms"],
        seed=0,
        positions_per_image=64,
        progress=False,
    )


def draw_predictions(model: YOLODetector, dataset: CocoDetection, path: Path, count: int = 8):
    """A row of val images, 3x upscaled, predicted boxes (green) with class and score."""
    model.eval()
    zoom, size = 3, dataset.image_size
    sheet = Image.new("RGB", (count * size * zoom, size * zoom))
    for i in range(count):
        image, _ = dataset[i]
        pred = model.predict(image[None], conf=0.3, iou=0.5)[0]
        tile = Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype("uint8"))
        tile = tile.resize((size * zoom, size * zoom), Image.NEAREST)
        draw = ImageDraw.Draw(tile)
        for box, score, label in zip(pred["boxes"], pred["scores"], pred["labels"]):
            x1, y1, x2, y2 = (float(v) * zoom for v in box)
            draw.rectangle((x1, y1, x2, y2), outline=(0, 255, 0), width=2)
            draw.text(
                (x1 + 2, max(y1 - 11, 0)), f"{int(label)} {float(score):.2f}", fill=(255, 255, 0)
            )
        sheet.paste(tile, (i * size * zoom, 0))
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png.tmp")
    os.close(fd)
    sheet.save(tmp, format="PNG")
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run of every step")
    parser.add_argument("--out", default="outputs/demo", help="where outputs go")
    parser.add_argument(
        "--budget",
        type=float,
        default=480.0,
        help="seconds the whole demo may take (training adapts to fit)",
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the baseline (the dictionary then comes from the untrained backbone)",
    )
    args = parser.parse_args()
    cfg = SETTINGS["quick" if args.quick else "full"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t0 = time.perf_counter()

    print("== 1. data: handwritten digits on canvases (COCO JSON + PNG)", flush=True)
    size = cfg["image_size"]
    digit_size = (size // 6, int(size / 2.5))
    train_ann = make_digits_detection(
        out / "digits",
        cfg["train_images"],
        seed=0,
        image_size=size,
        digit_size=digit_size,
        split="train",
    )
    val_ann = make_digits_detection(
        out / "digits",
        cfg["val_images"],
        seed=1,
        image_size=size,
        digit_size=digit_size,
        split="val",
    )
    train_set = CocoDetection(train_ann, image_size=size, augment=True, scale_range=(0.7, 1.0))
    val_set = CocoDetection(val_ann, image_size=size)
    plain_train_set = CocoDetection(train_ann, image_size=size)

    # Both detectors train for the same number of epochs (a fair comparison), chosen once so
    # that both trainings fit the budget, less a reserve for evaluation, fusion and outputs.
    trainings = 1 if args.no_baseline else 2
    seconds = max((args.budget - (time.perf_counter() - t0) - 45.0 * trainings) / trainings, 10.0)
    probe = build_detector(cfg["width"], size, implicit=True, rd={"num_atoms": cfg["num_atoms"]})
    epochs = affordable_epochs(probe, train_set, cfg, seconds)
    if epochs < cfg["epochs"]:
        print(f"   this machine affords {epochs} of {cfg['epochs']} epochs per detector")

    results: dict[str, dict[str, float]] = {}
    times: dict[str, float] = {}
    baseline = build_detector(cfg["width"], size)
    if not args.no_baseline:
        print("== 2. baseline detector (no RD, no implicit knowledge)", flush=True)
        trained, results["baseline"], times["baseline"] = fit(
            "baseline", baseline, train_set, val_set, cfg, out, epochs
        )
        baseline = trained.model

    print("== 3. dictionary with dict-init from the baseline backbone's layer2", flush=True)
    dictionary = dictionary_from(baseline, plain_train_set, cfg)
    print(
        f"   {tuple(dictionary.atoms.shape)} atoms from {dictionary.metadata['num_vectors']} "
        "feature vectors (k-means)",
        flush=True,
    )

    print("== 4. detector with RD after layer2 and implicit knowledge", flush=True)
    model = build_detector(cfg["width"], size, implicit=True, rd={"dictionary": dictionary})
    trained, results["RD + implicit"], times["RD + implicit"] = fit(
        "rd_implicit", model, train_set, val_set, cfg, out, epochs
    )
    model = trained.model.eval()

    print("\n== 5. COCO evaluation (pycocotools) on the held-out val split", flush=True)
    names = list(results)
    print("| metric | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for metric in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        print(f"| {metric} | " + " | ".join(f"{results[n][metric]:.3f}" for n in names) + " |")
    print("| train time (s) | " + " | ".join(f"{times[n]:.0f}" for n in names) + " |")
    print(
        f"(parameters: RD + implicit {sum(p.numel() for p in model.parameters()) / 1e6:.3f} M, "
        f"baseline {sum(p.numel() for p in baseline.parameters()) / 1e6:.3f} M)"
    )

    print("\n== 6. fold implicit knowledge into the convolutions (YOLOR eq. 9-10)", flush=True)
    images = torch.stack([val_set[i][0] for i in range(8)])
    with torch.no_grad():
        before = model(images)
        before_pred = model.predict(images)
        fused = fuse(model)
        after = fused(images)
        after_pred = fused.predict(images)
    diff = max(float((a - b).abs().max()) for a, b in zip(before, after))
    same = all(
        a["labels"].tolist() == b["labels"].tolist() for a, b in zip(before_pred, after_pred)
    )
    print(f"   max |raw output difference| {diff:.2e}; same predicted labels: {same}")

    print("\n== 7. outputs", flush=True)
    checkpoint = save_checkpoint(
        model,
        out / "detector_rd_implicit.safetensors",
        {"metrics": results["RD + implicit"], "dataset": "handwritten digits (scikit-learn)"},
    )
    png = out / "predictions.png"
    draw_predictions(fused, val_set, png)
    print(f"   checkpoint: {checkpoint}\n   predictions: {png}")
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
