"""The whole `--face_enhance` chain against the official one: gfpgan 1.3.8 `GFPGANer.enhance` with
realesrgan 0.3.0 `RealESRGANer` as its background upsampler (what `inference_realesrgan.py --face_enhance`
runs) vs `real-esrgan-tf upscale --face_enhance`, all networks with random weights written as official
`.pth` files and read by our torch-free loaders: a small SRVGGNetCompact x4, GFPGANv1Clean (v1.3 layout),
RetinaFace ResNet-50 and ParseNet.

The image: two faces (a crop of scikit-image's astronaut and a smaller mirrored copy) on a flat ground.
With random weights the detector finds no face, so, in the saved file (both sides alike): batch norms
calibrated on the image (one train-mode pass), a face-like landmark layout in the landmark head's bias
(eyes ~32 px apart at the 64 px anchors) and the "face" bias of the stride-16 head raised until two faces
pass 0.97 and the eye-distance filter. GFPGAN's noise strengths are zero as initialised (GFPGANer draws
fresh noise per call). facexlib's model downloads are replaced by the same files' modules.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from tests.upstream import calibrate_batch_norms, import_upstream  # noqa: E402 (after the torch guard)

pytestmark = pytest.mark.slow


def _two_faces() -> np.ndarray:
    from PIL import Image

    data = pytest.importorskip("skimage.data")
    face = data.astronaut()[20:177, 140:283]

    def resized(a, size):
        return np.asarray(Image.fromarray(np.ascontiguousarray(a)).resize(size, Image.Resampling.BICUBIC))

    image = np.full((96, 176, 3), 90, np.uint8)
    image[8:88, 8:80] = resized(face, (72, 80))
    image[14:86, 100:164] = resized(face[:, ::-1], (64, 72))
    return image


def _bgr_input(image):
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    centred = bgr.astype(np.float32) - np.float32([104, 117, 123])
    return torch.from_numpy(centred.transpose(2, 0, 1)[None].copy())


def _detector(image, path):
    """RetinaFace with weights that find two faces in `image` (see the module docstring)."""
    retinaface = import_upstream("facexlib.detection.retinaface")
    torch.manual_seed(0)
    net = retinaface.RetinaFace(network_name="resnet50", half=False, device="cpu")
    x = _bgr_input(image)
    h, w = image.shape[:2]
    level0 = math.ceil(h / 8) * math.ceil(w / 8) * 2
    level1 = math.ceil(h / 16) * math.ceil(w / 16) * 2
    layout = torch.tensor([-2.5, -1.5, 2.5, -1.5, 0.0, 0.5, -2.0, 2.5, 2.0, 2.5])  # x0.1 anchor size
    with torch.no_grad():
        calibrate_batch_norms(net, x)
        net.LandmarkHead[1].conv1x1.bias[:10] += layout
        net.LandmarkHead[1].conv1x1.bias[10:] += layout
        _, conf, _ = net(x)
        p = conf[0].double()
        logit = (p[:, 1].log() - p[:, 0].log())[level0:level0 + level1][0::2]  # stride 16, anchor 0
        ranked = torch.sort(logit, descending=True).values
        for k in range(2, 12):
            bias = math.log(0.97 / 0.03) - float(ranked[k - 1] + ranked[k]) / 2
            net.ClassHead[1].conv1x1.bias[1] += bias
            found = net.detect_faces(np.ascontiguousarray(image[:, :, ::-1]), 0.97)
            eyes = np.hypot(found[:, 5] - found[:, 7], found[:, 6] - found[:, 8])
            if (eyes >= 5).sum() >= 2:
                break
            net.ClassHead[1].conv1x1.bias[1] -= bias
    torch.save(net.state_dict(), path)
    return net


def _parser(path):
    parsenet = import_upstream("facexlib.parsing.parsenet")
    torch.manual_seed(1)
    net = parsenet.ParseNet(in_size=512, out_size=512, parsing_ch=19).eval()
    torch.save(net.state_dict(), path)
    return net


def _gfpgan(path):
    clean = import_upstream("gfpgan.archs.gfpganv1_clean_arch")
    torch.manual_seed(2)
    net = clean.GFPGANv1Clean(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
                              fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1,
                              sft_half=True)
    with torch.no_grad():  # livelier than the zero init (noise strengths stay 0: noise is drawn per call)
        for name, value in net.named_parameters():
            if name.endswith(".bias"):
                value.uniform_(-0.1, 0.1)
    torch.save({"params_ema": net.state_dict()}, path)


def _background(path):
    from tests.torch_oracles import srvgg_state

    torch.save({"params_ema": srvgg_state(num_feat=16, num_conv=2, upscale=4, seed=3)}, path)
    srvgg_arch = import_upstream("realesrgan.archs.srvgg_arch")
    utils = import_upstream("realesrgan.utils")
    net = srvgg_arch.SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=2, upscale=4,
                                     act_type="prelu")
    return utils.RealESRGANer(scale=4, model_path=str(path), model=net, tile=0, tile_pad=10, pre_pad=0,
                              half=False, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faces")
    image = _two_faces()
    paths = {name: folder / name for name in ("GFPGANv1.3.pth", "detection_Resnet50_Final.pth",
                                              "parsing_parsenet.pth", "srvgg_x4.pth")}
    detector = _detector(image, paths["detection_Resnet50_Final.pth"])
    parser = _parser(paths["parsing_parsenet.pth"])
    _gfpgan(paths["GFPGANv1.3.pth"])
    background = _background(paths["srvgg_x4.pth"])
    helper_module = import_upstream("facexlib.utils.face_restoration_helper")
    gfpgan_utils = import_upstream("gfpgan.utils")
    patch = pytest.MonkeyPatch()
    patch.setattr(helper_module, "init_detection_model", lambda *a, **k: detector)
    patch.setattr(helper_module, "init_parsing_model", lambda *a, **k: parser)
    # as inference_realesrgan.py: GFPGANer(upscale=outscale, arch='clean', channel_multiplier=2, bg_upsampler)
    try:
        enhancer = gfpgan_utils.GFPGANer(model_path=str(paths["GFPGANv1.3.pth"]), upscale=4, arch="clean",
                                         channel_multiplier=2, bg_upsampler=background,
                                         device=torch.device("cpu"))
    finally:
        patch.undo()
    return {"image": image, "paths": paths, "enhancer": enhancer, "background": background, "folder": folder}


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return np.inf if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _cli(chain, image, name, faces=True):
    from real_esrgan_tf.cli.main import main
    from real_esrgan_tf.images import encode_image, read_image

    folder = chain["folder"]
    source = folder / f"{name}.png"
    source.write_bytes(encode_image(image, "png"))
    paths = chain["paths"]
    args = ["real-esrgan-tf", "upscale", "--input", str(source), "--output", str(folder / "out"),
            "--model", str(paths["srvgg_x4.pth"]), "--suffix", "faces" if faces else "plain"]
    if faces:
        args += ["--face_enhance", "--face_model_path", str(paths["GFPGANv1.3.pth"]),
                 "--face_detector_path", str(paths["detection_Resnet50_Final.pth"]),
                 "--face_parser_path", str(paths["parsing_parsenet.pth"]), "--noface_download"]
    assert main(args) == 0
    return read_image(str(folder / "out" / f"{name}_{'faces' if faces else 'plain'}.png")).pixels


def test_face_enhance_equals_gfpganer_with_realesrganer(chain):
    image = chain["image"]
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    with torch.no_grad():
        _, restored, expected = chain["enhancer"].enhance(bgr, has_aligned=False, only_center_face=False,
                                                          paste_back=True)
    expected = expected[:, :, ::-1]
    assert len(restored) == 2
    ours = _cli(chain, image, "two_faces")
    plain = _cli(chain, image, "two_faces", faces=False)
    official_plain = chain["background"].enhance(bgr, outscale=4)[0][:, :, ::-1]
    assert ours.shape == expected.shape == (384, 704, 3)
    print(f"face chain: {_psnr(ours, expected):.2f} dB vs GFPGANer; background alone "
          f"{_psnr(plain, official_plain):.2f} dB; faces changed the upscale by {_psnr(ours, plain):.2f} dB")
    assert _psnr(plain, official_plain) > 45
    assert _psnr(ours, plain) < 30  # the faces were restored and pasted on both sides
    assert _psnr(ours, expected) >= 40


def test_no_face_is_the_plain_upscale(chain):
    flat = np.full((40, 56, 3), 90, np.uint8)
    flat[10:30, 20:40] = [140, 120, 100]
    detector = chain["enhancer"].face_helper.face_det
    with torch.no_grad():
        assert len(detector.detect_faces(np.ascontiguousarray(flat[:, :, ::-1]), 0.97)) == 0
    np.testing.assert_array_equal(_cli(chain, flat, "flat"), _cli(chain, flat, "flat", faces=False))
