"""The foundation every other package may import, and which imports nothing of the product: settings
(``core.settings``), one way to open any URI (``core.storage``), the data contracts (``core.contracts``), the
readers of the contracts' sources (``core.read``) and the manifest's writer and reader (``core.manifest``).

It needs only pyarrow, fsspec/s3fs, pydantic, PyYAML and Pillow (PyAV for LeRobot video), so a consumer of
curated manifests can read them without torch, Ray, Prefect or MLflow.
"""
