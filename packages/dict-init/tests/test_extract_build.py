from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from dict_init import Dictionary, build_dictionary, coco_class_names, extract_features
from dict_init.data import BadImageError
from dict_init.encoders import VisionEncoder
from dict_init.kmeans import inertia


@pytest.fixture(scope="module")
def encoder():
    return VisionEncoder("resnet18", at="layer2", image_size=32)


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i in range(5):
        array = rng.integers(0, 256, (40 + i, 48, 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / ("sub" if i % 2 else ".") / f"img{i}.png")
    return folder


def test_folder_and_coco_json_give_the_same_features(encoder, image_folder, tmp_path):
    from_folder = extract_features(encoder, image_folder, tmp_path / "a", progress=False)
    files = sorted(p.relative_to(image_folder) for p in image_folder.rglob("*.png"))
    coco = {"images": [{"id": i, "file_name": str(f)} for i, f in enumerate(files)]}
    (image_folder / "instances.json").write_text(json.dumps(coco))
    from_coco = extract_features(
        encoder, image_folder / "instances.json", tmp_path / "b", progress=False
    )
    assert from_folder.num_vectors == 5 * 16 and from_folder.dim == 128
    torch.testing.assert_close(from_folder.load(), from_coco.load())
    assert from_folder.source_index().tolist() == [i for i in range(5) for _ in range(16)]


def test_iterable_of_tensors_in_shards_with_sampling(encoder, tmp_path):
    images = [torch.rand(3, 40, 40) for _ in range(7)]  # resized to 32 px
    feats = extract_features(
        encoder, iter(images), tmp_path, batch_size=3, positions_per_image=5, shard_size=8,
        progress=False,
    )  # fmt: skip
    assert feats.num_vectors == 35 and len(feats.shards) == 5
    full = extract_features(encoder, images, tmp_path / "full", progress=False).load()
    index = feats.source_index()
    assert index.tolist() == [i for i in range(7) for _ in range(5)]
    # Every sampled row is one of that image's rows.
    for row, i in zip(feats.load(), index):
        assert torch.cdist(row[None], full[16 * i : 16 * (i + 1)]).min() < 1e-4


def test_empty_data_is_an_error(encoder, tmp_path):
    with pytest.raises(ValueError, match=r"data=.*at least one"):
        extract_features(encoder, [], tmp_path, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"data=.*at least one"):
        extract_features(encoder, tmp_path / "empty", tmp_path / "f", progress=False)


def test_wrong_data_path(encoder, tmp_path):
    with pytest.raises(ValueError, match=r"data=.*nope.*image folder"):
        extract_features(encoder, tmp_path / "nope", progress=False)


def test_nan_images_are_reported(encoder, tmp_path):
    images = torch.rand(3, 3, 32, 32)
    images[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        extract_features(encoder, images, tmp_path, progress=False)


def test_build_vision_dictionary_and_reload(encoder, tmp_path):
    images = torch.rand(12, 3, 32, 32)
    d = build_dictionary(encoder, images, num_atoms=20, seed=0, progress=False)
    assert d.atoms.shape == (20, 128)
    meta = d.metadata
    assert meta["encoder"]["model"] == "resnet18" and meta["layer"] == "layer2"
    assert meta["num_vectors"] == 12 * 16 and meta["num_atoms"] == 20 and meta["seed"] == 0
    assert meta["normalization"] == "none"
    path = d.save(tmp_path / "atoms.safetensors")
    assert torch.equal(Dictionary.load(path).atoms, d.atoms)
    again = build_dictionary(encoder, images, num_atoms=20, seed=0, progress=False)
    assert torch.equal(again.atoms, d.atoms)
    # The atoms are k-means centres of the features: better than 20 random feature rows.
    feats = extract_features(encoder, images, tmp_path / "f", progress=False).load()
    random_rows = feats[torch.randperm(len(feats), generator=torch.Generator().manual_seed(0))[:20]]
    assert inertia(feats, d.atoms) < inertia(feats, random_rows)


def test_build_language_dictionary_standardised_and_projected(sentence_encoder):
    enc = sentence_encoder
    d = build_dictionary(enc, coco_class_names(), num_atoms=16, seed=0, feature_dim=8,
                         progress=False)  # fmt: skip
    assert d.atoms.shape == (16, 8)
    assert d.metadata["normalization"] == "standard" and d.metadata["projection"] == "pca"
    assert d.metadata["encoder_dim"] == 384 and d.metadata["num_vectors"] == 80
    assert d.extras["projection.matrix"].shape == (384, 8)
    # Standardisation: the statistics describe the raw embeddings.
    raw = enc.encode(coco_class_names())
    torch.testing.assert_close(d.extras["normalization.mean"], raw.mean(0), atol=1e-5, rtol=0)
    tanh = build_dictionary(enc, coco_class_names(), num_atoms=16, normalization="tanh",
                            progress=False)  # fmt: skip
    assert tanh.atoms.abs().max() <= 1.0


def test_build_rejects_k_above_vectors_and_bad_normalisation(encoder):
    images = torch.rand(2, 3, 32, 32)
    with pytest.raises(
        ValueError, match=r"num_atoms=40 is invalid: expected at most the 32 feature"
    ):
        build_dictionary(encoder, images, num_atoms=40, progress=False)
    with pytest.raises(ValueError, match=r"seed=nan is invalid: expected an int >= 0"):
        build_dictionary(encoder, images, num_atoms=4, seed=float("nan"), progress=False)
    with pytest.raises(ValueError, match=r"out_dir=3 is invalid: expected a path"):
        extract_features(encoder, images, out_dir=3, progress=False)
    with pytest.raises(ValueError, match="normalization='zscore'"):
        build_dictionary(encoder, images, num_atoms=4, normalization="zscore", progress=False)


def test_unreadable_images_are_named_and_can_be_skipped(encoder, image_folder, tmp_path):
    good = extract_features(encoder, image_folder, tmp_path / "good", progress=False).load()
    whole = (image_folder / "img0.png").read_bytes()
    (image_folder / "cut.png").write_bytes(whole[: len(whole) // 2])  # an interrupted copy
    (image_folder / "sub" / "notes.png").write_bytes(b"not an image at all")
    cut = re.escape(str(image_folder / "cut.png"))
    message = rf"^data: {cut} is not a readable image \(.+\); pass skip_bad_images=True"
    with pytest.raises(BadImageError, match=message):
        extract_features(encoder, image_folder, tmp_path / "a", progress=False)
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\) of 7, first: .*cut.png"):
        feats = extract_features(
            encoder, image_folder, tmp_path / "b", progress=False, skip_bad_images=True
        )
    assert feats.metadata["num_skipped_images"] == 2 and feats.metadata["items"] == 5
    assert sorted(feats.metadata["skipped_images"]) == sorted(
        [str(image_folder / "cut.png"), str(image_folder / "sub" / "notes.png")]
    )
    torch.testing.assert_close(feats.load(), good, rtol=0, atol=0)  # the 5 good ones, as before


def test_coco_json_listing_a_missing_file(encoder, image_folder, tmp_path):
    coco = {"images": [{"id": 0, "file_name": "img0.png"}, {"id": 1, "file_name": "gone.png"}]}
    (image_folder / "instances.json").write_text(json.dumps(coco))
    with pytest.raises(BadImageError, match=r"gone.png is listed in .*instances.json but missing"):
        extract_features(encoder, image_folder / "instances.json", tmp_path, progress=False)
    with pytest.warns(UserWarning, match="skipped 1"):
        d = build_dictionary(encoder, image_folder / "instances.json", num_atoms=4,
                             progress=False, skip_bad_images=True)  # fmt: skip
    assert d.metadata["num_skipped_images"] == 1 and d.metadata["num_items"] == 1


def test_damaged_feature_shards_are_named(encoder, tmp_path):
    from dict_init import FeatureShards

    feats = extract_features(encoder, torch.rand(2, 3, 32, 32), tmp_path / "f", progress=False)
    shard = feats.root / feats.shards[0]["file"]
    shard.write_bytes(shard.read_bytes()[:100])  # an interrupted copy of the folder
    unreadable = rf"FeatureShards: {re.escape(str(shard))} is not a readable safetensors file"
    with pytest.raises(ValueError, match=unreadable):
        feats.load()
    (feats.root / "manifest.json").write_text('{"dim": 128')
    with pytest.raises(
        ValueError, match=r"FeatureShards: .*manifest.json is not a feature manifest"
    ):
        FeatureShards(feats.root)
