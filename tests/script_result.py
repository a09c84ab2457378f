"""Run a Python script in a fresh interpreter and read the JSON it prints after "RESULT ".

For tests that need a process of their own (logical CPU devices must be configured before
TensorFlow initialises). The script runs from the repository root with TensorFlow's logs quiet.
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script: str, timeout: float) -> dict:
    """The last `RESULT {json}` line of `python -c script`; fails the test with its stderr otherwise."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])
