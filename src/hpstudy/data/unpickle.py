"""Opens one pickle safely: plain containers, numbers, strings and checked numpy arrays, no code.

Pickles can run code. `read_pickle` first scans the file's opcodes without building
anything (so a claimed size, memo index or nesting depth is checked before it costs
memory or crashes Python), then unpickles it with a resolver that knows only
numpy's array and scalar reconstruction and the two helpers Python 3 writes bytes
with. Each of those is a wrapper that checks its arguments (dtype, shape, byte
count) before numpy sees them. Every refusal is one line naming the file.
"""

from __future__ import annotations

import importlib
import io
import math
import mmap
import os
import pickle
import pickletools
import struct
from pathlib import Path

import numpy as np

from hpstudy.errors import HpstudyError

MAX_PICKLE_BYTES = 1 << 30  # the official train file is about 155 MB
MAX_OPCODES = 4_000_000  # the official train file has about 200,000
MAX_TUPLE_DEPTH = 100  # the official files nest tuples 2 deep; hashing a deep one crashes Python
MAX_NDIM = 4
# the official files hold uint8 images; labels may come as int32/int64 arrays (never object)
ARRAY_DTYPES = ("u1", "i4", "i8")


class _Refused(Exception):
    """A reason to refuse the file; read_pickle puts the file's name in front of it."""


def _plain(value: object, limit: int = 60) -> str:
    """A short, one-line rendering of a value a pickle supplied."""
    if isinstance(value, str) and value.isprintable() and len(value) <= limit:
        return value
    if isinstance(value, np.ndarray):
        return "a numpy array"
    if isinstance(value, (str, bytes)):
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    if value is None or isinstance(value, (bool, float)) or type(value) is int:
        return repr(value) if type(value) is not int or value.bit_length() < 200 else "a huge int"
    return f"a {type(value).__name__}"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]


# --- the scan: sizes and shapes of the opcode stream, before anything is built ---------------

# how each argument is laid out: a fixed width, a length then that many bytes, or text lines
_FIXED, _SIZED, _LINES = "fixed", "sized", "lines"
_LAYOUTS = {
    "uint1": (_FIXED, "<B"),
    "uint2": (_FIXED, "<H"),
    "int4": (_FIXED, "<i"),
    "uint4": (_FIXED, "<I"),
    "uint8": (_FIXED, "<Q"),
    "float8": (_FIXED, ">d"),
    "string1": (_SIZED, "<B"),
    "bytes1": (_SIZED, "<B"),
    "unicodestring1": (_SIZED, "<B"),
    "long1": (_SIZED, "<B"),
    "string4": (_SIZED, "<i"),
    "long4": (_SIZED, "<i"),
    "bytes4": (_SIZED, "<I"),
    "unicodestring4": (_SIZED, "<I"),
    "bytes8": (_SIZED, "<Q"),
    "unicodestring8": (_SIZED, "<Q"),
    "bytearray8": (_SIZED, "<Q"),
    "decimalnl_short": (_LINES, 1),
    "decimalnl_long": (_LINES, 1),
    "stringnl": (_LINES, 1),
    "stringnl_noescape": (_LINES, 1),
    "unicodestringnl": (_LINES, 1),
    "floatnl": (_LINES, 1),
    "stringnl_noescape_pair": (_LINES, 2),
}
_KINDS = {
    "TUPLE": "tuple",
    "TUPLE1": "tuple",
    "TUPLE2": "tuple",
    "TUPLE3": "tuple",
    "GET": "get",
    "BINGET": "get",
    "LONG_BINGET": "get",
    "PUT": "put",
    "BINPUT": "put",
    "LONG_BINPUT": "put",
    "MEMOIZE": "memoize",
    "DUP": "dup",
    "MARK": "mark",
    "POP": "pop",
    "STOP": "stop",
    "PROTO": "proto",
    "FRAME": "frame",
    # the object these act on stays where it was
    "APPEND": "keep",
    "APPENDS": "keep",
    "SETITEM": "keep",
    "SETITEMS": "keep",
    "ADDITEMS": "keep",
    "BUILD": "keep",
    # what a file on its own cannot carry
    "NEXT_BUFFER": "buffer",
    "READONLY_BUFFER": "buffer",
    "PERSID": "persid",
    "BINPERSID": "persid",
}
_NEEDS_ARG = ("get", "put", "proto", "frame")


