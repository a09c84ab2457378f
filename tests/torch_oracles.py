"""The official (PyTorch) computations that tests and benchmarks compare against, in one place.

Each oracle is written here from the official source it names (BasicSR 1.4.2, Real-ESRGAN 0.3.0,
torchvision), in PyTorch, NCHW, and is used only to check our TensorFlow code: tests import it as
`tests.torch_oracles`, benchmarks via `benchmarks/_oracles.py`. Importing this module imports torch.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F


def to_nchw(x: np.ndarray) -> torch.Tensor:
    """NHWC numpy -> NCHW torch (contiguous copy)."""
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def to_nhwc(t: torch.Tensor) -> np.ndarray:
    """NCHW torch -> NHWC numpy."""
    return t.detach().permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------------------------------------
# Degradations (basicsr/utils/img_process_util.py, basicsr/utils/diffjpeg.py)


def filter2d(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """BasicSR `filter2D`: reflect-pad by k // 2, then one grouped conv with a kernel per sample.

    Args:
        x: [B, C, H, W]; kernels: [B, k, k] (odd k).
    Returns:
        [B, C, H, W].
    """
    k = kernels.shape[-1]
    b, c, h, w = x.shape
    t = F.pad(x, (k // 2,) * 4, mode="reflect")
    ph, pw = t.shape[-2:]
    weight = kernels.view(b, 1, k, k).repeat(1, c, 1, 1).view(b * c, 1, k, k)
    return F.conv2d(t.view(1, b * c, ph, pw), weight, groups=b * c).view(b, c, h, w)


def usm_sharp(img: torch.Tensor, kernel: torch.Tensor, weight: float = 0.5,
              threshold: float = 10) -> torch.Tensor:
    """BasicSR `USMSharp.forward` with its 2-D Gaussian `kernel` [k, k] (img [B, C, H, W] in [0, 1])."""
    kernels = kernel[None].repeat(img.shape[0], 1, 1)
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
