from __future__ import annotations

import pytest
import timm
import torch

from dict_init.encoders import (
    CLIPImageEncoder,
    GPTTextEncoder,
    SentenceEncoder,
    VisionEncoder,
    byte_tokenizer,
    coco_class_names,
    create_encoder,
    middle_layer,
)


def test_vision_encoder_every_position_is_a_vector():
    model = timm.create_model("resnet18").eval()
    enc = VisionEncoder(model, "layer2", image_size=64)
    images = torch.rand(2, 3, 64, 64)
    vectors = enc.encode(images)
    assert vectors.shape == (2, 8 * 8, 128) and enc.dim == 128
    # Same numbers as the layer's own output, read position by position.
    x = (images - enc.mean) / enc.std
    with torch.no_grad():
        ref = model.layer2(model.layer1(model.maxpool(model.act1(model.bn1(model.conv1(x))))))
    torch.testing.assert_close(vectors, ref.flatten(2).transpose(1, 2))


def test_vision_encoder_keeps_the_models_training_mode():
    model = timm.create_model("resnet18").train()
    enc = VisionEncoder(model, "layer1", image_size=32)
    running = model.bn1.running_mean.clone()
    enc.encode(torch.rand(2, 3, 32, 32))
    assert model.training  # restored
    assert torch.equal(model.bn1.running_mean, running)  # encoded in eval mode


def test_vision_encoder_default_layer_is_the_middle_stage():
    enc = VisionEncoder("resnet18", image_size=32)
    assert enc.at == middle_layer(enc.model) == "layer2"


def test_vision_encoder_token_layer_of_a_vit():
    enc = VisionEncoder(
        "vit_tiny_patch16_224", "blocks.0", img_size=32, patch_size=8, image_size=32
    )
    assert enc.encode(torch.rand(1, 3, 32, 32)).shape == (1, 1 + 16, 192)


def test_vision_encoder_bad_layer_names_the_value_and_suggests():
    with pytest.raises(ValueError, match=r"at='layer22' is invalid.*resnet18.*layer2"):
        VisionEncoder("resnet18", "layer22")


def test_vision_encoder_bad_model_type():
    with pytest.raises(ValueError, match=r"model=.*timm model name or an nn.Module"):
        VisionEncoder(42, "layer2")
    with pytest.raises(ValueError, match=r"model='' is invalid: expected a timm model name"):
        VisionEncoder("", "layer2")


def tiny_clip():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8, projection_dim=24,
    )  # fmt: skip
    return CLIPVisionModelWithProjection(config).eval()