class _Op:
    """What the scan needs of one opcode: how to step over its argument, and its stack effect."""

    __slots__ = (
        "below_mark",
        "form",
        "kind",
        "name",
        "needs_arg",
        "param",
        "pops",
        "pushes",
        "width",
    )

    def __init__(self, op: pickletools.OpcodeInfo) -> None:
        self.name = op.name
        self.form, self.param = _LAYOUTS[op.arg.name] if op.arg is not None else (None, None)
        self.width = struct.calcsize(self.param) if self.form in (_FIXED, _SIZED) else 0
        before = [item.name for item in op.stack_before]
        self.below_mark = before.index("mark") if "mark" in before else None
        self.pops = len(before)
        self.pushes = len(op.stack_after)
        self.kind = _KINDS.get(op.name, "other")
        if self.kind == "other" and self.pops == 0 and self.pushes == 1:
            self.kind = "push"  # a literal: the common case, kept fast
        self.needs_arg = self.kind in _NEEDS_ARG


_OPS: list[_Op | None] = [None] * 256
for _info in pickletools.opcodes:
    _OPS[ord(_info.code)] = _Op(_info)


def _not_a_pickle(detail: str) -> _Refused:
    return _Refused(f"truncated or not a CIFAR-100 pickle ({detail})")


def _scan(buf: bytes | mmap.mmap) -> None:
    """Walk the opcodes as the unpickler would, tracking only positions, sizes and tuple depths.

    Refuses what would allocate or recurse out of proportion to the file: a length
    that runs past the end, a memo index far beyond the entries so far (the C
    unpickler sizes its memo table by the index), tuples nested deeper than any
    CIFAR-100 file has (hashing one recurses in C), and more opcodes than the
    official files use.
    """
    size = len(buf)
    stack: list[int] = []  # per stack item: how deep the tuples in it nest (0: not a tuple)
    marks: list[int] = []
    memo: dict[int, int] = {}
    unpack_from = struct.unpack_from
    pos = 0
    frame_end: int | None = None  # opcodes may not cross a frame's end (pickle.py refuses it)
    for count in range(MAX_OPCODES):
        if pos >= size:
            raise _not_a_pickle("it ends before the pickle's STOP")
        if frame_end is not None and pos >= frame_end:
            frame_end = None
        op = _OPS[buf[pos]]
        if op is None:
            raise _not_a_pickle(f"byte {pos} is not a pickle opcode")
        start, pos = pos, pos + 1
        arg = None
        form = op.form
        if form is _FIXED:
            width = op.width
            if pos + width > size:
                raise _not_a_pickle(f"{op.name} at byte {start} runs past the end of the file")
            if op.needs_arg:
                arg = unpack_from(op.param, buf, pos)[0]
            pos += width
        elif form is _SIZED:
            width = op.width
            n = unpack_from(op.param, buf, pos)[0] if pos + width <= size else -1
            pos += width
            if not 0 <= n <= size - pos:
                raise _not_a_pickle(f"{op.name} at byte {start} runs past the end of the file")
            pos += n
        elif form is _LINES:
            for _ in range(op.param):
                end = buf.find(b"\n", pos)
                if end < 0:
                    raise _not_a_pickle(f"{op.name} at byte {start} runs past the end of the file")
                text, pos = buf[pos:end], end + 1
            if op.needs_arg:
                try:
                    arg = int(text)
                except ValueError:
                    raise _not_a_pickle(f"{op.name} at byte {start} has no number") from None
        if frame_end is not None and pos > frame_end:
            raise _not_a_pickle(f"{op.name} at byte {start} crosses the end of its frame")

        kind = op.kind
        if kind == "push":
            stack.append(0)
            continue
        if kind == "mark":
            marks.append(len(stack))
            continue
        if kind == "pop" and marks and marks[-1] == len(stack):
            marks.pop()  # as the C unpickler does: POP right after a MARK pops the mark
            continue
        fence = marks[-1] if marks else 0
        items: list[int] = []
        k = op.pops
        if op.below_mark is not None:
            if not marks:
                raise _not_a_pickle(f"{op.name} at byte {start} has no MARK")
            items = stack[marks.pop() :]
            del stack[len(stack) - len(items) :]
            fence = marks[-1] if marks else 0
            k = op.below_mark
        if len(stack) - k < fence:
            raise _not_a_pickle(f"{op.name} at byte {start} finds too little on the stack")
        fixed = stack[len(stack) - k :]
        del stack[len(stack) - k :]

        if kind == "tuple":
            depth = 1 + max(items + fixed, default=0)
            if depth > MAX_TUPLE_DEPTH:
                raise _Refused(
                    f"refusing tuples nested more than {MAX_TUPLE_DEPTH} deep "
                    "(CIFAR-100 files nest them 2 deep; deeper ones can crash Python)"
                )
            stack.append(depth)
        elif kind == "get":
            stack.append(memo.get(arg, 0))
        elif kind == "put":
            if len(stack) <= fence:
                raise _not_a_pickle(f"{op.name} at byte {start} finds an empty stack")
            if not 0 <= arg <= count:  # numbered in order; a jump would size a huge memo table
                raise _Refused(
                    f"refusing memo index {arg:,} at byte {start} (after {count:,} opcodes)"
                )
            memo[arg] = stack[-1]
        elif kind == "memoize":
            memo[len(memo)] = fixed[0]
            stack.append(fixed[0])
        elif kind == "dup":
            stack += [fixed[0], fixed[0]]
        elif kind == "keep":
            stack.append(fixed[0])
        elif kind == "stop":
            return
        elif kind == "proto" and arg > pickle.HIGHEST_PROTOCOL:
            raise _Refused(f"is a protocol-{arg} pickle, newer than this Python reads")
        elif kind == "frame":
            if arg > size - pos:
                raise _not_a_pickle(f"FRAME at byte {start} runs past the end of the file")
            if frame_end is not None:
                raise _not_a_pickle(f"FRAME at byte {start} starts inside another frame")
            frame_end = pos + arg
        elif kind == "buffer":
            raise _Refused(
                "is a protocol-5 pickle whose arrays were written out of band "
                "(buffer_callback), so the file does not hold them; re-save it without one"
            )
        elif kind == "persid":
            raise _Refused(
                "refusing a pickle with persistent ids (written by a custom Pickler; "
                "not a CIFAR-100 file)"
            )
        else:
            stack += [0] * op.pushes
    raise _Refused(
        f"refusing a pickle of more than {MAX_OPCODES:,} opcodes "
        "(the CIFAR-100 train file has about 200,000)"
    )


