"""The data layer on small synthetic archives: loading, safety, split, statistics, CLI errors."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import subprocess
import tarfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from cifar_archive import py2_pickle_bytes, write_archive, write_cifar100
from cli_helpers import assert_one_line_error, run_hpstudy
from unit_fixtures import run_here

from hpstudy.data import (
    ARCHIVE_MD5,
    channel_stats,
    class_proportions,
    dataset_info,
    default_root,
    download,
    load_cifar100,
    resolve_root,
    split_indices,
)
from hpstudy.errors import HpstudyError

UNREACHABLE_URL = "http://127.0.0.1:9/cifar-100-python.tar.gz"


def small_root(tmp_path: Path, n_train: int = 20, n_test: int = 10) -> Path:
    """A private data root that a test may damage."""
    root = tmp_path / "data"
    write_cifar100(root, n_train=n_train, n_test=n_test)
    return root


def batch(data: np.ndarray, fine: list[int], coarse: list[int] | None = None) -> dict:
    return {
        b"data": data,
        b"fine_labels": fine,
        b"coarse_labels": coarse if coarse is not None else [f // 5 for f in fine],
        b"batch_label": b"test batch",
        b"filenames": [b"x.png"] * len(fine),
    }


class RunsCommand:
    """Unpickling this calls os.system(command): what a hostile 'train' file would do."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class EvalsCode:
    def __reduce__(self):
        return (eval, ("1 + 1",))


# --- loading -----------------------------------------------------------------------------


