"""End-to-end tests of classifier.py: finetune the golden tiny model on MRPC and STS-B, evaluate, submit.

The scripts run in subprocesses, as a user runs them. The data are the real GLUE files of ../shared/data
when present; otherwise files in the same format that the test writes. The metrics the script reports are
checked against scikit-learn / SciPy computed from the per-example predictions it writes.
"""

import collections
import json
import os
import pathlib
import shutil
import string
import subprocess
import sys

import numpy as np
import pytest
import scipy.special
import scipy.stats
import sklearn.metrics

import tokenization
from model_test_utils import summary_scalars

REPO = pathlib.Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "fixtures" / "golden" / "tiny_relshift"
VOCAB_SIZE = 1000  # the golden model's

MRPC_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
STSB_HEADER = (
    "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
)
WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "under",
    "mat",
    "log",
    "big",
    "small",
    "red",
    "blue",
]


def _sentence(rng, n=8):
    return " ".join(rng.choice(WORDS, n)) + " ."


def _write_lines(path, lines, line_end="\n"):
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("".join(line + line_end for line in lines))


def glue_dir(tmp_path, shared_data, task):
    """A data dir with train/dev (the real files when available) and a self-written test.tsv."""
    folder = {"mrpc": "MRPC", "sts-b": "STS-B"}[task]
    data_dir = tmp_path / "glue" / folder
    data_dir.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for split in ("train", "dev"):
        if shared_data is not None:
            os.symlink(shared_data / "glue" / folder / f"{split}.tsv", data_dir / f"{split}.tsv")
            continue
        rows = []
        for i in range(8):
            a, b = _sentence(rng), _sentence(rng)
            if task == "mrpc":
                rows.append(f"{i % 2}\t{i}\t{i + 100}\t{a}\t{b}")
            else:
                rows.append(f"{i}\tmain\tf\t2012\t{i}\tnone\tnone\t{a}\t{b}\t{i * 0.6:.1f}")
        header = MRPC_HEADER if task == "mrpc" else STSB_HEADER
        _write_lines(
            data_dir / f"{split}.tsv", [header, *rows], "\r\n" if split == "train" else "\n"
        )
    test_rows = [f"{i}\t{i}\t{i + 100}\t{_sentence(rng)}\t{_sentence(rng)}" for i in range(5)]
    _write_lines(data_dir / "test.tsv", ["index\t#1 ID\t#2 ID\t#1 String\t#2 String", *test_rows])
    return data_dir


def write_vocab(path, data_dirs):
    """A 1000-entry word-piece vocabulary: specials, characters, then the data's most frequent words."""
    basic = tokenization.BasicTokenizer(uncased=True)
    counts = collections.Counter()
    for data_dir in data_dirs:
        for tsv in sorted(pathlib.Path(data_dir).glob("*.tsv")):
            counts.update(basic.tokenize(tsv.read_text(encoding="utf-8")))
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = ["<pad>", "<cls>", "<sep>", "<unk>", "<mask>", *chars, *("##" + c for c in chars)]
    seen = set(vocab)
    for word, _ in counts.most_common():
        if len(vocab) == VOCAB_SIZE:
            break
        if word not in seen:
            vocab.append(word)
            seen.add(word)
    vocab += [f"[unused{i}]" for i in range(VOCAB_SIZE - len(vocab))]
    path.write_text("\n".join(vocab) + "\n")
    return path


def run_script(script, *flags, check=True):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, str(REPO / "tensorflow" / script), *flags],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def common_flags(task, data_dir, tmp_path, vocab):
    return [
        f"--task_name={task}",
        f"--data_dir={data_dir}",
        f"--output_dir={tmp_path / 'proc_data' / task}",
        f"--model_dir={tmp_path / 'exp' / task}",
        "--uncased=True",
        "--tokenizer_type=word_piece",
        f"--tokenizer_path={vocab}",
        "--max_seq_length=32",
        "--num_hosts=1",
        "--num_core_per_host=1",
    ]


def train_flags():
    # The seed README's spelling (--model_config_path); dropout 0 makes the loss curve deterministic.
    return [
        f"--model_config_path={GOLDEN / 'net_config.json'}",
        f"--init_checkpoint={GOLDEN / 'model.ckpt'}",
        "--overwrite_keys=dropout,dropatt",
        "--dropout=0",
        "--dropatt=0",
        "--train_batch_size=4",
        "--learning_rate=1e-3",
        "--train_steps=16",
        "--warmup_steps=2",
        "--iterations=8",
        "--save_steps=8",
        "--log_freq=4",
        "--eval_batch_size=4",
    ]


