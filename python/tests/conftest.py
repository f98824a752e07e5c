"""Shared fixtures. A test whose tool is missing (onnx, onnxruntime, the
`convjit` binary) is skipped with the reason, which `pytest -rs` lists;
with CONVJIT_REQUIRE_TOOLS=1 (set by .ci/run, which installs them) it
fails instead."""

import importlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

REQUIRED = os.environ.get("CONVJIT_REQUIRE_TOOLS") == "1"
REPO = Path(__file__).resolve().parents[2]


def missing(why: str):
    """Skips the test saying why, or fails it where tools are required."""
    if REQUIRED:
        pytest.fail(f"{why} (required: CONVJIT_REQUIRE_TOOLS=1)")
    pytest.skip(why)


def need_module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"needs the Python package '{name}' (pip install {name})")


def _find_cli():
    if os.environ.get("CONVJIT_BIN"):
        return os.environ["CONVJIT_BIN"]
    dirs = [os.environ.get("CARGO_TARGET_DIR"), str(REPO / "target")]
    for d in filter(None, dirs):
        for profile in ("debug", "release"):
            p = Path(d) / profile / "convjit"
            if p.is_file():
                return str(p)
    return shutil.which("convjit")


@pytest.fixture(scope="session")
def cli():
    """Runs the `convjit` command line: cli(*args) -> CompletedProcess (text)."""
    exe = _find_cli()
    if exe is None:
        missing("needs the convjit binary (cargo build; or set CONVJIT_BIN)")

    def run(*args):
        return subprocess.run([exe, *map(str, args)], capture_output=True, text=True)

    return run


@pytest.fixture
def rng():
    return np.random.default_rng(0)


TEXTBOOK = """layer textbook {
  input 12x12x3
  sep: conv 5x5 -> 256, separable depthwise, bias, relu
}
"""

MBV2 = """layer inverted_residual {
  input 14x14x24
  expand:  pointwise 144, bias, relu6
  dw:      depthwise 3x3, pad same, bias, relu6
  project: pointwise 24, bias, residual
}
"""


def random_weights(rng, shapes):
    return {k: (rng.standard_normal(s) / np.sqrt(np.prod(s[:-1]))).astype(np.float32) for k, s in shapes.items()}


TEXTBOOK_SHAPES = {
    "sep.depthwise.weight": (5, 5, 3, 1),
    "sep.pointwise.weight": (3, 256),
    "sep.bias": (256,),
}

MBV2_SHAPES = {
    "expand.weight": (24, 144),
    "expand.bias": (144,),
    "dw.weight": (3, 3, 144, 1),
    "dw.bias": (144,),
    "project.weight": (144, 24),
    "project.bias": (24,),
}
