"""Bad configuration is rejected before any work starts, with messages that name the field."""

from __future__ import annotations

import pickle

import pytest

from core.settings import ConfigError, CorpusConfig, SourceSpec, StorageConfig, load_config, parse_config


def test_yaml_round_trip(tmp_path):
    path = tmp_path / "corpus.yaml"
    path.write_text(
        "storage: {endpoint_url: 'http://127.0.0.1:9000', key: k, secret: s}\n"
        "pool:\n  - {name: photos, format: webdataset, uri: 's3://b/photos/{00000..00009}.tar'}\n"
        "robot:\n  - {name: arm, format: lerobot, uri: 's3://b/robot/arm', frame_stride: 5}\n"
    )
    cfg = load_config(CorpusConfig, path)
    assert cfg.pool[0].uri.endswith(".tar") and cfg.robot[0].frame_stride == 5
    assert {k: v for k, v in cfg.storage.s3_options().items() if k != "config_kwargs"} == {
        "key": "k",
        "secret": "s",
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"},
    }
    assert "s" not in repr(cfg.storage.secret)  # secrets never printed


@pytest.mark.parametrize(
    "data,field",
    [
        ({"pool": [{"name": "p", "format": "tar", "uri": "x"}]}, "pool.0.format"),
        ({"pool": [{"name": "p q", "format": "parquet", "uri": "x"}]}, "pool.0.name"),
        (
            {"robot": [{"name": "r", "format": "lerobot", "uri": "x", "frame_stride": 0}]},
            "robot.0.frame_stride",
        ),
        ({"storage": {"endpoint_url": "localhost:9000"}}, "storage.endpoint_url"),
        ({"storage": {"endpont_url": "http://x"}}, "storage.endpont_url"),
        (
            {
                "pool": [
                    {"name": "p", "format": "parquet", "uri": "a"},
                    {"name": "p", "format": "parquet", "uri": "b"},
                ]
            },
            "pool",
        ),
    ],
)
def test_errors_name_the_field(data, field):
    with pytest.raises(ConfigError) as err:
        parse_config(CorpusConfig, data)
    assert any(line.startswith(f"{field}:") for line in str(err.value).splitlines()[1:]), str(err.value)


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(CorpusConfig, tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("pool: [\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(CorpusConfig, tmp_path / "bad.yaml")


def test_defaults_leave_s3_to_the_environment():
    options = StorageConfig().s3_options()
    assert not {"key", "secret", "anon", "client_kwargs"} & set(options)  # credentials and endpoint: the environment
    assert options["config_kwargs"]["retries"] == {"mode": "standard", "max_attempts": 8}
    assert SourceSpec(name="a", format="parquet", uri="/x").image_column == "image"


def test_sources_carry_their_storage_pickled_but_never_written_out():
    storage = StorageConfig(endpoint_url="http://127.0.0.1:9000", key="k", secret="s")
    spec = SourceSpec(name="photos", format="webdataset", uri="s3://b/photos/")
    cfg = CorpusConfig(storage=storage, pool=[spec])
    assert cfg.pool[0].storage == storage and spec.storage is None  # bound at validation, on a copy
    copy = pickle.loads(pickle.dumps(cfg.pool[0]))  # how a Ray worker receives it
    assert copy.storage == storage and copy == cfg.pool[0]
    dumped = cfg.pool[0].model_dump(mode="json")  # a sidecar's or a Prefect form's view
    assert dumped == spec.model_dump(mode="json") and "storage" not in dumped
    again = CorpusConfig.model_validate_json(cfg.model_dump_json())
    assert again.pool[0].storage.endpoint_url == storage.endpoint_url  # a JSON round trip binds it again
