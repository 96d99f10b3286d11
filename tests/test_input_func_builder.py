"""Tests of the pretraining input pipeline on records made from the real text (or written text)."""

import json
import logging
import shutil

import numpy as np
import pytest
import tensorflow as tf

import create_pretrain_data as cpd
import data_utils
import input_func_builder as ifb
import tokenization
from conftest import SHARED_DATA
from test_create_pretrain_data import read_records, synthetic_corpus_lines, write_vocab

SEQ_LEN = 64
NUM_PREDICT = 10
NUM_POOL = 2  # stride 4: the truncated tail is [sep, pad, pad, pad]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Vocabulary, special ids and record directories: train passes 0-1, dev, and train in 4 tasks."""
    root = tmp_path_factory.mktemp("pipeline")
    wiki = SHARED_DATA / "pretrain" / "wiki_00"
    if wiki.is_file():
        lines = wiki.read_text(encoding="utf-8").split("\n")
        corpus = str(wiki)
    else:
        lines = synthetic_corpus_lines()
        corpus = str(root / "corpus.txt")
        (root / "corpus.txt").write_text("\n".join(lines), encoding="utf-8")
    vocab = write_vocab(root / "vocab.txt", lines)
    tokenizer = tokenization.get_tokenizer("word_piece", str(root / "vocab.txt"), True)
    common = dict(input_glob=corpus, seq_len=SEQ_LEN, log_every_secs=1e9)
    for pass_id in range(2):
        cpd.create_pretrain_data(tokenizer, save_dir=str(root / "train"), pass_id=pass_id, **common)
    cpd.create_pretrain_data(tokenizer, save_dir=str(root / "dev"), split="dev", **common)
    # Four files for sharding tests: the same corpus read by four tasks of one pass each.
    for task in range(4):
        (root / f"part-{task}.txt").write_text("\n".join(lines[task::4]), encoding="utf-8")
    for task in range(4):
        cpd.create_pretrain_data(
            tokenizer,
            input_glob=str(root / "part-*.txt"),
            save_dir=str(root / "tasks"),
            seq_len=SEQ_LEN,
            num_task=4,
            task=task,
            log_every_secs=1e9,
        )
    return {
        "root": root,
        "vocab": vocab,
        "special_ids": data_utils.setup_special_ids(tokenizer),
        "is_start": tokenizer.word_start_mask,
    }


def input_fn(data, record_dir="train", **kwargs):
    args = dict(
        split="train",
        batch_size_per_replica=16,
        seq_len=SEQ_LEN,
        num_predict=NUM_PREDICT,
        special_ids=data["special_ids"],
        num_pool=NUM_POOL,
        truncate_seq=True,
        seed=3,
    )
    args.update(kwargs)
    return ifb.get_input_fn(str(data["root"] / record_dir), **args)


def batches(dataset, n):
    return [{k: v.numpy() for k, v in b.items()} for b in dataset.take(n)]


def record_inputs(data, record_dir, split="train", pass_id=0, task=0, num_task=1):
    name = data_utils.pretrain_record_name(split, pass_id, SEQ_LEN, True, task, num_task)
    return [r["input"] for r in read_records(data["root"] / record_dir / name)]


