"""Data: `prepare` (image folders -> TFRecord shards) and the tf.data input functions.

Modules in flow order: `records` (schema, shard names, checksums), `plan` (which crops of which
files go to which shard), `crops` (decode, resize, crop, encode: worker side), `parallel` (ordered
worker processes), `prepare` (shards + manifest, resumable), `shards` (checked reading of shards),
`dataset` (tf.data input functions).
Imported lazily so `prepare`'s worker processes start without TensorFlow.
"""

from real_esrgan_tf._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "make_train_dataset": "real_esrgan_tf.data.dataset",
        "make_paired_dataset": "real_esrgan_tf.data.dataset",
        "make_record_dataset": "real_esrgan_tf.data.dataset",
        "DataError": "real_esrgan_tf.data.shards",
        "PrepareConfig": "real_esrgan_tf.data.plan",
        "PrepareError": "real_esrgan_tf.data.plan",
        "prepare": "real_esrgan_tf.data.prepare",
    },
)
