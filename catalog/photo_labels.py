"""Labelled real photos, and the lenient mapping from their labels to the catalog's.

Real photo sets name things more coarsely than the catalog: "longsleeve" is a shirt, a sweater
or a sweatshirt; "outwear" a jacket, a coat or a blazer. A result counts as the right kind when
its articleType is one of those written here for the photo's class (a shopper who photographs a
long-sleeved top is served by any of them), and as the right colour when its baseColour is in
the photo colour's group (a shopper does not tell "Off White" from "Cream").

A labelled folder holds one sub-folder per class (`DIR/<class>/*.jpg`, as
handheld/{train,validation}); a colour is known for the photos listed in an optional
`DIR/colours.csv` (`path,baseColour`, the path relative to DIR, the colour a catalog value).
"""
from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from catalog.errors import UserError

# Photo class -> the catalog articleTypes that count as that kind.
PHOTO_KINDS: Mapping[str, tuple[str, ...]] = {
    "dress": ("Dresses", "Jumpsuit", "Rompers", "Nightdress", "Tunics", "Kurtis", "Kurtas", "Baby Dolls"),
    "hat": ("Caps", "Hat", "Headband"),
    "longsleeve": ("Shirts", "Tops", "Sweaters", "Sweatshirts", "Tshirts", "Kurtas", "Kurtis", "Tunics"),
    "outwear": ("Jackets", "Blazers", "Rain Jacket", "Sweaters", "Sweatshirts", "Waistcoat", "Shrug",
                "Tracksuits"),
    "pants": ("Trousers", "Jeans", "Track Pants", "Capris", "Leggings", "Jeggings", "Lounge Pants",
              "Rain Trousers", "Churidar", "Patiala", "Tights"),
    "shirt": ("Shirts", "Tops", "Tshirts", "Tunics", "Kurtas", "Kurtis"),
    "shoes": ("Casual Shoes", "Sports Shoes", "Formal Shoes", "Heels", "Flats", "Sandals", "Sports Sandals",
              "Flip Flops", "Booties"),
    "shorts": ("Shorts", "Lounge Shorts", "Capris", "Swimwear"),
    "skirt": ("Skirts",),
    "t-shirt": ("Tshirts", "Tops", "Lounge Tshirts", "Shirts"),
}

# Street photo label (../shared/photos/street) -> the catalog articleTypes a shopper would accept
# for it; a street garment's class in a training or scored set is "street:<label>".
STREET_KINDS: Mapping[str, tuple[str, ...]] = {
    "blouse": ("Tops", "Shirts", "Tunics", "Kurtis"), "shirt": ("Shirts", "Tops"),
    "t-shirt": ("Tshirts", "Tops"), "top": ("Tops", "Tshirts", "Tunics", "Camisoles"),
    "sweater": ("Sweaters", "Sweatshirts"), "sweatshirt": ("Sweatshirts", "Sweaters"),
    "jumper": ("Sweaters", "Sweatshirts"), "hoodie": ("Sweatshirts", "Jackets"),
    "vest": ("Tops", "Tshirts", "Waistcoat"), "cardigan": ("Sweaters", "Shrug", "Jackets"),
    "blazer": ("Blazers", "Jackets"), "coat": ("Jackets", "Blazers", "Rain Jacket"),
    "jacket": ("Jackets", "Blazers", "Rain Jacket", "Sweatshirts"), "cape": ("Jackets", "Shrug"),
    "suit": ("Blazers", "Jackets"),
    "jeans": ("Jeans", "Trousers", "Jeggings"), "pants": ("Trousers", "Jeans", "Track Pants", "Capris", "Leggings"),
    "shorts": ("Shorts", "Capris"), "skirt": ("Skirts",), "leggings": ("Leggings", "Jeggings", "Tights"),
    "dress": ("Dresses", "Jumpsuit"), "romper": ("Jumpsuit", "Dresses", "Rompers"), "bodysuit": ("Tops", "Jumpsuit"),
    "boots": ("Casual Shoes", "Formal Shoes", "Heels"), "clogs": ("Casual Shoes", "Sandals"),
    "flats": ("Flats", "Sandals", "Casual Shoes"), "heels": ("Heels",), "loafers": ("Casual Shoes", "Formal Shoes", "Flats"),
    "pumps": ("Heels", "Flats"), "sandals": ("Sandals", "Flats", "Flip Flops", "Heels"),
    "shoes": ("Casual Shoes", "Formal Shoes", "Sports Shoes", "Flats", "Heels"),
    "sneakers": ("Sports Shoes", "Casual Shoes"), "wedges": ("Heels", "Sandals", "Flats"),
    "bag": ("Handbags", "Backpacks", "Clutches", "Laptop Bag", "Messenger Bag", "Duffel Bag", "Rucksacks"),
    "purse": ("Handbags", "Clutches", "Wallets"), "wallet": ("Wallets", "Clutches"),
    "hat": ("Caps", "Hat", "Headband"), "glasses": ("Sunglasses",), "sunglasses": ("Sunglasses",),
    "belt": ("Belts",), "tie": ("Ties",), "scarf": ("Scarves", "Stoles", "Mufflers"), "watch": ("Watches",),
}
STREET_PREFIX = "street:"

