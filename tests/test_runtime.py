"""The int8 runtime (embedding/runtime.py): its vectors agree with PyTorch's, it is built
once per weights and cached, an index built with one runtime is searched with the other, and
`--runtime eager` is today's path. Offline: generated images, seeded random and wheel weights."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

import app
from catalog import open_image, read_catalog
from embedding import load_embedder
from embedding.runtime import (
    EAGER,
    ONNX_INT8,
    RuntimeSettings,
    RuntimeUnavailable,
    apply_runtime,
    fast_model,
    onnxruntime_missing,
)
from indexing import index_catalog
from search import Searcher
from tests.conftest import KINDS, draw_product
from vectorstore import ProductCollection, StoreSettings, make_client

MISSING = onnxruntime_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"the int8 runtime cannot run here: {MISSING}")


def settings(cache, **overrides) -> RuntimeSettings:
    # Few images keep a build to seconds; the product calibrates on 64.
    return RuntimeSettings(**{"runtime": "auto", "cache_dir": cache, "calibration_images": 16,
                              "validation_images": 8, **overrides})


def shots() -> list:
    return [draw_product(100 + i, rgb, shape) for i, (*_, rgb, shape) in enumerate(KINDS * 2)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("runtime-cache")


@pytest.fixture(scope="module")
def int8_resnet18(cache):
    embedder, lines = load_embedder("resnet18", "random"), []
    assert apply_runtime(embedder, settings(cache), lines.append) == ONNX_INT8
    return embedder, lines


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1)


def test_int8_vectors_match_eager_on_generated_images(int8_resnet18, embedders):
    embedder, lines = int8_resnet18
    assert embedder.runtime == ONNX_INT8
    assert lines == [lines[0]] and "generated images" in lines[0] and "built in" in lines[0]
    fast, eager = embedder.embed(shots()), embedders["resnet18"].embed(shots())
    assert fast.shape == eager.shape and np.allclose(np.linalg.norm(fast, axis=1), 1, atol=1e-5)
    assert cosines(fast, eager).mean() >= 0.99
    assert not np.array_equal(fast, eager)   # really computed by another runtime


def test_int8_lite0_with_its_imagenet_weights_ranks_like_eager_and_auto_follows_its_cosine(cache, catalog_dir):
    # Real weights, and timm's 'same' padding, which the export must fold to plain layers;
    # calibrated on the shop's catalog (the test one), as index/serve/shop do.
    lite = settings(cache, catalog=catalog_dir)  # 16 of its 24 images calibrate, the other 8 check
    reference = load_embedder("efficientnet_lite0", "imagenet")
    embedder, lines = load_embedder("efficientnet_lite0", "imagenet"), []
    assert apply_runtime(embedder, replace(lite, runtime=ONNX_INT8), lines.append) == ONNX_INT8
    assert "16 catalog images, checked on 8 others" in lines[0]
    fast, eager = embedder.embed(shots()), reference.embed(shots())
    # Lite's int8 loses more on flat synthetic drawings (cosine about 0.97) than on catalog
    # photos (0.993, docs/runtime.md): a looser bound here, and the neighbours must agree.
    assert cosines(fast, eager).mean() >= 0.95
    nearest = [np.argsort(-(v @ v.T), axis=1)[:, 1] for v in (fast, eager)]
    assert (nearest[0] == nearest[1]).mean() >= 0.8
    # `auto` takes int8 exactly when the cosine measured at build reached the threshold.
    measured = fast_model(reference, lite)
    assert measured.built is False
    assert apply_runtime(load_embedder("efficientnet_lite0", "imagenet"), lite, lambda line: None) == \
        (ONNX_INT8 if measured.cosine >= lite.min_cosine else EAGER)


def test_cache_is_reused_and_rebuilt_when_the_weights_change(int8_resnet18, cache):
    first = fast_model(load_embedder("resnet18", "random"), settings(cache))
    assert first.built is False and first.validated
    meta = first.path.with_name("meta.json")
    stamp = meta.stat().st_mtime_ns
    again, lines = load_embedder("resnet18", "random"), []
    apply_runtime(again, settings(cache), lines.append)
    assert "cached" in lines[0] and meta.stat().st_mtime_ns == stamp
    other = fast_model(load_embedder("resnet18", "random:1"), settings(cache))
    assert other.built is True and other.path != first.path
    assert json.loads(other.path.with_name("meta.json").read_text())["weights"] == "random:1"


def test_auto_falls_back_to_eager_with_the_reason_and_explicit_int8_warns(int8_resnet18, cache):
    strict = settings(cache, min_cosine=1.01)   # no int8 model can reach it
    embedder, lines = load_embedder("resnet18", "random"), []
    assert apply_runtime(embedder, strict, lines.append) == EAGER
    assert embedder.runtime == EAGER and "runtime eager" in lines[0] and "below 1.01" in lines[0]
    lines.clear()
    assert apply_runtime(embedder, settings(cache, runtime=ONNX_INT8, min_cosine=1.01), lines.append) == ONNX_INT8
    assert "below the 1.01" in lines[0]


def test_explicit_int8_on_a_gpu_device_is_a_clear_error(cache):
    embedder = load_embedder("resnet18", "random")
    embedder.device = "cuda"   # what --device cuda gives; nothing runs on it here
    with pytest.raises(RuntimeUnavailable, match="for CPUs"):
        apply_runtime(embedder, settings(cache, runtime=ONNX_INT8))


def test_eager_runtime_gives_todays_vectors_exactly(int8_resnet18, cache, embedders):
    embedder = load_embedder("resnet18", "random")
    apply_runtime(embedder, settings(cache), lambda line: None)
    assert embedder.runtime == ONNX_INT8
    assert apply_runtime(embedder, settings(cache, runtime=EAGER)) == EAGER
    assert np.array_equal(embedder.embed(shots()), embedders["resnet18"].embed(shots()))


def test_an_index_built_with_one_runtime_is_searchable_with_the_other(tmp_path, catalog_dir, indexed_db,
                                                                      int8_resnet18, embedders):
    int8, _ = int8_resnet18
    catalog = read_catalog(catalog_dir)
    queries = catalog.products[::5]
    # Built with int8, searched with eager PyTorch.
    client = make_client(StoreSettings(path=tmp_path / "db"))
    index_catalog(catalog, client, [int8], batch_size=8, show_progress_bar=False)
    assert ProductCollection.open(client, "resnet18").runtime == ONNX_INT8
    eager_search = Searcher(client, embedders={"resnet18": embedders["resnet18"]})
    # Built with eager (the session index), searched with int8.
    eager_index = make_client(StoreSettings(path=indexed_db))
    assert ProductCollection.open(eager_index, "resnet18").runtime == EAGER
    int8_search = Searcher(eager_index, embedders={"resnet18": int8})
    for searcher in (eager_search, int8_search):
        for product in queries:
            answer = searcher.search_image("resnet18", open_image(product.image), k=3)
            assert answer.results[0].id == product.id and answer.results[0].score > 0.95


def test_adding_with_another_runtime_is_recorded(tmp_path, catalog_dir, int8_resnet18, embedders):
    catalog = read_catalog(catalog_dir)
    client = make_client(StoreSettings(path=tmp_path / "db"))
    index_catalog(catalog, client, [embedders["resnet18"]], limit=10, show_progress_bar=False)
    index_catalog(catalog, client, [int8_resnet18[0]], show_progress_bar=False)
    collection = ProductCollection.open(client, "resnet18")
    assert collection.runtime == "eager+onnx-int8" and collection.count() == len(catalog.products)


def test_command_line_index_with_int8_and_search_with_eager(tmp_path, catalog_dir, cache, capsys, int8_resnet18):
    store = ["--db", str(tmp_path / "db"), "--weights", "random", "--runtime-cache", str(cache)]
    assert app.main(["index", "--catalog", str(catalog_dir), "--models", "resnet18", "--quiet",
                     "--runtime", "onnx-int8", *store]) == 0
    assert "resnet18: runtime onnx-int8 (cached" in capsys.readouterr().err
    query = read_catalog(catalog_dir).products[3]
    assert app.main(["search", "--model", "resnet18", "--runtime", "eager", "--json", *store, str(query.image)]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first["results"][0]["id"] == query.id


def test_the_cosine_check_uses_images_the_calibration_did_not_see(cache, catalog_dir, embedders):
    from embedding.runtime import calibration_and_validation
    calibration, validation, source = calibration_and_validation(embedders["resnet18"],
                                                                 settings(cache, catalog=catalog_dir))
    assert (len(calibration), len(validation)) == (16, 8) and source == "16 catalog images, checked on 8 others"
    flat = lambda batch: {row.tobytes() for row in batch.reshape(len(batch), -1)}  # noqa: E731
    assert not flat(calibration) & flat(validation)
    calibration, validation, source = calibration_and_validation(embedders["resnet18"], settings(cache))
    assert source == "16 generated images, checked on 8 others" and not flat(calibration) & flat(validation)


def test_a_build_keeps_the_full_resolution_layers_in_fp32_only_when_the_stem_alone_falls_short(
        tmp_path, catalog_dir, monkeypatch):
    from embedding import runtime
    from embedding.runtime import FULL_RESOLUTION, STEM, export_onnx, fp32_layer_choices, prepare_for_quantization
    lite = load_embedder("efficientnet_lite0", "imagenet")
    export_onnx(lite, tmp_path / "lite.onnx")
    choices = dict(fp32_layer_choices(prepare_for_quantization(tmp_path / "lite.onnx")))
    # Lite0's stem, then its first block and the first convolutions of the second (at 112 px).
    assert list(choices) == [STEM, FULL_RESOLUTION]
    assert choices[FULL_RESOLUTION][:1] == choices[STEM] and len(choices[FULL_RESOLUTION]) == 5
    assert sum("blocks.0/" in name for name in choices[FULL_RESOLUTION]) == 2
    export_onnx(load_embedder("resnet18", "random"), tmp_path / "resnet.onnx")
    assert [c for c, _ in fp32_layer_choices(prepare_for_quantization(tmp_path / "resnet.onnx"))] == [STEM]

    kept: list[tuple[int, bool]] = []
    quantize = runtime.quantize
    monkeypatch.setattr(runtime, "quantize", lambda prepared, out, calibration, keep_fp32, reduce_range=False:
                        kept.append((len(keep_fp32), reduce_range))
                        or quantize(prepared, out, calibration, keep_fp32, reduce_range=reduce_range))
    easy = fast_model(lite, settings(tmp_path / "easy", catalog=catalog_dir, min_cosine=0.0))
    assert kept == [(1, False)] and easy.fp32_layers == STEM and easy.validated
    kept.clear()
    strict = fast_model(lite, settings(tmp_path / "strict", catalog=catalog_dir, min_cosine=1.01))
    # Each choice fell short: the full-resolution layers in fp32, then both with 7-bit weights.
    assert kept == [(1, False), (5, False), (1, True), (5, True)]
    assert strict.cosine >= easy.cosine and not strict.validated   # the closest of them is kept
    assert json.loads(strict.path.with_name("meta.json").read_text())["fp32_layers"] == strict.fp32_layers
    assert fast_model(lite, settings(tmp_path / "strict", catalog=catalog_dir)).fp32_layers == strict.fp32_layers


def test_a_model_validated_with_vnni_is_not_reused_on_a_cpu_without(monkeypatch, embedders):
    """Without VNNI ONNX Runtime's int8 products may saturate: a model that passed its check on
    one kind of CPU is built and checked again on the other (a cache folder copied across)."""
    from embedding import runtime
    assert runtime.int8_dot_products() in ("int8 vnni", "int8 no-vnni", "int8 unknown")
    keys = set()
    for kind in ("int8 vnni", "int8 no-vnni"):
        monkeypatch.setattr(runtime, "int8_dot_products", lambda kind=kind: kind)
        keys.add(runtime.cache_key(embedders["resnet18"]))
    assert len(keys) == 2


# --- a cache entry that is not what was built ------------------------------------------------

def constant_model(dim: int = 512) -> bytes:
    """A valid ONNX model with the runtime's input and output names that ignores the picture."""
    from onnx import TensorProto, helper
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "h", "w"])
    features = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", dim])
    zeros = helper.make_tensor("zeros", TensorProto.FLOAT, [3, dim], [0.0] * (3 * dim))
    ones = helper.make_tensor("ones", TensorProto.FLOAT, [dim], [1.0] * dim)
    graph = helper.make_graph([helper.make_node("ReduceMean", ["images"], ["pooled"], axes=[2, 3], keepdims=0),
                               helper.make_node("MatMul", ["pooled", "zeros"], ["nothing"]),
                               helper.make_node("Add", ["nothing", "ones"], ["features"])],
                              "constant", [images], [features], [zeros, ones])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


