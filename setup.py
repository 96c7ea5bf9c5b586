"""Build the compiled table.

Set FASTLIMIT_DEBUG=1 for an unoptimised build with assertions, and
FASTLIMIT_ANNOTATE=1 to write Cython's HTML annotation next to the source.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("FASTLIMIT_DEBUG") == "1"

compile_args = ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-function"]
if debug:
    compile_args += ["-O0", "-g", "-UNDEBUG"]
else:
    compile_args += ["-O2"]

extension = Extension(
    "fastlimit_ext._table",
    sources=["fastlimit_ext/_table.pyx"],
    include_dirs=["fastlimit_ext/includes"],
    extra_compile_args=compile_args,
)

setup(
    ext_modules=cythonize(
        [extension],
        language_level=3,
        annotate=os.environ.get("FASTLIMIT_ANNOTATE") == "1",
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
    ),
)
