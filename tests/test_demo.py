"""neuroicl-demo, the README's main command: it runs on the shipped default-2d weights and the
embedded MNI152-derived subjects, and writes what it says it wrote."""

import json
import os

import nibabel as nib
import numpy as np
import pytest

from neuroicl_tf.demo import run_demo


def test_demo_runs_the_default_model_on_held_out_subjects(tmp_path):
    summary = run_demo(out=str(tmp_path), model="default-2d", context=2, draws=1)
    assert summary["model"].endswith(os.path.join("weights", "default-2d.h5"))
    assert summary["episodes"] == 4 and len(summary["targets"]) == 4
    for value in summary["dice_mean"].values():
        assert 0.0 <= value <= 1.0
    assert json.load(open(tmp_path / "summary.json")) == summary
    assert os.path.getsize(summary["outputs"]["montage"]) > 1000
    mask = np.asarray(nib.load(summary["outputs"]["prediction"]).dataobj)
    assert mask.shape == (96, 96) and set(np.unique(mask)) <= {0, 1}


def test_demo_refuses_an_image_task_and_a_3d_model(tmp_path):
    with pytest.raises(ValueError, match="image task"):
        run_demo(out=str(tmp_path / "a"), task="denoising")
    with pytest.raises(ValueError, match="runs a 2D model"):
        run_demo(out=str(tmp_path / "b"), model="default-3d")
