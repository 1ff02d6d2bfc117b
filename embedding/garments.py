"""The garment parser: every wearable item in a shopper's photo, each with a box, a mask, a
catalog category and a confidence (what Google Lens and StyleSnap do before they search).

It is the project's own: two members, the EfficientNet-Lite0 and Lite2 ImageNet backbones from
their wheels, frozen, each with its last block and torchvision's LR-ASPP segmentation head
trained on the street photos' pixel labels (`python app.py train-parser`, training/parser.py);
the parser averages their class scores. The trained parts are a small file shipped with the
project (embedding/garment_parser.pt), so a fresh offline machine parses photos at once.

The parser's classes group the photos' 59 labels into the catalog's categories; each class says
how an item of it is searched (`search_categories`, matched at any category level).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from scipy.sparse.csgraph import connected_components
from torch import nn

from catalog.errors import UserError
from embedding.registry import PARSER_INPUT_SIZE, PARSER_ITEM_RESOLUTION, ParserSpec, architecture, parser_member

SHIPPED_FILE = Path(__file__).with_name("garment_parser.pt")
# The longest side of an item cut out for a search (the models see at most a few hundred pixels).
CUT_OUT_SIDE = 1024


@dataclass(frozen=True)
class GarmentClass:
    name: str                       # what the chat calls it ("jacket or coat")
    label: str                      # the catalog subCategory an item is reported as
    search_categories: tuple[str, ...]  # catalog values (any level) an item of it is searched within
    street_labels: tuple[str, ...]  # the street photos' labels it gathers
    min_area: float = 0.004         # share of the photo below which a blob is noise
    countable: bool = True          # "a top", but "shoes", "glasses"
    # Pieces of the class further apart than this many times the larger one's longer side are
    # items of their own (`parts_apart`). Worn garments come in pieces (an open jacket's halves
    # either side of the shirt, two trouser legs) and shoes in pairs: one item within a side.
    # An accessory apart from another is a second one (a bag in the hand, a watch on a table).
    apart: float = 0.5
    # Worn in pairs: two pieces side by side (level with each other) within a side are one item,
    # the shoes of one person; a shoe elsewhere in the photo is another.
    pairs: bool = False
    # Where a standing person wears it, head (0) to feet (3); None for what moves about (a bag
    # in the hand or on the shoulder). A worn outfit shows its items in this order top to bottom.
    height: float | None = None
    # How much of a square catalog shot's side a product of this class fills (the median over
    # this catalog's shots, docs/figures.md): bags, glasses and belts sit small on white, worn
    # garments fill the frame. An item is cut out with as much white around it, so it is framed
    # as the products it is compared with (a bag or a shoe filling the frame finds fewer of its
    # own type). Shoes: 0.75, between one shoe's 0.63 in the catalog and a worn pair, which
    # spans two shoes (measured both ways in docs/figures.md).
    fill: float = 0.89
    # The item is the pixels at least this confident, when some are (None: every pixel the
    # parser gives the class). Glasses are read as a blob three to five times their size, the
    # face around the frame at low confidence; their confident core is the frame itself.
    core: float | None = None

    @property
    def margin(self) -> float:
        """The white around a cut-out item on each side, as a share of its box: `fill` of the
        framed picture's side."""
        return (1.0 / self.fill - 1.0) / 2.0

    def phrase(self, colour: str | None = None) -> str:
        """How the chat names an item: "a navy top", "brown shoes", "an orange bag"."""
        words = f"{colour.lower()} {self.name}" if colour else self.name
        if not self.countable:
            return words
        return ("an " if words[0] in "aeiou" else "a ") + words


