"""The production classifier and embedder: model shapes, losses, calibration, a few steps, export round trip."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from fashionsearch.model_contract import ModelSpec, preprocess
from training import data, embedding, export, heads, hierarchy, layers, metrics, scratch_trunk
from training.recipe import Head, TrainedModel
from training.recipes import scratch_classifier, scratch_embedder

pytestmark = pytest.mark.training

LOAD_AND_PRINT_SHAPE = (
    "import sys; from pathlib import Path; from training.export import load_trained; "
    "print(load_trained(Path(sys.argv[1])).model.output_shape)"
)

SIZES = {"masterCategory": 3, "subCategory": 5, "articleType": 7, "gender": 2, "baseColour": 4, "season": 4, "usage": 3}


# A narrow trunk of the same structure keeps the tests quick; the production widths are the defaults.
TINY_TRUNK = {"stem": 8, "widths": (8, 8, 16, 16), "depths": (1, 1, 1, 1)}


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 80, 60, 3), dtype=np.uint8)


def _targets(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = {a: rng.integers(0, k, size=n).astype(np.int32) for a, k in SIZES.items()}
    targets["usage"][::3] = -1  # unlabelled examples are masked
    return targets


def _train_a_few_steps() -> tuple[object, dict[str, float]]:
    import keras

    data.configure_tensorflow(1, 0)
    model = scratch_classifier.build_classifier(SIZES, **TINY_TRUNK)
    targets = _targets(32)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss={
            a: layers.MaskedSmoothedCrossEntropy(
                metrics.class_weights(targets[a], k, heads.CLASS_WEIGHT_POWER),
                heads.LABEL_SMOOTHING,
                name=f"{a}_ce",
            )
            for a, k in SIZES.items()
        },
        metrics={a: [layers.MaskedAccuracy()] for a in SIZES},
    )
    ds = data.make_tf_dataset(
        _pixels(32), targets, scratch_trunk.SCRATCH_INPUT, 16, shuffle=True, augment=scratch_classifier.AUGMENT
    )
    history = model.fit(ds, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    return model, {a: 1.0 + 0.1 * k for k, a in enumerate(heads.HEAD_ATTRIBUTES)}


def _saved_run_loads_in_a_fresh_process(trained: TrainedModel, run_dir) -> str:
    """Save the run, load it in a process that never imported the recipes (as re-export and the benches
    do: custom layers must come back from the file), and return what it printed (the output shape)."""
    export.save_trained(trained, run_dir)
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PRINT_SHAPE, str(run_dir)],
        cwd=data.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    return loaded.stdout.strip()


def _classifier(exported: object) -> TrainedModel:
    return TrainedModel(
        name="classifier",
        kind="classifier",
        model=exported,
        input_spec=scratch_trunk.SCRATCH_INPUT,
        heads=tuple(Head(a, tuple(f"{a}{i}" for i in range(SIZES[a]))) for a in heads.HEAD_ATTRIBUTES),
        parity_pixels=_pixels(256, seed=3),
    )


def test_classifier_trains_and_exports_calibrated_softmax_heads(tmp_path):
    model, temperatures = _train_a_few_steps()
    assert scratch_trunk.feature_model(model).output_shape == (None, 32)  # pools of the last two stages
    exported = scratch_classifier.calibrated_classifier(model, temperatures)
    trained = _classifier(exported)
    spec = export.export_model(trained, tmp_path / "classifier")
    loaded = ModelSpec.load(tmp_path / "classifier")
    assert loaded == spec
    assert [h.attribute for h in loaded.outputs] == list(heads.HEAD_ATTRIBUTES)
    assert loaded.input.height == 80 and loaded.input.width == 60
    session = ort.InferenceSession(str(tmp_path / "classifier" / "model.onnx"), providers=["CPUExecutionProvider"])
    x = preprocess(list(_pixels(4, seed=5)), loaded.input)
    outputs = session.run([h.name for h in loaded.outputs], {loaded.input.name: x})
    logits = model.predict(x, verbose=0)
    for head, probs in zip(loaded.outputs, outputs, strict=True):
        assert probs.shape == (4, SIZES[head.attribute])
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        # The temperature is baked in: softmax(logits / T).
        expected = metrics.softmax(np.asarray(logits[head.attribute]) / temperatures[head.attribute])
        np.testing.assert_allclose(probs, expected, atol=1e-4)


def test_heads_refit_on_a_frozen_trunk_exports_calibrated_softmax_heads(tmp_path):
    import keras

    model, temperatures = _train_a_few_steps()
    trunk = scratch_trunk.feature_model(model)
    trunk.trainable = False
    trunk_weights = [w.copy() for w in trunk.get_weights()]
    pixels, targets = _pixels(32), _targets(32)
    features = np.asarray(trunk.predict(preprocess(list(pixels), scratch_trunk.SCRATCH_INPUT), verbose=0))
    mean, variance = features.mean(axis=0), features.var(axis=0) + 1e-6
    head_model = scratch_classifier.build_heads(features.shape[1], SIZES, mean, variance)
    head_model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss={
            a: layers.MaskedSmoothedCrossEntropy(np.ones(k), heads.LABEL_SMOOTHING, name=f"{a}_ce")
            for a, k in SIZES.items()
        },
    )
    assert np.isfinite(head_model.fit(features, targets, batch_size=16, epochs=1, verbose=0).history["loss"][0])
    inputs = keras.Input((80, 60, 3), name=scratch_trunk.SCRATCH_INPUT.name)
    exported = keras.Model(inputs, heads.calibrated_outputs(head_model(trunk(inputs)), temperatures))
    for before, after in zip(trunk_weights, trunk.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)  # the trunk stays as trained (the embedder shares it)

    trained = _classifier(exported)
    export.export_model(trained, tmp_path / "classifier")  # includes the Keras-vs-onnxruntime parity gate
    loaded = ModelSpec.load(tmp_path / "classifier")
    session = ort.InferenceSession(str(tmp_path / "classifier" / "model.onnx"), providers=["CPUExecutionProvider"])
    x = preprocess(list(_pixels(4, seed=5)), loaded.input)
    outputs = session.run([h.name for h in loaded.outputs], {loaded.input.name: x})
    logits = head_model.predict(trunk.predict(x, verbose=0), verbose=0)
    independent = {a: metrics.softmax(np.asarray(logits[a]) / t) for a, t in temperatures.items()}
    for head, probs in zip(loaded.outputs, outputs, strict=True):
        np.testing.assert_allclose(probs, independent[head.attribute], atol=1e-4)

    # With hierarchical decoding the three hierarchy heads come out decoded under the same names, the rest as
    # before; the run folder loads in a fresh process (training.export registers the layer).
    decoding = hierarchy.hierarchical_decoding([independent[a] for a in hierarchy.HIERARCHY], _hierarchy(), 1.2)
    decoded = keras.Model(inputs, heads.calibrated_outputs(head_model(trunk(inputs)), temperatures, decoding))
    trained = _classifier(decoded)
    export.export_model(trained, tmp_path / "decoded")
    session = ort.InferenceSession(str(tmp_path / "decoded" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [h.name for h in loaded.outputs]
    outputs = dict(zip(names, session.run(names, {loaded.input.name: x}), strict=True))
    by_hand = _decode_by_hand(*(independent[a] for a in hierarchy.HIERARCHY), hierarchy.HIERARCHY_WEIGHT, 1.2)
    expected = independent | dict(zip(hierarchy.HIERARCHY, by_hand, strict=True))
    for head in loaded.outputs:
        np.testing.assert_allclose(outputs[head.name], expected[head.attribute], atol=1e-4)
    _saved_run_loads_in_a_fresh_process(trained, tmp_path / "run")


def test_masked_loss_ignores_unlabelled_examples_and_weights_classes():
    loss = layers.MaskedSmoothedCrossEntropy([1.0, 3.0], smoothing=0.0)
    logits = np.asarray([[2.0, 0.0], [0.0, 2.0], [5.0, -5.0]], dtype=np.float32)
    per_example = np.asarray(loss.call(np.asarray([0, 1, -1]), logits))
    expected = -np.log(metrics.softmax(logits[:2])[[0, 1], [0, 1]]) * np.asarray([1.0, 3.0])
    np.testing.assert_allclose(per_example[:2], expected, rtol=1e-5)
    assert per_example[2] == 0.0


def test_class_weights_favour_rare_classes_and_average_one():
    labels = np.asarray([0] * 90 + [1] * 10 + [-1] * 5)
    w = metrics.class_weights(labels, 2, heads.CLASS_WEIGHT_POWER)
    assert w[1] > w[0]
    assert abs((w[0] * 90 + w[1] * 10) / 100 - 1.0) < 1e-5


def test_fit_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 5)) * 2.0
    y = np.asarray([rng.choice(5, p=p) for p in metrics.softmax(true_logits)])
    t = metrics.fit_temperature(true_logits * 3.0, y)  # three times too confident
    assert 2.5 < t < 3.5
    assert metrics.nll(true_logits * 3.0, y, t) < metrics.nll(true_logits * 3.0, y)


def test_choose_dimension_prefers_the_smallest_within_tolerance():
    table = {
        d: {"precision_at_5": {"unfiltered": {"articleType": p}}}
        for d, p in ((16, 0.80), (32, 0.871), (64, 0.875), (128, 0.874))
    }
    assert embedding.choose_dimension(table) == 32
    assert embedding.choose_dimension(table, tolerance=0.0) == 64


def test_embedder_projection_trains_and_exports_unit_vectors(tmp_path):
    import keras

    data.configure_tensorflow(1, 0)
    model = scratch_classifier.build_classifier(SIZES, **TINY_TRUNK)
    trunk = scratch_trunk.feature_model(model)
    rng = np.random.default_rng(0)
    features = rng.random((64, trunk.output_shape[-1]), dtype=np.float32)
    targets = {a: rng.integers(0, 3, size=64).astype(np.int32) for a in embedding.EMBEDDING_ATTRIBUTES}
    projection = scratch_embedder.train_projection(features, targets, 16, dict.fromkeys(targets, 3), epochs=1, batch=32)
    inputs = keras.Input((80, 60, 3), name="image")
    embedder_model = keras.Model(inputs, keras.layers.Identity(name="embedding")(projection(trunk(inputs))))
    trained = TrainedModel(
        name="embedder",
        kind="embedder",
        model=embedder_model,
        input_spec=scratch_trunk.SCRATCH_INPUT,
        embedding_dim=16,
        parity_pixels=_pixels(256, seed=4),
    )
    spec = export.export_model(trained, tmp_path / "embedder")
    assert spec.embedding is not None and spec.embedding.dim == 16 and spec.embedding.distance == "euclid"
    session = ort.InferenceSession(str(tmp_path / "embedder" / "model.onnx"), providers=["CPUExecutionProvider"])
    x = preprocess(list(_pixels(3, seed=6)), spec.input)
    (vectors,) = session.run([spec.embedding.output], {spec.input.name: x})
    assert vectors.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    # The saved model holds the custom ProxyPull layer.
    assert _saved_run_loads_in_a_fresh_process(trained, tmp_path / "run").endswith("(None, 16)")


def test_production_trunk_fits_the_budget():
    data.configure_tensorflow(1, 0)
    model = scratch_classifier.build_classifier({"articleType": 98, "baseColour": 43})
    assert model.count_params() < 1_250_000  # float32 ONNX well under 5 MB
    widths = scratch_classifier.WIDTHS
    assert scratch_trunk.feature_model(model).output_shape == (None, widths[-1] + widths[-2])


def test_search_latency_is_measured():
    rng = np.random.default_rng(0)
    assert metrics.search_latency_ms(rng.random((500, 16)), rng.random((5, 16)), repeats=1) > 0.0


def test_proxy_pull_moves_vectors_towards_their_likely_proxy():
    import keras

    rng = np.random.default_rng(0)
    proxies = rng.normal(size=(8, 5 + 3)).astype(np.float32)  # two attributes: 5 and 3 classes
    z = rng.normal(size=(16, 8)).astype(np.float32)
    z /= np.linalg.norm(z, axis=1, keepdims=True)

    def pulled(strengths):
        layer = layers.ProxyPull([5, 3], strengths)
        layer.build((None, 8))
        layer.set_weights([proxies])
        return keras.ops.convert_to_numpy(layer(z))

    np.testing.assert_allclose(pulled([0.0, 0.0]), z, atol=1e-6)  # no strength: the vector as it was
    out = pulled([1.0, 0.5])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    first = proxies[:, :5] / np.linalg.norm(proxies[:, :5], axis=0)
    nearest = (z @ first).argmax(axis=1)
    before, after = (z @ first)[np.arange(16), nearest], (out @ first)[np.arange(16), nearest]
    assert np.all(after > before)  # closer to the proxy it most likely belongs to
    config = layers.ProxyPull([5, 3], [1.0, 0.5]).get_config()
    assert layers.ProxyPull.from_config(config).strengths == [1.0, 0.5]
    with pytest.raises(ValueError, match="strengths"):
        layers.ProxyPull([5, 3], [1.0])


# articleType -> subCategory: article 6 has no parent class, subCategory 4 no article type (an "orphan").
ARTICLE_SUB = [0, 0, 1, 2, 2, 3, None]
SUB_MASTER = [0, 0, 1, 2, 2]


def _hierarchy() -> tuple[np.ndarray, np.ndarray]:
    a2s = np.zeros((7, 5), dtype=np.float32)
    for a, s in enumerate(ARTICLE_SUB):
        if s is not None:
            a2s[a, s] = 1
    s2m = np.zeros((5, 3), dtype=np.float32)
    s2m[np.arange(5), SUB_MASTER] = 1
    return a2s, s2m


def _decode_by_hand(p_master, p_sub, p_article, weight, temperature):
    """The decoding written out with loops, one image at a time."""
    q_master, q_sub, q_article = [], [], []
    for pm, ps, pa in zip(p_master, p_sub, p_article, strict=True):
        score = np.log(pa + 1e-12)
        for a, s in enumerate(ARTICLE_SUB):
            if s is not None:
                score[a] += weight * (np.log(ps[s] + 1e-12) + np.log(pm[SUB_MASTER[s]] + 1e-12))
        qa = metrics.softmax(score[None] / temperature)[0]
        qs = np.zeros(5)
        for a, s in enumerate(ARTICLE_SUB):
            if s is not None:
                qs[s] += qa[a] * (1 - ps[4])  # the orphan subCategory keeps its own probability
        qs[4] = ps[4]
        qs /= qs.sum()
        qm = np.zeros(3)
        for s, m in enumerate(SUB_MASTER):
            qm[m] += qs[s]
        q_master.append(qm), q_sub.append(qs), q_article.append(qa)
    return np.array(q_master), np.array(q_sub), np.array(q_article)


def test_hierarchical_decoding_makes_the_coarse_heads_agree_with_the_article_type():
    rng = np.random.default_rng(0)
    probs = [metrics.softmax(rng.normal(size=(16, n)) * 2).astype(np.float32) for n in (3, 5, 7)]
    layer = hierarchy.hierarchical_decoding(probs, _hierarchy(), temperature=1.3)
    decoded = [np.asarray(q) for q in layer(probs)]
    for got, expected in zip(decoded, _decode_by_hand(*probs, hierarchy.HIERARCHY_WEIGHT, 1.3), strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-5)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)

    # The article head slightly prefers article 2 (subCategory 1, master 0), but the coarse heads are sure of
    # subCategory 2 / master 1: the decoded answer is article 3 or 4, and all three agree.
    p_master = np.array([[0.05, 0.9, 0.05]], dtype=np.float32)
    p_sub = np.array([[0.02, 0.03, 0.9, 0.03, 0.02]], dtype=np.float32)
    p_article = np.array([[0.02, 0.02, 0.36, 0.3, 0.26, 0.02, 0.02]], dtype=np.float32)
    q_master, q_sub, q_article = (np.asarray(q) for q in layer([p_master, p_sub, p_article]))
    assert q_article.argmax() == 3 and q_sub.argmax() == 2 and q_master.argmax() == 1


def test_decode_hierarchy_fits_a_temperature_and_reports_what_changed():
    rng = np.random.default_rng(1)
    y = {"articleType": rng.integers(0, 7, 200)}
    y["subCategory"] = np.array([ARTICLE_SUB[a] if ARTICLE_SUB[a] is not None else 4 for a in y["articleType"]])
    y["masterCategory"] = np.array([SUB_MASTER[s] for s in y["subCategory"]])
    # Noisy logits that know the truth a little better than chance.
    logits = {
        a: rng.normal(size=(200, n)) + 2.0 * np.eye(n)[y[a]]
        for a, n in zip(hierarchy.HIERARCHY, (3, 5, 7), strict=True)
    }
    layer, info = hierarchy.decode_hierarchy(logits, dict.fromkeys(hierarchy.HIERARCHY, 1.0), y, _hierarchy())
    assert 0.3 < info["article_temperature"] < 5.0
    assert info["agreeing_answers"] >= info["agreeing_answers_independent"]
    assert set(info["accuracy"]) == set(hierarchy.HIERARCHY) == set(info["ece"])
    assert abs(layer.temperature - info["article_temperature"]) < 1e-3
