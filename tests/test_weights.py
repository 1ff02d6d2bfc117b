import numpy as np
import pytest
import torch

from embedding import WeightsChoice, WeightsError, load_embedder
from embedding.architectures import architecture
from tests.conftest import draw_product


def test_random_weights_are_seeded_and_vectors_are_unit(embedders):
    again = load_embedder("resnet18", "random")
    image = draw_product(1, (200, 0, 0), "circle")
    a, b = embedders["resnet18"].embed([image]), again.embed([image])
    assert a.shape == (1, 512) and a.dtype == np.float32
    assert np.allclose(a, b, atol=1e-6)
    assert abs(np.linalg.norm(a[0]) - 1) < 1e-5
    other = load_embedder("resnet18", "random:1").embed([image])
    assert not np.allclose(a, other, atol=1e-3)
    assert embedders["resnet50"].embed([image]).shape == (1, 2048)


def test_frozen_runner_matches_eager_network(embedders):
    embedder = embedders["resnet18"]
    batch = torch.rand(3, 3, 224, 224)
    with torch.inference_mode():
        eager = torch.nn.functional.normalize(embedder.network(batch), dim=1).numpy()
    assert np.allclose(embedder.embed_preprocessed(batch), eager, atol=1e-4)


def test_local_weights_file_plain_state_dict(tmp_path, embedders):
    network = architecture("resnet18").backbone()
    path = tmp_path / "resnet18.pth"
    torch.save(network.state_dict(), path)
    embedder = load_embedder("resnet18", str(path))
    assert embedder.weights_id.startswith("file:resnet18.pth:")
    with pytest.raises(WeightsError, match="does not fit resnet50"):
        load_embedder("resnet50", str(path))


def test_file_made_for_another_model_is_refused(tmp_path):
    path = tmp_path / "ft.pt"
    torch.save({"model": "resnet34", "state_dict": architecture("resnet34").backbone().state_dict()}, path)
    with pytest.raises(WeightsError, match="holds weights for resnet34, not resnet18"):
        load_embedder("resnet18", str(path))


def test_garbage_file_and_missing_file(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"junk")
    with pytest.raises(WeightsError, match="not a PyTorch weights file"):
        load_embedder("resnet18", str(path))
    with pytest.raises(WeightsError, match="no such file"):
        WeightsChoice.parse(str(tmp_path / "absent.pth"))


def test_offline_imagenet_is_one_clear_message(tmp_path, monkeypatch):
    # An empty hub cache and no network: torchvision's own download must fail into our message.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.hub.set_dir(str(tmp_path / "hub"))
    with pytest.raises(WeightsError) as err:
        load_embedder("resnet18", "imagenet")
    message = str(err.value)
    assert "--weights" in message and "resnet18-" in message and "auto" in message
