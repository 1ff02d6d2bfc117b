"""The same index and search against a real `chroma run` server on 127.0.0.1."""
import subprocess
import sys

import pytest

from catalog import open_image, read_catalog
from indexing import index_catalog
from search import Searcher
from tests.conftest import ROOT, free_port
from vectorstore import StoreSettings, make_client


def test_index_and_search_through_the_server(chroma_server, catalog_dir, embedders):
    host, port = chroma_server.host, chroma_server.port
    settings = StoreSettings(host=host, port=port)
    client = make_client(settings)
    catalog = read_catalog(catalog_dir)
    report = index_catalog(catalog, client, [embedders["resnet18"]], batch_size=8, show_progress_bar=False)
    assert report.indexed == {"resnet18": len(catalog.products)}
    again = index_catalog(catalog, client, [embedders["resnet18"]], batch_size=8, show_progress_bar=False)
    assert again.indexed == {"resnet18": 0}
    searcher = Searcher(make_client(settings), embedders=embedders)
    product = catalog.by_id()["1013"]
    answer = searcher.search_image("resnet18", open_image(product.image), k=5, filters={"gender": ["women"]})
    assert answer.results[0].id == "1013" and answer.results[0].score > 0.99
    assert all(r.get("gender") == "Women" for r in answer.results)
    assert "1013" not in [r.id for r in searcher.similar_to("resnet18", "1013").results]


def test_cli_against_the_server(chroma_server, catalog_dir):
    host, port = chroma_server.host, chroma_server.port
    common = ["--chroma-host", host, "--chroma-port", str(port), "--weights", "random"]
    done = subprocess.run([sys.executable, str(ROOT / "app.py"), "index", "--catalog", str(catalog_dir),
                           "--models", "resnet18", "--quiet", *common], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    query = catalog_dir / "images" / "1010.jpg"
    found = subprocess.run([sys.executable, str(ROOT / "app.py"), "search", "--model", "resnet18", "--json",
                            *common, str(query)], capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stderr
    assert '"id": "1010"' in found.stdout.splitlines()[0]


def test_server_down_is_a_clear_error(embedders):
    settings = StoreSettings(host="127.0.0.1", port=free_port())
    from vectorstore import StoreError
    with pytest.raises(StoreError, match=f"cannot reach the Chroma server at 127.0.0.1:{settings.port}"):
        make_client(settings)


def test_large_writes_fit_the_servers_request_limit(chroma_server):
    """4,000 x 2048-d is within Chroma's batch size but over its server's 32 MiB body limit."""
    import numpy as np

    from vectorstore import ProductCollection
    host, port = chroma_server.host, chroma_server.port
    coll = ProductCollection.open(make_client(StoreSettings(host=host, port=port)), "wide", dim=2048, create=True)
    vectors = np.random.default_rng(0).normal(size=(4000, 2048)).astype(np.float32)
    coll.write([str(i) for i in range(4000)], vectors, [{"gender": "Men"}] * 4000)
    assert coll.count() == 4000
