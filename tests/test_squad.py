"""SQuAD end to end: the whole chain learns, and squad.py writes every output file.

The data are the real SQuAD 2.0 files of ../shared/data when present (read in place, never copied);
otherwise SQuAD-format files the tests write.
"""

import functools
import http.server
import json
import os
import pathlib
import re
import subprocess
import sys
import threading

import pytest
import tensorflow as tf

import data_utils
import modeling
import optimization
import squad_metrics
import squad_prepro
import tokenization
import training
from model_test_utils import bert_vocab_path, tiny_config

REPO = pathlib.Path(__file__).resolve().parent.parent
SPECIALS = ["<pad>", "<unk>", "<cls>", "<sep>", "<mask>"]
SEQ_LEN = 128
QUERY_LEN = 24


def synthetic_squad(num_paragraphs=8):
    """A SQuAD 2.0 dict of short paragraphs, 8 questions each (6 answerable, 2 not)."""
    rivers = ["Amber", "Birch", "Cedar", "Delta", "Ember", "Fjord", "Grove", "Heron", "Iris"]
    paragraphs = []
    for p in range(num_paragraphs):
        facts = [(rivers[(p + i) % 9], 10 * p + 3 * i + 1, 1900 + 7 * p + i) for i in range(3)]
        context = " ".join(
            f"The {name} river runs {km} kilometres and was mapped in {year}."
            for name, km, year in facts
        )
        qas = []
        for i, (name, km, year) in enumerate(facts):
            for question, answer in (
                (f"How long is the {name} river?", f"{km} kilometres"),
                (f"When was the {name} river mapped?", str(year)),
            ):
                qas.append(
                    {
                        "id": f"p{p}-{len(qas)}",
                        "question": question,
                        "answers": [{"text": answer, "answer_start": context.index(answer)}],
                        "is_impossible": False,
                    }
                )
            if i < 2:
                qas.append(
                    {
                        "id": f"p{p}-{len(qas)}",
                        "question": f"Who named the {name} river?",
                        "answers": [],
                        "plausible_answers": [],
                        "is_impossible": True,
                    }
                )
        paragraphs.append({"context": context, "qas": qas})
    return {"version": "v2.0", "data": [{"title": "rivers", "paragraphs": paragraphs}]}


def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return path


def memorization_set(shared_data, tmp_path, num_questions=64):
    """A v2 file of `num_questions` questions whose paragraphs fit one SEQ_LEN window."""
    if shared_data is None:
        return write_json(tmp_path / "train.json", synthetic_squad())
    with open(shared_data / "squad" / "cs224n_split" / "dev-v2.0.json") as f:
        data = json.load(f)["data"]
    paragraphs = [p for article in data for p in article["paragraphs"]]
    # The shortest paragraphs, whole, until there are enough questions.
    paragraphs.sort(key=lambda p: len(p["context"]))
    chosen, count = [], 0
    for paragraph in paragraphs:
        if count >= num_questions:
            break
        qas = paragraph["qas"][: num_questions - count]
        chosen.append({"context": paragraph["context"], "qas": qas})
        count += len(qas)
    return write_json(
        tmp_path / "train.json", {"version": "v2.0", "data": [{"title": "t", "paragraphs": chosen}]}
    )


def write_vocab(path, squad_path):
    """A word-piece vocabulary holding every word of the file: no <unk> in the tests."""
    basic = tokenization.BasicTokenizer(uncased=True)
    words = set()
    with open(squad_path) as f:
        for article in json.load(f)["data"]:
            for paragraph in article["paragraphs"]:
                words.update(basic.tokenize(paragraph["context"]))
                for qa in paragraph["qas"]:
                    words.update(basic.tokenize(qa["question"]))
    path.write_text("\n".join(SPECIALS + sorted(words)) + "\n")
    return path


