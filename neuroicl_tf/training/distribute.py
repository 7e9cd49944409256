"""The ``tf.distribute`` strategy of a run, and which worker this process is."""

import json
import os

from .. import _compat
from .config import STRATEGIES, TrainConfigError

tf = _compat.import_tensorflow()

__all__ = ["build_strategy"]


def build_strategy(name="default", cpu_devices=None, gpus=None):
    """Make the ``tf.distribute`` strategy for a run.

    Args:
        name: ``"default"`` (one device), ``"mirrored"`` (all GPUs of this machine, or
            ``cpu_devices`` logical CPUs when there is no GPU) or ``"multiworker"`` (a cluster
            described by the ``TF_CONFIG`` environment variable).
        cpu_devices: split the CPU into this many logical devices (only before TensorFlow has
            initialised its devices). Lets ``mirrored`` be tested on a CPU-only machine.
        gpus: the number of GPUs the run needs; an error if fewer are present.

    Returns:
        A ``tf.distribute.Strategy``.

    Raises:
        TrainConfigError: unknown name, missing devices, or missing/invalid ``TF_CONFIG``.
    """
    if name not in STRATEGIES:
        raise TrainConfigError(f"strategy: expected one of {STRATEGIES}, got {name!r}")
    if name == "multiworker":
        _check_tf_config()
    if cpu_devices:
        _split_cpu(int(cpu_devices))
    present = tf.config.list_physical_devices("GPU")
    if gpus is not None and int(gpus) > len(present):
        raise TrainConfigError(
            f"gpus: the run needs {gpus} GPU(s) but this machine has {len(present)}"
        )
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if present:
            devices = [f"/gpu:{i}" for i in range(int(gpus) if gpus else len(present))]
        else:
            cpus = tf.config.list_logical_devices("CPU")
            devices = [d.name for d in cpus]
        return tf.distribute.MirroredStrategy(devices=devices)
    communication = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=communication)


def _check_tf_config():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise TrainConfigError(
            "strategy 'multiworker' needs the TF_CONFIG environment variable (cluster and task); "
            "see docs/training.md"
        )
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as err:
        raise TrainConfigError(f"TF_CONFIG is not a valid cluster description: {err}") from err
    if task.get("type") != "worker" or not 0 <= index < len(workers):
        raise TrainConfigError(
            f"TF_CONFIG task {task} does not name one of the {len(workers)} workers"
        )


def _split_cpu(count):
    if count < 1:
        raise TrainConfigError(f"cpu_devices: expected >= 1, got {count}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError as err:
        raise TrainConfigError(
            f"cpu_devices={count}: TensorFlow's devices are already initialised in this "
            "process; split the CPU before anything else runs"
        ) from err


def _is_chief_from_env(strategy_name):
    if strategy_name != "multiworker":
        return True
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    return int(task["index"]) == 0


def _worker_info(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 0, 1, True
    index = int(resolver.task_id)
    count = len(resolver.cluster_spec().as_dict().get("worker", [])) or 1
    return index, count, index == 0
