"""The `real-esrgan-tf` dispatcher: every sub-command loads, shows its own flags and rejects bad ones."""

import pytest

from real_esrgan_tf import cli


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_help_lists_the_commands_own_flags(name, capsys):
    assert cli.main(["real-esrgan-tf", name, "--help"]) == 0
    out = capsys.readouterr().out
    module = cli.COMMANDS[name][0]
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
