"""Shared fixtures: an S3-compatible server on loopback (real HTTP) and a tiny synthetic corpus on disk and on it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from core.settings import SourceSpec
from core.storage import filesystem
from infra.s3 import EmbeddedS3, start_s3
from synth import CorpusInfo, SynthConfig, generate_corpus

# botocore must never look for credentials on the machine (instance metadata would hang without network).
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
# A loaded 2-core machine can take minutes to start Prefect's ephemeral API (set before Prefect reads its settings);
# a user's own value wins.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
# No Ray call starts a Ray by itself (read when Ray is imported, after this): such a Ray would take every CPU, listen
# on every address and write to Ray's shared /tmp/ray, hiding whatever needs that folder on a fresh machine. A test
# that needs Ray asks for ``ray_local`` (or starts its own, as the product does).
os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")

TINY = SynthConfig(
    seed=7,
    samples_per_source=24,
    shard_size=10,
    image_size=32,
    robot_episodes=3,
    frames_per_episode=6,
    episodes_per_file=2,
)


@pytest.fixture(scope="session")
def s3() -> Iterator[EmbeddedS3]:
    server = start_s3()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def local_corpus(tmp_path_factory: pytest.TempPathFactory) -> CorpusInfo:
    return generate_corpus(str(tmp_path_factory.mktemp("corpus")), TINY)


@pytest.fixture(scope="session")
def s3_corpus(s3: EmbeddedS3, local_corpus: CorpusInfo) -> CorpusInfo:
    """The same corpus uploaded to the S3 server, with its specs pointing there (and bound to its settings)."""
    bucket = s3.make_bucket("corpus")
    fs, _ = filesystem(bucket, s3.storage)
    fs.put(local_corpus.root.rstrip("/") + "/", "corpus/tiny/", recursive=True)

    def moved(spec: SourceSpec) -> SourceSpec:
        uri = spec.uri.replace(local_corpus.root.rstrip("/"), f"{bucket}/tiny")
        return spec.model_copy(update={"uri": uri}).bind(s3.storage)

    return (
        local_corpus.model_copy(
            update={
                "root": f"{bucket}/tiny",
                "pool": [moved(s) for s in local_corpus.pool],
                "robot": [moved(s) for s in local_corpus.robot],
            }
        )
        if hasattr(local_corpus, "model_copy")
        else local_corpus
    )


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Prefect's real API, ephemeral, one per test run."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):  # None: the setting above
        yield


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One local Ray instance for the whole test run (2 CPUs, as on CI), on loopback as the product starts it."""
    from flows.runtime import local_ray

    with local_ray(temp_dir=str(tmp_path_factory.mktemp("ray")), num_cpus=2):
        yield


@pytest.fixture(scope="session", autouse=True)
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real MLflow backend store (SQLite) for every run the tests make."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri
