"""Hostile and malformed input to the data layer: every case is one `error:` line, never more.

Pickles are written opcode by opcode where a real pickler would not write them
(arrays whose header lies about their size, memo tricks, deep tuples), so each
refusal is checked at the step that must catch it, and quickly: nothing here
may allocate what a file merely claims.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import pickle
import random
import re
import resource
import struct
import subprocess
import tarfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from cifar_archive import py2_pickle_bytes, write_archive, write_cifar100
from cli_helpers import assert_one_line_error
from unit_fixtures import run_here, run_together

import hpstudy.data.archive as archive_module
import hpstudy.data.unpickle as unpickle_module
from hpstudy.cli import main
from hpstudy.data import load_cifar100
from hpstudy.errors import HpstudyError

UNREACHABLE_URL = "http://127.0.0.1:9/cifar-100-python.tar.gz"
GOOD = np.zeros((2, 3072), np.uint8)


def small_root(tmp_path: Path, n_train: int = 20, n_test: int = 10) -> Path:
    root = tmp_path / "data"
    write_cifar100(root, n_train=n_train, n_test=n_test)
    return root


def put(root: Path, name: str, content: bytes) -> Path:
    path = root / "cifar-100-python" / name
    path.write_bytes(content)
    return path


def batch(data: object, fine: object, coarse: object = None) -> dict:
    if coarse is None:
        coarse = [0] * len(fine) if isinstance(fine, list) else fine
    return {b"data": data, b"fine_labels": fine, b"coarse_labels": coarse}


# Refusing a hostile file costs what the file is (kilobytes here), never what it claims (from
# a gigabyte up): inside `memory_cap` an allocation beyond MEMORY_CAP fails with MemoryError,
# so the refusal a test expects cannot happen after one. A bound on memory, not on the clock:
# the same on every machine, however fast or busy.
MEMORY_CAP = 256 << 20


@contextlib.contextmanager
def memory_cap(extra: int = MEMORY_CAP) -> Iterator[None]:
    """What this process may allocate (Linux RLIMIT_DATA) is capped at `extra` above its use."""
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    match = re.search(r"^VmData:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    assert match is not None, "memory_cap reads Linux's /proc/self/status"
    used = int(match.group(1)) * 1024
    cap = used + extra if hard == resource.RLIM_INFINITY else min(used + extra, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def test_memory_cap_refuses_a_gigabyte_and_is_lifted_after() -> None:
    """The control for the refusals checked under the cap: it does stop a large allocation."""
    with memory_cap(), pytest.raises(MemoryError):
        np.ones(1 << 30, np.uint8)
    assert np.empty(1 << 30, np.uint8).nbytes == 1 << 30


def info_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """`hpstudy data info ARGS` in this process: exactly one `error:` line and exit 1."""
    code = main(["data", "info", *args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def refused(capsys: pytest.CaptureFixture[str], root: Path, *needles: str) -> str:
    line = info_error(capsys, "--root", str(root), "--no-verify")
    for needle in needles:
        assert needle in line, line
    return line


# --- a tiny assembler for protocol-2 pickles, written the way Python 2 wrote them -------------


def s(data: bytes) -> bytes:
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data
    return b"T" + struct.pack("<i", len(data)) + data


def num(n: int) -> bytes:
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def glob(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def dtype_op(code: bytes = b"u1", order: bytes = b"|", extra: tuple = (b"N", b"N", b"N")) -> bytes:
    state = tup(num(3), s(order), *extra, num(-1), num(-1), num(0))
    return glob("numpy", "dtype") + tup(s(code), b"\x89", b"\x88") + b"R" + state + b"b"


def empty_array_op(subtype: bytes | None = None, shape: bytes | None = None) -> bytes:
    subtype = glob("numpy", "ndarray") if subtype is None else subtype
    shape = tup(num(0)) if shape is None else shape
    return glob("numpy.core.multiarray", "_reconstruct") + tup(subtype, shape, s(b"b")) + b"R"


def array_op(shape: tuple, raw: bytes, dtype: bytes | None = None, **kw: bytes) -> bytes:
    """numpy's own pickling of an array, with whatever shape, dtype and bytes a test wants."""
    state = tup(
        kw.get("version", num(1)),
        kw.get("shape_op", tup(*(num(d) for d in shape))),
        dtype_op() if dtype is None else dtype,
        kw.get("fortran", b"\x89"),
        kw.get("raw_op", s(raw)),
    )
    return empty_array_op() + state + b"b"


