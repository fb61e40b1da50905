"""fastpool.kernels.cfunc: a kernel from a native function.

Every accepted form becomes one thing: the function's address, checked to
be code of this process, with what keeps it alive and, when it has one, the
(library, symbol) that finds it again in another process.  The function is
called once per element (or, with loop=True, once per chunk of elements),
without the GIL, so it must not call into Python.
"""
from __future__ import annotations

import os
import sys
import threading

from fastpool import _core

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["cfunc", "cfunc_loop"]

_FORMS = ("an int address, a ctypes function pointer, a numba @cfunc or a "
          "(library_path, symbol) pair")
_ADDRESS_ONLY = ("it was made from an address, which means nothing in another process; make it "
                 "from (library_path, symbol) to run it in a process pool")
_CTYPE_CODES = {"f8": ("d",), "i8": ("q", "l")}    # ctypes' _type_ codes of each type (8 bytes)

_lock = threading.Lock()
_made: dict = {}      # what made a kernel -> the kernel (table entries last as long as the process)


class _Sig:
    """A signature as cfunc reads it: its text, result, operands, and
    whether the function is a loop."""

    def __init__(self, signature: Any, loop: bool) -> None:
        try:
            self.text, self.result, self.operands = _core._signature_parts(signature)
        except (TypeError, ValueError) as e:
            raise type(e)(f"cfunc: {e}") from None
        self.loop = bool(loop)


def cfunc(fn: Any, signature: str, *, loop: bool = False) -> Any:
    """fastpool.kernels.cfunc (see there)."""
    sig = _Sig(signature, loop)
    if isinstance(fn, tuple):
        return _from_library(fn, sig)
    if isinstance(fn, bool):
        raise TypeError(f"cfunc: fn must be {_FORMS}, not bool")
    if isinstance(fn, int):
        return _from_address(fn, sig)
    ctypes = sys.modules.get("ctypes")
    if ctypes is not None and isinstance(fn, ctypes._CFuncPtr):
        return _from_ctypes(fn, sig)
    address = getattr(fn, "address", None)
    prototype = getattr(fn, "ctypes", None)
    if isinstance(address, int) and prototype is not None:
        # numba's @cfunc (and anything alike): compiled in this process only
        import ctypes

        if isinstance(prototype, ctypes._CFuncPtr):
            _check_prototype(prototype, sig)
        name = getattr(fn, "__name__", None) or f"0x{address:x}"
        return _kernel(("address", address), name, sig, _checked(address), _ADDRESS_ONLY, fn)
    raise TypeError(f"cfunc: fn must be {_FORMS}, not {type(fn).__name__}")


def cfunc_loop(fn: Any, signature: str) -> Any:
    """cfunc(fn, signature, loop=True), by position (what such a kernel pickles as)."""
    return cfunc(fn, signature, loop=True)


def _kernel(key: tuple, name: str, sig: _Sig, address: int, spec: Any, keep: Any) -> Any:
    key += (sig.text, sig.loop)
    with _lock:
        k = _made.get(key)
        if k is None:
            k = _made[key] = _core._cfunc_kernel(name, sig.text, address, spec, keep, sig.loop)
        return k


def _from_address(address: int, sig: _Sig) -> Any:
    return _kernel(("address", address), f"0x{address:x}" if address > 0 else str(address), sig,
                   _checked(address), _ADDRESS_ONLY, None)


def _from_library(fn: tuple, sig: _Sig) -> Any:
    import ctypes

    if len(fn) != 2:
        raise TypeError(f"cfunc: a library function is a (library_path, symbol) pair, not a "
                        f"{len(fn)}-tuple")
    path, symbol = fn
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"cfunc: library_path must be a str or a path, not {type(path).__name__}")
    if not isinstance(symbol, str):
        raise TypeError(f"cfunc: symbol must be a str, not {type(symbol).__name__}")
    path = os.fsdecode(path)
    if os.sep in path:
        path = os.path.abspath(path)    # a worker process may have another working directory
    key = ("lib", path, symbol)
    with _lock:
        if key + (sig.text, sig.loop) in _made:
            return _made[key + (sig.text, sig.loop)]
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise ValueError(f"cfunc: cannot load library {path!r} ({e})") from e
    try:
        address = ctypes.cast(lib[symbol], ctypes.c_void_p).value
    except AttributeError as e:
        raise ValueError(f"cfunc: library {path!r} has no symbol {symbol!r}") from e
    spec = ("libloop" if sig.loop else "lib", path, symbol, sig.text)
    return _kernel(key, symbol, sig, _checked(address, f"symbol {symbol!r} of {path!r}"), spec, lib)


