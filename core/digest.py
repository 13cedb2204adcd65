"""Content digests: a stable key for what a result was computed from (the data and the code), so a result kept under
that key is reused only when nothing it depends on changed (the habit of Hugging Face ``datasets``' fingerprints and
Prefect's ``INPUTS + TASK_SOURCE`` cache policy)."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np


def _feed(h: Any, obj: Any) -> None:
    """Add ``obj`` to the hash ``h`` with its type, so that e.g. ``1`` and ``"1"`` or ``[1, 2]`` and ``[[1], 2]``
    never feed the same bytes."""
    if isinstance(obj, np.ndarray):
        array = np.ascontiguousarray(obj)
        h.update(f"nd{array.dtype.str}{array.shape}".encode())
        h.update(array.tobytes() if array.dtype != object else json.dumps(array.tolist(), default=str).encode())
    elif hasattr(obj, "to_json") and hasattr(obj, "dtypes"):  # a pandas DataFrame or Series
        h.update(b"pd" + obj.to_json(orient="split", double_precision=15).encode() + str(obj.dtypes).encode())
    elif isinstance(obj, bytes | bytearray | memoryview):
        h.update(b"b%d:" % len(obj))
        h.update(obj)
    elif isinstance(obj, str):
        data = obj.encode()
        h.update(b"s%d:" % len(data) + data)
    elif obj is None or isinstance(obj, bool | int | float | np.generic):
        h.update(f"v{type(obj).__name__}:{obj!r};".encode())
    elif isinstance(obj, list | tuple):
        h.update(b"l%d[" % len(obj))
        for item in obj:
            _feed(h, item)
        h.update(b"]")
    elif isinstance(obj, dict):
        h.update(b"d%d{" % len(obj))
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
        h.update(b"}")
    else:
        raise TypeError(f"no content digest for a {type(obj).__name__}")


def content_digest(*parts: Any) -> str:
    """A hex SHA-256 of ``parts`` (arrays, data frames, bytes, strings, numbers, and lists and dicts of them)."""
    h = hashlib.sha256()
    _feed(h, list(parts))
    return h.hexdigest()


@cache
def source_digest(*modules: ModuleType) -> str:
    """A hex SHA-256 of the source files of ``modules`` (a package: every ``.py`` file under it), so a kept
    result is not reused after the code that computed it changed."""
    h = hashlib.sha256()
    for module in modules:
        path = Path(module.__file__ or "")
        files = sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]
        for file in files:
            _feed(h, str(file.relative_to(path.parent)))
            _feed(h, file.read_bytes())
    return h.hexdigest()