@pytest.mark.parametrize("strategy", ifb.SAMPLE_STRATEGIES)
def test_batches_have_the_documented_features(data, strategy):
    sp = data["special_ids"]
    records = {tuple(r[: SEQ_LEN - 4]) for r in record_inputs(data, "train")}
    batch_list = batches(input_fn(data, sample_strategy=strategy)(None), 3)
    expected = {
        "masked_input": (np.int32, (16, SEQ_LEN)),
        "origin_input": (np.int32, (16, SEQ_LEN)),
        "seg_id": (np.int32, (16, SEQ_LEN)),
        "is_target": (np.bool_, (16, SEQ_LEN)),
        "input_mask": (np.float32, (16, SEQ_LEN)),
        "pad_mask": (np.float32, (16, SEQ_LEN)),
        "target_mapping": (np.float32, (16, NUM_PREDICT, SEQ_LEN)),
        "target": (np.int32, (16, NUM_PREDICT)),
        "target_mask": (np.float32, (16, NUM_PREDICT)),
    }
    for b in batch_list:
        assert {k: (v.dtype.type, v.shape) for k, v in b.items()} == expected
        origin, masked = b["origin_input"], b["masked_input"]
        # The truncated tail: the last 4 tokens are [sep] + 3 pads, with the pad segment id.
        np.testing.assert_array_equal(origin[:, -4:], [[sp.sep_id] + [sp.pad_id] * 3] * 16)
        np.testing.assert_array_equal(b["seg_id"][:, -3:], 0)
        for row in range(16):
            assert tuple(origin[row, :-4]) in records
            candidate = ~np.isin(origin[row], [sp.cls_id, sp.sep_id, sp.pad_id])
            assert candidate.sum() >= NUM_PREDICT
            is_target = b["is_target"][row]
            assert is_target.sum() == NUM_PREDICT and not np.any(is_target & ~candidate)
            positions = np.flatnonzero(is_target)
            np.testing.assert_array_equal(
                b["target_mapping"][row], np.eye(SEQ_LEN, dtype=np.float32)[positions]
            )
            np.testing.assert_array_equal(b["target"][row], origin[row, positions])
            np.testing.assert_array_equal(b["target_mask"][row], 1.0)
            np.testing.assert_array_equal(masked[row, ~is_target], origin[row, ~is_target])
        is_pad = masked == sp.pad_id
        np.testing.assert_array_equal(b["pad_mask"], is_pad.astype(np.float32))
        np.testing.assert_array_equal(
            b["input_mask"], ((masked == sp.mask_id) | is_pad).astype(np.float32)
        )


def test_without_truncation_the_records_pass_unchanged(data):
    records = {tuple(r) for r in record_inputs(data, "train")}
    for b in batches(input_fn(data, truncate_seq=False)(None), 2):
        for row in b["origin_input"]:
            assert tuple(row) in records
        assert not b["pad_mask"].any()


def test_corruption_ratios(data):
    sp = data["special_ids"]
    counts = np.zeros(3)
    for b in batches(input_fn(data)(None), 40):
        t = b["is_target"]
        masked, origin = b["masked_input"][t], b["origin_input"][t]
        counts += [np.sum(masked == sp.mask_id), np.sum(masked == origin), 0]
        counts[2] += np.sum((masked != sp.mask_id) & (masked != origin))
    fractions = counts / counts.sum()
    assert counts.sum() == 40 * 16 * NUM_PREDICT
    # 6400 targets: binomial sd <= 0.005; random ids equal the original with p = 1/vocab_size.
    np.testing.assert_allclose(fractions, [0.8, 0.1, 0.1], atol=0.025)

    # Directly, with other ratios, on 200k targets of a big vocabulary.
    n = 200_000
    inputs = tf.fill([n], 7)
    big = data_utils.SpecialIds(vocab_size=10**6, unk_id=0, cls_id=1, sep_id=2, pad_id=3, mask_id=4)
    masked = ifb.corrupt(inputs, tf.ones([n], tf.bool), tf.constant([1, 2]), big, 0.3, 0.2).numpy()
    got = [np.mean(masked == 4), np.mean(masked == 7), np.mean((masked != 4) & (masked != 7))]
    np.testing.assert_allclose(got, [0.5, 0.3, 0.2], atol=0.005)
    untouched = ifb.corrupt(inputs, tf.zeros([n], tf.bool), tf.constant([1, 2]), big, 0.3, 0.2)
    assert np.all(untouched.numpy() == 7)


def _toy_sequence(special_ids, word_lengths, seq_len):
    """A sequence `[cls] words [sep] pad...` with ids >= 10 and its boundary (word starts, end)."""
    inputs = [special_ids.cls_id]
    boundary = []
    for length in word_lengths:
        boundary.append(len(inputs))
        inputs += [10 + len(inputs) + i for i in range(length)]
    boundary.append(len(inputs))
    inputs += [special_ids.sep_id]
    inputs += [special_ids.pad_id] * (seq_len - len(inputs))
    return tf.constant(inputs, tf.int32), tf.constant(boundary, tf.int32)


def _spans_over_seeds(candidate, boundary, num_seeds, **kwargs):
    @tf.function
    def run(seed):
        return ifb.sample_spans(candidate, boundary, seed, **kwargs)

    return [tuple(x.numpy() for x in run(tf.constant([s, 11]))) for s in range(num_seeds)]


