"""Per-image cost of `upscale --face_enhance` against the plain upscale, in one process.

The background is RealESRGAN_x4plus (the official `--face_enhance` default, random weights: speed does
not depend on them) on a --size x --size photo; the face path adds RetinaFace on the input, the crops,
GFPGANv1Clean (v1.3 architecture) and ParseNet on the 512 crops, and the paste-back. Random detector
weights find no faces, so the detector here runs its real network and then returns --faces fixed faces
(landmarks of a face in the photo). Prints ONE JSON line: medians of --repeats runs after a warm-up, for
the plain upscale, the whole face path, its parts, GFPGAN with the faces batched vs one by one, and
(unless --no_torch) the official PyTorch GFPGANv1Clean and ParseNet per face on the same CPU.

    python benchmarks/bench_face_enhance.py [--size 128] [--faces 2] [--repeats 3] [--no_torch]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import numpy as np


def timed(fn, repeats: int):
    out = fn()  # warm-up (tracing, oneDNN primitives)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def torch_times(faces: int, repeats: int) -> dict:
    """The official modules (gfpgan 1.3.8, facexlib 0.3.0) per face, as GFPGANer runs them (one by one)."""
    sys.modules.setdefault("triton", None)
    import torch

    from tests.upstream import import_upstream

    clean = import_upstream("gfpgan.archs.gfpganv1_clean_arch")
    parsenet = import_upstream("facexlib.parsing.parsenet")
    gfpgan = clean.GFPGANv1Clean(out_size=512, num_style_feat=512, channel_multiplier=2,
                                 decoder_load_path=None, fix_decoder=False, num_mlp=8, input_is_latent=True,
                                 different_w=True, narrow=1, sft_half=True).eval()
    parser = parsenet.ParseNet(in_size=512, out_size=512, parsing_ch=19).eval()
    x = torch.rand(1, 3, 512, 512) * 2 - 1
    with torch.no_grad():
        g, _ = timed(lambda: gfpgan(x, return_rgb=False), repeats)
        p, _ = timed(lambda: parser(x), repeats)
    return {"torch_threads": torch.get_num_threads(), "torch_gfpgan_s_per_face": round(g, 3),
            "torch_parsenet_s_per_face": round(p, 3), "torch_faces_s": round(faces * (g + p), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--faces", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no_torch", action="store_true")
    args = parser.parse_args()
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "size": args.size, "faces": args.faces,
              "repeats": args.repeats, "load_average": round(os.getloadavg()[0], 1)}
    if not args.no_torch:
        result.update(torch_times(args.faces, args.repeats))  # torch before TensorFlow (import order)

    from PIL import Image
    from skimage import data

    from real_esrgan_tf.faces.detection import Detections, FaceDetector
    from real_esrgan_tf.faces.restorer import FaceEnhancer, graph_function
    from real_esrgan_tf.models.gfpgan import GFPGANv1Clean
    from real_esrgan_tf.models.parsenet import ParseNet
    from real_esrgan_tf.models.retinaface import RetinaFaceResNet50
    from real_esrgan_tf.models.rrdbnet import RRDBNet
    from real_esrgan_tf.serve.upscaler import Upscaler

    photo = data.astronaut()  # 512 x 512; the face's landmarks in it, scaled to --size
    image = np.asarray(Image.fromarray(photo).resize((args.size, args.size), Image.Resampling.BICUBIC))
    points = np.array([[196, 103], [244, 99], [221, 130], [202, 155], [241, 152]], np.float32)
    points = points * np.float32(args.size / 512)
    spread = np.float32(args.size / 16)
    landmarks = np.stack([points + np.float32([i * spread, 0]) for i in range(args.faces)])
    boxes = np.concatenate([landmarks.min(1) - spread, landmarks.max(1) + spread], 1)

    class TimedDetector(FaceDetector):
        def detect(self, image_rgb, conf_threshold=0.97, nms_threshold=0.4):
            self.raw_outputs(image_rgb)  # the real network on the image
            return Detections(boxes, np.ones(args.faces, np.float32), landmarks)

    def built(model, shape):
        model(np.zeros(shape, np.float32))
        return model

    upscaler = Upscaler(built(RRDBNet(), (1, 16, 16, 3)))
    gfpgan = graph_function(built(GFPGANv1Clean(), (1, 512, 512, 3)))  # as build_face_enhancer runs them
    parsenet = graph_function(built(ParseNet(parsing_ch=19), (1, 512, 512, 3)))
    detector = TimedDetector(built(RetinaFaceResNet50(), (1, 64, 64, 3)))
    enhancer = FaceEnhancer(upscaler, gfpgan, detector, parsenet, face_batch=args.faces)
    one_by_one = FaceEnhancer(upscaler, gfpgan, detector, parsenet, face_batch=1)

    plain, background = timed(lambda: upscaler.upscale(image), args.repeats)
    whole, _ = timed(lambda: enhancer.upscale(image), args.repeats)
    face_input = enhancer.face_input(image)
    detect, faces = timed(lambda: enhancer.detect(face_input), args.repeats)
    crops = np.stack([enhancer.crop(face_input, f) for f in faces])
    restore, restored = timed(lambda: enhancer.restore_aligned(crops), args.repeats)
    restore_single, _ = timed(lambda: one_by_one.restore_aligned(crops), args.repeats)
    masks_s, masks = timed(lambda: enhancer.paste_masks(restored), args.repeats)
    paste, _ = timed(lambda: enhancer._paste(background, faces, restored, masks), args.repeats)
    result.update({
        "plain_upscale_s": round(plain, 3), "face_enhance_s": round(whole, 3),
        "face_path_extra_s": round(whole - plain, 3), "ratio": round(whole / plain, 2),
        "detect_s": round(detect, 3), "gfpgan_batched_s": round(restore, 3),
        "gfpgan_one_by_one_s": round(restore_single, 3), "parsenet_and_mask_s": round(masks_s, 3),
        "paste_s": round(paste, 3),
    })
    print(json.dumps(result))


if __name__ == "__main__":
    main()