@pytest.mark.slow
def test_a_tiny_model_memorizes_64_questions_through_the_whole_chain(tmp_path, shared_data):
    """Features, loss, beam decoding into character spans, null threshold and scoring agree.

    About 80 s on 2 cores: 300 steps of batch 16 for a d_model 64 model, one window per question.
    """
    squad_path = memorization_set(shared_data, tmp_path)
    tokenizer = tokenization.get_tokenizer(
        "word_piece", str(write_vocab(tmp_path / "vocab.txt", squad_path))
    )
    special_ids = data_utils.setup_special_ids(tokenizer)
    prepro = dict(
        tokenizer=tokenizer,
        special_ids=special_ids,
        max_seq_length=SEQ_LEN,
        doc_stride=64,
        max_query_length=QUERY_LEN,
        output_dir=str(tmp_path / "proc"),
        num_workers=1,
    )
    train_file, _ = squad_prepro.create_squad_tfrecord(str(squad_path), True, "v2", **prepro)
    eval_file, eval_meta = squad_prepro.create_squad_tfrecord(
        str(squad_path), False, "v2", **prepro
    )
    examples = squad_prepro.read_squad_examples(str(squad_path), False, "v2")
    assert len(examples) == 64 or shared_data is None
    paths = squad_prepro.squad_file_paths(
        str(tmp_path / "proc"), tokenizer.name, SEQ_LEN, QUERY_LEN, False, "v2"
    )
    features = list(squad_prepro.read_eval_features(paths["features"]))

    config = tiny_config(
        block_size="2_2",
        decoder_size="1",
        d_model=64,
        d_embed=64,
        n_head=4,
        d_head=16,
        d_inner=128,
        vocab_size=tokenizer.get_vocab_size(),
        dropout=0.0,
        dropatt=0.0,
    )
    model = modeling.FunnelTFM(config, rel_attn_impl="rel_shift")

    def loss_fn(batch, is_training):
        per_example_loss, _ = model.get_squad_loss(batch, is_training)
        return tf.reduce_mean(per_example_loss), {}

    def train_dataset_fn(input_context):
        return squad_prepro.make_dataset(
            train_file, SEQ_LEN, True, 16, input_context=input_context, seed=0
        )

    strategy = tf.distribute.get_strategy()
    opt = optimization.OptimizerConfig(learning_rate=2e-3, warmup_steps=50, weight_decay=0.0)
    run = training.RunConfig(
        model_dir=str(tmp_path / "exp"), train_steps=300, train_batch_size=16, iterations=100
    )
    result = training.train(strategy, loss_fn, train_dataset_fn, [model], opt, run)
    assert result["loss"] < 0.1

    def predict_fn(batch):
        return {**model.get_squad_predictions(batch, 5, 5), "unique_ids": batch["unique_ids"]}

    def eval_dataset_fn(input_context):
        return squad_prepro.make_dataset(
            eval_file, SEQ_LEN, False, 16, num_features=eval_meta["num_features"]
        )

    outputs = training.Predictor(strategy, predict_fn)(eval_dataset_fn)
    results = {
        int(uid): {k: v[i] for k, v in outputs.items()}
        for i, uid in enumerate(outputs["unique_ids"])
        if uid != squad_prepro.PAD_UNIQUE_ID
    }
    assert len(results) == len(features)
    predictions, _, null_odds = squad_metrics.decode_predictions(examples, features, results)
    metrics = squad_metrics.evaluate_v2(examples, predictions, null_odds)
    assert metrics["best_f1"] >= 90, metrics
    # The answerable questions get their answer text back from the character spans.
    assert metrics["has_ans_f1"] >= 0.9, metrics


# ------------------------------------------------------------------------------------------ squad.py
def sample_file(shared_data, tmp_path):
    if shared_data is not None:
        return shared_data / "squad" / "dev-v2.0.json"
    return write_json(tmp_path / "dev-v2.0.json", synthetic_squad(2))


TINY_MODEL = [
    "--block_size=1_1",
    "--decoder_size=1",
    "--d_model=32",
    "--d_embed=32",
    "--n_head=2",
    "--d_head=16",
    "--d_inner=64",
]


