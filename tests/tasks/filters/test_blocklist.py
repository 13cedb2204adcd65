"""Blocklists: exact digests, perceptual hashes that still match re-encoded and resized copies (and nothing else),
URLs and domains; a bad or missing list is an error naming it; a match names the list, never the content."""

from __future__ import annotations

import hashlib

import pytest

from tasks.filters.blocklist import Blocklists, BlocklistSpec, image_phash, parse_entries
from tests.tasks.filters.conftest import encode, photo


def _lists(tmp_path, **entries: tuple[str, list[str]]) -> Blocklists:
    specs = []
    for name, (kind, lines) in entries.items():
        path = tmp_path / f"{name}.txt"
        path.write_text("# a comment line\n" + "\n".join(lines) + "\n")
        specs.append(BlocklistSpec(name=name, uri=str(path), kind=kind))
    return Blocklists.load(specs)


def test_exact_digests_match_the_bytes_only(tmp_path):
    banned = encode(photo(1))
    lists = _lists(tmp_path, sha=("sha256", [hashlib.sha256(banned).hexdigest().upper()]),
                   md=("md5", [hashlib.md5(encode(photo(2))).hexdigest() + "  # trailing comment"]))
    assert lists.match(banned).reason == "blocklist:sha"
    assert lists.match(encode(photo(2))).reason == "blocklist:md"
    assert lists.match(encode(photo(1), "JPEG", quality=90)) is None  # other bytes: a digest cannot see it
    assert lists.match(encode(photo(3))) is None and lists.match(None) is None


def test_perceptual_hashes_match_re_encoded_and_resized_copies_and_not_other_images(tmp_path):
    banned = photo(1)
    lists = _lists(tmp_path, known=("phash", [f"{image_phash(banned):016x}"]))
    copies = [encode(banned, "JPEG", quality=60), encode(banned.resize((48, 48))), encode(banned.resize((200, 200)),
              "WEBP"), encode(banned.crop((3, 3, 93, 93)))]
    for copy in copies:
        match = lists.match(copy)
        assert match is not None and match.reason == "blocklist:known" and match.kind == "phash"
    assert [lists.match(encode(photo(seed))) for seed in range(2, 42)] == [None] * 40
    assert lists.match(b"not an image") is None


def test_urls_and_domains_with_their_subdomains(tmp_path):
    lists = _lists(tmp_path, links=("url", ["HTTPS://Example.org/a/b.jpg#frag"]), hosts=("domain", ["bad.example"]))
    assert lists.match(None, "https://example.org/a/b.jpg").reason == "blocklist:links"
    assert lists.match(None, "https://example.org/a/c.jpg") is None
    assert lists.match(None, "http://cdn.img.bad.example/x.png").reason == "blocklist:hosts"
    assert lists.match(None, "http://notbad.example/x.png") is None


@pytest.mark.parametrize("kind, line", [("sha256", "abc"), ("md5", "z" * 32), ("phash", "0" * 15)])
def test_a_malformed_entry_names_the_list_and_line(kind, line):
    with pytest.raises(ValueError, match=rf"blocklist 'mine' line 2: not a {kind} hash"):
        parse_entries(f"# header\n{line}\n", kind, "mine")


def test_a_missing_list_or_a_repeated_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="blocklist 'gone': no file at"):
        Blocklists.load([BlocklistSpec(name="gone", uri=str(tmp_path / "nope.txt"), kind="sha256")])
    (tmp_path / "a.txt").write_text("")
    spec = BlocklistSpec(name="a", uri=str(tmp_path / "a.txt"), kind="phash")
    with pytest.raises(ValueError, match="names must differ"):
        Blocklists.load([spec, spec])
    assert Blocklists.load([spec]).match(encode(photo(1))) is None  # an empty list matches nothing
