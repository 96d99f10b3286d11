"""Tests of create_pretrain_data.py on the real WikiExtractor text when present, else on written text."""

import collections
import json
import os
import random
import re
import string
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import create_pretrain_data as cpd
import tokenization
from conftest import REPO_ROOT

SPECIALS = ["<pad>", "<unk>", "<cls>", "<sep>", "<mask>"]
_WORD = re.compile(r"[a-z0-9]+")


def synthetic_corpus_lines(num_docs=40, seed=0):
    """WikiExtractor-like text: `<doc>` lines, a title, then paragraphs of sentences, one per line."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "vo", "an", "el", "or", "qu", "ip"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(600)]
    lines = []
    for d in range(num_docs):
        lines += [f'<doc id="{d}" url="https://example.org/?curid={d}" title="T{d}">', f"T{d}", ""]
        for _ in range(rng.randint(1, 5)):
            for _ in range(rng.randint(1, 6)):
                n = rng.randint(3, 25)
                lines.append(" ".join(rng.choice(words) for _ in range(n)).capitalize() + ".")
            lines.append("")
        lines.append("</doc>")
    return lines


@pytest.fixture
def corpus_lines(shared_data):
    """Lines of the real wiki_00 when /work/shared exists, else of a written corpus in its format."""
    if shared_data is not None and (shared_data / "pretrain" / "wiki_00").is_file():
        return (shared_data / "pretrain" / "wiki_00").read_text(encoding="utf-8").split("\n")
    return synthetic_corpus_lines()


@pytest.fixture
def corpus_path(shared_data, tmp_path, corpus_lines):
    """Path of the corpus: the shared file itself (read in place), or one written to tmp_path."""
    if shared_data is not None and (shared_data / "pretrain" / "wiki_00").is_file():
        return str(shared_data / "pretrain" / "wiki_00")
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(corpus_lines), encoding="utf-8")
    return str(path)


def write_vocab(path, lines, num_words=1000):
    """A word-piece vocabulary: specials, single characters, `##` characters and the top words.

    Words outside the top `num_words` split into character pieces, so the text has multi-piece words.
    """
    counts = collections.Counter(w for line in lines for w in _WORD.findall(line.lower()))
    chars = list(string.ascii_lowercase + string.digits)
    vocab = SPECIALS + chars + ["##" + c for c in chars] + list(string.punctuation)
    vocab += [w for w, _ in counts.most_common() if len(w) > 1][:num_words]
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return vocab


@pytest.fixture
def vocab_and_tokenizer(tmp_path, corpus_lines):
    vocab = write_vocab(tmp_path / "vocab.txt", corpus_lines)
    return vocab, tokenization.get_tokenizer("word_piece", str(tmp_path / "vocab.txt"), True)


def read_records(path):
    """All tf.train.Examples of a tfrecord file as dicts of int64 numpy arrays."""
    records = []
    for raw in tf.data.TFRecordDataset(str(path)):
        feature = tf.train.Example.FromString(raw.numpy()).features.feature
        records.append({k: np.array(v.int64_list.value) for k, v in feature.items()})
    return records


def generate(tokenizer, input_glob, save_dir, **kwargs):
    kwargs.setdefault("seq_len", 64)
    return cpd.create_pretrain_data(
        tokenizer, input_glob=str(input_glob), save_dir=str(save_dir), log_every_secs=1e9, **kwargs
    )


def reference_documents(lines, tokenizer):
    """Documents as lists of per-line id lists, split the simple way: blank or doc-tag lines end them."""
    docs, doc = [], []
    for line in lines + [""]:
        line = line.strip()
        if not line or line.startswith("<doc ") or line == "</doc>":
            if doc:
                docs.append(doc)
            doc = []
        elif tokenizer.convert_text_to_ids(line):
            doc.append(tokenizer.convert_text_to_ids(line))
    return docs


def test_records_have_the_documented_layout(
    tmp_path, corpus_path, corpus_lines, vocab_and_tokenizer
):
    vocab, tokenizer = vocab_and_tokenizer
    seq_len = 64
    record_path, num = generate(tokenizer, corpus_path, tmp_path / "out", seq_len=seq_len)
    assert record_path.endswith("data.train.pass-0.seq-64.uncased.tfrecord-00000-of-00001")
    meta = json.loads(
        (tmp_path / "out" / "meta.train.pass-0.seq-64.uncased.json-00000-of-00001").read_text()
    )
    records = read_records(record_path)
    assert meta == {
        "filenames": [record_path.rsplit("/", 1)[1]],
        "num_example": len(records),
        "file_bytes": [os.path.getsize(record_path)],
    }
    assert num == len(records) > 20

    cls_id, sep_id = vocab.index("<cls>"), vocab.index("<sep>")
    is_func = [t.startswith("<") and t.endswith(">") and t != "<unk>" for t in vocab]
    # first token of a line -> the tokens that follow it (None: the line has one token)
    line_starts = collections.defaultdict(set)
    for doc in reference_documents(corpus_lines, tokenizer):
        for ids in doc:
            line_starts[ids[0]].add(ids[1] if len(ids) > 1 else None)
    labels = collections.Counter()
    for rec in records:
        assert sorted(rec) == ["boundary", "input", "label", "seg_id"]
        inputs, seg_id = rec["input"], rec["seg_id"]
        assert inputs.shape == seg_id.shape == (seq_len,)
        seps = np.flatnonzero(inputs == sep_id)
        assert inputs[0] == cls_id and len(seps) == 2 and seps[1] == seq_len - 1
        assert seps[0] >= 2 and seps[1] - seps[0] >= 2  # A and B are non-empty
        expected_seg = [2] + [0] * seps[0] + [1] * (seq_len - 1 - seps[0])
        np.testing.assert_array_equal(seg_id, expected_seg)
        # A always starts at the start of a line of the text.
        follow = line_starts[inputs[1]]
        assert follow and (None in follow or seps[0] == 2 or inputs[2] in follow)
        starts = [
            i for i, t in enumerate(inputs) if not vocab[t].startswith("##") and not is_func[t]
        ]
        np.testing.assert_array_equal(rec["boundary"], starts + [seq_len])
        labels[int(rec["label"][0])] += 1
    assert set(labels) == {0, 1}


def test_same_pass_is_reproducible_and_passes_differ(tmp_path, corpus_path, vocab_and_tokenizer):
    _, tokenizer = vocab_and_tokenizer
    path_a, _ = generate(tokenizer, corpus_path, tmp_path / "a", pass_id=1)
    path_b, _ = generate(tokenizer, corpus_path, tmp_path / "b", pass_id=1)
    path_c, _ = generate(tokenizer, corpus_path, tmp_path / "c", pass_id=2)
    assert path_a.endswith("data.train.pass-1.seq-64.uncased.tfrecord-00000-of-00001")
    assert path_c.endswith("data.train.pass-2.seq-64.uncased.tfrecord-00000-of-00001")
    with open(path_a, "rb") as a, open(path_b, "rb") as b, open(path_c, "rb") as c:
        bytes_a, bytes_b, bytes_c = a.read(), b.read(), c.read()
    assert bytes_a == bytes_b
    assert bytes_a != bytes_c


def test_documents_end_with_their_file(tmp_path, corpus_lines, vocab_and_tokenizer):
    _, tokenizer = vocab_and_tokenizer
    # Two files cut from the text at a paragraph, neither ending in an empty line.
    text_lines = [
        line for line in corpus_lines if not line.startswith("<doc ") and line != "</doc>"
    ]
    blanks = [i for i, line in enumerate(text_lines) if not line.strip()]
    cut = blanks[len(blanks) // 2]
    first, second = text_lines[:cut], text_lines[cut + 1 :]
    while not first[-1].strip():
        first.pop()
    while not second[-1].strip():
        second.pop()
    (tmp_path / "f1.txt").write_text("\n".join(first), encoding="utf-8")
    (tmp_path / "f2.txt").write_text("\n".join(second), encoding="utf-8")

    paths = [str(tmp_path / "f1.txt"), str(tmp_path / "f2.txt")]
    docs = [
        [s.tolist() for s in doc]
        for doc in cpd.iter_documents(paths, tokenizer.convert_text_to_ids)
    ]
    expected = reference_documents(first, tokenizer) + reference_documents(second, tokenizer)
    assert docs == expected
    # The last document of f1 (no trailing empty line) is kept, and is not merged with f2's first.
    assert docs[len(reference_documents(first, tokenizer)) - 1][
        -1
    ] == tokenizer.convert_text_to_ids(first[-1])


def test_min_doc_len_drops_short_documents(tmp_path, corpus_lines, vocab_and_tokenizer):
    _, tokenizer = vocab_and_tokenizer
    path = tmp_path / "c.txt"
    path.write_text("\n".join(corpus_lines), encoding="utf-8")
    lengths = [sum(len(s) for s in d) for d in reference_documents(corpus_lines, tokenizer)]
    min_len = int(np.median(lengths))
    docs = list(cpd.iter_documents([str(path)], tokenizer.convert_text_to_ids, min_len))
    assert [sum(len(s) for s in d) for d in docs] == [n for n in lengths if n >= min_len]


def test_last_document_of_the_corpus_reaches_the_records(
    tmp_path, corpus_lines, vocab_and_tokenizer
):
    vocab, tokenizer = vocab_and_tokenizer
    marker = "zq"  # not a vocabulary word: it splits into the pieces `z ##q`
    lines = corpus_lines[:40] + [""] + [" ".join([marker] * 12) + "." for _ in range(12)]
    (tmp_path / "in.txt").write_text("\n".join(lines), encoding="utf-8")  # no final empty line
    record_path, _ = generate(tokenizer, tmp_path / "in.txt", tmp_path / "out")
    z, q = vocab.index("z"), vocab.index("##q")
    hits = sum(
        int(np.sum((r["input"][:-1] == z) & (r["input"][1:] == q)))
        for r in read_records(record_path)
    )
    # The marker document has 12 * 12 = 144 markers (300 tokens); records drop at most the
    # final 63-token tail of the stream, and A+B of a record skip at most a sentence at a time.
    assert hits >= 12


def test_chunks_carry_their_tail(tmp_path, vocab_and_tokenizer):
    vocab, tokenizer = vocab_and_tokenizer
    # 200 documents of 10 tokens each: shorter than seq_len, so only the carried tails make records.
    words = [w for w in vocab[100:200]]
    rng = random.Random(1)
    lines = []
    for _ in range(200):
        lines += [" ".join(rng.choice(words) for _ in range(5)) for _ in range(2)] + [""]
    (tmp_path / "in.txt").write_text("\n".join(lines), encoding="utf-8")
    _, whole = generate(tokenizer, tmp_path / "in.txt", tmp_path / "whole", seq_len=32)
    path, chunked = generate(
        tokenizer, tmp_path / "in.txt", tmp_path / "chunked", seq_len=32, chunk_tokens=1
    )
    assert whole > 0 and abs(chunked - whole) <= 0.2 * whole
    for rec in read_records(path):
        assert rec["input"][0] == vocab.index("<cls>") and rec["input"][-1] == vocab.index("<sep>")


def test_tasks_split_the_files(tmp_path, corpus_lines, vocab_and_tokenizer):
    vocab, tokenizer = vocab_and_tokenizer
    # Three files, each with its own words, so a record tells which files it came from.
    own_words = [vocab[100:150], vocab[150:200], vocab[200:250]]
    rng = random.Random(2)
    for k, words in enumerate(own_words):
        lines = []
        for _ in range(30):
            lines += [" ".join(rng.choice(words) for _ in range(8)) for _ in range(3)] + [""]
        (tmp_path / f"part-{k}.txt").write_text("\n".join(lines), encoding="utf-8")
    glob = tmp_path / "part-*.txt"
    assert [p.rsplit("/", 1)[1] for p in cpd.task_files(str(glob), 2, 0)] == [
        "part-0.txt",
        "part-2.txt",
    ]

    seen = []
    for task in range(2):
        path, _ = generate(tokenizer, glob, tmp_path / "out", num_task=2, task=task)
        assert path.endswith(f"tfrecord-{task:05d}-of-00002")
        ids = {int(t) for r in read_records(path) for t in r["input"]}
        seen.append(
            {k for k, words in enumerate(own_words) if ids & {vocab.index(w) for w in words}}
        )
    assert seen == [{0, 2}, {1}]
    metas = sorted(p.name for p in (tmp_path / "out").glob("meta.*"))
    assert metas == [f"meta.train.pass-0.seq-64.uncased.json-{t:05d}-of-00002" for t in range(2)]


def test_bad_inputs_raise_one_line_errors(tmp_path, vocab_and_tokenizer):
    _, tokenizer = vocab_and_tokenizer
    with pytest.raises(ValueError, match=r"--input_glob=.*nothing-\*\.txt.* matches no file"):
        generate(tokenizer, tmp_path / "nothing-*.txt", tmp_path / "out")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a fine line\n\nanother line\nbroken \xff byte\n")
    with pytest.raises(ValueError, match=re.escape(f"{bad}:4: not valid UTF-8")):
        generate(tokenizer, bad, tmp_path / "out")
    with pytest.raises(ValueError, match=r"--task=2 must be in \[0, --num_task=2\)"):
        generate(tokenizer, bad, tmp_path / "out", num_task=2, task=2)
    with pytest.raises(ValueError, match="--seq_len=4"):
        generate(tokenizer, bad, tmp_path / "out", seq_len=4)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _run_script(*args):
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "tensorflow" / "create_pretrain_data.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


# Two processes whose Python string hashing differs (PYTHONHASHSEED orders protobuf's feature maps).
WRITE_CLASSIFIER_RECORDS = """
import sys
import classifier_utils, data_utils, tokenization
tokenizer = tokenization.get_tokenizer("word_piece", sys.argv[1])
classifier_utils.create_tfrecord(
    classifier_utils.get_processor("mrpc"), "train", sys.argv[2], sys.argv[3], tokenizer,
    data_utils.setup_special_ids(tokenizer), 32)
