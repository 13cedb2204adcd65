"""Lets ``import torchvision`` work beside a CPU-only torch.

PyPI only has CUDA builds of torchvision; beside CPU torch its compiled ``_C`` library cannot load, and the
import then fails in ``torchvision._meta_registrations`` (``operator torchvision::nms does not exist``).
open_clip imports torchvision for its transforms, which need none of the compiled ops. This shim, installed by
``make`` as a ``.pth`` hook only where the import fails, declares the two operator schemas torchvision
registers fake kernels for, just before torchvision is first imported. Where ``_C`` loads (GPU machines) it
does nothing. Compiled ops (``torchvision.ops.nms``) and ``torchvision.io`` stay unavailable: images are
decoded with Pillow.

    python -m infra.torchvision_shim   # install the hook into this interpreter's site-packages if needed
"""

from __future__ import annotations

import glob
import importlib.abc
import importlib.util
import os
import site
import subprocess
import sys

_PTH = "emt_torchvision_shim.pth"
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # keeps the declared schemas alive for the life of the process


def _declare_missing_ops() -> None:
    global _library
    import torch

    spec = importlib.util.find_spec("torchvision")
    libs = glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so")) if spec and spec.origin else []
    try:
        if libs:
            torch.ops.load_library(libs[0])
            return
    except OSError:
        pass
    _library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        _library.define(schema)


class _Hook(importlib.abc.MetaPathFinder):
    """Runs once, at the first import of torchvision, then steps aside for the normal import."""

    def find_spec(self, name, path, target=None):  # noqa: ANN001 - importlib's protocol
        if name == "torchvision":
            sys.meta_path.remove(self)
            _declare_missing_ops()
        return None


def register() -> None:
    """Called from the .pth file at interpreter start: cheap (imports nothing)."""
    if "torchvision" not in sys.modules:
        sys.meta_path.insert(0, _Hook())


def install() -> str:
    """Install the .pth hook if ``import torchvision`` fails in a fresh interpreter; say what was done."""
    target = os.path.join(site.getsitepackages()[0], _PTH)
    probe = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
    if probe.returncode == 0:
        return "torchvision imports as it is: no shim needed"
    if "torchvision::nms" not in probe.stderr:
        raise RuntimeError(f"torchvision fails to import for another reason:\n{probe.stderr[-2000:]}")
    shim_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(target, "w") as f:
        f.write(
            f"import sys; sys.path.append({shim_dir!r}) if {shim_dir!r} not in sys.path else None; "
            "import infra.torchvision_shim as s; s.register()\n"
        )
    check = subprocess.run([sys.executable, "-c", "import torchvision.transforms"], capture_output=True, text=True)
    if check.returncode != 0:
        os.remove(target)
        raise RuntimeError(f"torchvision still fails with the shim:\n{check.stderr[-2000:]}")
    return f"installed {target}"


if __name__ == "__main__":
    print(install())
