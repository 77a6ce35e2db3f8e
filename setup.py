"""Builds the CPU kernel of models/skinny_matmul.py against the XLA FFI headers that jaxlib ships.

Optional: without a C++ compiler the package installs and every product goes through XLA.
"""

import jax.ffi
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "models._skinny_matmul",
            sources=["models/csrc/skinny_matmul.cc"],
            include_dirs=[jax.ffi.include_dir()],
            language="c++",
            # Built where it runs: -march=native picks the widest vectors this CPU has.
            extra_compile_args=["-std=c++17", "-O3", "-march=native", "-Wno-attributes", "-Wno-return-type"],
            optional=True,
        )
    ]
)
