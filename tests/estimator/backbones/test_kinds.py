"""The kind registry and the configuration agree: every kind a spec can name has a class, and its model class is
found in the kind's own module."""

from __future__ import annotations

from typing import get_args

import pytest

from estimator.backbones.backbone import Backbone
from estimator.backbones.kinds import KINDS
from estimator.backbones.spec import BackboneSpec


def test_every_kind_a_spec_can_name_is_registered() -> None:
    assert set(KINDS) == set(get_args(BackboneSpec.model_fields["kind"].annotation))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_names_a_backbone_class_in_its_module(kind: str) -> None:
    cls = KINDS[kind].backbone_class()
    assert issubclass(cls, Backbone) and cls.__module__ == KINDS[kind].module
