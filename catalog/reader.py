"""Reading a catalog folder: `styles.csv` and `images/<id>.jpg`, quirks of the real file included."""
from __future__ import annotations

import codecs
import csv
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from catalog.errors import UserError
from catalog.products import Product

CSV_COLUMNS = ("id", "gender", "masterCategory", "subCategory", "articleType", "baseColour",
               "season", "year", "usage", "productDisplayName")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


class CatalogError(UserError):
    """The folder cannot be used as a catalog at all (no styles.csv, unusable header)."""


@dataclass(frozen=True)
class Skipped:
    id: str | None
    line: int | None
    reason: str


def count_reasons(skipped) -> dict[str, int]:
    """How many were skipped for each reason ("missing image: ..." counts as "missing image")."""
    counts: dict[str, int] = {}
    for s in skipped:
        key = s.reason.split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    return counts


@dataclass
class Catalog:
    folder: Path
    products: list[Product]
    skipped: list[Skipped] = field(default_factory=list)
    layout: TextLayout | None = None
    # Records read after the header: each is a product or a skipped row.
    rows: int = 0

    @property
    def images_dir(self) -> Path:
        return self.folder / "images"

    def by_id(self) -> dict[str, Product]:
        return {p.id: p for p in self.products}

    def skipped_by_reason(self) -> dict[str, int]:
        return count_reasons(self.skipped)

    def describe(self) -> str:
        """One line for a person: how many products, how many rows skipped, how the file was read."""
        read = f"; styles.csv read as {self.layout.describe()}" if self.layout else ""
        return f"{len(self.products)} products with an image, {len(self.skipped)} rows skipped{read}"


# Windows-1252 is what spreadsheets on Windows write for "CSV"; bytes it leaves undefined
# fall back to latin-1, which never fails, so every line still becomes a row.
LEGACY_ENCODING = "cp1252"
# Ids name files (`images/<id>.jpg`, at most 255 bytes on common file systems) and URLs.
MAX_ID_BYTES = 200
# A quoted field may span lines (a cell with a line break); a quote still open after this many
# lines is an unterminated quote, which costs its own row only.
MAX_RECORD_LINES = 5
YEAR_PATTERN = re.compile(r"[0-9]{1,4}(\.0*)?")


@dataclass(frozen=True)
class TextLayout:
    """How styles.csv was decoded and split into lines, for the summary a person reads."""
    encoding: str                       # "UTF-8", "UTF-8 with BOM", "UTF-16"...
    line_ends: str                      # "LF", "CRLF", "CR" or "none"
    legacy_lines: tuple[int, ...] = ()  # lines not valid UTF-8, read as Windows-1252

    def describe(self) -> str:
        text = f"{self.encoding}, {self.line_ends} line ends"
        if self.legacy_lines:
            shown = ", ".join(map(str, self.legacy_lines[:8])) + (" ..." if len(self.legacy_lines) > 8 else "")
            text += (f"; {len(self.legacy_lines)} line(s) not valid UTF-8 were read as Windows-1252 "
                     f"(line {shown})")
        return text


def _split_lines(raw: bytes) -> tuple[list[bytes], str]:
    # The header's own line break says how lines end (a header cell holds no line break):
    # CRLF or LF, a bare CR then being a character inside a field; or CR alone (old Mac, some
    # Excel exports), an LF then being the character.
    first = re.search(rb"\r\n|\r|\n", raw)
    if first is None:
        return [raw], "none"
    if first.group() == b"\r":
        return [line.replace(b"\n", b" ") for line in raw.split(b"\r")], "CR"
    lines = raw.split(b"\n")
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    return lines, "CRLF" if first.group() == b"\r\n" else "LF"


def _decode_line(line: bytes) -> tuple[str, bool]:
    """The line's text, and whether it had to be read as Windows-1252 (not valid UTF-8)."""
    try:
        return line.decode("utf-8"), False
    except UnicodeDecodeError:
        try:
            return line.decode(LEGACY_ENCODING), True
        except UnicodeDecodeError:
            return line.decode("latin-1"), True


