"""Files.matching: the files a glob with brace alternatives names, as a series of checkpoints lists them."""

import pytest

from casflow.storage.sources import Files, TooManyFiles


def _files(max_files: int = 100) -> Files:
    return Files(max_file_bytes=2**20, max_files=max_files)


def test_matching_lists_files_in_the_patterns_own_form(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ["runs/a/ckpt-1.pt", "runs/a/ckpt-20.pt", "runs/b/ckpt-3.pt", "runs/c/ckpt-4.pt", "runs/a/notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "runs/a/ckpt-dir.pt").mkdir()  # a folder is no checkpoint file
    assert _files().matching("runs/{a,b}/ckpt-*.pt") == ["runs/a/ckpt-1.pt", "runs/a/ckpt-20.pt", "runs/b/ckpt-3.pt"]
    assert _files().matching(f"file://{tmp_path}/runs/c/ckpt-?.pt") == [f"file://{tmp_path}/runs/c/ckpt-4.pt"]
    assert _files().matching("runs/x/*.pt") == []


def test_matching_is_bounded_by_max_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for step in range(5):
        (tmp_path / f"ckpt-{step}.pt").write_bytes(b"x")
    with pytest.raises(TooManyFiles, match=r"ckpt-\*\.pt: more than limits.max_files \(3\)"):
        _files(max_files=3).matching("ckpt-*.pt")
    with pytest.raises(TooManyFiles, match="more than limits.max_files"):
        _files(max_files=3).matching("ckpt-{0..9}*.pt")
