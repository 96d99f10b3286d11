"""SavedModel export (export.py, export_utils.py): in-graph tokenization and input layouts equal to the
Python ones, and an exported model that a fresh process loads and that reproduces the model.

The texts are real GLUE rows (MRPC, SST-2) from ../shared/data when present, else rows written here,
plus texts with accents, CJK, punctuation, control characters and the fuzz texts of the tokenizer
tests. The word-piece vocabulary is BERT's uncased one (`model_test_utils.bert_vocab_path`); the
sentencepiece model is trained here as the tokenizer tests train theirs.
"""

import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import classifier_utils
import data_utils
import export_utils
import model_utils
import modeling
import ops
import race_utils
import tokenization
from model_test_utils import bert_vocab_path, tiny_config
from test_tokenization import SPECIALS, _fuzz_texts, train_spm

REPO = pathlib.Path(__file__).resolve().parent.parent
MAX_SEQ_LENGTH = 32
TASKS = ("mrpc", "sst-2")

# Written when ../shared/data is absent: the formats of GLUE's dev.tsv.
FALLBACK_ROWS = {
    "mrpc": [
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
        "1\t1355540\t1355592\tHe said the foodservice pie business doesn 't fit the company 's "
        'long-term growth strategy .\t" The foodservice pie business does not fit our long-term '
        "growth strategy .",
        "0\t2029631\t2029565\tMagnarelli said Racicot hated the Iraqi regime and looked forward to "
        'using his long years of training in the war .\tHis wife said he was " 100 percent behind '
        'George Bush " and looked forward to using his years of training in the war .',
        "0\t487993\t487952\tThe dollar was at 116.92 yen against the yen , flat on the session , and "
        "at 1.2891 against the Swiss franc , also flat .\tThe dollar was at 116.78 yen JPY= , "
        "virtually flat on the session , and at 1.2871 against the Swiss franc CHF= , down 0.1 "
        "percent .",
    ],
    "sst-2": [
        "sentence\tlabel",
        "it 's a charming and often affecting journey . \t1",
        "unflinchingly bleak and desperate \t0",
        "allows us to hope that nolan is poised to embark a major career as a commercial yet "
        "inventive filmmaker . \t1",
        "the acting , costumes , music , cinematography and sound are all astounding given the "
        "production 's austere locales . \t1",
    ],
}

SPECIAL_TEXTS = [
    "Caf\u00e9 Na\u00efve \u00c0\u00c9\u00ce\u00d5\u00dc cafe\u0301 r\u00e9sum\u00e9 \u00df STRASSE",
    "\u6211\u7231\u5317\u4eac abc\u4e2d\u56fdxyz \U00020000 \u3072\u3089\u304c\u306a \ud55c\uad6d\uc5b4",
    "Hello, world! It's $5.00 (approx.) a^b`c|d \u00abquoted\u00bb\u2014dash\u2026 5\u20ac",
    "a\x00b\ufffdc\u200bd e\x07f\tg\nh\ri\u00a0j\u3000k\u2028l\x0cm\x85n",
    "\u0130stanbul \u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3 \ufb01 \u2460 \uff21\uff22",
    "In 1990, the dog said: ``hello'' \u201cworld\u201d \u2018x\u2019 5,6, 7, and 8,",
    "<eop> [CLS] <cls> unaffable " + "x" * 201 + " " + "y" * 200,
    "",
    "   ",
]

