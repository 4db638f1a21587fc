"""Compiled CPU kernels (C++ sources shipped in the package), built on first use.

Each source is compiled with ``torch.utils.cpp_extension.load`` (needs ninja and a C++ compiler) into
``$TORCH_EXTENSIONS_DIR`` when set, else ``~/.cache/headforge/torch_extensions``; torch's extension machinery
rebuilds when the source or flags change and locks the build directory, so concurrent processes share one
build. Kernels register their ops with ``TORCH_LIBRARY`` (``torch.ops.<name>.*``). A failed build raises
:class:`HeadforgeError` with the compiler's message and is remembered, so it is not retried on every call.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

from headforge.errors import HeadforgeError

_LOCK = threading.Lock()
_loaded: set[str] = set()
_failed: dict[str, HeadforgeError] = {}


def build_directory(name: str) -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "headforge" / "torch_extensions"
    return base / f"{name}_torch{torch.__version__.split('+')[0]}"


def load_extension(name: str, source: Path, what: str, fallback: str) -> None:
    """Compile (first time) and load ``source`` as the op library ``name``.

    ``what`` names the kernel in the error ("the CPU Gaussian rasterizer"); ``fallback`` says how to do without.
    """
    with _LOCK:
        if name in _loaded:
            return
        if name in _failed:
            raise _failed[name]
        try:
            from torch.utils import cpp_extension

            build = build_directory(name)
            build.mkdir(parents=True, exist_ok=True)
            cpp_extension.load(name=name, sources=[str(source)], build_directory=str(build),
                               extra_cflags=["-O3", "-std=c++17"], is_python_module=False, verbose=False)
        except (OSError, RuntimeError, ImportError, SystemError) as err:
            _failed[name] = HeadforgeError(f"could not build {what} ({type(err).__name__}: {err})", path=source,
                                           fix=f"install a C++ compiler and ninja (pip install ninja), or {fallback}")
            raise _failed[name] from err
        _loaded.add(name)