def test_single_token_targets_are_uniform(data):
    sp = data["special_ids"]
    inputs, _ = _toy_sequence(sp, [1] * 24, 32)  # 24 candidates, then sep and 6 pads
    seeds = tf.stack([tf.range(3000), tf.fill([3000], 5)], axis=1)
    sample = tf.function(
        lambda seeds: tf.map_fn(
            lambda s: ifb.sample_targets(inputs, None, s, 6, sp, sample_strategy="single_token"),
            seeds,
            fn_output_signature=tf.bool,
        )
    )
    hits = sample(seeds).numpy()
    assert np.all(hits.sum(axis=1) == 6)
    frequency = hits.mean(axis=0)
    np.testing.assert_allclose(frequency[1:25], 6 / 24, atol=0.04)  # binomial sd 0.008
    assert not frequency[0] and not frequency[25:].any()


def test_whole_word_takes_whole_words(data):
    sp = data["special_ids"]
    word_lengths = [1, 3, 2, 1, 4, 1, 2, 2, 1, 3, 1, 1]
    inputs, boundary = _toy_sequence(sp, word_lengths, 32)
    candidate = ifb.candidate_mask(inputs, sp)
    words = set(zip(boundary.numpy()[:-1].tolist(), boundary.numpy()[1:].tolist(), strict=True))
    num_predict = 8
    covered = []
    for begins, ends in _spans_over_seeds(
        candidate, boundary, 50, num_predict=num_predict, sample_strategy="whole_word"
    ):
        assert set(zip(begins.tolist(), ends.tolist(), strict=True)) <= words
        size = int(np.sum(ends - begins))
        assert size <= num_predict
        covered.append(size)
    # The words are taken in random order until the next one would overflow num_predict.
    assert np.mean(covered) >= num_predict - 2

    is_target = ifb.sample_targets(
        inputs, boundary, tf.constant([4, 4]), num_predict, sp, sample_strategy="whole_word"
    ).numpy()
    assert is_target.sum() == num_predict


def test_token_spans_have_the_documented_shape(data):
    sp = data["special_ids"]
    inputs, _ = _toy_sequence(sp, [1] * 60, SEQ_LEN)  # 60 candidates, sep, 3 pads
    candidate = ifb.candidate_mask(inputs, sp)
    num_predict, valid_len = 12, SEQ_LEN - 4
    covered = []
    for begins, ends in _spans_over_seeds(
        candidate,
        None,
        60,
        num_predict=num_predict,
        sample_strategy="token_span",
        stride=4,
        valid_len=valid_len,
        min_tok=2,
        max_tok=4,
    ):
        lengths = ends - begins
        assert np.all((lengths >= 2) & (lengths <= 4))
        order = np.argsort(begins)
        assert np.all(begins >= 0) and np.all(ends <= valid_len)
        assert np.all(begins[order][1:] >= ends[order][:-1])  # disjoint
        covered.append(lengths.sum())
    assert max(covered) <= num_predict and np.mean(covered) >= num_predict / 2

    # Span lengths follow p(l) proportional to 1 / (l + 1).
    lengths = []
    for s in range(20):
        b, e = ifb.lay_out_spans(1000, 1.0, 1, 5, 10**7, tf.constant([s, 0]))
        lengths.append((e - b).numpy())
    lengths = np.concatenate(lengths)
    expected = 1.0 / (np.arange(1, 6) + 1.0)
    np.testing.assert_allclose(
        np.bincount(lengths, minlength=6)[1:] / len(lengths), expected / expected.sum(), atol=0.01
    )


def test_word_spans_align_to_word_boundaries(data):
    sp = data["special_ids"]
    word_lengths = [1, 2, 1, 3, 1, 1, 2, 1, 1, 2, 1, 1, 3, 1, 2, 1, 1, 1, 2, 1, 1, 1, 2, 1] * 2
    inputs, boundary = _toy_sequence(sp, word_lengths, 128)
    candidate = ifb.candidate_mask(inputs, sp)
    index = {int(b): k for k, b in enumerate(boundary.numpy())}
    num_spans = 0
    for begins, ends in _spans_over_seeds(
        candidate,
        boundary,
        40,
        num_predict=20,
        sample_strategy="word_span",
        min_word=1,
        max_word=3,
    ):
        assert set(begins.tolist()) <= set(index) and set(ends.tolist()) <= set(index)
        num_words = np.array(
            [index[int(e)] - index[int(b)] for b, e in zip(begins, ends, strict=True)]
        )
        assert np.all((num_words >= 1) & (num_words <= 3))
        assert np.sum(ends - begins) <= 20
        num_spans += len(begins)
    assert num_spans >= 40


