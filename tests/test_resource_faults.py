"""A full disk or a read-only folder during save, fit and reproduce: a clear error naming the
path, and no state corrupted.

The disks are small tmpfs mounts (this needs root, as on the CI machine; elsewhere the tests
are skipped with the reason). Root ignores file permissions, which is why a read-only mount,
not ``chmod``, makes the read-only folder.
"""
import errno
import os
import subprocess
from pathlib import Path

import pytest

from clamu_helpers.__main__ import main
from clamu_helpers.core.errors import StorageError
from clamu_helpers.settings.synthetic import SyntheticSetting
from clamu_helpers.training.store import TaskVectorStore
from clamu_helpers.unlearning.system import UnlearningSystem


class Disk:
    """A tmpfs of ``size`` bytes mounted at ``path``."""

    def __init__(self, path: Path, size: int):
        self.path = path
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            path.rmdir()
            pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'not root'})")

    def read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)

    def fill(self, leave: int) -> Path:
        """Fill the disk up to ``leave`` free bytes with one file (returned)."""
        st = os.statvfs(self.path)
        free = st.f_bavail * st.f_frsize
        filler = self.path / "filler"
        with open(filler, "wb") as f:
            f.write(b"\0" * max(0, free - leave))
        return filler

    def umount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@pytest.fixture
def disk(tmp_path):
    made = []

    def make(size: int) -> Disk:
        d = Disk(tmp_path / f"disk{len(made)}", size)
        made.append(d)
        return d
    yield make
    for d in made:
        d.umount()


def _state_bytes(tmp_path, system) -> int:
    probe = tmp_path / "probe"
    system.save(probe)
    return sum(p.stat().st_size for p in probe.rglob("*") if p.is_file())


def test_a_full_disk_during_save_names_the_path_and_keeps_the_old_state(tmp_path, disk):
    setting = SyntheticSetting(tasks=4)
    system = UnlearningSystem(setting, "merge").fit()
    size = _state_bytes(tmp_path, system)
    fs = disk(4 * size + (1 << 20))
    where = fs.path / "system"
    old = system.save(where)["digest"]
    filler = fs.fill(leave=size // 3)
    system.unlearn(["s01"])
    with pytest.raises(StorageError, match=rf"cannot write a saved state at {where}: No space left on device"):
        system.save(where)
    assert sorted(p.name for p in where.iterdir()) == ["current.json", "state-000001"]   # nothing left behind
    assert UnlearningSystem.load(where, setting).served_digest() == old
    filler.unlink()   # space again: the same request is saved
    assert system.save(where)["digest"] == UnlearningSystem.load(where, setting).served_digest() != old


def test_a_read_only_folder_refuses_save_and_still_loads(tmp_path, disk):
    setting = SyntheticSetting(tasks=4)
    fs = disk(8 << 20)
    where = fs.path / "system"
    system = UnlearningSystem(setting, "merge").fit()
    old = system.save(where)["digest"]
    (where / ".tmp-state-000009-1-ab").mkdir()   # an interrupted save's leftover: load cleans it up if it can
    fs.read_only()
    system.unlearn(["s02"])
    with pytest.raises(StorageError, match=rf"at {where}: Read-only file system \(the file system is read-only"):
        system.save(where)
    assert UnlearningSystem.load(where, setting).served_digest() == old   # serving from read-only media


def test_a_read_only_or_full_cache_during_fit_names_the_cache(tmp_path, disk):
    setting = SyntheticSetting(tasks=3)
    fs = disk(8 << 20)
    fs.read_only()
    with pytest.raises(StorageError, match=rf"the task-vector store .*at {fs.path / 'tv'}: Read-only"):
        TaskVectorStore(fs.path / "tv")
    full = disk(1 << 20)
    store = TaskVectorStore(full.path / "tv")
    full.fill(leave=0)
    with pytest.raises(StorageError, match=rf"cannot write a file at {full.path / 'tv'}/.*No space left on device"):
        UnlearningSystem(setting, "merge", store=store).fit()
    assert not [p for p in (full.path / "tv").rglob("*.safetensors")]   # no torn vector left to be trusted


def test_reproduce_into_a_read_only_folder_is_one_line(tmp_path, disk, capsys):
    fs = disk(1 << 20)
    fs.read_only()
    assert main(["reproduce", "--profile", "smoke", "--out", str(fs.path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot write the reproduction's outputs (--out) at ") and "\n" not in err
    assert "Read-only file system" in err or os.strerror(errno.EROFS) in err
