"""An item's colour in the catalog's own words ("Navy Blue"), from its pixels.

The embedders see shape far more than colour, and a shopper's light is not the studio's: a
white flat under a warm lamp reads as beige, a blue trainer in shade as black. `ColourModel`
reads the colour from the item's own pixels instead, and was learned from the catalog (its
shots and their `baseColour` labels) under random light, white balance and exposure, so it
names colours as the catalog does and discounts a cast it has seen many of
(training/colour.py makes the shipped file; docs/search.md: colour).

Steps, all in numpy on a thumbnail (at most `side` pixels a side, about 2 ms an item):

1. which pixels are the item: the mask when one is given (the garment parser's), else the
   foreground of a single-product photo, pixels far (in Lab) from the colour of the photo's
   border, weighted towards the centre, where a shopper puts what they photograph;
2. features: a histogram of those pixels in CIE Lab (perceptual: equal steps look equally
   different), a hue x chroma histogram, their Lab moments, and the border's own colour (the
   light the scene was taken under, when the backdrop is neutral);
3. a small MLP (one hidden layer) gives probabilities over the catalog's colours.

Imports nothing of the project: the search and the chat call it on a photo or a parser's item.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from catalog.errors import UserError
from embedding.stable_npz import save_stable

DEFAULT_PATH = Path(__file__).with_name("colour_model.npz")
# Standardised features are clipped to +- this many spreads.
CLIP = 5.0
# The border shows the light only when it could be a white wall under some light. The light the
# model learned under casts a white backdrop up to about 33 in Lab chroma (training/colour.py's
# LightSettings; a test holds the two together); a border more coloured than this limit is a
# coloured surface (a red sheet under a white T-shirt), not a cast to discount, so the item is
# read as if under neutral light, the border taken for the studio's white.
BORDER_LIGHT_CHROMA = 36.0
# Likewise for darkness: the dimmest light the model learned leaves a white backdrop at about 54
# in Lab lightness; a border darker than this limit is a dark surface (a navy bedspread, a black
# table), not a white wall in dim light, and the item is read as if under neutral light. Taken
# for the light, a dark border made a white T-shirt on it read as black.
BORDER_LIGHT_MIN_L = 50.0
STUDIO_WHITE = np.array([95.0, 0.0, 0.0], dtype=np.float32)


@dataclass(frozen=True)
class ColourFeatureSettings:
    """How an item's pixels become features; stored in the model file, since a model only
    understands the features it was trained on."""
    side: int = 48                      # thumbnail's longest side, in pixels
    border: int = 2                     # ring of pixels that shows the backdrop
    # A pixel is foreground when its Lab distance to the border's median colour is above this
    # (about 5 just-noticeable differences: a faint shadow stays backdrop).
    foreground_distance: float = 12.0
    # Fewer foreground pixels than this share: the item fills the frame (or matches its
    # backdrop), so every pixel counts, centre-weighted.
    min_foreground: float = 0.04
    centre_sigma: float = 0.35          # of the frame's half-size: the centre weighting's width
    l_bins: int = 5
    ab_bins: int = 7
    ab_range: float = 64.0              # a and b histogram from -range to +range
    hue_bins: int = 12
    chroma_edges: tuple[float, ...] = (8.0, 20.0, 40.0)

    @property
    def size(self) -> int:
        """Number of features."""
        lab = self.l_bins * self.ab_bins * self.ab_bins
        hue = self.hue_bins * len(self.chroma_edges) + 1  # + the achromatic share
        return lab + hue + 8 + 6 + 3                      # moments, L quantiles..., border colour


# -- colour space --------------------------------------------------------------------------
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]], dtype=np.float32)
_WHITE = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (uint8 or 0-255 floats, ... x 3) to CIE Lab (D65), float32."""
    c = np.asarray(rgb, dtype=np.float32) / 255.0
    linear = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = linear @ _RGB_TO_XYZ.T / _WHITE
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


# -- which pixels are the item -------------------------------------------------------------
def thumbnail(image: Image.Image, mask: np.ndarray | None, side: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The image's pixels (H x W x 3 uint8) at most `side` a side, and the mask at that size."""
    image = image.convert("RGB")
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # reducing_gap: a cheap box reduction first, then a proper filter; fast on big photos.
    pixels = np.asarray(image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
    if mask is None:
        return pixels, None
    mask = np.asarray(mask).astype(bool)
    if mask.shape != (image.height, image.width):
        raise UserError(f"mask of shape {mask.shape} for an image of {image.width}x{image.height}")
    small = Image.fromarray(mask.astype(np.uint8) * 255, "L").resize(size, Image.Resampling.BOX)
    return pixels, np.asarray(small) >= 128


def _centre_weights(height: int, width: int, sigma: float) -> np.ndarray:
    y = (np.arange(height, dtype=np.float32) + 0.5) / height * 2 - 1
    x = (np.arange(width, dtype=np.float32) + 0.5) / width * 2 - 1
    return np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma ** 2))