# Index 0 is everything that is not a product (skin, hair, the street, underwear, jewellery).
GARMENT_CLASSES: tuple[GarmentClass, ...] = (
    GarmentClass("background", "", (), ()),
    GarmentClass("top", "Topwear", ("Topwear",),
                 ("blouse", "shirt", "t-shirt", "top", "sweater", "sweatshirt", "jumper", "hoodie", "vest"),
                 apart=1.0, height=1),
    # Outer layers are their own item, not merged with what is under them.
    GarmentClass("jacket or coat", "Topwear",
                 ("Jackets", "Blazers", "Coats", "Rain Jacket", "Nehru Jackets", "Shrug", "Waistcoat", "Sweaters"),
                 ("blazer", "coat", "jacket", "cape", "suit", "cardigan"), apart=1.0, height=1),
    GarmentClass("trousers or skirt", "Bottomwear", ("Bottomwear",),
                 ("jeans", "pants", "shorts", "skirt", "leggings"), countable=False, apart=1.0, height=2),
    GarmentClass("dress", "Dress", ("Dress", "Dresses", "Jumpsuit"), ("dress", "romper", "bodysuit"), apart=1.0,
                 height=1.5),
    GarmentClass("shoes", "Shoes", ("Footwear",),
                 ("boots", "clogs", "flats", "heels", "loafers", "pumps", "sandals", "shoes", "sneakers", "wedges"),
                 countable=False, pairs=True, height=3, fill=0.75),
    GarmentClass("bag", "Bags", ("Bags", "Wallets"), ("bag", "purse", "wallet"), min_area=0.003, fill=0.64),
    GarmentClass("hat", "Headwear", ("Headwear",), ("hat",), min_area=0.002, height=0, fill=0.48),
    GarmentClass("glasses", "Eyewear", ("Eyewear",), ("glasses", "sunglasses"), min_area=0.0008, countable=False,
                 height=0, fill=0.58, core=0.9),
    GarmentClass("belt", "Belts", ("Belts",), ("belt",), min_area=0.001, fill=0.57),
    GarmentClass("scarf or tie", "Scarves", ("Scarves", "Ties", "Mufflers", "Stoles"), ("scarf", "tie"),
                 min_area=0.002, fill=0.9),
    GarmentClass("watch", "Watches", ("Watches",), ("watch",), min_area=0.0004, fill=0.88),
)
CLASS_NAMES = tuple(c.name for c in GARMENT_CLASSES)
BY_NAME = {c.name: c for c in GARMENT_CLASSES}
# Fewer confident pixels than this draw no box: the item keeps every pixel of its class.
CORE_MIN_PIXELS = 4


