"""The run: :func:`train`, its checkpoints, its validation and its records."""

import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time

import numpy as np

from .. import _compat
from .._interrupt import Interrupt, StopOnSignal
from .config import DEFAULT_LR, TrainConfig, TrainConfigError, _validate
from .distribute import _check_tf_config, _is_chief_from_env, _worker_info, build_strategy
from .episodes import _episode_dataset, _subjects, _validation_sets, build_model

tf = _compat.import_tensorflow()

__all__ = ["train"]

CONFIG_NAME = "train_config.json"
SUMMARY_NAME = "summary.json"
HISTORY_NAME = "runs.jsonl"


def _prepare_out(config, resume):
    """Refuse to overwrite a run, or to resume one of another architecture."""
    ckpt_dir = os.path.join(config.out, "checkpoints")
    config_path = os.path.join(config.out, CONFIG_NAME)
    has_run = os.path.exists(config_path) or tf.train.latest_checkpoint(ckpt_dir)
    if has_run and not resume:
        raise TrainConfigError(
            f"out: {config.out!r} already holds a run; pass resume=True (--resume) to continue "
            "it, or choose a new output folder"
        )
    if resume:
        if not tf.train.latest_checkpoint(ckpt_dir) or not os.path.exists(config_path):
            raise TrainConfigError(f"resume: no checkpoint to resume in {ckpt_dir!r}")
        with open(config_path) as f:
            saved = json.load(f)
        wanted = json.loads(json.dumps(config.model_config()))
        if saved.get("model") != wanted:
            raise TrainConfigError(
                f"resume: the checkpoint in {config.out!r} is of another architecture: "
                f"saved {saved.get('model')}, requested {wanted}"
            )
    return ckpt_dir


def _task_rows(tasks):
    """``tasks`` in one comparable form: a preset name, or ``{name: {weight, loss_weight,
    params}}`` with every field filled."""
    if not isinstance(tasks, dict):
        return tasks
    rows = {}
    for name, value in sorted(tasks.items()):
        value = value if isinstance(value, dict) else {"weight": value}
        rows[name] = {"weight": float(value.get("weight", 1.0)),
                      "loss_weight": float(value.get("loss_weight", 1.0)),
                      "params": dict(value.get("params", {}))}
    return json.loads(json.dumps(rows))


def _previous_tasks(out):
    """The task table the checkpoint in ``out`` was last trained on: the last runs.jsonl line
    that records one, else train_config.json's (the first run's)."""
    tasks = None
    history = os.path.join(out, HISTORY_NAME)
    if os.path.exists(history):
        with open(history) as f:
            for line in f:
                if line.strip():
                    tasks = json.loads(line).get("tasks", tasks)
    if tasks is None:
        with open(os.path.join(out, CONFIG_NAME)) as f:
            tasks = json.load(f)["train"].get("tasks")
    return _task_rows(tasks)


def _write_json(path, payload):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# The run


