"""The :class:`Subject`: one subject's label map and images at an episode's grid.

Sources (:mod:`generators.sources`) produce label maps, :mod:`generators.synth` adds the images,
spatial augmentations transform whole subjects, and tasks (:mod:`generators.tasks`) turn one
subject into one ``(input, output)`` pair.
"""

import dataclasses

import numpy as np

__all__ = ["Subject"]


@dataclasses.dataclass
class Subject:
    """One subject at the episode's grid (*S = 2 or 3 spatial axes).

    Attributes:
        name: identifier, e.g. the file stem; the episode sampler uses it to keep the target
            subject out of its own context.
        labels: (*S) int32, FreeSurfer-style label numbers (0 = background).
        images: contrast name -> (*S) float32 in [0, 1]. Always has ``"a"`` (the episode's input
            contrast) and ``"b"`` (a second contrast of the same anatomy, for modality transfer);
            ``"real"`` if a real image came with the label map.
        brain_mask: (*S) bool, the voxels of brain labels (for skull stripping).
    """

    name: str
    labels: np.ndarray
    images: dict
    brain_mask: np.ndarray

    @property
    def shape(self):
        """The spatial shape *S as a tuple of ints."""
        return tuple(int(s) for s in self.labels.shape)

    @property
    def ndims(self):
        """The number of spatial axes (2 or 3)."""
        return self.labels.ndim

    def validate(self):
        """Check shapes, dtypes and required contrasts.

        Returns:
            The subject itself, so that ``Subject(...).validate()`` can be chained.

        Raises:
            ValueError: if ``labels`` is not 2D/3D, an image or the mask does not match its
                shape, or the contrasts ``"a"``/``"b"`` are missing.
        """
        if self.labels.ndim not in (2, 3):
            raise ValueError(
                f"Subject {self.name!r}: labels must have 2 or 3 spatial axes, got shape "
                f"{self.labels.shape}"
            )
        if self.brain_mask.shape != self.labels.shape:
            raise ValueError(
                f"Subject {self.name!r}: brain_mask shape {self.brain_mask.shape} != labels "
                f"shape {self.labels.shape}"
            )
        for key in ("a", "b"):
            if key not in self.images:
                raise ValueError(
                    f"Subject {self.name!r}: images must contain contrast {key!r}, got "
                    f"{sorted(self.images)}"
                )
        for key, image in self.images.items():
            if image.shape != self.labels.shape:
                raise ValueError(
                    f"Subject {self.name!r}: image {key!r} has shape {image.shape}, wanted the "
                    f"labels shape {self.labels.shape}"
                )
        return self

    def replace(self, **changes):
        """A copy with some fields replaced (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)
