"""The episode sampler and its tf.data wrapper: format, L, no target in its context, seeding."""

import collections
import warnings

import numpy as np
import pytest

from generators import EpisodeGenerator, ImageSynthesizer, ProceduralLabelMaps, episode_dataset
from generators.presets import PRESETS
from generators.tasks import get_task

ALL_TASKS = {"segmentation", "skull_stripping", "modality_transfer", "super_resolution",
             "denoising_gaussian", "denoising_salt_pepper", "bias_correction", "inpainting",
             "slices_to_volume", "kspace_undersampling", "motion_correction"}


@pytest.fixture(scope="module")
def source():
    return ProceduralLabelMaps(6, (24, 24, 24), seed=0)


@pytest.fixture(scope="module")
def synth():
    return ImageSynthesizer(seed=0)


def test_format_neuralizer_2d(source, synth):
    gen = EpisodeGenerator(source, tasks="neuralizer", ndims=2, shape=(24, 24),
                           context_size=3, batch_size=3, synthesizer=synth)
    inputs, y, w = next(gen)
    assert inputs["target"].shape == (3, 24, 24, 3)
    assert inputs["context_in"].shape == (3, 3, 24, 24, 3)
    assert inputs["context_out"].shape == (3, 3, 24, 24, 3)
    assert y.shape == (3, 24, 24, 3) and w.shape == (3,)
    assert inputs["task_kind"].dtype == np.int32 and inputs["task_kind"].shape == (3,)
    for a in (inputs["target"], inputs["context_in"], inputs["context_out"], y, w):
        assert a.dtype == np.float32
    for a in (inputs["target"], inputs["context_in"], inputs["context_out"], y):
        assert a.min() >= 0 and a.max() <= 1
        assert np.all(a[..., 1:] == 0)  # pad_to_3_chan: single-channel tasks, zero padding
    kinds = [get_task(i["task"], **i["config"]).kind for i in gen.last_info]
    np.testing.assert_array_equal(inputs["task_kind"], kinds)
    np.testing.assert_array_equal(w, 1.0)  # Neuralizer: no per-task loss weights


def test_format_neuroverse3d_3d_and_loss_weights(source, synth):
    gen = EpisodeGenerator(source, tasks={"segmentation": {"weight": 1, "loss_weight": 50},
                                          "inpainting": 1},
                           ndims=3, shape=(16, 16, 16), context_size=2, batch_size=4,
                           encoding="neuroverse3d", synthesizer=synth, seed=1)
    inputs, y, w = next(gen)
    assert inputs["target"].shape == (4, 16, 16, 16, 1)
    assert inputs["context_out"].shape == (4, 2, 16, 16, 16, 1) and y.shape == (4, 16, 16, 16, 1)
    for info, weight, kind in zip(gen.last_info, w, inputs["task_kind"]):
        assert (weight, kind) == ((50.0, 0) if info["task"] == "segmentation" else (1.0, 1))


def test_context_size_distribution_and_forms(source, synth):
    gen = EpisodeGenerator(source, tasks={"inpainting": 1}, shape=(16, 16),
                           context_size=(1, 3), synthesizer=synth)
    sizes = collections.Counter(next(gen)[0]["context_in"].shape[1] for _ in range(24))
    assert set(sizes) == {1, 2, 3}
    assert min(sizes.values()) >= 3  # roughly uniform
    gen = EpisodeGenerator(source, tasks={"inpainting": 1}, shape=(16, 16), batch_size=2,
                           context_size=lambda rng: 4, synthesizer=synth)
    inputs, _, _ = next(gen)
    assert inputs["context_in"].shape[:2] == (2, 4)  # all episodes of a batch share L
    assert next(gen)[0]["context_out"].shape[1] == 4
    assert gen.sample(context_size=1)[0]["context_in"].shape[1] == 1


def test_target_never_in_its_context(source, synth):
    gen = EpisodeGenerator(source, tasks={"modality_transfer": 1}, shape=(16, 16),
                           context_size=5, batch_size=2, synthesizer=synth, seed=3)
    for _ in range(5):
        inputs, y, _ = next(gen)
        for b, info in enumerate(gen.last_info):
            names = info["subjects"]
            assert len(set(names)) == len(names) == 6  # target + 5 distinct context subjects
            assert names[0] not in names[1:]
            for i in range(5):  # and no context image equals the target's
                assert not np.array_equal(inputs["context_in"][b, i], inputs["target"][b])


def test_holdout_names_never_used(source, synth):
    held = source.names[:2]
    gen = EpisodeGenerator(source, tasks={"inpainting": 1}, shape=(16, 16), context_size=3,
                           holdout=held, synthesizer=synth)
    for _ in range(6):
        next(gen)
        assert not set(gen.last_info[0]["subjects"]) & set(held)
    with pytest.raises(ValueError, match="context_size max 4 needs 5 subjects.*4 usable"):
        EpisodeGenerator(source, tasks={"inpainting": 1}, context_size=4, holdout=held)