# --- what a pickle may name, each a wrapper that checks its arguments ------------------------


def _numpy_module(name: str):
    # numpy 2 moved numpy.core to numpy._core; the official files name the old module
    try:
        return importlib.import_module(f"numpy._core.{name}")
    except ImportError:  # pragma: no cover - numpy 1.x
        return importlib.import_module(f"numpy.core.{name}")


_NUMPY_RECONSTRUCT = _numpy_module("multiarray")._reconstruct


class _PickledDtype:
    """What `numpy.dtype(code, ...)` in a pickle makes: an admitted code, its byte order once set.

    Not a real dtype, so BUILD (which calls __setstate__) reaches this checked
    method, never numpy's.
    """

    __slots__ = ("built", "code", "order")

    def __init__(self, code: str) -> None:
        self.code, self.order, self.built = code, "=", False

    def __setstate__(self, state: object) -> None:
        # numpy writes (version, byteorder, subarray, names, fields, elsize, alignment, flags,
        # and from version 4 metadata)
        if self.built:
            raise _Refused("a numpy dtype's state is set twice")
        if type(state) is not tuple or len(state) not in (8, 9):
            raise _Refused("a numpy dtype's pickled state is malformed (not a tuple of 8 or 9)")
        order = state[1].decode("latin-1") if type(state[1]) is bytes else state[1]
        if type(order) is not str or order not in ("<", ">", "|", "="):
            raise _Refused(f"a numpy dtype has byte order {_plain(order)}, not one of < > | =")
        if any(part is not None for part in state[2:5]):
            raise _Refused("refusing a structured numpy dtype (fields or subarrays)")
        if (
            len(state) == 9
            and state[8] is not None
            and not (type(state[8]) is dict and not state[8])
        ):
            raise _Refused("refusing a numpy dtype with metadata")
        self.order, self.built = order, True

    def numpy(self) -> np.dtype:
        dtype = np.dtype(self.code)
        return dtype.newbyteorder(self.order) if self.order in ("<", ">") else dtype