def _read_lines(path: Path) -> tuple[list[str], TextLayout]:
    """Decode line by line: one stray Windows-1252 byte costs neither the rest of the file its
    UTF-8 names nor the header its BOM."""
    raw = path.read_bytes()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = raw.decode("utf-16", errors="replace")
        lines, ends = _split_lines(text.encode("utf-8"))
        return [line.decode("utf-8") for line in lines], TextLayout("UTF-16", ends)
    encoding = "UTF-8"
    if raw.startswith(codecs.BOM_UTF8):
        raw, encoding = raw[len(codecs.BOM_UTF8):], "UTF-8 with BOM"
    lines, ends = _split_lines(raw)
    decoded = [_decode_line(line) for line in lines]
    legacy = tuple(number for number, (_, was_legacy) in enumerate(decoded, start=1) if was_legacy)
    if legacy and not any(not was and not text.isascii() for text, was in decoded):
        encoding = "Windows-1252"  # no line used UTF-8 beyond ASCII: the whole file is legacy
    return [text for text, _ in decoded], TextLayout(encoding, ends, legacy)


def _fields(text: str) -> list[str]:
    """One record's fields; raises csv.Error on an unterminated quote or a broken quoted field."""
    return next(csv.reader([text], strict=True), [])


@dataclass(frozen=True)
class Record:
    line: int                      # the first line of the record (the header is line 1)
    fields: list[str] | None       # None: unreadable, see `problem`
    problem: str = ""
    head: str = ""                 # the start of an unreadable record's text, to find its id in


def _records(lines: list[str], width: int) -> Iterator[Record]:
    """Every non-blank line after the header becomes exactly one record (a readable row or a
    problem with its line number); only a quoted field that closes within MAX_RECORD_LINES
    lines and makes a full-width row joins lines."""
    number = 1
    while number < len(lines):
        text = lines[number].replace("\r", " ")
        first = number + 1
        number += 1
        if not text.strip():
            continue
        try:
            yield Record(first, _fields(text))
            continue
        except csv.Error:
            pass
        if not _only_a_quote_left_open(text):
            yield _lenient(first, text)
            continue
        joined = _join_quoted(lines, number - 1, width)
        if joined is None:
            yield Record(first, None, "malformed row: a quote opens a field and never closes it", text[:HEAD_CHARS])
            continue
        fields, used = joined
        number += used
        yield Record(first, fields)


# Enough of an unreadable record to read the fields before its id (ids are short).
HEAD_CHARS = 4096


def _readable_id(head: str, header: list[str]) -> str | None:
    """The id of a record that cannot be read whole (a 10 MB name, a quote left open), when the
    fields up to it read and it is a valid id: the report then names the product."""
    at = header.index("id")
    try:
        fields = next(csv.reader([head], strict=False), [])
    except csv.Error:
        return None
    if len(fields) <= at + 1:   # the id field may be the one the head cut short
        return None
    pid = _clean(fields[at].strip())
    return pid if pid is not None and id_problem(pid) is None else None


def _only_a_quote_left_open(text: str) -> bool:
    # A line whose sole problem is a quoted field still open reads once that quote is closed.
    try:
        _fields(text + '"')
        return True
    except csv.Error:
        return False


def _lenient(line: int, text: str) -> Record:
    # e.g. text after a closing quote: read as a spreadsheet would rather than dropped
    try:
        return Record(line, next(csv.reader([text], strict=False), []))
    except csv.Error as exc:  # a field over the csv module's size limit
        return Record(line, None, f"malformed row: {exc}", text[:HEAD_CHARS])


def _join_quoted(lines: list[str], index: int, width: int) -> tuple[list[str], int] | None:
    text = lines[index].replace("\r", " ")
    for extra in range(1, MAX_RECORD_LINES):
        if index + extra >= len(lines):
            return None
        text += "\n" + lines[index + extra].replace("\r", " ")
        try:
            fields = _fields(text)
        except csv.Error:
            continue
        return (fields, extra) if len(fields) == width else None
    return None


def _check_header(lines: list[str], path: Path) -> list[str]:
    first = lines[0] if lines and lines[0].strip() else ""
    try:
        header = [h.strip() for h in _fields(first)] if first else []
    except csv.Error:
        header = [first]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise CatalogError(
            f"{path}: the header must name the columns {', '.join(CSV_COLUMNS)}; "
            f"missing: {', '.join(missing)} (found: {', '.join(header) or 'nothing'})")
    return header


