"""The product's readers as training sees them: the one place training imports them from, so moving the
readers is a change here only."""

from core.manifest import iter_selected, read_manifest, read_sidecar
from core.read.checks import Quarantine
from core.read.lerobot import LeRobotMeta, data_files, load_meta, read_robot_steps

__all__ = [
    "LeRobotMeta",
    "Quarantine",
    "data_files",
    "iter_selected",
    "load_meta",
    "read_manifest",
    "read_robot_steps",
    "read_sidecar",
]
