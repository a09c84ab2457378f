"""Speed of the face detector and parser against facexlib 0.3.0 (PyTorch CPU), in one process.

Prints ONE JSON line: median seconds of `FaceDetector.detect` vs facexlib `RetinaFace.detect_faces`
on a photo (scikit-image's astronaut, 512x512, as `get_face_landmarks_5` calls it), and of
`FaceParser.logits` vs facexlib `ParseNet` on a batch of 512x512 faces (as
`paste_faces_to_input_image` feeds them, one per call; ours batches). Both sides run the same
random weights in the official layout (the weights do not change the cost). Needs the `test` extra.

    python benchmarks/bench_faces.py [--runs 3] [--faces 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.modules.setdefault("triton", None)  # segfaults when imported after TensorFlow (see BUILD_NOTES)

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _median_time(fn, runs: int) -> float:
    fn()  # warm-up (tracing, allocator)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--faces", type=int, default=2, help="faces parsed per image")
    args = parser.parse_args()

    from skimage import data

    from tests.upstream import import_upstream

    retinaface = import_upstream("facexlib.detection.retinaface")
    parsenet = import_upstream("facexlib.parsing.parsenet")
    from real_esrgan_tf.faces.detection import FaceDetector
    from real_esrgan_tf.faces.parsing import FaceParser, parsing_input

    photo = data.astronaut()
    bgr = np.ascontiguousarray(photo[:, :, ::-1])
    torch.manual_seed(0)
    detector_torch = retinaface.RetinaFace(network_name="resnet50", half=False, device="cpu")
    parser_torch = parsenet.ParseNet(in_size=512, out_size=512, parsing_ch=19)
    # Batch norms calibrated on the photo, so the untrained detector's outputs stay finite and only
    # a few dozen anchors pass 0.97 (as around a real face), not thousands of overflowing boxes.
    x = torch.from_numpy(
        (bgr.astype(np.float32) - np.float32([104, 117, 123])).transpose(2, 0, 1)[None].copy()
    )
    for net, net_input in (
        (detector_torch, x),
        (parser_torch, torch.from_numpy(x.numpy()[:, :, 160:288, 180:308] / 128)),
    ):
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None
                module.reset_running_stats()
        net.train()
        with torch.no_grad():
            net(net_input)
        net.eval()
    with tempfile.TemporaryDirectory() as folder:
        det_path, parse_path = os.path.join(folder, "det.pth"), os.path.join(folder, "parse.pth")
        torch.save(detector_torch.state_dict(), det_path)
        torch.save(parser_torch.state_dict(), parse_path)
        detector, face_parser = FaceDetector.from_file(det_path), FaceParser.from_file(parse_path)

    faces = np.stack([photo] * args.faces)
    faces_torch = torch.from_numpy(parsing_input(faces).transpose(0, 3, 1, 2).copy())

    def facexlib_detect():
        with torch.no_grad():
            detector_torch.detect_faces(bgr, 0.97)

    def facexlib_parse():  # the helper parses one face per call
        with torch.no_grad():
            for i in range(args.faces):
                parser_torch(faces_torch[i : i + 1])

    result = {
        "benchmark": "faces",
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "runs": args.runs,
        "detect_image": list(photo.shape[:2]),
        "faces_found": len(detector.detect(photo)),
        "detect_s": round(_median_time(lambda: detector.detect(photo), args.runs), 3),
        "facexlib_detect_s": round(_median_time(facexlib_detect, args.runs), 3),
        "parse_faces": args.faces,
        "parse_s": round(_median_time(lambda: face_parser.logits(faces), args.runs), 3),
        "facexlib_parse_s": round(_median_time(facexlib_parse, args.runs), 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
