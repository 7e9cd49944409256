"""Data and scoring for the real-scan run of neuroicl-predict in docs/predict.md.

``prepare OUT``: writes the context pairs and the target's reference mask into OUT:

* ``colin_t1.nii.gz`` / ``colin_seg.nii.gz``: Colin27 (``ch2bet.nii.gz`` of the Debian package
  ``mricron-data``) with its AAL map relabelled to two FreeSurfer labels: AAL cerebellum and
  vermis regions (91-116) -> 8 (odd AAL index, left) / 47 (even, right); every other region 0.
* ``mniN_t1.nii.gz`` / ``mniN_seg.nii.gz``: deformed MNI-derived subjects
  (``generators.MNISubjects``, the deformed template as image, its label map), written in LPS
  orientation with an arbitrary origin, so the pipeline has to reorient and register them.
* ``reference_cerebellum.nii.gz``: the MNI-derived cerebellum (labels 7, 8, 46, 47) on the
  template's own grid, to score the prediction.

``score PRED REF [CTX_SEG ...]``: Dice of the prediction with the reference, and of the
"context-label average" baseline (each context mask registered to the target as
neuroicl-predict does it, averaged, > 0.5) when the context files are given as
``IMG:SEG`` pairs.
"""

import os
import sys

import nibabel as nib
import numpy as np

CEREBELLUM = (7, 8, 46, 47)


def prepare(out, n_mni=3, seed=7):
    from generators import MNISubjects
    from generators.sources.mni import mni_files, mni_label_map
    from neuroicl_tf import io as nio

    os.makedirs(out, exist_ok=True)
    colin = nib.load("/usr/share/mricron/templates/ch2bet.nii.gz")
    aal = nib.load("/usr/share/mricron/templates/aal.nii.gz")
    regions = np.asarray(aal.dataobj).astype(np.int32)
    seg = np.zeros(regions.shape, np.int16)
    cereb = (regions >= 91) & (regions <= 116)
    seg[cereb & (regions % 2 == 1)] = 8
    seg[cereb & (regions % 2 == 0)] = 47
    nib.save(colin, os.path.join(out, "colin_t1.nii.gz"))
    nio.save_nifti(os.path.join(out, "colin_seg.nii.gz"), seg, aal.affine, aal.header)

    subjects = MNISubjects(n=n_mni, seed=seed, resolution=2, real_image=True)
    for i in range(n_mni):
        vol = subjects.load(i)
        flip = np.diag([-2.0, -2.0, 2.0, 1.0])  # LPS, 2 mm
        flip[:3, 3] = [120.0, 140.0, -90.0]
        image = vol.images["real"][::-1, ::-1]
        labels = vol.labels[::-1, ::-1].astype(np.int16)
        nio.save_nifti(os.path.join(out, f"mni{i}_t1.nii.gz"), image, flip)
        nio.save_nifti(os.path.join(out, f"mni{i}_seg.nii.gz"), labels, flip)

    template = nib.load(mni_files()["t1"])
    labels = mni_label_map(1).labels
    pad = 24  # mni_label_map pads the 1 mm template by 24 voxels on every side
    ref = np.isin(labels[pad:-pad, pad:-pad, pad:-pad], CEREBELLUM).astype(np.uint8)
    assert ref.shape == template.shape, (ref.shape, template.shape)
    nio.save_nifti(os.path.join(out, "reference_cerebellum.nii.gz"), ref, template.affine,
                   template.header)
    print(f"wrote {out}: colin pair, {n_mni} MNI-derived pairs, reference mask")


def dice(a, b):
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)


def score(pred, ref, target=None, pairs=()):
    p = np.asarray(nib.load(pred).dataobj)
    r = np.asarray(nib.load(ref).dataobj)
    print(f"Dice(prediction, reference) = {dice(p, r):.3f}")
    if target and pairs:
        from neuroicl_tf import io as nio
        from neuroicl_tf.predict import geometry
        from neuroicl_tf.predict.registration import register_affine

        data, affine, _ = geometry.load_volume(target)
        norm = nio.normalize_intensity(data)
        masks = []
        for pair in pairs:
            img_path, seg_path = pair.split(":")
            img, img_aff, _ = geometry.load_volume(img_path)
            seg, _, _ = geometry.load_volume(seg_path)
            result = register_affine(norm, affine, nio.normalize_intensity(img), img_aff)
            mask = np.isin(seg, CEREBELLUM).astype(np.float32)
            masks.append(nio.resample_to(mask, result.moved_affine(img_aff), data.shape, affine,
                                         order=1))
        average = np.mean(masks, axis=0) > 0.5
        print(f"Dice(context-label average, reference) = {dice(average, r):.3f}")


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(sys.argv[2])
    else:
        score(sys.argv[2], sys.argv[3], *(sys.argv[4:5] or [None]), pairs=sys.argv[5:])
