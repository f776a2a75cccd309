"""UDIAT Dataset B (Yap et al., IEEE JBHI 22(4), 2018): 163 breast ultrasound images with lesion masks.

Layout: ``original/NNNNNN.png`` + ``GT/NNNNNN.png``, and ``DatasetB.xlsx`` with a column of image
names and a ``Type`` column (benign / malignant). Without the spreadsheet the class is ``none``.
The root may be the folder holding ``original`` and ``GT`` or its parent.
The spreadsheet is read with the standard library (an .xlsx file is a zip of XML parts).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree

from mosl_cli.config import PrepareConfig
from mosl_cli.data.readers.base import IMAGE_EXTS, NO_CLASS, Item, load_image_with_masks, sorted_files, subdirs
from mosl_cli.errors import MoslError

NAME = "udiat"
ORGAN = "breast"
_NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
_REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"


def _child(folder: Path, name: str) -> Path | None:
    """The sub-folder ``name`` of ``folder`` as spelt, lower- or upper-case (``GT``, ``gt``)."""
    for spelling in (name, name.lower(), name.upper(), name.capitalize()):
        if (folder / spelling).is_dir():
            return folder / spelling
    return None


def resolve(root: Path) -> Path:
    """The folder holding ``original/`` and ``GT/`` (``root`` or one of its sub-folders)."""
    for d in (root, *subdirs(root)):
        if _child(d, "original") and _child(d, "GT"):
            return d
    return root


def detect(root: Path) -> bool:
    """``original/`` and ``GT/`` side by side, holding numbered PNGs."""
    base = resolve(root)
    orig = _child(base, "original")
    return bool(orig and _child(base, "GT") and any(re.fullmatch(r"\d+", p.stem) for p in orig.iterdir()))


def _column(ref: str) -> str:
    """Column letters of a cell reference: ``"B12"`` -> ``"B"``."""
    return re.sub(r"\d", "", ref)


def read_xlsx(path: Path) -> list[dict[str, str]]:
    """The first worksheet of an .xlsx file: one dict per row, column letters -> cell text."""
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        shared: list[str] = []
        if "xl/sharedStrings.xml" in names:
            for si in ElementTree.fromstring(z.read("xl/sharedStrings.xml")).findall("m:si", _NS):
                shared.append("".join(t.text or "" for t in si.iter(f"{{{_NS['m']}}}t")))
        sheet = _first_sheet(z, names)
        rows: list[dict[str, str]] = []
        for row in ElementTree.fromstring(z.read(sheet)).iter(f"{{{_NS['m']}}}row"):
            cells: dict[str, str] = {}
            for c in row.findall("m:c", _NS):
                kind = c.get("t", "n")
                if kind == "inlineStr":
                    text = "".join(t.text or "" for t in c.iter(f"{{{_NS['m']}}}t"))
                else:
                    v = c.find("m:v", _NS)
                    text = "" if v is None or v.text is None else v.text
                    if kind == "s" and text:
                        text = shared[int(text)]
                cells[_column(c.get("r", ""))] = text.strip()
            rows.append(cells)
    return rows


def _first_sheet(z: zipfile.ZipFile, names: set[str]) -> str:
    """Path inside the zip of the workbook's first worksheet."""
    try:
        wb = ElementTree.fromstring(z.read("xl/workbook.xml"))
        rid = wb.find("m:sheets/m:sheet", _NS).get(_REL)  # type: ignore[union-attr]
        rels = ElementTree.fromstring(z.read("xl/_rels/workbook.xml.rels"))
        for r in rels:
            if r.get("Id") == rid:
                target = r.get("Target", "").lstrip("/")
                return target if target.startswith("xl/") else f"xl/{target}"
    except (KeyError, AttributeError):
        pass
    sheets = sorted(n for n in names if n.startswith("xl/worksheets/sheet"))
    if not sheets:
        raise KeyError("no worksheet")
    return sheets[0]


def _norm(name: str) -> str:
    """An image name as a comparable key: ``"000012.png"``, ``"12"``, ``"12.0"`` all become ``"12"``."""
    stem = re.sub(r"\.(png|jpe?g|bmp|tiff?)$", "", name.strip(), flags=re.IGNORECASE)
    stem = re.sub(r"\.0+$", "", stem)  # a number stored as a float cell
    return str(int(stem)) if stem.isdigit() else stem.lower()


def read_classes(path: Path) -> dict[str, str]:
    """Image name key -> class (lower-case ``Type`` column) from ``DatasetB.xlsx``."""
    try:
        rows = read_xlsx(path)
    except (zipfile.BadZipFile, KeyError, ValueError, IndexError, ElementTree.ParseError) as exc:
        raise MoslError(
            f"{path}: unreadable spreadsheet ({exc}); fix or remove it (classes then become 'none')"
        ) from exc
    for h, header in enumerate(rows):
        low = {col: text.lower() for col, text in header.items()}
        tcol = next((c for c, t in low.items() if t == "type"), None)
        if tcol is None:
            continue
        icol = next((c for c, t in sorted(low.items()) if "image" in t or "name" in t), "A")
        return {_norm(r[icol]): r[tcol].lower() for r in rows[h + 1 :] if r.get(icol) and r.get(tcol)}
    return {}


def items(root: Path, cfg: PrepareConfig) -> list[Item]:
    """One item per ``original/`` image with its ``GT/`` mask (matched by file stem)."""
    base = resolve(root)
    orig, gt = _child(base, "original"), _child(base, "GT")
    assert orig is not None and gt is not None
    sheets = sorted(base.glob("*.xlsx")) + sorted(base.parent.glob("*.xlsx"))
    classes = read_classes(sheets[0]) if sheets else {}
    masks = {p.stem: str(p) for p in sorted_files(gt, IMAGE_EXTS)}
    out: list[Item] = []
    for p in sorted_files(orig, IMAGE_EXTS):
        mask = masks.get(p.stem)
        out.append(
            Item(
                key=p.stem,
                paths=(str(p),) if mask is None else (str(p), mask),
                cls=classes.get(_norm(p.name), NO_CLASS),
                organ=ORGAN,
                load=load_image_with_masks,
            )
        )
    return out