def test_pipeline_boundaries_after_truncation(data):
    """The truncated boundary list ends at seq_len - stride and keeps every earlier word start."""
    record = read_records(
        data["root"] / "train" / data_utils.pretrain_record_name("train", 0, SEQ_LEN, True, 0, 1)
    )[0]
    sp = data["special_ids"]
    inputs, seg_id, boundary = ifb.truncate_tail(
        tf.constant(record["input"], tf.int32),
        tf.constant(record["seg_id"], tf.int32),
        tf.constant(record["boundary"], tf.int32),
        4,
        sp,
    )
    starts = [i for i in range(SEQ_LEN - 4) if data["is_start"][record["input"][i]]]
    np.testing.assert_array_equal(boundary.numpy(), starts + [SEQ_LEN - 4])
    np.testing.assert_array_equal(inputs.numpy()[: SEQ_LEN - 4], record["input"][: SEQ_LEN - 4])
    np.testing.assert_array_equal(seg_id.numpy()[: SEQ_LEN - 3], record["seg_id"][: SEQ_LEN - 3])


def _eval_rows(data, record_dir, **kwargs):
    fn = input_fn(data, record_dir, is_training=False, drop_remainder=False, seed=None, **kwargs)
    return [tuple(r) for b in batches(fn(None), 10**6) for r in b["origin_input"]]


def test_eval_reads_each_record_once_in_order(data):
    rows = _eval_rows(data, "dev", split="dev", truncate_seq=False)
    assert rows == [tuple(r) for r in record_inputs(data, "dev", split="dev")]
    # Evaluation masking is reproducible (seed 0 when none is given).
    fn = input_fn(data, "dev", split="dev", is_training=False, seed=None)
    first, second = batches(fn(None), 2), batches(fn(None), 2)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a["masked_input"], b["masked_input"])


def test_training_is_reproducible_with_a_seed(data):
    a = batches(input_fn(data, seed=5)(None), 2)
    b = batches(input_fn(data, seed=5)(None), 2)
    c = batches(input_fn(data, seed=6)(None), 2)
    for x, y in zip(a, b, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert not np.array_equal(a[0]["masked_input"], c[0]["masked_input"])


@pytest.mark.parametrize("record_dir", ["tasks", "train"])  # 4 files: by file; 1 file: by record
def test_sharding_splits_the_records(data, record_dir):
    all_rows = _eval_rows(data, record_dir, truncate_seq=False)
    shards = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2
        )
        fn = input_fn(data, record_dir, is_training=False, drop_remainder=False, truncate_seq=False)
        shards.append([tuple(r) for b in batches(fn(context), 10**6) for r in b["origin_input"]])
    assert len(shards[0]) + len(shards[1]) == len(all_rows)
    assert sorted(shards[0] + shards[1]) == sorted(all_rows)

    # Explicit pipeline arguments, and no sharding at all.
    explicit = _eval_rows(
        data, record_dir, truncate_seq=False, num_input_pipelines=2, input_pipeline_id=1
    )
    assert explicit == shards[1]
    unsharded = _eval_rows(
        data, record_dir, truncate_seq=False, num_input_pipelines=2, shard_across_host=False
    )
    assert sorted(unsharded) == sorted(all_rows)


def test_distribute_datasets_from_function(data):
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    dist = strategy.distribute_datasets_from_function(input_fn(data, batch_size_per_replica=4))
    batch = next(iter(dist))
    assert batch["target_mapping"].shape == (4, NUM_PREDICT, SEQ_LEN)


def test_num_example_counts_passes_and_directories(data):
    root = data["root"]

    def meta_count(record_dir, split, pass_id, task=0, num_task=1):
        name = data_utils.pretrain_meta_name(split, pass_id, SEQ_LEN, True, task, num_task)
        return json.loads((root / record_dir / name).read_text())["num_example"]

    pass0, pass1 = meta_count("train", "train", 0), meta_count("train", "train", 1)
    tasks = sum(meta_count("tasks", "train", 0, t, 4) for t in range(4))
    assert ifb.get_num_example(str(root / "train"), "train", SEQ_LEN) == pass0
    assert ifb.get_num_example(str(root / "train"), "train", SEQ_LEN, num_passes=2) == pass0 + pass1
    both = f"{root / 'train'},{root / 'tasks'}"
    assert ifb.get_num_example(both, "train", SEQ_LEN) == pass0 + tasks
    files, count = ifb.get_record_info([str(root / "tasks")], "train", SEQ_LEN)
    assert count == tasks and len(files) == 4
    assert ifb.get_num_example(str(root / "dev"), "dev", SEQ_LEN) == len(
        record_inputs(data, "dev", split="dev")
    )


