"""`python -m training <command>`: split, train (and export), export, evaluate.

    python -m training split    --data DIR
    python -m training train    paper-cnn --data DIR --out models/paper-cnn
    python -m training export   paper-cnn --run .cache/runs/paper-cnn --out models/paper-cnn
    python -m training evaluate models/paper-cnn --data DIR --report reports/paper-cnn
    python -m training evaluate models/embedder --data HELD_OUT_DIR --held-out --catalogue-data DIR
    python -m training train-text --embedder models/embedder --out models/text-embedder
    python -m training train detector --out models/detector
    python -m training tune-detector models/detector
    python -m training evaluate-detector models/detector
    python -m training quantize-detector models/detector
    python -m training evaluate-detector models/detector --precision int8
    python -m training tune-detector models/detector --flip-test on
    python -m training fit-box-verification models/detector --classifier models/classifier
    python -m training evaluate-detector models/detector --flip-test

The data folder defaults to $FASHIONSEARCH_DATA (else ../shared/data/fashion-product-images-small).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from fashionsearch.model_contract import MODEL_FILE, ModelSpec
from training import (
    box_verification,
    data,
    detector_compare,
    detector_eval,
    lite,
    probe,
    quantize,
    quantize_detector,
    quantize_report,
    report,
    robustness,
    scenes,
)
from training.evaluate import evaluate_model
from training.export import ExportError, export_model, load_trained, save_trained
from training.quantize import int8_file
from training.recipe import DEPRECATED_NAMES, RECIPES, TrainOptions, get_recipe, recipe_name
from training.recipes.text import TextSettings, train_text

log = logging.getLogger("training")


def _data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default: $FASHIONSEARCH_DATA)")
    parser.add_argument("--split", type=Path, default=data.DEFAULT_SPLIT_FILE, help="split file (id,split)")
    parser.add_argument("--cache", type=Path, default=None, help="decoded-image cache (default: .cache/training)")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow / onnxruntime threads")


def _load(args: argparse.Namespace, create_split: bool = False) -> tuple[data.Dataset, dict[int, str]]:
    dataset = data.load_dataset(args.data, args.cache)
    return dataset, data.get_split(dataset, args.split, create=create_split)


def cmd_split(args: argparse.Namespace) -> int:
    if args.split.exists() and not args.force:
        log.error("%s exists; pass --force to replace it (every report depends on it)", args.split)
        return 1
    dataset = data.load_dataset(args.data, args.cache)
    assignment = data.make_split(dataset.ids, dataset.labels["articleType"], seed=args.seed)
    data.write_split(assignment, args.split)
    log.info("wrote %s", args.split)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    args.model = recipe_name(args.model)  # a deprecated name runs as its new name, in the new name's run folder
    recipe = get_recipe(args.model)
    dataset, split = _load(args)
    run_dir = args.run or data.REPO_ROOT / ".cache" / "runs" / args.model
    options = TrainOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        threads=args.threads,
        verbose=args.verbose,
        limit=args.limit,
        max_minutes=args.max_minutes,
        jit_compile=not args.no_jit,
        teacher=tuple(args.teacher),
        scenes=args.scenes,
        photo_views=args.photo_views,
        scene_views=args.scene_views,
        trunk=args.trunk,
    )
    started = time.monotonic()
    trained = recipe(dataset, split, run_dir, options)
    log.info("training took %.0f s", time.monotonic() - started)
    save_trained(trained, run_dir)
    if args.out is not None:
        spec = export_model(trained, args.out, version=args.version, min_parity_images=args.min_parity_images)
        log.info("exported %s to %s", spec.identity, args.out)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    data.configure_tensorflow(args.threads)
    run_dir = args.run or data.REPO_ROOT / ".cache" / "runs" / recipe_name(args.model)
    spec = export_model(load_trained(run_dir), args.out, version=args.version, min_parity_images=args.min_parity_images)
    log.info("exported %s to %s", spec.identity, args.out)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    catalogue = None  # retrieval searches the split's train images unless a held-out set brings its own
    if not args.held_out:
        dataset, split = _load(args)
        report = args.report or data.REPO_ROOT / "reports" / args.model_dir.name
    else:
        # A labelled set of the user's own (e.g. a held-back set): every image is a query, the split file is not
        # consulted for it, and neither model.json nor the committed reports are touched.
        dataset = data.load_dataset(args.data, args.cache)
        split = {int(i): "test" for i in dataset.ids}
        if ModelSpec.load(args.model_dir).kind != "classifier":
            training_data = data.load_dataset(args.catalogue_data, args.cache)
            catalogue = training_data.split(data.get_split(training_data, args.split), "train")
        report = args.report or data.REPO_ROOT / "reports" / "held-out" / args.model_dir.name
    path = evaluate_model(
        args.model_dir,
        dataset,
        split,
        report,
        threads=args.threads,
        update_metrics=not (args.keep_metrics or args.held_out),
        catalogue=catalogue,
    )
    log.info("report written to %s", path)
    return 0


def cmd_evaluate_detector(args: argparse.Namespace) -> int:
    dataset, split = _load(args)
    command = f"python -m training evaluate-detector {args.model_dir} --photos {args.photos} --seed {args.seed}"
    if args.flip_test:  # the chosen file without and with the flip test side by side, the other reports untouched
        file = MODEL_FILE if args.precision == "float" else int8_file(MODEL_FILE)
        flipped = detector_compare.compare_flip_test(
            args.model_dir, dataset, split, args.photos, args.seed, args.threads, file
        )
        precision = "" if args.precision == "float" else f" --precision {args.precision}"
        path = detector_compare.write_flip_report(flipped, command + precision + " --flip-test", args.report)
    elif args.precision == "int8":  # float and int8 side by side (int8.md), the float report left as it is
        compared = quantize_detector.compare_on_test(
            args.model_dir, dataset, split, args.photos, args.seed, args.threads
        )
        path = quantize_detector.write_report(compared, command + " --precision int8", args.report)
    else:
        results = detector_eval.evaluate_detector(args.model_dir, dataset, split, args.photos, args.seed, args.threads)
        path = detector_eval.write_report(results, command, args.report)
    log.info("wrote %s", path)
    return 0


def cmd_tune_detector(args: argparse.Namespace) -> int:
    dataset, split = _load(args)
    flip = None if args.flip_test == "auto" else args.flip_test == "on"
    choice = detector_eval.choose_threshold(
        args.model_dir, dataset, split, args.photos, args.seed, args.threads, flip, args.serve
    )
    mode = "with the flip test" if choice["flip_test"] else "without the flip test"
    log.info("score threshold %s %s written to %s/model.json", choice["chosen"], mode, args.model_dir)
    return 0


def cmd_fit_box_verification(args: argparse.Namespace) -> int:
    dataset, split = _load(args)
    fitted = box_verification.fit(args.model_dir, args.classifier, dataset, split, args.photos, args.seed, args.threads)
    log.info("box verification %s written to %s/model.json", fitted["rule"], args.model_dir)
    log.info("on the validation scenes: %s", fitted["by_keep_probability"][str(fitted["rule"]["keep_probability"])])
    log.info("the flip test's threshold alone: %s", fitted["flip_test_threshold_alone"])
    return 0


def cmd_train_text(args: argparse.Namespace) -> int:
    dataset, split = _load(args)
    settings = TextSettings() if args.epochs is None else TextSettings(epochs=args.epochs)
    spec = train_text(
        dataset, split, args.embedder, args.out, settings, args.version, args.seed, args.threads, args.limit
    )
    log.info("exported %s (targets %s) to %s", spec.identity, spec.target, args.out)
    return 0


def cmd_probe_lite(args: argparse.Namespace) -> int:
    plans = [probe.parse_plan(p, args.views, args.minutes) for p in args.plan]
    settings = probe.ProbeSettings(args.train_images, args.seed, args.threads)
    dataset, split = _load(args)
    results = [probe.probe(dataset, split, plan, minutes, settings, args.runs) for plan, minutes in plans]
    command = (
        "python -m training probe-lite "
        + " ".join(f"--plan {p}" for p in args.plan)
        + f" --views {args.views} --train-images {args.train_images} --minutes {args.minutes:g}"
    )
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report.render(probe.report(results, command, settings)))
    args.report.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    log.info("wrote %s", args.report)
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    pairs = {}
    for item in args.pair:
        name, _, dirs = item.partition("=")
        classifier, _, embedder = dirs.partition(",")
        if not (name and classifier and embedder):
            raise data.DataError(f"--pair wants NAME=CLASSIFIER_DIR,EMBEDDER_DIR, got {item!r}")
        pairs[name] = (Path(classifier), Path(embedder))
    if args.family and args.report is None:  # a table of some families must not replace the whole one
        raise data.DataError("--family needs --report: the default reports hold the whole suite")
    shifts = robustness.of_families(args.family) if args.family else robustness.SUITE
    dataset, split = _load(args)
    results = robustness.measure(
        pairs, dataset, split, args.images, threads=args.threads, shifts=shifts, on=args.on, detector=args.detector
    )
    if args.report is None:
        name = "README.md" if args.on == "test" else "validation.md"
        if args.detector:
            name = "crop-auto.md" if args.on == "test" else "crop-auto-validation.md"
        args.report = data.REPO_ROOT / "reports" / "robustness" / name
    args.report.parent.mkdir(parents=True, exist_ok=True)
    results["command"] = (
        "python -m training robustness "
        + " ".join(f"--pair {p}" for p in args.pair)
        + f" --images {args.images}"
        + (f" --on {args.on}" if args.on != "test" else "")
        + (f" --detector {args.detector}" if args.detector else "")
        + "".join(f" --family '{f}'" for f in args.family)
    )
    args.report.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    args.report.write_text(report.render(robustness.report(results)))
    log.info("robustness table written to %s", args.report)
    if args.on == "test" and not (
        args.detector or args.family
    ):  # each pair's models show their rows in their own reports
        folders = [data.REPO_ROOT / "reports" / d.name for c, e in pairs.values() for d in (c, e)]
        folders = [f for f in folders if (f / report.REPORT_FILE).is_file()]
        robustness.render_model_reports(folders, data.REPO_ROOT / "models", [args.report.with_suffix(".json")])
    return 0


def cmd_render_reports(args: argparse.Namespace) -> int:
    folders = args.reports or sorted(p.parent for p in (data.REPO_ROOT / "reports").glob(f"*/{report.REPORT_FILE}"))
    robustness.render_model_reports(folders, args.models, args.robustness or [robustness.DEFAULT_RESULTS])
    if not args.reports:  # the robustness tables too, from the results beside them
        for results_file in sorted(robustness.DEFAULT_RESULTS.parent.glob("*.json")):
            results = json.loads(results_file.read_text())
            results_file.with_suffix(".md").write_text(report.render(robustness.report(results)))
            log.info("wrote %s", results_file.with_suffix(".md"))
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    dataset, split = _load(args)
    dataset = dataset.at_most(args.limit, seed=0)
    results = quantize.run(
        args.classifier,
        args.embedder,
        dataset,
        split,
        calibration_size=args.calibration_images,
        choose_images=args.choose_images,
        threads=args.threads,
        plans=[quantize.PLANS[k] for k in args.plans] if args.plans else quantize.PLANS,
    )
    command = "python -m training quantize " + " ".join(sys.argv[2:])
    quantize_report.write(results, args.report, command)
    log.info("int8 report written to %s", args.report)
    return 0


def cmd_quantize_detector(args: argparse.Namespace) -> int:
    dataset, split = _load(args)
    results = quantize_detector.run(
        args.model_dir,
        dataset,
        split,
        calibration_size=args.calibration_scenes,
        choose_photos=args.choose_photos,
        threads=args.threads,
    )
    log.info("%s", json.dumps(results, indent=1))
    return 0


def cmd_install_default(args: argparse.Namespace) -> int:
    """Copy a model folder to a serving default (models/classifier, models/embedder) unless one is there."""
    if args.target.exists() and not args.force:
        log.info("%s exists; left as it is", args.target)
        return 0
    if args.target.exists():
        shutil.rmtree(args.target)
    shutil.copytree(args.source, args.target)
    log.info("copied %s to %s", args.source, args.target)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("split", help="make the seeded, articleType-stratified train/val/test split file")
    _data_args(p)
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_split)

    p = commands.add_parser("train", help="train a model (and export it with --out)")
    p.add_argument(
        "model",
        help=f"one of: {', '.join(sorted(RECIPES))} (deprecated: {', '.join(sorted(DEPRECATED_NAMES))})",
    )
    _data_args(p)
    p.add_argument("--run", type=Path, default=None, help="working folder (default .cache/runs/<model>)")
    p.add_argument("--out", type=Path, default=None, help="export model.onnx + model.json here")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--limit", type=int, default=None, help="at most this many train/val images (smoke runs)")
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock training budget")
    p.add_argument("--no-jit", action="store_true", help="no XLA compilation (faster start for tiny runs)")
    p.add_argument("--min-parity-images", type=int, default=256, help="parity gate sample size (keep 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--teacher",
        type=Path,
        nargs="+",
        default=(),
        help="distillation recipes (lite-student): the teacher's served classifier and embedder folders "
        "(default models/classifier models/embedder)",
    )
    p.add_argument("--scenes", type=int, default=None, help="synthesised training scenes (detector)")
    p.add_argument(
        "--photo-views",
        action="store_true",
        help="lite-classifier: some shopper views on real photographs, half of them framed as the gateway cuts a"
        " detected product out (training/shopper.py; not in models 8)",
    )
    p.add_argument(
        "--scene-views",
        action="store_true",
        help="lite-classifier: harder scene shifts in the shopper views: smaller products, more occluders, more"
        " photographs (training/shopper.py SCENE_MIX; not in models 9)",
    )
    p.add_argument(
        "--trunk",
        default="lite0",
        choices=sorted(lite.VARIANTS),
        help="lite-classifier: the pretrained EfficientNet-Lite (lite0 served; lite1, lite2 larger)",
    )
    p.add_argument("--version", default="1")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras: 1 progress bar, 2 per epoch")
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("export", help="export a trained run to ONNX (parity gate included)")
    p.add_argument("model")
    p.add_argument("--run", type=Path, default=None)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--version", default="1")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-parity-images", type=int, default=256, help="parity gate sample size (keep 256)")
    p.set_defaults(func=cmd_export)

    p = commands.add_parser("evaluate", help="write reports/<model>/README.md and its pictures")
    p.add_argument("model_dir", type=Path, help="folder with model.onnx + model.json")
    _data_args(p)
    p.add_argument("--report", type=Path, default=None, help="report folder (default reports/<model folder>)")
    p.add_argument("--keep-metrics", action="store_true", help="do not write test metrics into model.json")
    p.add_argument(
        "--held-out",
        action="store_true",
        help="every image in --data is a test image (a labelled set of your own; styles.csv + images/): no split "
        "file, model.json left alone, report in reports/held-out/<model folder> unless --report",
    )
    p.add_argument(
        "--catalogue-data",
        type=Path,
        default=None,
        help="with --held-out, embedders: retrieval searches this training dataset's train split (--split) "
        "(default: $FASHIONSEARCH_DATA)",
    )
    p.set_defaults(func=cmd_evaluate)

    p = commands.add_parser(
        "evaluate-detector", help="mAP@0.5 per group on the composite test split, clean and under shopper shifts"
    )
    p.add_argument("model_dir", type=Path, help="folder with the detector's model.onnx + model.json")
    _data_args(p)
    p.add_argument("--photos", type=int, default=400, help="composite test photos")
    p.add_argument("--seed", type=int, default=scenes.TEST_SEED, help="the composite test split's seed")
    p.add_argument("--report", type=Path, default=data.REPO_ROOT / "reports" / "detector")
    p.add_argument(
        "--precision",
        choices=("float", "int8"),
        default="float",
        help="int8: model.int8.onnx beside model.onnx on the same photos, into int8.md (evaluation.md untouched)",
    )
    p.add_argument(
        "--flip-test",
        action="store_true",
        help="the file of --precision without and with the flip test on the same photos, each at its own served "
        "threshold, into flip-test.md (flip-test-int8.md); the other reports untouched",
    )
    p.set_defaults(func=cmd_evaluate_detector)

    p = commands.add_parser(
        "quantize-detector", help="the detector's int8 variant (model.int8.onnx), gated on validation scenes"
    )
    p.add_argument("model_dir", type=Path)
    _data_args(p)
    p.add_argument("--calibration-scenes", type=int, default=300, help="seeded training scenes for the ranges")
    p.add_argument("--choose-photos", type=int, default=200, help="validation composite scenes to choose and gate on")
    p.set_defaults(func=cmd_quantize_detector)

    p = commands.add_parser(
        "tune-detector", help="choose the detector's served score threshold on validation scenes (into model.json)"
    )
    p.add_argument("model_dir", type=Path)
    _data_args(p)
    p.add_argument("--photos", type=int, default=200, help="composite scenes of validation-split products")
    p.add_argument("--seed", type=int, default=scenes.TEST_SEED + 1)
    p.add_argument(
        "--flip-test",
        choices=("auto", "on", "off"),
        default="auto",
        help="the threshold of which mode (model.json keeps one each): with the flip test, without, or auto: the "
        "mode model.json serves",
    )
    p.add_argument("--serve", action="store_true", help="and make that mode the one model.json serves")
    p.set_defaults(func=cmd_tune_detector)

    p = commands.add_parser(
        "fit-box-verification",
        help="fit the detector's second look at its boxes with the classifier, on validation scenes (into model.json)",
    )
    p.add_argument("model_dir", type=Path)
    _data_args(p)
    p.add_argument("--classifier", type=Path, default=Path("models/classifier"), help="the served classifier")
    p.add_argument("--photos", type=int, default=300, help="composite scenes of validation-split products")
    p.add_argument("--seed", type=int, default=scenes.TEST_SEED + 1)
    p.set_defaults(func=cmd_fit_box_verification)

    p = commands.add_parser(
        "train-text", help="train the text encoder against the served image embedder's frozen vectors, and export it"
    )
    _data_args(p)
    p.add_argument("--embedder", type=Path, default=Path("models/embedder"), help="the image embedder to meet")
    p.add_argument("--out", type=Path, default=Path("models/text-embedder"))
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--limit", type=int, default=None, help="at most this many train/val products (smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--version", default="1")
    p.set_defaults(func=cmd_train_text)
    p = commands.add_parser("robustness", help="the robustness table: models on shifted test photos, side by side")
    p.add_argument("--pair", action="append", required=True, help="NAME=CLASSIFIER_DIR,EMBEDDER_DIR (repeat)")
    _data_args(p)
    p.add_argument("--images", type=int, default=1500, help="test photos in the fixed sample")
    p.add_argument(
        "--on", choices=("test", "val"), default="test", help="the split: val to choose between models, test to report"
    )
    p.add_argument(
        "--report",
        type=Path,
        default=None,
        help="default reports/robustness/README.md (test), validation.md (val); crop-auto.md, ... with --detector",
    )
    p.add_argument(
        "--detector",
        type=Path,
        default=None,
        help="read every photo as the gateway's Search does with crop=auto, through this detector (models/detector)",
    )
    p.add_argument(
        "--family",
        action="append",
        default=[],
        choices=robustness.FAMILIES,
        help="only this family of shifts, and the clean photo (repeat)",
    )
    p.set_defaults(func=cmd_robustness)

    p = commands.add_parser(
        "probe-lite", help="the lite classifier's recipe with other input sizes / frozen blocks, equal minutes each"
    )
    p.add_argument(
        "--plan",
        action="append",
        required=True,
        help="[TRUNK:]HEIGHTxWIDTH:FROZEN_BLOCKS[@MINUTES], e.g. 128x96:8 or lite1:144x108:11 (repeat; default Lite0)",
    )
    _data_args(p)
    p.add_argument("--views", type=int, default=2, help="views per training photo: the packshot and VIEWS-1 shopper")
    p.add_argument("--train-images", type=int, default=12000, help="training photos (the same random subset)")
    p.add_argument("--minutes", type=float, default=8.0, help="training minutes of a plan without @MINUTES")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--runs",
        type=Path,
        default=data.REPO_ROOT / ".cache" / "runs" / "probe-lite",
        help="one folder per plan: cached views and result.json (reused)",
    )
    p.add_argument("--report", type=Path, default=data.REPO_ROOT / "reports" / "classifier" / "probes.md")
    p.set_defaults(func=cmd_probe_lite)

    p = commands.add_parser(
        "render-reports",
        help="render reports/*/report.json and reports/robustness/*.json into Markdown again (no model or dataset)",
    )
    p.add_argument("reports", nargs="*", type=Path, help="report folders (default: every one with a report.json)")
    p.add_argument("--models", type=Path, default=data.REPO_ROOT / "models")
    p.add_argument(
        "--robustness",
        type=Path,
        action="append",
        help="robustness results (repeat; each model's section from the first holding it; default "
        "reports/robustness/README.json)",
    )
    p.set_defaults(func=cmd_render_reports)

    p = commands.add_parser(
        "quantize", help="int8 variants and the one-pass model beside the float files, with the parity gate"
    )
    _data_args(p)
    p.add_argument("--classifier", type=Path, default=Path("models/classifier"))
    p.add_argument("--embedder", type=Path, default=Path("models/embedder"))
    p.add_argument("--calibration-images", type=int, default=512, help="half packshots, half shopper views")
    p.add_argument("--choose-images", type=int, default=1000, help="validation photos to choose a plan on")
    p.add_argument(
        "--plans", type=int, nargs="*", help="only these of training.quantize.PLANS (by position; default all)"
    )
    p.add_argument("--limit", type=int, default=None, help="at most this many photos in all (smoke runs)")
    p.add_argument("--report", type=Path, default=data.REPO_ROOT / "reports" / "int8" / "README.md")
    p.set_defaults(func=cmd_quantize)

    p = commands.add_parser("install-default", help="copy a model folder to a serving default if it is absent")
    p.add_argument("source", type=Path)
    p.add_argument("target", type=Path)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_install_default)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except data.DataError as bad:
        log.error("%s", bad)
        return 2
    except ExportError as bad:
        log.error("export failed: %s", bad)
        return 3


if __name__ == "__main__":
    sys.exit(main())