def run_squad(*flags, script="squad.py"):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, str(REPO / "tensorflow" / script), *flags],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def common_flags(tmp_path, vocab):
    return [
        f"--output_dir={tmp_path / 'proc'}",
        f"--model_dir={tmp_path / 'exp'}",
        f"--tokenizer_path={vocab}",
        "--max_seq_length=64",
        "--max_query_length=16",
        "--doc_stride=32",
        "--num_core_per_host=1",
        "--predict_batch_size=8",
    ]


@pytest.mark.slow
def test_squad_script_trains_predicts_every_checkpoint_and_ensembles(tmp_path, shared_data):
    squad_file = sample_file(shared_data, tmp_path)
    flags = common_flags(tmp_path, bert_vocab_path())
    train = run_squad(
        "--do_train",
        "--do_predict",
        f"--train_file={squad_file}",
        f"--predict_file={squad_file}",
        *TINY_MODEL,
        "--train_steps=4",
        "--train_batch_size=4",
        "--iterations=2",
        "--save_steps=2",
        "--retain_all",
        *flags,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    exp = tmp_path / "exp"
    examples = squad_prepro.read_squad_examples(str(squad_file), False, "v2")
    ids = {e.qas_id for e in examples}
    best = json.loads((exp / "best_result.json").read_text())
    for step in (2, 4):
        prefix = exp / "predict" / str(step)
        predictions = json.loads(pathlib.Path(f"{prefix}.predictions.json").read_text())
        null_odds = json.loads(pathlib.Path(f"{prefix}.null_odds.json").read_text())
        nbest = json.loads(pathlib.Path(f"{prefix}.nbest_predictions.json").read_text())
        final = json.loads(pathlib.Path(f"{prefix}.final_predictions.json").read_text())
        metrics = json.loads(pathlib.Path(f"{prefix}.metrics.json").read_text())
        assert set(predictions) == set(null_odds) == set(nbest) == set(final) == ids
        # The metrics file is the official evaluation of the written predictions at the null
        # threshold of the final answers (--na_threshold 0): exact and f1 are the final answers'.
        expected = squad_metrics.evaluate_v2(examples, predictions, null_odds, na_prob_thresh=0.0)
        for key, value in expected.items():
            assert metrics[key] == pytest.approx(value), key
        assert final == squad_metrics.apply_null_threshold(predictions, null_odds, 0.0)
        of_final = squad_metrics.evaluate_v2(examples, final, {q: 0.0 for q in ids})
        assert (metrics["exact"], metrics["f1"]) == pytest.approx(
            (of_final["exact"], of_final["f1"])
        )
        assert all(abs(sum(e["probability"] for e in nbest[q]) - 1) < 1e-4 for q in ids)
    steps = {2: None, 4: None}
    for step in steps:
        steps[step] = json.loads((exp / "predict" / f"{step}.metrics.json").read_text())
    assert best["best_f1"] == max(m["best_f1"] for m in steps.values())

    ensemble = run_squad(
        "--do_ensemble",
        f"--ensemble_ckpts={exp / 'model.ckpt-2'},{exp / 'model.ckpt-4'}",
        f"--predict_file={squad_file}",
        f"--ensemble_output_file={tmp_path / 'ensemble.json'}",
        "--search_threshold",
        *flags,
    )
    assert ensemble.returncode == 0, ensemble.stderr[-3000:]
    answers = json.loads((tmp_path / "ensemble.json").read_text())
    metrics = json.loads((tmp_path / "ensemble.ensemble.metrics.json").read_text())
    assert set(answers) == ids
    # With the searched threshold the written answers score best_f1, the f1 the metrics report.
    assert squad_metrics.evaluate_v2(examples, answers, {q: 0.0 for q in ids})[
        "f1"
    ] == pytest.approx(metrics["best_f1"])
    assert metrics["f1"] == pytest.approx(metrics["best_f1"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda qa: qa.pop("answers"), r"train.json: question q1 has no 'answers'"),
        (lambda qa: qa["answers"][0].update(answer_start=10**6), None),
        (lambda qa: qa["answers"][0].update(text="not in the context"), None),
    ],
    ids=["missing_answers", "offset_outside_context", "text_does_not_match"],
)
def test_bad_squad_examples(tmp_path, change, message):
    data = synthetic_squad(2)
    qa = data["data"][0]["paragraphs"][0]["qas"][1]
    qa["id"] = "q1"
    change(qa)
    train_file = write_json(tmp_path / "train.json", data)
    result = run_squad(
        "--prepro_split=train",
        f"--train_file={train_file}",
        *common_flags(tmp_path, bert_vocab_path()),
    )
    if message:
        assert result.returncode != 0
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("squad.py: error: ") and "Traceback" not in result.stderr
        assert re.search(message, last), last
    else:
        # A user wants dirty training answers skipped and counted, not a failed run.
        assert result.returncode == 0, result.stderr[-3000:]
        meta = next((tmp_path / "proc").glob("*.train.meta.json"))
        assert json.loads(meta.read_text())["skipped_ids"] == ["q1"]


