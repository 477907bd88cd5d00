"""What the detector's flip test costs per 600x800 photo: each of the detector's files without and with it, all
alternating in one run (training/detector_compare.py: rounds in which every contender is timed in turn; the
fastest round is the least disturbed on a shared machine, the median beside it).

"photo" is what the detector service does with a decoded photo: preprocess, the model run (the photo, or the photo
and its mirror image), decode at the served threshold (fashionsearch.detection.run_detector); "model" the model
run alone. The photo is the first of the composite test split (training/scenes.py, 600x800, test-split products).

    python bench/detector_flip_test.py [--detector models/detector] [--threads 1] [--rounds 7] [--cache DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from fashionsearch.model_contract import MODEL_FILE, ModelSpec  # noqa: E402
from training import data, detector_compare, scenes  # noqa: E402
from training.inference import onnx_session  # noqa: E402
from training.quantize import int8_file  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detector", type=Path, default=REPO_ROOT / "models" / "detector")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads (the service's default is 1)")
    parser.add_argument("--rounds", type=int, default=detector_compare.ROUNDS, help="rounds, each timing every way")
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default: $FASHIONSEARCH_DATA)")
    parser.add_argument("--cache", type=Path, default=None, help="decoded-image cache (default: .cache/training)")
    args = parser.parse_args(argv)

    dataset = data.load_dataset(args.data, args.cache)
    split = data.get_split(dataset, data.DEFAULT_SPLIT_FILE)
    [photo] = scenes.composite_test_split(dataset, split, 1, scenes.TEST_SEED)
    spec = ModelSpec.load(args.detector)
    files = [f for f in (MODEL_FILE, int8_file(MODEL_FILE)) if (args.detector / f).is_file()]
    ways = [(file, flip) for file in files for flip in detector_compare.FLIP_MODES.values()]
    sessions = {file: onnx_session(args.detector / file, threads=args.threads) for file in files}
    contenders = {
        f"{file} {flip}": detector_compare.timed_parts(sessions[file], spec, photo.image, flip) for file, flip in ways
    }
    times = detector_compare.alternating_ms(contenders, args.rounds)

    print(
        f"{spec.identity}, one {photo.image.shape[1]}x{photo.image.shape[0]} photo at batch 1, {args.threads} "
        f"onnxruntime thread(s); ms, fastest of {args.rounds} rounds of {detector_compare.RUNS} "
        "(median in brackets)\n"
    )
    print("| file | flip test | photo: preprocess, model, decode | model alone | photo, flip test / without |")
    print("| --- | --- | ---: | ---: | ---: |")
    for file, flip in ways:
        photo_ms, model_ms = times[f"{file} {flip}"]["photo"], times[f"{file} {flip}"]["model"]
        base = times[f"{file} False"]["photo"]["fastest"]
        print(
            f"| {file} | {'on' if flip else 'off'} | {photo_ms['fastest']:.1f} ({photo_ms['median']:.1f}) | "
            f"{model_ms['fastest']:.1f} ({model_ms['median']:.1f}) | {photo_ms['fastest'] / base:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
