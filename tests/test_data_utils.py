"""Tests for data_utils.py: special ids, segment ids, pretraining file names, atomic writes."""

import dataclasses
import fnmatch
import io
import json
import logging

import pytest
import sentencepiece as spm
import tensorflow as tf

import data_utils
import tokenization


def word_piece(tmp_path, tokens, name="vocab.txt"):
    path = tmp_path / name
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return tokenization.get_tokenizer("word_piece", str(path))


def test_segment_ids():
    assert (data_utils.SEG_ID_A, data_utils.SEG_ID_B) == (0, 1)
    assert (data_utils.SEG_ID_CLS, data_utils.SEG_ID_PAD) == (2, 0)


def test_special_ids_funnel_vocab(tmp_path):
    vocab = ["<pad>", "<unk>", "<s>", "</s>", "<cls>", "<sep>", "<mask>", "<eod>", "<eop>", "a"]
    ids = data_utils.setup_special_ids(word_piece(tmp_path, vocab))
    assert ids == data_utils.SpecialIds(
        vocab_size=10, unk_id=1, cls_id=4, sep_id=5, pad_id=0, mask_id=6,
        bos_id=2, eos_id=3, eod_id=7, eop_id=8,
    )  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        ids.cls_id = 0


def test_special_ids_optional_tokens_absent(tmp_path):
    vocab = ["a", "<cls>", "<sep>", "<mask>", "<pad>", "<unk>"]
    ids = data_utils.setup_special_ids(word_piece(tmp_path, vocab))
    assert (ids.cls_id, ids.sep_id, ids.mask_id, ids.pad_id, ids.unk_id) == (1, 2, 3, 4, 5)
    assert (ids.bos_id, ids.eos_id, ids.eod_id, ids.eop_id) == (None, None, None, None)


def test_special_ids_bert_bracket_vocab(tmp_path):
    vocab = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the"]
    ids = data_utils.setup_special_ids(word_piece(tmp_path, vocab))
    assert (ids.pad_id, ids.unk_id, ids.cls_id, ids.sep_id, ids.mask_id) == (0, 2, 3, 4, 5)
    assert ids.vocab_size == 7


def test_special_ids_missing_required_names_tokens_and_file(tmp_path):
    tok = word_piece(tmp_path, ["<unk>", "<cls>", "<pad>", "the"], name="my_vocab.txt")
    with pytest.raises(ValueError) as err:
        data_utils.setup_special_ids(tok)
    message = str(err.value)
    assert "my_vocab.txt" in message
    assert "<sep> or [SEP]" in message and "<mask> or [MASK]" in message
    assert "<cls>" not in message


def _train_spm(tmp_path, user_symbols):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["the cat sat on the mat.", "a dog ran far away!"] * 20),
        model_writer=model,
        vocab_size=40,
        hard_vocab_limit=False,
        user_defined_symbols=user_symbols,
        minloglevel=2,
    )
    path = tmp_path / "sp.model"
    path.write_bytes(model.getvalue())
    return tokenization.get_tokenizer("sent_piece", str(path))


def test_special_ids_sentencepiece(tmp_path):
    # Sentencepiece puts <unk>=0, <s>=1, </s>=2 first, then the user-defined symbols in order.
    tok = _train_spm(tmp_path, ["<cls>", "<sep>", "<pad>", "<mask>"])
    ids = data_utils.setup_special_ids(tok)
    assert (ids.unk_id, ids.bos_id, ids.eos_id) == (0, 1, 2)
    assert (ids.cls_id, ids.sep_id, ids.pad_id, ids.mask_id) == (3, 4, 5, 6)
    assert (ids.eod_id, ids.eop_id) == (None, None)
    assert ids.vocab_size == tok.get_vocab_size()


def test_special_ids_sentencepiece_missing_mask_is_an_error(tmp_path):
    # The original silently used the unk id here (SPEC §10.24).
    tok = _train_spm(tmp_path, ["<cls>", "<sep>", "<pad>"])
    with pytest.raises(ValueError, match=r"<mask> or \[MASK\]"):
        data_utils.setup_special_ids(tok)


def test_pretrain_file_names():
    # SPEC §5.1 name patterns.
    assert (
        data_utils.pretrain_record_name("train", 0, 512, True, 0, 1)
        == "data.train.pass-0.seq-512.uncased.tfrecord-00000-of-00001"
    )
    assert (
        data_utils.pretrain_meta_name("dev", 4, 128, False, 3, 12)
        == "meta.dev.pass-4.seq-128.cased.json-00003-of-00012"
    )
    assert data_utils.format_filename("p", "s", 64, True) == "p.seq-64.uncased.s"


