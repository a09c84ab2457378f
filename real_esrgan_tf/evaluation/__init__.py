"""Evaluation: BasicSR-exact PSNR/SSIM/NIQE (`metrics`, `niqe`), MATLAB bicubic (`matlab_resize`),
scoring an upscaler on (LQ, GT) pairs (`evaluate`, behind `real-esrgan-tf evaluate`) and a
deterministic degraded validation set (`validation_set`).

`niqe_pris_params.npz` (NIQE's pristine model) comes from BasicSR 1.4.2 (Apache-2.0), converted
there from the NIQE authors' MATLAB release. The numpy-only modules are imported here (the function
`evaluate` must shadow its module's name); the validation-set helpers, which need TensorFlow, on
first use.
"""

from real_esrgan_tf._lazy import lazy_exports
from real_esrgan_tf.evaluation.evaluate import (
    EvaluationResult,
    ImagePair,
    ImageScores,
    PairPaths,
    Upscaling,
    evaluate,
    iter_folder_pairs,
    iter_lq_folder,
    iter_pair_paths,
    iter_shard_pairs,
    load_pair,
    match_gt,
    pair_folders,
    read_rgb,
    score_pair,
)
from real_esrgan_tf.evaluation.matlab_resize import bicubic_upscale, imresize
from real_esrgan_tf.evaluation.metrics import EvaluationError, calculate_psnr, calculate_ssim, rgb_to_y
from real_esrgan_tf.evaluation.niqe import calculate_niqe

__getattr__, _lazy_dir, _lazy_all = lazy_exports(
    __name__,
    {
        name: "real_esrgan_tf.evaluation.validation_set"
        for name in ("degraded_validation_pairs", "degrade_one", "image_seed", "write_validation_set")
    },
)

__all__ = [
    "EvaluationError",
    "EvaluationResult",
    "ImagePair",
    "ImageScores",
    "PairPaths",
    "Upscaling",
    "bicubic_upscale",
    "calculate_niqe",
    "calculate_psnr",
    "calculate_ssim",
    "evaluate",
    "imresize",
    "iter_folder_pairs",
    "iter_lq_folder",
    "iter_pair_paths",
    "iter_shard_pairs",
    "load_pair",
    "match_gt",
    "pair_folders",
    "read_rgb",
    "rgb_to_y",
    "score_pair",
    *_lazy_all,
]


def __dir__() -> list[str]:
    return sorted(__all__)
