"""`real-esrgan-tf upscale` on animated GIF / WEBP / APNG: every frame upscaled, timing and loop kept."""

import os

import numpy as np

from real_esrgan_tf.cli.main import main
from real_esrgan_tf.images import read_image
from real_esrgan_tf.serve import animation
from real_esrgan_tf.serve.animation import Animation
from tests.test_animation import frames
from tests.test_cli_upscale import model_file, up2  # noqa: F401 (a fixture)
from tests.test_video import psnr
from tests.video_clips import pattern

DURATIONS = [100, 250, 40, 70]


def smooth(n=4):
    """Frames a lossy codec keeps well (the palette-exact `frames` are per-pixel noise)."""
    return [pattern(3 * i, 10, 12) for i in range(n)]


def test_animations_stay_animated(model_file, tmp_path, capsys):  # noqa: F811
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    plain, transparent = frames(), frames(alpha=True)
    animation.write_animation(str(folder / "loop.gif"), Animation(plain, DURATIONS, 0, "gif"))
    webp = Animation(smooth(), DURATIONS, 3, "webp")
    animation.write_animation(str(folder / "thrice.webp"), webp, quality=100)
    animation.write_animation(str(folder / "alpha.png"), Animation(transparent, DURATIONS, 2, "png"))
    assert main(["real-esrgan-tf", "upscale", "--input", str(folder), "--output", str(out),
                 "--model", model_file]) == 0
    assert "warning" not in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["alpha_out.png", "loop_out.gif", "thrice_out.webp"]
    for name, source, loop in [("loop_out.gif", plain, 0), ("thrice_out.webp", smooth(), 3),
                               ("alpha_out.png", transparent, 2)]:
        result = animation.read_animation(str(out / name))
        assert result.durations == DURATIONS and result.loop == loop, name
        assert len(result.frames) == 4
        for got, want in zip(result.frames, source, strict=True):
            if name.endswith(".webp"):  # written lossy (quality 95)
                assert psnr(up2(want), got) >= 30, name
            else:
                np.testing.assert_array_equal(got, up2(want))


def test_still_format_gets_the_first_frame_with_a_warning(model_file, tmp_path, capsys):  # noqa: F811
    src = tmp_path / "loop.webp"
    plain = smooth()
    animation.write_animation(str(src), Animation(plain, DURATIONS, 0, "webp"), quality=100)
    out = tmp_path / "out"
    assert main(["real-esrgan-tf", "upscale", "--input", str(src), "--output", str(out), "--ext", "jpg",
                 "--model", model_file]) == 0
    assert "4 frames (animated); only the first is written" in capsys.readouterr().err
    (name,) = os.listdir(out)  # PNG: Pillow decodes WEBP as RGBA, and RGBA is never written as JPEG
    first = read_image(str(out / name)).pixels
    assert first.shape[:2] == (20, 24) and psnr(up2(plain[0]), first[..., :3]) >= 30
