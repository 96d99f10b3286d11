"""Tests of the classification data side: processors, features, tfrecords, metrics, submission files."""

import csv
import json
import os

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics
import tensorflow as tf

import classifier_utils as cu
import data_utils

# Each GLUE task's files as GLUE distributes them: header (None: no header) and a row builder for
# labeled (train/dev) and unlabeled (test) data.
MNLI_HEADER = [
    "index",
    "promptID",
    "pairID",
    "genre",
    "sentence1_binary_parse",
    "sentence2_binary_parse",
    "sentence1_parse",
    "sentence2_parse",
    "sentence1",
    "sentence2",
    "label1",
    "gold_label",
]
STSB_HEADER = [
    "index",
    "genre",
    "filename",
    "year",
    "old_index",
    "source1",
    "source2",
    "sentence1",
    "sentence2",
    "score",
]
PAIR3 = ["index", "sentence1", "sentence2"]
SNLI_HEADER = ["index", "captionID", "pairID", *MNLI_HEADER[4:]]  # MNLI's without the genre


def _mnli_files(dev, test):
    return dict(
        files={"train": "train.tsv", "dev": dev, "test": test},
        header=MNLI_HEADER,
        row=lambda i, a, b, y: [str(i), "p", "q", "fiction", "(", "(", "(", "(", a, b, "x", y],
        test_header=MNLI_HEADER[:10],
        test_row=lambda i, a, b: [str(i), "p", "q", "fiction", "(", "(", "(", "(", a, b],
    )


