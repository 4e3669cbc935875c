"""Read pickled torch checkpoints (such as official YOLOv5 .pt files) without importing or running code from them.

A normal ``torch.load`` of a YOLOv5 checkpoint imports ``models.yolo`` and calls whatever the pickle
names. :func:`load_inert` instead unpickles through :class:`InertUnpickler`, whose ``find_class``
answers every global the file names from a fixed allow-list:

- tensor storages (torch's own loader), ``torch._utils`` tensor/parameter rebuild functions
  (wrapped: hooks and Python state stored with a parameter are dropped), torch dtypes,
  ``collections.OrderedDict``, ``set``/``frozenset``/``slice``/``complex``, ``_codecs.encode`` (latin-1
  only, which protocol-2 pickles use for bytes), and ``getattr`` on a Record class only (pickled methods
  such as ``Detect.forward`` in segmentation models), answered with another Record class;
- classes of the modules in :data:`RECORD_MODULES` (YOLOv5 ``models.*``/``utils.*``, ``torch.nn.modules``,
  numpy arrays, ``pathlib`` paths, ``argparse.Namespace``) become :class:`Record` subclasses: inert
  objects that only keep the arguments and state the pickle gives them;
- anything else (``os.system``, ``subprocess``, ``builtins.eval``, ``torch.storage._load_from_bytes``,
  ``ultralytics.*`` ...) raises :class:`RefusedGlobal` before it is looked up.

Legacy (pre torch 1.6, non-zip) files and TorchScript archives are refused too: torch would read the
first through ``pickle.load`` and run the second.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import types
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

# Classes of these modules (and their submodules) become inert Records.
RECORD_MODULES = (
    "models", "utils", "yolov5.models", "yolov5.utils",  # YOLOv5 (repo layout and the `yolov5` pip package)
    "torch.nn.modules", "numpy", "pathlib", "argparse",
)
_LATIN1 = {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"}  # compared as is: no codec lookup (it imports)
_BUILTINS = {"set": set, "frozenset": frozenset, "slice": slice, "complex": complex}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list (``module.name``); nothing was imported or called."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name
        super().__init__(f"refused global {module}.{name}")


class Record:
    """Inert stand-in for a pickled object of class ``qualname``: keeps what the pickle gives it, runs nothing.

    ``args`` (constructor / ``__new__`` / reduce arguments), ``state`` (BUILD), ``items`` (SETITEMS) and
    ``values`` (APPENDS) are plain containers of other records, tensors and Python values.
    """

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "Record":
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items, obj.values = args, kwargs, None, {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # REDUCE calls cls(*args): __new__ kept them
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.values.append(value)

    def extend(self, values: Any) -> None:
        self.values.extend(values)

    @property
    def type_name(self) -> str:
        """The last component of the pickled class name, e.g. ``Conv`` for ``models.common.Conv``."""
        return self.qualname.rsplit(".", 1)[-1]

    def attrs(self) -> dict[str, Any]:
        """The object's ``__dict__`` as pickled (state may be ``dict`` or ``(dict, slots)``)."""
        s = self.state
        if isinstance(s, tuple) and len(s) == 2:
            merged: dict[str, Any] = {}
            for part in s:
                if isinstance(part, dict):
                    merged.update(part)
            return merged
        return s if isinstance(s, dict) else {}

    def get(self, name: str, default: Any = None) -> Any:
        return self.attrs().get(name, default)

    def __repr__(self) -> str:
        return f"<Record {self.qualname}>"


def _record_module(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in RECORD_MODULES)


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    """torch._utils._rebuild_tensor_v2 for a torch storage only; hooks dropped, no grad."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError(f"tensor rebuilt from {type(storage).__name__}, not a torch storage")
    t = torch._utils._rebuild_tensor(storage, int(offset), tuple(size), tuple(stride))
    if isinstance(metadata, dict) and metadata:
        torch._utils.set_tensor_metadata(t, {k: bool(v) for k, v in metadata.items() if k in ("conj", "neg")})
    return t


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor:
    return _rebuild_tensor_v2(storage, offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                       state: Any = None) -> torch.Tensor:
    """A Parameter pickled with hooks or Python state comes back as its plain tensor."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"parameter rebuilt from {type(data).__name__}, not a tensor")
    return data.detach()


