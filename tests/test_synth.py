"""Image synthesis: episode-shared contrasts, alignment with the labels, seeding, T1 mode."""

import os

import numpy as np
import pytest

from generators.sources import LEFT_RIGHT_PAIRS, ProceduralLabelMaps
from generators.synth import ImageSynthesizer, load_synthseg_t1_priors

SHARED = "/work/shared/data/synthseg_label_maps"
CLEAN = dict(noise_std=0.0, blur_std=0.0, bias_std=0.0, gamma_std=0.0)


@pytest.fixture(scope="module")
def episode():
    source = ProceduralLabelMaps(4, (32, 32, 32), seed=2)
    rng = np.random.default_rng(0)
    return [source.sample(i, (32, 32), slice_axis=1, rng=rng)[0] for i in range(4)]


def test_shared_contrast_same_label_same_value_across_subjects(episode):
    synth = ImageSynthesizer(seed=1, **CLEAN)
    images, tables = synth.synthesize([episode], np.random.default_rng(0))
    table = tables[0]["a"][0]
    assert all(t is table for t in tables[0]["a"])  # one table for the whole episode
    means = synth._class_min
    for label, bin_ in table.items():
        values = [im["a"][lab == label] for im, lab in zip(images[0], episode)]
        values = np.concatenate(values)
        # every voxel of the label in every subject has the bin's mean, fixed-scaled
        np.testing.assert_allclose(values, means[bin_] / 255.0, atol=1e-5)
    assert table[0] == 0
    assert tables[0]["a"][0] != tables[0]["b"][0]  # two different contrasts


def test_hemisphere_partners_share_a_bin(episode):
    synth = ImageSynthesizer(seed=1)
    for seed in range(3):
        table = synth.episode_tables(episode, np.random.default_rng(seed))["a"][0]
        for left, right in LEFT_RIGHT_PAIRS:
            if left in table and right in table:
                assert table[left] == table[right]
    untied = ImageSynthesizer(tie_hemispheres=False, n_bins=40)
    tables = [untied.episode_tables(episode, np.random.default_rng(s))["a"][0]
              for s in range(5)]
    assert any(t[2] != t[41] for t in tables)


def test_per_subject_tables_differ(episode):
    synth = ImageSynthesizer(contrast="per_subject", n_bins=30)
    tables = synth.episode_tables(episode, np.random.default_rng(0))["a"]
    assert tables[0] is not tables[1]
    common = set(tables[0]) & set(tables[1]) - {0}
    assert any(tables[0][k] != tables[1][k] for k in common)


def test_nuisance_keeps_the_shared_ordering(episode):
    synth = ImageSynthesizer(seed=3)
    images, tables = synth.synthesize([episode], np.random.default_rng(1))
    table = tables[0]["a"][0]
    labels = [lab for lab in table if lab != 0 and all((e == lab).sum() > 10 for e in episode)]
    medians = np.array([[np.median(im["a"][lab_map == lab]) for lab in labels]
                        for im, lab_map in zip(images[0], episode)])
    bins = np.array([table[lab] for lab in labels])
    for row in medians:
        assert np.corrcoef(row, bins)[0, 1] > 0.8  # noise, blur, bias, gamma are nuisance
    for im in images[0]:
        assert im["a"].dtype == np.float32 and im["a"].min() >= 0 and im["a"].max() <= 1
        assert im["a"].shape == episode[0].shape


def test_images_are_aligned_with_labels(episode):
    synth = ImageSynthesizer(seed=0, n_bins=200, **CLEAN)
    images, tables = synth.synthesize([episode[:2]], np.random.default_rng(4))
    for im, lab in zip(images[0], episode[:2]):
        for name in ("a", "b"):
            # with the nuisance off the image is a function of the label, voxel for voxel
            for value in np.unique(lab):
                assert np.ptp(im[name][lab == value]) < 1e-6


def test_seeding_reproduces_and_changes(episode):
    def run(seed, rng_seed=0):
        synth = ImageSynthesizer(seed=seed)
        first, _ = synth.synthesize([episode[:2]], np.random.default_rng(rng_seed))
        second, _ = synth.synthesize([episode[:2]], np.random.default_rng(rng_seed))
        return first[0][0]["a"], second[0][0]["a"]

    a1, a2 = run(5)
    b1, b2 = run(5)
    np.testing.assert_array_equal(a1, b1)  # a new synthesizer with the same seed: same images
    np.testing.assert_array_equal(a2, b2)
    assert not np.allclose(a1, a2)  # successive calls draw new nuisance
    c1, _ = run(6)
    assert not np.allclose(a1, c1)


def test_3d_and_batched_episodes():
    source = ProceduralLabelMaps(3, (16, 16, 16), seed=0)
    vols = [source.sample(i, (16, 16, 16))[0] for i in range(3)]
    synth = ImageSynthesizer(seed=0)
    images, tables = synth.synthesize([vols[:2], vols[1:]], np.random.default_rng(0))
    assert len(images) == 2 and images[1][0]["b"].shape == (16, 16, 16)
    assert tables[0]["a"][0] is not tables[1]["a"][0]  # every episode has its own contrast


def test_t1_ordering(episode):
    synth = ImageSynthesizer(contrast="t1", seed=0, **CLEAN)
    images, _ = synth.synthesize([episode], np.random.default_rng(0))
    for im, lab in zip(images[0], episode):
        wm = np.median(im["a"][np.isin(lab, [2, 41])])
        gm = np.median(im["a"][np.isin(lab, [3, 42])])
        csf = np.median(im["a"][lab == 24])
        assert wm > gm > csf


def test_bad_arguments():
    with pytest.raises(ValueError, match="contrast"):
        ImageSynthesizer(contrast="t3")
    with pytest.raises(ValueError, match="n_bins"):
        ImageSynthesizer(n_bins=1)
    with pytest.raises(ValueError, match="bias_std"):
        ImageSynthesizer(bias_std=-1)
    with pytest.raises(ValueError, match="class_maps"):
        ImageSynthesizer().render(np.zeros((4,), np.int32))


def test_synthseg_priors_loader(tmp_path):
    np.save(tmp_path / "generation_labels.npy", np.array([0, 2, 41, 24]))
    np.save(tmp_path / "generation_classes.npy", np.array([0, 1, 1, 2]))
    np.save(tmp_path / "prior_means_t1.npy", np.array([[0.0, 150.0, 40.0], [1.0, 10.0, 5.0]]))
    np.save(tmp_path / "prior_stds_t1.npy", np.ones((2, 3)))
    lut, lo, hi = load_synthseg_t1_priors(tmp_path)
    assert lut == {0: 0, 2: 1, 41: 1, 24: 2} and len(lo) == 4  # 3 classes + "other"
    assert lo[1] < 150 < hi[1] and abs((lo[1] + hi[1]) / 2 - 150) < 1e-9
    np.save(tmp_path / "generation_classes.npy", np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="contrast_specific"):
        load_synthseg_t1_priors(tmp_path)


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="needs /work/shared/data")
def test_shared_priors_need_the_contrast_specific_classes():
    # generation_classes.npy has 48 classes, prior_means_t1.npy 25 columns: not indexable
    with pytest.raises(ValueError, match="25 classes"):
        load_synthseg_t1_priors(SHARED)