@pytest.fixture
def cache_copy(int8_resnet18, cache, tmp_path):
    """This test's own copy of the built resnet18 entry, and the path of its model file."""
    import shutil
    entry = fast_model(load_embedder("resnet18", "random"), settings(cache)).path.parent
    shutil.copytree(entry, tmp_path / "cache" / entry.name)
    return tmp_path / "cache", tmp_path / "cache" / entry.name / "model.onnx"


def test_a_replaced_cached_model_is_rebuilt_not_trusted(cache_copy, embedders):
    copy, model = cache_copy
    model.write_bytes(constant_model())
    embedder, lines = load_embedder("resnet18", "random"), []
    assert apply_runtime(embedder, settings(copy), lines.append) == ONNX_INT8
    assert len(lines) == 1 and "rebuilt" in lines[0] and "sha256 differs" in lines[0]
    fast, eager = embedder.embed(shots()), embedders["resnet18"].embed(shots())
    assert cosines(fast, eager).mean() >= 0.99   # the picture counts again
    meta = json.loads(model.with_name("meta.json").read_text())
    import hashlib
    assert meta["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()


@pytest.mark.parametrize("damage", ["truncated", "garbage with its digest recorded"])
def test_a_damaged_cached_model_is_one_sentence_when_it_cannot_be_rebuilt(cache_copy, damage, monkeypatch):
    from embedding import runtime
    copy, model = cache_copy
    model.write_bytes(model.read_bytes()[:4096] if damage == "truncated" else b"\x08\x07garbage" * 100)
    if damage != "truncated":   # the digest matches: what is left is that ONNX Runtime cannot load it
        import hashlib
        meta = json.loads(model.with_name("meta.json").read_text())
        meta["sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
        model.with_name("meta.json").write_text(json.dumps(meta))

    def no_exporter(embedder, path):
        raise RuntimeError("no exporter here")
    monkeypatch.setattr(runtime, "export_onnx", no_exporter)
    embedder, lines = load_embedder("resnet18", "random"), []
    assert apply_runtime(embedder, settings(copy), lines.append) == EAGER and embedder.runtime == EAGER
    why = "sha256 differs" if damage == "truncated" else "does not load"
    assert len(lines) == 1 and "runtime eager" in lines[0] and why in lines[0] and "no exporter here" in lines[0]
    with pytest.raises(RuntimeUnavailable, match=why) as refused:
        apply_runtime(embedder, settings(copy, runtime=ONNX_INT8))
    assert "\n" not in str(refused.value)
    if damage != "truncated":
        return
    monkeypatch.undo()   # with the exporter back, the same entry is rebuilt and used
    assert apply_runtime(embedder, settings(copy, runtime=ONNX_INT8), lines.append) == ONNX_INT8
    assert "rebuilt" in lines[-1]