# Catalog colours a shopper takes for one another; a colour not listed is its own group.
COLOUR_GROUPS: tuple[frozenset[str], ...] = (
    frozenset({"White", "Off White", "Cream"}),
    frozenset({"Beige", "Cream", "Skin", "Nude", "Khaki", "Tan", "Peach"}),
    frozenset({"Grey", "Grey Melange", "Charcoal", "Steel", "Silver"}),
    frozenset({"Blue", "Turquoise Blue", "Teal"}),
    frozenset({"Navy Blue", "Blue"}),
    frozenset({"Brown", "Coffee Brown", "Tan", "Mushroom Brown", "Taupe", "Bronze", "Copper", "Rust"}),
    frozenset({"Red", "Maroon", "Burgundy", "Rose"}),
    frozenset({"Pink", "Rose", "Peach", "Magenta", "Mauve"}),
    frozenset({"Purple", "Lavender", "Mauve", "Magenta"}),
    frozenset({"Green", "Olive", "Sea Green", "Lime Green", "Fluorescent Green", "Teal"}),
    frozenset({"Yellow", "Mustard", "Gold"}),
    frozenset({"Orange", "Rust", "Peach"}),
    frozenset({"Black", "Charcoal"}),
    frozenset({"Silver", "Steel", "Metallic", "Grey"}),
    frozenset({"Gold", "Bronze", "Copper", "Metallic"}),
)


def kinds_of(photo_class: str) -> tuple[str, ...]:
    """The articleTypes that count as a photo class's kind: a home photo's class, or a street
    garment's label ("street:heels")."""
    if photo_class.startswith(STREET_PREFIX):
        return STREET_KINDS.get(photo_class[len(STREET_PREFIX):], ())
    return PHOTO_KINDS.get(photo_class, ())


def kind_matches(photo_class: str, article_type: str | None) -> bool:
    return article_type is not None and article_type in kinds_of(photo_class)


def colour_matches(photo_colour: str, base_colour: str | None) -> bool:
    """Leniently: the same colour, or two colours of one group."""
    if base_colour is None:
        return False
    return base_colour == photo_colour or any(photo_colour in g and base_colour in g for g in COLOUR_GROUPS)


@dataclass(frozen=True)
class LabelledPhoto:
    path: Path
    photo_class: str
    colour: str | None = None
    # A garment in a street photo: the mask image whose pixels of these values are the item
    # (None: the whole photo is the item).
    mask: Path | None = None
    mask_values: tuple[int, ...] = ()


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def read_photo_folder(folder: Path) -> list[LabelledPhoto]:
    """Every image in `folder`'s class sub-folders (sorted), with its colour when
    colours.csv gives one. A class the mapping does not know is refused: it could not be scored."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--photos {folder}: no such folder")
    colours = _colours(folder / "colours.csv")
    photos = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        if class_dir.name not in PHOTO_KINDS:
            raise UserError(f"{class_dir}: class {class_dir.name!r} has no mapping to catalog article types "
                             f"(known: {', '.join(sorted(PHOTO_KINDS))}; catalog/photo_labels.py)")
        for path in sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            photos.append(LabelledPhoto(path, class_dir.name, colours.get(path.relative_to(folder).as_posix())))
    if not photos:
        raise UserError(f"--photos {folder}: no images in class folders ({folder}/<class>/*.jpg)")
    return photos


def _colours(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["path"]: row["baseColour"] for row in csv.DictReader(handle) if row.get("baseColour")}


__all__ = ["PHOTO_KINDS", "STREET_KINDS", "STREET_PREFIX", "COLOUR_GROUPS", "kinds_of", "kind_matches", "colour_matches", "LabelledPhoto", "read_photo_folder"]
