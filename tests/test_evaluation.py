"""neuroicl_tf.evaluation: the episode set, the baselines, the ablations and the reports."""

import os

import numpy as np
import pytest

import generators
from neuroicl_tf import evaluation as ev
from neuroicl_tf.evaluation import ablation, baselines, report, run

GRID = (32, 32)


@pytest.fixture(scope="module")
def split():
    source = generators.ProceduralLabelMaps(n=6, shape=(40, 40, 40), seed=3)
    pool, targets = source.split(2, seed=0)
    return targets, pool


@pytest.fixture(scope="module")
def groups(split):
    targets, pool = split
    return ev.build_episodes(targets, pool, ["brain_mask", "denoising"], [1, 3], 1, GRID,
                             seed=5)


def _same(a, b):
    return (a.targets == b.targets and a.context == b.context and a.seed == b.seed
            and all(np.array_equal(getattr(a, k), getattr(b, k))
                    for k in ("target_in", "target_out", "context_in", "context_out")))


def test_episode_set_is_seeded_and_independent_of_order(split, groups):
    targets, pool = split
    assert [(g.task, g.context_size, g.draw) for g in groups] == [
        ("brain_mask", 1, 0), ("brain_mask", 3, 0), ("denoising", 1, 0), ("denoising", 3, 0)]
    for g in groups:
        assert g.targets == targets.names  # every group scores all held-out targets
        assert len(g.context) == g.context_size == len(set(g.context))
        assert set(g.context) <= set(pool.names) and not set(g.context) & set(g.targets)
        assert g.target_in.shape == (2, *GRID, 1) and g.context_out.shape == (
            g.context_size, *GRID, 1)
    # a new build, tasks in the other order and a fresh synthesizer: the same arrays
    again = ev.build_episodes(targets, pool, ["denoising"], [3], 1, GRID, seed=5)
    assert _same(again[0], groups[3])
    other = ev.build_episodes(targets, pool, ["denoising"], [3], 1, GRID, seed=6)
    assert not np.array_equal(other[0].target_in, groups[3].target_in)


def test_every_method_is_scored_on_the_same_episodes(split, monkeypatch, tmp_path):
    """A 'model' that returns the context-label average must score exactly like baseline (a),
    target by target, and one that returns its target input exactly like the identity: so
    the model, its ablations and the baselines saw the same episodes."""
    from neuroicl_tf.models import Neuralizer

    targets, pool = split
    seen = []

    def fake_predict(model, inputs, mini_context, chunk=4):
        seen.append({k: v.copy() for k, v in inputs.items()})
        context_out = inputs["context_out"]
        if np.isin(context_out, (0.0, 1.0)).all():  # a mask task: the context-label average
            return (context_out.mean(axis=1) > 0.5).astype(np.float32)
        return inputs["target"]  # an image task: the input

    monkeypatch.setattr(run, "_predict", fake_predict)
    model = Neuralizer(ndims=2, stages=2, channels=2)
    sources = ev.EvalSources(targets, pool)
    summary = ev.evaluate(str(tmp_path), {"m": model}, sources, tasks=["brain_mask", "denoising"],
                          context_sizes=[2], draws=1, shape=GRID, seed=5, fewshot=False,
                          progress=None)
    rows = report.read_scores(summary["scores"])
    for task, baseline, start in (("brain_mask", report.ATLAS, 0), ("denoising", report.IDENTITY,
                                                                     3)):
        by_method = {}
        for row in rows:
            if row["task"] == task:
                by_method.setdefault(row["method"], {})[row["target"]] = row["value"]
        assert set(by_method) >= {"m", "m | blank target", "m | blank context images",
                                  baseline}
        assert by_method["m"] == pytest.approx(by_method[baseline], abs=1e-6)
        # the ablated batches: the same episode with exactly one input zeroed
        full, blank_t, blank_c = seen[start:start + 3]
        assert not np.any(blank_t["target"]) and np.any(full["target"])
        assert np.array_equal(blank_t["context_in"], full["context_in"])
        assert not np.any(blank_c["context_in"]) and np.any(full["context_in"])
        assert np.array_equal(blank_c["target"], full["target"])
        assert np.array_equal(blank_c["context_out"], full["context_out"])
        assert full["target"].shape == (2, *GRID, 3)  # Neuralizer's 3 channels, padded
        assert not np.any(full["target"][..., 1:])