def describe_items(kinds: list[str], colours: list[str | None] | None = None) -> str:
    """"a white top, blue trousers or skirt and brown shoes"."""
    colours = colours or [None] * len(kinds)
    phrases = [BY_NAME[k].phrase(c) for k, c in zip(kinds, colours)]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def cut_out(image: Image.Image, mask: np.ndarray, box: tuple[float, float, float, float],
            margin: float = 0.06, max_side: int = CUT_OUT_SIDE) -> Image.Image:
    """`box` (fractions) of `image` with `margin` of it on each side, everything outside `mask`
    (any resolution) white: an item as the catalog shows products. Past the photo's edge the
    margin is white too (a shoe at the bottom of the frame keeps its white below). At most
    `max_side` pixels on the longer side (the models see a few hundred), so a wide margin
    around a large item costs no more memory than the photo."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    x0, y0, x1, y1 = box
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    left, top = math.floor((x0 - mx) * width), math.floor((y0 - my) * height)
    right, bottom = math.ceil((x1 + mx) * width), math.ceil((y1 + my) * height)
    inside = (max(0, left), max(0, top), min(width, right), min(height, bottom))
    keep = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.BILINEAR)
    region = rgb.crop(inside)
    piece = Image.composite(region, Image.new("RGB", region.size, (255, 255, 255)), keep.crop(inside))
    scale = min(1.0, max_side / max(1, right - left, bottom - top))
    framed = Image.new("RGB", (max(1, round((right - left) * scale)), max(1, round((bottom - top) * scale))),
                       (255, 255, 255))
    if scale < 1.0:
        piece = piece.resize((max(1, round(piece.width * scale)), max(1, round(piece.height * scale))),
                             Image.Resampling.BILINEAR)
    framed.paste(piece, (round((inside[0] - left) * scale), round((inside[1] - top) * scale)))
    return framed


@dataclass(frozen=True)
class StreetGarment:
    """One garment outlined in a street photo's mask: its parser class, the street label most of
    its pixels carry, the mask values that make it, and its box (fractions)."""
    kind: str
    label: str
    values: tuple[int, ...]
    box: tuple[float, float, float, float]


def street_garments(values: np.ndarray, labels: dict[int, str]) -> list[StreetGarment]:
    """The garments of a street mask (one label value per pixel): one per parser class whose
    pixels cover at least its `min_area` of the photo."""
    classes = street_label_table(labels)[values]
    out = []
    for index, garment in enumerate(GARMENT_CLASSES[1:], start=1):
        where = classes == index
        if where.mean() < garment.min_area:
            continue
        present = np.bincount(values[where], minlength=256)
        out.append(StreetGarment(garment.name, labels[int(present.argmax())],
                                 tuple(int(v) for v in np.flatnonzero(present)), mask_box(where)))
    return out


def street_label_table(labels: dict[int, str]) -> np.ndarray:
    """value in a street mask -> parser class (0 for anything no class gathers)."""
    by_label = {label: i for i, c in enumerate(GARMENT_CLASSES) for label in c.street_labels}
    table = np.zeros(256, dtype=np.int64)
    for value, label in labels.items():
        table[value] = by_label.get(label, 0)
    return table


class GarmentHead(nn.Module):
    """The backbone's last block, trained, then torchvision's LR-ASPP head on three stages:
    the stride-8 features for edges, the stride-16 and (upsampled) stride-32 ones for what the
    pixel is. `top` starts from the ImageNet block when `init` (the backbone's) is given."""

    def __init__(self, spec: ParserSpec, classes: int, inter: int = 128, init: nn.Module | None = None):
        super().__init__()
        import copy

        from torchvision.models.segmentation.lraspp import LRASPPHead
        self.spec = spec
        low, mid, _ = spec.feature_channels
        self.top = copy.deepcopy(init) if init is not None else _lite_block(spec)
        self.top.requires_grad_(True)
        self.head = LRASPPHead(low, mid + spec.tuned_channels, classes, inter)

    def forward(self, s8: torch.Tensor, s16: torch.Tensor, s32_in: torch.Tensor) -> torch.Tensor:
        s32 = self.top(s32_in)
        high = torch.cat([s16, F.interpolate(s32, size=s16.shape[-2:], mode="bilinear", align_corners=False)], 1)
        return self.head({"low": s8, "high": high})


def _lite_block(spec: ParserSpec) -> nn.Module:
    """The tuned block of the member's backbone architecture, weights to be loaded."""
    import timm
    return timm.create_model(f"tf_{spec.backbone}", pretrained=False, num_classes=0).blocks[spec.tuned_block]


class Backbone(nn.Module):
    """A member's frozen ImageNet layers up to its tuned block: the outputs of the blocks the
    parser reads (strides 8, 16 and the tuned block's input at 32)."""

    def __init__(self, spec: ParserSpec):
        super().__init__()
        import timm

        from embedding.architectures import load_imagenet
        self.spec = spec
        arch = architecture(spec.backbone)
        self.network = timm.create_model(f"tf_{arch.name}", pretrained=False, num_classes=0)
        load_imagenet(arch, self.network)
        self.network.eval().requires_grad_(False)
        self.mean = torch.tensor(arch.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(arch.std).view(1, 3, 1, 1)

    @property
    def tuned_block(self) -> nn.Module:
        """The ImageNet weights of the block the parser trains (its starting point)."""
        return self.network.blocks[self.spec.tuned_block]

    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """`pixels`: N x 3 x H x W in [0, 1]."""
        x = self.network.bn1(self.network.conv_stem((pixels - self.mean) / self.std))
        out = []
        for index, block in enumerate(self.network.blocks[:self.spec.tuned_block]):
            x = block(x)
            if index in self.spec.feature_blocks:
                out.append(x)
        return out


def parser_input(image: Image.Image, size: tuple[int, int] = PARSER_INPUT_SIZE) -> torch.Tensor:
    """The photo stretched to the parser's height x width, as 1 x 3 x H x W in [0, 1]. Street
    and phone photos are about 2:3 upright; other shapes are stretched, which the boxes undo
    (they are fractions of the photo)."""
    height, width = size
    rgb = image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)


@dataclass(frozen=True)
class Item:
    """One item found in a photo: its class, `box` as fractions (x0, y0, x1, y1) of the photo,
    `score` (the parser's mean confidence over its pixels), `area` (share of the photo), and its
    `mask` at the parser's resolution (True where the item is)."""
    kind: str
    label: str
    search_categories: tuple[str, ...]
    box: tuple[float, float, float, float]
    score: float
    area: float
    mask: np.ndarray

    @property
    def height(self) -> float | None:
        """Where a standing person wears it (GarmentClass.height)."""
        return BY_NAME[self.kind].height

    def cut_out(self, image: Image.Image, margin: float | None = None) -> Image.Image:
        """The item as the catalog shows products: its box with white around it as the
        catalog frames its class (`GarmentClass.margin`, unless `margin` is given), everything
        outside its mask white (the catalog's backdrop)."""
        return cut_out(image, self.mask, self.box, BY_NAME[self.kind].margin if margin is None else margin)

    def full_mask(self, size: tuple[int, int]) -> np.ndarray:
        """The mask at `size` (width, height), for the colour of the item's own pixels."""
        return np.asarray(Image.fromarray(self.mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 127


class ParserNetwork(nn.Module):
    """Pixels to class probabilities, from the mean of every member's class scores (logits): one
    definition of the forward pass, run by PyTorch or exported to ONNX Runtime. The scores, not
    the probabilities: where the members agree the parser is as sure as they are, so an item's
    least confidence set for one member holds, and a small product one member is sure of is not
    diluted away (docs/figures.md, session 29).
    `resolution`: the share of the input's sides the scores are drawn at (registry.py says why)."""

    def __init__(self, backbones: list[Backbone], heads: list[GarmentHead], resolution: float = PARSER_ITEM_RESOLUTION):
        super().__init__()
        self.backbones, self.heads, self.resolution = nn.ModuleList(backbones), nn.ModuleList(heads), resolution

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # int(): a constant when exported, as the parser's input size is.
        size = tuple(round(int(side) * self.resolution) for side in pixels.shape[-2:])
        total = None
        for backbone, head in zip(self.backbones, self.heads):
            logits = F.interpolate(head(*backbone(pixels)), size=size, mode="bilinear", align_corners=False)
            total = logits if total is None else total + logits
        return (total / len(self.heads)).softmax(1)


class GarmentParser:
    """Finds the items in a photo. One forward pass of each member's frozen backbone and head;
    the same photo gives the same items in any process (no randomness, fixed input size).

    `runtime`: "auto" runs the network in ONNX Runtime (fp32, exported in memory when the
    parser loads; about twice as fast as PyTorch on a CPU, docs/runtime.md) once it
    gives PyTorch's classes on a generated photo, else PyTorch with one line saying why;
    "eager" runs PyTorch (the default when a parser is made from heads, as training does). The
    embedders' "onnx-int8" means "auto" here: the parser has no int8 model."""

    def __init__(self, heads: list[GarmentHead], backbones: list[Backbone] | None = None, min_score: float = 0.45,
                 runtime: str = "eager", log=None):
        backbones = backbones or [Backbone(head.spec) for head in heads]
        self.network = ParserNetwork(backbones, [head.eval() for head in heads]).eval()
        self.min_score = min_score
        self.runtime, self._fast = "eager", None
        if runtime != "eager":
            self._use_onnx(log or _to_stderr)

    @staticmethod
    def held_out(path: Path | None = None) -> list[str]:
        """The street photos the parser file never trained on (evaluate-look queries with them)."""
        path = Path(path or SHIPPED_FILE)
        if not path.is_file():
            return []
        return list(torch.load(path, map_location="cpu", weights_only=True).get("held_out", []))

    @classmethod
    def load(cls, path: Path | None = None, runtime: str = "auto", log=None) -> GarmentParser:
        path = Path(path or SHIPPED_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"no garment parser at {path}: train one with `python app.py train-parser`")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if list(state.get("classes", [])) != list(CLASS_NAMES):
            raise UserError(f"{path} was trained for other classes ({state.get('classes')}); retrain it")
        if not state.get("members"):
            raise UserError(f"{path} was trained for another parser layout; retrain it with `python app.py train-parser`")
        heads = []
        for member in state["members"]:
            head = new_head(parser_member(member["name"]))
            try:
                # Kept in half precision: half the file, the same items (docs/figures.md).
                head.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in member["head"].items()})
            except RuntimeError as exc:
                raise UserError(f"{path} was trained for another parser layout; retrain it with "
                                f"`python app.py train-parser` ({str(exc).splitlines()[0]})") from exc
            heads.append(head)
        return cls(heads, runtime=runtime, log=log)

    def _use_onnx(self, log) -> None:
        from embedding.runtime import RuntimeUnavailable, module_forward
        try:
            fast = module_forward(self.network, parser_input(_test_photo()))
            _check_agrees(fast, self.network)
        except RuntimeUnavailable as exc:
            log(f"garment parser: PyTorch ({exc})")
            return
        self.runtime, self._fast = "onnxruntime", fast

    @torch.inference_mode()
    def probabilities(self, image: Image.Image) -> torch.Tensor:
        """classes x H x W probabilities, the parser's input size times its item resolution."""
        pixels = parser_input(image)
        if self._fast is not None:
            return torch.from_numpy(self._fast(pixels.numpy())[0])
        return self.network(pixels)[0]

    def parse(self, image: Image.Image) -> list[Item]:
        """The items in `image`, the most prominent first (largest share of the photo)."""
        return items_from(self.probabilities(image), self.min_score)


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)  # stdout may be `search --json`'s lines


