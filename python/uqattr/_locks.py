"""A readers-writer guard so an ensemble can serve many predicting threads at
once (the C core releases the GIL) while training excludes them."""
import threading
from contextlib import contextmanager


class ReadWriteGuard:
    """Many readers at once, or one writer. A reader arriving while a writer
    holds the guard gets a RuntimeError at once instead of reading weights that
    are being updated; a writer waits for running readers to finish."""

    def __init__(self, what="ensemble"):
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = None
        self._what = what

    @contextmanager
    def read(self):
        with self._cond:
            if self._writer is not None and self._writer != threading.get_ident():
                raise RuntimeError(f"this {self._what} is being trained in another thread; "
                                   "predict after fit() returns")
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self):
        with self._cond:
            if self._writer is not None:
                raise RuntimeError(f"this {self._what} is already being trained in another thread")
            self._writer = threading.get_ident()
            try:
                self._cond.wait_for(lambda: self._readers == 0)
            except BaseException:  # e.g. Ctrl-C while waiting: give the guard back, else it stays taken
                self._writer = None
                self._cond.notify_all()
                raise
        try:
            yield
        finally:
            with self._cond:
                self._writer = None
                self._cond.notify_all()