def test_record_files_are_checked_by_size_without_reading_them(data, monkeypatch):
    """create_pretrain_data.py records each file's size in the meta file: a start-up checks sizes only
    (reading every record header would read the whole corpus on every start and host)."""

    def no_reading(path):
        raise AssertionError(f"{path} was read")

    monkeypatch.setattr(data_utils, "count_tfrecords", no_reading)
    files, count = ifb.get_record_info([str(data["root"] / "tasks")], "train", SEQ_LEN)
    assert len(files) == 4 and count > 0


def test_meta_files_of_two_runs_with_different_num_task_are_refused(data, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(data["root"] / "tasks", mixed)
    single = data_utils.pretrain_meta_name("train", 0, SEQ_LEN, True, 0, 1)
    shutil.copy(data["root"] / "train" / single, mixed / single)
    with pytest.raises(ValueError, match=r"pass 0 meta files of runs with --num_task 1 and 4"):
        ifb.get_record_info([str(mixed)], "train", SEQ_LEN)
    # Another pass may come from a run with another --num_task.
    (mixed / single).rename(mixed / data_utils.pretrain_meta_name("train", 1, SEQ_LEN, True, 0, 1))
    shutil.copy(
        data["root"] / "train" / data_utils.pretrain_record_name("train", 0, SEQ_LEN, True, 0, 1),
        mixed,
    )
    files, _ = ifb.get_record_info([str(mixed)], "train", SEQ_LEN, num_passes=2)
    assert len(files) == 5


def test_a_task_set_with_tasks_missing_is_read_with_a_warning(data, tmp_path, caplog):
    partial = tmp_path / "partial"
    shutil.copytree(data["root"] / "tasks", partial)
    (partial / data_utils.pretrain_meta_name("train", 0, SEQ_LEN, True, 3, 4)).unlink()
    with caplog.at_level(logging.WARNING):
        files, _ = ifb.get_record_info([str(partial)], "train", SEQ_LEN)
    assert len(files) == 3
    assert f"Record directory {partial} has 3 of the 4 task meta files of pass 0." in caplog.text


def test_bad_arguments_raise_clear_errors(data, tmp_path):
    for num_predict in (0, SEQ_LEN - 3):
        with pytest.raises(ValueError, match=rf"--num_predict={num_predict} must be in \(0, "):
            input_fn(data, num_predict=num_predict)
    with pytest.raises(ValueError, match="--sample_strategy='span'"):
        input_fn(data, sample_strategy="span")
    with pytest.raises(ValueError, match="--leak_ratio=0.6 and --rand_ratio=0.5"):
        input_fn(data, leak_ratio=0.6, rand_ratio=0.5)
    with pytest.raises(ValueError, match="--min_tok=3 and --max_tok=2"):
        input_fn(data, min_tok=3, max_tok=2)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=rf"record directory '{empty}' has no meta file matching"):
        ifb.get_input_fn(str(empty), "train", 4, SEQ_LEN, NUM_PREDICT, data["special_ids"], 2, True)
    with pytest.raises(ValueError, match="has no meta file matching"):
        ifb.get_num_example(str(data["root"] / "train"), "test", SEQ_LEN)
    with pytest.raises(ValueError, match=r"no meta file of a pass < num_passes=0"):
        ifb.get_num_example(str(data["root"] / "train"), "train", SEQ_LEN, num_passes=0)
    bad_meta = tmp_path / "bad" / data_utils.pretrain_meta_name("train", 0, SEQ_LEN, True, 0, 1)
    bad_meta.parent.mkdir()
    bad_meta.write_text("{not json")
    with pytest.raises(ValueError, match=f"{bad_meta}: not a valid meta file"):
        ifb.get_num_example(str(bad_meta.parent), "train", SEQ_LEN)
