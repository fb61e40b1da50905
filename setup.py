import os

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("FASTPOOL_DEBUG") == "1"

extensions = [
    Extension(
        "fastpool._core",
        ["src/fastpool/_core.pyx"],
        include_dirs=["src/fastpool/includes"],
        extra_compile_args=["-O3", "-Wall", "-Wno-unused-function", "-Wno-unreachable-code"]
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
