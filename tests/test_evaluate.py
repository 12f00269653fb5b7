"""evaluate_retrieval.py end to end on a checkpoint trained here, and its building blocks."""
import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.errors import InputError
import config
from data.datasets.items import Item
from data.text.doc2vec import infer_vectors
from data.text.preprocess import preprocess
from evaluation.embed import (device_and_precision, embed_images, embed_texts,
                             with_checkpoint_defaults)
from evaluation.metrics import retrieval_metrics, summarize
from evaluation.neighborhood import knn_overlap
from evaluation.names import metrics_path, run_names
from evaluation.report import evaluate_embeddings, format_table
from evaluation.split import integer_labels, load_split, without_unreadable
from conftest import RUN, cli, one_line_error, train_tiny
from data.images.read import read_image
from models.backbones import IMAGENET
from models import ModelConfig, Vocabulary, build_model, pad_batch
from models.checkpoint import load_checkpoint, rebuild

TOP_KEYS = {"i2t", "t2i", "rsum", "n_images", "n_texts", "ties", "neighborhood",
            "label_precision@10"}
DIRECTION_KEYS = {"r1", "r5", "r10", "medr", "meanr"}
TEXTS_PER_ITEM = 2


@pytest.fixture(scope="module")
def trained(module_tmp):
    root = module_tmp("eval")
    # Evaluated by the trainer too, in its process: compared below with evaluate_retrieval.py.
    return train_tiny(root, texts_per_item=TEXTS_PER_ITEM, seed=3,
                      then=["--out", root / "then test.json", "--save-ranks"])


