"""pytest loads this before any test module: set up tf-keras before TensorFlow is imported.

Without it, a test module that imports TensorFlow before ``neuroicl_tf`` would make ``tf.keras``
resolve to Keras 3 for the whole session, depending on the order of collection.
"""

import neuroicl_tf  # noqa: F401