def _test_photo(seed: int = 0) -> Image.Image:
    """A generated photo of soft blocks of random colours: something for the two runtimes to agree on."""
    rng = np.random.default_rng(seed)
    height, width = PARSER_INPUT_SIZE
    pixels = rng.integers(0, 256, size=(height // 16, width // 16, 3), dtype=np.uint8)
    return Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR)


@torch.inference_mode()
def _check_agrees(fast, network: ParserNetwork, min_agreement: float = 0.999, max_difference: float = 1e-3) -> None:
    """ONNX Runtime's probabilities within `max_difference` of PyTorch's, and the same class on
    at least `min_agreement` of the pixels, on generated photos; else RuntimeUnavailable."""
    from embedding.runtime import RuntimeUnavailable
    for seed in (0, 1):
        pixels = parser_input(_test_photo(seed))
        ours, theirs = torch.from_numpy(fast(pixels.numpy())), network(pixels)
        agreement = float((ours.argmax(1) == theirs.argmax(1)).float().mean())
        difference = float((ours - theirs).abs().max())
        if agreement < min_agreement or difference > max_difference:
            raise RuntimeUnavailable(f"ONNX Runtime disagrees with PyTorch on a generated photo: the same "
                                     f"class on {agreement:.4f} of the pixels, probabilities up to "
                                     f"{difference:.4f} apart")


def new_head(spec: ParserSpec, backbone: Backbone | None = None) -> GarmentHead:
    """A member's head to train (from its backbone's ImageNet block) or to load a state into."""
    return GarmentHead(spec, classes=len(GARMENT_CLASSES), init=backbone.tuned_block if backbone is not None else None)


def items_from(probabilities: torch.Tensor, min_score: float = 0.45) -> list[Item]:
    """The items of every class present: its pixels (small specks opened away) in parts that lie
    apart (a bag in the hand and another on the floor are two items), each part's extent between
    the 1st and 99th percentile (a stray blob does not stretch the box), its mean confidence."""
    labels = probabilities.argmax(0)
    # A class with fewer pixels than its least item cannot make one (the opening only takes
    # pixels away): skipped before the opening, the costliest step.
    counts = torch.bincount(labels.flatten(), minlength=len(GARMENT_CLASSES))
    present = [index for index, garment in enumerate(GARMENT_CLASSES)
               if index and counts[index] >= garment.min_area * labels.numel()]
    if not present:
        return []
    items = []
    for index, opened in zip(present, _opened(labels, present)):
        garment = GARMENT_CLASSES[index]
        for part in parts_apart(opened.numpy(), garment.apart, garment.pairs):
            area = float(part.mean())
            if area < garment.min_area:
                continue
            score = float(probabilities[index][torch.from_numpy(part)].mean())
            if score < min_score:
                continue
            part = _core(part, probabilities[index], garment.core)
            items.append(Item(garment.name, garment.label, garment.search_categories, mask_box(part), score,
                              float(part.mean()), part))
    return sorted(items, key=lambda item: -item.area)


def _core(part: np.ndarray, probability: torch.Tensor, confidence: float | None) -> np.ndarray:
    """The part's pixels at least `confidence` sure; the part as it is when no confidence is
    asked or too few pixels reach it to draw a box."""
    if confidence is None:
        return part
    core = part & (probability.numpy() >= confidence)
    return core if core.sum() >= CORE_MIN_PIXELS else part


def parts_apart(mask: np.ndarray, apart: float = 1.0, pairs: bool = False) -> list[np.ndarray]:
    """`mask` split into the parts that lie apart: connected pieces whose boxes are nearer to each
    other than `apart` times the larger one's longer side stay one part (a coat cut in two by an
    arm), and with `pairs` two pieces level with each other within a side (the shoes of a pair),
    so only an item that stands apart, like a second bag, becomes its own part."""
    pieces, count = ndimage.label(mask)
    if count <= 1:
        return [mask] if count else []
    # Every pair of pieces at once (a noisy photo's thousands of specks included): boxes as
    # x0, y0, x1, y1 in pixels of the parser's map, which fit in 16 bits.
    b = np.array([(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndimage.find_objects(pieces)],
                 dtype=np.int16)
    x0, y0, x1, y1 = (b[:, i] for i in range(4))
    gap = np.maximum(np.maximum(x0[:, None] - x1[None, :], x0[None, :] - x1[:, None]),
                     np.maximum(y0[:, None] - y1[None, :], y0[None, :] - y1[:, None]))
    side = np.maximum(x1 - x0, y1 - y0)
    larger = np.maximum(side[:, None], side[None, :])
    reach = apart * larger
    if pairs:
        # Level: their rows overlap by half the shorter one's height.
        overlap = np.minimum(y1[:, None], y1[None, :]) - np.maximum(y0[:, None], y0[None, :])
        level = overlap >= 0.5 * np.minimum((y1 - y0)[:, None], (y1 - y0)[None, :])
        reach = np.where(level, larger, reach)
    count, group = connected_components(gap < reach, directed=False)
    by_pixel = np.concatenate([[-1], group])[pieces]
    return [by_pixel == g for g in range(count)]


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """The extent of a mask's pixels between their 1st and 99th percentile (a stray blob does
    not stretch it), as fractions (x0, y0, x1, y1) of the mask's width and height."""
    height, width = mask.shape
    ys, xs = np.nonzero(mask)
    if len(xs) > 50:
        (x0, x1), (y0, y1) = np.percentile(xs, [1, 99]), np.percentile(ys, [1, 99])
    else:
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    return float(x0) / width, float(y0) / height, (float(x1) + 1) / width, (float(y1) + 1) / height


def box_iou(a, b) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _opened(labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Each of `classes`' pixels after a morphological opening with a 3x3 square (one-pixel
    specks erased, shapes kept), all classes in one pass: len(classes) x H x W."""
    masks = torch.stack([labels == index for index in classes])
    m = masks.float()[None]
    eroded = -F.max_pool2d(-m, 3, stride=1, padding=1)
    return (F.max_pool2d(eroded, 3, stride=1, padding=1)[0] > 0.5) & masks


__all__ = ["GARMENT_CLASSES", "CLASS_NAMES", "BY_NAME", "describe_items", "Backbone", "GarmentClass", "GarmentHead",
           "GarmentParser", "Item", "ParserNetwork",
           "SHIPPED_FILE", "box_iou", "items_from", "parts_apart", "mask_box", "new_head", "parser_input", "street_label_table"]