def manifest_records(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


def write_manifest(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# --- end to end -------------------------------------------------------------------------------

def test_the_trainers_then_evaluate_gives_evaluate_retrievals_numbers(trained, tmp_path):
    manifest, work, best = trained
    then = json.loads((work.parent / "then test.json").read_text())
    then_ranks = dict(np.load(best.parent / "per_query_test.npz"))
    cli("evaluate_retrieval.py", "--checkpoint", best, "--out", tmp_path / "alone.json",
        "--save-ranks")
    assert then == json.loads((tmp_path / "alone.json").read_text())
    alone_ranks = np.load(best.parent / "per_query_test.npz")
    assert set(then_ranks) == set(alone_ranks)
    for key, values in then_ranks.items():
        assert np.array_equal(values, alone_ranks[key]), key


def test_then_evaluate_flags_are_checked_before_training(trained, tmp_path):
    manifest, work, best = trained
    common = ["1", "0", "0", "--dataset", manifest, "--work-dir", work, "--log-dir", tmp_path / "r"]
    for flags, phrase in (("--split nowhere", "--split: invalid choice"),
                          ("--checkpoint x.pt", "leave --checkpoint out"),
                          ("--out 'unclosed", "No closing quotation"),
                          (f"--out {tmp_path}", "is a folder")):
        result = cli("train_cross_modal_retrieval_model.py", *common, f"--then-evaluate={flags}",
                     check=False)
        assert result.code == 2 and phrase in result.err, result.err
        assert "--then-evaluate" in result.err.strip().splitlines()[-1], result.err
    assert not (tmp_path / "r").exists()    # refused before the folder was claimed
    # What a run does after training is not a setting of the run: a resume may change it.
    assert "then_evaluate" not in load_checkpoint(best)["config"]

def test_metrics_json_table_and_saved_embeddings_agree(trained):
    manifest, work, best = trained
    result = cli("evaluate_retrieval.py", "--checkpoint", best, "--workers", "0",
                 "--batch-size", "7", "--projector")
    metrics = json.loads((best.parent / "metrics.json").read_text())
    assert set(metrics) == TOP_KEYS     # fewer than 2,000 images: no 1K folds
    assert set(metrics["i2t"]) == set(metrics["t2i"]) == DIRECTION_KEYS
    assert set(metrics["neighborhood"]) == {"image_overlap@10", "text_overlap@10"}
    assert set(metrics["label_precision@10"]) == {"i2t", "t2i", "i2i", "t2t"}
    test = [r for r in manifest_records(manifest) if r["split"] == "test"]
    assert metrics["n_images"] == len(test)
    assert metrics["n_texts"] == TEXTS_PER_ITEM * len(test)

    rows = {line.split("  ")[0].strip(): line.split()[-1] for line in result.out.splitlines()
            if "  " in line}
    assert rows["i2t R@10"] == f"{metrics['i2t']['r10']:.1f}"
    assert rows["t2i meanr"] == f"{metrics['t2i']['meanr']:.1f}"
    assert rows["text overlap@10"] == f"{metrics['neighborhood']['text_overlap@10']:.3f}"
    assert rows["metric"] == RUN

    # The saved embeddings are those the metrics were computed from.
    folder = best.parent / "embeddings_test"
    images = torch.from_numpy(np.load(folder / "images.npy"))
    texts = torch.from_numpy(np.load(folder / "texts.npy"))
    text_image = torch.from_numpy(np.load(folder / "text_image.npy"))
    ids = json.loads((folder / "ids.json").read_text())
    assert ids["images"] == [r["id"] for r in test]
    assert ids["texts"] == [f"{r['id']}#{j}" for r in test for j in range(TEXTS_PER_ITEM)]
    assert text_image.tolist() == [i for i in range(len(test)) for _ in range(TEXTS_PER_ITEM)]
    assert torch.allclose(images.norm(dim=1), torch.ones(len(test)), atol=1e-5)
    again = retrieval_metrics(images, texts, text_image)
    for d in ("i2t", "t2i"):
        assert again[d] == pytest.approx(metrics[d])

    # ... and they are the model's own output for each image and text, one at a time.
    model, vocab = rebuild(load_checkpoint(best))
    with torch.no_grad():
        img = model.embed_images(IMAGENET.normalize(read_image(ids["image_paths"][5], 32)[None]))
        tokens = vocab.encode(preprocess(test[5]["texts"][1]), config.MAX_TOKENS)
        txt = model.embed_texts(*pad_batch([tokens]))
    assert torch.allclose(img[0], images[5], atol=1e-5)
    assert torch.allclose(txt[0], texts[2 * 5 + 1], atol=1e-5)

    # Neighbourhood: one document per image, its first text, against inferred Doc2Vec vectors.
    first = [preprocess(r["texts"][0]) for r in test]
    reference = torch.from_numpy(infer_vectors(str(work / "doc2vec_model.gensim"), first))
    assert knn_overlap(reference, images, 10) == pytest.approx(
        metrics["neighborhood"]["image_overlap@10"])
    assert knn_overlap(reference, texts[::2], 10) == pytest.approx(
        metrics["neighborhood"]["text_overlap@10"])

    projector = folder / "projector"
    assert (projector / "projector_config.pbtxt").is_file()
    for tag in ("images", "texts"):
        for name in ("sprite.png", "metadata.tsv", "tensors.tsv"):
            assert (projector / "00000" / tag / name).is_file()
    assert len((projector / "00000" / "texts" / "metadata.tsv").read_text().splitlines()) \
        == 1 + TEXTS_PER_ITEM * len(test)


def test_two_checkpoints_side_by_side_in_one_file(trained, tmp_path):
    _, _, best = trained
    copy = tmp_path / "l_i2t_l_sym_1_l_img_0_l_text_0" / "best.pt"
    copy.parent.mkdir()
    shutil.copy(best, copy)
    out = tmp_path / "both.json"
    result = cli("evaluate_retrieval.py", "--checkpoint", best, "--checkpoint", copy,
                 "--out", out, "--workers", "0")
    both = json.loads(out.read_text())
    assert list(both) == [RUN, "l_i2t_l_sym_1_l_img_0_l_text_0"]
    assert both[RUN] == both["l_i2t_l_sym_1_l_img_0_l_text_0"]   # the same weights, twice
    assert not (copy.parent / "metrics.json").exists()
    lines = result.out.splitlines()
    header = next(line for line in lines if line.startswith("metric"))
    assert header.split() == ["metric", RUN, "l_i2t_l_sym_1_l_img_0_l_text_0"]
    r1 = next(line for line in lines if line.startswith("i2t R@1 "))
    assert r1.split()[-2] == r1.split()[-1] == f"{both[RUN]['i2t']['r1']:.1f}"


def test_saved_per_query_values_give_back_every_metric(trained, tmp_path):
    manifest, _, best = trained
    out = {}
    for ties in ("stable", "worst"):
        out[ties] = tmp_path / f"{ties}.json"
        result = cli("evaluate_retrieval.py", "--checkpoint", best, "--split", "val",
                     "--ties", ties, "--save-ranks", "--out", out[ties], "--workers", "0")
        assert f"ties (--ties {ties}): " in result.out
        assert (best.parent / "per_query_val.npz").is_file()
        per = dict(np.load(best.parent / "per_query_val.npz"))
        metrics = json.loads(out[ties].read_text())
        val = [r for r in manifest_records(manifest) if r["split"] == "val"]
        assert metrics["n_images"] == len(val) == len(per["rank_i2t"])
        assert metrics["ties"]["rule"] == ties
        again = summarize(torch.from_numpy(per["rank_i2t"]), torch.from_numpy(per["rank_t2i"]))
        for d in ("i2t", "t2i"):
            assert again[d] == pytest.approx(metrics[d])
        assert per["text_image"].tolist() == [i for i in range(len(val))
                                              for _ in range(TEXTS_PER_ITEM)]
        n = len(val)
        assert per["image_overlap_hits"].sum() / (10 * n) == pytest.approx(
            metrics["neighborhood"]["image_overlap@10"])
        for d, rows in (("i2t", n), ("t2i", TEXTS_PER_ITEM * n), ("t2t", TEXTS_PER_ITEM * n)):
            assert per[f"label_hits_{d}"].shape == (rows,)
            assert per[f"label_hits_{d}"].mean() / 10 == pytest.approx(
                metrics["label_precision@10"][d])
        out[ties] = per
    # The rules differ only where an incorrect candidate ties the correct one.
    assert (out["stable"]["rank_i2t"] <= out["worst"]["rank_i2t"]).all()
    assert (out["stable"]["rank_t2i"] <= out["worst"]["rank_t2i"]).all()


def test_unreadable_images_are_left_out_with_their_texts(trained, tmp_path):
    manifest, _, best = trained
    records = manifest_records(manifest)
    for r in records:
        r["image"] = str(manifest.parent / r["image"])
    test = [r for r in records if r["split"] == "test"]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    test[0]["image"] = str(broken)
    bad = write_manifest(tmp_path / "bad.jsonl", records)
    out = tmp_path / "m.json"
    result = cli("evaluate_retrieval.py", "--checkpoint", best, "--dataset", bad, "--out", out,
                 "--max-bad-images", "0.5", "--workers", "0")
    assert f"left out 1 of {len(test)} test images" in result.out and str(broken) in result.out
    metrics = json.loads(out.read_text())
    assert metrics["n_images"] == len(test) - 1
    assert metrics["n_texts"] == TEXTS_PER_ITEM * (len(test) - 1)
    # Over the default share of bad images, the evaluation stops.
    one_line_error(cli("evaluate_retrieval.py", "--checkpoint", best, "--dataset", bad,
                       "--out", out, "--workers", "0", check=False),
                   "missing or unreadable", "--max-bad-images")


def test_bad_inputs_give_one_line_errors(trained, tmp_path):
    manifest, work, best = trained
    run = ["evaluate_retrieval.py", "--workers", "0", "--out", tmp_path / "m.json"]
    one_line_error(cli(*run, "--checkpoint", tmp_path / "missing.pt", check=False),
                   "missing.pt", "checkpoint not found")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00junk")
    one_line_error(cli(*run, "--checkpoint", junk, check=False), "not a readable checkpoint")

    # A Doc2Vec model with another vocabulary (min count 4 instead of 2).
    other = tmp_path / "other"
    cli("train_doc2vec.py", "--dataset", manifest, "--work-dir", other, "--workers", "1",
        "--min-count", "4", "--epochs", "1")
    one_line_error(cli(*run, "--checkpoint", best, "--work-dir", other, check=False),
                   "vocabulary", str(other / "doc2vec_model.gensim"), "--work-dir")

    records = manifest_records(manifest)
    for r in records:
        r["split"] = "train" if r["split"] == "test" else r["split"]
    no_test = write_manifest(manifest.parent / "no_test.jsonl", records)
    one_line_error(cli(*run, "--checkpoint", best, "--dataset", no_test, check=False),
                   "no test items")   # every script checks the splits first

    # Found by the flag check, before any embedding, rather than when writing the results.
    same = best.parent.parent / ".." / "models" / best.parent.name / "best.pt"
    twice = cli(*run, "--checkpoint", best, same, check=False)
    assert twice.code == 2 and "given twice" in twice.err, twice.err
    folder = cli("evaluate_retrieval.py", "--checkpoint", best, "--out", tmp_path, check=False)
    assert folder.code == 2 and f"--out {tmp_path} is a folder" in folder.err, folder.err
    a_file = tmp_path / "m.json"
    a_file.write_text("{}")
    embed = cli(*run, "--checkpoint", best, "--save-embeddings", a_file, check=False)
    assert embed.code == 2 and "is a file: pass a folder" in embed.err, embed.err


def test_without_a_doc2vec_model_the_neighbourhood_is_skipped_with_the_reason(trained, tmp_path):
    _, _, best = trained
    out = tmp_path / "m.json"
    result = cli("evaluate_retrieval.py", "--checkpoint", best, "--work-dir", tmp_path / "none",
                 "--out", out, "--workers", "0")
    assert "neighbourhood: skipped, no Doc2Vec model at" in result.out
    assert set(json.loads(out.read_text())) == TOP_KEYS - {"neighborhood"}


# --- building blocks --------------------------------------------------------------------------

def split_args(**kw):
    return argparse.Namespace(dataset="d.jsonl", max_sentences=0, max_chars=1000, workers=1, **kw)


def test_split_dedupes_shared_images_and_drops_empty_texts():
    items = [Item("a", "/x/1.png", ("storm rain", "the of"), "test", "w"),
             Item("b", "/x/2.png", ("guitar song",), "train", "m"),
             Item("c", "/x/1.png", ("thunder cloud",), "test", "w"),
             Item("d", "/x/3.png", ("rocket orbit", "planet moon"), "test", "s")]
    split = load_split(items, "test", split_args())
    assert split.image_paths == ["/x/1.png", "/x/3.png"]
    assert split.image_ids == ["a", "d"]
    assert split.text_ids == ["a#0", "c", "d#0", "d#1"]     # "the of" leaves no token
    assert split.text_image.tolist() == [0, 0, 1, 1]
    assert split.first_texts().tolist() == [0, 2]
    sub, rows = split.keep_images([1])
    assert sub.image_ids == ["d"] and sub.text_ids == ["d#0", "d#1"] and rows.tolist() == [2, 3]
    assert sub.text_image.tolist() == [0, 0]
    with pytest.raises(InputError, match="val split is empty"):
        load_split(items, "val", split_args())

    embedded = torch.arange(4.0)[:, None].repeat(1, 2)[:2]
    kept, rows = without_unreadable(split, embedded, {0: "OSError: broken"}, 0.5, "d.jsonl")
    assert kept.image_ids == ["d"] and rows.tolist() == [[1.0, 1.0]]
    with pytest.raises(InputError, match="no image of the test split can be read"):
        without_unreadable(split, embedded, {0: "x", 1: "y"}, 1.0, "d.jsonl")


def test_integer_labels_share_one_mapping_and_need_every_label():
    image, text = integer_labels(["b", "a"], ["a", "b", "b"])
    assert image.tolist() == [1, 0] and text.tolist() == [0, 1, 1]
    assert integer_labels(["a", None], ["a"]) is None


def test_evaluate_embeddings_on_perfect_and_random_spaces():
    g = torch.Generator().manual_seed(0)
    n = 2000
    images = torch.nn.functional.normalize(torch.randn(n, 16, generator=g), dim=1)
    text_image = torch.arange(n).repeat_interleave(2)
    texts = images[text_image]
    labels = torch.arange(n) % 7
    metrics, notes = evaluate_embeddings(images, texts, text_image, torch.arange(n) * 2,
                                         reference=images, image_labels=labels,
                                         text_labels=labels[text_image], block=300)
    assert set(metrics) == TOP_KEYS | {"folds_1k"}
    # Each image's two texts are identical: a tie between two correct texts is no tie.
    assert metrics["ties"] == {"rule": "stable", "i2t": 0, "t2i": 0}
    assert notes == [f"ties (--ties stable): 0 of {n} image queries and 0 of {2 * n} text "
                     "queries had an incorrect candidate scoring exactly as the correct one"]
    assert metrics["rsum"] == pytest.approx(600.0) and metrics["folds_1k"]["rsum"] == 600.0
    assert metrics["neighborhood"] == {"image_overlap@10": 1.0, "text_overlap@10": 1.0}
    assert set(metrics["label_precision@10"]) == {"i2t", "t2i", "i2i", "t2t"}

    random_space = torch.randn(n, 16, generator=g)
    metrics, _ = evaluate_embeddings(images[:300], texts[:600], text_image[:600],
                                     torch.arange(300) * 2, reference=random_space[:300])
    assert metrics["neighborhood"]["image_overlap@10"] < 0.1   # k / N is 0.033
    assert "folds_1k" not in metrics and "label_precision@10" not in metrics


def test_table_puts_runs_side_by_side_and_marks_missing_cells():
    a = {"n_images": 10, "i2t": {"r1": 12.345}, "neighborhood": {"image_overlap@10": 0.5}}
    b = {"n_images": 10, "i2t": {"r1": 50.0}}
    lines = format_table(["a", "b"], [a, b]).splitlines()
    assert lines[0].split() == ["metric", "a", "b"]
    cells = {line.split("  ")[0].strip(): line.split()[-2:] for line in lines[2:]}
    assert cells == {"images": ["10", "10"], "i2t R@1": ["12.3", "50.0"],
                     "image overlap@10": ["0.500", "-"]}
    assert not any(line.startswith("t2i") for line in lines)


def test_run_names_and_metrics_paths():
    assert run_names(["w/models/r1/best.pt", "w/models/r2/best.pt"]) == ["r1", "r2"]
    assert run_names(["w/r1/best.pt", "w/r1/last.pt"]) == ["r1/best", "r1/last"]
    assert metrics_path("w/r1/best.pt", "test") == Path("w/r1/metrics.json")
    assert metrics_path("w/r1/last.pt", "val") == Path("w/r1/metrics_last_val.json")


def test_flags_given_override_the_checkpoint_and_config_fills_the_rest():
    args = argparse.Namespace(seed=7, split="test")
    state = {"config": {"seed": 1, "val_size": 5, "dataset": "/d.jsonl"}}
    run = with_checkpoint_defaults(args, state)
    assert (run.seed, run.val_size, run.dataset) == (7, 5, "/d.jsonl")
    assert run.max_tokens == config.MAX_TOKENS and run.image_size == config.IMAGE_SIZE


def test_device_and_precision_are_decided_together():
    cpu = torch.device("cpu")
    assert device_and_precision("cpu", "bf16") == (cpu, "fp32")   # bf16 runs on CUDA only
    assert device_and_precision("cpu", "fp32") == (cpu, "fp32")
    if torch.cuda.is_available():
        assert device_and_precision(None, "bf16") == (torch.device("cuda"), "bf16")
        assert device_and_precision("cuda", "fp32") == (torch.device("cuda"), "fp32")
    else:
        assert device_and_precision(None, "bf16") == (cpu, "fp32")


def test_embedding_does_not_depend_on_batching_and_reports_bad_files(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig("resnet18", embed_dim=8, word_dim=6, hidden=5,
                                    vocab_size=13)).eval()
    vocab = Vocabulary([f"w{i}" for i in range(10)])
    tokens = [[f"w{i % 10}" for i in range(n)] for n in (3, 9, 1, 5, 7, 2)]
    one = embed_texts(model, vocab, tokens, 50, torch.device("cpu"), batch_size=1)
    many = embed_texts(model, vocab, tokens, 50, torch.device("cpu"), batch_size=4)
    assert torch.allclose(one, many, atol=1e-6)

    paths = []
    for i in range(5):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(paths[-1])
    paths.insert(2, str(tmp_path / "missing.png"))
    one, bad = embed_images(model, paths, 32, torch.device("cpu"), batch_size=1)
    many, bad_many = embed_images(model, paths, 32, torch.device("cpu"), batch_size=4)
    assert set(bad) == set(bad_many) == {2} and "missing.png" in bad[2]
    assert torch.allclose(one, many, atol=1e-5)