def labels_op(values: list[int]) -> bytes:
    return b"(" + b"".join(num(v) for v in values) + b"l"


def split_pickle(
    data_op: bytes, fine_op: bytes | None = None, extra: bytes = b"", coarse_op: bytes | None = None
) -> bytes:
    """A train/test dict {data, fine_labels, coarse_labels} around a hand-written data value."""
    fine_op = labels_op([0, 1]) if fine_op is None else fine_op
    coarse_op = labels_op([0, 0]) if coarse_op is None else coarse_op
    return (
        b"\x80\x02}("
        + s(b"data")
        + data_op
        + s(b"fine_labels")
        + fine_op
        + s(b"coarse_labels")
        + coarse_op
        + extra
        + b"u."
    )


def payload(marker: Path) -> bytes:
    """The value of an extra key that, if ever unpickled, creates MARKER."""
    return (
        s(b"x") + glob(os.system.__module__, "system") + tup(s(f"touch {marker}".encode())) + b"R"
    )


# --- 1. a split with no images -------------------------------------------------------------


@pytest.mark.parametrize("name", ["train", "test"])
def test_split_without_images_is_refused(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = small_root(tmp_path)
    path = put(root, name, py2_pickle_bytes(batch(np.zeros((0, 3072), np.uint8), [])))
    refused(capsys, root, str(path), "'data' holds no images (shape (0, 3072))")


def test_empty_split_written_by_python3_protocol_2(tmp_path: Path) -> None:
    # Python 3 writes the empty raw bytes as bytes(): admitted, then the emptiness is refused
    root = small_root(tmp_path)
    put(root, "test", pickle.dumps(batch(np.zeros((0, 3072), np.uint8), []), protocol=2))
    with pytest.raises(HpstudyError, match="holds no images"):
        load_cifar100(root, verify=False)


def test_train_of_one_image_cannot_be_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = small_root(tmp_path)
    put(root, "train", py2_pickle_bytes(batch(np.zeros((1, 3072), np.uint8), [3])))
    assert load_cifar100(root, verify=False).train.images.shape == (1, 3, 32, 32)
    refused(capsys, root, "holds 1 image(s): a train/validation split needs at least 2")


def test_seed_out_of_torch_range(synthetic_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = info_error(capsys, "--root", str(synthetic_root), "--no-verify", "--seed", str(2**64))
    assert "split seed" in line and "out of range" in line


# --- 2. labels are integers, or refused ----------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        (1.5, "1.5"),
        (3.0, "3.0"),
        ("3", "'3'"),
        (b"3", "b'3'"),
        (True, "True"),
        (None, "None"),
        ([1], "a list"),
        ({1: 2}, "a dict"),
        ((1,), "a tuple"),
    ],
)
@pytest.mark.parametrize("field", ["fine_labels", "coarse_labels"])
def test_labels_that_are_not_ints_are_refused_not_truncated(
    tmp_path: Path, field: str, bad: object, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = small_root(tmp_path)
    obj = batch(GOOD, [0, 1])
    obj[field.encode()] = [0, bad]
    path = put(root, "train", py2_pickle_bytes(obj))
    refused(capsys, root, str(path), f"'{field}' is not a list of integers (item 1 is {shown})")


@pytest.mark.parametrize(
    ("labels", "needle"),
    [
        (np.array([0.0, 1.0]), "dtype 'f8'"),
        (np.array([0, 1], np.int16), "dtype 'i2'"),
        (np.array([True, False]), "dtype 'b1'"),
        ([np.float64(0), 1], "dtype 'f8'"),
        ({0: 0, 1: 1}, "'fine_labels' is not a list of integers (it is a dict)"),
        (b"\x00\x01", "'fine_labels' is not a list of integers (it is b'"),
        ([0, 2**80], "'fine_labels' has values in 0..huge, expected 0..99"),
    ],
    ids=["float-array", "int16-array", "bool-array", "float-scalar", "dict", "bytes", "huge-int"],
)
def test_label_containers_of_the_wrong_kind(tmp_path: Path, labels: object, needle: str) -> None:
    root = small_root(tmp_path)
    path = put(root, "train", pickle.dumps(batch(GOOD, labels, [0, 0]), protocol=2))
    with pytest.raises(HpstudyError) as err:
        load_cifar100(root, verify=False)
    assert str(path) in str(err.value) and needle in str(err.value)


@pytest.mark.parametrize(
    "labels",
    [
        [7, 42],
        [np.int64(7), np.int32(42)],
        np.array([7, 42], np.int64),
        np.array([7, 42], np.int32),
        np.array([7, 42], np.uint8),
        np.array([7, 42], ">i8"),
    ],
    ids=["ints", "numpy-scalars", "int64", "int32", "uint8", "big-endian-int64"],
)
def test_integer_labels_of_every_admitted_kind_load(tmp_path: Path, labels: object) -> None:
    root = small_root(tmp_path)
    put(root, "train", pickle.dumps(batch(GOOD, labels, [1, 8]), protocol=2))
    train = load_cifar100(root, verify=False).train
    assert train.fine.tolist() == [7, 42] and train.coarse.tolist() == [1, 8]


# --- 3. the unpickler: sizes before allocation, only what the files need -------------------


def hostile_cases() -> dict[str, tuple[bytes, str]]:
    """name -> (the 'data' value as opcodes, what the one line must say)."""
    row = b"\x00" * 3072
    gigabytes = (10**9, 3072)
    cases = {
        "short-bytes": (array_op((2, 3072), b"\x00" * 6), "(6,144 bytes) but carries 6 bytes"),
        "long-bytes": (array_op((1, 3072), row * 2), "(3,072 bytes) but carries 6,144 bytes"),
        "gigabyte-claim": (array_op(gigabytes, b"\x00" * 6), "(3,072,000,000,000 bytes) but"),
        "zero-dim-huge-other": (array_op((2**70, 0), b""), "shape has a dimension of"),
        "negative-dim": (array_op((-1, 3072), b""), "shape has a dimension of -1"),
        "shape-list": (array_op((), row, shape_op=b"(J\x01\x00\x00\x00l"), "shape is a list"),
        "too-many-dims": (array_op((1,) * 5 + (3072,), row), "has 6 dimensions, more than 4"),
        "raw-is-list": (array_op((1, 3072), b"", raw_op=b"(l"), "data is a list, not bytes"),
        "version-2": (array_op((1, 3072), row, version=num(2)), "pickled state is malformed"),
        "fortran-flag-junk": (array_op((1, 3072), row, fortran=num(7)), "order flag is 7"),
        "object-dtype": (array_op((1,), b"", dtype_op(b"O8")), "object arrays can unpickle any"),
        "float-dtype": (array_op((1, 3072), row * 8, dtype_op(b"f8")), "dtype 'f8'"),
        "string-dtype": (array_op((1,), b"ab", dtype_op(b"S2")), "dtype 'S2'"),
        "structured-dtype": (
            array_op((1, 3072), row, dtype_op(extra=(b"N", tup(s(b"a")), b"}"))),
            "structured numpy dtype",
        ),
        "byte-order-junk": (array_op((1, 3072), row, dtype_op(order=b"!")), "byte order !"),
        "dtype-not-dtype": (array_op((1, 3072), row, s(b"u1")), "dtype is b'u1', not a numpy"),
        "reconstruct-other-subtype": (
            empty_array_op(subtype=glob("numpy", "dtype")),
            "_reconstruct with arguments other than numpy's own",
        ),
        "reconstruct-big-shape": (
            empty_array_op(shape=tup(num(10**9), num(3072))),
            "_reconstruct with arguments other than numpy's own",
        ),
        "call-ndarray": (
            glob("numpy", "ndarray") + tup(tup(num(10**9), num(3072))) + b"R",
            "refusing to call numpy.ndarray",
        ),
        "set-state-twice": (
            array_op((1, 3072), row)
            + tup(num(1), tup(num(1), num(3072)), dtype_op(), b"\x89", s(row))
            + b"b",
            "contents are set twice",
        ),
        "assign-into-array": (
            array_op((1, 3072), row) + b"(" + num(0) + b"(" + num(1) * 3 + b"l" + b"u",
            "refusing to assign into a numpy array",
        ),
        "scalar-wrong-size": (
            glob("numpy.core.multiarray", "scalar") + tup(dtype_op(b"i8", b"<"), s(b"\x01")) + b"R",
            "scalar carries b'\\x01', not 8 bytes",
        ),
        "frombuffer-short": (
            glob("numpy._core.numeric", "_frombuffer")
            + tup(s(b"\x00" * 6), dtype_op(), tup(num(10**9), num(3072)), b"X\x01\x00\x00\x00C")
            + b"R",
            "(3,072,000,000,000 bytes) but carries 6 bytes",
        ),
        "codecs-rot13": (
            glob("_codecs", "encode")
            + tup(b"X\x01\x00\x00\x00a", b"X\x05\x00\x00\x00rot13")
            + b"R",
            "refusing _codecs.encode('a', 'rot13')",
        ),
        "bytes-of-a-gigabyte": (
            glob("__builtin__", "bytes") + tup(num(2**30)) + b"R",
            "refusing bytes(...) with arguments",
        ),
        "ndarray-setstate-name": (glob("numpy", "ndarray.__setstate__"), "refusing to unpickle"),
        "numpy-load": (glob("numpy", "load"), "refusing to unpickle numpy.load"),
        "getattr": (glob("builtins", "getattr"), "refusing to unpickle builtins.getattr"),
    }
    return cases


CASES = hostile_cases()


def test_the_assembler_writes_what_numpy_writes(tmp_path: Path) -> None:
    """The control for the cases below: untouched, the hand-written array loads everywhere."""
    row = bytes(range(256)) * 24
    content = split_pickle(array_op((2, 3072), row))
    plain = pickle.loads(content, encoding="bytes")  # numpy's own reading agrees
    assert plain[b"data"].tobytes() == row and plain[b"data"].shape == (2, 3072)
    root = small_root(tmp_path)
    put(root, "train", content)
    assert load_cifar100(root, verify=False).train.images.reshape(-1).tolist() == list(row)


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_arrays_are_refused_before_anything_is_allocated(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data_op, needle = CASES[case]
    root = small_root(tmp_path)
    marker = tmp_path / "pwned"
    path = put(root, "train", split_pickle(data_op, extra=payload(marker)))
    with memory_cap():
        line = refused(capsys, root, str(path), needle)
    assert "os.system" not in line and "posix.system" not in line  # refused before the payload
    assert not marker.exists()


def test_dtype_flags_in_a_pickle_do_not_reach_numpy(tmp_path: Path) -> None:
    # numpy's own dtype.__setstate__ would take these flags (e.g. "holds object references")
    row = bytes(range(256)) * 12
    state = tup(num(3), s(b"|"), b"N", b"N", b"N", num(-1), num(-1), num(0x3F))
    dtype = glob("numpy", "dtype") + tup(s(b"u1"), b"\x89", b"\x88") + b"R" + state + b"b"
    root = small_root(tmp_path)
    put(
        root,
        "test",
        split_pickle(array_op((1, 3072), row, dtype), labels_op([5]), b"", labels_op([1])),
    )
    test = load_cifar100(root, verify=False).test
    assert test.images.reshape(-1).tolist() == list(row)


def test_data_as_shared_nested_lists_is_refused_quickly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # one row list memoised once, then referenced 200,000 times: 600 M values from 400 kB
    row = b"(" + num(0) * 3072 + b"lq\x01"
    data = b"(" + row + b"h\x01" * 200_000 + b"l"
    root = small_root(tmp_path)
    path = put(root, "train", split_pickle(data))
    with memory_cap():
        refused(capsys, root, str(path), "'data' is not a uint8 (N, 3072) array (it is a list)")


def test_long_shared_label_list_is_refused_by_its_length(tmp_path: Path) -> None:
    fine = b"(" + num(1) + b"q\x01" + b"h\x01" * 1_000_000 + b"l"
    root = small_root(tmp_path)
    put(root, "train", split_pickle(array_op((2, 3072), b"\x00" * 6144), fine))
    with pytest.raises(
        HpstudyError, match=r"'fine_labels' has shape \(1000001,\), expected \(2,\)"
    ):
        load_cifar100(root, verify=False)


@pytest.mark.parametrize(
    ("names", "needle"),
    [
        ([b"x" * 10_000_000] * 100, "(item 0 is 10,000,000 long, more than 200)"),
        ([b"x"] * 100_000, "(it has 100000)"),
        ([1] * 100, "(item 0 is 1, not a string)"),
        (b"names", "(it is b'names')"),
    ],
    ids=["one-long-name-shared", "too-many", "ints", "bytes"],
)
def test_meta_names_are_checked_before_decoding(tmp_path: Path, names: object, needle: str) -> None:
    root = small_root(tmp_path)
    meta = {b"fine_label_names": names, b"coarse_label_names": [b"c"] * 20}
    path = put(root, "meta", pickle.dumps(meta, protocol=4))  # the long name is written once
    with pytest.raises(HpstudyError) as err:
        load_cifar100(root, verify=False)
    assert str(path) in str(err.value) and "'fine_label_names' is not a list of 100 names" in str(
        err.value
    )
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (
            b"\x80\x02N" + b"r" + struct.pack("<I", 2**31) + b".",
            "refusing memo index 2,147,483,648",
        ),
        (b"\x80\x02N" + b"p99999999\n.", "refusing memo index 99,999,999"),
        (b"\x80\x02" + b"\x8e" + struct.pack("<Q", 2**60) + b".", "runs past the end of the file"),
        (b"\x80\x02T" + struct.pack("<i", -5) + b".", "runs past the end of the file"),
        (b"\x80\x04\x95" + struct.pack("<Q", 2**40) + b"N.", "FRAME at byte 2 runs past the end"),
        (
            b"\x80\x04\x95" + struct.pack("<Q", 2) + b"NK\x01.",
            "BININT1 at byte 12 crosses the end of its frame",
        ),
        (
            b"\x80\x04\x95" + struct.pack("<Q", 11) + b"\x95" + bytes(8) + b"N.",
            "FRAME at byte 11 starts inside",
        ),
        (b"\x80\x06N.", "is a protocol-6 pickle, newer than this Python reads"),
        (b"\x80\x02U\x01xQ.", "refusing a pickle with persistent ids"),
        (b"\x80\x05\x97.", "written out of band"),
        (b"\x80\x02N" + b"\x85" * 200 + b".", "refusing tuples nested more than 100 deep"),
        (b"\x80\x02t.", "TUPLE at byte 2 has no MARK"),
        (b"\x80\x02a.", "APPEND at byte 2 finds too little on the stack"),
        (b"\x80\x02N", "it ends before the pickle's STOP"),
        (b"\x80\x02\xff.", "byte 2 is not a pickle opcode"),
        (b"", "the file is empty"),
    ],
    ids=[
        "memo-jump",
        "memo-jump-text",
        "bytes8-claim",
        "negative-length",
        "frame-claim",
        "frame-crossing",
        "frame-in-frame",
        "protocol-6",
        "persistent-id",
        "out-of-band",
        "deep-tuple",
        "no-mark",
        "underflow",
        "no-stop",
        "bad-opcode",
        "empty",
    ],
)
def test_the_scan_refuses_what_would_allocate_or_crash(
    tmp_path: Path, content: bytes, needle: str
) -> None:
    root = small_root(tmp_path)
    path = put(root, "test", content)
    with memory_cap(), pytest.raises(HpstudyError) as err:
        load_cifar100(root, verify=False)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and needle in message and "\n" not in message


