"""Distribution: which tf.distribute strategy, and the distributed train function.

`default` (one device), `mirrored` (all local GPUs, or logical CPUs), `multi_worker` (hosts from
TF_CONFIG), `tpu` (a TPU found by the cluster resolver). The global batch is the per-replica batch
times the number of replicas; each replica reads its own share of the shards (input_context) and
draws its own random stream (the trainer folds the replica id into every seed).
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from real_esrgan_tf.training.config import DEFAULT_HEARTBEAT_TIMEOUT_SECONDS, StrategyKind, XlaScope


class StrategyError(RuntimeError):
    """The requested strategy cannot be set up here (one line: which and why)."""


def coordination_service_config(cluster_spec: tf.train.ClusterSpec, heartbeat_timeout_seconds: float) -> dict:
    """What MultiWorkerMirroredStrategy would configure itself (a standalone coordination service on
    the leader, every chief/worker task coordinated), with our heartbeat timeout."""
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util

    jobs = [
        coordination_config_pb2.CoordinatedJob(name=job, num_tasks=cluster_spec.num_tasks(job))
        for job in ("chief", "worker")
        if job in cluster_spec.jobs
    ]
    return {
        "service_type": "standalone",
        "service_leader": multi_worker_util.coordination_leader(cluster_spec),
        "coordinated_jobs": jobs,
        "heartbeat_timeout_in_ms": int(round(heartbeat_timeout_seconds * 1000)),
    }


def make_strategy(
    kind: StrategyKind | str,
    tpu: str = "",
    heartbeat_timeout_seconds: float = DEFAULT_HEARTBEAT_TIMEOUT_SECONDS,
) -> tf.distribute.Strategy:
    kind = StrategyKind(kind)
    if kind is StrategyKind.DEFAULT:
        return tf.distribute.get_strategy()
    if kind is StrategyKind.MIRRORED:
        return tf.distribute.MirroredStrategy()
    if kind is StrategyKind.MULTI_WORKER:
        if "TF_CONFIG" not in os.environ:
            raise StrategyError("multi_worker: TF_CONFIG is not set (cluster spec and task of this host)")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as e:
            raise StrategyError(f"multi_worker: TF_CONFIG is not valid JSON ({e})") from None
        if heartbeat_timeout_seconds <= 0:
            raise StrategyError(
                f"multi_worker: heartbeat timeout must be > 0 s, got {heartbeat_timeout_seconds:g}"
            )
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        from tensorflow.python.eager import context  # no public API configures the coordination service

        # The strategy keeps a configuration made before it (it only fills in an absent one).
        config = coordination_service_config(resolver.cluster_spec(), heartbeat_timeout_seconds)
        context.context().configure_coordination_service(**config)
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise StrategyError(f"tpu: no TPU found ({str(e).splitlines()[0]})") from None
    return tf.distribute.TPUStrategy(resolver)


def resolve_xla(scope: XlaScope | str, strategy: tf.distribute.Strategy) -> XlaScope:
    """`train.xla` for this strategy and device: "auto" picks, an explicit scope is kept.

    auto: `model_step` on GPUs (any number of replicas: the compiled part is the forward/backward,
    `trainer.gradients`; the cross-replica gradient sum, the optimizers and EMA run outside it);
    `off` on CPU (XLA's CPU backend made the stage-2 update slower: 2.05 s vs 1.58 s in BUILD_NOTES)
    and under TPUStrategy (which compiles the whole step itself).
    """
    scope = XlaScope(scope)
    if scope is XlaScope.AUTO:
        tpu = isinstance(strategy, tf.distribute.TPUStrategy)
        if tpu or not tf.config.list_logical_devices("GPU"):
            return XlaScope.OFF
        return XlaScope.MODEL_STEP
    return scope


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes checkpoints, summaries and the export (always, off multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    if has_chief:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def worker_id(strategy: tf.distribute.Strategy) -> str:
    resolver = getattr(strategy, "cluster_resolver", None)
    return f"{getattr(resolver, 'task_type', 'worker')}_{getattr(resolver, 'task_id', 0)}"


def make_train_function(trainer, strategy: tf.distribute.Strategy, jit_compile: bool):
    """iterator -> metrics averaged over replicas. The per-replica step is XLA-compiled if asked."""
    step = tf.function(trainer.train_step, jit_compile=jit_compile, reduce_retracing=True)

    @tf.function
    def train_function(iterator):
        per_replica = strategy.run(step, args=(next(iterator),))
        return {k: strategy.reduce("MEAN", v, axis=None) for k, v in per_replica.items()}

    return train_function
