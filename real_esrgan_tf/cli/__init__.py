"""Every command line of real-esrgan-tf: flags, argument checks, printing and exit codes live here only."""


def console_main() -> None:
    """Entry point of the `real-esrgan-tf` console script."""
    from real_esrgan_tf.cli.main import console_main as main

    main()
