"""The Cython ABI (fastpool/abi.pxd): a separate package, examples/userkernel,
cimports it, defines nogil kernels and registers them; built against the
installed fastpool into a folder of its own, its kernels run in thread and
worker-process pools (a worker process imports the module, which registers
them there too).  Registration errors are clear ValueErrors."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "userkernel"
BUILD_TIMEOUT = 240

PROBE = r"""
from fastpool.abi cimport register_function, register_loop

cdef double _sub(double a, double b) noexcept nogil:
    return a - b

cdef double _add(double a, double b) noexcept nogil:
    return a + b

def register(name, signature, which):
    return register_function(__name__, name, signature, <void *>(_sub if which == "sub" else _add))

def register_null_loop():
    return register_loop(__name__, "nothing", "f8(f8,f8)", NULL, NULL)
"""

SCRIPT = r"""
import fastpool, numpy as np
from fastpool import kernels
from userkernel import gcd, lerp, norm

out = {"kernels": [repr(k) for k in (norm, gcd, lerp)],
       "direct": [norm((3, 4)), gcd((12, -18)), lerp((1.0, 3.0, 0.25))]}
a, b, t = np.arange(100_000.0), np.full(100_000, 10.0), np.full(100_000, 0.5)
for kind in ("thread", "process"):
    with fastpool.WorkerPool(2, norm, workers=kind) as pool:
        r = [pool.run((3, 4)).result(30), pool.run({"a": 5.0, "b": 12}).result(30),
             pool.submit(gcd, (2**40, 6 * 2**20)).result(30),
             pool.submit(lerp, {"a": 0, "b": 10, "c": 0.1}).result(30),
             list(pool.map(gcd, [(9, 6), (7, 5)]))]
        err = pool.submit(gcd, (1.5, 2)).exception(30)
        r.append(f"{type(err).__name__}: {err}")
        if kind == "thread":
            got = pool.submit(lerp, (a, b, t)).result(30)
            r.append(bool((got == a + (b - a) * t).all()))
        out[kind] = r

import fp_abi_probe as probe
sub = probe.register("sub", "f8(f8,f8)", "sub")
errors = []
for call in (lambda: probe.register("sub", "f8(f8,f8)", "add"),
             lambda: probe.register("bad", "f4(f4,f4)", "sub"),
             probe.register_null_loop):
    try:
        call()
    except Exception as e:
        errors.append(f"{type(e).__name__}: {e}")
out["probe"] = [repr(sub), sub((5, 3)), probe.register("sub", "f8(f8,f8)", "sub") is sub, errors]
print(repr(out))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A folder with the example package and the probe module, built
    against this fastpool."""
    pytest.importorskip("Cython")
    pytest.importorskip("setuptools")
    pytest.importorskip("numpy")
    tmp = tmp_path_factory.mktemp("abi")
    src = tmp / "userkernel"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "*.c", "*.so"))
    site = tmp / "site"
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps",
                    "--no-index", "--target", str(site), str(src)],
                   check=True, timeout=BUILD_TIMEOUT, env=env, capture_output=True)
    (site / "fp_abi_probe.pyx").write_text(PROBE)
    subprocess.run([sys.executable, "-m", "Cython.Build.Cythonize", "-i", "-3", "fp_abi_probe.pyx"],
                   cwd=site, check=True, timeout=BUILD_TIMEOUT, env=env, capture_output=True)
    return site


@pytest.mark.timeout(BUILD_TIMEOUT * 2 + 60)
def test_a_separate_package_registers_kernels_that_run_in_both_kinds_of_pool(built):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(built)] + sys.path))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = ast.literal_eval(proc.stdout)
    assert out["kernels"] == ["<fastpool kernel 'userkernel._kernels.norm' f8(f8,f8)>",
                              "<fastpool kernel 'userkernel._kernels.gcd' i8(i8,i8)>",
                              "<fastpool kernel 'userkernel._kernels.lerp' f8(f8,f8,f8)>"]
    assert out["direct"] == [5.0, 6, 1.5]
    int_error = ("TypeError: userkernel._kernels.gcd kernel: 'a' must be an int (i8(i8,i8) takes "
                 "int64 operands), not float")
    assert out["thread"] == [5.0, 13.0, 2**21, 1.0, [3, 1], int_error, True]
    assert out["process"] == [5.0, 13.0, 2**21, 1.0, [3, 1], int_error]
    assert out["probe"] == [
        "<fastpool kernel 'fp_abi_probe.sub' f8(f8,f8)>", 2.0, True,
        ["ValueError: a kernel named 'fp_abi_probe.sub' exists already",
         ("ValueError: signature 'f4(f4,f4)': unsupported type 'f4'; expected RESULT(OPERAND,OPERAND"
          "[,OPERAND]) with types f8 (double) or i8 (int64), the operands of one type: 'f8(f8,f8)', "
          "'i8(i8,i8)', 'f8(f8,f8,f8)', 'i8(f8,f8)', ..."),
         "ValueError: kernel 'fp_abi_probe.nothing': its loop is NULL"]]

