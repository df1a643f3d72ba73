"""Preference-pair datasets (format "vla-rl-pairs", version 1): versioned, validated, append-only.

Layout::

    DIR/pairs.json              index: format, version, image_shape, instruction_length, pairs[]
    DIR/segments/<id16>.npz     one pair's pixels: first (H, h, w, 3) uint8, second (H, h, w, 3) uint8,
                                instruction (L,) int64

An index entry::

    id            sha256 of both segments' pixels + the instruction ids (the de-duplication key)
    file, sha256  the .npz and its checksum (a corrupt file is reported by name)
    instruction   the text
    first/second  {"source": dataset dir, "episode": int, "t": first step, "length": H}
    status        "unlabeled" | "labeled" | "abstain"
    label         0 (first better), 1 (second better), 0.5 (tie) — null unless status is "labeled"
    label_source  e.g. "scripted:oracle", "hf:<model>", "openai:<model>" (null when unlabeled)
    provenance    {teacher parameters | model, prompt_sha256, raw answers, swap_consistent, ...}
    gt_return     [R_first, R_second] privileged ground truth for audits, or null
    progress      [[p_t ...], [p_t ...]] privileged progress of each frame, or null

Writes are atomic (segment file first, then the index); re-adding a pair with a known id is a no-op,
and relabelling replaces the entry's label fields only.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_rl.base.atomic_io import atomic_write_bytes, atomic_write_json
from vla_rl.base.errors import VLARLError
from vla_rl.base.formats import read_checked_bytes, read_versioned_json

FORMAT = "vla-rl-pairs"
VERSION = 1
INDEX = "pairs.json"
STATUSES = ("unlabeled", "labeled", "abstain")
LABELS = (0, 1, 0.5)
REF_FIELDS = {"source": str, "episode": int, "t": int, "length": int}


class PairDataError(VLARLError):
    """A pair file or index is missing, corrupt or malformed; the message names the file and field."""


@dataclass
class Pair:
    first: np.ndarray  # (H, h, w, 3) uint8
    second: np.ndarray
    instruction: np.ndarray  # (L,) int64
    instruction_text: str
    first_ref: dict[str, Any]
    second_ref: dict[str, Any]
    gt_return: list[float] | None = None
    progress: list[list[float]] | None = None
    status: str = "unlabeled"
    label: float | None = None
    label_source: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    def __post_init__(self):
        if not self.id:
            self.id = content_id(self.first, self.second, self.instruction)


def content_id(first: np.ndarray, second: np.ndarray, instruction: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (first, second, instruction):
        a = np.ascontiguousarray(a)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_label(status: str, label: Any, where: str) -> None:
    if status not in STATUSES:
        raise PairDataError(f"{where}: field 'status'={status!r}; expected one of {list(STATUSES)}")
    if status == "labeled" and label not in LABELS:
        raise PairDataError(f"{where}: field 'label'={label!r}; a labeled pair needs 0, 1 or 0.5")
    if status != "labeled" and label is not None:
        raise PairDataError(f"{where}: field 'label'={label!r} but status is {status!r} (label must be null)")


def _check_entry(e: Any, where: str) -> None:
    if not isinstance(e, dict):
        raise PairDataError(f"{where}: an entry is not an object")
    for key, typ in (("id", str), ("file", str), ("sha256", str), ("instruction", str), ("first", dict),
                     ("second", dict), ("status", str)):
        if not isinstance(e.get(key), typ):
            raise PairDataError(f"{where}: pair {e.get('id', '?')!s:.12}: field {key!r} is missing or not a {typ.__name__}")
    for side in ("first", "second"):
        for key, typ in REF_FIELDS.items():
            if not isinstance(e[side].get(key), typ):
                raise PairDataError(f"{where}: pair {e['id']:.12}: field '{side}.{key}' is missing or not a {typ.__name__}")
    check_label(e["status"], e.get("label"), f"{where}: pair {e['id']:.12}")


class PairDataset:
    """Read/append access to a pair directory (created on first write)."""

    def __init__(self, path: str | Path, create: bool = False):
        from vla_rl.base.outputs import PAIRS, existing_output

        self.path = Path(path)
        index_path = self.path / INDEX
        exists = existing_output(self.path, PAIRS) if create else index_path.is_file()
        if not exists:
            if not create:
                raise PairDataError(f"{index_path}: not found — is {self.path} a vla-rl pair dataset?")
            self.index = {"format": FORMAT, "version": VERSION, "image_shape": None, "instruction_length": None, "pairs": []}
        else:
            index = read_versioned_json(index_path, FORMAT, VERSION, PairDataError, "", {"pairs": list})
            self.index = self._validate(index, index_path)
            if create:
                self.verify()  # never append to a dataset whose files are already corrupt
        self._by_id = {e["id"]: i for i, e in enumerate(self.index["pairs"])}

    @staticmethod
    def _validate(index: dict, where: Path) -> dict:
        shape, length = index.get("image_shape", "missing"), index.get("instruction_length", "missing")
        if shape is not None and not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(x, int) for x in shape)):
            raise PairDataError(f"{where}: field 'image_shape'={shape!r} must be [height, width, 3] (or null when empty)")
        if length is not None and (not isinstance(length, int) or isinstance(length, bool)):
            raise PairDataError(f"{where}: field 'instruction_length'={length!r} must be an int (or null when empty)")
        if (shape is None) != (length is None) or (shape is None and index["pairs"]):
            raise PairDataError(f"{where}: fields 'image_shape' and 'instruction_length' must be set once pairs exist")
        for e in index["pairs"]:
            _check_entry(e, str(where))
        return index

    def verify(self) -> None:
        """Check every segment file against the sha256 in the index."""
        for e in self.entries:
            read_checked_bytes(self.path / e["file"], e["sha256"], PairDataError, str(self.path / INDEX))

    # --- reading ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index["pairs"])

    @property
    def entries(self) -> list[dict[str, Any]]:
        return self.index["pairs"]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for e in self.entries:
            out[e["status"]] += 1
        return out

    def __contains__(self, pair_id: str) -> bool:
        return pair_id in self._by_id

    def entry(self, pair_id: str) -> dict[str, Any]:
        """The index entry of a pair id (KeyError if unknown)."""
        return self.entries[self._by_id[pair_id]]

    def load_id(self, pair_id: str) -> Pair:
        return self.load(self._by_id[pair_id])

    def load(self, i: int) -> Pair:
        e = self.entries[i]
        f = self.path / e["file"]
        data = read_checked_bytes(f, e["sha256"], PairDataError, str(self.path / INDEX))
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("first", "second", "instruction")}
        except Exception as e:  # noqa: BLE001 - any unreadable archive is reported by name
            raise PairDataError(f"{f}: cannot be read as a pair segment .npz ({e})") from None
        shape = self.index["image_shape"]
        for side in ("first", "second"):
            a = arrays[side]
            if a.dtype != np.uint8 or a.ndim != 4 or list(a.shape[1:]) != list(shape):
                raise PairDataError(f"{f}: array {side!r} has {a.dtype} {a.shape}; expected uint8 (H, {', '.join(map(str, shape))})")
        return Pair(arrays["first"], arrays["second"], arrays["instruction"], e["instruction"], e["first"], e["second"],
                    e.get("gt_return"), e.get("progress"), e["status"], e.get("label"), e.get("label_source"),
                    e.get("provenance") or {}, e["id"])

    def __iter__(self):
        for i in range(len(self)):
            yield self.load(i)

    # --- writing ----------------------------------------------------------------------------------
    def add(self, pairs: Iterable[Pair]) -> int:
        """Append new pairs (known ids are skipped); returns how many were added. Index written once."""
        added = 0
        for p in pairs:
            if p.id in self._by_id:
                continue
            shape = list(p.first.shape[1:])
            if self.index["image_shape"] is None:
                self.index["image_shape"], self.index["instruction_length"] = shape, int(p.instruction.shape[0])
            if shape != self.index["image_shape"] or list(p.second.shape[1:]) != shape:
                raise PairDataError(f"{self.path}: pair images {list(p.first.shape)} / {list(p.second.shape)} do not "
                                    f"match the dataset's image_shape {self.index['image_shape']}")
            check_label(p.status, p.label, f"{self.path}: new pair {p.id:.12}")
            buf = io.BytesIO()
            np.savez_compressed(buf, first=p.first, second=p.second, instruction=p.instruction)
            data = buf.getvalue()
            rel = f"segments/{p.id[:16]}.npz"
            atomic_write_bytes(self.path / rel, data)
            self._by_id[p.id] = len(self.entries)
            self.entries.append({"id": p.id, "file": rel, "sha256": hashlib.sha256(data).hexdigest(),
                                 "instruction": p.instruction_text, "first": p.first_ref, "second": p.second_ref,
                                 "status": p.status, "label": p.label, "label_source": p.label_source,
                                 "provenance": p.provenance, "gt_return": p.gt_return, "progress": p.progress})
            added += 1
        self.flush()
        return added

    def set_labels(self, updates: Iterable[tuple[str, str, float | None, str | None, dict]]) -> None:
        """(id, status, label, label_source, provenance) per pair; index written once."""
        for pair_id, status, label, source, prov in updates:
            if pair_id not in self._by_id:
                raise PairDataError(f"{self.path}: no pair with id {pair_id:.12}")
            check_label(status, label, f"{self.path}: pair {pair_id:.12}")
            e = self.entries[self._by_id[pair_id]]
            e.update(status=status, label=label, label_source=source, provenance=prov)
        self.flush()

    def flush(self) -> None:
        atomic_write_json(self.path / INDEX, self.index)