def _latin1_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes objects: latin-1 only."""
    if not isinstance(text, str) or str(encoding).lower().replace("_", "-") not in _LATIN1:
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} refused (only latin-1 bytes)")
    return text.encode("latin-1")


_FUNCTIONS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("_codecs", "encode"): _latin1_encode,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
}


class InertUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals come only from the allow-list (see the module docstring).

    One Record subclass per pickled class name is made (and cached) per unpickler; ``seen`` lists
    every global the file asked for, in order.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._classes: dict[str, type[Record]] = {}
        self.seen: list[str] = []

    def find_class(self, module: str, name: str) -> Any:
        if not isinstance(module, str) or not isinstance(name, str):
            raise RefusedGlobal(str(module), str(name))
        # protocol-2 pickles name Python 2 modules (__builtin__.set); map them as pickle itself does
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        self.seen.append(f"{module}.{name}")
        if (module, name) in _FUNCTIONS:
            return _FUNCTIONS[(module, name)]
        if module == "builtins" and name in _BUILTINS:
            return _BUILTINS[name]
        if module == "builtins" and name == "getattr":
            return self._record_getattr
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype) and name.isidentifier():
            return getattr(torch, name)
        if _record_module(module) and all(part.isidentifier() for part in name.split(".")):
            return self._record_class(f"{module}.{name}")
        raise RefusedGlobal(module, name)

    def _record_class(self, qualname: str) -> type[Record]:
        if qualname not in self._classes:
            short = qualname.rsplit(".", 1)[-1]
            self._classes[qualname] = type(short, (Record,), {"qualname": qualname, "__module__": __name__})
        return self._classes[qualname]

    def _record_getattr(self, obj: Any, name: Any) -> type[Record]:
        """``getattr`` as pickles use it for methods (``models.yolo.Detect.forward``): only on a Record class,
        and the answer is another inert Record class; a real getattr would reach any object's globals."""
        if isinstance(obj, type) and issubclass(obj, Record) and isinstance(name, str) and name.isidentifier():
            return self._record_class(f"{obj.qualname}.{name}")
        raise RefusedGlobal("builtins", f"getattr({type(obj).__name__}, {name!r})")


def _pickle_module() -> types.ModuleType:
    """A stand-in for the ``pickle`` module that ``torch.load`` accepts (``Unpickler`` and ``load``)."""
    mod = types.ModuleType("effteacher_inert_pickle")
    mod.Unpickler = InertUnpickler  # type: ignore[attr-defined]

    def load(file: Any, **kwargs: Any) -> Any:
        return InertUnpickler(file, **kwargs).load()

    mod.load = load  # type: ignore[attr-defined]
    return mod


class NotATorchZip(pickle.UnpicklingError):
    """The file is not a torch>=1.6 zip checkpoint (legacy format, TorchScript archive, or something else)."""


def _check_archive(path: Path) -> None:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise NotATorchZip("not a zip-format torch checkpoint (files from torch < 1.6 or plain pickles are not read)")
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except zipfile.BadZipFile as e:
        raise NotATorchZip(f"damaged zip archive ({e})") from None
    if any(n == "constants.pkl" or n.endswith("/constants.pkl") for n in names):
        raise NotATorchZip("a TorchScript archive (torch.jit.save), not a training checkpoint")
    if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        raise NotATorchZip("a zip file without data.pkl, not a torch checkpoint")


def load_inert(path: str | Path) -> Any:
    """Unpickle a torch zip checkpoint on CPU with :class:`InertUnpickler`.

    Tensors come back as CPU tensors; allowed classes as :class:`Record` objects; plain containers
    as themselves. Raises :class:`RefusedGlobal` for a global outside the allow-list and
    :class:`NotATorchZip` for legacy/TorchScript/other files; nothing from the file is imported or run.
    """
    path = Path(path)
    _check_archive(path)
    with open(path, "rb") as f:
        return torch.load(f, map_location="cpu", pickle_module=_pickle_module(), weights_only=False, mmap=False)


def walk_records(obj: Any, depth: int = 0) -> Iterator[Record]:
    """Every Record reachable from ``obj`` through Records' args/state and lists, tuples and dicts."""
    if depth > 200:
        return
    if isinstance(obj, Record):
        yield obj
        for part in (obj.args, obj.state, obj.items, obj.values):
            yield from walk_records(part, depth + 1)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from walk_records(v, depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            yield from walk_records(v, depth + 1)
