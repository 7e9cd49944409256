"""Affine registration for neuroicl-predict: SimpleITK (what the pipeline uses) versus ANTsPy.

Two real-scan cases:

1. ``known``: the MNI152 2009 template (nilearn's copy, 1 mm) against a copy moved by a known
   affine (rotations 10/-8/6 degrees, scales 1.06/0.95/1.03, shift 8/-5/6 mm). Accuracy is the
   distance between where the recovered and the true transform send every brain voxel (mean and
   maximum, mm).
2. ``colin``: Colin27 (``ch2bet.nii.gz`` of the Debian package ``mricron-data``) to the MNI
   template: no ground truth; reported is the correlation of the two brains after registration
   (on a 2 mm grid, inside the template's brain).

SimpleITK runs through :func:`neuroicl_tf.predict.registration.register_affine` (3 mm grid,
rigid then affine, Mattes MI). ANTsPy runs ``ants.registration(type_of_transform="Affine")``
with its defaults on the 1 mm images, in a separate Python that has ``antspyx`` (it pins
``numpy<2.4`` and ``scipy<1.16``, so it does not live in this project's environment)::

    python3 -m venv /tmp/antsenv && /tmp/antsenv/bin/pip install antspyx nibabel
    python benchmarks/bench_registration.py --ants-python /tmp/antsenv/bin/python -j 2

Without ``--ants-python`` only SimpleITK runs. Each case takes seconds (SimpleITK) to about a
minute (ANTsPy) on 2 cores.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

COLIN = "/usr/share/mricron/templates/ch2bet.nii.gz"


def _rotation(degrees):
    out = np.eye(3)
    for axis, angle in enumerate(np.deg2rad(degrees)):
        a, b = [i for i in range(3) if i != axis]
        r = np.eye(3)
        r[a, a] = r[b, b] = np.cos(angle)
        r[a, b], r[b, a] = -np.sin(angle), np.sin(angle)
        out = out @ r
    return out


def known_transform(centre):
    """The true world transform (4, 4): target point -> moved-copy point."""
    linear = _rotation([10.0, -8.0, 6.0]) @ np.diag([1.06, 0.95, 1.03])
    matrix = np.eye(4)
    matrix[:3, :3] = linear
    matrix[:3, 3] = centre - linear @ centre + np.array([8.0, -5.0, 6.0])
    return matrix


def transform_error(estimate, truth, points):
    """Mean and max distance (mm) between two transforms over world points (N, 3)."""
    homog = np.c_[points, np.ones(len(points))].T
    dist = np.linalg.norm(((estimate - truth) @ homog)[:3], axis=0)
    return float(dist.mean()), float(dist.max())


def correlation_after(fixed, fixed_affine, moving, moving_affine, matrix):
    """Correlation of fixed and registered moving on a 2 mm grid inside the fixed brain."""
    from neuroicl_tf import io as nio

    grid = fixed_affine.copy()
    grid[:3, :3] *= 2.0
    shape = tuple(int(np.ceil(s / 2)) for s in fixed.shape)
    f = nio.resample_to(fixed, fixed_affine, shape, grid, order=1)
    m = nio.resample_to(moving, np.linalg.solve(matrix, moving_affine), shape, grid, order=1)
    mask = f > 0.1
    return float(np.corrcoef(f[mask], m[mask])[0, 1])


def make_cases(folder):
    """Write the NIfTI files of both cases; return their descriptions."""
    import nibabel as nib

    from generators.sources.mni import mni_files
    from neuroicl_tf import io as nio

    template = nib.as_closest_canonical(nib.load(mni_files()["t1"]))
    t1 = np.asarray(template.dataobj, dtype=np.float32)
    affine = template.affine
    fixed_path = os.path.join(folder, "mni.nii.gz")
    nio.save_nifti(fixed_path, t1, affine)
    centre = (affine @ np.append((np.asarray(t1.shape) - 1) / 2.0, 1.0))[:3]
    truth = known_transform(centre)
    # The copy: its point truth @ p shows what the template shows at p.
    moved = nio.resample_to(t1, truth @ affine, t1.shape, affine, order=1)
    moved_path = os.path.join(folder, "mni_moved.nii.gz")
    nio.save_nifti(moved_path, moved, affine)
    brain = np.argwhere(t1 > 0.2 * t1.max())[::50]
    points = (affine @ np.c_[brain, np.ones(len(brain))].T)[:3].T
    cases = [{"name": "known", "fixed": fixed_path, "moving": moved_path,
              "truth": truth.tolist(), "points": points.tolist()}]
    if os.path.isfile(COLIN):
        cases.append({"name": "colin", "fixed": fixed_path, "moving": COLIN})
    return cases


def run_simpleitk(case, threads):
    from neuroicl_tf import io as nio
    from neuroicl_tf.predict.geometry import load_volume
    from neuroicl_tf.predict.registration import register_affine

    fixed, f_aff, _ = load_volume(case["fixed"])
    moving, m_aff, _ = load_volume(case["moving"])
    start = time.perf_counter()
    f_norm, m_norm = nio.normalize_intensity(fixed), nio.normalize_intensity(moving)
    result = register_affine(f_norm, f_aff, m_norm, m_aff, threads=threads)
    seconds = time.perf_counter() - start
    return {"matrix": result.matrix.tolist(), "seconds": seconds,
            "log": result.summary()}


def ants_worker(spec_path):
    """Runs in the ANTsPy Python: register, print the RAS world matrix and the time."""
    import ants

    with open(spec_path) as f:
        case = json.load(f)
    fixed = ants.image_read(case["fixed"])
    moving = ants.image_read(case["moving"])
    start = time.perf_counter()
    out = ants.registration(fixed, moving, type_of_transform="Affine")
    seconds = time.perf_counter() - start
    tx = ants.read_transform(out["fwdtransforms"][0])
    params = np.asarray(tx.parameters, dtype=np.float64)
    centre = np.asarray(tx.fixed_parameters, dtype=np.float64)
    a, t = params[:9].reshape(3, 3), params[9:12]
    lps = np.eye(4)
    lps[:3, :3] = a
    lps[:3, 3] = centre + t - a @ centre
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])  # ITK physical space is LPS, NIfTI world is RAS
    print(json.dumps({"matrix": (flip @ lps @ flip).tolist(), "seconds": seconds}))


def run_ants(case, python, threads):
    env = dict(os.environ)
    if threads:
        env["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"fixed": case["fixed"], "moving": case["moving"]}, f)
    try:
        done = subprocess.run([python, os.path.abspath(__file__), "--ants-worker", f.name],
                              capture_output=True, text=True, env=env, check=True)
    finally:
        os.remove(f.name)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ants-python", help="a Python with antspyx installed")
    p.add_argument("--ants-worker", help=argparse.SUPPRESS)
    p.add_argument("-j", "--threads", type=int, default=2)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if args.ants_worker:
        return ants_worker(args.ants_worker)
    from neuroicl_tf.predict.geometry import load_volume

    results = []
    with tempfile.TemporaryDirectory() as folder:
        for case in make_cases(folder):
            fixed, f_aff, _ = load_volume(case["fixed"])
            moving, m_aff, _ = load_volume(case["moving"])
            tools = [("SimpleITK", lambda c=case: run_simpleitk(c, args.threads))]
            if args.ants_python:
                tools.append(("ANTsPy", lambda c=case: run_ants(c, args.ants_python,
                                                                args.threads)))
            for tool, fn in tools:
                out = fn()
                matrix = np.asarray(out["matrix"])
                row = {"case": case["name"], "tool": tool, "seconds": round(out["seconds"], 1),
                       "correlation": round(correlation_after(fixed, f_aff, moving, m_aff,
                                                              matrix), 3)}
                if "truth" in case:
                    mean, worst = transform_error(matrix, np.asarray(case["truth"]),
                                                  np.asarray(case["points"]))
                    row.update(error_mean_mm=round(mean, 2), error_max_mm=round(worst, 2))
                results.append(row)
                print(json.dumps(row), out.get("log", ""), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