def test_context_average_equals_hand_computation():
    masks = np.zeros((3, 2, 2, 1), np.float32)
    masks[0, 0, 0] = masks[1, 0, 0] = 1  # 2 of 3 -> 0.67 > 0.5 -> 1
    masks[2, 0, 1] = 1  # 1 of 3 -> 0
    masks[:, 1, 1] = 1  # 3 of 3 -> 1
    expected = np.array([[1, 0], [0, 1]], np.float32)[..., None]
    np.testing.assert_array_equal(ev.context_average(masks, kind=0), expected)
    # a tie (0.5) is not above the threshold
    np.testing.assert_array_equal(ev.context_average(masks[1:3, :1, :1], kind=0), [[[0.0]]])
    images = np.arange(12, dtype=np.float32).reshape(3, 2, 2, 1) / 12
    np.testing.assert_allclose(ev.context_average(images, kind=1),
                               (images[0] + images[1] + images[2]) / 3, rtol=1e-6)
    with pytest.raises(ValueError, match="context_out"):
        ev.context_average(np.zeros((2, 2)), kind=0)


def test_identity_equals_input():
    x = np.random.default_rng(0).random((2, 8, 8, 1)).astype(np.float32)
    out = ev.identity(x)
    np.testing.assert_array_equal(out, x)
    assert out is not x


def test_fewshot_unet_learns_a_trivial_mapping():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    x = ndimage.gaussian_filter(rng.random((3, 16, 16)), (0, 2, 2))[..., None]
    x = ((x - x.min(axis=(1, 2, 3), keepdims=True))
         / np.ptp(x, axis=(1, 2, 3), keepdims=True)).astype(np.float32)
    y = (x > 0.5).astype(np.float32)  # segment the bright half: a threshold
    net = ev.FewShotUNet(ndims=2, kind=0, width=4, stages=2, steps=60, batch_size=3,
                         learning_rate=1e-2, augment=False, seed=0)
    losses = net.fit(x, y)
    assert len(losses) == 60
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:5])
    assert ev.score(0, y, net.predict(x)).min() > 0.9
    again = net.fit(x, y)  # re-initialised: the same run again
    np.testing.assert_allclose(again, losses, rtol=1e-3, atol=1e-4)


def test_fewshot_augmentation_moves_x_and_y_together():
    rng = np.random.default_rng(1)
    x = rng.random((16, 16, 1)).astype(np.float32)
    ax, ay = baselines._augment(x, x.copy(), rng)
    np.testing.assert_array_equal(ax, ay)
    assert not np.array_equal(ax, x)


@pytest.mark.parametrize("ndims", [2, 3])
def test_unet_parameter_count(ndims):
    model = baselines.build_unet(ndims, width=3, stages=2)
    assert baselines.unet_parameters(ndims, 3, 2) == model.count_params()
    width = baselines.width_for(baselines.unet_parameters(ndims, 6, 3), ndims, 3)
    assert width == 6


def _batch(L=3):
    rng = np.random.default_rng(0)
    return {"target": rng.random((2, 8, 8, 3)) + 0.1,
            "context_in": rng.random((2, L, 8, 8, 3)) + 0.1,
            "context_out": rng.random((2, L, 8, 8, 3)) + 0.1}


def test_ablations_blank_the_inputs():
    batch = _batch()
    copy = {k: v.copy() for k, v in batch.items()}
    blank = ablation.blank_target(batch)
    assert not blank["target"].any()
    assert blank["context_in"] is batch["context_in"] and blank["context_out"] is batch[
        "context_out"]
    blank = ablation.blank_context_images(batch)
    assert not blank["context_in"].any()
    np.testing.assert_array_equal(blank["target"], batch["target"])
    np.testing.assert_array_equal(blank["context_out"], batch["context_out"])
    swapped = ablation.swap_context_images(batch)
    np.testing.assert_array_equal(swapped["context_in"][:, 1], batch["context_in"][:, 0])
    np.testing.assert_array_equal(swapped["context_out"], batch["context_out"])
    for key in batch:  # the originals are untouched
        np.testing.assert_array_equal(batch[key], copy[key])
    with pytest.raises(ValueError, match="L >= 2"):
        ablation.swap_context_images(_batch(L=1))


def _rows(model_gain, blank_drop):
    rows = []
    for L in (1, 4, 8):
        for draw in range(2):
            for target in ("s1", "s2"):
                base = 0.5 + 0.01 * draw
                values = {"model": base + model_gain, "model | blank target":
                          base + model_gain - blank_drop, "model | blank context images":
                          base, report.ATLAS: base, report.FEWSHOT: base - 0.1}
                for method, value in values.items():
                    rows.append({"task": "seg_x", "metric": "dice", "L": L, "draw": draw,
                                 "target": target, "method": method, "value": value})
    return rows


