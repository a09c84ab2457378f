"""`python -m real_esrgan_tf.cli COMMAND ...`, the same as the `real-esrgan-tf` script."""

from real_esrgan_tf.cli.main import console_main

console_main()
