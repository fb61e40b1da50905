import os

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("FASTPOOL_DEBUG") == "1"

extensions = [
    Extension(
        "fastpool._core",
        ["src/fastpool/_core.pyx"],
        include_dirs=["src/fastpool/includes"],
        # -ffp-contract=off: a * b + c rounds twice, as Python computes it,
        # even where the target has fused multiply-add instructions.
        extra_compile_args=["-O3", "-ffp-contract=off", "-Wall", "-Wno-unused-function",
                            "-Wno-unreachable-code"]
        + (["-O0", "-g", "-UNDEBUG"] if debug else []),
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3"},
        compile_time_env={"FASTPOOL_DEBUG": debug},
    ),
)
