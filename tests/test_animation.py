"""serve/animation: every frame, its duration and the loop count survive a read -> upscale -> write."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from real_esrgan_tf.images import ImageError
from real_esrgan_tf.serve import animation
from real_esrgan_tf.serve.animation import Animation


def nearest2(frame):
    return frame.repeat(2, axis=0).repeat(2, axis=1)


def frames(n=4, alpha=False, seed=0, partial=True):
    """Distinct frames of few colours (so a GIF palette holds them exactly).

    partial: a half-transparent row too (GIF transparency is on/off only)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (6, 3), dtype=np.uint8)
    out = []
    for i in range(n):
        f = colours[rng.integers(0, 6, (10, 12))]
        f[i % 10, :] = colours[(i + 1) % 6]  # a moving line: no two frames equal
        if alpha:
            a = np.full((10, 12, 1), 255, np.uint8)
            a[3:7, 2 + i:6 + i] = 0  # a moving hole; inside the frame, as WEBP crops transparent borders
            a[0, :] = 128 if partial else 255
            f = np.concatenate([f, a], axis=2)
        out.append(f)
    return out


@pytest.mark.parametrize("fmt, loop, alpha", [
    ("gif", 0, False), ("gif", None, False), ("gif", 3, True),
    ("webp", 2, False), ("webp", 0, True), ("png", 0, False), ("png", 5, True),
])
def test_round_trip_upscaled_frames_durations_loop(tmp_path, fmt, loop, alpha):
    src, out = str(tmp_path / f"in.{fmt}"), str(tmp_path / f"out.{fmt}")
    durations = [100, 250, 40, 70]  # GIF stores centiseconds: multiples of 10 ms are exact
    original = frames(alpha=alpha, partial=fmt != "gif")
    animation.write_animation(src, Animation(original, durations, loop, fmt), quality=100)
    assert animation.frame_count(src) == 4
    read = animation.read_animation(src)
    assert read.durations == durations and read.loop == loop and read.format == fmt
    for got, want in zip(read.frames, original, strict=True):
        if alpha:  # fully transparent pixels may carry any colour
            assert np.array_equal(got[..., 3], want[..., 3])
            seen = want[..., 3] > 0
            assert np.array_equal(got[seen], want[seen])
        else:
            assert np.array_equal(got, want)
    big = animation.upscale_animation(read, nearest2)
    animation.write_animation(out, big, quality=100)
    again = animation.read_animation(out)
    assert again.durations == durations and again.loop == loop
    for got, want in zip(again.frames, big.frames, strict=True):
        assert got.shape == (20, 24, want.shape[2])
        seen = want[..., 3] > 0 if alpha else np.ones(got.shape[:2], bool)
        assert np.array_equal(got[seen], want[seen])


def test_still_image_is_one_frame_and_not_an_animation(tmp_path):
    path = str(tmp_path / "still.png")
    Image.fromarray(frames(1)[0]).save(path)
    assert animation.frame_count(path) == 1
    jpg = str(tmp_path / "x.jpg")
    Image.fromarray(frames(1)[0]).save(jpg)
    with pytest.raises(ImageError, match="not animations"):
        animation.read_animation(jpg)


def test_formats_without_animation_are_refused():
    with pytest.raises(ValueError, match="cannot hold an animation"):
        animation.encode_animation(Animation(frames(2), [10, 10], 0, "gif"), "jpg")


def test_corrupt_animation_names_file(tmp_path):
    path = str(tmp_path / "broken.gif")
    animation.write_animation(path, Animation(frames(), [100] * 4, 0, "gif"))
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(ImageError, match="broken.gif"):
        animation.read_animation(path)
