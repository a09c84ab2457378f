"""Training: U-Net SN discriminator + losses + the Real-ESRGAN train_step, distribution, checkpoints.

Entry points: `config.load_pipeline`, `loop.build_run` / `loop.train`, `trainer.RealESRGANTrainer`.
"""
