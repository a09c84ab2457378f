"""The official (PyTorch) computations that tests and benchmarks compare against, in one place.

Each oracle is written here from the official source it names (BasicSR 1.4.2, Real-ESRGAN 0.3.0,
torchvision), in PyTorch, NCHW, and is used only to check or time our TensorFlow code: tests and
benchmarks (which put the checkout on sys.path) import it as `tests.torch_oracles`. Importing this
module imports torch (a test-only dependency): tests that can run without torch import it lazily.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def to_nchw(x: np.ndarray) -> torch.Tensor:
    """NHWC numpy -> NCHW torch (contiguous copy)."""
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def to_nhwc(t: torch.Tensor) -> np.ndarray:
    """NCHW torch -> NHWC numpy."""
    return t.detach().permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------------------------------------
# Degradations (basicsr/utils/img_process_util.py, basicsr/utils/diffjpeg.py)


def filter2d(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """BasicSR `filter2D`: reflect-pad by k // 2, then a conv with a kernel per sample (grouped conv),
    or, for a single kernel [1, k, k], one conv over the B * C planes.

    Args:
        x: [B, C, H, W]; kernels: [B, k, k] or [1, k, k] (odd k).
    Returns:
        [B, C, H, W].
    """
    k = kernels.shape[-1]
    b, c, h, w = x.shape
    t = F.pad(x, (k // 2,) * 4, mode="reflect")
    ph, pw = t.shape[-2:]
    if kernels.shape[0] == 1:
        return F.conv2d(t.reshape(b * c, 1, ph, pw), kernels.view(1, 1, k, k)).reshape(b, c, h, w)
    weight = kernels.view(b, 1, k, k).repeat(1, c, 1, 1).view(b * c, 1, k, k)
    return F.conv2d(t.reshape(1, b * c, ph, pw), weight, groups=b * c).reshape(b, c, h, w)


def usm_sharp(img: torch.Tensor, kernel: torch.Tensor, weight: float = 0.5,
              threshold: float = 10) -> torch.Tensor:
    """BasicSR `USMSharp.forward` with its 2-D Gaussian `kernel` [k, k] (img [B, C, H, W] in [0, 1])."""
    kernels = kernel[None]
    residual = img - filter2d(img, kernels)
    mask = (torch.abs(residual) * 255 > threshold).float()
    soft_mask = filter2d(mask, kernels)
    sharp = torch.clip(img + weight * residual, 0, 1)
    return soft_mask * sharp + (1 - soft_mask) * img


# JPEG tables as BasicSR's diffjpeg.py builds them (ITU T.81 Annex K, luma table transposed).
_JPEG_Y_TABLE = torch.tensor(np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], np.float32).T.copy())
_c_table = np.full((8, 8), 99, np.float32)
_c_table[:4, :4] = np.array([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]).T
_JPEG_C_TABLE = torch.from_numpy(_c_table)
# RGB2YCbCrJpeg / YCbCr2RGBJpeg matrices, transposed as there (used with tensordot on NHWC).
_JPEG_RGB_TO_YCBCR = torch.from_numpy(np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32).T.copy())
_JPEG_YCBCR_TO_RGB = torch.from_numpy(np.array(
    [[1.0, 0.0, 1.402], [1, -0.344136, -0.714136], [1, 1.772, 0]], np.float32).T.copy())


def _jpeg_quality_to_factor(quality: float) -> float:
    """diffjpeg.quality_to_factor: q < 50 -> 5000 / q, else 200 - 2 q; divided by 100."""
    quality = 5000.0 / quality if quality < 50 else 200.0 - quality * 2
    return quality / 100.0


def _dct_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """DCT8x8 (tensor[x, y, u, v], scale) and iDCT8x8 (alpha, tensor) of diffjpeg.py, float32."""
    dct = np.zeros((8, 8, 8, 8), np.float32)
    idct = np.zeros((8, 8, 8, 8), np.float32)
    for x, y, u, v in itertools.product(range(8), repeat=4):
        dct[x, y, u, v] = np.cos((2 * x + 1) * u * np.pi / 16) * np.cos((2 * y + 1) * v * np.pi / 16)
        idct[x, y, u, v] = np.cos((2 * u + 1) * x * np.pi / 16) * np.cos((2 * v + 1) * y * np.pi / 16)
    alpha = np.array([1.0 / np.sqrt(2)] + [1] * 7)
    scale = torch.from_numpy(np.outer(alpha, alpha) * 0.25).float()
    return torch.from_numpy(dct).float(), scale, torch.from_numpy(np.outer(alpha, alpha)).float(), \
        torch.from_numpy(idct).float()


_DCT, _DCT_SCALE, _IDCT_ALPHA, _IDCT = _dct_tensors()


def diff_jpeg(x: torch.Tensor, quality) -> torch.Tensor:
    """BasicSR 1.4.2 `DiffJPEG(differentiable=False)(x, quality)` (basicsr/utils/diffjpeg.py).

    Zero-pad to multiples of 16; x 255; RGB -> YCbCr (tensordot with the transposed matrix, + (0, 128,
    128)); Cb, Cr by 2x2 average pooling; 8x8 block split; DCT as a tensordot with the 4-D cosine
    tensor times outer(alpha, alpha) / 4; divide by table x factor (per sample), `torch.round`, multiply
    back; iDCT; block merge; chroma repeated 2x2 (`repeat` + `view`); YCbCr -> RGB; clamp to [0, 255];
    / 255; crop. The quality is converted per sample (BasicSR writes into the caller's tensor: here a
    copy).

    Args:
        x: [B, 3, H, W] float32 RGB in [0, 1]; quality: a number or a [B] tensor.
    Returns:
        [B, 3, H, W].
    """
    if isinstance(quality, (int, float)):
        factor = _jpeg_quality_to_factor(quality)
    else:
        factor = quality.clone().float()
        for i in range(factor.size(0)):
            factor[i] = _jpeg_quality_to_factor(factor[i])
    h, w = x.shape[-2:]
    h_pad, w_pad = -h % 16, -w % 16
    x = F.pad(x, (0, w_pad, 0, h_pad), mode="constant", value=0)

    def table(base):
        if isinstance(factor, float):
            return base * factor
        b = factor.size(0)
        return base.expand(b, 1, 8, 8) * factor.view(b, 1, 1, 1)

    def split(plane):  # BlockSplitting: [B, H, W] -> [B, H*W/64, 8, 8]
        b, height = plane.shape[:2]
        blocks = plane.view(b, height // 8, 8, -1, 8).permute(0, 1, 3, 2, 4)
        return blocks.contiguous().view(b, -1, 8, 8)

    def merge(blocks, height, width):  # BlockMerging
        b = blocks.shape[0]
        image = blocks.view(b, height // 8, width // 8, 8, 8).permute(0, 1, 3, 2, 4)
        return image.contiguous().view(b, height, width)

    def upsample(plane):  # ChromaUpsampling.repeat
        height, width = plane.shape[1:3]
        return plane.unsqueeze(-1).repeat(1, 1, 2, 2).view(-1, height * 2, width * 2)

    image = (x * 255).permute(0, 2, 3, 1)
    ycbcr = torch.tensordot(image, _JPEG_RGB_TO_YCBCR, dims=1) + torch.tensor([0.0, 128.0, 128.0])
    ycbcr = ycbcr.view(image.shape)
    chroma = ycbcr.permute(0, 3, 1, 2).clone()
    planes = {
        "y": ycbcr[:, :, :, 0],
        "cb": F.avg_pool2d(chroma[:, 1:2], kernel_size=2, stride=(2, 2), count_include_pad=False)[:, 0],
        "cr": F.avg_pool2d(chroma[:, 2:3], kernel_size=2, stride=(2, 2), count_include_pad=False)[:, 0],
    }
    height, width = h + h_pad, w + w_pad
    for name, plane in planes.items():
        base = _JPEG_Y_TABLE if name == "y" else _JPEG_C_TABLE
        coef = _DCT_SCALE * torch.tensordot(split(plane) - 128, _DCT, dims=2)
        coef = torch.round(coef.float() / table(base))
        coef = coef * table(base)
        pixels = 0.25 * torch.tensordot(coef * _IDCT_ALPHA, _IDCT, dims=2) + 128
        planes[name] = merge(pixels, *((height, width) if name == "y" else (height // 2, width // 2)))
    ycbcr = torch.cat([planes["y"].unsqueeze(3), upsample(planes["cb"]).unsqueeze(3),
                       upsample(planes["cr"]).unsqueeze(3)], dim=3)
    rgb = torch.tensordot(ycbcr + torch.tensor([0, -128.0, -128.0]), _JPEG_YCBCR_TO_RGB, dims=1)
    rgb = rgb.view(ycbcr.shape).permute(0, 3, 1, 2)
    rgb = torch.min(255 * torch.ones_like(rgb), torch.max(torch.zeros_like(rgb), rgb)) / 255
    return rgb[:, :, 0:h, 0:w]


# ---------------------------------------------------------------------------------------------
# Generators with the official state-dict keys (basicsr/archs/rrdbnet_arch.py,
# realesrgan/archs/srvgg_arch.py), as functions of a state dict


def random_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Random weights of PyTorch's default scale; PReLU slopes (1-D `.weight`) around 0.25."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        u = torch.rand(shape, generator=g) * 2 - 1
        if len(shape) == 4:
            state[key] = u / np.sqrt(np.prod(shape[1:]))
        elif key.endswith(".weight"):
            state[key] = 0.25 + 0.1 * u
        else:
            state[key] = 0.1 * u
    return state


def rrdbnet_state(scale: int, num_feat: int, num_block: int, grow: int, seed: int) -> dict[str, torch.Tensor]:
    """Random RRDBNet weights under the official keys (pixel-unshuffled input below x4)."""
    in_ch = 3 * (4 // scale) ** 2
    shapes = {"conv_first.weight": (num_feat, in_ch, 3, 3), "conv_first.bias": (num_feat,)}
    for b in range(num_block):
        for r in range(1, 4):
            for k in range(1, 6):
                out = grow if k < 5 else num_feat
                shapes[f"body.{b}.rdb{r}.conv{k}.weight"] = (out, num_feat + (k - 1) * grow, 3, 3)
                shapes[f"body.{b}.rdb{r}.conv{k}.bias"] = (out,)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (num_feat, num_feat, 3, 3), (num_feat,)
    shapes["conv_last.weight"], shapes["conv_last.bias"] = (3, num_feat, 3, 3), (3,)
    return random_state(shapes, seed)


def rrdbnet(sd: dict[str, torch.Tensor], x: torch.Tensor, scale: int, num_block: int) -> torch.Tensor:
    """BasicSR `RRDBNet.forward` (RDB: 5 dense convs, x0.2 residual; RRDB: 3 RDBs, x0.2 residual;
    nearest x2 twice; pixel-unshuffle by 4 / scale first for x2, x1)."""

    def conv(name, t):
        return F.conv2d(t, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=1)

    def lrelu(t):
        return F.leaky_relu(t, 0.2)

    if scale < 4:
        x = F.pixel_unshuffle(x, 4 // scale)
    feat = conv("conv_first", x)
    body = feat
    for b in range(num_block):
        rrdb_in = body
        for r in range(1, 4):
            dense = [body]
            for k in range(1, 5):
                dense.append(lrelu(conv(f"body.{b}.rdb{r}.conv{k}", torch.cat(dense, 1))))
            body = conv(f"body.{b}.rdb{r}.conv5", torch.cat(dense, 1)) * 0.2 + dense[0]
        body = body * 0.2 + rrdb_in
    feat = feat + conv("conv_body", body)
    feat = lrelu(conv("conv_up1", F.interpolate(feat, scale_factor=2, mode="nearest")))
    feat = lrelu(conv("conv_up2", F.interpolate(feat, scale_factor=2, mode="nearest")))
    return conv("conv_last", lrelu(conv("conv_hr", feat)))


def srvgg_state(num_feat: int, num_conv: int, upscale: int, seed: int,
                prelu: bool = True) -> dict[str, torch.Tensor]:
    """Official SRVGGNetCompact keys; act 'relu' / 'leakyrelu' (prelu=False) have no activation weights."""
    shapes = {"body.0.weight": (num_feat, 3, 3, 3), "body.0.bias": (num_feat,), "body.1.weight": (num_feat,)}
    for i in range(num_conv):
        shapes[f"body.{2 * i + 2}.weight"] = (num_feat, num_feat, 3, 3)
        shapes[f"body.{2 * i + 2}.bias"] = (num_feat,)
        shapes[f"body.{2 * i + 3}.weight"] = (num_feat,)
    last = 2 * num_conv + 2
    out_ch = 3 * upscale**2
    shapes[f"body.{last}.weight"], shapes[f"body.{last}.bias"] = (out_ch, num_feat, 3, 3), (out_ch,)
    if not prelu:
        shapes = {k: v for k, v in shapes.items() if len(v) != 1 or k.endswith(".bias")}
    return random_state(shapes, seed)


def srvgg(sd: dict[str, torch.Tensor], x: torch.Tensor, num_conv: int, upscale: int,
          act: str = "prelu") -> torch.Tensor:
    """Official SRVGGNetCompact.forward: PReLU(num_feat), ReLU, or LeakyReLU(negative_slope=0.1)."""
    out = x
    for i in range(num_conv + 1):
        out = F.conv2d(out, sd[f"body.{2 * i}.weight"], sd[f"body.{2 * i}.bias"], padding=1)
        if act == "prelu":
            out = F.prelu(out, sd[f"body.{2 * i + 1}.weight"])
        else:
            out = F.relu(out) if act == "relu" else F.leaky_relu(out, 0.1)
    last = 2 * num_conv + 2
    out = F.conv2d(out, sd[f"body.{last}.weight"], sd[f"body.{last}.bias"], padding=1)
    return F.pixel_shuffle(out, upscale) + F.interpolate(x, scale_factor=upscale, mode="nearest")


class StateDictNet(nn.Module):
    """A trainable module over a state dict and one of the forward functions above (benchmarks).

    Parameter names are the state-dict keys with '.' -> '/' (torch forbids dots in names).
    """

    def __init__(self, state: dict[str, torch.Tensor], forward, **kwargs):
        super().__init__()
        self.params = nn.ParameterDict(
            {k.replace(".", "/"): nn.Parameter(v.clone()) for k, v in state.items()})
        self._forward, self._kwargs = forward, kwargs

    def forward(self, x):
        return self._forward({k.replace("/", "."): v for k, v in self.params.items()}, x, **self._kwargs)


# ---------------------------------------------------------------------------------------------
# Discriminator (realesrgan/archs/discriminator_arch.py UNetDiscriminatorSN, skip_connection=True)


class UNetDiscriminatorSN(nn.Module):
    """The official U-Net discriminator with spectral norm on conv1..conv8 (spectral_norm=False: plain
    convs, the paper's ablation)."""

    def __init__(self, num_feat: int = 64, num_in_ch: int = 3, spectral_norm: bool = True):
        super().__init__()
        sn = nn.utils.spectral_norm if spectral_norm else (lambda conv: conv)
        c, nf = nn.Conv2d, num_feat
        self.conv0 = c(num_in_ch, nf, 3, 1, 1)
        self.conv1 = sn(c(nf, nf * 2, 4, 2, 1, bias=False))
        self.conv2 = sn(c(nf * 2, nf * 4, 4, 2, 1, bias=False))
        self.conv3 = sn(c(nf * 4, nf * 8, 4, 2, 1, bias=False))
        self.conv4 = sn(c(nf * 8, nf * 4, 3, 1, 1, bias=False))
        self.conv5 = sn(c(nf * 4, nf * 2, 3, 1, 1, bias=False))
        self.conv6 = sn(c(nf * 2, nf, 3, 1, 1, bias=False))
        self.conv7 = sn(c(nf, nf, 3, 1, 1, bias=False))
        self.conv8 = sn(c(nf, nf, 3, 1, 1, bias=False))
        self.conv9 = c(nf, 1, 3, 1, 1)

    def forward(self, x):
        def a(t):
            return F.leaky_relu(t, 0.2)

        def up(t):
            return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

        x0 = a(self.conv0(x))
        x1 = a(self.conv1(x0))
        x2 = a(self.conv2(x1))
        x3 = a(self.conv3(x2))
        x4 = a(self.conv4(up(x3))) + x2
        x5 = a(self.conv5(up(x4))) + x1
        x6 = a(self.conv6(up(x5))) + x0
        return self.conv9(a(self.conv8(a(self.conv7(x6)))))


# ---------------------------------------------------------------------------------------------
# Perceptual loss network (torchvision vgg19().features; BasicSR VGGFeatureExtractor, pre-ReLU)

VGG19_BLOCKS = (2, 2, 4, 4, 4)  # convs per block; widths 64, 128, 256, 512, 512
_VGG19_WIDTHS = (64, 128, 256, 512, 512)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg19_features() -> nn.Sequential:
    """torchvision's `vgg19().features` layout (conv, ReLU, ..., MaxPool), default-initialised."""
    layers, cin = [], 3
    for convs, filters in zip(VGG19_BLOCKS, _VGG19_WIDTHS, strict=True):
        for _ in range(convs):
            layers += [nn.Conv2d(cin, filters, 3, 1, 1), nn.ReLU()]
            cin = filters
        layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers)