def test_out_of_band_buffers_from_a_real_pickler(tmp_path: Path) -> None:
    buffers: list[pickle.PickleBuffer] = []
    content = pickle.dumps(batch(GOOD, [0, 1]), protocol=5, buffer_callback=buffers.append)
    assert buffers  # the array really went out of band
    root = small_root(tmp_path)
    put(root, "train", content)
    with pytest.raises(HpstudyError, match="re-save it without one"):
        load_cifar100(root, verify=False)


def test_opcode_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unpickle_module, "MAX_OPCODES", 1000)
    root = small_root(tmp_path)
    put(root, "test", b"\x80\x02" + b"N0" * 600 + b"N.")  # DUP-style bloat: many tiny opcodes
    with pytest.raises(HpstudyError, match="refusing a pickle of more than 1,000 opcodes"):
        load_cifar100(root, verify=False)


def test_file_over_the_size_cap_is_refused_unread(tmp_path: Path) -> None:
    root = small_root(tmp_path)
    path = root / "cifar-100-python" / "train"
    with open(path, "r+b") as f:  # sparse: nothing is written or read
        f.truncate(unpickle_module.MAX_PICKLE_BYTES + 1)
    with pytest.raises(HpstudyError, match=r"is 1,073,741,825 bytes, more than the 1,073,741,824"):
        load_cifar100(root, verify=False)