GLUE_FORMATS = {
    "cola": dict(
        header=None,
        row=lambda i, a, b, y: ["gj04", y, "", a],
        test_header=["index", "sentence"],
        test_row=lambda i, a, b: [str(i), a],
    ),
    "sst-2": dict(
        header=["sentence", "label"],
        row=lambda i, a, b, y: [a, y],
        test_header=["index", "sentence"],
        test_row=lambda i, a, b: [str(i), a],
    ),
    "mrpc": dict(
        header=["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
        row=lambda i, a, b, y: [y, "11", "12", a, b],
        test_header=["index", "#1 ID", "#2 ID", "#1 String", "#2 String"],
        test_row=lambda i, a, b: [str(i), "11", "12", a, b],
    ),
    "qqp": dict(
        header=["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
        row=lambda i, a, b, y: [str(i), "1", "2", a, b, y],
        test_header=["id", "question1", "question2"],
        test_row=lambda i, a, b: [str(i), a, b],
    ),
    "mnli_matched": _mnli_files("dev_matched.tsv", "test_matched.tsv"),
    "mnli_mismatched": _mnli_files("dev_mismatched.tsv", "test_mismatched.tsv"),
    # GLUE's SNLI has no genre column: sentence1 and sentence2 are columns 7 and 8, then label1 (dev and
    # test: label1..label5), gold_label. Its test file keeps the labels.
    "snli": dict(
        header=SNLI_HEADER,
        row=lambda i, a, b, y: [str(i), "c", "p", "(", "(", "(", "(", a, b, "neutral", y],
        test_header=SNLI_HEADER,
        test_row=lambda i, a, b: [
            str(i),
            "c",
            "p",
            "(",
            "(",
            "(",
            "(",
            a,
            b,
            "neutral",
            "entailment",
        ],
    ),
    "sts-b": dict(
        header=STSB_HEADER,
        row=lambda i, a, b, y: [str(i), "main", "f", "2012", "1", "none", "none", a, b, y],
        test_header=STSB_HEADER[:9],
        test_row=lambda i, a, b: [str(i), "main", "f", "2012", "1", "none", "none", a, b],
    ),
    "diagnostic": dict(
        files={"test": "diagnostic.tsv"},
        test_header=PAIR3,
        test_row=lambda i, a, b: [str(i), a, b],
    ),
}
for _task in ("qnli", "rte", "wnli"):
    GLUE_FORMATS[_task] = dict(
        header=[*PAIR3, "label"],
        row=lambda i, a, b, y: [str(i), a, b, y],
        test_header=PAIR3,
        test_row=lambda i, a, b: [str(i), a, b],
    )


def write_tsv(path, header, rows, line_end="\n"):
    lines = ([header] if header else []) + rows
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("".join("\t".join(r) + line_end for r in lines))


def expected_examples(task, split, n=5):
    """(text_a, text_b, label) triples of the self-written files."""
    processor = cu.get_processor(task)
    pair = task not in ("cola", "sst-2")
    triples = []
    for i in range(n):
        label = None
        if split != "test":
            label = (
                round(0.5 * i, 1)
                if processor.is_regression
                else processor.labels[i % len(processor.labels)]
            )
        triples.append((f"{task} {split} first {i}", f"second {i} text" if pair else None, label))
    return triples


def write_glue_split(data_dir, task, split, line_end="\n"):
    fmt = GLUE_FORMATS[task]
    files = fmt.get("files", {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"})
    path = os.path.join(data_dir, files[split])
    triples = expected_examples(task, split)
    if split == "test":
        rows = [fmt["test_row"](i, a, b) for i, (a, b, _) in enumerate(triples)]
        write_tsv(path, fmt["test_header"], rows, line_end)
    else:
        rows = [fmt["row"](i, a, b, str(y)) for i, (a, b, y) in enumerate(triples)]
        write_tsv(path, fmt["header"], rows, line_end)
    return path


@pytest.mark.parametrize("task", sorted(GLUE_FORMATS))
def test_glue_processors_read_their_files(tmp_path, task):
    processor = cu.get_processor(task.upper())
    assert processor.name == task
    for split in processor.splits:
        write_glue_split(str(tmp_path), task, split, line_end="\r\n" if split == "train" else "\n")
        examples = processor.get_examples(str(tmp_path), split)
        assert [(e.text_a, e.text_b, e.label) for e in examples] == expected_examples(task, split)
        assert examples[0].source.endswith(":1" if task == "cola" and split != "test" else ":2")


def test_snli_skips_pairs_without_gold_label(tmp_path):
    row = GLUE_FORMATS["snli"]["row"]
    rows = [row(0, "a", "b", "neutral"), row(1, "c", "d", "-"), row(2, "e", "f", "contradiction")]
    write_tsv(tmp_path / "dev.tsv", SNLI_HEADER, rows)
    examples = cu.get_processor("snli").get_examples(str(tmp_path), "dev")
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [
        ("a", "b", "neutral"),
        ("e", "f", "contradiction"),
    ]


def test_diagnostic_directory_beside_the_task_directory():
    assert cu.sibling_dir("gs://bucket/glue/MNLI/", "diagnostic") == "gs://bucket/glue/diagnostic"
    assert cu.sibling_dir("glue/MNLI", "diagnostic") == "glue/diagnostic"
    assert cu.sibling_dir("/data/glue/MNLI//", "diagnostic") == "/data/glue/diagnostic"


def test_an_unreadable_csv_row_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('"1","fine"\n"2","an unclosed quote\nmakes the rest of the file one field\n')
    limit = csv.field_size_limit(20)
    try:
        with pytest.raises(ValueError, match=r"train.csv:2: field larger than field limit \(20\)"):
            list(cu.read_rows(str(path), delimiter=",", quotechar='"'))
    finally:
        csv.field_size_limit(limit)


def test_sst2_prefers_detok_files(tmp_path):
    write_tsv(tmp_path / "dev.tsv", ["sentence", "label"], [["plain", "1"]])
    processor = cu.get_processor("sst-2")
    assert processor.get_examples(str(tmp_path), "dev")[0].text_a == "plain"
    write_tsv(tmp_path / "dev.detok.tsv", ["sentence", "label"], [["detok", "0"]])
    assert processor.get_examples(str(tmp_path), "dev")[0].text_a == "detok"


@pytest.mark.parametrize(
    "task, labels, two_texts",
    [
        ("yelp5", "12345", False),
        ("yelp2", "12", False),
        ("amazon5", "12345", True),
        ("amazon2", "12", True),
        ("ag", "1234", True),
        ("dbpedia", [str(i) for i in range(1, 15)], True),
    ],
)
def test_csv_processors(tmp_path, task, labels, two_texts):
    raw = 'A "quoted", <br />multi\nline &quot;text&quot; <a href="x">link</a>'
    for name in ("train.csv", "test.csv"):
        with open(tmp_path / name, "w", newline="") as f:
            writer = csv.writer(f)
            for i, label in enumerate(labels):
                writer.writerow([label, f"{name} {i} {raw}"] + (["body\\n2"] if two_texts else []))
    processor = cu.get_processor(task)
    assert processor.labels == tuple(labels)
    train = processor.get_examples(str(tmp_path), "train")
    dev = processor.get_examples(str(tmp_path), "dev")
    assert [e.label for e in train] == list(labels)
    assert dev[1].text_a == 'test.csv 1 A "quoted", multi line "text" link'
    assert dev[1].text_b == ("body 2" if two_texts else None)


def write_imdb(root, counts):
    for split, label, n in counts:
        folder = root / split / label
        folder.mkdir(parents=True)
        for i in range(n):
            (folder / f"{i}_7.txt").write_text(f"{split} {label} review {i}<br />end")
        (folder / "urls.dat").write_text("not a review")


def test_imdb_processor(tmp_path, shared_data):
    write_imdb(
        tmp_path, [("train", "neg", 2), ("train", "pos", 3), ("test", "neg", 1), ("test", "pos", 1)]
    )
    processor = cu.get_processor("imdb")
    train = processor.get_examples(str(tmp_path), "train")
    assert [e.label for e in train] == ["neg"] * 2 + ["pos"] * 3
    assert train[0].text_a == "train neg review 0 end"
    assert len(processor.get_examples(str(tmp_path), "dev")) == 2
    if shared_data is not None:
        root = shared_data / "imdb" / "aclImdb"
        for split, folder in (("train", "train"), ("dev", "test")):
            examples = processor.get_examples(str(root), split)
            for label in ("neg", "pos"):
                n_files = len([f for f in os.listdir(root / folder / label) if f.endswith(".txt")])
                assert sum(e.label == label for e in examples) == n_files


# Rows per file, from the data README of ../shared/data (header not counted).
SHARED_GLUE_COUNTS = [
    ("mrpc", "MRPC", "train", 6),
    ("mrpc", "MRPC", "dev", 6),
    ("sts-b", "STS-B", "train", 9),
    ("sts-b", "STS-B", "dev", 9),
    ("sts-b", "STS-B/full", "dev", 1500),
    ("sts-b", "STS-B/full", "test", 1379),
    ("sst-2", "SST-2", "train", 67349),
    ("sst-2", "SST-2", "dev", 872),
    ("sst-2", "SST-2", "test", 1821),
    ("cola", "CoLA", "dev", 1043),
    ("cola", "CoLA", "test", 1063),
    ("rte", "RTE", "dev", 277),
    ("rte", "RTE", "test", 3000),
    ("wnli", "WNLI", "dev", 71),
    ("wnli", "WNLI", "test", 146),
    ("qnli", "QNLI", "dev", 5463),
    ("qnli", "QNLI", "test", 5463),
    ("qqp", "QQP", "dev", 9),
    ("qqp", "QQP", "test", 9),
]


def test_real_glue_files(shared_data):
    if shared_data is None:
        pytest.skip("../shared/data is absent; the self-written files above cover the formats")
    for task, folder, split, count in SHARED_GLUE_COUNTS:
        examples = cu.get_processor(task).get_examples(str(shared_data / "glue" / folder), split)
        assert len(examples) == count, (task, split)
    # The MRPC train file has CRLF line ends: no field keeps a carriage return.
    mrpc = cu.get_processor("mrpc").get_examples(str(shared_data / "glue" / "MRPC"), "train")
    assert all("\r" not in (e.text_b + e.label) for e in mrpc)
    assert {e.label for e in mrpc} <= {"0", "1"}


# -------------------------------------------------------------------------------------------- bad input
def test_bad_rows_name_file_and_line(tmp_path):
    header = GLUE_FORMATS["mrpc"]["header"]
    write_tsv(tmp_path / "train.tsv", header, [["1", "1", "2", "a", "b"], ["0", "1"]])
    path = tmp_path / "train.tsv"
    processor = cu.get_processor("mrpc")
    with pytest.raises(ValueError, match=f"^{path}:3: expected at least 5 columns, got 2"):
        processor.get_examples(str(tmp_path), "train")
    skipping = cu.get_processor("mrpc", skip_incomplete_rows=True)
    assert len(skipping.get_examples(str(tmp_path), "train")) == 1
    # Not in a test file: the submission would be one row short, its indices shifted.
    test_header = GLUE_FORMATS["mrpc"]["test_header"]
    write_tsv(tmp_path / "test.tsv", test_header, [["0", "1", "2", "a", "b"], ["1", "1"]])
    with pytest.raises(ValueError, match="test.tsv:3: .*a submission needs a prediction for every"):
        skipping.get_examples(str(tmp_path), "test")

    write_tsv(path, header, [["1", "1", "2", "a", "b"], ["maybe", "1", "2", "a", "b"]])
    with pytest.raises(ValueError, match=f"^{path}:3: unknown label 'maybe' for task mrpc"):
        processor.get_examples(str(tmp_path), "train")

    write_tsv(path, STSB_HEADER, [["0", "g", "f", "y", "o", "s", "s", "a", "b", "high"]])
    with pytest.raises(ValueError, match=f"^{path}:2: label 'high' is not a number"):
        cu.get_processor("sts-b").get_examples(str(tmp_path), "train")


def test_missing_empty_and_unknown(tmp_path):
    processor = cu.get_processor("rte")
    with pytest.raises(
        ValueError, match=rf"dev.tsv does not exist \(check --data_dir={tmp_path}\)"
    ):
        processor.get_examples(str(tmp_path), "dev")
    (tmp_path / "dev.tsv").write_text("")
    with pytest.raises(ValueError, match="dev.tsv is empty"):
        processor.get_examples(str(tmp_path), "dev")
    write_tsv(tmp_path / "dev.tsv", [*PAIR3, "label"], [])
    with pytest.raises(ValueError, match="task rte: no dev examples"):
        processor.get_examples(str(tmp_path), "dev")
    with pytest.raises(ValueError, match="--task_name='glue' is not a known task"):
        cu.get_processor("glue")
    with pytest.raises(ValueError, match="task imdb has no 'test' split"):
        cu.get_processor("imdb").get_examples(str(tmp_path), "test")


def test_clean_web_text():
    assert cu.clean_web_text("a<br />b &quot;c&quot;<p>d\\ne\\\\f") == 'a b "c" d e f'
    assert cu.clean_web_text('see <a href="u">this</a> now') == "see this now"
    # An unterminated anchor loses only its opener (the original kept one character, SPEC §10.23).
    assert cu.clean_web_text('x <a href="u" and more text') == 'x "u" and more text'


# -------------------------------------------------------------------------------------------- features
SPECIAL = data_utils.SpecialIds(vocab_size=100, unk_id=3, cls_id=1, sep_id=2, pad_id=0, mask_id=4)


def fake_tokenize(text):
    return [10 + int(w) for w in text.split()]


def test_convert_pair_truncates_longest_first():
    example = cu.InputExample("g", "1 2 3 4 5 6", "7 8 9", "b")
    features, length = cu.convert_single_example(example, ["a", "b"], 10, fake_tokenize, SPECIAL)
    # 10 - 3 = 7 text tokens: a is cut from 6 to 4 (longer first, b on ties), b keeps 3.
    assert features.input_ids == [1, 11, 12, 13, 14, 2, 17, 18, 19, 2]
    assert features.segment_ids == [2, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert features.input_mask == [0.0] * 10
    assert features.label_id == 1 and length == 9


def test_convert_single_pads_and_regression():
    example = cu.InputExample("g", "1 2", None, 3.5)
    features, _ = cu.convert_single_example(example, None, 6, fake_tokenize, SPECIAL)
    assert features.input_ids == [1, 11, 12, 2, 0, 0]
    assert features.segment_ids == [2, 0, 0, 0, 0, 0]
    assert features.input_mask == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    assert features.label_id == 3.5
    test_example = cu.InputExample("t", "1 2 3 4 5 6 7", None, None)
    features, _ = cu.convert_single_example(test_example, ["x", "y"], 6, fake_tokenize, SPECIAL)
    assert features.input_ids == [1, 11, 12, 13, 14, 2] and features.label_id == 0


class FakeTokenizer:
    name = "vocab.txt"
    tokenizer_type = "word_piece"
    uncased = True

    def convert_text_to_ids(self, text):
        return fake_tokenize(text)


def test_tfrecord_cache_and_datasets(tmp_path):
    data_dir, out_dir = tmp_path / "data", tmp_path / "out"
    data_dir.mkdir()
    header = GLUE_FORMATS["qnli"]["header"]
    rows = [[str(i), str(i), str(i + 1), ["entailment", "not_entailment"][i % 2]] for i in range(5)]
    write_tsv(data_dir / "dev.tsv", header, rows)
    processor = cu.get_processor("qnli")
    path, meta = cu.create_tfrecord(
        processor, "dev", str(data_dir), str(out_dir), FakeTokenizer(), SPECIAL, 8
    )
    assert os.path.basename(path) == "vocab.txt.len-8.dev.tfrecord"
    assert meta["num_real_examples"] == meta["num_examples"] == 5
    assert meta["settings"]["task"] == "qnli" and meta["settings"]["data_dir"] == str(data_dir)
    assert os.path.exists(str(out_dir / "vocab.txt.len-8.dev.meta.json"))

    # Eval: file order, then fake examples up to a multiple of the batch size.
    batches = list(cu.make_dataset(path, 8, False, 4, is_training=False, num_examples=5))
    assert len(batches) == 2
    real = np.concatenate([b["is_real_example"].numpy() for b in batches])
    np.testing.assert_array_equal(real, [1, 1, 1, 1, 1, 0, 0, 0])
    labels = np.concatenate([b["label_ids"].numpy() for b in batches])
    np.testing.assert_array_equal(labels[:5], [0, 1, 0, 1, 0])
    assert batches[0]["input_ids"].numpy()[1].tolist() == [1, 11, 2, 12, 2, 0, 0, 0]
    assert batches[1]["input_mask"].numpy()[3].tolist() == [1.0] * 8
    assert batches[0]["input_ids"].dtype == tf.int32

    # The cache is reused unless overwrite_data.
    (data_dir / "dev.tsv").write_text("")
    cu.create_tfrecord(processor, "dev", str(data_dir), str(out_dir), FakeTokenizer(), SPECIAL, 8)
    with pytest.raises(ValueError, match="is empty"):
        cu.create_tfrecord(
            processor,
            "dev",
            str(data_dir),
            str(out_dir),
            FakeTokenizer(),
            SPECIAL,
            8,
            overwrite_data=True,
        )

    # Training: repeated, shuffled, per-replica batches.
    context = tf.distribute.InputContext(
        num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2
    )
    train = cu.make_dataset(path, 8, False, 4, is_training=True, input_context=context, seed=1)
    ids = [int(b["input_ids"][i, 1]) for b in train.take(5) for i in range(2)]
    assert sorted(ids) == sorted([10, 11, 12, 13, 14] * 2)
    with pytest.raises(ValueError, match="not divisible by the 2 replicas"):
        cu.make_dataset(path, 8, False, 3, is_training=True, input_context=context)


def test_cache_is_rebuilt_for_other_settings(tmp_path):
    """MNLI's matched and mismatched dev sets share the cache name `vocab.txt.len-8.dev`; so do one
    task's dev sets under two --data_dir. The cache made for one must not be read for the other."""
    out_dir = str(tmp_path / "proc")
    data_dirs = []
    for k, name in enumerate(("glue", "glue_copy")):
        data_dir = tmp_path / name
        data_dir.mkdir()
        for matched, dev in ((0, "dev_matched.tsv"), (1, "dev_mismatched.tsv")):
            row = GLUE_FORMATS["mnli_matched"]["row"]
            first = str(10 * k + 5 * matched)  # fake_tokenize: the first id is 10 + that number
            write_tsv(data_dir / dev, MNLI_HEADER, [row(0, first, "1", "neutral")])
        data_dirs.append(str(data_dir))

    def dev_first_id(task, data_dir, **kwargs):
        path, meta = cu.create_tfrecord(
            cu.get_processor(task), "dev", data_dir, out_dir, FakeTokenizer(), SPECIAL, 8, **kwargs
        )
        assert os.path.basename(path) == "vocab.txt.len-8.dev.tfrecord"
        batch = next(iter(cu.make_dataset(path, 8, False, 1, is_training=False, num_examples=1)))
        return int(batch["input_ids"][0, 1])

    assert dev_first_id("mnli_matched", data_dirs[0]) == 10
    assert dev_first_id("mnli_mismatched", data_dirs[0]) == 15
    assert dev_first_id("mnli_matched", data_dirs[1]) == 20
    # The same settings again: the cache is read, even with the raw file gone.
    os.remove(os.path.join(data_dirs[1], "dev_matched.tsv"))
    assert dev_first_id("mnli_matched", data_dirs[1]) == 20
    # A cache from before settings were recorded in its meta json is rebuilt.
    meta_path = os.path.join(out_dir, "vocab.txt.len-8.dev.meta.json")
    with open(meta_path) as f:
        meta = json.load(f)
    del meta["settings"]
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    with pytest.raises(ValueError, match="dev_matched.tsv"):
        dev_first_id("mnli_matched", data_dirs[1])


def test_training_cache_follows_the_seed(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    rows = [[str(i), str(i), "1", "entailment"] for i in range(20)]
    write_tsv(data_dir / "train.tsv", [*PAIR3, "label"], rows)
    processor = cu.get_processor("qnli")

    def train_order(**kwargs):
        path, meta = cu.create_tfrecord(
            processor,
            "train",
            str(data_dir),
            str(tmp_path / "out"),
            FakeTokenizer(),
            SPECIAL,
            8,
            **kwargs,
        )
        records = 20 * kwargs.get("num_passes", 1)
        batches = cu.make_dataset(path, 8, False, 1, is_training=False, num_examples=records)
        return [int(b["input_ids"][0, 1]) - 10 for b in batches], meta

    seed_0, meta_0 = train_order(seed=0)
    seed_1, meta_1 = train_order(seed=1)
    unshuffled, _ = train_order(seed=1, shuffle_examples=False)
    assert unshuffled == list(range(20))
    assert sorted(seed_0) == sorted(seed_1) == unshuffled and seed_0 != seed_1
    assert (meta_0["settings"]["shuffle_seed"], meta_1["settings"]["shuffle_seed"]) == (0, 1)
    assert train_order(seed=0)[0] == seed_0
    twice, meta = train_order(seed=0, num_passes=2)
    assert len(twice) == 40 and meta["settings"]["num_passes"] == 2


# -------------------------------------------------------------------------------------------- metrics
def test_classification_metrics_match_sklearn():
    rng = np.random.RandomState(0)
    labels = rng.randint(0, 2, 200)
    logits = rng.randn(200, 2) + labels[:, None] * np.array([0.0, 1.0])
    loss = rng.rand(200)
    preds = logits.argmax(-1)
    for task in ("mrpc", "cola", "qqp"):
        m = cu.compute_metrics(task, labels, logits, loss)
        assert m["eval_accuracy"] == pytest.approx(sklearn.metrics.accuracy_score(labels, preds))
        assert m["eval_f1"] == pytest.approx(sklearn.metrics.f1_score(labels, preds))
        assert m["eval_corr"] == pytest.approx(sklearn.metrics.matthews_corrcoef(labels, preds))
        assert m["eval_loss"] == pytest.approx(loss.mean())
        tn, fp, fn, tp = sklearn.metrics.confusion_matrix(labels, preds).ravel()
        assert (m["eval_tp"], m["eval_fp"], m["eval_tn"], m["eval_fn"]) == (tp, fp, tn, fn)
    m = cu.compute_metrics("mnli_matched", rng.randint(0, 3, 50), rng.randn(50, 3), loss[:50])
    assert set(m) == {"eval_loss", "eval_accuracy"}
    # Degenerate predictions: the original reports 0 for F1 and Matthews.
    m = cu.compute_metrics("cola", np.array([0, 1, 1]), np.array([[1.0, 0.0]] * 3), np.zeros(3))
    assert m["eval_f1"] == 0.0 and m["eval_corr"] == 0.0
    assert sklearn.metrics.matthews_corrcoef([0, 1, 1], [0, 0, 0]) == 0.0


def test_regression_metrics_match_scipy():
    rng = np.random.RandomState(1)
    labels = np.round(rng.rand(300) * 5, 1)  # ties, as STS-B scores have
    preds = np.round(labels + rng.randn(300), 1)
    m = cu.compute_metrics("sts-b", labels, preds, (preds - labels) ** 2)
    assert m["eval_pearsonr"] == pytest.approx(scipy.stats.pearsonr(preds, labels)[0], abs=1e-12)
    assert m["eval_spearmanr"] == pytest.approx(scipy.stats.spearmanr(preds, labels)[0], abs=1e-12)
    assert m["eval_loss"] == pytest.approx(np.mean((preds - labels) ** 2))


def test_selection_and_best_result():
    metrics = {"eval_accuracy": 0.8, "eval_f1": 0.7, "eval_corr": 0.5, "eval_loss": 0.3}
    assert cu.selection_score("mrpc", metrics) == pytest.approx(1.5)
    assert cu.selection_score("cola", metrics) == 0.5
    assert cu.selection_score("rte", metrics) == 0.8
    assert cu.best_result_record("qqp", metrics, 10, "d/model.ckpt-10") == {
        "step": 10,
        "path": "d/model.ckpt-10",
        "accu": 0.8,
        "f1": 0.7,
        "corr": 0.5,
    }
    sts = {"eval_pearsonr": 0.9, "eval_spearmanr": 0.85, "eval_loss": 1.0}
    assert cu.selection_score("sts-b", sts) == 0.9
    assert cu.best_result_record("sts-b", sts, 5, "p") == {
        "step": 5,
        "path": "p",
        "pearsonr": 0.9,
        "spearmanr": 0.85,
    }


# -------------------------------------------------------------------------------------------- submission
def test_submission_files(tmp_path):
    logits = np.array([[0.1, 0.5], [2.0, -1.0], [0.3, 0.3]])
    preds = cu.submission_predictions(logits, ["not_entailment", "entailment"])
    assert preds == ["entailment", "not_entailment", "not_entailment"]
    three = cu.submission_predictions(np.array([[0.0, 2.0, 1.0]]), ["c", "e", "n"])
    assert three == ["e"]
    # STS-B: scores rescaled so that the largest is 5 (the original's normalisation).
    assert cu.submission_predictions(np.array([1.0, 2.0, 4.0]), None) == [1.25, 2.5, 5.0]

    path = cu.write_submission(str(tmp_path), "rte", preds, logits)
    assert path == str(tmp_path / "RTE.tsv")
    lines = (tmp_path / "RTE.tsv").read_text().splitlines()
    assert lines == ["index\tprediction", "0\tentailment", "1\tnot_entailment", "2\tnot_entailment"]
    assert (tmp_path / "RTE.logits.json").exists()

    cu.write_wnli_submission(str(tmp_path))
    lines = (tmp_path / "WNLI.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 147
    assert {line.split("\t")[1] for line in lines[1:]} == {"0"}
