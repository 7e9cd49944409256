"""Tests of ``neuroicl-synth`` (scripts/synth.py)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from scripts import synth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("argv, message", [
    (["-o", "montage.jpg"], "must end in .png"),
    (["-o", "/no/such/folder/m.png"], "does not exist"),
    (["-o", "m.png", "--ndims", "4"], "--ndims"),
    (["-o", "m.png", "--size", "8"], "--size"),
    (["-o", "m.png", "--subjects", "2"], "--subjects"),
    (["-o", "m.png", "--labels", "/no/such/dir"], "no such folder"),
    (["-o", "m.png", "--labels", "EMPTY"], "needs at least 3"),
    (["-o", "m.png", "--tasks", "segmentation,teleportation"], "teleportation"),
    (["-o", "m.png", "--labels", "x", "--mni"], "not allowed"),
    (["--bogus"], "required"),
])
def test_bad_arguments_exit_1_with_one_error_line(argv, message, tmp_path, capsys):
    argv = [str(tmp_path / a) if a in ("m.png", "montage.jpg") else a for a in argv]
    argv = [str(tmp_path) if a == "EMPTY" else a for a in argv]
    code = synth.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("Error: ") and message in err[0]
    assert not list(tmp_path.glob("*.png"))


def test_no_arguments_prints_help(capsys):
    assert synth.main([]) == 0
    assert "neuroicl-synth" in capsys.readouterr().out


def test_arguments_are_checked_before_tensorflow_is_imported(tmp_path):
    code = (
        "import sys\n"
        "from scripts import synth\n"
        f"rc = synth.main(['-o', {str(tmp_path / 'm.png')!r}, '--size', '4'])\n"
        "print(rc, 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split() == ["1", "False"], out.stderr


def test_tiny_montage(tmp_path, capsys):
    import matplotlib.image

    out = tmp_path / "montage.png"
    code = synth.main(["-o", str(out), "--size", "32", "--subjects", "3",
                       "--tasks", "segmentation,kspace_undersampling", "--dpi", "40"])
    assert code == 0
    assert "(2 rows)" in capsys.readouterr().out
    image = matplotlib.image.imread(str(out))
    assert image.ndim == 3 and image.shape[1] > image.shape[0]  # 2 rows of 6 panels
    assert np.std(image[..., :3]) > 0.05  # not a blank figure
    assert sorted(p.name for p in tmp_path.iterdir()) == ["montage.png"]  # no temporary files


def test_collect_rows_panels_show_the_task(tmp_path):
    args = synth.validate(synth.build_parser().parse_args(
        ["-o", str(tmp_path / "m.png"), "--ndims", "3", "--size3d", "16", "--subjects", "3",
         "--tasks", "slices_to_volume"]))
    rows = synth.collect_rows(args)
    assert len(rows) == 1 and rows[0][0].startswith("slices_to_volume")
    panels = rows[0][1]
    assert len(panels) == 6 and all(p.shape == (16, 16, 1) for p in panels)
    x, y = panels[0][..., 0], panels[1][..., 0]
    # off-centre coronal slice: the input shows only the two crossing central slices
    assert np.count_nonzero(x) <= 2 * 16 and np.count_nonzero(y) > 2 * 16
    assert np.all(x[x > 0] == y[x > 0])


def test_augmented_episodes_run_through_the_sampler(tmp_path):
    """The augmentation presets plug into the episode sampler (2D with channel augmentations,
    3D with the task overlap) and keep panels in [0, 1]."""
    args = synth.validate(synth.build_parser().parse_args(
        ["-o", str(tmp_path / "m.png"), "--ndims", "2", "3", "--size", "32", "--size3d", "16",
         "--subjects", "3", "--tasks", "segmentation,motion_correction", "--augment",
         "--seed", "5"]))
    rows = synth.collect_rows(args)
    assert [label.split("\n")[0] for label, _ in rows] == ["segmentation", "motion_correction"] * 2
    for label, panels in rows:
        channels = 3 if "2D" in label else 1
        for panel in panels:
            assert panel.shape[-1] == channels and 0 <= panel.min() and panel.max() <= 1
