"""Tasks for worker processes: module level, so that they travel by
reference, and in a module that imports little, so that a worker process
(which imports it to run them) starts fast."""
import ctypes
import os
import signal
import socket
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


def wait_at_gate(name):
    # Blocks until the test opens the gate (_support.Gate): a task that is
    # running, for sure.  Returns this worker's pid.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(name)
        s.recv(1)           # b"" or a reset: the gate opened
    except OSError:
        pass                # it was open already
    finally:
        s.close()
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


def fail_odd(x):
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


def gated(arg):
    # wait_at_gate(name), then `value`: (name, value) is the argument.
    name, value = arg
    wait_at_gate(name)
    return value


def napping(arg):
    # A task that runs `seconds` (without the GIL), then returns `value`:
    # (seconds, value) is the argument.
    seconds, value = arg
    time.sleep(seconds)
    return value


def slow_echo(x):
    # A task that takes a while without holding the GIL (a thread pool's
    # other threads run meanwhile).
    time.sleep(0.0002)
    return x


# -- arrays and large payloads (numpy imported only by the tasks that use it) --------

_kept = []


def keep(a):
    """Keeps the task's array (a view of where it arrived) and a copy of it;
    returns its sum.  kept_intact() tells whether the views still hold what
    they held."""
    _kept.append((a, a.copy()))
    return float(a.sum())


def kept_intact(_=None):
    import numpy

    return len(_kept), all(numpy.array_equal(view, copy) for view, copy in _kept)


def double_in_place(a):
    a *= 2
    return a


def first_half(a):
    return a[:len(a) // 2]


def both(a):
    return a, a * 3


def make_array(n):
    import numpy

    return numpy.arange(n, dtype=numpy.uint8)


def killed_holding(a):
    os.kill(os.getpid(), signal.SIGKILL)


def describe(*args, **kwargs):
    """What arrived: the type and size of each argument."""
    def one(x):
        return type(x).__name__, (x.nbytes if hasattr(x, "nbytes") else len(x) if hasattr(x, "__len__")
                                  else x)
    return [one(a) for a in args], {k: one(v) for k, v in kwargs.items()}


def typed(*args, **kwargs):
    """The arguments as they arrived, each with its exact type."""
    return [(type(a), a) for a in args], {k: (type(v), v) for k, v in kwargs.items()}


def worker_name(_=None):
    """The name of the worker running this task: its process's in a worker
    process, its thread's in a worker thread (the names "spawn" and "exit"
    report)."""
    import multiprocessing
    import threading

    proc = multiprocessing.current_process()
    return threading.current_thread().name if proc.name == "MainProcess" else proc.name


def worker_name_at_gate(name):
    wait_at_gate(name)
    return worker_name()
