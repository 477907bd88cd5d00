import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashionsearch.model_contract import (
    DetectionGroup,
    DetectionSpec,
    InputSpec,
    ModelContractError,
    ModelSpec,
    OutputHead,
    file_sha256,
    letterbox,
    normalize,
    preprocess,
)


def _classifier_spec(**overrides) -> ModelSpec:
    fields = dict(
        name="tiny",
        kind="classifier",
        version="1",
        onnx_sha256="0" * 64,
        input=InputSpec(name="image", height=80, width=60, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
        outputs=(OutputHead(name="p_gender", attribute="gender", labels=("Men", "Women")),),
        metrics={"accuracy": {"gender": 0.9}},
    )
    fields.update(overrides)
    return ModelSpec(**fields)


def test_round_trip_keeps_every_field_and_unknown_extras(tmp_path):
    spec = _classifier_spec(extra={"training": {"epochs": 3}})
    spec.write(tmp_path)
    loaded = ModelSpec.load(tmp_path)
    assert loaded == spec
    assert json.loads((tmp_path / "model.json").read_text())["training"] == {"epochs": 3}


def test_written_json_has_the_contract_field_names(tmp_path):
    _classifier_spec().write(tmp_path)
    data = json.loads((tmp_path / "model.json").read_text())
    assert set(data) >= {"name", "kind", "version", "onnx_sha256", "input", "outputs", "metrics"}
    assert set(data["input"]) >= {
        "name",
        "height",
        "width",
        "channels",
        "layout",
        "color",
        "dtype",
        "scale",
        "mean",
        "std",
        "resize",
    }
    assert data["outputs"][0] == {"name": "p_gender", "attribute": "gender", "labels": ["Men", "Women"]}


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("onnx_sha256"), "onnx_sha256"),
        (lambda d: d.update(kind="segmenter"), "kind must be one of"),
        (lambda d: d["input"].update(layout="NCHW"), "layout"),
        (lambda d: d["input"].update(resize="pad"), "pad_value"),
        (lambda d: d["input"].update(std=[1, 0, 1]), "std"),
        (lambda d: d.update(outputs=[]), "at least one"),
    ],
)
def test_invalid_files_name_what_is_wrong(tmp_path, mutate, message):
    data = _classifier_spec().to_dict()
    mutate(data)
    (tmp_path / "model.json").write_text(json.dumps(data))
    with pytest.raises(ModelContractError, match=message):
        ModelSpec.load(tmp_path)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ModelContractError, match="no model.json"):
        ModelSpec.load(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelContractError, match="not valid JSON"):
        ModelSpec.load(tmp_path)


def test_embedder_needs_an_embedding_section():
    with pytest.raises(ModelContractError, match="embedding"):
        ModelSpec(name="e", kind="embedder", version="1", onnx_sha256="x", input=_classifier_spec().input)


def test_preprocess_normalizes_per_channel():
    spec = InputSpec(name="x", height=2, width=2, scale=1 / 255, mean=(0.5, 0.0, 0.0), std=(0.5, 1.0, 2.0))
    pixels = np.full((2, 2, 3), 255, dtype=np.uint8)
    out = preprocess([pixels], spec)
    assert out.shape == (1, 2, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0, 0], [1.0, 1.0, 0.5], rtol=1e-6)