def test_pretrain_meta_glob_and_pass_id():
    pattern = data_utils.pretrain_meta_glob("train", 512, True)
    wanted = [
        data_utils.pretrain_meta_name("train", p, 512, True, t, 2) for p in (0, 7) for t in (0, 1)
    ]
    others = [
        data_utils.pretrain_meta_name("dev", 0, 512, True, 0, 1),
        data_utils.pretrain_meta_name("train", 0, 256, True, 0, 1),
        data_utils.pretrain_meta_name("train", 0, 512, False, 0, 1),
        data_utils.pretrain_record_name("train", 0, 512, True, 0, 1),
    ]
    assert [n for n in wanted + others if fnmatch.fnmatch(n, pattern)] == wanted
    assert [data_utils.meta_pass_id("/d/" + n) for n in wanted] == [0, 0, 7, 7]
    with pytest.raises(ValueError, match="data.train"):
        data_utils.meta_pass_id("data.train.seq-512.uncased.json")


def test_atomic_write_text_and_json(tmp_path):
    path = tmp_path / "out.json"
    data_utils.atomic_write_json(str(path), {"filenames": ["a"], "num_example": 3})
    assert json.loads(path.read_text()) == {"filenames": ["a"], "num_example": 3}
    data_utils.atomic_write_text(str(path), "caf\u00e9\n")
    assert path.read_text(encoding="utf-8") == "caf\u00e9\n"
    data_utils.atomic_write_text(str(tmp_path / "empty"), "")
    assert (tmp_path / "empty").read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "out.json"]


def test_atomic_open_failure_leaves_old_file(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), data_utils.atomic_open(str(path)) as f:
        f.write("half")
        raise RuntimeError("writer crashed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with pytest.raises(ValueError, match="mode"), data_utils.atomic_open(str(path), "a"):
        pass


def test_atomic_output_path_with_tfrecord_writer(tmp_path):
    path = tmp_path / "x.tfrecord"
    with data_utils.atomic_output_path(str(path)) as tmp_name:
        with tf.io.TFRecordWriter(tmp_name) as writer:
            writer.write(b"one")
            writer.write(b"two")
        assert not path.exists()
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == [b"one", b"two"]
    assert [p.name for p in tmp_path.iterdir()] == ["x.tfrecord"]


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    orphan = tmp_path / ".tmp-0123abcd-x.tfrecord"
    orphan.write_bytes(b"half")
    unrelated = tmp_path / ".tmp-0123abcd-y.tfrecord"
    unrelated.write_bytes(b"another file's")
    data_utils.atomic_write_text(str(tmp_path / "x.tfrecord"), "whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [unrelated.name, "x.tfrecord"]


def test_serialized_examples_do_not_depend_on_the_feature_order():
    features = {
        "input_ids": data_utils.int64_feature([3, 1]),
        "input_mask": data_utils.float_feature([0.0, 1.0]),
        "id": data_utils.bytes_feature(["q\u00e9"]),
    }
    reordered = dict(reversed(list(features.items())))
    serialized = data_utils.serialize_example(features)
    assert serialized == data_utils.serialize_example(reordered)
    parsed = tf.train.Example.FromString(serialized).features.feature
    assert list(parsed["input_ids"].int64_list.value) == [3, 1]
    assert parsed["id"].bytes_list.value[0].decode("utf-8") == "q\u00e9"


def test_progress_log_gives_counts_rate_and_time_left_then_a_final_line(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="absl")
    clock = iter(float(t) for t in range(100))
    monkeypatch.setattr(data_utils.time, "monotonic", lambda: next(clock))
    progress = data_utils.ProgressLog("Writing x.tfrecord", 67_349, "examples", every_secs=1.5)
    for _ in range(3):  # clock 1, 2, 3: lines at 2 (2 s after the start) and not at 3 (1 s later)
        progress.advance(10_000, detail="7 long")
    progress.finish()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Writing")]
    assert lines == [
        "Writing x.tfrecord: 20,000/67,349 examples (30%) in 0:02, 10000 examples/s, 0:05 left, 7 long",
        "Writing x.tfrecord: 30,000/67,349 examples (45%) in 0:04, 7500 examples/s, 0:05 left",
    ]
