"""Input ablations every evaluation of an in-context model includes.

``/work/shared/reference/TRAINING_NOTES.md`` records a small in-context net that beat the
context-label average on held-out maps without reading any image: zeroing the target image, or
the context images, left its Dice unchanged; it had learned to merge the context labels. A model
that uses its inputs loses score when they are removed; one whose score does not move has learned
label fusion, whatever its Dice. The functions take a model batch (``target`` (B, *S, Cin),
``context_in`` (B, L, *S, Cin), ``context_out`` (B, L, *S, Cout)) and return a new dict; the
input is not modified.
"""

import numpy as np

__all__ = ["ABLATIONS", "blank_context_images", "blank_target", "swap_context_images"]


def _check(inputs):
    for key in ("target", "context_in", "context_out"):
        if key not in inputs:
            raise ValueError(f"inputs lack {key!r}; got keys {sorted(inputs)}")
    return dict(inputs)


def blank_target(inputs):
    """The same batch with the target image zeroed."""
    out = _check(inputs)
    out["target"] = np.zeros_like(np.asarray(inputs["target"]))
    return out


def blank_context_images(inputs):
    """The same batch with every context *input* image zeroed (the context outputs kept)."""
    out = _check(inputs)
    out["context_in"] = np.zeros_like(np.asarray(inputs["context_in"]))
    return out


def swap_context_images(inputs):
    """The same batch with the context input images rotated by one along L, so that every
    context output is paired with another subject's image.

    Raises:
        ValueError: if L < 2 (nothing to swap).
    """
    out = _check(inputs)
    context_in = np.asarray(inputs["context_in"])
    if context_in.shape[1] < 2:
        raise ValueError(f"swap_context_images needs L >= 2 context pairs, got L = "
                         f"{context_in.shape[1]}")
    out["context_in"] = np.roll(context_in, 1, axis=1)
    return out


# report label -> function; the label is appended to the model's name ("model | blank target")
ABLATIONS = {
    "blank target": blank_target,
    "blank context images": blank_context_images,
    "swapped context images": swap_context_images,
}