def _border(lab: np.ndarray, ring: int) -> np.ndarray:
    ring = max(1, min(ring, min(lab.shape[:2]) // 4 or 1))
    return np.concatenate([lab[:ring].reshape(-1, 3), lab[-ring:].reshape(-1, 3),
                           lab[:, :ring].reshape(-1, 3), lab[:, -ring:].reshape(-1, 3)])


def item_weights(lab: np.ndarray, mask: np.ndarray | None, settings: ColourFeatureSettings) -> np.ndarray:
    """Each thumbnail pixel's share of the item (summing to 1)."""
    height, width = lab.shape[:2]
    if mask is not None and mask.any():
        weights = mask.astype(np.float32)
    else:
        backdrop = np.median(_border(lab, settings.border), axis=0)
        far = np.linalg.norm(lab - backdrop, axis=-1) > settings.foreground_distance
        centred = _centre_weights(height, width, settings.centre_sigma)
        weights = centred * far if far.mean() >= settings.min_foreground else centred
    return weights / weights.sum()


# -- features ------------------------------------------------------------------------------
def _histogram(index: np.ndarray, weights: np.ndarray, bins: int) -> np.ndarray:
    return np.bincount(index.ravel(), weights=weights.ravel(), minlength=bins)[:bins]


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs) -> np.ndarray:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return values[order][np.searchsorted(cumulative, np.asarray(qs) * cumulative[-1]).clip(0, len(values) - 1)]


# Where features_of puts the item's mean Lab and the border's colour (both / 50).
_MEAN, _BORDER = slice(-17, -14), slice(-3, None)


def features_of(pixels: np.ndarray, mask: np.ndarray | None, settings: ColourFeatureSettings) -> np.ndarray:
    """The feature vector of a thumbnail's item (float32, `settings.size` long)."""
    lab = rgb_to_lab(pixels)
    w = item_weights(lab, mask, settings).astype(np.float32)
    L, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    li = np.clip((L / 100 * settings.l_bins).astype(int), 0, settings.l_bins - 1)
    step = 2 * settings.ab_range / settings.ab_bins
    ai = np.clip(((a + settings.ab_range) / step).astype(int), 0, settings.ab_bins - 1)
    bi = np.clip(((b + settings.ab_range) / step).astype(int), 0, settings.ab_bins - 1)
    lab_hist = _histogram((li * settings.ab_bins + ai) * settings.ab_bins + bi, w,
                          settings.l_bins * settings.ab_bins ** 2)

    chroma = np.hypot(a, b)
    hue = np.clip(((np.arctan2(b, a) + np.pi) / (2 * np.pi) * settings.hue_bins).astype(int), 0,
                  settings.hue_bins - 1)
    level = np.searchsorted(np.asarray(settings.chroma_edges), chroma, side="right")  # 0: achromatic
    coloured = level > 0
    hue_hist = _histogram(np.where(coloured, hue * len(settings.chroma_edges) + level - 1, 0), w * coloured,
                          settings.hue_bins * len(settings.chroma_edges))
    achromatic = float((w * ~coloured).sum())

    flat_w = w.ravel()
    flat = lab.reshape(-1, 3)
    mean = flat_w @ flat
    std = np.sqrt(np.maximum(flat_w @ (flat - mean) ** 2, 0))
    moments = np.array([*mean / 50, *std / 25, float(flat_w @ chroma.ravel()) / 50,
                        float(flat_w @ (L.ravel() < 25)) ], dtype=np.float32)
    quantiles = np.concatenate([_weighted_quantiles(L.ravel(), flat_w, (0.1, 0.5, 0.9)) / 100,
                                _weighted_quantiles(chroma.ravel(), flat_w, (0.1, 0.5, 0.9)) / 50])
    border = np.median(_border(lab, settings.border), axis=0) / 50
    # Square roots of the histograms: many small shares count beside one large one.
    return np.concatenate([np.sqrt(lab_hist), np.sqrt(hue_hist), [np.sqrt(achromatic)], moments,
                           quantiles, border]).astype(np.float32)


def image_features(image: Image.Image, mask: np.ndarray | None, settings: ColourFeatureSettings) -> np.ndarray:
    pixels, small_mask = thumbnail(image, mask, settings.side)
    return features_of(pixels, small_mask, settings)


def border_as_light(features: np.ndarray, settings: ColourFeatureSettings,
                    limit: float = BORDER_LIGHT_CHROMA, darkest: float = BORDER_LIGHT_MIN_L) -> np.ndarray:
    """The features with a backdrop too coloured or too dark to be a white wall in some light
    (see BORDER_LIGHT_CHROMA, BORDER_LIGHT_MIN_L) taken for the studio's white; other features
    as they are. A border of the item's own colour (a close-up filling the frame) is the item,
    not a backdrop, and stays."""
    border, mean = features[..., _BORDER] * 50, features[..., _MEAN] * 50
    backdrop = np.linalg.norm(border - mean, axis=-1) > settings.foreground_distance
    surface = backdrop & ((np.hypot(border[..., 1], border[..., 2]) > limit) | (border[..., 0] < darkest))
    if not surface.any():
        return features
    features = features.copy()
    features[surface, _BORDER] = STUDIO_WHITE / 50
    return features


# -- the model -----------------------------------------------------------------------------
class ColourModel:
    """Probabilities over the catalog's colours for an item's pixels (see the module)."""

    def __init__(self, colours: list[str], settings: ColourFeatureSettings, mean: np.ndarray, scale: np.ndarray,
                 layers: list[tuple[np.ndarray, np.ndarray]], facts: dict | None = None):
        if layers[-1][0].shape[1] != len(colours):
            raise UserError(f"{len(colours)} colours but an output layer of {layers[-1][0].shape[1]}")
        if mean.shape != (settings.size,):
            raise UserError(f"features of {settings.size} values but a mean of shape {mean.shape}")
        self.colours = list(colours)
        self.settings = settings
        self.mean, self.scale = mean.astype(np.float32), scale.astype(np.float32)
        self.layers = [(w.astype(np.float32), b.astype(np.float32)) for w, b in layers]
        self.facts = dict(facts or {})

    @classmethod
    def load(cls, path: Path | None = None) -> ColourModel:
        """The model in `path` (default: the shipped file, embedding/colour_model.npz)."""
        path = Path(path) if path is not None else DEFAULT_PATH
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no colour model; python -m training.colour --catalog DIR --out {path}")
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            layers = [(data[f"w{i}"], data[f"b{i}"]) for i in range(header["layers"])]
            return cls(header["colours"], ColourFeatureSettings(**{
                k: tuple(v) if isinstance(v, list) else v for k, v in header["features"].items()}),
                data["mean"], data["scale"], layers, header.get("facts"))

    def save(self, path: Path) -> None:
        """Write the model; the same model gives the same bytes (fixed zip dates), so a
        retrained file can be compared with the shipped one."""
        header = {"colours": self.colours, "features": asdict(self.settings), "layers": len(self.layers),
                  "facts": self.facts}
        arrays = {"header": np.array(json.dumps(header, sort_keys=True)), "mean": self.mean, "scale": self.scale}
        for i, (w, b) in enumerate(self.layers):
            arrays[f"w{i}"], arrays[f"b{i}"] = w, b
        save_stable(Path(path), arrays)

    def standardise(self, features: np.ndarray) -> np.ndarray:
        """Features as the MLP takes them: standardised, and clipped, since a colour further out
        than the catalog ever went is best judged as the furthest it did go."""
        return np.clip((np.atleast_2d(features) - self.mean) / self.scale, -CLIP, CLIP).astype(np.float32)

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Class scores for a batch of feature vectors (N x size)."""
        x = self.standardise(features)
        for i, (w, b) in enumerate(self.layers):
            x = x @ w + b
            if i < len(self.layers) - 1:
                x = np.maximum(x, 0)
        return x

    def probabilities_of(self, features: np.ndarray) -> np.ndarray:
        z = self.logits(features)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def features(self, image: Image.Image, mask: np.ndarray | None = None) -> np.ndarray:
        """The item's features as a reading takes them (the border judged as light or not)."""
        return border_as_light(image_features(image, mask, self.settings), self.settings)

    def probabilities(self, image: Image.Image, mask: np.ndarray | None = None) -> dict[str, float]:
        """p(colour) for the item: the pixels under `mask` (boolean, the image's height x
        width), else the photo's foreground. Sums to 1 over the catalog's colours."""
        p = self.probabilities_of(self.features(image, mask))[0]
        return {colour: float(v) for colour, v in zip(self.colours, p)}

    def name(self, image: Image.Image, mask: np.ndarray | None = None) -> str:
        """The most likely colour, a catalog value such as "Navy Blue"."""
        p = self.probabilities_of(self.features(image, mask))[0]
        return self.colours[int(np.argmax(p))]


__all__ = ["BORDER_LIGHT_CHROMA", "BORDER_LIGHT_MIN_L", "ColourFeatureSettings", "ColourModel", "DEFAULT_PATH", "border_as_light",
           "image_features", "features_of",
           "item_weights", "rgb_to_lab", "thumbnail"]