def test_report_files_and_columns(tmp_path):
    rows = _rows(model_gain=0.1, blank_drop=0.3)
    csv_path, md_path, png_path = (str(tmp_path / n) for n in ("s.csv", "t.md", "p.png"))
    report.write_scores(rows, csv_path)
    with open(csv_path) as f:
        assert f.readline().strip() == "task,metric,L,draw,target,method,value"
    back = report.read_scores(csv_path)
    assert len(back) == len(rows) and back[0]["L"] == 1 and back[0]["value"] == pytest.approx(
        0.6)
    summary = report.summarise(back)
    assert summary[("seg_x", "model", 4)] == pytest.approx((0.605, 0.005, 4))
    report.write_table(back, md_path, notes=["a note"])
    text = open(md_path).read()
    assert "## seg_x (Dice)" in text and "| model \\| blank target |" in text
    assert "0.605 ± 0.005 (4)" in text and "- a note" in text
    report.plot_scores(back, png_path)
    with open(png_path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [n for n in os.listdir(tmp_path) if "tmp" in n]
    with pytest.raises(ValueError, match="lacks"):
        report.write_scores([{"task": "x"}], csv_path)


def test_verdicts():
    good = " ".join(report.verdicts(_rows(model_gain=0.1, blank_drop=0.3))["seg_x"])
    assert "at L >= 4: YES (L=4: +0.100, L=8: +0.100)" in good
    assert "few-shot U-Net at L <= 8: YES" in good
    assert "blank target: drops the score (mean drop +0.300" in good
    assert "blank context images: drops the score" in good
    assert "hardly depends" not in good
    bad = " ".join(report.verdicts(_rows(model_gain=0.03, blank_drop=0.0))["seg_x"])
    assert "at L >= 4: NO (L=4: +0.030" in bad  # better, but by less than 0.05
    assert "blank target: does NOT drop the score" in bad and "hardly depends" in bad


def test_make_sources_reproduces_the_training_split():
    from neuroicl_tf.training import TrainConfig
    from neuroicl_tf.training.episodes import _subjects

    for kwargs in ({"mni": 6}, {"procedural": 6}):
        config = TrainConfig(out="unused", holdout=2, seed=4, shape=(32, 32), ndims=2, **kwargs)
        train, val = _subjects(config)
        sources = ev.make_sources(holdout=2, seed=4, shape=(32, 32), **kwargs)
        assert sources.targets.names == val[0].names
        assert sources.pool.names == train[0].names
    with pytest.raises(ValueError, match="exactly one source"):
        ev.make_sources(mni=4, procedural=4)
    with pytest.raises(ValueError, match="holdout"):
        ev.make_sources(mni=4, holdout=4)


def test_build_episodes_rejects_bad_requests(split):
    targets, pool = split
    with pytest.raises(ValueError, match="larger|context_sizes"):
        ev.build_episodes(targets, pool, ["denoising"], [len(pool) + 1], 1, GRID)
    with pytest.raises(ValueError, match="unknown evaluation task"):
        ev.build_episodes(targets, pool, ["no_such_task"], [1], 1, GRID)
    with pytest.raises(ValueError, match="held out"):
        ev.build_episodes(targets, targets, ["denoising"], [1], 1, GRID)


def test_evaluate_skips_or_refuses_tasks_without_their_labels(split, tmp_path):
    from neuroicl_tf.models import Neuralizer

    targets, pool = split  # procedural maps have no putamen (12/51)
    model = Neuralizer(ndims=2, stages=2, channels=2)
    sources = ev.EvalSources(targets, pool)
    with pytest.raises(ValueError, match="seg_putamen.*absent"):
        ev.evaluate(str(tmp_path), {"m": model}, sources, tasks=["seg_putamen"], shape=GRID,
                    strict_tasks=True, progress=None)
    with pytest.raises(ValueError, match="no task left"):
        ev.evaluate(str(tmp_path), {"m": model}, sources, tasks=["seg_putamen"], shape=GRID,
                    progress=None)


COLIN = "/usr/share/mricron/templates/ch2.nii.gz"


@pytest.mark.skipif(not os.path.isfile(COLIN), reason="Debian's mricron-data is not installed")
def test_colin27_label_map():
    from neuroicl_tf.evaluation.sources import colin27_label_map

    volume = colin27_label_map(2)
    present = set(np.unique(volume.labels).tolist())
    assert {2, 3, 4, 10, 11, 12, 17, 24, 41, 42, 43, 49, 50, 51, 53, 165, 258} <= present
    # hemispheres: left labels on the left (low x index in RAS+)
    xs = np.argwhere(volume.labels == 17)[:, 0].mean(), np.argwhere(volume.labels == 53)[:, 0]
    assert xs[0] < xs[1].mean()
    assert volume.images["t1"].shape == volume.labels.shape
    assert 0 <= volume.images["t1"].min() and volume.images["t1"].max() <= 1
