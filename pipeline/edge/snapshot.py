"""Snapshots of the node's learned state: atomic, incremental, versioned, refused when in doubt.

Why: detector state lived only in memory, so every restart started every series cold (about
4 false alarms per device on a cold first day). The node now writes what it learned to its
state dir and, on start, restores it and replays the journal from the snapshot's watermark.

What is saved is opaque to this module: the node hands over ``{name: part}`` where a part is

* :class:`PerDevice` -- a dict keyed by device or by a tuple whose first item is the device
  (per-series detectors, alert hysteresis, ...). Its entries are spread over ``shards`` files
  by a stable hash of the device (CRC-32), and only the shards of devices that changed since
  the last snapshot are rewritten: a 100k-device node whose few devices changed rewrites few
  files.
* :class:`Stage` (or any other object) -- a whole-site stage, one file per snapshot. Only its
  *state* is saved: attributes named like its constructor's parameters (or, for a dataclass,
  fields without a default) are its configuration and come from the running node, so a
  changed setting wins over the snapshot, and callables and keys are never pickled.

Layout on disk (``<folder>`` is ``<state_dir>/<node>/snapshot``)::

    MANIFEST                     names the valid parts, the watermark, the generation
    whole-<name>.g<gen>.part     one per whole part, rewritten every snapshot
    shard-<i>.g<gen>.part        per-device entries of shard i, rewritten when dirty

Protocol of a write (a crash anywhere leaves the previous snapshot valid):

1. each new part goes to ``<file>.tmp``, is fsynced, renamed to its final (new) name;
2. the manifest goes to ``MANIFEST.tmp``, is fsynced and renamed over ``MANIFEST``;
3. the folder is fsynced (the renames are durable), then parts no manifest names are deleted.

Every file starts with :data:`MAGIC`, the format version and a JSON header (site, edgepipe
version, length, BLAKE2b digest of the body). The manifest repeats each part's size and digest.
A snapshot of another format version or site, a truncated or bit-flipped file, or one whose
pickled classes no longer exist (or are outside :data:`ALLOWED_MODULES`) is refused with a
reason; the node then starts cold. Unpickling runs code named by the file: it is safe only
for files this node wrote into its own state dir, which the digests and the magic check.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import hashlib
import importlib
import inspect
import io
import json
import os
import pickle
import pkgutil
import struct
import time
import zlib
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import __version__

__all__ = [
    "ALLOWED_MODULES",
    "FORMAT_VERSION",
    "MAGIC",
    "Loaded",
    "PerDevice",
    "SnapshotRefused",
    "SnapshotStore",
    "Stage",
    "WriteStats",
    "apply",
    "device_of",
    "shard_of",
]

MAGIC = b"EPSNAP1\n"
FORMAT_VERSION = 1
MANIFEST = "MANIFEST"
DEFAULT_SHARDS = 1024
_WRITERS = 16  # threads writing and fsyncing shard files at once
_PREFIX = struct.Struct(">HI")  # format version, header length (bytes)
# Top-level packages a snapshot may name classes from; anything else is refused.
ALLOWED_MODULES = frozenset(
    {"pipeline", "river", "numpy", "collections", "array", "builtins", "copyreg", "_codecs", "math", "datetime"}
)
_BUILTINS_ALLOWED = frozenset(
    {"set", "frozenset", "dict", "list", "tuple", "bytearray", "bytes", "complex", "float", "int", "str", "bool", "slice", "range", "object", "getattr"}
)


# The packages whose classes hold learned state: their attributes are the snapshot's schema.
STATE_PACKAGES = ("pipeline.detect", "pipeline.learn", "pipeline.edge")


@functools.cache
def state_schema() -> str:
    """A fingerprint of the attributes of every slotted class (and slots dataclass) holding state.

    Why: a snapshot pickles objects by their attributes; one written before a class gained a
    slot (``StuckRun`` and ``EdgeResidualMemory`` did in session 7) would restore objects
    missing it, and the node would fail at its first reading. A snapshot of another schema is
    refused (``state_schema``) and the node starts cold, as for any snapshot it cannot trust.
    Classes with an instance dict keep new attributes readable by giving them a class default.
    """
    entries: list[str] = []
    for package_name in STATE_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, package_name + "."):
            module = importlib.import_module(info.name)
            for name, cls in sorted(vars(module).items()):
                if not isinstance(cls, type) or cls.__module__ != info.name:
                    continue
                slots = [s for klass in cls.__mro__ for s in klass.__dict__.get("__slots__", ())]
                if slots:
                    entries.append(f"{info.name}.{name}:{','.join(sorted(slots))}")
    return hashlib.blake2b("\n".join(entries).encode(), digest_size=8).hexdigest()


class SnapshotRefused(Exception):
    """A snapshot that must not be restored; ``reason`` is the counter's label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class PerDevice:
    """A dict keyed by device (or ``(device, ...)``), saved in device-hash shards."""

    mapping: dict[Any, Any]


