"""neuroicl_tf: in-context learning for neuroimaging in TensorFlow/Keras.

Importing the package sets ``TF_USE_LEGACY_KERAS=1`` (tf-keras), imports TensorFlow without its
start-up noise (set ``NEUROICL_VERBOSE=1`` to see it) and fails with a clear ``ImportError`` if
``tf.keras`` already resolved to Keras 3.
"""

from . import _compat

_compat.import_tensorflow()

__version__ = "0.1.0"

__all__ = ["__version__"]