def vgg19_pre_relu_features(net: nn.Sequential, x: torch.Tensor, last: str | None = None) -> dict:
    """{'conv1_1': ..., 'conv5_4': ...}: each conv's output before its ReLU (BasicSR's `relu` removed
    layers), stopping after the conv named `last` (BasicSR truncates after the last wanted layer)."""
    names = iter(f"conv{b}_{c}" for b, n in enumerate(VGG19_BLOCKS, 1) for c in range(1, n + 1))
    out = {}
    for layer in net:
        x = layer(x)
        if isinstance(layer, nn.Conv2d):
            name = next(names)
            out[name] = x
            if name == last:
                break
    return out


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """BasicSR VGGFeatureExtractor(use_input_norm=True): (x - mean) / std, RGB in [0, 1]."""
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


# ---------------------------------------------------------------------------------------------
# Learning-rate schedule (basicsr/models/base_model.py update_learning_rate + MultiStepLR)


def basicsr_learning_rates(base_lr: float, milestones, gamma: float, iterations: int) -> list[float]:
    """BasicSR's loop: `update_learning_rate(current_iter)` (MultiStepLR stepped when current_iter > 1)
    before `optimize_parameters`, current_iter = 1, 2, ...: the LR iteration k runs at."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base_lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), gamma)
    rates = []
    for current_iter in range(1, iterations + 1):
        if current_iter > 1:
            with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": no step here
                warnings.simplefilter("ignore", UserWarning)
                scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    return rates
