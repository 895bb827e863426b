"""The compiled part of skillcell: the per-step arithmetic of the envs (``envs/kernels.c``).

Everything else about the package is declared in pyproject.toml; setuptools reads both.
"""

import sys

from setuptools import Extension, setup

# IEEE double arithmetic in the order the C states it: no fused multiply-adds, no fast-math
# reassociation, so the kernels give the bits of the Python and MuJoCo arithmetic they replaced
# (tests/test_hot_path.py). MSVC neither contracts nor reassociates under its default /fp:precise.
FLAGS = [] if sys.platform == "win32" else ["-O2", "-std=c11", "-ffp-contract=off", "-fno-fast-math"]

setup(ext_modules=[Extension("skillcell.envs.kernels", ["envs/kernels.c"], extra_compile_args=FLAGS)])