def test_deep_tuple_hash_would_crash_python_but_is_refused(real_runs: dict[str, Real]) -> None:
    """A 1 MB pickle whose dict key is a tuple 1,000,000 deep segfaults plain pickle.loads:
    a real process (set up in `deep_tuple` below), where a crash would be a crash."""
    run = real_runs["deep-tuple"]
    assert_one_line_error(run.result, str(run.path), "refusing tuples nested more than 100 deep")


# --- 4. Python 3 pickles at every protocol -------------------------------------------------


def write_python3(root: Path, protocol: int, key: type, arrays: bool) -> None:
    def k(name: str) -> bytes | str:
        return name.encode() if key is bytes else name

    out = root / "cifar-100-python"
    out.mkdir(parents=True)
    rng = np.random.default_rng(protocol)
    for name, n in (("train", 10), ("test", 5)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        labels: object = np.array(fine) if arrays else fine
        coarse: object = np.array(fine) // 5 if arrays else [v // 5 for v in fine]
        obj = {k("data"): data, k("fine_labels"): labels, k("coarse_labels"): coarse, k("e"): b""}
        (out / name).write_bytes(pickle.dumps(obj, protocol=protocol))
        np.save(root / f"{name}.npy", data)
    names = {
        k("fine_label_names"): [k(f"f{i}") for i in range(100)],
        k("coarse_label_names"): [k(f"c{i}") for i in range(20)],
    }
    (out / "meta").write_bytes(pickle.dumps(names, protocol=protocol))


@pytest.mark.parametrize("arrays", [False, True], ids=["int-lists", "label-arrays"])
@pytest.mark.parametrize("key", [bytes, str], ids=["bytes-keys", "str-keys"])
@pytest.mark.parametrize("protocol", range(6))
def test_python3_pickles_of_every_protocol_load(
    tmp_path: Path, protocol: int, key: type, arrays: bool
) -> None:
    root = tmp_path / "data"
    write_python3(root, protocol, key, arrays)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch on a read-only numpy array
        data = load_cifar100(root, verify=False)
    for split, name in ((data.train, "train"), (data.test, "test")):
        want = np.load(root / f"{name}.npy")
        assert split.images.reshape(len(want), -1).numpy().tolist() == want.tolist()
        assert torch.equal(split.coarse, split.fine // 5)
    assert data.fine_names[99] == "f99" and data.coarse_names[0] == "c0"


def test_read_only_protocol_5_array_is_copied_not_shared(tmp_path: Path) -> None:
    data = np.full((2, 3072), 9, np.uint8)
    data.flags.writeable = False  # pickled in band as bytes, which numpy reads read-only
    root = small_root(tmp_path)
    put(root, "train", pickle.dumps(batch(data, [0, 1]), protocol=5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train = load_cifar100(root, verify=False).train
    train.images[0, 0, 0, 0] = 1  # writable, and ours
    assert train.images[1].eq(9).all()


def test_fortran_ordered_data_is_made_contiguous(tmp_path: Path) -> None:
    data = np.asfortranarray(np.arange(6144, dtype=np.uint8).reshape(2, 3072))
    root = small_root(tmp_path)
    put(root, "train", pickle.dumps(batch(data, [0, 1]), protocol=2))
    images = load_cifar100(root, verify=False).train.images
    assert images.is_contiguous() and images.reshape(2, -1).numpy().tolist() == data.tolist()


# --- 7. damaged files: truncation, random bytes, the wrong object ---------------------------


@pytest.mark.parametrize("name", ["train", "meta"])
def test_truncated_at_every_tenth(tmp_path: Path, name: str) -> None:
    root = small_root(tmp_path)
    path = root / "cifar-100-python" / name
    whole = path.read_bytes()
    for tenth in range(10):
        path.write_bytes(whole[: len(whole) * tenth // 10])
        with pytest.raises(HpstudyError) as err:
            load_cifar100(root, verify=False)
        message = str(err.value)
        assert message.startswith(f"{path}: truncated or not a CIFAR-100 pickle (")
        assert "\n" not in message


def test_random_bytes_and_flipped_bytes(tmp_path: Path) -> None:
    rng = random.Random(1)
    root = small_root(tmp_path)
    path = root / "cifar-100-python" / "train"
    whole = path.read_bytes()
    contents = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))) for _ in range(20)]
    for _ in range(60):
        flipped = bytearray(whole)
        for _ in range(3):
            flipped[rng.randrange(600)] = rng.randrange(256)  # the header and labels: structure
        contents.append(bytes(flipped))
    for content in contents:
        path.write_bytes(content)
        try:
            load_cifar100(root, verify=False)
        except HpstudyError as e:
            assert str(e).startswith(f"{path}: ") and "\n" not in str(e)


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        (7, "holds int, not dict"),
        ("text", "holds str, not dict"),
        ([GOOD], "holds list, not dict"),
        ({b"data": None, b"fine_labels": [], b"coarse_labels": []}, "(it is None)"),
        ({"data": GOOD, "fine_labels": [0, 1]}, "no 'coarse_labels' key"),
        ({b"data": GOOD, b"fine_labels": None, b"coarse_labels": [0, 0]}, "(it is None)"),
        (
            {b"data": np.zeros((2, 3, 1024), np.uint8)},
            "(it is a uint8 array of shape (2, 3, 1024))",
        ),
        ({b"data": np.zeros(3072, np.uint8)}, "(it is a uint8 array of shape (3072,))"),
    ],
    ids=["int", "str", "list", "data-none", "str-keys-missing", "labels-none", "3d", "1d"],
)
def test_valid_pickles_of_the_wrong_object(tmp_path: Path, obj: object, needle: str) -> None:
    root = small_root(tmp_path)
    path = put(root, "train", pickle.dumps(obj, protocol=2))
    with pytest.raises(HpstudyError) as err:
        load_cifar100(root, verify=False)
    assert str(err.value).startswith(f"{path}: ") and needle in str(err.value)