def _from_ctypes(fn: Any, sig: _Sig) -> Any:
    import ctypes

    objects = fn._objects if isinstance(fn._objects, dict) else {}
    if any(type(o).__name__ == "CThunkObject" for o in objects.values()):
        raise TypeError("cfunc: this ctypes function was made from a Python callable: it runs "
                        "Python code, which needs the GIL; pass the Python function itself as a "
                        "processor instead")
    _check_prototype(fn, sig)
    address = ctypes.cast(fn, ctypes.c_void_p).value or 0
    name = getattr(fn, "__name__", None)
    lib = objects.get("0")
    if isinstance(lib, ctypes.CDLL) and isinstance(name, str) and lib._name:
        # A function of a loaded library: another process can load it by name.
        try:
            found = ctypes.cast(lib[name], ctypes.c_void_p).value
        except AttributeError:
            found = None
        if found == address:
            return _from_library((lib._name, name), sig)
    return _kernel(("address", address), name or f"0x{address:x}", sig, _checked(address),
                   _ADDRESS_ONLY, fn)


def _check_prototype(fn: Any, sig: _Sig) -> None:
    # A ctypes prototype that says what the function takes must agree with
    # the signature (a function of a CDLL says nothing until it is told).
    argtypes = fn.argtypes
    if argtypes is None:
        return
    if sig.loop:
        _check_loop_prototype(argtypes, fn.restype)
        return
    result, operands = sig.result, sig.operands
    sig = sig.text
    if len(argtypes) != len(operands):
        raise ValueError(f"cfunc: the function takes {len(argtypes)} argument"
                         f"{'s' if len(argtypes) != 1 else ''} ({_ctype_names(argtypes)}); "
                         f"the signature {sig} has {len(operands)}")
    for i, (t, want) in enumerate(zip(argtypes, operands)):
        if not _is(t, want):
            raise ValueError(f"cfunc: argument {i + 1} of the function is {t.__name__}, the "
                             f"signature {sig} says {want}")
    if not _is(fn.restype, result):
        got = "void" if fn.restype is None else getattr(fn.restype, "__name__", repr(fn.restype))
        raise ValueError(f"cfunc: the function returns {got}, the signature {sig} says {result}")


def _check_loop_prototype(argtypes: Any, restype: Any) -> None:
    # void loop(char **args, int64_t n, void *data)
    import ctypes

    pointers = (ctypes.c_void_p, ctypes.c_char_p)
    ok = (len(argtypes) == 3 and restype is None and _is(argtypes[1], "i8")
          and all(issubclass(t, pointers) or issubclass(t, ctypes._Pointer) for t in argtypes[::2]))
    if not ok:
        got = "void" if restype is None else getattr(restype, "__name__", repr(restype))
        raise ValueError(f"cfunc: a loop is void (char **args, int64 n, void *data), not "
                         f"{got} ({_ctype_names(argtypes)})")


def _is(ctype: Any, code: str) -> bool:
    import ctypes

    return (isinstance(ctype, type) and getattr(ctype, "_type_", None) in _CTYPE_CODES[code]
            and ctypes.sizeof(ctype) == 8)


def _ctype_names(types: Any) -> str:
    return ", ".join(getattr(t, "__name__", repr(t)) for t in types)


def _checked(address: int, what: str | None = None) -> int:
    """`address` if it is in code of this process; else a ValueError (a
    call to anything else would crash the process)."""
    what = what or (f"address 0x{address:x}" if address > 0 else f"address {address}")
    if address == 0:
        raise ValueError(f"cfunc: {what} is NULL")
    if not 0 < address < 2**64:
        raise ValueError(f"cfunc: {what} is not an address")
    perms = _mapping_of(address)
    if perms is None:
        raise ValueError(f"cfunc: {what} is not mapped in this process: not a function")
    if perms and "x" not in perms:
        raise ValueError(f"cfunc: {what} is in memory that is not executable ({perms}): data, "
                         "not a function")
    return address


def _mapping_of(address: int) -> str | None:
    """The permissions of the mapping that holds `address` ("r-xp"), None
    if none does, "" if this system does not say."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                span, perms = line.split(None, 2)[:2]
                lo, _, hi = span.partition("-")
                if int(lo, 16) <= address < int(hi, 16):
                    return perms
    except OSError:
        return ""
    return None
