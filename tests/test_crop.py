"""Cropping: fractions to pixels in one place, and the crop files kept bounded and removed."""
from __future__ import annotations

from PIL import Image

from assistant.crop import CropFiles, crop_fractions, crop_preview, crop_status, cut, mark_corner, new_crop, pixel_box
from catalog import ImageLimits


def test_pixel_box_clamps_fractions_to_the_photo():
    assert pixel_box((0.25, 0.5, 0.75, 1.0), (200, 100)) == (50, 50, 150, 100)
    assert pixel_box((-1, -0.5, 2, 1.5), (200, 100)) == (0, 0, 200, 100)


def test_cut_refuses_a_part_too_small_to_search():
    image = Image.new("RGB", (100, 100), (10, 20, 30))
    assert cut(image, (0, 0, 0.05, 1)) is None  # 5 px wide
    assert cut(image, (0, 0, 0.5, 0.5)).size == (50, 50)


def test_two_clicks_make_the_box_and_the_preview_marks_it(tmp_path):
    path = tmp_path / "outfit.png"
    Image.new("RGB", (120, 80), (0, 0, 200)).save(path)
    crop, image = new_crop(str(path), ImageLimits())
    assert image.size == (120, 80) and crop_fractions(crop) is None
    crop = mark_corner(crop, "0.75,0.9|123")
    assert crop_status(crop) == "Now click the opposite corner."
    crop = mark_corner(crop, "0.25,0.1|124")
    assert crop_fractions(crop) == (0.25, 0.1, 0.75, 0.9)
    assert "50% × 80%" in crop_status(crop)
    assert mark_corner(crop, "nonsense") == crop
    preview = crop_preview(crop, ImageLimits())
    assert preview.getpixel((60, 40)) == (0, 0, 200)  # inside the box: the photo as it is
    assert preview.getpixel((5, 5)) != (0, 0, 200)  # outside: dimmed


def test_crop_files_stay_bounded_and_go_with_the_process(tmp_path):
    path = tmp_path / "outfit.png"
    Image.new("RGB", (64, 64), (200, 0, 0)).save(path)
    crop = {"path": str(path), "size": (64, 64), "points": [(0, 0), (0.5, 0.5)]}
    files = CropFiles(keep=3)
    saved = [files.save(crop, (0, 0, 0.5, 0.5), ImageLimits()) for _ in range(5)]
    assert all(saved) and Image.open(saved[-1]).size == (32, 32)
    assert len(list(files.folder.glob("*.png"))) == 3
    assert files.save(crop, (0, 0, 0.01, 0.01), ImageLimits()) is None  # too small: nothing written
    folder = files.folder
    files.close()
    assert not folder.exists()