class _LoadedArray(np.ndarray):
    """An array the unpickler made: BUILD may fill it once, with a checked state; no item writes."""

    def __setstate__(self, state: object) -> None:
        if self.__dict__.get("filled"):
            raise _Refused("a numpy array's contents are set twice")
        if (
            type(state) is not tuple
            or len(state) != 5
            or type(state[0]) is not int
            or state[0] != 1
        ):
            raise _Refused(
                "a numpy array's pickled state is malformed "
                "(numpy writes (1, shape, dtype, is_fortran, bytes))"
            )
        _, shape, dtype, fortran, raw = state
        shape, dtype = _checked_shape(shape), _checked_dtype(dtype)
        if type(fortran) not in (bool, int) or fortran not in (0, 1):
            raise _Refused(f"a numpy array's order flag is {_plain(fortran)}, not a bool")
        _check_bytes(raw, (bytes,), shape, dtype)
        super().__setstate__((1, shape, dtype, bool(fortran), raw))
        self.filled = True

    def __setitem__(self, key: object, value: object) -> None:
        # pickle's SETITEM on a non-dict assigns items: numpy would expand `value` without bound
        raise _Refused("refusing to assign into a numpy array")


class _NdarrayName:
    """`numpy.ndarray` as a pickle sees it: an argument `_reconstruct` accepts, nothing more."""

    __slots__ = ()

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise _Refused(
            "refusing to call numpy.ndarray (only numpy's array reconstruction is admitted)"
        )

    def __setstate__(self, state: object) -> None:
        raise _Refused("refusing to set the state of numpy.ndarray")


_NDARRAY = _NdarrayName()


def _checked_shape(shape: object) -> tuple[int, ...]:
    if type(shape) is not tuple:
        raise _Refused(f"a numpy array's shape is {_plain(shape)}, not a tuple")
    if len(shape) > MAX_NDIM:
        raise _Refused(f"a numpy array has {len(shape)} dimensions, more than {MAX_NDIM}")
    for dim in shape:
        if type(dim) is not int or not 0 <= dim <= MAX_PICKLE_BYTES:
            raise _Refused(f"a numpy array's shape has a dimension of {_plain(dim)}")
    return shape


def _checked_dtype(dtype: object) -> np.dtype:
    if type(dtype) is not _PickledDtype:
        raise _Refused(f"a numpy array's dtype is {_plain(dtype)}, not a numpy dtype")
    return dtype.numpy()


def _check_bytes(raw: object, types: tuple[type, ...], shape: tuple[int, ...], dtype: np.dtype):
    """The bytes an array carries must be exactly what its shape and dtype claim."""
    if type(raw) not in types:
        raise _Refused(f"a numpy array's data is {_plain(raw)}, not bytes")
    need = math.prod(shape) * dtype.itemsize
    if len(raw) != need:
        raise _Refused(
            f"a numpy array claims shape {shape} of {dtype.name} ({need:,} bytes) "
            f"but carries {len(raw):,} bytes"
        )


def _reconstruct(subtype: object, shape: object, typecode: object) -> _LoadedArray:
    """numpy's `_reconstruct(ndarray, (0,), b'b')`: an empty array that BUILD then fills."""
    own = (
        subtype is _NDARRAY
        and type(shape) is tuple
        and len(shape) == 1
        and type(shape[0]) is int
        and shape[0] == 0
        and type(typecode) in (bytes, str)
        and typecode in (b"b", "b")
    )
    if not own:
        raise _Refused(
            "refusing numpy's _reconstruct with arguments other than numpy's own "
            "(ndarray, (0,), 'b')"
        )
    return _NUMPY_RECONSTRUCT(_LoadedArray, (0,), b"b")


def _frombuffer(buf: object, dtype: object, shape: object, order: object = "C") -> _LoadedArray:
    """numpy's protocol-5 `_frombuffer(buffer, dtype, shape, order)`, with the sizes checked."""
    shape, dtype = _checked_shape(shape), _checked_dtype(dtype)
    if type(order) is not str or order not in ("C", "F"):
        raise _Refused(f"a numpy array's order is {_plain(order)}, not 'C' or 'F'")
    _check_bytes(buf, (bytes, bytearray), shape, dtype)
    array = np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).view(_LoadedArray)
    array.filled = True
    return array


def _dtype(code: object, *flags: object) -> _PickledDtype:
    """numpy's `dtype(code, align, copy)`: only the codes the CIFAR-100 files use."""
    code = code.decode("latin-1") if type(code) is bytes else code
    if type(code) is not str or code not in ARRAY_DTYPES or len(flags) > 2:
        is_object = type(code) is str and code.startswith("O")
        why = "; object arrays can unpickle any object" if is_object else ""
        shown = repr(code) if type(code) is str and len(code) <= 20 else _plain(code)
        raise _Refused(
            f"refusing to unpickle a numpy array or scalar of dtype {shown} "
            f"(CIFAR-100 pickles hold uint8 images and int32/int64 labels{why})"
        )
    return _PickledDtype(code)


