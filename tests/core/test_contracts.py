from __future__ import annotations

import pyarrow as pa
import pytest

from core.contracts import MANIFEST, SAMPLE, check_columns, embedding_schema, make_sample_id, table_from_rows


def test_sample_table_from_rows_fills_optional_columns():
    row = {
        "sample_id": make_sample_id("s", "00000.tar", "k"),
        "source": "s",
        "shard_uri": "/x/00000.tar",
        "key": "k",
        "image": b"\xff",
        "text": "t",
    }
    table = table_from_rows([row], SAMPLE)
    assert table["sample_id"].to_pylist() == ["s/00000.tar/k"] and table["meta"].to_pylist() == [None]
    check_columns(table, SAMPLE, where="test")


def test_check_columns_names_the_problem():
    with pytest.raises(ValueError, match="shard-7: missing column 'source'"):
        check_columns(pa.table({"sample_id": ["a"]}), MANIFEST, where="shard-7")
    with pytest.raises(ValueError, match="column 'sample_id' has type int64"):
        check_columns(pa.table({"sample_id": [1]}), MANIFEST, where="x")


def test_embedding_schema_records_fingerprint():
    schema = embedding_schema(8, fingerprint="abc")
    assert schema.field("embedding").type == pa.list_(pa.float16(), 8)
    assert schema.metadata[b"backbone_fingerprint"] == b"abc"
