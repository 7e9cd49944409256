"""Stopping a training run cleanly on SIGINT/SIGTERM (used by :mod:`neuroicl_tf.training`)."""

from . import _compat

tf = _compat.import_tensorflow()


class Interrupt:
    """SIGINT/SIGTERM handler that only records the signal.

    Raising KeyboardInterrupt from the handler is not reliable during ``model.fit``: when the
    signal lands while the episode generator runs inside ``tf.data``, the exception is taken as
    the generator's error and the run goes on (seen on a loaded machine). The flag is read at
    every batch end (by :class:`StopOnSignal`) and between rounds; a second signal raises at
    once.
    """

    def __init__(self):
        self.signum = None

    def __call__(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt(f"signal {signum} (second)")
        self.signum = signum

    def check(self):
        if self.signum is not None:
            raise KeyboardInterrupt(f"signal {self.signum}")


class StopOnSignal(tf.keras.callbacks.Callback):
    """Stops ``fit`` at the end of the batch during which :class:`Interrupt` saw a signal."""

    def __init__(self, interrupt):
        super().__init__()
        self.interrupt = interrupt

    def on_train_batch_end(self, batch, logs=None):
        if self.interrupt.signum is not None:
            self.model.stop_training = True