def _scalar(dtype: object, raw: object = None) -> int:
    """numpy's `scalar(dtype, bytes)` for an integer: returned as a plain Python int."""
    dtype = _checked_dtype(dtype)
    if type(raw) is not bytes or len(raw) != dtype.itemsize:
        raise _Refused(
            f"a numpy {dtype.name} scalar carries {_plain(raw)}, not {dtype.itemsize} bytes"
        )
    return int(np.frombuffer(raw, dtype=dtype)[0])


def _latin1_encode(*args: object) -> bytes:
    """`_codecs.encode(text, 'latin1')`: how Python 3 writes bytes at protocols 0-2."""
    admitted = (
        len(args) == 2
        and type(args[0]) is str
        and type(args[1]) is str
        and args[1] in ("latin1", "latin-1")
    )
    if not admitted:
        shown = ", ".join(
            repr(a) if type(a) is str and len(a) <= 20 else _plain(a) for a in args[:3]
        )
        raise _Refused(
            f"refusing _codecs.encode({shown}) (only the latin1 text Python 3 writes bytes as "
            "is admitted)"
        )
    return args[0].encode("latin-1")


def _empty_bytes(*args: object) -> bytes:
    """`bytes()`: how Python 3 writes an empty bytes at protocols 0-2."""
    if args:
        raise _Refused("refusing bytes(...) with arguments (only the empty b'' is admitted)")
    return b""


def _admitted() -> dict[tuple[str, str], object]:
    table: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("__builtin__", "bytes"): _empty_bytes,  # what Python 3 writes below protocol 3
        ("builtins", "bytes"): _empty_bytes,
    }
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        table[(f"{core}.multiarray", "scalar")] = _scalar
        table[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    return table


_ADMITTED = _admitted()


class _CheckedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase) -> None:
        # py2 `str` (keys, raw array bytes) stays bytes, as the official files mean it
        super().__init__(file, encoding="bytes")

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ADMITTED[(module, name)]
        except (KeyError, TypeError):
            raise _Refused(
                f"refusing to unpickle {_plain(module)}.{_plain(name)} "
                "(pickles can run code; this is not a CIFAR-100 file)"
            ) from None


def _scan_file(f: io.BufferedReader, size: int) -> None:
    """Scan the file through a read-only map (no copy in memory), then rewind it for loading."""
    if size == 0:
        raise _not_a_pickle("the file is empty")
    try:
        buf: bytes | mmap.mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # a file system without mmap: read it, it is at most the cap
        buf = f.read(MAX_PICKLE_BYTES + 1)
    try:
        _scan(buf)
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()
    f.seek(0)


def read_pickle(path: Path) -> object:
    """The object in the pickle at PATH, refused in one line unless it is plain data and arrays.

    Admitted: dicts, lists, tuples, ints, floats, strings, bytes, None, bools, and
    numpy arrays (uint8, int32, int64) and integer scalars (as Python ints).
    Arrays that are values of a top-level dict come back as plain ndarrays.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_PICKLE_BYTES:
                raise HpstudyError(
                    f"{path}: is {size:,} bytes, more than the {MAX_PICKLE_BYTES:,} a CIFAR-100 "
                    "pickle can be (the train file is about 155 MB)"
                )
            try:
                _scan_file(f, size)
                obj = _CheckedUnpickler(f).load()
            except _Refused as e:
                raise HpstudyError(f"{path}: {e}") from None
            except HpstudyError:
                raise
            except OSError:
                raise
            except MemoryError:
                raise HpstudyError(f"{path}: too large to load (out of memory)") from None
            except Exception as e:
                # garbage bytes fail in many ways (bad opcode, bad memo, bad reduce arguments)
                raise HpstudyError(
                    f"{path}: truncated or not a CIFAR-100 pickle "
                    f"({type(e).__name__}: {_one_line(e)})"
                ) from None
    except OSError as e:
        raise HpstudyError(f"{path}: cannot read: {e.strerror or e}") from None
    if isinstance(obj, dict):
        obj = {k: np.asarray(v) if isinstance(v, np.ndarray) else v for k, v in obj.items()}
    return obj
