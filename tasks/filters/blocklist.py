"""Blocklists the user supplies by URI, matched before anything is embedded or exported.

A list is a text file, one entry per line (``#`` starts a comment): hex SHA-256 or MD5 digests of the image bytes,
hex 64-bit perceptual hashes (``imagehash.phash``, the form most published lists of that kind use) matched within a
Hamming distance, URLs, or domains (a domain also blocks its subdomains). A match is reported by the list's name
only: the image itself is never copied anywhere.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import faiss
import imagehash
import numpy as np
from PIL import Image
from pydantic import Field

from core.settings import Settings, StorageConfig
from core.storage import read_bytes

ListKind = Literal["sha256", "md5", "phash", "url", "domain"]
_HEX_DIGITS = {"sha256": 64, "md5": 32, "phash": 16}


class BlocklistSpec(Settings):
    """One list: where it is, what its entries are, and (perceptual hashes) how close a match must be."""

    name: str = Field(description="Named in every quarantine row the list causes (reason blocklist:NAME).")
    uri: str = Field(description="The list: a text file, local or s3://, one entry per line.")
    kind: ListKind = Field(description="sha256 / md5 (image bytes), phash (64-bit, hex), url or domain.")
    max_distance: int = Field(
        8, ge=0, le=32, description="phash: the largest Hamming distance (of 64 bits) that counts as the same image; "
        "8 holds re-encoded and resized copies.")


def image_phash(image: Image.Image) -> int:
    """The 64-bit DCT perceptual hash of ``image`` (``imagehash.phash``) as an integer."""
    return int(str(imagehash.phash(image)), 16)


def _host(url: str) -> str:
    return (urlsplit(url if "://" in url else f"//{url}").hostname or "").rstrip(".")


def normalise_url(url: str) -> str:
    """Scheme and host lower-cased, fragment dropped: the forms one link is written in compare equal."""
    parts = urlsplit(url.strip())
    netloc = parts.netloc.lower()
    return f"{parts.scheme.lower()}://{netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")


def parse_entries(text: str, kind: ListKind, name: str) -> list[str]:
    """The list's entries, checked: a malformed hash names the list and the line."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if kind in _HEX_DIGITS:
            entry = entry.lower()
            if len(entry) != _HEX_DIGITS[kind] or any(c not in "0123456789abcdef" for c in entry):
                raise ValueError(f"blocklist {name!r} line {number}: not a {kind} hash "
                                 f"({_HEX_DIGITS[kind]} hex digits): {entry[:80]!r}")
        elif kind == "url":
            entry = normalise_url(entry)
        else:
            entry = entry.lower().lstrip("*.").rstrip(".")
        entries.append(entry)
    return entries


@dataclass(frozen=True)
class Match:
    """Which list matched (its name and kind); never the matched content."""

    name: str
    kind: ListKind

    @property
    def reason(self) -> str:
        return f"blocklist:{self.name}"


def read_list(spec: BlocklistSpec, storage: StorageConfig | None = None) -> list[str]:
    """The entries of the list ``spec`` names (``ValueError`` naming a missing or malformed list)."""
    try:
        text = read_bytes(spec.uri, storage).decode()
    except FileNotFoundError:
        raise ValueError(f"blocklist {spec.name!r}: no file at {spec.uri}") from None
    return parse_entries(text, spec.kind, spec.name)


class Blocklists:
    """Every configured list, loaded once (per worker) and matched per sample."""

    def __init__(self, lists: list[tuple[BlocklistSpec, list[str]]]) -> None:
        self._exact: dict[str, dict[str, str]] = {"sha256": {}, "md5": {}, "url": {}, "domain": {}}
        self._phash: list[tuple[BlocklistSpec, faiss.IndexBinaryFlat]] = []
        for spec, entries in lists:
            if spec.kind == "phash" and entries:
                index = faiss.IndexBinaryFlat(64)
                codes = np.array([int(e, 16) for e in entries], dtype=">u8").view(np.uint8).reshape(-1, 8)
                index.add(codes)
                self._phash.append((spec, index))
            elif spec.kind != "phash":
                self._exact[spec.kind].update(dict.fromkeys(entries, spec.name))
        self.sizes = {spec.name: len(entries) for spec, entries in lists}

    @classmethod
    def load(cls, specs: list[BlocklistSpec], storage: StorageConfig | None = None) -> Blocklists:
        """Read and check every list (a missing or malformed one is an error naming it)."""
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"blocklist names must differ: {names}")
        return cls([(spec, read_list(spec, storage)) for spec in specs])

    @property
    def needs_pixels(self) -> bool:
        """Whether matching decodes the image (perceptual hashes do; digests and URLs do not)."""
        return bool(self._phash)

    def match(self, image: bytes | None, url: str | None = None) -> Match | None:
        """The first list ``image`` (encoded bytes) or ``url`` is on, or None. An undecodable image matches no
        perceptual hash (the reader quarantines it anyway)."""
        if url:
            if (name := self._exact["url"].get(normalise_url(url))) is not None:
                return Match(name, "url")
            host = _host(url)
            parts = host.split(".")
            for i in range(len(parts)):
                if (name := self._exact["domain"].get(".".join(parts[i:]))) is not None:
                    return Match(name, "domain")
        if not image:
            return None
        for kind, digest in (("sha256", hashlib.sha256), ("md5", hashlib.md5)):
            if self._exact[kind] and (name := self._exact[kind].get(digest(image).hexdigest())) is not None:
                return Match(name, kind)
        if self._phash:
            try:
                with Image.open(io.BytesIO(image)) as img:
                    code = image_phash(img.convert("RGB"))
            except Exception:  # Pillow raises many types for bad bytes: not a perceptual match
                return None
            query = np.array([code], dtype=">u8").view(np.uint8).reshape(1, 8)
            for spec, index in self._phash:
                distances, _ = index.search(query, 1)
                if distances[0, 0] <= spec.max_distance:
                    return Match(spec.name, "phash")
        return None