def test_clip_encoder_returns_all_patch_tokens():
    model = tiny_clip()
    images = torch.rand(2, 3, 32, 32)
    every = CLIPImageEncoder(model).encode(images)
    patches = CLIPImageEncoder(model, tokens="patches").encode(images)
    cls = CLIPImageEncoder(model, tokens="class").encode(images)
    assert every.shape == (2, 17, 24) and patches.shape == (2, 16, 24) and cls.shape == (2, 1, 24)
    # The class token equals CLIP's own global image embedding.
    x = (images - CLIPImageEncoder(model).mean) / CLIPImageEncoder(model).std
    with torch.no_grad():
        ref = model(pixel_values=x).image_embeds
    torch.testing.assert_close(cls[:, 0], ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(every[:, 1:], patches)
    assert CLIPImageEncoder(model, project=False).encode(images).shape == (2, 17, 32)


def test_clip_encoder_rejects_other_models():
    with pytest.raises(ValueError, match="CLIPVisionModelWithProjection"):
        CLIPImageEncoder(torch.nn.Linear(2, 2))


def test_sentence_encoder_bundled_minilm_offline(sentence_encoder):
    enc = sentence_encoder
    assert isinstance(enc, SentenceEncoder)
    names = coco_class_names()
    vectors = enc.encode(names)
    assert vectors.shape == (80, 384) and enc.dim == 384
    sim = (
        torch.nn.functional.normalize(vectors, dim=1)
        @ torch.nn.functional.normalize(vectors, dim=1).T
    )
    cat, dog, truck = names.index("cat"), names.index("dog"), names.index("truck")
    assert sim[cat, dog] > sim[cat, truck]  # a real sentence model, not noise


def test_gpt_encoder_tiny_model_mean_and_last_pooling():
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    model = GPT2Model(
        GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=257, bos_token_id=256,
                   eos_token_id=256)
    )  # fmt: skip
    enc = GPTTextEncoder(model, tokenizer=byte_tokenizer())
    texts = ["a cat", "a dog on a bed"]
    batched = enc.encode(texts)
    assert batched.shape == (2, 32)
    # Padding does not change a text's vector: encoded alone it is the same.
    torch.testing.assert_close(batched[0], enc.encode(texts[:1])[0], atol=1e-5, rtol=1e-5)
    last_enc = GPTTextEncoder(model, tokenizer=byte_tokenizer(), pooling="last")
    last = last_enc.encode(texts)
    torch.testing.assert_close(last[0], last_enc.encode(texts[:1])[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(last, batched)


def test_text_encoder_rejects_a_bare_string(sentence_encoder):
    with pytest.raises(ValueError, match="texts="):
        sentence_encoder.encode("person")


def test_create_encoder_registry():
    enc = create_encoder("timm:resnet18", at="layer3", image_size=32)
    assert isinstance(enc, VisionEncoder) and enc.dim == 256
    with pytest.raises(ValueError, match=r"spec='vae:x'.*clip.*gpt.*sentence.*timm"):
        create_encoder("vae:x")


def test_registering_an_encoder_name_twice_is_refused():
    from dict_init.encoders import ENCODERS, register_encoder

    before = ENCODERS["timm"]
    with pytest.raises(
        ValueError,
        match=r"register_encoder: 'timm' is already in the encoder registry \(held by "
        r"dict_init\.encoders\.vision\._timm_encoder\)",
    ):
        register_encoder("timm")(lambda model, **options: None)
    assert ENCODERS["timm"] is before  # not overwritten
    register_encoder("test-only-encoder")(VisionEncoder)
    try:
        with pytest.raises(ValueError, match="'test-only-encoder' is already"):
            register_encoder("test-only-encoder")(VisionEncoder)
    finally:
        del ENCODERS["test-only-encoder"]


@pytest.fixture(scope="module")
def small_resnet():
    return timm.create_model("resnet18").eval()


def test_deprecated_layer_is_an_alias_of_at(small_resnet):
    images = torch.rand(1, 3, 32, 32)
    new = VisionEncoder(small_resnet, at="layer3", image_size=32)
    with pytest.warns(FutureWarning, match=r"^VisionEncoder: 'layer' is deprecated, use 'at'$"):
        old = VisionEncoder(small_resnet, layer="layer3", image_size=32)
    assert old.at == "layer3"
    torch.testing.assert_close(old.encode(images), new.encode(images), rtol=0, atol=0)
    with pytest.warns(FutureWarning, match=r"^create_encoder: 'layer' is deprecated, use 'at'$"):
        made = create_encoder("timm:resnet18", layer="layer3", image_size=32)
    assert made.at == "layer3" and made.dim == 256
    with pytest.raises(TypeError, match=r"VisionEncoder: pass 'at' only"):
        VisionEncoder(small_resnet, at="layer3", layer="layer3")
    with pytest.raises(TypeError, match=r"create_encoder: pass 'at' only"):
        create_encoder("timm:resnet18", at="layer3", layer="layer3")


@pytest.mark.parametrize("size", [0, -32, (0, 32), (32,), (32, 32, 3), 2.5, True, "32"])
def test_vision_encoder_refuses_a_bad_image_size(small_resnet, size):
    with pytest.raises(ValueError, match=r"image_size=.* is invalid: expected a positive int"):
        VisionEncoder(small_resnet, "layer2", image_size=size)


def test_clip_encoders_refuse_image_size_zero():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8,
                           projection_dim=16)  # fmt: skip
    with pytest.raises(ValueError, match=r"image_size=0 is invalid"):
        CLIPImageEncoder(CLIPVisionModelWithProjection(cfg), image_size=0)


def test_coco_class_names():
    names = coco_class_names()
    assert len(names) == 80 == len(set(names))
    assert names[:3] == ["person", "bicycle", "car"]


def test_plain_clip_vision_model_gives_all_hidden_tokens():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8,
    )  # fmt: skip
    model = CLIPVisionModel(config).eval()
    images = torch.rand(2, 3, 32, 32)
    enc = CLIPImageEncoder(model)
    every = enc.encode(images)
    assert every.shape == (2, 17, 32) and enc.dim == 32  # no projection: hidden width
    with torch.no_grad():  # transformers' own pooled output is the class token after the norm
        ref = model(pixel_values=(images - enc.mean) / enc.std).pooler_output
    torch.testing.assert_close(every[:, 0], ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"project.*no visual projection"):
        CLIPImageEncoder(model, project=True)


def tiny_open_clip():
    import open_clip

    torch.manual_seed(0)
    return open_clip.CLIP(
        embed_dim=24,
        vision_cfg={"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
        text_cfg={"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
    ).eval()


def test_open_clip_encoder_returns_all_patch_tokens():
    from dict_init import OpenCLIPImageEncoder

    model = tiny_open_clip()
    images = torch.rand(2, 3, 32, 32)
    every = OpenCLIPImageEncoder(model).encode(images)
    patches = OpenCLIPImageEncoder(model, tokens="patches").encode(images)
    cls = OpenCLIPImageEncoder(model.visual, tokens="class").encode(images)  # the tower alone
    assert every.shape == (2, 17, 24) and patches.shape == (2, 16, 24) and cls.shape == (2, 1, 24)
    enc = OpenCLIPImageEncoder(model)
    with torch.no_grad():  # the class token is open_clip's own image embedding
        ref = model.encode_image((images - enc.mean) / enc.std)
    torch.testing.assert_close(cls[:, 0], ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(every[:, 1:], patches)
    # patch tokens differ from one another (not the pooled token repeated)
    assert (patches - patches.mean(1, keepdim=True)).abs().amax() > 1e-3
    assert OpenCLIPImageEncoder(model, project=False).encode(images).shape == (2, 17, 32)
    with pytest.raises(ValueError, match="open_clip CLIP model with a ViT"):
        OpenCLIPImageEncoder(torch.nn.Linear(2, 2))
