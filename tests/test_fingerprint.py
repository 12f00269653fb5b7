"""The demo's fingerprints: they follow the numbers a later step reads, not the file around them."""
import numpy as np
import torch

from common.workdir import save_pickle
from demo.fingerprint import checkpoint_fingerprint, knn_fingerprint, vectors_fingerprint


def test_vectors_and_neighbours_ignore_the_record_and_see_one_changed_number(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((20, 8)).astype(np.float32)
    neighbors = rng.integers(0, 20, (20, 5)).astype(np.int32)
    distances = rng.random((20, 5)).astype(np.float32)
    ids = [f"d{i}" for i in range(20)]
    prints = {}
    for name, record in (("a", {"made": "here"}), ("b", {"made": "elsewhere", "path": "/x"})):
        save_pickle({"ids": ids, "vectors": vectors, "provenance": record}, tmp_path / f"v{name}")
        save_pickle({"ids": ids, "neighbors": neighbors, "distances": distances, "space": "l2",
                     "provenance": record}, tmp_path / f"k{name}")
        prints[name] = (vectors_fingerprint(tmp_path / f"v{name}"), knn_fingerprint(tmp_path / f"k{name}"))
    assert prints["a"] == prints["b"]
    assert all(len(p) == 12 for p in prints["a"])

    nudged = vectors.copy()
    nudged[3, 4] = np.nextafter(nudged[3, 4], np.float32(np.inf))   # one unit in the last place
    save_pickle({"ids": ids, "vectors": nudged}, tmp_path / "v")
    assert vectors_fingerprint(tmp_path / "v") != prints["a"][0]
    swapped = neighbors.copy()
    swapped[0, [1, 2]] = swapped[0, [2, 1]]
    save_pickle({"ids": ids, "neighbors": swapped, "distances": distances}, tmp_path / "k")
    assert knn_fingerprint(tmp_path / "k") != prints["a"][1]


def test_a_checkpoint_is_known_by_its_weights_alone(tmp_path):
    weights = {"a.weight": torch.randn(4, 3), "b.bias": torch.randn(4).to(torch.bfloat16)}
    torch.save({"model": weights, "model_config": {"arch": "x"}, "vocab": ["w"], "epoch": 1},
               tmp_path / "one.pt")
    torch.save({"model": dict(reversed(weights.items())), "model_config": {"arch": "x"},
                "vocab": ["w"], "epoch": 7, "optimizer": {"lr": 0.1}}, tmp_path / "two.pt")
    assert checkpoint_fingerprint(tmp_path / "one.pt") == checkpoint_fingerprint(tmp_path / "two.pt")
    changed = {**weights, "a.weight": weights["a.weight"].clone()}
    changed["a.weight"][0, 0] += 1e-6
    torch.save({"model": changed, "model_config": {}, "vocab": []}, tmp_path / "three.pt")
    assert checkpoint_fingerprint(tmp_path / "three.pt") != checkpoint_fingerprint(tmp_path / "one.pt")