def train(out, **kwargs):
    """Train an in-context model on synthetic episodes.

    The keyword names are those of ``neuroicl-train``'s flags (see :class:`TrainConfig` for
    every field and its default).

    Args:
        out: output folder: ``train_config.json``, ``checkpoints/``, ``logs/`` (TensorBoard),
            ``model.h5`` (final weights, loadable with ``ICLModel.load``), ``summary.json``.
        **kwargs: model (``"neuralizer"``/``"neuroverse3d"``; default ``init``'s family, else
            ``"neuralizer"``), ndims, shape, channels, stages,
            tasks (preset name or ``{name: weight}``), labels (NIfTI label-map folders/files),
            mni, procedural (numbers of embedded/procedural subjects), holdout, context_size,
            mini_context, batch_size, lr (default 1e-4; with ``resume``, a value replaces the
            checkpoint's rate and ``None`` keeps it), clipnorm, plateau_patience,
            plateau_factor, min_lr,
            steps, val_every, val_episodes, checkpoint_every, keep_checkpoints, resume,
            time_limit (minutes of wall time: at the first round boundary past it the run
            checkpoints, writes ``model.h5`` and returns; ``--resume`` continues it),
            augment (the model family's preset task/spatial augmentations on training episodes),
            strategy (``"default"``/``"mirrored"``/``"multiworker"``), cpu_devices, gpus, seed,
            tensorboard, progress, init (``"default-2d"``, ``"default-3d"`` or an
            ``ICLModel`` ``.h5`` file, e.g. another run's ``model.h5``: a new run starts from
            its weights with a fresh optimiser at step 0; unset architecture options are taken
            from the file, given ones must match it; ignored on ``resume``, whose checkpoint
            holds the weights).

    Returns:
        The summary dict (also written to ``summary.json``).

    Raises:
        TrainConfigError: for a configuration that cannot run, before any work is done.
        KeyboardInterrupt: after saving a checkpoint, when the run is interrupted.
    """
    resume = bool(kwargs.pop("resume", False))
    unknown = set(kwargs) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise TrainConfigError(f"unknown training option(s): {sorted(unknown)}")
    config = _validate(TrainConfig(out=str(out), **kwargs))
    if config.strategy == "multiworker":
        _check_tf_config()
    # Only the chief (worker 0) owns the output folder; others may share it on a cluster.
    ckpt_dir = os.path.join(config.out, "checkpoints")
    if _is_chief_from_env(config.strategy):
        _prepare_out(config, resume)
    strategy = build_strategy(config.strategy, config.cpu_devices, config.gpus)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise TrainConfigError(
            f"batch_size: {config.batch_size} does not split over the strategy's {replicas} "
            "replicas; use a multiple"
        )
    worker, _, chief = _worker_info(strategy)
    train_sources, val_sources = _subjects(config)
    largest = max(len(source) for source in train_sources)
    if config.context_size[1] + 1 > largest:
        raise TrainConfigError(
            f"context_size: the largest context ({config.context_size[1]} pairs) needs "
            f"{config.context_size[1] + 1} training subjects in one source (target + context); "
            f"the largest training source has {largest} after holding out {config.holdout}: "
            "lower the context size or give more subjects"
        )

    if config.lr is None and not resume:
        config.lr = DEFAULT_LR
    # Same seed, same initial weights: a resumed run restores them anyway, and two runs of one
    # configuration start alike.
    tf.keras.utils.set_random_seed(config.seed)
    # Weights to start from: read outside the strategy's scope (plain variables), assigned
    # to the run's (possibly mirrored) ones below. A resumed run takes its checkpoint's.
    initial = None
    if config.init and not resume:
        from ..models import ICLModel

        initial = ICLModel.load(config.init).get_weights()
    with strategy.scope():
        model, loss = build_model(config)
        if initial is not None:
            model.set_weights(initial)
        # Resumed without a rate (config.lr None), the checkpoint's rate overwrites this one.
        optimizer = tf.keras.optimizers.Adam(config.lr or DEFAULT_LR, clipnorm=config.clipnorm)
        model.compile(optimizer=optimizer, loss=loss)
        optimizer.build(model.trainable_variables)
        best = tf.Variable(np.inf, dtype=tf.float32, trainable=False, name="plateau_best")
        wait = tf.Variable(0, dtype=tf.int64, trainable=False, name="plateau_wait")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, best=best, wait=wait)
    # Only the chief keeps checkpoints; other workers write to a scratch folder (TF requires
    # every worker to take part in saving under MultiWorkerMirroredStrategy).
    save_dir = ckpt_dir if chief else os.path.join(config.out, f"worker-{worker}-scratch")
    manager = tf.train.CheckpointManager(checkpoint, save_dir, config.keep_checkpoints)
    if resume:
        checkpoint.restore(tf.train.latest_checkpoint(ckpt_dir)).assert_existing_objects_matched()
        restored = float(optimizer.learning_rate.numpy())
        if config.lr is not None and not np.isclose(restored, config.lr, rtol=1e-6, atol=0):
            # An explicit rate on resume replaces the checkpoint's (which may be the plateau
            # rule's); without one the run continues exactly.
            optimizer.learning_rate.assign(config.lr)
            if chief:
                print(f"lr: {config.lr:g} replaces the checkpoint's {restored:g}",
                      file=sys.stderr)
        if _previous_tasks(config.out) != _task_rows(config.tasks):
            # Another task table (e.g. other loss weights) puts the validation loss on another
            # scale: the plateau rule starts over instead of comparing with the old best.
            best.assign(np.inf)
            wait.assign(0)
            if chief:
                print("tasks differ from the checkpoint's last run: the plateau rule starts "
                      "over", file=sys.stderr)
    elif chief:
        os.makedirs(config.out, exist_ok=True)
        _write_json(os.path.join(config.out, CONFIG_NAME),
                    {"model": config.model_config(), "train": dataclasses.asdict(config)})

    step = int(optimizer.iterations.numpy())
    start_step, started = step, time.perf_counter()
    start_lr = float(optimizer.learning_rate.numpy())
    fit_seconds, history, stopped = 0.0, [], None
    # From here on an interrupt (Ctrl-C, or SIGTERM from a scheduler) leaves a checkpoint.
    interrupt = Interrupt()
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signals reach only that one
        previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        writer = None
        if config.tensorboard and chief:
            writer = tf.summary.create_file_writer(os.path.join(config.out, "logs"))
        val_sets = _validation_sets(val_sources, config)
        fit_kwargs = {"mini_context": config.mini_context} if config.mini_context else {}
        progbar = tf.keras.utils.Progbar(config.steps, verbose=1 if config.progress else 0,
                                         unit_name="step")
        while step < config.steps:
            interrupt.check()
            boundary = min(
                _next_multiple(step, config.checkpoint_every),
                _next_multiple(step, config.val_every),
                config.steps,
            )
            dataset = _episode_dataset(train_sources, config, step, boundary, worker)
            tick = time.perf_counter()
            logs = model.fit(dataset, steps_per_epoch=boundary - step, epochs=1, verbose=0,
                             callbacks=[StopOnSignal(interrupt)], **fit_kwargs).history
            fit_seconds += time.perf_counter() - tick
            interrupt.check()
            step = int(optimizer.iterations.numpy())
            train_loss = float(logs["loss"][-1])
            record = {"step": step, "loss": train_loss,
                      "lr": float(optimizer.learning_rate.numpy())}
            if step % config.val_every == 0 or step >= config.steps:
                scores = _validate_model(model, val_sets, config)
                record.update(scores)
                _plateau(optimizer, best, wait, scores["val_loss"], config)
            if step % config.checkpoint_every == 0 or step >= config.steps:
                manager.save(checkpoint_number=step)
            history.append(record)
            _log(writer, record)
            progbar.update(step, [("loss", train_loss)])
            elapsed = time.perf_counter() - started
            if config.time_limit and step < config.steps and elapsed >= 60 * config.time_limit:
                if step % config.checkpoint_every:
                    manager.save(checkpoint_number=step)
                stopped = f"time limit ({config.time_limit:g} min) reached at step {step}"
                break
    except KeyboardInterrupt:
        step = int(optimizer.iterations.numpy())
        path = manager.save(checkpoint_number=step)
        print(f"\nInterrupted at step {step}; checkpoint saved to {path}. "
              "Continue with --resume.", file=sys.stderr)
        if chief:  # the run's record, so that a recipe's history has no hole
            done = step - start_step
            _append_run(config, start_step, start_lr, {
                "steps": step, "steps_this_run": done,
                "wall_seconds": round(time.perf_counter() - started, 1),
                "steps_per_second": round(done / fit_seconds, 4) if fit_seconds else None,
                "replicas": replicas, "stopped": f"interrupted at step {step}",
                "final": history[-1] if history else None, "checkpoint": path,
            })
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    wall = time.perf_counter() - started
    done = step - start_step
    summary = {
        "steps": step,
        "steps_this_run": done,
        "wall_seconds": round(wall, 1),
        "steps_per_second": round(done / fit_seconds, 4) if fit_seconds else None,
        "replicas": replicas,
        "stopped": stopped or "finished",
        "final": history[-1] if history else None,
        "validation": _validate_model(model, val_sets, config) if not history else {
            k: v for k, v in history[-1].items() if k.startswith("val")
        },
        "checkpoint": manager.latest_checkpoint,
    }
    if chief:
        model_path = os.path.join(config.out, "model.h5")
        model.save(model_path)
        summary["model"] = model_path
        _write_json(os.path.join(config.out, SUMMARY_NAME), summary)
        _append_run(config, start_step, start_lr, summary)
    return summary


