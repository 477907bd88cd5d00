"""A tiny detector ONNX (onnx.helper, no TensorFlow) that finds coloured squares on a light photo, known in advance.

It follows DETECTOR_CONTRACT.md with two groups: "top" is what is dark in the red channel (black, blue, cyan
squares), "shoes" what is dark in the blue channel (black, yellow squares). Per cell of the stride grid it takes
the fraction of dark pixels, blurs it with a tent kernel (so a square's centre cell is its strictest maximum) and
squashes it into [0, 1): a fully dark cell scores 0.5, a square of 3x3 cells 0.85, a white photo 0. The box is a
square whose area is the dark area around the cell, centred on the cell (offset 0.5). Boxes of squares drawn on
a photo therefore come back within a cell of where they were drawn; tests check them by IoU.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from fashionsearch.model_contract import DetectionGroup, DetectionSpec, InputSpec, ModelSpec
from testkit.tiny_models import INPUT_NAME, _input_info, _save
from training import quantize_detector

GROUPS = (DetectionGroup("top", ("Topwear",)), DetectionGroup("shoes", ("Shoes",)))
#: The tent blur's half width in cells; a square up to 2 * REACH + 1 cells wide gets its area right.
REACH = 2
#: heat = blur / (blur + SQUASH): one fully dark cell alone (blur 9) scores 0.5.
SQUASH = 9.0


def write_tiny_detector(
    model_dir: str | os.PathLike[str],
    height: int = 128,
    width: int = 96,
    stride: int = 8,
    *,
    name: str = "tiny-detector",
    version: str = "tiny-1",
    score_threshold: float = 0.3,
    max_detections: int = 50,
) -> Path:
    """Write the tiny detector and its model.json; returns model_dir."""
    model_dir = Path(model_dir)
    side = 2 * REACH + 1
    tent = np.minimum(np.arange(1, side + 1), np.arange(side, 0, -1)).astype(np.float32)
    kernel = np.outer(tent, tent)
    nodes = [
        helper.make_node("Transpose", [INPUT_NAME], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Sub", ["one", "nchw"], ["darkness"]),  # the input is in [0, 1]: white is 0
        helper.make_node("Gather", ["darkness", "red_blue"], ["dark_rb"], axis=1),
        helper.make_node(
            "AveragePool", ["dark_rb"], ["cells"], kernel_shape=[stride, stride], strides=[stride, stride]
        ),
        helper.make_node("Conv", ["cells", "tent"], ["blur"], group=2, pads=[REACH] * 4),
        helper.make_node("Add", ["blur", "squash"], ["blur_squash"]),
        helper.make_node("Div", ["blur", "blur_squash"], ["heat"]),
        helper.make_node("Transpose", ["heat"], ["heatmap"], perm=[0, 2, 3, 1]),
        helper.make_node("ReduceMax", ["cells"], ["dark_any"], axes=[1], keepdims=1),
        helper.make_node("Conv", ["dark_any", "window"], ["area"], pads=[REACH] * 4),
        helper.make_node("Sqrt", ["area"], ["side_cells"]),
        helper.make_node("Mul", ["side_cells", "stride"], ["side"]),
        helper.make_node("Concat", ["side", "side"], ["size_nchw"], axis=1),
        helper.make_node("Transpose", ["size_nchw"], ["box_size"], perm=[0, 2, 3, 1]),
        helper.make_node("Mul", ["size_nchw", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "half"], ["offset_nchw"]),
        helper.make_node("Transpose", ["offset_nchw"], ["offset"], perm=[0, 2, 3, 1]),
    ]
    grid: list[str | int] = ["batch", height // stride, width // stride]
    graph = helper.make_graph(
        nodes,
        name,
        [_input_info(height, width, None)],
        [
            helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, [*grid, len(GROUPS)]),
            helper.make_tensor_value_info("box_size", TensorProto.FLOAT, [*grid, 2]),
            helper.make_tensor_value_info("offset", TensorProto.FLOAT, [*grid, 2]),
        ],
        [
            numpy_helper.from_array(np.array(1.0, np.float32), "one"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
            numpy_helper.from_array(np.array([0, 2], np.int64), "red_blue"),
            numpy_helper.from_array(np.stack([kernel, kernel])[:, None], "tent"),
            numpy_helper.from_array(np.array(SQUASH, np.float32), "squash"),
            numpy_helper.from_array(np.ones((1, 1, side, side), np.float32), "window"),
            numpy_helper.from_array(np.array(float(stride), np.float32), "stride"),
        ],
    )
    sha = _save(graph, model_dir)  # adds the initializer "half" (0.5)
    ModelSpec(
        name=name,
        kind="detector",
        version=version,
        onnx_sha256=sha,
        input=InputSpec(name=INPUT_NAME, height=height, width=width, scale=1.0 / 255.0, resize="pad", pad_value=255),
        detection=DetectionSpec(
            heatmap="heatmap",
            box_size="box_size",
            offset="offset",
            groups=GROUPS,
            stride=stride,
            score_threshold=score_threshold,
            max_detections=max_detections,
        ),
        metrics={"note": "tiny test model, finds coloured squares"},
    ).write(model_dir)
    return model_dir


#: Colours the tiny detector reads as each group (dark in the red channel: "top"; in the blue channel: "shoes").
TOP_COLOUR = (0, 0, 255)
SHOES_COLOUR = (255, 255, 0)


def photo_of_squares(
    size: tuple[int, int],
    squares: Sequence[tuple[int, int, int, tuple[int, int, int]]],
    *,
    image_format: str = "PNG",
    background: tuple[int, int, int] = (255, 255, 255),
) -> bytes:
    """An encoded photo of `size` (width, height) with squares (left, top, side, colour) on `background`.

    With the tiny detector's defaults, a photo of 4x its input (384x512) has cells of 32 pixels: a square of 96
    pixels at multiples of 32 covers 3x3 cells and comes back exactly.
    """
    image = Image.new("RGB", size, background)
    for left, top, side, colour in squares:
        image.paste(colour, (left, top, left + side, top + side))
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **({"quality": 95} if image_format == "JPEG" else {}))
    return buffer.getvalue()


def add_int8_variant(model_dir: Path) -> Path:
    """The tiny detector's model.int8.onnx, listed in its model.json as `python -m training quantize-detector`
    writes it (what follows the output convolutions' input in float), calibrated on photos of squares."""
    rng = np.random.default_rng(4)
    photos = []
    for _ in range(16):
        squares = [(int(rng.integers(0, 64)), int(rng.integers(0, 96)), 32, c) for c in (TOP_COLOUR, SHOES_COLOUR)]
        photos.append(np.asarray(Image.open(io.BytesIO(photo_of_squares((96, 128), squares))).convert("RGB")))
    target = model_dir / "model.int8.onnx"
    quantize_detector.quantize_file(model_dir, target, np.stack(photos), quantize_detector.PLANS[-1])
    quantize_detector.list_int8(model_dir, {})
    return target