@dataclass(frozen=True)
class Stage:
    """A whole-site stage; ``skip`` names attributes not worth saving (caches of config)."""

    obj: object
    skip: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Shared:
    """Stands in a whole part for a dict that is saved as a :class:`PerDevice` part."""

    name: str


@dataclass
class WriteStats:
    bytes_total: int  # every part the manifest names, written now or earlier
    bytes_written: int  # this write only
    parts_written: int
    seconds: float
    generation: int
    watermark: int


@dataclass
class Loaded:
    """A verified snapshot: its parts (whole parts as state dicts) and its watermark."""

    parts: dict[str, object]
    watermark: int
    generation: int
    created_ms: int
    bytes_total: int


def device_of(key: object) -> str:
    """The device a per-device key belongs to: the key, or its first item."""
    if isinstance(key, tuple):
        return str(key[0])
    return str(key)


def shard_of(device: str, shards: int) -> int:
    """Stable across processes and versions (unlike ``hash``): CRC-32 of the UTF-8 name."""
    return zlib.crc32(device.encode()) % shards


# -- state of a stage: everything but its configuration ----------------------------------------


def _config_names(obj: object) -> set[str]:
    cls = type(obj)
    if dataclasses.is_dataclass(cls):
        return {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            names |= set(inspect.signature(init).parameters) - {"self"}
        except (TypeError, ValueError):
            continue
    return names


def _attributes(obj: object) -> dict[str, Any]:
    out = dict(getattr(obj, "__dict__", {}))
    for klass in type(obj).__mro__:
        for name in klass.__dict__.get("__slots__", ()):
            if hasattr(obj, name):
                out[name] = getattr(obj, name)
    return out


def _state_of(stage: Stage, shared: Mapping[int, str]) -> dict[str, Any]:
    if isinstance(stage.obj, dict):
        return {"__dict__": stage.obj}
    config = _config_names(stage.obj) | set(stage.skip)
    state: dict[str, Any] = {}
    for name, value in _attributes(stage.obj).items():
        if name in config or callable(value):
            continue
        state[name] = _Shared(shared[id(value)]) if id(value) in shared else value
    return state


def apply(live: Mapping[str, object], loaded: Mapping[str, object]) -> None:
    """Put a loaded snapshot into the live parts, in place (references to them stay valid).

    Per-device dicts are refilled; whole stages get their saved state attributes, except the
    ones standing for per-device dicts (already refilled) and the ones no longer present.
    """
    for name, part in live.items():
        if name not in loaded:
            continue
        saved = loaded[name]
        if isinstance(part, PerDevice):
            assert isinstance(saved, dict)
            part.mapping.clear()
            part.mapping.update(saved)
            continue
        stage = part if isinstance(part, Stage) else Stage(part)
        assert isinstance(saved, dict)
        if isinstance(stage.obj, dict):
            stage.obj.clear()
            stage.obj.update(saved["__dict__"])
            continue
        for attr, value in saved.items():
            if isinstance(value, _Shared):
                continue
            setattr(stage.obj, attr, value)


# -- file format ------------------------------------------------------------------------------


def _digest(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def _frame(header: dict[str, Any], body: bytes) -> bytes:
    header = {**header, "length": len(body), "digest": _digest(body)}
    raw = json.dumps(header, sort_keys=True).encode()
    return MAGIC + _PREFIX.pack(FORMAT_VERSION, len(raw)) + raw + body


def _unframe(data: bytes, what: str) -> tuple[dict[str, Any], bytes]:
    if not data.startswith(MAGIC):
        raise SnapshotRefused("corrupt", f"{what}: no snapshot magic")
    start = len(MAGIC) + _PREFIX.size
    if len(data) < start:
        raise SnapshotRefused("corrupt", f"{what}: truncated header")
    version, hlen = _PREFIX.unpack_from(data, len(MAGIC))
    if version != FORMAT_VERSION:
        raise SnapshotRefused("format_version", f"{what}: format {version}, this edgepipe reads {FORMAT_VERSION}")
    try:
        header = json.loads(data[start : start + hlen])
    except ValueError:
        raise SnapshotRefused("corrupt", f"{what}: unreadable header") from None
    body = data[start + hlen :]
    if not isinstance(header, dict) or len(body) != header.get("length"):
        raise SnapshotRefused("corrupt", f"{what}: truncated ({len(body)} bytes of body)")
    if _digest(body) != header.get("digest"):
        raise SnapshotRefused("corrupt", f"{what}: checksum mismatch")
    return header, body


_FOUND: dict[tuple[str, str], Any] = {}  # (module, name) -> class, once allowed and found


class _Unpickler(pickle.Unpickler):
    """Refuses classes outside :data:`ALLOWED_MODULES` and classes that no longer exist."""

    def find_class(self, module: str, name: str) -> Any:
        found = _FOUND.get((module, name))
        if found is not None:
            return found
        found = _FOUND[(module, name)] = self._find_class(module, name)
        return found

    def _find_class(self, module: str, name: str) -> Any:
        top = module.split(".", 1)[0]
        if top not in ALLOWED_MODULES or (module == "builtins" and name not in _BUILTINS_ALLOWED):
            raise SnapshotRefused("unknown_class", f"{module}.{name} is not allowed in a snapshot")
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            raise SnapshotRefused("unknown_class", f"{module}.{name} no longer exists") from None


_SLOTS: dict[type, tuple[str, ...] | None] = {}


def _slot_fields(cls: type) -> tuple[str, ...] | None:
    """Field names of a slots dataclass (None for any other class), cached per class."""
    names = _SLOTS.get(cls, ())
    if names == ():
        slotted = dataclasses.is_dataclass(cls) and "__slots__" in cls.__dict__
        names = _SLOTS[cls] = tuple(f.name for f in dataclasses.fields(cls)) if slotted else None
    return names


def _rebuild(cls: type, names: tuple[str, ...], values: tuple[Any, ...]) -> object:
    """A slots dataclass from its field values, without ``__init__`` (as unpickling does)."""
    obj: object = object.__new__(cls)
    for name, value in zip(names, values, strict=True):
        object.__setattr__(obj, name, value)
    return obj


class _Pickler(pickle.Pickler):
    """Pickles slots dataclasses as (class, field names, values).

    Why: their default ``__setstate__`` calls ``dataclasses.fields()`` per instance, which
    made restores five times slower (open windows and held points are such instances).
    """

    def reducer_override(self, obj: Any) -> Any:
        names = _slot_fields(type(obj))
        if names is None:
            return NotImplemented
        return _rebuild, (type(obj), names, tuple(getattr(obj, n) for n in names))


def _pickle(value: object) -> bytes:
    out = io.BytesIO()
    _Pickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return out.getvalue()


def _unpickle(body: bytes, what: str) -> Any:
    try:
        return _Unpickler(io.BytesIO(body)).load()
    except SnapshotRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to rebuild the state refuses it
        raise SnapshotRefused("unknown_class", f"{what}: cannot rebuild ({type(exc).__name__}: {exc})") from None


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SnapshotStore:
    """The snapshot folder of one node: write new generations, load the newest valid one.

    Parameters
    ----------
    folder
        Created if missing; holds nothing but this store's files.
    site
        Written into every file; a snapshot of another site is refused.
    shards
        Files per-device state is spread over (by :func:`shard_of`); changing it forces a
        full write, never a wrong restore.
    """

    def __init__(self, folder: str | os.PathLike[str], site: str, *, shards: int = DEFAULT_SHARDS) -> None:
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self.folder = Path(folder)
        self.site = site
        self.shards = shards
        self.folder.mkdir(parents=True, exist_ok=True)
        self._manifest: dict[str, Any] | None = None  # the one on disk, once read or written
        self._shard_cache: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"SnapshotStore({str(self.folder)!r}, site={self.site!r}, shards={self.shards})"

    def shard(self, device: str) -> int:
        s = self._shard_cache.get(device)
        if s is None:
            s = self._shard_cache[device] = shard_of(device, self.shards)
        return s

    # -- reading -------------------------------------------------------------------------

    def manifest(self) -> dict[str, Any] | None:
        """The verified manifest on disk, None when there is none; raises SnapshotRefused."""
        path = self.folder / MANIFEST
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SnapshotRefused("unreadable", f"{path}: {exc}") from None
        header, body = _unframe(data, MANIFEST)
        try:
            manifest = json.loads(body)
        except ValueError:
            raise SnapshotRefused("corrupt", f"{MANIFEST}: unreadable body") from None
        if header.get("site") != self.site or manifest.get("site") != self.site:
            raise SnapshotRefused("other_site", f"{MANIFEST}: site {header.get('site')!r}, this node serves {self.site!r}")
        if manifest.get("state_schema") != state_schema():
            raise SnapshotRefused(
                "state_schema",
                f"{MANIFEST}: written by edgepipe {manifest.get('edgepipe')} whose learned-state classes differ from this one's",
            )
        return dict(manifest)

    def load(self) -> Loaded | None:
        """The newest snapshot, verified and rebuilt; None when there is none.

        Raises :class:`SnapshotRefused` (with a reason) for anything not to be trusted.
        """
        manifest = self.manifest()
        if manifest is None:
            return None
        # Unpickling builds millions of small objects: the cyclic collector would walk the
        # growing heap again and again (it doubled the restore time of 10k devices).
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._load(manifest)
        finally:
            if enabled:
                gc.enable()

    def _load(self, manifest: dict[str, Any]) -> Loaded:
        parts: dict[str, object] = {}
        total = 0
        for name, entry in sorted(manifest["whole"].items()):
            parts[name] = _unpickle(self._read_part(entry), f"part {name}")
            total += entry["size"]
        per_device: dict[str, dict[Any, Any]] = {name: {} for name in manifest["per_device"]}
        for shard, entry in sorted(manifest["shards"].items()):
            content = _unpickle(self._read_part(entry), f"shard {shard}")
            total += entry["size"]
            for name, entries in content.items():
                per_device.setdefault(name, {}).update(entries)
        parts.update(per_device)
        self._manifest = manifest
        return Loaded(parts, int(manifest["watermark"]), int(manifest["generation"]), int(manifest["created_ms"]), total)

    def _read_part(self, entry: Mapping[str, Any]) -> bytes:
        path = self.folder / entry["file"]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SnapshotRefused("corrupt", f"{entry['file']}: {exc.strerror or exc}") from None
        if len(data) != entry["size"]:
            raise SnapshotRefused("corrupt", f"{entry['file']}: {len(data)} bytes, the manifest says {entry['size']}")
        header, body = _unframe(data, entry["file"])
        if header.get("site") != self.site:
            raise SnapshotRefused("other_site", f"{entry['file']}: site {header.get('site')!r}")
        if _digest(body) != entry["digest"]:
            raise SnapshotRefused("corrupt", f"{entry['file']}: not the part the manifest names")
        return body

    # -- writing -------------------------------------------------------------------------

    def write(
        self,
        parts: Mapping[str, object],
        watermark: int,
        dirty_devices: Iterable[str] | None = None,
        *,
        created_ms: int = 0,
    ) -> WriteStats:
        """Write a new generation: whole parts always, the shards of ``dirty_devices`` (all
        shards when None, or when there is no usable previous manifest), then the manifest."""
        t0 = time.perf_counter()
        previous = self._previous_manifest()
        per_device = {n: p.mapping for n, p in parts.items() if isinstance(p, PerDevice)}
        full = (
            dirty_devices is None
            or previous is None
            or previous.get("shards_n") != self.shards
            or sorted(previous.get("per_device", [])) != sorted(per_device)
        )
        generation = (previous["generation"] + 1) if previous else 1
        header = {"site": self.site, "edgepipe": __version__, "generation": generation}
        written = 0
        files_written = 0
        new_whole: dict[str, dict[str, Any]] = {}
        shared = {id(m): n for n, m in per_device.items()}
        for name, part in parts.items():
            if isinstance(part, PerDevice):
                continue
            stage = part if isinstance(part, Stage) else Stage(part)
            body = _pickle(_state_of(stage, shared))
            new_whole[name] = self._put(f"whole-{name}.g{generation}.part", {**header, "part": name}, body)
            written += new_whole[name]["size"]
            files_written += 1
        if full:
            dirty = set(range(self.shards))
            shards: dict[str, dict[str, Any]] = {}
        else:
            assert previous is not None and dirty_devices is not None
            dirty = {self.shard(d) for d in dirty_devices}
            shards = dict(previous["shards"])
        buckets: dict[int, dict[str, dict[Any, Any]]] = {s: {} for s in dirty}
        for name, mapping in per_device.items():
            for key, value in mapping.items():
                s = self.shard(device_of(key))
                if s in buckets:
                    buckets[s].setdefault(name, {})[key] = value
        pending: list[tuple[str, str, dict[str, Any], bytes]] = []
        for s, content in sorted(buckets.items()):
            if not content:
                shards.pop(str(s), None)
                continue
            body = _pickle(content)
            pending.append((str(s), f"shard-{s:04d}.g{generation}.part", {**header, "shard": s}, body))
        # fsync waits on the disk, not the CPU (the GIL is released): many at once.
        with ThreadPoolExecutor(max_workers=_WRITERS) as pool:
            entries = list(pool.map(lambda p: self._put(p[1], p[2], p[3]), pending))
        for (key, *_rest), entry in zip(pending, entries, strict=True):
            shards[key] = entry
            written += entry["size"]
            files_written += 1
        manifest = {
            "site": self.site,
            "edgepipe": __version__,
            "state_schema": state_schema(),
            "generation": generation,
            "watermark": int(watermark),
            "created_ms": int(created_ms),
            "shards_n": self.shards,
            "per_device": sorted(per_device),
            "whole": new_whole,
            "shards": shards,
        }
        body = json.dumps(manifest, sort_keys=True).encode()
        _write_durably(self.folder / MANIFEST, _frame(header, body))
        _fsync_dir(self.folder)
        self._manifest = manifest
        self._remove_unnamed(manifest)
        total = sum(e["size"] for e in new_whole.values()) + sum(e["size"] for e in shards.values())
        return WriteStats(total, written, files_written, time.perf_counter() - t0, generation, int(watermark))

    def _previous_manifest(self) -> dict[str, Any] | None:
        if self._manifest is not None:
            return self._manifest
        try:
            return self.manifest()
        except SnapshotRefused:
            return None  # a refused snapshot is overwritten by a full one

    def _put(self, filename: str, header: dict[str, Any], body: bytes) -> dict[str, Any]:
        data = _frame(header, body)
        _write_durably(self.folder / filename, data)
        return {"file": filename, "size": len(data), "digest": _digest(body)}

    def _remove_unnamed(self, manifest: Mapping[str, Any]) -> None:
        """Delete parts and temporary files no manifest names (only after it is durable)."""
        named = {e["file"] for e in manifest["whole"].values()} | {e["file"] for e in manifest["shards"].values()}
        for path in self.folder.iterdir():
            if path.name != MANIFEST and path.name not in named and path.suffix in (".part", ".tmp"):
                path.unlink(missing_ok=True)


@dataclass
class SnapshotHealth:
    """What health and /metrics report about snapshots (see docs/protocol.md)."""

    bytes: int = 0
    write_ms: float = 0.0
    written_at_ms: int = 0  # node clock of the last write (0: none yet)
    generation: int = 0
    writes: int = 0
    restored: bool = False
    restore_reason: str = "none"  # restored | none | disabled | a refusal reason
    replay_gap: int = 0  # journal entries between the watermark and the journal's start, lost
    refused: dict[str, int] = field(default_factory=dict)
