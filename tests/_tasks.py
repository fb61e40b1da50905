"""Tasks for worker processes: module level, so that they travel by
reference, and in a module that imports little, so that a worker process
(which imports it to run them) starts fast."""
import ctypes
import os
import signal
import time


def double(x):
    return 2 * x


def fail(x):
    raise ValueError(f"bad {x}")


def crash(how):
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "exit":
        os._exit(7)
    elif how == "segfault":
        ctypes.string_at(0)
    return how


def pid_of(_):
    return os.getpid()


def wait_for_file(path):
    # Blocks until the test creates `path`: a task that is running, for sure.
    while not os.path.exists(path):
        time.sleep(0.001)
    return os.getpid()


def echo(x):
    return x


class Unpicklable:
    def __reduce__(self):
        raise TypeError("this object cannot be pickled")


def unpicklable_result(_):
    return Unpicklable()


class FailsToUnpickle:
    """Pickles fine; unpickling it (in the worker) raises."""

    def __reduce__(self):
        return (_refuse, ())


def _refuse():
    raise RuntimeError("refused to unpickle")


def big_bytes(n):
    return b"x" * n


class Counter:
    def __init__(self, start):
        self.value = start

    def get(self, _):
        return self.value
