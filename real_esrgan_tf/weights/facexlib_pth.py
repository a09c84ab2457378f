"""facexlib's official `.pth` files -> our Keras face detector and face parser, without torch.

- `detection_Resnet50_Final.pth` (facexlib `init_detection_model("retinaface_resnet50")`): a bare
  state dict whose keys may carry DataParallel's `module.` prefix (facexlib strips it; so do we).
- `parsing_parsenet.pth` (`init_parsing_model("parsenet")`): a bare state dict.

Our layers are named after the official state-dict prefixes, so each layer reads `<name>.weight`,
`<name>.bias` (convs) or `<name>.weight/bias/running_mean/running_var` (batch norms; the
`num_batches_tracked` counters are training state and are skipped). Every key must be used and
every shape must match, else a one-line `WeightsError` names the file and the key. Layouts
(names, shapes, counts): BUILD_NOTES "Face detection and parsing weights".
"""

from __future__ import annotations

import keras
import numpy as np

from real_esrgan_tf.weights.errors import WeightsError
from real_esrgan_tf.weights.torch_pth import read_state_dict

_BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def fill_from_state_dict(model: keras.Model, state: dict[str, np.ndarray], what: str) -> None:
    """Set every weighted Conv2D / BatchNormalization / PReLU of `model` from `state` by layer name.

    Raises:
        WeightsError: a key is missing, a shape differs, or a key is left over.
    """
    unused = set(state)
    for layer in model.layers:
        if not layer.weights:
            continue
        name = layer.name
        if isinstance(layer, keras.layers.Conv2D):
            names = [f"{name}.weight"] + ([f"{name}.bias"] if layer.use_bias else [])
        elif isinstance(layer, keras.layers.BatchNormalization):
            names = [f"{name}.{key}" for key in _BN_KEYS]
            unused.discard(f"{name}.num_batches_tracked")
        else:
            raise WeightsError(f"{what}: no rule for layer {name} ({type(layer).__name__})")
        missing = [n for n in names if n not in state]
        if missing:
            raise WeightsError(f"{what}: state dict lacks {', '.join(missing[:3])}")
        arrays = [state[n] for n in names]
        if isinstance(layer, keras.layers.Conv2D):
            if arrays[0].ndim != 4:
                raise WeightsError(f"{what}: {names[0]} has shape {arrays[0].shape}, expected 4 dimensions")
            arrays[0] = arrays[0].transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(a.shape) for a in arrays]
        if got != expected:
            raise WeightsError(f"{what}: {name} has shapes {got}, the model needs {expected}")
        layer.set_weights(arrays)
        unused.difference_update(names)
    if unused:
        raise WeightsError(
            f"{what}: {len(unused)} state dict keys not used by {model.name}: {', '.join(sorted(unused)[:4])}"
        )


def _state(path: str, what: str | None, required: str, model_desc: str) -> dict[str, np.ndarray]:
    what = what or path
    state = read_state_dict(path, what, keys=())
    if required not in state:
        sample = ", ".join(sorted(state)[:3])
        raise WeightsError(f"{what}: not a {model_desc} state dict (no {required!r}; keys {sample}, ...)")
    return state


def load_retinaface(path: str, what: str | None = None) -> keras.Model:
    """`RetinaFaceResNet50` with the weights of facexlib's `detection_Resnet50_Final.pth`.

    Raises:
        WeightsError: unreadable file, or not the ResNet-50 RetinaFace layout (e.g. the
            mobilenet0.25 detector, whose body is `body.stage1.*`).
    """
    from real_esrgan_tf.models.retinaface import RetinaFaceResNet50

    state = _state(path, what, "body.layer4.2.conv3.weight", "RetinaFace ResNet-50")
    model = RetinaFaceResNet50()
    fill_from_state_dict(model, state, what or path)
    return model


def load_parsenet(path: str, what: str | None = None, with_image: bool = False) -> keras.Model:
    """`ParseNet` (in/out 512, 19 classes) with the weights of facexlib's `parsing_parsenet.pth`.

    `with_image=True` also builds the unused image head (`out_img_conv`) so its weights are loaded and
    the model returns `(mask_logits, image)`; otherwise those two keys are checked and skipped.

    Raises:
        WeightsError: unreadable file, or not the ParseNet layout (e.g. facexlib's BiSeNet parser).
    """
    from real_esrgan_tf.models.parsenet import ParseNet

    state = _state(path, what, "out_mask_conv.conv2d.weight", "ParseNet")
    parsing_ch = state["out_mask_conv.conv2d.weight"].shape[0]
    model = ParseNet(parsing_ch=parsing_ch, with_image=with_image)
    if not with_image:
        image_head = {k: v for k, v in state.items() if k.startswith("out_img_conv.")}
        shapes = {k: v.shape for k, v in image_head.items()}
        head_ch = model.get_layer("out_mask_conv.conv2d").kernel.shape[2]
        if shapes != {"out_img_conv.conv2d.weight": (3, head_ch, 3, 3), "out_img_conv.conv2d.bias": (3,)}:
            raise WeightsError(
                f"{what or path}: out_img_conv has shapes {shapes}, expected a 3x3 conv to RGB"
            )
        state = {k: v for k, v in state.items() if k not in image_head}
    fill_from_state_dict(model, state, what or path)
    return model