def test_load_synthetic_shapes_and_dtypes(synthetic_root: Path) -> None:
    data = load_cifar100(synthetic_root, verify=False)
    for split, n in ((data.train, 500), (data.test, 100)):
        assert split.images.shape == (n, 3, 32, 32)
        assert split.images.dtype == torch.uint8
        assert split.images.is_contiguous()
        assert split.fine.dtype == split.coarse.dtype == torch.int64
        assert split.fine.shape == split.coarse.shape == (n,)
        assert torch.equal(split.coarse, split.fine // 5)
    assert set(data.train.fine.tolist()) == set(range(10))
    assert data.fine_names[:2] == ["class_00", "class_01"] and len(data.fine_names) == 100
    assert data.coarse_names[-1] == "super_19" and len(data.coarse_names) == 20


def test_pixel_planes_round_trip(tmp_path: Path) -> None:
    root = small_root(tmp_path)
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    red, green, blue = rows, cols, 100 + rows + cols  # distinct and not symmetric
    image = np.stack([red, green, blue]).astype(np.uint8)
    # official row layout: all of R row-major, then all of G, then all of B
    row = np.concatenate([red.ravel(), green.ravel(), blue.ravel()]).astype(np.uint8)
    data = np.stack([row, np.full(3072, 7, np.uint8)])
    (root / "cifar-100-python" / "train").write_bytes(py2_pickle_bytes(batch(data, [42, 3])))

    train = load_cifar100(root, verify=False).train
    assert torch.equal(train.images[0], torch.from_numpy(image))
    assert train.images[0, 0, 5, 9] == 5 and train.images[0, 1, 5, 9] == 9
    assert train.images[0, 2, 5, 9] == 114
    assert (train.images[1] == 7).all()
    assert train.fine.tolist() == [42, 3] and train.coarse.tolist() == [8, 0]


def test_python3_pickle_with_str_names_accepted(tmp_path: Path) -> None:
    root = small_root(tmp_path)
    meta = {
        b"fine_label_names": [f"f{i}" for i in range(100)],
        b"coarse_label_names": [f"c{i}" for i in range(20)],
    }
    (root / "cifar-100-python" / "meta").write_bytes(pickle.dumps(meta, protocol=4))
    assert load_cifar100(root, verify=False).fine_names[99] == "f99"


def test_wrong_md5_refused_when_verifying(synthetic_root: Path) -> None:
    with pytest.raises(HpstudyError) as err:
        load_cifar100(synthetic_root, verify=True)
    message = str(err.value)
    assert str(synthetic_root / "cifar-100-python") in message
    assert "md5" in message and "--no-verify" in message and "\n" not in message


def test_truncated_pickle_names_file(tmp_path: Path) -> None:
    root = small_root(tmp_path)
    train = root / "cifar-100-python" / "train"
    train.write_bytes(train.read_bytes()[: train.stat().st_size // 2])
    with pytest.raises(HpstudyError, match="truncated") as err:
        load_cifar100(root, verify=False)
    assert str(train) in str(err.value)


@pytest.mark.parametrize("content", [b"", b"not a pickle at all\n", b"\x80\x02}q\x00(U\x04dat"])
def test_garbage_file_names_file(tmp_path: Path, content: bytes) -> None:
    root = small_root(tmp_path)
    test = root / "cifar-100-python" / "test"
    test.write_bytes(content)
    with pytest.raises(HpstudyError) as err:
        load_cifar100(root, verify=False)
    assert str(test) in str(err.value)


GOOD = np.zeros((2, 3072), np.uint8)


@pytest.mark.parametrize(
    ("obj", "problem"),
    [
        ([1, 2, 3], "not dict"),
        ({b"fine_labels": [0, 1], b"coarse_labels": [0, 0]}, "no 'data' key"),
        (batch(np.zeros((2, 3071), np.uint8), [0, 1]), "(N, 3072)"),
        (batch(np.zeros((2, 3072), np.int32), [0, 1]), "uint8"),
        (batch(GOOD, [0, 100]), "'fine_labels' has values in 0..100"),
        (batch(GOOD, [0, -1]), "'fine_labels' has values in -1..0"),
        (batch(GOOD, [0, 1], [0, 20]), "'coarse_labels' has values"),
        (batch(GOOD, [0, 1, 2]), "'fine_labels' has shape (3,)"),
        (batch(GOOD, [b"a", b"b"], [0, 0]), "'fine_labels' is not a list of integers"),
    ],
)
def test_wrong_structure_names_file_and_problem(tmp_path: Path, obj: object, problem: str) -> None:
    root = small_root(tmp_path)
    train = root / "cifar-100-python" / "train"
    train.write_bytes(py2_pickle_bytes(obj))
    with pytest.raises(HpstudyError) as err:
        load_cifar100(root, verify=False)
    assert str(train) in str(err.value) and problem in str(err.value)


# --- the restricted unpickler --------------------------------------------------------------


def test_pickle_calling_os_system_is_refused_and_never_runs(tmp_path: Path) -> None:
    root = small_root(tmp_path)
    marker = tmp_path / "pwned"
    payload = pickle.dumps(RunsCommand(f"touch {marker}"), protocol=2)
    train = root / "cifar-100-python" / "train"
    train.write_bytes(payload)

    with pytest.raises(HpstudyError, match=r"refusing to unpickle \w+\.system") as err:
        load_cifar100(root, verify=False)
    assert str(train) in str(err.value)
    assert not marker.exists()
    # the payload is live: plain pickle would have run the command
    pickle.loads(payload)
    assert marker.exists()


@pytest.mark.parametrize(
    "obj",
    [
        EvalsCode(),
        {b"data": RunsCommand("true"), b"fine_labels": [], b"coarse_labels": []},
        {b"data": np.zeros((1, 3072), np.uint8), b"x": torch.zeros(1)},
        np.array([RunsCommand("true")], dtype=object),  # arrays can hold any object
    ],
    ids=["eval", "nested-os-system", "torch", "object-array-payload"],
)
def test_anything_beyond_numpy_arrays_is_refused(tmp_path: Path, obj: object) -> None:
    root = small_root(tmp_path)
    (root / "cifar-100-python" / "train").write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(HpstudyError, match="refusing to unpickle"):
        load_cifar100(root, verify=False)


# --- download and extraction ---------------------------------------------------------------


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """A synthetic cifar-100-python.tar.gz packed like the official one (not its md5)."""
    source = tmp_path / "source"
    write_cifar100(source, n_train=20, n_test=10)
    return write_archive(source, tmp_path / "cifar-100-python.tar.gz")


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def test_download_from_file_url_extracts_and_loads(
    tmp_path: Path, archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPSTUDY_CIFAR100_URL", archive.as_uri())
    root = tmp_path / "root" / "nested"
    folder = download(root, verify=False)
    assert folder == root / "cifar-100-python"
    assert sorted(p.name for p in folder.iterdir()) == ["meta", "test", "train"]
    assert (root / "cifar-100-python.tar.gz").read_bytes() == archive.read_bytes()
    assert leftovers(root) == []
    assert load_cifar100(root, verify=False).train.images.shape == (20, 3, 32, 32)


def test_load_downloads_a_missing_dataset(
    tmp_path: Path, archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPSTUDY_CIFAR100_URL", archive.as_uri())
    assert load_cifar100(tmp_path / "root", verify=False).test.fine.shape == (10,)


def test_download_with_wrong_archive_md5_keeps_nothing(
    tmp_path: Path, archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPSTUDY_CIFAR100_URL", archive.as_uri())
    root = tmp_path / "root"
    with pytest.raises(HpstudyError) as err:
        download(root, verify=True)
    message = str(err.value)
    assert archive.as_uri() in message and ARCHIVE_MD5 in message
    assert hashlib.md5(archive.read_bytes()).hexdigest() in message
    assert not root.exists()  # nothing kept, not even the folder the download made


def test_download_does_nothing_when_data_present(synthetic_root: Path) -> None:
    # the autouse fixture points the URL at a closed port: any fetch would fail
    assert download(synthetic_root) == synthetic_root / "cifar-100-python"


def test_archive_already_in_root_is_extracted_not_fetched(tmp_path: Path, archive: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    archive.rename(root / "cifar-100-python.tar.gz")
    with pytest.raises(HpstudyError, match=r"cifar-100-python\.tar\.gz: md5"):
        download(root, verify=True)
    assert download(root, verify=False) == root / "cifar-100-python"
    assert (root / "cifar-100-python" / "train").is_file()


def test_truncated_archive_in_root_names_it(tmp_path: Path, archive: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "cifar-100-python.tar.gz").write_bytes(archive.read_bytes()[:5000])
    with pytest.raises(HpstudyError, match=r"cifar-100-python\.tar\.gz: cannot extract"):
        download(root, verify=False)
    assert sorted(p.name for p in root.iterdir()) == ["cifar-100-python.tar.gz"]


def hostile_tar(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


NAMES = {"dotdot": "../evil", "dotdot2": "../../evil", "inside": "cifar-100-python/../../evil"}


@pytest.mark.parametrize("kind", [*NAMES, "absolute", "symlink", "hardlink", "device"])
def test_hostile_archive_members_are_refused(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "evil"
    member = tarfile.TarInfo({**NAMES, "absolute": str(outside)}.get(kind, "x"))
    if kind == "symlink":
        member.type, member.linkname = tarfile.SYMTYPE, str(outside)
    elif kind == "hardlink":
        member.type, member.linkname = tarfile.LNKTYPE, "../evil"
    elif kind == "device":
        member.type = tarfile.CHRTYPE
    else:
        member.size = 4
    tar = hostile_tar(tmp_path / "hostile.tar.gz", member, b"evil")
    monkeypatch.setenv("HPSTUDY_CIFAR100_URL", tar.as_uri())

    with pytest.raises(HpstudyError, match="refusing member"):
        download(root, verify=False)
    assert not outside.exists()
    assert not root.exists()  # not even the archive (it must not be reused), nor the folder


def test_archive_without_the_dataset_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    member = tarfile.TarInfo("readme.txt")
    member.size = 2
    tar = hostile_tar(tmp_path / "other.tar.gz", member, b"hi")
    monkeypatch.setenv("HPSTUDY_CIFAR100_URL", tar.as_uri())
    with pytest.raises(HpstudyError, match=r"has no cifar-100-python/"):
        download(tmp_path / "root", verify=False)


def test_unreachable_url_fails_fast_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fast by construction, not by a clock: one attempt, which nothing on port 9 accepts, no
    # retry to wait for, and a timeout so that a server that never answers cannot hang it
    timeouts: list[float | None] = []
    urlopen = urllib.request.urlopen

    def counted(url: str, *args: object, **kwargs: object) -> object:
        timeouts.append(kwargs.get("timeout"))  # type: ignore[arg-type]
        return urlopen(url, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(urllib.request, "urlopen", counted)
    root = tmp_path / "empty"
    with pytest.raises(HpstudyError) as err:
        load_cifar100(root)
    assert len(timeouts) == 1 and timeouts[0] is not None and 0 < timeouts[0] < math.inf
    message = str(err.value)
    assert message.startswith(f"cannot download CIFAR-100 from {UNREACHABLE_URL}: ")
    assert str(root) in message and "\n" not in message
    assert not root.exists()


def test_default_root_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp_path = tmp_path.resolve()
    monkeypatch.setenv("HPSTUDY_DATA", str(tmp_path / "mine"))
    assert default_root() == tmp_path / "mine"
    assert resolve_root(None) == tmp_path / "mine"
    assert resolve_root(tmp_path / "other") == tmp_path / "other"
    monkeypatch.delenv("HPSTUDY_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_root() == tmp_path / "cache" / "hpstudy" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / ".cache" / "hpstudy" / "data"


# --- split and statistics ------------------------------------------------------------------


@pytest.mark.parametrize(("n", "val_size"), [(50000, 10000), (500, 100), (7, 1)])
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_split_equals_random_split(n: int, val_size: int, seed: int) -> None:
    torch.manual_seed(seed)
    want_train, want_val = torch.utils.data.random_split(range(n), [n - val_size, val_size])
    train, val = split_indices(n, val_size, seed)
    assert train.tolist() == list(want_train.indices)
    assert val.tolist() == list(want_val.indices)


def test_split_depends_on_seed_and_covers_everything() -> None:
    train, val = split_indices(100, 20, seed=0)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(100))
    assert not torch.equal(val, split_indices(100, 20, seed=1)[1])


@pytest.mark.parametrize("val_size", [0, -1, 10, 11])
def test_split_rejects_impossible_sizes(val_size: int) -> None:
    with pytest.raises(HpstudyError, match=str(val_size)):
        split_indices(10, val_size, seed=0)


def test_channel_stats_equal_float64_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (37, 3, 5, 7), dtype=torch.uint8, generator=gen)
    images[:, 2] //= 4  # channels must differ for the test to see a mix-up
    x = images.double() / 255
    want_mean = x.mean(dim=(0, 2, 3))
    want_std = x.permute(1, 0, 2, 3).reshape(3, -1).std(dim=1, correction=0)
    for chunk in (8, 4096):  # a partial last chunk and one chunk only
        mean, std = channel_stats(images, chunk=chunk)
        assert mean == pytest.approx(want_mean.tolist(), abs=1e-12)
        assert std == pytest.approx(want_std.tolist(), abs=1e-12)
        assert all(isinstance(v, float) for v in mean + std)


def test_channel_stats_of_constant_images() -> None:
    mean, std = channel_stats(torch.full((3, 3, 2, 2), 51, dtype=torch.uint8))
    assert mean == pytest.approx([0.2] * 3) and std == [0.0] * 3


def test_class_proportions() -> None:
    props = class_proportions(torch.tensor([0, 0, 1, 3]), num_classes=5)
    assert props.dtype == torch.float64
    assert props.tolist() == [0.5, 0.25, 0.0, 0.25, 0.0]
    with pytest.raises(ValueError):
        class_proportions(torch.tensor([5]), num_classes=5)


def val_sha256(n: int, val_size: int, seed: int) -> str:
    _, val = split_indices(n, val_size, seed)
    return hashlib.sha256("".join(f"{i}\n" for i in val.tolist()).encode()).hexdigest()


def test_dataset_info_on_synthetic(synthetic_root: Path) -> None:
    info = dataset_info(synthetic_root, seed=3, verify=False)
    assert (info["train_size"], info["val_size"], info["test_size"]) == (400, 100, 100)
    assert info["val_indices_sha256"] == val_sha256(500, 100, 3)
    assert info["root"] == str(synthetic_root) and info["split_seed"] == 3
    data = load_cifar100(synthetic_root, verify=False)
    train_idx, _ = split_indices(500, 100, 3)
    assert (info["mean"], info["std"]) == channel_stats(data.train.images[train_idx])
    # 10 of 100 classes used: proportions over 100 classes average to exactly 1/100
    assert info["class_proportion_min"] == 0.0
    assert info["class_proportion_mean"] == pytest.approx(0.01)
    assert 0.07 < info["class_proportion_max"] < 0.14
    json.dumps(info)  # JSON-ready


# --- through the CLI: one line, no traceback -----------------------------------------------
# The errors run `hpstudy.cli.main` in this process: the command's own error handling and
# exit status, without a torch import (4 s) per case. The JSON output comes from a real
# process: what a caller reads from its stdout must be JSON and nothing else.

Hpstudy = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def hpstudy_here(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Hpstudy:
    """`hpstudy ARGS` in this process, with the environment `hpstudy` below gives a new one."""

    def run(*args: str, data_home: Path) -> subprocess.CompletedProcess[str]:
        monkeypatch.setenv("HPSTUDY_DATA", str(data_home))
        monkeypatch.setenv("HPSTUDY_CIFAR100_URL", UNREACHABLE_URL)
        return run_here(capsys, *args)

    return run


def hpstudy(*args: str, data_home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HPSTUDY_DATA": str(data_home), "HPSTUDY_CIFAR100_URL": UNREACHABLE_URL}
    return run_hpstudy(*args, env=env, timeout=120)


def test_cli_wrong_md5(synthetic_root: Path, tmp_path: Path, hpstudy_here: Hpstudy) -> None:
    result = hpstudy_here("data", "info", "--root", str(synthetic_root), data_home=tmp_path)
    assert_one_line_error(result, "md5", str(synthetic_root / "cifar-100-python" / "train"))


def test_cli_truncated_pickle(tmp_path: Path, hpstudy_here: Hpstudy) -> None:
    root = small_root(tmp_path)
    train = root / "cifar-100-python" / "train"
    train.write_bytes(train.read_bytes()[:1000])
    result = hpstudy_here("data", "info", "--root", str(root), "--no-verify", data_home=tmp_path)
    assert_one_line_error(result, str(train), "truncated")


def test_cli_pickle_calling_os_system(tmp_path: Path, hpstudy_here: Hpstudy) -> None:
    root = small_root(tmp_path)
    marker = tmp_path / "pwned"
    (root / "cifar-100-python" / "test").write_bytes(
        pickle.dumps(RunsCommand(f"touch {marker}"), protocol=2)
    )
    result = hpstudy_here("data", "info", "--root", str(root), "--no-verify", data_home=tmp_path)
    assert_one_line_error(result, "refusing to unpickle")
    assert not marker.exists()


@pytest.mark.parametrize("command", ["download", "info"])
def test_cli_empty_root_unreachable_url(
    tmp_path: Path, command: str, hpstudy_here: Hpstudy
) -> None:
    root = tmp_path / "empty"
    result = hpstudy_here("data", command, "--root", str(root), data_home=tmp_path / "unused")
    assert_one_line_error(result, "cannot download CIFAR-100", UNREACHABLE_URL, str(root))


def test_cli_default_root_comes_from_environment(tmp_path: Path, hpstudy_here: Hpstudy) -> None:
    result = hpstudy_here("data", "download", data_home=tmp_path / "from-env")
    assert_one_line_error(result, str(tmp_path / "from-env"))


def test_cli_info_json_from_a_real_process(synthetic_root: Path, tmp_path: Path) -> None:
    result = hpstudy(
        "data", "info", "--root", str(synthetic_root), "--json", "--no-verify", data_home=tmp_path
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["train_size"], info["val_size"], info["test_size"]) == (400, 100, 100)
    assert info["val_indices_sha256"] == val_sha256(500, 100, 0)
    assert len(info["mean"]) == len(info["std"]) == 3
    assert info.pop("schema_version") == 1  # the --json output's, beside the info
    assert info == dataset_info(synthetic_root, seed=0, verify=False)
