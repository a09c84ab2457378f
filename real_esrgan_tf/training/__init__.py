"""Training: the Real-ESRGAN train_step (G, U-Net SN D, losses, EMA), distribution, checkpoints.

Modules: `config` (typed pipeline files; no TensorFlow import), `losses`, `trainer`
(`RealESRGANTrainer`), `schedules`, `build` (`build_run`: models, weights, optimizers, data),
`loop` (`train`), `checkpoints`, `monitoring`, `strategy`.
"""
