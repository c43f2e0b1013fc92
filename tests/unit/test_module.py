"""Module manifests: what `check_module` refuses, each with its stable code."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from folders.module import (MANIFEST_NAME, Manifest, ModuleError, check_module, collect_files,
                            file_changes, verify_manifest)
from tests.unit.tracekit import node_keys

KEYS, TRUSTED = node_keys("laptop", "desktop")


def publish(root: Path, name: str = "notes", author: str = "laptop", key=None, version: str = "1.0",
            files: dict[str, str] | None = None, entry: str = "reason.py") -> Manifest:
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    for rel, text in (files or {"reason.py": "print('hi')\n", "lib/util.py": "X = 1\n"}).items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_text(text)
    manifest = Manifest.create(name=name, version=version, author=author, entry=entry, serves=["plans"],
                               files=collect_files(directory), key=key or KEYS[author])
    (directory / MANIFEST_NAME).write_bytes(manifest.to_bytes())
    return manifest


def refusal(directory: Path, trusted=TRUSTED) -> str:
    with pytest.raises(ModuleError) as caught:
        check_module(directory, trusted)
    message = str(caught.value)
    assert "\n" not in message and message.endswith((".", ")")), message
    return caught.value.code


def test_a_signed_module_passes_and_every_kind_of_tampering_has_its_code(tmp_path):
    manifest = publish(tmp_path)
    module = tmp_path / "notes"
    assert check_module(module, TRUSTED) == manifest and not manifest.is_python
    (module / "lib" / ".syncthing.util.py.tmp").write_text("half-arrived")  # hidden: ignored
    assert check_module(module, TRUSTED) == manifest

    (module / "lib" / "util.py").write_text("X = 2\n")
    assert refusal(module) == "file_mismatch"
    (module / "lib" / "util.py").write_text("X = 1\n")
    (module / "extra.py").write_text("import os\n")
    assert refusal(module) == "unlisted"
    (module / "extra.py").unlink()
    os.symlink("/etc/passwd", module / "passwd")
    assert refusal(module) == "link"
    (module / "passwd").unlink()
    (module / "lib" / "util.py").unlink()
    os.symlink("/etc/hostname", module / "lib" / "util.py")
    assert refusal(module) == "link"
    (module / "lib" / "util.py").unlink()
    assert refusal(module) == "missing"
    (module / "lib" / "util.py").write_text("X = 1\n")
    os.mkfifo(module / "fifo")
    assert refusal(module) == "not_a_file"
    (module / "fifo").unlink()
    assert check_module(module, TRUSTED) == manifest

    renamed = tmp_path / "other"
    module.rename(renamed)
    assert refusal(renamed) == "wrong_name"
    renamed.rename(module)
    os.symlink(module, tmp_path / "alias")
    assert refusal(tmp_path / "alias") == "link"

    assert refusal(module, {"desktop": TRUSTED["desktop"]}) == "untrusted_author"
    data = json.loads((module / MANIFEST_NAME).read_text())
    (module / MANIFEST_NAME).write_text(json.dumps({**data, "version": "9.9"}))
    assert refusal(module) == "bad_hash"
    (module / MANIFEST_NAME).write_text(json.dumps({**data, "files": {**data["files"], "../x": data["files"]["reason.py"]}}))
    assert refusal(module) == "bad_path"
    (module / MANIFEST_NAME).write_text(json.dumps({**data, "entry": "/bin/sh"}))
    assert refusal(module) == "bad_manifest"
    (module / MANIFEST_NAME).write_text(" " * (64 * 1024 + 1))
    assert refusal(module) == "too_large"
    (module / MANIFEST_NAME).write_text("{not json")
    assert refusal(module) == "bad_manifest"


def test_a_module_claiming_another_author_or_signed_by_a_stranger_is_refused(tmp_path):
    publish(tmp_path, "claims", author="desktop", key=KEYS["laptop"])
    assert refusal(tmp_path / "claims") == "wrong_author"
    stranger, _ = node_keys("stranger")
    publish(tmp_path, "forged", author="desktop", key=stranger["stranger"])
    assert refusal(tmp_path / "forged") == "bad_signature"
    publish(tmp_path, "outsider", author="stranger", key=stranger["stranger"])
    assert refusal(tmp_path / "outsider") == "untrusted_author"


def test_publishing_refuses_links_and_diffs_name_the_files(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.py").write_text("1")
    os.symlink("/etc/passwd", source / "b.py")
    with pytest.raises(ModuleError) as caught:
        collect_files(source)
    assert caught.value.code == "link"
    old = publish(tmp_path / "v1", files={"a.py": "1", "b.py": "2"}, entry="a.py")
    new = publish(tmp_path / "v2", files={"a.py": "1", "b.py": "3", "c.py": "4"}, version="1.1", entry="a.py")
    (tmp_path / "v2" / "notes" / "b.py").unlink()
    assert file_changes(old, new) == {"added": ["c.py"], "removed": [], "changed": ["b.py"]}


@settings(max_examples=40, deadline=None)
@given(version=st.from_regex(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}", fullmatch=True),
       serves=st.lists(st.text(min_size=1, max_size=40), max_size=5),
       entry=st.sampled_from(["main.py", "pkg.mod:run"]))
def test_manifests_round_trip_through_their_bytes_and_verify(version, serves, entry):
    digest = "sha256:" + "0" * 64
    manifest = Manifest.create(name="m", version=version, author="laptop", entry=entry, serves=serves,
                               files={"main.py": digest, "pkg/mod.py": digest}, key=KEYS["laptop"])
    again = Manifest.from_dict(json.loads(manifest.to_bytes()))
    assert again == manifest and again.to_bytes() == manifest.to_bytes()
    verify_manifest(again, TRUSTED)