# --- 5. archive extraction -------------------------------------------------------------------


def raw_tar(*headers: tuple[tarfile.TarInfo, bytes]) -> bytes:
    """A gzipped tar whose headers say what the test wants, whatever data follows them."""
    out = b""
    for info, data in headers:
        out += info.tobuf(format=tarfile.GNU_FORMAT) + data + b"\0" * (-len(data) % 512)
    return gzip.compress(out + b"\0" * 1024)


def member(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info


def root_with_archive(tmp_path: Path, content: bytes) -> Path:
    root = tmp_path / "root"
    root.mkdir(parents=True)
    (root / "cifar-100-python.tar.gz").write_bytes(content)
    return root


def test_member_claiming_gigabytes_is_refused_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content = raw_tar((member("cifar-100-python/train", 2**31), b"x" * 512))
    root = root_with_archive(tmp_path, content)
    refused(
        capsys,
        root,
        "cifar-100-python.tar.gz: refusing member 'cifar-100-python/train'",
        "claims 2,147,483,648 bytes",
    )
    assert sorted(p.name for p in root.iterdir()) == ["cifar-100-python.tar.gz"]


def test_long_name_header_claiming_much_is_refused(tmp_path: Path) -> None:
    content = raw_tar((member("././@LongLink", 100 << 20, tarfile.GNUTYPE_LONGNAME), b"x" * 512))
    root = root_with_archive(tmp_path, content)
    with pytest.raises(HpstudyError, match=r"claims 104,857,600 bytes, more than the 1,048,576"):
        load_cifar100(root, verify=False)


def test_total_unpacked_size_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "source"
    write_cifar100(source, n_train=20, n_test=10)  # train is about 62 kB, test about 31 kB
    root = root_with_archive(tmp_path, write_archive(source, tmp_path / "a.tar.gz").read_bytes())
    monkeypatch.setattr(archive_module, "MAX_EXTRACT_BYTES", 70_000)
    with pytest.raises(HpstudyError, match=r"more than the 70,000 allowed") as err:
        load_cifar100(root, verify=False)
    assert "unpacks to" in str(err.value)
    assert sorted(p.name for p in root.iterdir()) == ["cifar-100-python.tar.gz"]


def test_member_count_is_capped(tmp_path: Path) -> None:
    content = raw_tar(*((member(f"cifar-100-python/f{i}", 0), b"") for i in range(101)))
    root = root_with_archive(tmp_path, content)
    with pytest.raises(HpstudyError, match="more than 100 members"):
        load_cifar100(root, verify=False)


def test_sparse_member_is_refused(tmp_path: Path) -> None:
    content = raw_tar((member("cifar-100-python/train", 0, tarfile.GNUTYPE_SPARSE), b""))
    root = root_with_archive(tmp_path, content)
    with pytest.raises(HpstudyError, match="refusing member"):
        load_cifar100(root, verify=False)


@pytest.mark.parametrize("command", ["info", "download"])
def test_garbage_archive_in_root(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = root_with_archive(tmp_path, random.Random(2).randbytes(5000))
    code = main(["data", command, "--root", str(root), "--no-verify"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: ")
    assert "cifar-100-python.tar.gz: cannot extract, not a complete tar.gz" in err


def test_archive_damaged_at_every_tenth(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_cifar100(source, n_train=20, n_test=10)
    whole = write_archive(source, tmp_path / "a.tar.gz").read_bytes()
    for tenth in range(1, 10):
        root = root_with_archive(tmp_path / str(tenth), whole[: len(whole) * tenth // 10])
        with pytest.raises(HpstudyError) as err:
            load_cifar100(root, verify=False)
        message = str(err.value)
        assert message.startswith(f"{root / 'cifar-100-python.tar.gz'}: ") and "\n" not in message


# --- 6. the data root ----------------------------------------------------------------------


def test_unknown_user_in_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = info_error(capsys, "--root", "~nosuchuser/x", "--no-verify")
    assert "data root '~nosuchuser/x': cannot expand '~nosuchuser'" in line


def test_unknown_user_in_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPSTUDY_DATA", "~nosuchuser/data")
    line = info_error(capsys, "--no-verify")
    assert "HPSTUDY_DATA '~nosuchuser/data': cannot expand '~nosuchuser'" in line


def test_root_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    assert f"{file}: is not a folder (the data root)" in info_error(capsys, "--root", str(file))
    line = info_error(capsys, "--root", str(file / "sub"))
    assert f"cannot create data folder {file / 'sub'}" in line


def test_dataset_folder_or_file_of_the_wrong_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "a"
    root.mkdir()
    (root / "cifar-100-python").write_text("x")  # unreadable as a folder
    assert f"{root / 'cifar-100-python'}: is not a folder" in info_error(
        capsys, "--root", str(root)
    )
    root = small_root(tmp_path)
    (root / "cifar-100-python" / "meta").unlink()
    (root / "cifar-100-python" / "meta").mkdir()
    line = info_error(capsys, "--root", str(root), "--no-verify")
    assert f"{root / 'cifar-100-python' / 'meta'}: is not a file" in line


def test_root_in_a_symlink_loop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    line = info_error(capsys, "--root", str(tmp_path / "a" / "x"))
    assert "data root" in line


# --- through the real command, for the cases that must not even start a traceback ----------
# A deep tuple would crash the interpreter, and a payload must not run in a real one: those two
# are real `python -m hpstudy` processes, started together (`real_runs`) so that their start-ups
# (torch's import, about 4 s) share the cores. The unknown user and the garbage archive go
# through the same main() in this process.


@dataclass
class Real:
    """A real process's result; `tmp` is its case folder, `path` the file it must name."""

    result: subprocess.CompletedProcess[str]
    tmp: Path
    path: Path


def deep_tuple(tmp: Path) -> tuple[list[str], Path]:
    root = small_root(tmp)
    content = b"\x80\x02}" + num(1) + b"\x85" * 1_000_000 + num(1) + b"s."
    path = put(root, "train", content)
    return ["data", "info", "--root", str(root), "--no-verify"], path


def hostile_array(tmp: Path) -> tuple[list[str], Path]:
    root = small_root(tmp)
    gig = array_op((10**9, 3072), b"\x00" * 6)
    path = put(root, "test", split_pickle(gig, extra=payload(tmp / "pwned")))
    return ["data", "info", "--root", str(root), "--no-verify"], path


REAL_CASES = {"deep-tuple": deep_tuple, "hostile-array": hostile_array}


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Real]:
    """Every REAL_CASES process, started together and waited for."""
    folders = {name: tmp_path_factory.mktemp(name) for name in REAL_CASES}
    made = {name: REAL_CASES[name](tmp) for name, tmp in folders.items()}
    results = run_together(
        {name: argv for name, (argv, _) in made.items()},
        env={"HPSTUDY_CIFAR100_URL": UNREACHABLE_URL},
        timeout=120,
    )
    return {name: Real(results[name], folders[name], path) for name, (_, path) in made.items()}


def test_cli_hostile_array_with_payload(real_runs: dict[str, Real]) -> None:
    run = real_runs["hostile-array"]
    assert_one_line_error(run.result, str(run.path), "claims shape (1000000000, 3072) of uint8")
    assert not (run.tmp / "pwned").exists()


def test_cli_unknown_user_and_garbage_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:
        m.setenv("HPSTUDY_DATA", "~nosuchuser/data")
        result = run_here(capsys, "data", "download")
    assert_one_line_error(result, "HPSTUDY_DATA '~nosuchuser/data'", "no such user")
    root = root_with_archive(tmp_path, random.Random(3).randbytes(3000))
    result = run_here(capsys, "data", "info", "--root", str(root), "--no-verify")
    assert_one_line_error(result, "cannot extract")
