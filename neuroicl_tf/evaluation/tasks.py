"""The evaluation tasks: fixed, named versions of the generator tasks.

Training draws random label groups and random task parameters; an evaluation needs tasks with a
fixed meaning, so that a score at L = 4 and a score at L = 8 measure the same thing. Each row of
:data:`EVAL_TASKS` names a generator task (:mod:`generators.tasks`) and its parameters. The
segmentation rows use FreeSurfer label numbers, left and right together.

This table is also copied (names only) into ``scripts/evaluate.py``, which checks task names
before TensorFlow is imported; ``tests/test_evaluation_cli.py`` keeps the two equal.
"""

import dataclasses

__all__ = ["EVAL_TASKS", "DEFAULT_TASKS", "EvalTask", "get_eval_task"]

KIND_SEGMENTATION, KIND_IMAGE = 0, 1


@dataclasses.dataclass(frozen=True)
class EvalTask:
    """One evaluation task.

    Attributes:
        name: the name used on the command line and in the reports.
        task: the registered generator task (``generators.TASKS``).
        params: its constructor arguments (the contrast is added by :meth:`build`).
        kind: 0 segmentation-like (scored with Dice), 1 image (scored with PSNR).
        labels: label numbers a subject must contain for the task to make sense.
        note: what the task is.
    """

    name: str
    task: str
    params: dict
    kind: int
    labels: tuple = ()
    note: str = ""

    @property
    def metric(self):
        """``"dice"`` or ``"psnr"``."""
        return "dice" if self.kind == KIND_SEGMENTATION else "psnr"

    def build(self, real=False):
        """The generator task instance.

        Args:
            real: the subjects carry a real scan (``images["real"]``), which is then the input
                image instead of the synthetic contrast ``"a"``.

        Returns:
            A :class:`generators.Task`.
        """
        from generators import get_task

        params = dict(self.params)
        if self.task == "skull_stripping":
            params["p_real"] = 1.0 if real else 0.0
        else:
            params["contrast"] = "real" if real else "a"
        task = get_task(self.task, **params)
        if int(task.kind) != self.kind:
            raise ValueError(f"evaluation task {self.name!r}: generator task {self.task!r} has "
                             f"kind {task.kind}, the table says {self.kind}")
        return task


def _segmentation(name, labels, note):
    return EvalTask(name, "segmentation", {"labels": list(labels)}, KIND_SEGMENTATION,
                    tuple(labels), note)


EVAL_TASKS = {
    task.name: task
    for task in (
        _segmentation("seg_hippocampus", (17, 53), "hippocampus, left + right (17, 53)"),
        _segmentation("seg_thalamus", (10, 49), "thalamus, left + right (10, 49)"),
        _segmentation("seg_lateral_ventricles", (4, 43), "lateral ventricles (4, 43)"),
        _segmentation("seg_putamen", (12, 51), "putamen, left + right (12, 51)"),
        _segmentation("seg_caudate", (11, 50), "caudate, left + right (11, 50)"),
        EvalTask("brain_mask", "skull_stripping", {"output": "mask"}, KIND_SEGMENTATION, (),
                 "skull stripping as a brain mask (Dice)"),
        EvalTask("skull_stripping", "skull_stripping", {"output": "image"}, KIND_IMAGE, (),
                 "skull stripping as the brain-masked image (PSNR)"),
        EvalTask("denoising", "denoising_gaussian", {}, KIND_IMAGE, (),
                 "Gaussian noise, SD 0.15-0.25, removed (PSNR)"),
        EvalTask("bias_correction", "bias_correction", {}, KIND_IMAGE, (),
                 "smooth multiplicative bias field removed (PSNR)"),
        EvalTask("inpainting", "inpainting", {}, KIND_IMAGE, (),
                 "Perlin-noise holes filled in (PSNR)"),
    )
}

DEFAULT_TASKS = tuple(EVAL_TASKS)


def get_eval_task(name):
    """The :class:`EvalTask` called ``name``.

    Raises:
        ValueError: naming the unknown task and the known ones.
    """
    if name not in EVAL_TASKS:
        raise ValueError(f"unknown evaluation task {name!r}; known tasks: {', '.join(EVAL_TASKS)}")
    return EVAL_TASKS[name]
