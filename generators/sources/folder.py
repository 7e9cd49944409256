"""Label maps (and real images) read from NIfTI/MGZ files: :class:`LabelMapFolder`."""

import glob
import os

import numpy as np

from .base import LabelMapSource, Volume, _bbox, _compact

NIFTI_SUFFIXES = (".nii", ".nii.gz", ".mgz")

# ----------------------------------------------------------------------------------------------
# label maps on disk


def _list_nifti(paths_or_folder, argname):
    """The NIfTI/MGZ files named by a folder, a file, or a list mixing folders and files."""
    if isinstance(paths_or_folder, (str, os.PathLike)):
        folder = os.fspath(paths_or_folder)
        if os.path.isdir(folder):
            paths = sorted(p for p in glob.glob(os.path.join(folder, "*"))
                           if p.endswith(NIFTI_SUFFIXES))
            if not paths:
                raise ValueError(
                    f"{argname}: folder {folder!r} holds no NIfTI/MGZ files "
                    f"({', '.join(NIFTI_SUFFIXES)})"
                )
            return paths
        if os.path.isfile(folder):
            return [folder]
        raise ValueError(f"{argname}: {folder!r} is neither a folder nor a file")
    try:
        paths = [os.fspath(p) for p in paths_or_folder]
    except TypeError as err:
        raise TypeError(
            f"{argname} must be a folder or a list of paths, got {paths_or_folder!r}") from err
    if not paths:
        raise ValueError(f"{argname}: the list of paths is empty")
    files = []
    for p in paths:
        if os.path.isdir(p):
            files.extend(_list_nifti(p, argname))
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise ValueError(f"{argname}: file {p!r} does not exist")
    return files


def _stem(path):
    name = os.path.basename(path)
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _open(path, what):
    """nibabel image of ``path`` (header only) with a clear error for unreadable files."""
    import nibabel as nib

    try:
        img = nib.load(path)
    except Exception as err:  # nibabel raises several types for non-images and broken headers
        raise ValueError(f"cannot read {what} {path!r}: {err}") from err
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ValueError(f"{what} {path!r} must be 3D, got shape {tuple(img.shape)}")
    return img, shape


def _read(img, path, what):
    """The voxel array of ``img`` in RAS+ orientation (3D) and the voxel size."""
    import nibabel as nib

    try:
        if img.ndim == 4:
            img = img.slicer[..., 0]
        img = nib.as_closest_canonical(img)
        data = np.asarray(img.dataobj)
    except Exception as err:  # truncated gzip, bad offsets, ...
        raise ValueError(f"cannot read the voxels of {what} {path!r}: {err}") from err
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    return data, spacing


def _normalise_image(image):
    """Robust min-max to [0, 1]: clip to the 0.5 and 99.5 percentiles of the non-zero voxels."""
    image = np.nan_to_num(image.astype(np.float32))
    values = image[image != 0]
    if values.size == 0:
        return np.zeros_like(image)
    lo, hi = np.percentile(values, [0.5, 99.5])
    lo = min(float(lo), 0.0)
    return np.clip((image - lo) / max(float(hi) - lo, 1e-8), 0, 1).astype(np.float32)


class LabelMapFolder(LabelMapSource):
    """Label maps (and optional real images) read from NIfTI/MGZ files.

    Files are opened (headers only) when the source is built, so missing, unreadable or non-3D
    files are reported at once; voxels are read with ``img.dataobj`` on first use, turned to
    RAS+ orientation, cropped to the head and cached at the resolutions asked for.

    Args:
        paths_or_folder: a folder (every ``.nii``, ``.nii.gz`` and ``.mgz`` in it, sorted) or a
            list of label-map paths.
        images: optional real images of the same subjects on the same grids: a folder or list
            (one contrast, stored as ``"real"``), or a dict contrast name -> folder or list
            (stored as ``"real:<name>"``; the first one is also ``"real"``). Paired with the
            label maps in sorted order; the counts and shapes must match.
        cache: keep resampled volumes in memory.
        cache_native: also keep full-resolution volumes (cropped to the head) in memory.

    Raises:
        ValueError: a folder without NIfTI files, a missing or unreadable file, a label map or
            image that is not 3D, a count or shape mismatch between label maps and images.
    """

    def __init__(self, paths_or_folder, images=None, cache=True, cache_native=False):
        super().__init__(cache=cache, cache_native=cache_native)
        self.paths = _list_nifti(paths_or_folder, "paths_or_folder")
        self._shapes = [_open(p, "label map")[1] for p in self.paths]
        self._names = [_stem(p) for p in self.paths]
        self.image_paths = {}
        if images is not None:
            groups = images if isinstance(images, dict) else {"real": images}
            for contrast, group in groups.items():
                paths = _list_nifti(group, f"images[{contrast!r}]")
                if len(paths) != len(self.paths):
                    raise ValueError(
                        f"images[{contrast!r}] has {len(paths)} files but there are "
                        f"{len(self.paths)} label maps; they are paired in sorted order"
                    )
                for lab_path, lab_shape, img_path in zip(self.paths, self._shapes, paths):
                    shape = _open(img_path, "image")[1]
                    if shape != lab_shape:
                        raise ValueError(
                            f"image {img_path!r} has shape {shape} but its label map "
                            f"{lab_path!r} has shape {lab_shape}"
                        )
                self.image_paths[contrast] = paths

    @property
    def names(self):
        return list(self._names)

    def _load(self, index):
        path = self.paths[index]
        img, _ = _open(path, "label map")
        data, spacing = _read(img, path, "label map")
        if not np.issubdtype(data.dtype, np.integer):
            rounded = np.rint(data)
            if not np.array_equal(rounded, data):
                raise ValueError(f"label map {path!r} holds non-integer values (is it an image?)")
            data = rounded
        if data.size and data.min() < 0:
            raise ValueError(f"label map {path!r} holds negative labels (min {data.min()})")
        lo, hi = _bbox(data > 0)
        lo, hi = np.maximum(lo - 2, 0), np.minimum(hi + 2, data.shape)
        crop = tuple(slice(a, b) for a, b in zip(lo, hi))
        labels = _compact(np.ascontiguousarray(data[crop]).astype(np.int64))
        images = {}
        for contrast, paths in self.image_paths.items():
            img, _ = _open(paths[index], "image")
            image, _ = _read(img, paths[index], "image")
            image = _normalise_image(image)[crop]
            if contrast == "real":
                images["real"] = image
            else:
                images.setdefault("real", image)
                images[f"real:{contrast}"] = image
        return Volume(labels, spacing, images)