"""


@pytest.mark.slow
def test_data_files_are_byte_identical_across_processes(tmp_path, corpus_path, vocab_and_tokenizer):
    vocab_path = tmp_path / "vocab.txt"
    mrpc = tmp_path / "mrpc"
    mrpc.mkdir()
    rows = [f"{i % 2}\t{i}\t{i + 9}\tthe cat sat on mat {i}\ta dog sat {i}" for i in range(6)]
    (mrpc / "train.tsv").write_text(
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" + "\n".join(rows)
    )
    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"hash-{hash_seed}"
        env = {"PYTHONHASHSEED": hash_seed, "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": ""}
        pretrain_run = subprocess.run(
            [
                sys.executable,
                str(REPO_ROOT / "tensorflow" / "create_pretrain_data.py"),
                f"--input_glob={corpus_path}",
                f"--save_dir={out / 'pretrain'}",
                f"--tokenizer_path={vocab_path}",
                "--seq_len=32",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert pretrain_run.returncode == 0, pretrain_run.stderr[-2000:]
        classifier_run = subprocess.run(
            [
                sys.executable,
                "-c",
                WRITE_CLASSIFIER_RECORDS,
                str(vocab_path),
                str(mrpc),
                str(out / "mrpc"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**env, "PYTHONPATH": str(REPO_ROOT / "tensorflow")},
        )
        assert classifier_run.returncode == 0, classifier_run.stderr[-2000:]
        outputs.append(
            {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*.tfrecord*"))}
        )
    assert len(outputs[0]) == 2 and outputs[0] == outputs[1]


@pytest.mark.slow
def test_script(tmp_path, corpus_path, vocab_and_tokenizer):
    vocab_path = tmp_path / "vocab.txt"
    ok = _run_script(
        f"--input_glob={corpus_path}",
        f"--save_dir={tmp_path / 'out'}",
        f"--tokenizer_path={vocab_path}",
        "--seq_len=32",
        "--pass_id=3",
        "--split=dev",
        "--uncased=False",
    )
    assert ok.returncode == 0, ok.stderr
    assert re.search(r"docs/s, [0-9.]+ tokens/s", ok.stderr)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [
        "data.dev.pass-3.seq-32.cased.tfrecord-00000-of-00001",
        "meta.dev.pass-3.seq-32.cased.json-00000-of-00001",
    ]

    missing = _run_script(f"--input_glob={tmp_path}/none-*.txt", f"--tokenizer_path={vocab_path}")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xc3\x28 invalid\n")
    not_utf8 = _run_script(
        f"--input_glob={bad}", f"--tokenizer_path={vocab_path}", f"--save_dir={tmp_path}"
    )
    for result, message in ((missing, "matches no file"), (not_utf8, f"{bad}:2: not valid UTF-8")):
        assert result.returncode != 0
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("create_pretrain_data.py: error: ") and message in last
