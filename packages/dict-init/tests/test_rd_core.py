"""The artifact feeds rd-core's module directly (rd-core is a test-only dependency)."""

from __future__ import annotations

import pytest
import torch

from dict_init import Dictionary, VisionEncoder, build_dictionary

rd_core = pytest.importorskip("rd_core")


def test_retriever_dictionary_takes_a_built_dictionary(tmp_path):
    torch.manual_seed(0)
    encoder = VisionEncoder("resnet18", "layer2", image_size=32)
    d = build_dictionary(encoder, torch.rand(6, 3, 32, 32), num_atoms=16, progress=False)
    loaded = Dictionary.load(d.save(tmp_path / "atoms.safetensors"))
    module = rd_core.RetrieverDictionary(d.dim, num_atoms=d.num_atoms, dictionary=loaded)
    # The paper's dictionary holds the atoms normalised to unit length.
    expected = torch.nn.functional.normalize(d.atoms, dim=1)
    torch.testing.assert_close(module.dictionary.atoms, expected, atol=1e-5, rtol=1e-5)
    features = encoder.model.layer2(
        encoder.model.layer1(
            encoder.model.maxpool(
                encoder.model.act1(encoder.model.bn1(encoder.model.conv1(torch.rand(2, 3, 32, 32))))
            )
        )
    )
    assert module(features).shape == features.shape
