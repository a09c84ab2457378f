"""Data: `prepare` (image folders -> TFRecord shards) and the tf.data input functions.

Imported lazily so `prepare`'s worker processes start without TensorFlow.
"""

_LAZY = {
    "make_train_dataset": "real_esrgan_tf.data.dataset",
    "make_paired_dataset": "real_esrgan_tf.data.dataset",
    "make_record_dataset": "real_esrgan_tf.data.dataset",
    "DataError": "real_esrgan_tf.data.dataset",
    "PrepareConfig": "real_esrgan_tf.data.prepare",
    "prepare": "real_esrgan_tf.data.prepare",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'real_esrgan_tf.data' has no attribute {name!r}")
