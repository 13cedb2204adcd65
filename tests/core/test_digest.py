"""Content digests: equal content keys alike whatever its object, and any difference of value, type, shape or order
keys apart."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.digest import content_digest


def test_equal_content_gives_one_digest():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    frame = pd.DataFrame({"x": [1.0, 2.0]}, index=["a", "b"])
    assert content_digest(a.copy(), {"k": [1, "s", b"b"]}, frame) == content_digest(
        np.ascontiguousarray(a.T).T, {"k": [1, "s", b"b"]}, frame.copy())


@pytest.mark.parametrize("left,right", [
    (np.zeros(4, np.float32), np.zeros(4, np.float64)),  # dtype
    (np.zeros((2, 2), np.float32), np.zeros(4, np.float32)),  # shape
    (1, "1"), (1, 1.0), (True, 1), (None, "None"),  # type
    ([1, 2], [[1], 2]), (["ab", "c"], ["a", "bc"]),  # nesting and boundaries
    ({"a": 1, "b": 2}, {"a": 2, "b": 1}),  # which value under which key
    (pd.DataFrame({"x": [1.0]}), pd.DataFrame({"y": [1.0]})),
])
def test_any_difference_gives_another_digest(left, right):
    assert content_digest(left) != content_digest(right)


def test_an_object_without_a_digest_is_refused():
    with pytest.raises(TypeError, match="no content digest for a object"):
        content_digest(object())