LOADER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # registers the TF Text ops of the text signatures
    import ops

    jobs = json.load(open(sys.argv[1]))
    results = {}
    for name, job in jobs.items():
        loaded = tf.saved_model.load(job["path"])
        graphs = {k: f.graph for k, f in loaded.signatures.items()}
        out = {
            "signatures": sorted(graphs),
            "broadcast": {k: ops.broadcast_matmuls(g) for k, g in graphs.items()},
            "matmuls": {k: sum("MatMul" in o.type for o in ops.graph_operations(g)) for k, g in graphs.items()},
        }
        for call, (signature, inputs) in job["calls"].items():
            feed = {k: tf.constant(v, dtype=tf.string if isinstance(v[0], str) else None)
                    for k, v in inputs.items()}
            outputs = loaded.signatures[signature](**feed)
            out[call] = {k: v.numpy().tolist() for k, v in outputs.items() if v.dtype != tf.string}
        results[name] = out
    json.dump(results, open(sys.argv[2], "w"))
    """
)


def run(args, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def glue_examples(task, shared_data, tmp_path):
    """Real dev (and train) rows of `task`, or the fallback rows."""
    folder = {"mrpc": "MRPC", "sst-2": "SST-2"}[task]
    processor = classifier_utils.get_processor(task)
    if shared_data is not None:
        data_dir = shared_data / "glue" / folder
        examples = processor.get_examples(str(data_dir), "dev")
        if task == "mrpc":  # the shared MRPC files are samples of 6 rows
            examples += processor.get_examples(str(data_dir), "train")
        return examples[:40]
    data_dir = tmp_path / folder
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "dev.tsv").write_text("\n".join(FALLBACK_ROWS[task]) + "\n", encoding="utf-8")
    return processor.get_examples(str(data_dir), "dev")


@pytest.fixture(scope="module")
def word_piece():
    return tokenization.get_tokenizer("word_piece", bert_vocab_path(), uncased=True)


@pytest.fixture(scope="module")
def spm_path(tmp_path_factory):
    return train_spm(tmp_path_factory.mktemp("spm"), SPECIALS + ["1990,"])


def all_texts(shared_data, tmp_path):
    texts = list(SPECIAL_TEXTS) + _fuzz_texts(300)
    for task in TASKS:
        for example in glue_examples(task, shared_data, tmp_path):
            texts += [example.text_a] + ([example.text_b] if example.text_b else [])
    if shared_data is not None:
        sst2 = classifier_utils.get_processor("sst-2")
        texts += [e.text_a for e in sst2.get_examples(str(shared_data / "glue" / "SST-2"), "dev")]
    return texts


# ------------------------------------------------------------------------------ in-graph tokenization
@pytest.mark.parametrize(
    "kind", ["word_piece-uncased", "word_piece-cased", "sent_piece-uncased", "sent_piece-cased"]
)
def test_graph_tokenization_gives_the_python_ids(kind, word_piece, spm_path, shared_data, tmp_path):
    tokenizer_type, case = kind.split("-")
    path = word_piece.path if tokenizer_type == "word_piece" else spm_path
    tokenizer = tokenization.get_tokenizer(tokenizer_type, path, uncased=case == "uncased")
    encoder = export_utils.text_encoder(tokenizer, str(tmp_path))
    texts = all_texts(shared_data, tmp_path)
    got = encoder(tf.constant(texts)).to_list()
    for text, ids in zip(texts, got, strict=True):
        assert ids == tokenizer.convert_text_to_ids(text), ascii(text)
    # Bytes that are not UTF-8 are dropped, as tokenization.py decodes them.
    raw = b"caf\xc3\xa9 \xff\xfe ok \xe4\xb8"
    assert encoder(tf.constant([raw])).to_list()[0] == tokenizer.convert_text_to_ids(raw)


def test_word_piece_vocabulary_is_read_as_tokenization_reads_it(tmp_path):
    # CRLF, a repeated token (no id of its own) and padded lines.
    vocab = tmp_path / "vocab.txt"
    vocab.write_bytes(
        b"[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\n[MASK]\r\nthe\r\nthe\r\n fox \r\n##es\r\n"
    )
    tokenizer = tokenization.get_tokenizer("word_piece", str(vocab))
    (tmp_path / "assets").mkdir()
    encoder = export_utils.text_encoder(tokenizer, str(tmp_path / "assets"))
    texts = ["The foxes, the fox!", "THE cat"]
    assert encoder(tf.constant(texts)).to_list() == [
        tokenizer.convert_text_to_ids(t) for t in texts
    ]


# ------------------------------------------------------------------------------------- input layouts
def test_pair_lengths_are_those_of_truncate_seq_pair():
    rng = np.random.default_rng(0)
    len_a, len_b = rng.integers(0, 40, size=(2, 2000))
    max_length = rng.integers(1, 40, size=2000)
    for limit in np.unique(max_length):
        rows = max_length == limit
        got_a, got_b = export_utils.pair_lengths(
            tf.constant(len_a[rows]), tf.constant(len_b[rows]), int(limit)
        )
        for a, b, new_a, new_b in zip(
            len_a[rows], len_b[rows], got_a.numpy(), got_b.numpy(), strict=True
        ):
            tokens_a, tokens_b = list(range(a)), list(range(b))
            classifier_utils.truncate_seq_pair(tokens_a, tokens_b, int(limit))
            assert (new_a, new_b) == (len(tokens_a), len(tokens_b)), (a, b, limit)


@pytest.mark.parametrize("task", TASKS)
def test_classifier_inputs_are_convert_single_example(task, word_piece, shared_data, tmp_path):
    special_ids = data_utils.setup_special_ids(word_piece)
    examples = glue_examples(task, shared_data, tmp_path)
    # Texts longer than max_seq_length, an empty text_b, one with no pieces.
    long_text = " ".join(e.text_a for e in examples[:3])
    examples += [
        classifier_utils.InputExample("a", long_text, "short" if task == "mrpc" else None, "0"),
        classifier_utils.InputExample("b", "tiny", long_text if task == "mrpc" else None, "0"),
        classifier_utils.InputExample("c", "no b", "" if task == "mrpc" else None, "0"),
        classifier_utils.InputExample(
            "d", "only spaces in b", "  \x00 " if task == "mrpc" else None, "0"
        ),
    ]
    encoder = export_utils.text_encoder(word_piece, str(tmp_path))
    ids_b = None
    if task == "mrpc":
        ids_b = encoder(tf.constant([e.text_b or "" for e in examples]))
    got = export_utils.classifier_inputs(
        encoder(tf.constant([e.text_a for e in examples])), ids_b, special_ids, MAX_SEQ_LENGTH
    )
    for i, example in enumerate(examples):
        expected, _ = classifier_utils.convert_single_example(
            example, ["0", "1"], MAX_SEQ_LENGTH, word_piece.convert_text_to_ids, special_ids
        )
        assert got[0][i].numpy().tolist() == expected.input_ids, example.guid
        assert got[1][i].numpy().tolist() == expected.segment_ids, example.guid
        assert got[2][i].numpy().tolist() == expected.input_mask, example.guid


RACE_ARTICLE = (
    "Tom has a small brown dog called Max. One Sunday morning Max ran out of the garden and did "
    "not come back. Tom looked for him in the park, at the school and near the river. " * 3
)
RACE_QUESTIONS = [
    ("Max is Tom's _ .", ["cat", "dog", "brother", "teacher"]),
    ("Where did Tom look for Max first?", ["In the river.", "At the school.", "In the park.", "_"]),
    ("_ _ long question " * 6 + "?", ["a", "b b", "", "the garden"]),
]


def test_race_inputs_are_convert_example(word_piece, tmp_path):
    special_ids = data_utils.setup_special_ids(word_piece)
    max_seq_length, max_qa_length = 48, 12
    encoder = export_utils.text_encoder(word_piece, str(tmp_path))
    question = tf.constant([q for q, _ in RACE_QUESTIONS])
    options = tf.constant([o for _, o in RACE_QUESTIONS])
    qa = export_utils.race_qa_texts(question, options)
    n = race_utils.NUM_CHOICES
    got = export_utils.race_inputs(
        encoder(tf.reshape(qa, [-1])),
        encoder(tf.constant([RACE_ARTICLE] * (len(RACE_QUESTIONS) * n))),
        special_ids,
        max_seq_length,
        max_qa_length,
    )
    for i, (q, opts) in enumerate(RACE_QUESTIONS):
        qa_texts = [race_utils.qa_text(q, o) for o in opts]
        assert [t.decode() for t in qa[i].numpy()] == qa_texts
        example = race_utils.RaceExample("x", 0, "middle", RACE_ARTICLE, qa_texts, 0)
        expected, _ = race_utils.convert_example(
            example, word_piece.convert_text_to_ids, special_ids, max_seq_length, max_qa_length
        )
        rows = slice(i * n, (i + 1) * n)
        assert got[0][rows].numpy().reshape(-1).tolist() == expected.input_ids
        assert got[1][rows].numpy().reshape(-1).tolist() == expected.segment_ids
        assert got[2][rows].numpy().reshape(-1).tolist() == expected.input_mask


# --------------------------------------------------------------------------------------------- export
def serving_config(vocab_size):
    """The tiny config, initialized widely: the outputs of different rows differ by far more than the
    1e-5 the comparisons allow (by ~1e-4 with the default init_std)."""
    return tiny_config(vocab_size=vocab_size, init="normal", init_std=0.3)


def tiny_model(vocab_size, tasks=TASKS, seed=1):
    """A tiny model with a classification head per task, its variables built (random values)."""
    model = modeling.FunnelTFM(serving_config(vocab_size), seed=seed)
    for task in tasks:
        labels = classifier_utils.get_processor(task).labels
        export_utils.build_variables(
            export_utils.ClassificationHead(model, labels, task), MAX_SEQ_LENGTH
        )
    return model


def write_run(model, model_dir, step=3):
    """A training run directory: net_config.json and model.ckpt-{step}."""
    model_dir.mkdir(parents=True, exist_ok=True)
    model.net_config.to_json(str(model_dir / "net_config.json"))
    return model_utils.save_checkpoint(model, str(model_dir / f"model.ckpt-{step}"))


def features(examples, tokenizer):
    """(input_ids, segment_ids, input_mask) numpy [N, L] of classifier_utils (labels unused)."""
    special_ids = data_utils.setup_special_ids(tokenizer)
    rows = [
        classifier_utils.convert_single_example(
            e, None, MAX_SEQ_LENGTH, tokenizer.convert_text_to_ids, special_ids
        )[0]
        for e in examples
    ]
    return tuple(
        np.array([getattr(r, name) for r in rows], dtype)
        for name, dtype in (
            ("input_ids", np.int32),
            ("segment_ids", np.int32),
            ("input_mask", np.float32),
        )
    )


def reference_logits(model, task, inputs):
    labels = classifier_utils.get_processor(task).labels
    head = export_utils.ClassificationHead(model, labels, task)
    return head(*(tf.constant(x) for x in inputs))["logits"].numpy()


def model_calls(inputs, texts):
    """The signature calls of one export: the rows at their full length, cut to their longest row, as
    a batch of 1 and of 64; the raw texts through serve_text and tokenize."""
    ids, seg, mask = inputs
    longest = int((mask == 0).sum(1).max())

    def feed(rows, length=MAX_SEQ_LENGTH):
        return {
            "input_ids": ids[rows, :length].tolist(),
            "segment_ids": seg[rows, :length].tolist(),
            "input_mask": mask[rows, :length].tolist(),
        }

    all_rows = list(range(len(ids)))
    batch_64 = [i % len(ids) for i in range(64)]
    return {
        "full": ("serving_default", feed(all_rows)),
        "cut": ("serving_default", feed(all_rows, longest)),
        "one": ("serving_default", feed([0], longest)),
        "batch_64": ("serving_default", feed(batch_64)),
        "text": ("serve_text", texts),
        "tokenize": ("tokenize", texts),
    }, batch_64


def load_in_fresh_process(jobs, tmp_path):
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    code = f"import sys; sys.path.insert(0, {str(REPO / 'tensorflow')!r})\n" + LOADER
    proc = run(["-c", code, str(tmp_path / "jobs.json"), str(tmp_path / "results.json")])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((tmp_path / "results.json").read_text())


@pytest.mark.slow
def test_exported_model_reproduces_the_model_in_a_fresh_process(
    word_piece, spm_path, shared_data, tmp_path
):
    model = tiny_model(word_piece.get_vocab_size())
    model_dir = tmp_path / "exp"
    checkpoint = write_run(model, model_dir)
    # A separate evaluation job's directory: best_result.json names the training run's checkpoint, whose
    # directory holds net_config.json.
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    (eval_dir / "best_result.json").write_text(json.dumps({"step": 3, "path": checkpoint}))
    # The vocabulary the export reads is gone when the SavedModel is loaded: it is an asset.
    vocab = shutil.copy(word_piece.path, tmp_path / "vocab.uncased.txt")
    jobs, expected = {}, {}
    for task in TASKS:
        export_dir = tmp_path / "serving" / task
        proc = run(
            [
                str(REPO / "tensorflow" / "export.py"),
                "--task=classification",
                f"--task_name={task}",
                f"--model_dir={model_dir if task == 'mrpc' else eval_dir}",
                f"--tokenizer_path={vocab}",
                f"--max_seq_length={MAX_SEQ_LENGTH}",
                f"--export_dir={export_dir}",
            ]
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert proc.stdout.strip().splitlines()[-1] == str(export_dir / "3")
        examples = glue_examples(task, shared_data, tmp_path)
        inputs = features(examples, word_piece)
        texts = {"text_a": [e.text_a for e in examples]}
        if task == "mrpc":
            texts["text_b"] = [e.text_b for e in examples]
        calls, batch_64 = model_calls(inputs, texts)
        jobs[task] = {"path": str(export_dir / "3"), "calls": calls}
        expected[task] = (inputs, reference_logits(model, task, inputs), batch_64)

    # A sentencepiece tokenizer, exported with the library functions.
    sp = tokenization.get_tokenizer("sent_piece", spm_path, uncased=True)
    sp_model = tiny_model(sp.get_vocab_size(), tasks=("sst-2",), seed=2)
    head = export_utils.ClassificationHead(sp_model, ("0", "1"), "sst-2")
    special_ids = data_utils.setup_special_ids(sp)
    module = export_utils.ServingModule(
        head, special_ids, MAX_SEQ_LENGTH, export_utils.text_encoder(sp, str(tmp_path))
    )
    sp_path = export_utils.save(module, str(tmp_path / "serving" / "sp"), 1)
    sp_examples = glue_examples("sst-2", shared_data, tmp_path)[:8]
    sp_examples += [classifier_utils.InputExample(str(i), t) for i, t in enumerate(SPECIAL_TEXTS)]
    sp_inputs = features(sp_examples, sp)
    calls, batch_64 = model_calls(sp_inputs, {"text_a": [e.text_a for e in sp_examples]})
    jobs["sp"] = {"path": sp_path, "calls": calls}
    expected["sp"] = (sp_inputs, reference_logits(sp_model, "sst-2", sp_inputs), batch_64)
    os.remove(vocab)

    results = load_in_fresh_process(jobs, tmp_path)
    for name, (inputs, logits, batch_64) in expected.items():
        assert np.std(logits[:, 1] - logits[:, 0]) > 0.1  # rows differ far beyond the tolerance
        result = results[name]
        assert result["signatures"] == ["serve_text", "serving_default", "tokenize"]
        for signature in ("serve_text", "serving_default"):
            assert result["matmuls"][signature] > 0  # the checker sees the loaded model's products
            assert result["broadcast"][signature] == [], (name, signature)
        for call in ("full", "cut", "text"):
            np.testing.assert_allclose(
                result[call]["logits"], logits, rtol=0, atol=1e-5, err_msg=f"{name} {call}"
            )
        np.testing.assert_allclose(result["one"]["logits"], logits[:1], rtol=0, atol=1e-5)
        np.testing.assert_allclose(
            result["batch_64"]["logits"], logits[batch_64], rtol=0, atol=1e-5
        )
        probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        np.testing.assert_allclose(result["text"]["probabilities"], probabilities, atol=1e-6)
        for k, key in enumerate(("input_ids", "segment_ids", "input_mask")):
            assert result["tokenize"][key] == inputs[k].tolist(), (name, key)


def model_feed(arrays):
    """The keyword inputs of serving_default from (input_ids, segment_ids, input_mask) arrays."""
    names = ("input_ids", "segment_ids", "input_mask")
    return {name: tf.constant(x) for name, x in zip(names, arrays, strict=True)}


def test_race_and_squad_heads_export_and_reproduce(word_piece, tmp_path):
    tokenizer_ids = data_utils.setup_special_ids(word_piece)
    config = serving_config(word_piece.get_vocab_size())
    rng = np.random.default_rng(0)
    length, n = 16, race_utils.NUM_CHOICES

    def batch(shape, real):
        ids = rng.integers(1000, 2000, size=shape).astype(np.int32)
        seg = np.zeros(shape, np.int32)
        mask = np.zeros(shape, np.float32)
        ids[..., 0], seg[..., 0] = tokenizer_ids.cls_id, data_utils.SEG_ID_CLS
        seg[..., real // 2 :] = data_utils.SEG_ID_B
        ids[..., real:], seg[..., real:], mask[..., real:] = tokenizer_ids.pad_id, 0, 1.0
        return ids, seg, mask

    race = export_utils.RaceHead(modeling.FunnelTFM(config, seed=3))
    squad = export_utils.SquadHead(modeling.FunnelTFM(config, seed=4), start_n_top=3, end_n_top=2)
    race_inputs = batch((3, n, length), 11)
    squad_inputs = batch((3, length), 11)
    p_mask = np.zeros((3, length), np.float32)
    p_mask[:, 1:4] = 1.0
    p_mask[:, 11:] = 1.0
    for head in (race, squad):
        export_utils.build_variables(head, length)
    expected_race = race(*race_inputs)
    expected_squad = squad(*squad_inputs, p_mask)

    race_module = export_utils.ServingModule(
        race,
        tokenizer_ids,
        length,
        export_utils.text_encoder(word_piece, str(tmp_path)),
        max_qa_length=6,
    )
    loaded = tf.saved_model.load(export_utils.save(race_module, str(tmp_path / "race"), 1))
    # Inputs cut after the longest choice: padded back in the graph.
    got = loaded.signatures["serving_default"](**model_feed(x[..., :12] for x in race_inputs))
    np.testing.assert_allclose(got["logits"], expected_race["logits"], atol=1e-5)
    texts = {
        "article": tf.constant([RACE_ARTICLE]),
        "question": tf.constant([RACE_QUESTIONS[0][0]]),
        "options": tf.constant([RACE_QUESTIONS[0][1]]),
    }
    tokenized = loaded.signatures["tokenize"](**texts)
    assert tokenized["input_ids"].shape == [1, n, length]
    np.testing.assert_allclose(
        loaded.signatures["serve_text"](**texts)["logits"],
        race(**tokenized)["logits"],
        atol=1e-5,
    )

    squad_module = export_utils.ServingModule(squad, tokenizer_ids, length)
    loaded = tf.saved_model.load(export_utils.save(squad_module, str(tmp_path / "squad"), 1))
    assert list(loaded.signatures) == ["serving_default"]
    got = loaded.signatures["serving_default"](
        **model_feed(x[:, :12] for x in squad_inputs), p_mask=tf.constant(p_mask[:, :12])
    )
    for key, value in expected_squad.items():
        np.testing.assert_allclose(got[key], value, atol=1e-5, err_msg=key)
    assert not ops.broadcast_matmuls(loaded.signatures["serving_default"].graph)


def test_inputs_longer_than_max_seq_length_are_refused(word_piece, tmp_path):
    model = tiny_model(word_piece.get_vocab_size(), tasks=("sst-2",))
    head = export_utils.ClassificationHead(model, ("0", "1"), "sst-2")
    module = export_utils.ServingModule(
        head, data_utils.setup_special_ids(word_piece), MAX_SEQ_LENGTH
    )
    module.signatures()
    ids = tf.zeros([2, MAX_SEQ_LENGTH + 1], tf.int32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="longer than max_seq_length=32"):
        module.serving_default(ids, ids, tf.zeros([2, MAX_SEQ_LENGTH + 1]))


def test_pair_tasks_are_the_processors_with_two_texts():
    pair = {n for n, cls in classifier_utils.PROCESSORS.items() if cls(n).is_pair}
    assert pair == {
        "mnli_matched", "mnli_mismatched", "mrpc", "qqp", "rte", "snli", "wnli", "qnli", "sts-b",
        "diagnostic", "amazon5", "amazon2", "ag", "dbpedia",
    }  # fmt: skip


def test_a_saved_model_directory_appears_whole_or_not_at_all(tmp_path):
    path = tmp_path / "serving" / "7"
    orphan = tmp_path / "serving" / ".tmp-0123-7"
    (orphan / "variables").mkdir(parents=True)  # what a killed export left
    with data_utils.atomic_output_path(str(path)) as tmp:
        os.makedirs(os.path.join(tmp, "variables"))
        pathlib.Path(tmp, "saved_model.pb").write_bytes(b"x")
        assert not path.exists()
    assert sorted(p.name for p in (tmp_path / "serving").iterdir()) == ["7"]
    assert (path / "saved_model.pb").read_bytes() == b"x"
    with (
        pytest.raises(RuntimeError),
        data_utils.atomic_output_path(str(tmp_path / "serving" / "8")) as tmp,
    ):
        os.makedirs(os.path.join(tmp, "variables"))
        raise RuntimeError("killed")
    assert sorted(p.name for p in (tmp_path / "serving").iterdir()) == ["7"]


# -------------------------------------------------------------------------------------- bad input
def test_a_model_dir_without_checkpoint_is_a_one_line_error(word_piece, tmp_path):
    model_dir = tmp_path / "exp"
    model_dir.mkdir()
    tiny_config(vocab_size=word_piece.get_vocab_size()).to_json(str(model_dir / "net_config.json"))
    proc = run(
        [
            str(REPO / "tensorflow" / "export.py"),
            "--task_name=mrpc",
            f"--model_dir={model_dir}",
            f"--tokenizer_path={word_piece.path}",
            f"--export_dir={tmp_path / 'serving'}",
        ]
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"export.py: error: no checkpoint found in directory {model_dir}", proc.stderr[
        -2000:
    ]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "serving").exists()


def test_saving_leaves_absl_logging_as_it_was(word_piece, tmp_path):
    """tf.saved_model.save sets absl's logger to WARNING; the export's own INFO lines must still show."""
    head = export_utils.ClassificationHead(
        modeling.FunnelTFM(serving_config(word_piece.get_vocab_size())), ["0", "1"], "mrpc"
    )
    export_utils.build_variables(head, 16)
    module = export_utils.ServingModule(head, data_utils.setup_special_ids(word_piece), 16)
    absl_logger = logging.getLogger("absl")
    before = absl_logger.level
    absl_logger.setLevel(logging.INFO)
    try:
        export_utils.save(module, str(tmp_path / "serving"), 1)
        assert absl_logger.level == logging.INFO
    finally:
        absl_logger.setLevel(before)
