"""Reordering a search's nearest products by what the query most likely is: the fine-tune's
classifiers, the votes of the nearest products' labels, the inverse of the collection's centering
the classifiers need for "more like this", and the whole path through a real embedded Chroma."""
from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from embedding import Classifiers
from embedding.embedders import Embedder, model_dim
from search import NO_RERANK, RerankSettings, Searcher, rerank
from vectorstore import StoreSettings, make_client
from vectorstore.store import Hit, ProductCollection

MODEL = "resnet18"
# The classifiers alone, without the neighbours' votes, for what only they decide.
CLASSIFIERS = RerankSettings(neighbours=0)
DIM = model_dim(MODEL)


def unit(*pairs, dim: int = DIM) -> np.ndarray:
    """A unit vector with the given (axis, value) components."""
    v = np.zeros(dim, dtype=np.float32)
    for axis, value in pairs:
        v[axis] = value
    return v / np.linalg.norm(v)


def prior_for(centres: dict[str, np.ndarray], target: str = "articleType", scale: float = 16.0) -> Classifiers:
    return Classifiers({target: {"labels": list(centres), "centres": np.stack(list(centres.values())), "scale": scale}})


def test_probabilities_are_a_softmax_of_scaled_cosines_to_the_centres():
    prior = prior_for({"Heels": unit((0, 1)), "Flats": unit((1, 1)), "Watches": unit((2, 1))})
    query = unit((0, 1), (1, 0.5))
    p = prior.probabilities(query * 3.0, "articleType")  # the length of the query does not matter
    assert sum(p.values()) == pytest.approx(1.0, abs=1e-6)
    cos = {"Heels": 1 / np.sqrt(1.25), "Flats": 0.5 / np.sqrt(1.25), "Watches": 0.0}
    expected = {k: np.exp(16 * c) for k, c in cos.items()}
    total = sum(expected.values())
    for label, value in expected.items():
        assert p[label] == pytest.approx(value / total, rel=1e-4)


def test_centres_that_do_not_match_their_labels_are_refused():
    with pytest.raises(ValueError, match="3 labels but centres of shape"):
        Classifiers({"articleType": {"labels": ["a", "b", "c"], "centres": np.ones((2, 4)), "scale": 16.0}})


def test_rerank_puts_the_likely_kind_first_keeps_cosine_order_within_it_and_the_scores():
    prior = prior_for({"Heels": unit((0, 1)), "Flats": unit((1, 1))})
    query = unit((0, 1), (1, 0.2))  # clearly Heels to the classifier
    hits = [Hit("f1", 0.95, {"articleType": "Flats"}), Hit("h1", 0.90, {"articleType": "Heels"}),
            Hit("f2", 0.89, {"articleType": "Flats"}), Hit("h2", 0.80, {"articleType": "Heels"})]
    ranked = rerank(hits, RerankSettings(weights={"articleType": 0.1}, neighbours=0), prior, query)
    assert [h.id for h in ranked] == ["h1", "h2", "f1", "f2"]
    assert {h.id: h.score for h in ranked} == {h.id: h.score for h in hits}  # shown as cosines still
    # A weight of zero, or labels this prior has no classifier for, leave the cosine order.
    for weights in ({"articleType": 0.0}, {"season": 1.0}):
        settings = RerankSettings(weights=weights, neighbours=0)
        assert [h.id for h in rerank(hits, settings, prior, query)] == ["f1", "h1", "f2", "h2"]


def test_a_hesitant_classifier_lets_the_closer_product_through():
    # Centres nearly alike: p(Heels) only a little above p(Flats), so the cosine decides.
    prior = prior_for({"Heels": unit((0, 1), (1, 0.9)), "Flats": unit((0, 0.9), (1, 1))})
    query = unit((0, 1), (1, 0.95))
    hits = [Hit("f1", 0.95, {"articleType": "Flats"}), Hit("h1", 0.80, {"articleType": "Heels"})]
    settings = RerankSettings(weights={"articleType": 0.1}, neighbours=0)
    assert [h.id for h in rerank(hits, settings, prior, query)] == ["f1", "h1"]


def test_a_label_the_classifier_never_learned_counts_as_uniform():
    prior = prior_for({"Heels": unit((0, 1)), "Flats": unit((1, 1))})
    query = unit((0, 1), (1, 1))  # exactly between: both 0.5, as is the uniform guess
    p = prior.likelihoods(query, "articleType", ["Heels", "Sandals", None])
    assert p == pytest.approx([0.5, 0.5, 0.5], abs=1e-6)


