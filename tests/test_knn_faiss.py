"""faiss backends against the exact one, self first with duplicates, blocked queries, IVF
settings, --deterministic, the GPU branch, and the kNN step's provenance across backends."""
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import data.neighbors.knn_faiss as kf
from conftest import cli, one_line_error
from common.errors import InputError
from data.datasets import provenance
from data.neighbors.knn import exact_knn, recall_at
from data.neighbors.knn_faiss import BACKENDS, SettingsError, faiss_knn, ivf_settings, pq_parts

ROOT = Path(__file__).resolve().parent.parent
KNN = "knn_document_features.py"


def clustered(n: int = 1200, dim: int = 24, clusters: int = 12, seed: int = 0) -> np.ndarray:
    """Tight clusters far apart: the shape of Doc2Vec vectors of a topical corpus, on which IVF's
    lists and HNSW's graph find every true neighbour."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)) * 6
    return (centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim))).astype(np.float32)


def same_up_to_ties(ids, dists, e_ids, e_dists, tol=1e-4, tie=1e-5):
    """Distances equal to `tol`, and ids equal wherever the exact distance has no other within
    `tie` (float32 rounding of the two searches' sums can swap those)."""
    np.testing.assert_allclose(dists, e_dists, rtol=tol, atol=tol)
    padded = np.concatenate([np.full((len(e_dists), 1), -np.inf), e_dists,
                             np.full((len(e_dists), 1), np.inf)], axis=1)
    gap = np.diff(padded, axis=1)
    clear = np.minimum(gap[:, :-1], gap[:, 1:]) > tie
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(ids[clear], e_ids[clear])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("space", ["l2", "cosinesimil"])
def test_each_faiss_backend_matches_the_exact_one(backend, space):
    x = clustered()
    e_ids, e_dists = exact_knn(x, 30, space, "cpu", progress=False)
    # faiss-ivfpq's codes choose k x refine candidates: 120 hold every clustermate (~100).
    ids, dists = faiss_knn(x, 30, space, backend, threads=2, progress=False, refine=4)
    assert ids.dtype == np.int32 and dists.dtype == np.float32 and ids.shape == (1200, 30)
    assert (np.diff(dists, axis=1) >= 0).all()
    same_up_to_ties(ids, dists, e_ids, e_dists)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("space", ["l2", "cosinesimil"])
def test_duplicates_tie_at_zero_and_self_comes_first(backend, space):
    x = clustered(400, 8, 4, seed=4)
    x[10:14] = x[10]   # four identical documents (the same text infers the same vector)
    x[200:202] = x[200]
    ids, dists = faiss_knn(x, 8, space, backend, threads=1, progress=False)
    assert (ids[:, 0] == np.arange(400)).all() and (dists[:, 0] == 0).all()
    for i in range(10, 14):
        assert sorted(ids[i, :4]) == [10, 11, 12, 13]
        assert (dists[i, :4] == 0).all() and dists[i, 4] > 1e-4
    assert ids[201, 1] == 200 and dists[201, 1] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_blocks_of_queries_give_the_one_block_result(backend, monkeypatch):
    x = clustered(700)
    whole = faiss_knn(x, 20, "l2", backend, build_threads=1, progress=False)
    monkeypatch.setattr(kf, "QUERY_ROWS", 64)
    blocks = faiss_knn(x, 20, "l2", backend, build_threads=1, progress=False)
    np.testing.assert_array_equal(blocks[0], whole[0])
    np.testing.assert_array_equal(blocks[1], whole[1])


def test_ivf_rows_answered_short_are_searched_exactly(capsys):
    # 7 lists of ~40 vectors and one visited: a query cannot find 100 neighbours in its list.
    x = clustered(300, 16, 3)
    ids, dists = faiss_knn(x, 100, "l2", "faiss-ivf", nlist=7, nprobe=1, progress=False)
    e_ids, e_dists = exact_knn(x, 100, "l2", "cpu", progress=False)
    assert "faiss-ivf returned fewer than 100 neighbours for" in capsys.readouterr().out
    same_up_to_ties(ids, dists, e_ids, e_dists)


def test_ivf_defaults_come_from_n_and_bad_settings_are_refused():
    assert ivf_settings(1_000_000) == (4000, 16, 200_000)
    assert ivf_settings(97_998) == (1252, 16, 62_600)
    assert ivf_settings(1000) == (25, 16, 1000)       # at most N / 39 lists, N training vectors
    assert ivf_settings(100) == (2, 2, 100)
    assert ivf_settings(10_000, nlist=50, nprobe=5, train_size=2000) == (50, 5, 2000)
    for kw, phrase in [({"nlist": 101}, "--nlist 101"), ({"nlist": 0}, "--nlist 0"),
                       ({"nprobe": 0}, "--nprobe 0"), ({"nlist": 10, "nprobe": 11}, "--nprobe 11"),
                       ({"nlist": 10, "train_size": 9}, "--ivf-train-size 9"),
                       ({"train_size": 101}, "--ivf-train-size 101")]:
        with pytest.raises(SettingsError, match=phrase):
            ivf_settings(100, **kw)
    # faiss-ivfpq: the same lists, 8% of them visited (at least 16, at most all).
    assert ivf_settings(1_000_000, pq=True) == (4000, 320, 200_000)
    assert ivf_settings(97_998, pq=True) == (1252, 101, 62_600)
    assert ivf_settings(1000, pq=True) == (25, 16, 1000)
    assert ivf_settings(100, pq=True) == (2, 2, 100)
    with pytest.raises(SettingsError, match="--ivf-train-size vectors \\(10\\)"):
        ivf_settings(100, nlist=2, train_size=10, pq=True)   # 16 centroids per sub-vector
    assert (pq_parts(200), pq_parts(16), pq_parts(33)) == (100, 8, 33)


def test_ivfpq_reranks_exactly_and_refine_widens_what_its_codes_choose(capfd):
    # Random, uncrowded directions: the codes alone misorder near ties, the exact re-ranking of
    # k x refine candidates fixes the distances; more candidates find more true neighbours.
    x = np.random.default_rng(2).standard_normal((3000, 24)).astype(np.float32)
    e_ids, e_dists = exact_knn(x, 20, "l2", "cpu", progress=False)
    found = []
    for refine in (1, 8):
        ids, dists = faiss_knn(x, 20, "l2", "faiss-ivfpq", refine=refine, nprobe=76,
                               build_threads=1, progress=False)
        hit = ids == e_ids   # every list visited: only the codes and the re-ranking decide
        np.testing.assert_allclose(dists[hit], e_dists[hit], rtol=1e-5, atol=1e-5)
        assert (np.diff(dists, axis=1) >= 0).all()
        found.append(recall_at(dists, e_dists, 20))
    assert found[0] < 0.6 and found[1] > 0.95
    with pytest.raises(SettingsError, match="--refine 0"):
        faiss_knn(x, 20, "l2", "faiss-ivfpq", refine=0, progress=False)
    capfd.readouterr()
    faiss_knn(x[:500], 20, "l2", "faiss-ivfpq", progress=False)   # 500 < 39 x 16 to train on
    out = capfd.readouterr()
    assert out.out.count("fewer than the 624 its code books want") == 1 and "WARNING" not in out.err


@pytest.mark.parametrize("backend", ["faiss-ivf", "faiss-ivfpq", "faiss-hnsw"])
def test_one_thread_builds_are_the_same_every_run(backend):
    x = clustered(800)
    a = faiss_knn(x, 15, "l2", backend, threads=2, build_threads=1, seed=3, progress=False)
    b = faiss_knn(x, 15, "l2", backend, threads=1, build_threads=1, seed=3, progress=False)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


class FakeGpuFaiss:
    """faiss with a 'GPU' that is the CPU index: exercises the GPU branch on a CPU machine."""

    def __init__(self, real):
        self.real, self.moved = real, []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def get_num_gpus(self):
        return 1

    def StandardGpuResources(self):
        return object()

    def index_cpu_to_gpu(self, res, device, index):
        self.moved.append((device, type(index).__name__))
        return index


def test_gpu_branch_moves_the_flat_index_and_gives_the_cpu_result(monkeypatch):
    import faiss
    fake = FakeGpuFaiss(faiss)
    monkeypatch.setitem(sys.modules, "faiss", fake)
    x = clustered(500)
    on_gpu = faiss_knn(x, 10, "l2", "faiss-exact", gpu=True, progress=False)
    assert fake.moved == [(0, "IndexFlatL2")] and kf.faiss_gpu_count() == 1
    monkeypatch.setitem(sys.modules, "faiss", faiss)
    on_cpu = faiss_knn(x, 10, "l2", "faiss-exact", progress=False)
    np.testing.assert_array_equal(on_gpu[0], on_cpu[0])
    with pytest.raises(SettingsError, match="at most 2048"):
        monkeypatch.setitem(sys.modules, "faiss", fake)
        faiss_knn(clustered(2500), 2000, "l2", "faiss-exact", gpu=True, progress=False)


# --- the script -----------------------------------------------------------------------------

@pytest.fixture
def work(tmp_path):
    """A work folder with a vectors file of 600 clustered vectors and its record."""
    x = clustered(600, 16, 6, seed=5)
    with open(tmp_path / "doc2vec_features.pickle", "wb") as f:
        pickle.dump({"ids": [f"d{i}" for i in range(600)], "vectors": x,
                     provenance.KEY: provenance.new_record({"items": 600}, "vectors", {"v": 1})}, f)
    return tmp_path


def knn(work, *args, check=True):
    return cli(KNN, "--dataset", work / "none.jsonl", "--work-dir", work, "--workers", "1",
               "--k", "12", *args, check=check)


def read(work):
    with open(work / "document_feats_knn.pickle", "rb") as f:
        return pickle.load(f)


@pytest.mark.parametrize("backend", BACKENDS)
def test_script_writes_the_exact_backends_file_with_recall_and_settings(work, backend):
    knn(work, "--backend", "exact")
    exact = read(work)
    # faiss-ivfpq's codes choose k x refine candidates: 120 hold every clustermate (100).
    r = knn(work, "--backend", backend, *(["--refine", "10"] if backend == "faiss-ivfpq" else []))
    got = read(work)
    assert got["backend"] == backend and got["ids"] == exact["ids"] and got["space"] == "l2"
    same_up_to_ties(got["neighbors"], got["distances"], exact["neighbors"], exact["distances"])
    settings = got[provenance.KEY]["steps"]["knn"]
    if backend == "faiss-exact":
        assert settings == {"k": 12, "backend": backend, "space": "l2", "device": "cpu"}
        assert "recall@" not in r.out
    else:
        assert f"{backend} recall@10 against exact on 600 queries: 1.0000" in r.out
    if backend == "faiss-ivf":
        assert settings == {"k": 12, "backend": backend, "space": "l2", "nlist": 15, "nprobe": 15,
                            "ivf_train_size": 600, "seed": 0, "deterministic": False}
    if backend == "faiss-ivfpq":
        assert settings == {"k": 12, "backend": backend, "space": "l2", "nlist": 15, "nprobe": 15,
                            "ivf_train_size": 600, "seed": 0, "deterministic": False,
                            "refine": 10, "pq_parts": 8}
    if backend == "faiss-hnsw":
        assert settings["M"] == 16 and settings["ef_search"] == 400


def knn_step(work):
    return read(work)[provenance.KEY]


def test_provenance_refuses_another_backends_file_only_where_neighbours_differ(work):
    """A training resumed beside a remade kNN file compares the two records (check_steps)."""
    def compare(made, now):
        provenance.check_steps(made, now, "last.pt", "document_feats_knn.pickle")

    knn(work, "--backend", "exact")
    exact = knn_step(work)
    knn(work, "--backend", "faiss-exact", "--deterministic")
    compare(exact, knn_step(work))                    # exact is exact, whoever searched
    compare(knn_step(work), exact)
    knn(work, "--backend", "faiss-ivf", "--nprobe", "4")
    ivf4 = knn_step(work)
    knn(work, "--backend", "faiss-ivf", "--nprobe", "4", "--workers", "2")
    compare(ivf4, knn_step(work))                     # threads change nothing
    knn(work, "--backend", "faiss-ivf", "--nprobe", "6")
    with pytest.raises(InputError, match="with --nprobe 4, but document_feats_knn.pickle comes "
                                         "from --nprobe 6"):
        compare(ivf4, knn_step(work))
    knn(work, "--backend", "faiss-ivf", "--nprobe", "4", "--seed", "1")
    with pytest.raises(InputError, match="--seed 0"):
        compare(ivf4, knn_step(work))
    with pytest.raises(InputError, match="--backend exact"):
        compare(exact, ivf4)
    knn(work, "--backend", "faiss-ivfpq", "--nprobe", "4")
    pq = knn_step(work)
    with pytest.raises(InputError, match="--backend faiss-ivf"):
        compare(ivf4, pq)                             # codes and re-ranking: other neighbours
    knn(work, "--backend", "faiss-ivfpq", "--nprobe", "4", "--refine", "3")
    with pytest.raises(InputError, match="--refine 2"):
        compare(pq, knn_step(work))
    knn(work, "--backend", "hnsw")
    nmslib = knn_step(work)
    knn(work, "--backend", "faiss-hnsw")
    with pytest.raises(InputError, match="--backend hnsw"):
        compare(nmslib, knn_step(work))               # another library's graph


@pytest.mark.parametrize("flags, phrases", [
    (["--nprobe", "0"], ["--nprobe: invalid whole number value: '0'"]),
    (["--nlist", "601"], ["--nlist 601", "600 documents"]),
    (["--nlist", "10", "--nprobe", "11"], ["--nprobe 11", "--nlist (10)"]),
    (["--ivf-train-size", "5000"], ["--ivf-train-size 5000"]),
])
def test_bad_ivf_settings_are_one_line_before_any_work(work, monkeypatch, flags, phrases):
    def no_search(*a, **k):
        raise AssertionError("the search ran")
    monkeypatch.setattr(kf, "faiss_knn", no_search)
    r = knn(work, "--backend", "faiss-ivf", *flags, check=False)
    if flags[:2] == ["--nprobe", "0"]:   # argparse's own line, after the usage
        assert r.code == 2 and phrases[0].split(":")[0] in r.err and "pass a whole number" in r.err
    else:
        one_line_error(r, *phrases)
    assert not (work / "document_feats_knn.pickle").exists()


def test_gpu_requests_without_a_gpu_faiss_and_deterministic_on_the_gpu(work, monkeypatch):
    one_line_error(knn(work, "--backend", "faiss-exact", "--device", "cuda", check=False),
                   "no GPU support", "--backend exact")
    monkeypatch.setattr(kf, "faiss_gpu_count", lambda: 1)
    one_line_error(knn(work, "--backend", "faiss-exact", "--device", "cuda", "--deterministic",
                       check=False), "--deterministic", "--device cpu")
    monkeypatch.setattr(kf, "faiss_gpu_count", lambda: 0)
    monkeypatch.setattr(kf, "cuda_present", lambda: True)
    r = knn(work, "--backend", "faiss-exact")
    assert r.out.splitlines()[0] == ("a GPU is present but faiss here is a CPU build: --backend "
                                     "exact runs the same exact search on the GPU with torch")
    assert knn_step(work)["steps"]["knn"]["device"] == "cpu"


def test_the_faiss_step_does_not_load_torch(work):
    probe = ("import runpy, sys; sys.argv = ['knn_document_features.py'] + sys.argv[1:]; "
             "runpy.run_path('knn_document_features.py', run_name='__main__')")
    probe += "\nprint('torch loaded:', 'torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", probe, "--dataset", str(work / "none.jsonl"),
                        "--work-dir", str(work), "--k", "5", "--workers", "1", "--backend",
                        "faiss-ivf"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith("torch loaded: False")


def test_a_k_beyond_faiss_gpu_selection_is_one_line(tmp_path, monkeypatch):
    import faiss
    work = tmp_path
    with open(work / "doc2vec_features.pickle", "wb") as f:
        pickle.dump({"ids": [f"d{i}" for i in range(2500)], "vectors": clustered(2500, 4),
                     provenance.KEY: provenance.new_record({"items": 2500}, "vectors", {})}, f)
    monkeypatch.setitem(sys.modules, "faiss", FakeGpuFaiss(faiss))
    monkeypatch.setattr(kf, "faiss_gpu_count", lambda: 1)
    r = cli(KNN, "--dataset", work / "none.jsonl", "--work-dir", work, "--workers", "1",
            "--k", "1900", "--backend", "faiss-exact", "--device", "cuda", check=False)
    one_line_error(r, "--k 1900", "at most 2048", "--device cpu")
