"""Cropping an outfit photo to one garment: two clicks on the photo mark opposite corners.

A crop is kept as fractions of the photo's width and height (left, top, right, bottom), so the
same box holds for the photo as shown, as stored and as searched; `pixel_box` is the one place
fractions become pixels.
"""
from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

from PIL import Image, ImageDraw

from catalog import ImageError, ImageLimits, open_image

Fractions = tuple[float, float, float, float]

CROP_HELP = "Click two opposite corners of one garment on the photo, then search that part."
MIN_SIDE = 8  # pixels: a smaller part holds nothing a model can recognise


def pixel_box(box: Fractions, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Fractions of the photo (clamped to 0..1) as a pixel box of a photo of `size`."""
    left, top, right, bottom = (min(1.0, max(0.0, float(v))) for v in box)
    width, height = size
    return round(left * width), round(top * height), round(right * width), round(bottom * height)


def cut(image: Image.Image, box: Fractions) -> Image.Image | None:
    """The part of `image` in `box`; None when it is too small to search."""
    rect = pixel_box(box, image.size)
    if rect[2] - rect[0] < MIN_SIDE or rect[3] - rect[1] < MIN_SIDE:
        return None
    return image.crop(rect)


def new_crop(path: str, limits: ImageLimits) -> tuple[dict | None, Image.Image | None]:
    """Crop state for a new photo: its file, its size as shown, no corners yet."""
    try:
        image = open_image(path, limits)
    except ImageError:
        return None, None
    return {"path": path, "size": image.size, "points": []}, image


def mark_corner(crop: dict | None, clicked: str) -> dict | None:
    """Add a clicked point ("fx,fy|stamp", fractions of the photo's width and height, from the
    page); the last two points make the box."""
    try:
        fx, fy = (min(1.0, max(0.0, float(v))) for v in str(clicked).split("|", 1)[0].split(","))
    except ValueError:
        return crop
    if not crop:
        return crop
    return {**crop, "points": (list(crop["points"]) + [(fx, fy)])[-2:]}


def crop_fractions(crop: dict | None) -> Fractions | None:
    if not crop or len(crop.get("points", [])) < 2:
        return None
    (x1, y1), (x2, y2) = crop["points"]
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def crop_status(crop: dict | None) -> str:
    points = len((crop or {}).get("points", []))
    if not crop:
        return CROP_HELP
    if points < 2:
        return "Now click the opposite corner." if points == 1 else CROP_HELP
    left, top, right, bottom = crop_fractions(crop)
    return (f"Selected {round((right - left) * 100)}% × {round((bottom - top) * 100)}% of the photo; "
            "search it, or click again to move a corner.")


def crop_preview(crop: dict | None, limits: ImageLimits) -> Image.Image | None:
    """The photo with the selected box outlined and the rest dimmed."""
    if not crop:
        return None
    try:
        image = open_image(crop["path"], limits)
    except ImageError:
        return None
    points = crop.get("points", [])
    if len(points) == 2:
        rect = pixel_box(crop_fractions(crop), image.size)
        dimmed = Image.blend(image, Image.new("RGB", image.size, (255, 255, 255)), 0.6)
        dimmed.paste(image.crop(rect), rect[:2])
        image = dimmed
        ImageDraw.Draw(image).rectangle(rect, outline=(255, 90, 0), width=max(2, min(image.size) // 100))
    draw = ImageDraw.Draw(image)
    for fx, fy in points:
        x, y = fx * image.size[0], fy * image.size[1]
        r = max(3, min(image.size) // 60)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 90, 0))
    return image


def draw_items(image: Image.Image | None, boxes: list[Fractions], names: list[str]) -> Image.Image | None:
    """The photo with each item the parser found outlined and named, for the crop panel."""
    if image is None or not boxes:
        return image
    image = image.copy()
    draw = ImageDraw.Draw(image)
    width = max(2, min(image.size) // 150)
    for box, name in zip(boxes, names):
        rect = pixel_box(box, image.size)
        draw.rectangle(rect, outline=(0, 120, 255), width=width)
        draw.text((rect[0] + width + 1, rect[1] + width + 1), name, fill=(0, 120, 255))
    return image


class ItemThumbnails:
    """Small pictures of each item's box, for the shopper to tap; kept per photo (the same
    photo's items are shown on every turn) in a private folder bounded to `keep` photos."""

    def __init__(self, keep: int = 64, size: int = 160):
        self._folder = tempfile.TemporaryDirectory(prefix="vsa-items-")
        self.folder = Path(self._folder.name)
        self.keep, self.size = keep, size
        self._made: dict[tuple, list[str]] = {}

    def of(self, path: str, boxes: list[Fractions], limits: ImageLimits) -> list[str]:
        key = (path, tuple(boxes))
        if key not in self._made:
            try:
                image = open_image(path, limits)
            except ImageError:
                return []
            self._made[key] = [self._save(image.crop(pixel_box(box, image.size))) for box in boxes]
            self._prune()
        return self._made[key]

    def _save(self, part: Image.Image) -> str:
        part.thumbnail((self.size, self.size))
        path = self.folder / f"item-{uuid.uuid4().hex[:12]}.png"
        part.save(path)
        return str(path)

    def _prune(self) -> None:
        while len(self._made) > self.keep:
            for old in self._made.pop(next(iter(self._made))):
                Path(old).unlink(missing_ok=True)


class CropFiles:
    """Where the selected parts shown in the chat are written: a private temporary folder,
    removed when the process ends, holding at most `keep` files (Gradio copies each one into
    its own cache when it shows it, so older files are not needed). The fixed folder used
    before grew with every crop for as long as the server ran."""

    def __init__(self, keep: int = 256):
        self._folder = tempfile.TemporaryDirectory(prefix="vsa-crops-")
        self.folder = Path(self._folder.name)
        self.keep = keep

    def save(self, crop: dict, box: Fractions, limits: ImageLimits) -> str | None:
        """The selected part as a file, to show as the shopper's message; None if unreadable."""
        try:
            part = cut(open_image(crop["path"], limits), box)
        except ImageError:
            return None
        if part is None:
            return None
        path = self.folder / f"crop-{uuid.uuid4().hex[:12]}.png"
        part.save(path)
        self._prune()
        return str(path)

    def _prune(self) -> None:
        files = sorted(self.folder.glob("crop-*.png"), key=lambda p: p.stat().st_mtime)
        for old in files[:-self.keep]:
            old.unlink(missing_ok=True)

    def close(self) -> None:
        self._folder.cleanup()