@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "--predict_file is required"),
        (
            ["--predict_file=dev.json", "--target_eval_key=bestf1"],
            "--target_eval_key='bestf1' is not a SQuAD 2.0 score: one of best_f1, best_exact, f1",
        ),
    ],
)
def test_squad_flags_are_validated_before_any_work(tmp_path, flags, message):
    result = run_squad("--do_predict", *flags, *common_flags(tmp_path, "vocab.txt"))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(f"squad.py: error: {message}")


@pytest.fixture
def squad_mirror(tmp_path, shared_data):
    """A loopback HTTP server standing in for the SQuAD site: train-v2.0.json and dev-v2.0.json."""
    served = tmp_path / "served"
    served.mkdir()
    sample = sample_file(shared_data, tmp_path).read_text()
    for name in ("train-v2.0.json", "dev-v2.0.json"):
        (served / name).write_text(sample)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("script", ["prepro_squad.sh", "preprp_squad.sh"])
def test_prepro_script_downloads_and_writes_parallel_shards(tmp_path, squad_mirror, script):
    env = dict(
        os.environ,
        SQUAD_URL=squad_mirror,
        DATA_DIR=str(tmp_path / "data"),
        OUTPUT_DIR=str(tmp_path / "proc"),
        TOKENIZER_PATH=str(bert_vocab_path()),
        NUM_PROC="2",
        MAX_SEQ_LENGTH="64",
        PYTHON=sys.executable,
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    cmd = ["bash", str(REPO / "scripts" / script), "--max_query_length=16", "--doc_stride=32"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "dev-v2.0.json",
        "train-v2.0.json",
    ]
    names = sorted(p.name for p in (tmp_path / "proc").iterdir())
    for shard in (0, 1):
        assert f"vocab.txt.{shard}.slen-64.qlen-16.train.tfrecord" in names
    assert "vocab.txt.slen-64.qlen-16.eval.features.jsonl" in names
    metas = [json.loads(p.read_text()) for p in (tmp_path / "proc").glob("*.train.meta.json")]
    examples = squad_prepro.read_squad_examples(
        str(tmp_path / "data" / "dev-v2.0.json"), True, "v2"
    )
    assert sum(m["num_examples"] for m in metas) == len(examples)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["gpu_squad.sh", "tpu_squad.sh"])
def test_recipe_scripts_use_only_squad_flags(script):
    # With every step off, squad.py stops right after parsing: an unknown flag would fail the parsing.
    cmd = ["bash", str(REPO / "scripts" / script), "--do_train=False", "--do_predict=False"]
    env = dict(os.environ, PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("squad.py: error: nothing to do"), proc.stderr[-2000:]