def test_rerank_settings_refuse_nonsense():
    with pytest.raises(ValueError, match="candidates"):
        RerankSettings(candidates=0)
    with pytest.raises(ValueError, match="weights"):
        RerankSettings(weights={"articleType": -1})
    with pytest.raises(ValueError, match="neighbours"):
        RerankSettings(neighbours=-1)
    with pytest.raises(ValueError, match="temperature"):
        RerankSettings(temperature=0)
    assert not NO_RERANK.enabled and RerankSettings().enabled
    # Votes need no classifiers; the classifiers alone need a weights file that has them.
    assert RerankSettings().labels_for(None) == ("articleType", "baseColour")
    assert CLASSIFIERS.labels_for(None) == () and NO_RERANK.labels_for(None) == ()
    prior = prior_for({"Heels": unit((0, 1)), "Flats": unit((1, 1))})
    assert RerankSettings().witnesses(None) == ("neighbours",)
    assert RerankSettings().witnesses(prior) == ("neighbours", "classifiers")
    assert CLASSIFIERS.witnesses(prior) == ("classifiers",) and NO_RERANK.witnesses(prior) == ()


def test_the_nearest_products_labels_outvote_a_single_closest_one():
    """Without classifiers (ImageNet or random weights): one Flats product a little closer than
    four Heels is put after them; a Watch far off is not brought up by anything."""
    hits = [Hit("f1", 0.95, {"articleType": "Flats"})] + [
        Hit(f"h{i}", 0.93 - 0.005 * i, {"articleType": "Heels"}) for i in range(4)] + [
        Hit("w1", 0.60, {"articleType": "Watches"})]
    ranked = [h.id for h in rerank(hits, RerankSettings(weights={"articleType": 0.05}))]
    assert ranked == ["h0", "h1", "h2", "h3", "f1", "w1"]
    # Votes fade with distance: a much closer Flats keeps its place against the same four.
    hits[0] = Hit("f1", 0.99, {"articleType": "Flats"})
    assert [h.id for h in rerank(hits, RerankSettings(weights={"articleType": 0.05}))][0] == "f1"
    # Only the nearest `neighbours` vote: with one voter, the Flats one wins its own vote.
    hits[0] = Hit("f1", 0.95, {"articleType": "Flats"})
    assert [h.id for h in rerank(hits, RerankSettings(weights={"articleType": 0.05}, neighbours=1))][0] == "f1"


def test_votes_and_classifiers_multiply():
    """The Heels vote of the neighbours is overruled by a classifier sure it sees Flats, and a
    product without the label is neither pushed down nor brought up by it."""
    prior = prior_for({"Heels": unit((0, 1)), "Flats": unit((1, 1))})
    flats_query = unit((1, 1), (0, 0.1))
    hits = [Hit(f"h{i}", 0.93 - 0.005 * i, {"articleType": "Heels"}) for i in range(3)] + [
        Hit("f1", 0.91, {"articleType": "Flats"}), Hit("x", 0.925, {})]
    settings = RerankSettings(weights={"articleType": 0.05})
    assert [h.id for h in rerank(hits, settings)][:3] == ["h0", "h1", "h2"]
    with_classifier = [h.id for h in rerank(hits, settings, prior, flats_query)]
    assert with_classifier[0] == "f1"
    assert with_classifier.index("x") < with_classifier.index("h0")


# --- through a real embedded Chroma -------------------------------------------------------

FLATS = [f"f{i}" for i in range(3)]
HEELS = [f"h{i}" for i in range(3)]


def _embedder(weights_id: str, prior: Classifiers | None) -> Embedder:
    # The vectors are written and queried by hand; only the weights identity and the
    # classifiers of an embedder matter to these searches.
    return Embedder(MODEL, nn.Identity(), lambda image: image, weights_id, DIM, classifiers=prior)