def read_eval(model_dir, step):
    base = model_dir / "eval" / f"dev.ckpt-{step}"
    metrics = json.loads(pathlib.Path(f"{base}.metrics.json").read_text())
    lines = pathlib.Path(f"{base}.predictions.jsonl").read_text().splitlines()
    return metrics, [json.loads(line) for line in lines]


@pytest.fixture
def vocab(tmp_path, shared_data):
    dirs = [glue_dir(tmp_path / "v", shared_data, task) for task in ("mrpc", "sts-b")]
    return write_vocab(tmp_path / "vocab.uncased.txt", dirs)


@pytest.mark.slow
def test_mrpc_finetune_eval_submit(tmp_path, shared_data, vocab):
    data_dir = glue_dir(tmp_path, shared_data, "mrpc")
    model_dir = tmp_path / "exp" / "mrpc"
    flags = common_flags("mrpc", data_dir, tmp_path, vocab) + train_flags()
    run_script(
        "run_classifier.py",
        *flags,
        "--do_train=True",
        "--do_eval=True",
        "--do_submit=True",
        "--eval_all_ckpt=True",
        "--retain_best=True",
    )
    losses = dict(summary_scalars(model_dir)["loss"])
    assert sorted(losses) == [4, 8, 12, 16]
    assert losses[16] < losses[4]
    assert (model_dir / "done").is_dir() and (model_dir / "net_config.json").exists()

    n_dev = len((data_dir / "dev.tsv").read_text().splitlines()) - 1
    scores = {}
    for step in (8, 16):
        metrics, predictions = read_eval(model_dir, step)
        assert [p["index"] for p in predictions] == list(range(n_dev))
        labels = [p["label"] for p in predictions]
        preds = [p["prediction"] for p in predictions]
        assert metrics["eval_accuracy"] == pytest.approx(
            sklearn.metrics.accuracy_score(labels, preds)
        )
        assert metrics["eval_f1"] == pytest.approx(
            sklearn.metrics.f1_score(labels, preds, pos_label="1")
        )
        assert metrics["eval_corr"] == pytest.approx(
            sklearn.metrics.matthews_corrcoef(labels, preds)
        )
        logits = np.array([p["logits"] for p in predictions])
        log_probs = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
        ce = -log_probs[np.arange(n_dev), np.array(labels).astype(int)]
        assert metrics["eval_loss"] == pytest.approx(ce.mean(), rel=1e-5)
        assert preds == [str(i) for i in logits.argmax(1)]
        scores[step] = metrics["eval_f1"] + metrics["eval_accuracy"]

    best = json.loads((model_dir / "best_result.json").read_text())
    best_step = 8 if scores[8] >= scores[16] else 16
    assert best["step"] == best_step and best["path"] == str(model_dir / f"model.ckpt-{best_step}")
    best_metrics, _ = read_eval(model_dir, best_step)
    assert best["f1"] == best_metrics["eval_f1"] and best["accu"] == best_metrics["eval_accuracy"]
    # The original's clean-up: evaluated checkpoints are deleted except the best (--retain_best).
    assert [p.name for p in model_dir.glob("*.index")] == [f"model.ckpt-{best_step}.index"]

    # Submission with the best checkpoint: one label per test row, the sign of the logit difference.
    rows = (model_dir / "submit" / "MRPC.tsv").read_text().splitlines()
    logits = json.loads((model_dir / "submit" / "MRPC.logits.json").read_text())
    assert rows[0] == "index\tprediction" and len(rows) == 1 + 5 == 1 + len(logits)
    for i, (row, (l0, l1)) in enumerate(zip(rows[1:], logits, strict=True)):
        assert row == f"{i}\t{'1' if l1 - l0 > 0 else '0'}"


