"""The `--face_enhance` flags of `upscale` and `video` (GFPGAN on the faces, as the official flag)."""

from __future__ import annotations

from absl import flags

from real_esrgan_tf.cli.report import UserError

FINGERPRINT_KEYS = ("face_enhance", "face_model", "face_model_path", "only_center_face")


def define_face_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_boolean("face_enhance", False, "Restore faces with GFPGAN and paste them into the upscale "
                         "(official --face_enhance; needs three weight files, downloaded on first use).",
                         flag_values=fv)
    flags.DEFINE_enum("face_model", "v1.3", ["v1.3", "v1.4"], "GFPGAN version for --face_enhance.",
                      flag_values=fv)
    flags.DEFINE_string("face_weights_dir", None, "Folder of the face weight files (GFPGANv1.3.pth, "
                        "GFPGANv1.4.pth, detection_Resnet50_Final.pth, parsing_parsenet.pth); default: "
                        "<cache>/faces.", flag_values=fv)
    flags.DEFINE_string("face_model_path", None, "The GFPGAN .pth file (default: in --face_weights_dir).",
                        flag_values=fv)
    flags.DEFINE_string("face_detector_path", None, "detection_Resnet50_Final.pth (default: in "
                        "--face_weights_dir).", flag_values=fv)
    flags.DEFINE_string("face_parser_path", None, "parsing_parsenet.pth (default: in --face_weights_dir).",
                        flag_values=fv)
    flags.DEFINE_boolean("face_download", True, "Download missing face weight files from the official "
                         "release URLs.", flag_values=fv)
    flags.DEFINE_boolean("only_center_face", False,
                         "--face_enhance: restore only the face nearest the centre.", flag_values=fv)


def with_faces(fv, upscaler):
    """`upscaler` itself, or with --face_enhance a FaceEnhancer around it (same interface)."""
    if not fv.face_enhance:
        return upscaler
    from real_esrgan_tf.faces.weights import build_face_enhancer, find_face_weights
    from real_esrgan_tf.weights.errors import WeightsError

    try:
        paths = find_face_weights(fv.face_model, restorer=fv.face_model_path, detector=fv.face_detector_path,
                                  parser=fv.face_parser_path, folder=fv.face_weights_dir,
                                  allow_download=fv.face_download)
        return build_face_enhancer(upscaler, paths, only_center_face=fv.only_center_face)
    except WeightsError as e:
        raise UserError(str(e)) from None