def test_seeding():
    source = ProceduralLabelMaps(5, (24, 24, 24), seed=0)

    def batches(seed):
        gen = EpisodeGenerator(source, tasks="neuralizer", shape=(16, 16), context_size=(1, 3),
                               batch_size=2, seed=seed)
        return [next(gen) for _ in range(2)], [i["task"] for i in gen.last_info]

    (first, tasks_a), (second, tasks_b) = batches(7), batches(7)
    assert tasks_a == tasks_b
    for (xa, ya, wa), (xb, yb, wb) in zip(first, second):
        for key in xa:
            np.testing.assert_array_equal(xa[key], xb[key])
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(wa, wb)
    other, _ = batches(8)
    assert any(a[1].shape != b[1].shape or not np.array_equal(a[1], b[1])
               for a, b in zip(first, other))


def test_presets_name_all_tasks_and_skip_unavailable(source, synth):
    named = {spec.name for preset in PRESETS.values() for spec in preset["tasks"]}
    assert named == ALL_TASKS
    n3d = {s.name: (s.weight, s.loss_weight) for s in PRESETS["neuroverse3d"]["tasks"]}
    assert n3d["segmentation"] == (2.0, 50.0) and n3d["slices_to_volume"] == (1.0, 0.5)
    with pytest.warns(UserWarning, match="slices_to_volume"):
        gen = EpisodeGenerator(source, tasks="neuroverse3d", ndims=2, shape=(16, 16),
                               context_size=1, encoding="neuroverse3d", synthesizer=synth)
    assert "slices_to_volume" not in {s.name for s in gen.specs}
    probabilities = {}
    for spec, _, p in gen.task_table:
        probabilities[spec.name] = probabilities.get(spec.name, 0) + p
    assert probabilities["segmentation"] == pytest.approx(2 / 9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every neuralizer task is registered: no warning
        EpisodeGenerator(source, tasks="neuralizer", shape=(16, 16), context_size=1,
                         synthesizer=synth)


def test_from_preset_switches_augmentations_on(source, synth):
    gen = EpisodeGenerator.from_preset("neuroverse3d", source, shape=(16, 16, 16),
                                       context_size=1, synthesizer=synth)
    assert gen.encoding == "neuroverse3d" and gen.ndims == 3
    assert gen.task_augmentation is not None and gen.spatial_augmentation is not None
    assert gen.task_overlap is not None
    inputs, y, w = next(gen)
    assert inputs["target"].shape == (1, 16, 16, 16, 1)
    off = EpisodeGenerator.from_preset("neuralizer", source, shape=(16, 16), context_size=1,
                                       task_augmentation=None, synthesizer=synth)
    assert off.task_augmentation is None and off.batch_size == 8


def test_augmentation_hooks_are_applied(source, synth):
    calls = collections.Counter()

    class InvertY:
        def sample_episode(self, rng):
            calls["sample"] += 1
            return {"kind": 1}

        def apply(self, x, y, episode, rng):
            calls["apply"] += 1
            return x, 1 - y

    def overlap(x, rng):
        calls["overlap"] += 1
        return x * 0.5

    def spatial(subject, rng):
        calls["spatial"] += 1
        return subject.replace(labels=np.flip(subject.labels, 0),
                               brain_mask=np.flip(subject.brain_mask, 0),
                               images={k: np.flip(v, 0) for k, v in subject.images.items()})

    gen = EpisodeGenerator(source, tasks={"segmentation": 1}, shape=(16, 16), context_size=2,
                           task_augmentation=InvertY(), task_overlap=overlap,
                           spatial_augmentation=spatial, synthesizer=synth,
                           encoding="neuroverse3d")
    inputs, y, _ = next(gen)
    assert calls == {"sample": 1, "apply": 3, "overlap": 3, "spatial": 3}
    assert inputs["target"].max() <= 0.5 + 1e-6
    assert inputs["task_kind"][0] == 1  # the augmentation's new kind is used
    assert set(np.unique(y).tolist()) <= {0.0, 1.0} and y.mean() > 0.5  # inverted mask


def test_bad_arguments_name_the_argument(source):
    with pytest.raises(ValueError, match="unknown task name 'nope'"):
        EpisodeGenerator(source, tasks={"nope": 1})
    with pytest.raises(ValueError, match="Unknown preset"):
        EpisodeGenerator(source, tasks="nopreset")
    with pytest.raises(ValueError, match="context_size"):
        EpisodeGenerator(source, tasks={"inpainting": 1}, context_size=0)
    with pytest.raises(ValueError, match="context_size"):
        EpisodeGenerator(source, tasks={"inpainting": 1}, context_size=(3, 2))
    with pytest.raises(ValueError, match="context_size max 6 needs 7 subjects"):
        EpisodeGenerator(source, tasks={"inpainting": 1}, context_size=(1, 6))
    with pytest.raises(ValueError, match="shape must be 3 ints"):
        EpisodeGenerator(source, tasks={"inpainting": 1}, ndims=3, shape=(16, 16))
    with pytest.raises(ValueError, match="ndims"):
        EpisodeGenerator(source, ndims=4)
    with pytest.raises(ValueError, match="encoding"):
        EpisodeGenerator(source, encoding="rgb")
    with pytest.raises(TypeError, match="sources"):
        EpisodeGenerator(["not a source"])
    with pytest.raises(ValueError, match="weight"):
        EpisodeGenerator(source, tasks={"inpainting": -1})
    with pytest.raises(TypeError, match="task_overlap"):
        EpisodeGenerator(source, tasks={"inpainting": 1}, task_overlap=3)
    gen = EpisodeGenerator(source, tasks={"inpainting": 1}, context_size=lambda rng: 0)
    with pytest.raises(ValueError, match="context_size callable returned 0"):
        next(gen)


def test_channel_mismatch_is_reported(source, synth):
    class ThreeChannels:
        def sample_episode(self, rng):
            return {}

        def apply(self, x, y, episode, rng):
            return np.repeat(x, 3, axis=-1), y

    gen = EpisodeGenerator(source, tasks={"inpainting": 1}, shape=(16, 16), context_size=1,
                           encoding="neuroverse3d", task_augmentation=ThreeChannels(),
                           synthesizer=synth)
    with pytest.raises(ValueError, match="3 channels.*'neuroverse3d' takes at most 1"):
        next(gen)


def test_tf_data_element_spec_and_fit(source, synth):
    from neuroicl_tf import _compat

    tf = _compat.import_tensorflow()
    gen = EpisodeGenerator(source, tasks={"inpainting": 1, "segmentation": 1}, shape=(16, 16),
                           context_size=(1, 3), batch_size=2, synthesizer=synth)
    dataset = episode_dataset(gen, prefetch=1)
    inputs_spec, y_spec, w_spec = dataset.element_spec
    assert inputs_spec["context_in"].shape.as_list() == [None, None, 16, 16, 3]
    assert inputs_spec["target"].shape.as_list() == [None, 16, 16, 3]
    assert inputs_spec["task_kind"].dtype == tf.int32 and w_spec.shape.as_list() == [None]
    assert y_spec.shape.as_list() == [None, 16, 16, 3]
    sizes = set()
    for inputs, y, w in dataset.take(4):
        sizes.add(int(inputs["context_in"].shape[1]))
        assert inputs["context_out"].shape[1] == inputs["context_in"].shape[1]
        assert y.shape[0] == w.shape[0] == 2
    assert sizes <= {1, 2, 3}

    # a tiny model that reads target and context: consumption by model.fit, from tf.data and
    # directly from the Python generator
    target = tf.keras.Input((16, 16, 3), name="target")
    context_in = tf.keras.Input((None, 16, 16, 3), name="context_in")
    context_out = tf.keras.Input((None, 16, 16, 3), name="context_out")
    mean_out = tf.keras.layers.Lambda(lambda t: tf.reduce_mean(t, axis=1))(context_out)
    mean_in = tf.keras.layers.Lambda(lambda t: tf.reduce_mean(t, axis=1))(context_in)
    merged = tf.keras.layers.Concatenate()([target, mean_in, mean_out])
    output = tf.keras.layers.Conv2D(3, 1)(merged)
    model = tf.keras.Model({"target": target, "context_in": context_in,
                            "context_out": context_out}, output)

    def per_sample_mse(y_true, y_pred):  # (B,) like the project's losses: sample_weight is (B,)
        return tf.reduce_mean(tf.square(y_true - y_pred), axis=[1, 2, 3])

    model.compile(optimizer="adam", loss=per_sample_mse)

    def without_kind(inputs, y, w):
        inputs = {k: v for k, v in inputs.items() if k != "task_kind"}
        return inputs, y, w

    history = model.fit(dataset.map(without_kind), steps_per_epoch=2, epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])

    def python_generator():
        for inputs, y, w in gen:
            yield without_kind(inputs, y, w)

    history = model.fit(python_generator(), steps_per_epoch=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_episode_dataset_builds_its_generator(source):
    dataset = episode_dataset(sources=source, tasks={"inpainting": 1}, ndims=3,
                              shape=(8, 8, 8), context_size=1, encoding="neuroverse3d")
    spec = dataset.element_spec[0]["context_in"]
    assert spec.shape.as_list() == [None, None, 8, 8, 8, 1]
    with pytest.raises(TypeError, match="either generator or"):
        episode_dataset(EpisodeGenerator(source, tasks={"inpainting": 1}, context_size=1),
                        shape=(8, 8))