@pytest.mark.parametrize(
    ("mean", "std"), [((1.0, 1.0, 1.0), (1.0, 1.0, 1.0)), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
)
def test_normalize_is_bit_identical_to_the_broadcast_formula(mean, std):
    # The fast paths (scalar, strided per channel) must not move a single bit: training evaluation, the parity
    # gate and serving all rely on this one function.
    spec = InputSpec(name="x", height=8, width=6, scale=1 / 127.5, mean=mean, std=std)
    pixels = np.random.default_rng(0).integers(0, 256, (5, 8, 6, 3), dtype=np.uint8)
    expected = ((pixels.astype(np.float32) * np.float32(spec.scale)) - np.float32(mean)) / np.float32(std)
    np.testing.assert_array_equal(normalize(pixels, spec), expected)


def test_preprocess_same_for_pil_and_array_and_converts_modes():
    spec = InputSpec(name="x", height=80, width=60)
    rgb = Image.new("RGB", (60, 80), (10, 20, 30))
    a = preprocess([rgb], spec)
    b = preprocess([np.asarray(rgb)], spec)
    c = preprocess([rgb.convert("RGBA")], spec)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_stretch_and_pad_resize():
    wide = Image.new("RGB", (120, 40), (200, 0, 0))
    stretch = preprocess([wide], InputSpec(name="x", height=60, width=60, scale=1.0))
    assert stretch.shape == (1, 60, 60, 3) and np.all(stretch[..., 0] == 200)
    pad = preprocess([wide], InputSpec(name="x", height=60, width=60, scale=1.0, resize="pad", pad_value=255))
    assert pad[0, 0, 30, 1] == 255 and pad[0, 30, 30, 1] == 0  # top row is padding, centre is the image


def test_file_sha256(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def _detector_spec(**detection) -> ModelSpec:
    return ModelSpec(
        name="tiny-detector",
        kind="detector",
        version="1",
        onnx_sha256="0" * 64,
        input=InputSpec(name="image", height=320, width=256, resize="pad", pad_value=255),
        detection=DetectionSpec(
            heatmap="heatmap",
            box_size="box_size",
            offset="offset",
            groups=(
                DetectionGroup("top", ("Topwear",)),
                DetectionGroup("eyewear", ("Eyewear",), article_types=("Sunglasses",)),
            ),
            **detection,
        ),
    )


def test_a_detector_round_trips_with_its_detection_section(tmp_path):
    spec = _detector_spec(score_threshold=0.25)
    spec.write(tmp_path)
    assert ModelSpec.load(tmp_path) == spec
    data = json.loads((tmp_path / "model.json").read_text())
    assert data["detection"] == {
        "heatmap": "heatmap",
        "box_size": "box_size",
        "offset": "offset",
        "groups": [
            {"name": "top", "sub_categories": ["Topwear"]},
            {"name": "eyewear", "sub_categories": ["Eyewear"], "article_types": ["Sunglasses"]},
        ],
        "stride": 8,
        "score_threshold": 0.25,
        "max_detections": 50,
        "nms_iou": 0.6,
        "flip_test": False,
    }


def test_the_flip_test_and_its_own_threshold_round_trip_and_pick_the_served_threshold(tmp_path):
    spec = _detector_spec(score_threshold=0.35, flip_test=True, flip_test_score_threshold=0.4)
    spec.write(tmp_path)
    assert ModelSpec.load(tmp_path) == spec
    written = json.loads((tmp_path / "model.json").read_text())["detection"]
    assert written["flip_test"] is True and written["flip_test_score_threshold"] == 0.4
    assert spec.detection.served_threshold(True) == 0.4 and spec.detection.served_threshold(False) == 0.35
    # Without a threshold of its own, the flip test is served at score_threshold.
    assert _detector_spec(score_threshold=0.35).detection.served_threshold(True) == 0.35


def test_the_detection_section_defaults_what_it_leaves_out(tmp_path):
    data = _detector_spec().to_dict()
    data["detection"] = {k: data["detection"][k] for k in ("heatmap", "box_size", "offset", "groups")}
    (tmp_path / "model.json").write_text(json.dumps(data))
    assert ModelSpec.load(tmp_path).detection == _detector_spec().detection


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("detection"), "needs a detection section"),
        (lambda d: d["detection"].pop("groups"), "detection section lacks the required field 'groups'"),
        (lambda d: d["detection"].update(groups=[]), "at least one group"),
        (lambda d: d["detection"]["groups"].append({"name": "top", "sub_categories": ["x"]}), "distinct"),
        (lambda d: d["detection"]["groups"].append({"name": "bag"}), "'bag' lists no sub_categories"),
        (lambda d: d["detection"].update(stride=12), "not a multiple of detection.stride 12"),
        (lambda d: d["detection"].update(stride=0), "stride must be a positive integer"),
        (lambda d: d["detection"].update(offset="heatmap"), "3 distinct output names"),
        (lambda d: d["detection"].update(score_threshold=1.5), "score_threshold"),
        (lambda d: d["detection"].update(max_detections=0), "max_detections"),
        (lambda d: d["detection"].update(nms_iou=0), "nms_iou"),
        (lambda d: d["detection"].update(flip_test="yes"), "flip_test must be true or false"),
        (lambda d: d["detection"].update(flip_test_score_threshold=2), "flip_test_score_threshold must be in"),
        (lambda d: d["input"].update(resize="stretch"), "needs input.resize 'pad'"),
    ],
)
def test_invalid_detectors_name_what_is_wrong(tmp_path, mutate, message):
    data = _detector_spec().to_dict()
    mutate(data)
    (tmp_path / "model.json").write_text(json.dumps(data))
    with pytest.raises(ModelContractError, match=message):
        ModelSpec.load(tmp_path)


@pytest.mark.parametrize(
    "model_dir",
    sorted(
        p.parent
        for p in (Path(__file__).parents[2] / "models").glob("*/model.json")
        if json.loads(p.read_text())["kind"] in ("classifier", "embedder")
    ),
    ids=lambda p: p.name,
)
def test_committed_models_load_and_write_back_unchanged(model_dir):
    data = json.loads((model_dir / "model.json").read_text())
    spec = ModelSpec.load(model_dir)
    assert spec.detection is None and spec.to_dict() == data


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (256, 320), (1, 1), (4000, 3)])
def test_letterbox_is_where_preprocess_puts_the_photo(size):
    spec = InputSpec(name="x", height=320, width=256, scale=1.0, resize="pad", pad_value=255)
    placed = letterbox(*size, spec)
    out = preprocess([Image.new("RGB", size, (0, 0, 0))], spec)[0, ..., 0]
    ys, xs = np.nonzero(out < 128)
    assert (xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()) == (
        placed.left,
        placed.top,
        placed.width,
        placed.height,
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"version": ' + b"7" * 5000 + b"}", "more than 4300 digits"),
        (b'{"name": "caf\xe9"}', "not UTF-8 text"),
    ],
    ids=["nested 100,000 deep", "a 5,000-digit number", "Latin-1 bytes"],
)
def test_a_model_json_that_breaks_the_json_module_is_a_named_refusal(tmp_path, content, message):
    """Each of these raised out of json.loads as something other than JSONDecodeError (a RecursionError with its
    traceback for the nesting) instead of the refusal every other broken model.json gets."""
    (tmp_path / "model.json").write_bytes(content)
    with pytest.raises(ModelContractError, match=rf"model.json is not valid JSON.*{message}"):
        ModelSpec.load(tmp_path)
