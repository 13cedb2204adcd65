"""The local stack's configuration and the environment it hands to every process: what ``emt stack`` starts
services with (``infra.stack``) and what seeds them (``infra.stack_setup``), kept apart from both so neither
imports the other's module to learn a port or a bucket name."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr

from core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]  # the repository: prefect.yaml's entrypoints are relative to it
WORK_POOL = "emt-process"
S3_KEY = "emt-stack"  # moto accepts any credentials; these never leave loopback
MLFLOW_BUCKET = "emt-mlflow"


class StackConfig(Settings):
    """Where the local stack keeps its state and which loopback ports it listens on."""

    root: str = Field(".stack", description="Data directories, logs and PIDs of every service.")
    s3_port: int = Field(9000, ge=1, le=65535, description="S3-compatible server (moto).")
    prefect_port: int = Field(4200, ge=1, le=65535, description="Prefect server: API and UI.")
    mlflow_port: int = Field(5000, ge=1, le=65535, description="MLflow tracking server and UI.")
    ray_port: int = Field(6379, ge=1, le=65535, description="Ray head node (GCS).")
    worker_port: int = Field(8089, ge=1, le=65535, description="Prefect worker's health endpoint.")
    ray_cpus: int = Field(max(1, os.cpu_count() or 1), ge=1, description="CPUs the Ray head offers.")
    deploy: bool = Field(True, description="Register prefect.yaml's deployments and seed the demo data.")
    s3_secret: SecretStr = Field(
        SecretStr("emt-stack-secret"), description="Secret key of the S3 server (moto accepts any); only in env."
    )
    demo_samples_per_source: int = Field(200, ge=10, description="Size of each pool source of the demo corpus.")

    @property
    def home(self) -> Path:
        return Path(self.root).resolve()


def env(config: StackConfig) -> dict[str, str]:
    """The variables that point the CLI, the flows, the worker and Ray's workers at this stack."""
    return {
        "PREFECT_API_URL": f"http://127.0.0.1:{config.prefect_port}/api",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{config.mlflow_port}",
        "RAY_ADDRESS": f"127.0.0.1:{config.ray_port}",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{config.s3_port}",
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": config.s3_secret.get_secret_value(),
        "AWS_DEFAULT_REGION": "us-east-1",
        # Ray's single-node mode (its macOS default): a loopback --node-ip-address alone still leaves the GCS,
        # raylet and agents listening on every interface; with multi-node clusters off they bind 127.0.0.1 only.
        # Drivers need it too (the flows, a shell that exported this): else they look for a raylet on the
        # machine's external address and wait for ever.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }


def service_env(config: StackConfig) -> dict[str, str]:
    """Every service's environment: the stack's variables over the caller's, state kept under the stack's root."""
    return {
        **os.environ,
        **env(config),
        "PREFECT_HOME": str(config.home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "RAY_AUTH_MODE": "disabled",
        # Ray's default temporary directory (RAY_TMPDIR/ray) is the head's own --temp-dir (made by ``up``): what Ray
        # writes there (its address file) neither depends on nor lands in the machine's shared /tmp/ray.
        "RAY_TMPDIR": str(config.home),
        "AWS_EC2_METADATA_DISABLED": "true",
        "EMT_HOME": str(ROOT),
    }
