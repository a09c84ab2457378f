"""The `real-esrgan-tf` dispatcher: every sub-command loads, shows its own flags and rejects bad ones."""

import os
import subprocess
import sys

import pytest

from real_esrgan_tf.cli import main as cli


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_help_lists_the_commands_own_flags(name, capsys):
    assert cli.main(["real-esrgan-tf", name, "--help"]) == 0
    out = capsys.readouterr().out
    module = cli.COMMANDS[name][0].__name__
    assert f"{module}:" in out  # the flags defined by the sub-command's module are listed
    assert "verbose: Log at debug level" in out


def test_usage_and_unknown_command(capsys):
    assert cli.main(["real-esrgan-tf", "--help"]) == 0
    usage = capsys.readouterr().out
    assert all(f"  {name} " in usage for name in cli.COMMANDS)
    assert cli.main(["real-esrgan-tf"]) == 2
    assert cli.main(["real-esrgan-tf", "upscal"]) == 2
    assert "unknown command 'upscal'" in capsys.readouterr().err


def test_unknown_flag_is_a_usage_error(capsys):
    assert cli.main(["real-esrgan-tf", "upscale", "--no_such_flag=1"]) == 2
    assert "no_such_flag" in capsys.readouterr().err


@pytest.mark.slow
def test_console_output_is_the_error_line_only_and_verbose_shows_tensorflow_logs(tmp_path):
    """A fresh process: TF's start-up log lines are hidden, the one-line error and exit code are not."""
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    command = [sys.executable, "-c", "from real_esrgan_tf.cli import console_main; console_main()", "upscale",
               "--input", str(bad), "--output", str(tmp_path / "out"), "--model", "realesr-animevideov3"]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 1
    lines = [line for line in quiet.stderr.splitlines() if line.strip()]
    assert lines[0] == f"real-esrgan-tf upscale: error: {bad}: not an image file (unrecognised format)", lines
    assert len(lines) == 2 and "upscaled 0 of 1 images" in lines[1], lines  # the summary log line
    verbose = subprocess.run(command + ["--verbose"], capture_output=True, text=True, env=env, timeout=300)
    assert verbose.returncode == 1 and len(verbose.stderr.splitlines()) > len(lines)


def test_help_is_fast_and_imports_no_tensorflow():
    """`real-esrgan-tf --help` and each command's --help run without importing TensorFlow."""
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from real_esrgan_tf.cli.main import main\n"
        "assert main(['real-esrgan-tf', '--help']) == 0\n"
        "for name in ('prepare', 'degrade', 'train', 'export', 'upscale', 'client'):\n"
        "    assert main(['real-esrgan-tf', name, '--help']) == 0\n"
        "print('SECONDS', time.perf_counter() - t)\n"
        "print('TF', 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line.startswith(("SECONDS", "TF")))
    assert lines["TF"] == "False False"
    assert float(lines["SECONDS"]) < 2.0


def test_training_config_loads_without_tensorflow():
    code = (
        "import sys\n"
        "from real_esrgan_tf.training.config import load_pipeline\n"
        "config = load_pipeline('realesrgan_x4plus')\n"
        "assert config.train.scale == 4\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "False"]
