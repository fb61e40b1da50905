"""`import fastpool` is cheap (guarantee 9) and exports the public names."""
from __future__ import annotations

import os
import subprocess
import sys

import fastpool
from _support import WAIT

HEAVY = ("numpy", "asyncio", "multiprocessing.shared_memory")


def run_python(code):
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(fastpool.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=WAIT, env=env)


def test_import_loads_no_heavy_modules():
    proc = run_python(
        "import sys, fastpool\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.strip() == "[]"


def test_public_names_are_exported():
    for name in ("WorkerPool", "PoolFuture", "ThreadPoolExecutor", "kernels", "PoolClosedError",
                 "WorkerExitedError", "TaskTimeoutError"):
        assert hasattr(fastpool, name), name
    assert callable(fastpool.kernels.add)
