"""A ``Location``: a URI bound to the storage settings that open it (datatrove's ``DataFolder`` is the model).

One value travels instead of a URI string and a ``StorageConfig`` side by side, so the two can never part on the
way to a worker. It is frozen and picklable: the fsspec filesystem is built on first use in each process and never
pickled (an s3fs client holds sockets and an event loop). The work is the functions of ``core.storage``; a
``Location`` only carries their two arguments.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cached_property
from typing import IO, Any

import fsspec
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from core import storage as st
from core.model_files import localize
from core.settings import StorageConfig


@dataclass(frozen=True)
class Location:
    """``uri`` (a local path, ``file://`` or ``s3://``) and the ``storage`` settings that reach it."""

    uri: str
    storage: StorageConfig | None = None

    def __str__(self) -> str:
        return self.uri

    def __hash__(self) -> int:
        return hash(self.uri)  # a StorageConfig is not hashable; equal locations still hash alike

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri, "storage": self.storage}  # the cached filesystems stay behind

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @classmethod
    def of(cls, where: str | Location, storage: StorageConfig | None = None) -> Location:
        """``where`` as a location: a string is a local path or a URI reached with ``storage`` (default settings
        where None); a location keeps its own."""
        return where if isinstance(where, Location) else cls(where, storage)

    def join(self, *parts: str) -> Location:
        """The location ``parts`` below this one, on the same storage."""
        return Location(st.join(self.uri, *parts), self.storage)

    def with_suffix(self, suffix: str) -> Location:
        """This location with ``suffix`` appended to its last part (``entry`` → ``entry.parquet``)."""
        return Location(self.uri + suffix, self.storage)

    @property
    def protocol(self) -> str:
        return st.protocol_of(self.uri)

    @cached_property
    def _fs_path(self) -> tuple[fsspec.AbstractFileSystem, str]:
        return st.filesystem(self.uri, self.storage)

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return self._fs_path[0]

    @property
    def path(self) -> str:
        """The path within ``fs`` (the URI without its scheme)."""
        return self._fs_path[1]

    @cached_property
    def _arrow_fs_path(self) -> tuple[pafs.FileSystem, str]:
        return st.arrow_filesystem(self.uri, self.storage)

    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.path)

    def open(self, mode: str = "rb") -> IO[bytes]:
        """The object opened for reading (write through ``publish_bytes``/``write_parquet``, which publish)."""
        return self.fs.open(self.path, mode)

    def local_copy(self) -> str:
        """A local path holding what is here (``core.model_files.localize``: remote objects copied once)."""
        return localize(self.uri, self.storage)

    def publish(self) -> AbstractContextManager[IO[bytes]]:
        """A file to stream into, published here only when the ``with`` block ends without error."""
        return st.publish(self.uri, self.storage)

    def publish_bytes(self, data: bytes) -> None:
        st.publish_bytes(self.uri, data, self.storage)

    def write_parquet(self, table: pa.Table, **kwargs: Any) -> None:
        """Publish ``table`` as one Parquet file here (``kwargs`` go to ``pyarrow.parquet.write_table``)."""
        st.write_parquet(table, self.uri, self.storage, **kwargs)

    def parquet_file(self) -> pq.ParquetFile:
        """The Parquet file here, open for footer and row-group reads (close it, or use it in a ``with``)."""
        fs, path = self._arrow_fs_path
        return pq.ParquetFile(path, filesystem=fs)

    def read_parquet(self, columns: list[str] | None = None) -> pa.Table:
        fs, path = self._arrow_fs_path
        return pq.read_table(path, filesystem=fs, columns=columns)

    def arrow_filesystem(self) -> tuple[pafs.FileSystem, str]:
        """The pyarrow filesystem and path (for ``pyarrow.dataset`` and Ray Data's ``filesystem=``)."""
        return self._arrow_fs_path