@pytest.mark.slow
def test_stsb_finetune_then_eval_as_in_the_readme(tmp_path, shared_data, vocab):
    data_dir = glue_dir(tmp_path, shared_data, "sts-b")
    model_dir = tmp_path / "exp" / "sts-b"
    common = common_flags("sts-b", data_dir, tmp_path, vocab)
    run_script("classifier.py", *common, *train_flags(), "--do_train=True", "--do_eval=False")
    losses = dict(summary_scalars(model_dir)["loss"])
    assert losses[16] < losses[4]
    assert not (model_dir / "eval").exists()

    # The README's evaluation command: no model config flag (the run's net_config.json is used).
    run_script(
        "classifier.py", *common, "--do_train=False", "--do_eval=True", "--eval_batch_size=8"
    )
    n_dev = len((data_dir / "dev.tsv").read_text().splitlines()) - 1
    for step in (8, 16):
        metrics, predictions = read_eval(model_dir, step)
        assert len(predictions) == n_dev
        labels = np.array([p["label"] for p in predictions])
        preds = np.array([p["prediction"] for p in predictions])
        assert metrics["eval_pearsonr"] == pytest.approx(
            scipy.stats.pearsonr(preds, labels)[0], abs=1e-6
        )
        assert metrics["eval_spearmanr"] == pytest.approx(
            scipy.stats.spearmanr(preds, labels)[0], abs=1e-6
        )
        assert metrics["eval_loss"] == pytest.approx(np.mean((preds - labels) ** 2), rel=1e-5)
    best = json.loads((model_dir / "best_result.json").read_text())
    assert set(best) == {"step", "path", "pearsonr", "spearmanr"}
    assert not list(model_dir.glob("*.index"))  # no --retain_all / --retain_best


@pytest.mark.slow
def test_eval_model_dir_then_submit_in_a_later_run(tmp_path, shared_data, vocab):
    """Checkpoints evaluated from another directory (--eval_model_dir): the evaluation's best_result.json
    goes to --model_dir, and a later --do_submit run with the same flags finds it there."""
    data_dir = glue_dir(tmp_path, shared_data, "mrpc")
    common = common_flags("mrpc", data_dir, tmp_path, vocab)
    train_dir, eval_dir = tmp_path / "exp" / "mrpc", tmp_path / "exp" / "mrpc_eval"
    run_script("classifier.py", *common, *train_flags(), "--train_steps=8", "--do_train=True")
    from_train_dir = [*common, f"--eval_model_dir={train_dir}", f"--model_dir={eval_dir}"]
    run_script(
        "classifier.py",
        *from_train_dir,
        "--do_eval=True",
        "--retain_best=True",
        "--eval_batch_size=4",
    )
    best = json.loads((eval_dir / "best_result.json").read_text())
    assert best["path"] == str(train_dir / "model.ckpt-8")
    assert not (train_dir / "best_result.json").exists()

    run_script("classifier.py", *from_train_dir, "--do_eval=False", "--do_submit=True")
    rows = (eval_dir / "submit" / "MRPC.tsv").read_text().splitlines()
    assert rows[0] == "index\tprediction" and len(rows) == 1 + 5


def _bad_input_cases(tmp_path, data_dir):
    """(flag overrides, files to write, expected error text) of each bad-input case."""
    train = data_dir / "train.tsv"
    return {
        "short_row": (
            [],
            {train: [MRPC_HEADER, "1\t1\t2\ta\tb", "0\t1"]},
            f"{train}:3: expected at least 5 columns, got 2",
        ),
        "unknown_label": (
            [],
            {train: [MRPC_HEADER, "yes\t1\t2\ta\tb"]},
            f"{train}:2: unknown label 'yes' for task mrpc",
        ),
        "empty_file": ([], {train: []}, f"{train} is empty"),
        "missing_data_dir": (
            [f"--data_dir={tmp_path / 'nowhere'}"],
            {},
            f"--data_dir={tmp_path / 'nowhere'} does not exist",
        ),
        "unknown_task": (["--task_name=glue"], {}, "--task_name='glue' is not a known task"),
        "shape_mismatch": (
            ["--overwrite_keys=d_inner", "--d_inner=96"],
            {train: [MRPC_HEADER, "1\t1\t2\ta cat\ta dog"]},
            "variable model/encoder/layer_0/ff/layer_1/bias has shape [128] in the checkpoint but [96]",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "short_row",
        "unknown_label",
        "empty_file",
        "missing_data_dir",
        "unknown_task",
        "shape_mismatch",
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path, case):
    data_dir = tmp_path / "MRPC"
    data_dir.mkdir()
    shutil.copy(GOLDEN / "net_config.json", tmp_path / "net_config.json")
    vocab = write_vocab(tmp_path / "vocab.txt", [])
    overrides, files, expected = _bad_input_cases(tmp_path, data_dir)[case]
    for path, lines in files.items():
        _write_lines(path, lines)
    flags = common_flags("mrpc", data_dir, tmp_path, vocab) + [
        f"--model_config={tmp_path / 'net_config.json'}",
        f"--init_checkpoint={GOLDEN / 'model.ckpt'}",
        "--do_train=True",
        "--train_batch_size=1",
        "--train_steps=1",
    ]
    proc = run_script("classifier.py", *flags, *overrides, check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("classifier.py: error: ") and expected in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
