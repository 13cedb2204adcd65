from __future__ import annotations

import pyarrow as pa

from core.contracts import SAMPLE, embedding_schema, make_sample_id, table_from_rows


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
    assert table.schema.equals(SAMPLE)


def test_embedding_schema_records_fingerprint():
    schema = embedding_schema(8, fingerprint="abc")
    vector = schema.field("embedding").type
    assert (vector.list_size, vector.value_type, vector.value_field.nullable) == (8, pa.float16(), False)
    assert schema.metadata[b"backbone_fingerprint"] == b"abc"