@pytest.fixture()
def store(tmp_path):
    """Flats nearer the query than Heels, and Watches far off; the classifier says Heels."""
    client = make_client(StoreSettings(path=tmp_path / "chroma"))
    collection = ProductCollection.open(client, MODEL, weights_id="file:tuned", dim=DIM, create=True)
    vectors, ids, metadatas = [], [], []
    for i, pid in enumerate(FLATS):
        vectors.append(unit((0, 1), (10 + i, 0.3))), ids.append(pid), metadatas.append({"articleType": "Flats"})
    for i, pid in enumerate(HEELS):
        vectors.append(unit((0, 1), (20 + i, 0.7))), ids.append(pid), metadatas.append({"articleType": "Heels"})
    for i in range(6):
        vectors.append(unit((0, -1), (30 + i, 0.5))), ids.append(f"w{i}"), metadatas.append({"articleType": "Watches"})
    collection.write(ids, np.stack(vectors), metadatas)
    collection.ensure_centered()
    prior = prior_for({"Heels": unit((0, 1), (5, 1)), "Flats": unit((0, 1), (6, 1)), "Watches": unit((0, -1))})
    return client, prior


def test_search_reranks_with_the_classifiers_and_says_so(store):
    client, prior = store
    query = unit((0, 1), (5, 0.4))
    plain = Searcher(client, embedders={MODEL: _embedder("file:tuned", prior)}, rerank=NO_RERANK)
    answer = plain.search_vector(MODEL, query, k=3)
    assert [r.id for r in answer.results][0] in FLATS and answer.reranked_by == ()
    # A weight above the defaults: these hand-made vectors are further apart than a catalog's.
    strong = RerankSettings(weights={"articleType": 0.5}, neighbours=0)
    reranked = Searcher(client, embedders={MODEL: _embedder("file:tuned", prior)}, rerank=strong)
    answer = reranked.search_vector(MODEL, query, k=3)
    assert {r.id for r in answer.results} == set(HEELS) and answer.reranked_by == ("articleType",)
    assert [r.score for r in answer.results] == sorted((r.score for r in answer.results), reverse=True)
    # Filters still hold: the reordered candidates are those Chroma gives under the filter.
    answer = reranked.search_vector(MODEL, query, k=3, filters={"articleType": ["Flats"]})
    assert {r.id for r in answer.results} == set(FLATS)
    # Weights without classifiers (ImageNet, random) search by cosine alone.
    bare = Searcher(client, embedders={MODEL: _embedder("file:tuned", None)}, rerank=strong)
    assert bare.search_vector(MODEL, query, k=3).reranked_by == ()


def test_more_like_this_reranks_from_the_stored_vector_only_with_the_weights_that_made_it(store):
    client, prior = store
    searcher = Searcher(client, embedders={MODEL: _embedder("file:tuned", prior)}, rerank=CLASSIFIERS)
    answer = searcher.similar_to(MODEL, "f0", k=3)
    assert answer.reranked_by == ("articleType",) and "f0" not in [r.id for r in answer.results]
    # The classifiers judge the embedder's vector that the stored, centered one was made from.
    collection = ProductCollection.open(client, MODEL)
    assert float(collection.unprepare(collection.vector_of("f0")) @ unit((0, 1), (10, 0.3))) == pytest.approx(1, abs=1e-5)
    other = Searcher(client, embedders={MODEL: _embedder("file:other", prior)}, rerank=CLASSIFIERS)
    assert other.similar_to(MODEL, "f0", k=3).reranked_by == ()
    # The votes need no classifiers: with the defaults, other weights still reorder by them.
    voted = Searcher(client, embedders={MODEL: _embedder("file:other", prior)}).similar_to(MODEL, "f0", k=3)
    assert voted.reranked_by == ("articleType", "baseColour") and {r.id for r in voted.results[:2]} == {"f1", "f2"}


def test_unprepare_gives_back_the_unit_vector_before_centering(tmp_path):
    rng = np.random.default_rng(0)
    client = make_client(StoreSettings(path=tmp_path / "chroma"))
    collection = ProductCollection.open(client, MODEL, weights_id="w", dim=DIM, create=True)
    vectors = rng.normal(size=(40, DIM)).astype(np.float32) + 3.0  # one dominant direction, as CNN features
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    collection.write([str(i) for i in range(40)], vectors, [{"articleType": "x"}] * 40)
    collection.ensure_centered()
    assert collection.center is not None
    for i in (0, 17, 39):
        back = collection.unprepare(collection.vector_of(str(i)))
        assert float(back @ vectors[i]) == pytest.approx(1.0, abs=1e-5)