def _clean(value) -> str | None:
    """A field's text: control characters (a line break in a cell, a stray NUL) become spaces."""
    if value is None:
        return None
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in str(value)).strip()
    return text or None


def _year(value: str | None) -> int | None:
    """A year is up to four ASCII digits; anything else (inf, 1e999, -5, ²) is left blank."""
    if value is None or not YEAR_PATTERN.fullmatch(value):
        return None
    year = int(value.split(".")[0])
    return year if year > 0 else None


def id_problem(pid: str) -> str | None:
    """Why `pid` cannot be a product id, or None. Ids become file names and URL segments."""
    if "/" in pid or "\\" in pid or pid in (".", ".."):
        return "the id cannot name an image file"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for c in pid):
        return "the id holds a control or unassigned character"
    if len(pid.encode("utf-8")) > MAX_ID_BYTES:
        return f"the id is longer than {MAX_ID_BYTES} bytes"
    return None


def find_image(images_dir: Path, product_id: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        candidate = images_dir / f"{product_id}{suffix}"
        try:
            if candidate.is_file():
                return candidate
        except (OSError, ValueError):  # a name the file system refuses is no image
            continue
    return None


def _row(fields: list[str], header: list[str], name_at: int) -> dict[str, str]:
    """Fields by column. The original file leaves commas in names unquoted: a row with surplus
    fields has them glued back into the name; a short row has its missing fields blank."""
    width = len(header)
    if len(fields) > width:
        extra = len(fields) - width
        fields = fields[:name_at] + [",".join(fields[name_at:name_at + extra + 1])] + fields[name_at + extra + 1:]
    return dict(zip(header, fields + [""] * (width - len(fields))))


def _product(row: dict[str, str], pid: str, image: Path) -> Product:
    return Product(
        id=pid,
        gender=_clean(row.get("gender")),
        masterCategory=_clean(row.get("masterCategory")),
        subCategory=_clean(row.get("subCategory")),
        articleType=_clean(row.get("articleType")),
        baseColour=_clean(row.get("baseColour")),
        season=_clean(row.get("season")),
        year=_year(_clean(row.get("year"))),
        usage=_clean(row.get("usage")),
        name=_clean(row.get("productDisplayName")),
        image=image,
    )


def read_catalog(folder: str | Path, *, check_images: bool = True) -> Catalog:
    """Read `folder/styles.csv` into products plus a report of the rows skipped and why.

    Rows whose display name holds unquoted commas keep the whole name; empty fields become
    None; ids stay strings (leading zeros kept). Only a missing file or an unusable header
    raise: every other line after the header is either a product or in `Catalog.skipped`
    with its line number and the reason.
    """
    folder = Path(folder)
    path = folder / "styles.csv"
    if not path.is_file():
        raise CatalogError(f"{folder}: no styles.csv here; a catalog folder holds styles.csv "
                           "and images/<id>.jpg (the Kaggle 'Fashion Product Images' layout)")
    lines, layout = _read_lines(path)
    header = _check_header(lines, path)
    name_at = header.index("productDisplayName")
    products: list[Product] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    images_dir = folder / "images"
    records = 0
    for record in _records(lines, len(header)):
        records += 1
        if record.fields is None:
            skipped.append(Skipped(_readable_id(record.head, header), record.line, record.problem))
            continue
        row = _row(record.fields, header, name_at)
        raw_id = (row.get("id") or "").strip()
        pid = _clean(raw_id)
        if pid is None:
            skipped.append(Skipped(None, record.line, "malformed row: no id"))
            continue
        problem = id_problem(raw_id)
        if problem:
            skipped.append(Skipped(pid, record.line, f"malformed row: {problem}"))
            continue
        if pid in seen:
            skipped.append(Skipped(pid, record.line, "malformed row: duplicate id"))
            continue
        if _clean(row.get("productDisplayName")) is None and _clean(row.get("articleType")) is None:
            skipped.append(Skipped(pid, record.line, "malformed row: no name and no article type"))
            continue
        seen.add(pid)
        image = find_image(images_dir, pid) if check_images else images_dir / f"{pid}.jpg"
        if image is None:
            skipped.append(Skipped(pid, record.line, f"missing image: images/{pid}.jpg"))
            continue
        products.append(_product(row, pid, image))
    return Catalog(folder=folder, products=products, skipped=skipped, layout=layout, rows=records)
