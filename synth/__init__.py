"""Deterministic synthetic corpus: web-like pool sources at different distances from robot data, LeRobot v3
robot datasets and the ground truth of which pool samples are "robot-like" (see ``corpus.py`` for the layout).

    from synth import SynthConfig, generate_corpus
    info = generate_corpus("s3://bucket/synth", SynthConfig(samples_per_source=2000))
"""

from synth.corpus import CorpusInfo, SynthConfig, generate_corpus, load_corpus_info
from synth.lerobot import Episode, write_lerobot_dataset
from synth.pool import GROUND_TRUTH, POOL_SOURCES
from synth.scenes import ALIGNMENT, KINDS, draw_scene

__all__ = [
    "ALIGNMENT",
    "GROUND_TRUTH",
    "KINDS",
    "POOL_SOURCES",
    "CorpusInfo",
    "Episode",
    "SynthConfig",
    "draw_scene",
    "generate_corpus",
    "load_corpus_info",
    "write_lerobot_dataset",
]