def _append_run(config, start_step, start_lr, summary):
    """One line per run (a first run, each --resume, and an interrupted run), so a recipe spread
    over several runs keeps its wall time, step counts, and the rate and task table each run
    started with (a --lr or --tasks given with --resume shows here; train_config.json keeps the
    first run's)."""
    with open(os.path.join(config.out, HISTORY_NAME), "a") as f:
        f.write(json.dumps({"target_steps": config.steps, "time_limit": config.time_limit,
                            "start_step": start_step, "start_lr": start_lr,
                            "tasks": _task_rows(config.tasks), **summary}, default=str) + "\n")


def _next_multiple(step, every):
    return (step // every + 1) * every


def _plateau(optimizer, best, wait, val_loss, config):
    """Halve the learning rate after ``plateau_patience`` validations without improvement."""
    if not math.isfinite(val_loss):
        return
    if val_loss < float(best.numpy()):
        best.assign(val_loss)
        wait.assign(0)
        return
    wait.assign_add(1)
    if int(wait.numpy()) >= config.plateau_patience:
        lr = max(float(optimizer.learning_rate.numpy()) * config.plateau_factor, config.min_lr)
        optimizer.learning_rate.assign(lr)
        wait.assign(0)


def _validate_model(model, val_sets, config):
    """Validation loss and, per task, Dice (segmentation-like) or PSNR (image tasks)."""
    from .. import metrics

    scores, losses = {}, []
    predict_kwargs = {"mini_context": config.mini_context} if config.mini_context else {}
    for name, batches in val_sets.items():
        values = []
        for batch in batches:
            inputs, y_true = batch[0], batch[1]
            weight = batch[2] if len(batch) > 2 else None
            # A direct call, not predict(): predict would split a one-episode batch over the
            # replicas of a distribution strategy and hand some of them an empty batch.
            y_pred = model(inputs, training=False, **predict_kwargs).numpy()
            losses.append(float(tf.reduce_mean(
                model.loss.per_sample(y_true, y_pred, inputs["task_kind"])
            )) * (float(np.mean(weight)) if weight is not None else 1.0))
            if int(np.asarray(inputs["task_kind"])[0]) == 0:
                values.append(float(np.mean(metrics.dice(y_true, y_pred))))
            else:
                values.append(float(np.mean(metrics.psnr(y_true, np.clip(y_pred, 0, 1)))))
        metric = "dice" if int(np.asarray(batches[0][0]["task_kind"])[0]) == 0 else "psnr"
        scores[f"val_{metric}/{name}"] = round(float(np.mean(values)), 4)
    scores["val_loss"] = float(np.mean(losses)) if losses else float("nan")
    return scores


def _log(writer, record):
    if writer is None:
        return
    with writer.as_default(step=record["step"]):
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                tf.summary.scalar(key, value)
    writer.flush()
