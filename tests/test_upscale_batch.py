"""Upscaler.upscale_batch: N frames through one tile plan and one backend call per tile, same pixels
as `upscale` frame by frame (what the video command relies on)."""

import numpy as np
import pytest

from real_esrgan_tf.models import RRDBNet, SRVGGNetCompact
from real_esrgan_tf.serve.keras_backend import KerasSuperResolver
from real_esrgan_tf.serve.upscaler import Upscaler
from tests.test_inference import FixedSizeBackend, local_model


def frames(photos, n=3, size=(30, 38), dtype=np.uint8):
    """n different crops of one photograph (a panning camera)."""
    h, w = size
    crops = np.stack([photos["astronaut"][7 * i:7 * i + h, 11 * i:11 * i + w] for i in range(n)])
    return crops.astype(np.uint16) * 257 if dtype == np.uint16 else crops


def compact(scale=4, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    return SRVGGNetCompact(num_conv=3, num_feat=8, upscale=scale)


@pytest.mark.parametrize("options", [
    {}, {"tile": 16, "tile_pad": 4}, {"pre_pad": 3}, {"outscale": 2.5}, {"tta": True},
    {"tile": 12, "tta": True},
])
def test_batch_equals_frame_by_frame(options, photos):
    up = Upscaler(compact(), **options)
    batch = frames(photos)
    got = up.upscale_batch(batch)
    want = np.stack([up.upscale(f) for f in batch])
    assert got.shape == want.shape == (3, *up.output_size(30, 38), 3) and got.dtype == np.uint8
    assert np.array_equal(got, want)


def test_batch_16bit_and_rrdbnet_tail_strips(photos):
    import keras

    keras.utils.set_random_seed(1)
    net = RRDBNet(num_block=1, num_feat=8, num_grow_ch=4, scale=2)
    up = Upscaler(net)
    up.backend.tail_activation_bytes = 4 * 1024  # force the tail to run in row strips
    batch = frames(photos, dtype=np.uint16)
    got = up.upscale_batch(batch)
    want = np.stack([up.upscale(f) for f in batch])
    assert got.dtype == np.uint16
    assert np.array_equal(got, want)


def test_keras_backend_sees_the_whole_batch_once_per_tile(photos, monkeypatch):
    shapes = []
    original = KerasSuperResolver.__call__

    def recording(self, lr):
        shapes.append(lr.shape)
        return original(self, lr)

    monkeypatch.setattr(KerasSuperResolver, "__call__", recording)
    up = Upscaler(compact(), tile=16, tile_pad=2)
    up.upscale_batch(frames(photos, n=5))
    assert len(shapes) == 6  # 2 x 3 tiles of a 32 x 40 (mod-padded) frame, all 5 frames per call
    assert {s[0] for s in shapes} == {5}


def test_fixed_input_backend_runs_frames_one_by_one(photos):
    backend = FixedSizeBackend(local_model(scale=2), (20, 20))
    up = Upscaler(backend, tile_pad=2)
    batch = frames(photos)
    got = up.upscale_batch(batch)
    assert {s[0] for s in backend.shapes} == {1}
    assert np.array_equal(got, np.stack([up.upscale(f) for f in batch]))


@pytest.mark.parametrize("bad", [np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 4, 4), np.uint8),
                                 np.zeros((0, 4, 4, 3), np.uint8), np.zeros((1, 4, 4, 3), np.float32)])
def test_batch_rejects_other_arrays(bad):
    with pytest.raises(ValueError):
        Upscaler(compact()).upscale_batch(bad)
