"""Reliability: every bad input is one line before long work starts, finished runs stay finished, and runs
killed with kill -9 at random moments and rerun end bit-identical to uninterrupted ones.

The scripts run in subprocesses, as a user runs them.
"""

import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import classifier_utils
from test_classifier import GOLDEN, MRPC_HEADER, REPO, _write_lines, glue_dir, write_vocab
from test_pretrain import TINY_MODEL_FLAGS, corpus, pretrain_args  # noqa: F401 (corpus: a fixture)

SCRIPT_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def script_command(script, *flags):
    return [sys.executable, str(REPO / "tensorflow" / script), *map(str, flags)]


def run(script, *flags):
    return subprocess.run(
        script_command(script, *flags),
        cwd=REPO,
        env=SCRIPT_ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_one_line_error(proc, script, expected):
    assert proc.returncode != 0, proc.stderr[-2000:]
    lines = (proc.stderr + proc.stdout).strip().splitlines()
    error = [line for line in lines if line.startswith(f"{script}: error: ")]
    assert error and expected in error[-1], (proc.stderr + proc.stdout)[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout


# ------------------------------------------------------------------------------------------ bad inputs
def classifier_flags(tmp_path, data_dir, vocab, **overrides):
    values = {
        "task_name": "mrpc",
        "data_dir": data_dir,
        "output_dir": tmp_path / "proc",
        "model_dir": tmp_path / "exp",
        "tokenizer_path": vocab,
        "model_config": GOLDEN / "net_config.json",
        "init_checkpoint": GOLDEN / "model.ckpt",
        "max_seq_length": 32,
        "num_core_per_host": 1,
        "train_batch_size": 2,
        "train_steps": 2,
        "warmup_steps": 1,
        "do_train": True,
    }
    values.update(overrides)
    return [f"--{k}={v}" for k, v in values.items() if v is not None]


def truncated_checkpoint(tmp_path):
    folder = tmp_path / "cut"
    shutil.copytree(GOLDEN, folder)
    data = folder / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    return folder / "model.ckpt"


def a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a directory")
    return path


def classifier_case(tmp_path, data_dir, vocab, name):
    """(flags, expected error text) of a classifier.py case."""
    if name == "model_dir_under_a_file":
        under = a_file(tmp_path) / "exp"
        return classifier_flags(tmp_path, data_dir, vocab, model_dir=under), (
            f"--model_dir={under} is not a writable directory"
        )
    if name == "output_dir_under_a_file":
        under = a_file(tmp_path) / "proc"
        return classifier_flags(tmp_path, data_dir, vocab, output_dir=under), (
            f"--output_dir={under} is not a writable directory"
        )
    if name == "truncated_init_checkpoint":
        cut = truncated_checkpoint(tmp_path)
        return classifier_flags(tmp_path, data_dir, vocab, init_checkpoint=cut), (
            f"checkpoint {cut} is damaged"
        )
    if name == "non_utf8_data":
        train = data_dir / "train.tsv"
        train.write_bytes(
            (MRPC_HEADER + "\n1\t1\t2\ta cat\ta dog\n0\t3\t4\tcaf\xe9\tb\n").encode("latin-1")
        )
        return classifier_flags(tmp_path, data_dir, vocab), f"{train}:3: not valid UTF-8"
    if name == "warmup_beyond_train_steps":
        return classifier_flags(tmp_path, data_dir, vocab, warmup_steps=5), (
            "--warmup_steps=5 exceeds --train_steps=2"
        )
    if name == "eval_of_a_missing_model_dir":
        missing = tmp_path / "nowhere"
        flags = classifier_flags(
            tmp_path, data_dir, vocab, model_dir=missing, model_config=None, do_train=None
        )
        return flags + ["--do_eval=True", "--eval_timeout=1"], (
            f"{missing} holds no net_config.json and no checkpoint after"
        )
    raise AssertionError(name)


CLASSIFIER_CASES = [
    "model_dir_under_a_file",
    "output_dir_under_a_file",
    "truncated_init_checkpoint",
    "non_utf8_data",
    "warmup_beyond_train_steps",
    "eval_of_a_missing_model_dir",
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CLASSIFIER_CASES)
def test_classifier_bad_input_is_one_line(tmp_path, case):
    data_dir = tmp_path / "MRPC"
    data_dir.mkdir()
    _write_lines(data_dir / "train.tsv", [MRPC_HEADER, "1\t1\t2\ta cat\ta dog", "0\t3\t4\tb\tc"])
    _write_lines(data_dir / "dev.tsv", [MRPC_HEADER, "1\t1\t2\ta cat\ta dog"])
    vocab = write_vocab(tmp_path / "vocab.txt", [])
    flags, expected = classifier_case(tmp_path, data_dir, vocab, case)
    assert_one_line_error(run("classifier.py", *flags), "classifier.py", expected)
    # Nothing was trained.
    assert not list(tmp_path.glob("exp/model.ckpt-*"))


def damage_records(corpus_dir, tmp_path, how):
    """A copy of the pretraining records with one fault; returns (record dir, expected error text)."""
    records = tmp_path / "records"
    shutil.copytree(corpus_dir, records)
    meta_path = sorted(records.glob("meta.train.*"))[0]
    meta = json.loads(meta_path.read_text())
    record = records / meta["filenames"][0]
    if how.startswith("truncated_record_file"):
        record.write_bytes(record.read_bytes()[:-7])
        if how == "truncated_record_file_original_meta":
            # The original's meta file records no sizes: the record headers are read instead.
            del meta["file_bytes"]
            meta_path.write_text(json.dumps(meta))
            return records, f"{record} is truncated or corrupt: record"
        return records, f"{record} is truncated or was replaced: {record.stat().st_size} bytes"
    if how == "corrupt_record":
        data = bytearray(record.read_bytes())
        data[30] ^= 0x10  # inside the first record's payload, which starts at byte 12
        record.write_bytes(bytes(data))
        return records, f"{record} is corrupt: corrupted record at 12"
    if how == "meta_lists_a_missing_file":
        record.unlink()
        return records, f"{meta_path} lists {record}, which does not exist"
    if how == "meta_file_bytes_malformed":
        meta["file_bytes"] = [1, 2]
        meta_path.write_text(json.dumps(meta))
        return records, f"{meta_path}: not a valid meta file (file_bytes is not one size per file)"
    # An original-format meta file (no sizes) whose count is wrong.
    del meta["file_bytes"]
    meta["num_example"] += 3
    meta_path.write_text(json.dumps(meta))
    return records, f"{meta_path} says num_example {meta['num_example']}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "how",
    [
        "truncated_record_file",
        "truncated_record_file_original_meta",
        "corrupt_record",
        "meta_lists_a_missing_file",
        "meta_file_bytes_malformed",
        "meta_count_disagrees",
    ],
)
def test_pretrain_bad_records_are_one_line(corpus, tmp_path, how):  # noqa: F811
    records, expected = damage_records(corpus[2], tmp_path, how)
    args = pretrain_args(corpus, tmp_path / "model", "--train_steps=2", "--warmup_steps=0")
    args = [a for a in args if not a.startswith("--record_dir=")] + [f"--record_dir={records}"]
    assert_one_line_error(run("pretrain.py", *args), "pretrain.py", expected)


@pytest.fixture
def tpu_address(request):
    """A grpc:// address where no TPU answers: a closed port, or one that accepts and stays silent."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        if request.param == "silent_port":
            listener.listen()
            yield f"grpc://127.0.0.1:{port}", "no answer within --tpu_connect_timeout=3s"
            return
    yield f"grpc://127.0.0.1:{port}", "Connection refused"


def run_classifier_on_tpu(tmp_path, tpu, timeout_secs):
    return run(
        "classifier.py",
        "--task_name=mrpc",
        f"--data_dir={tmp_path}",
        f"--output_dir={tmp_path / 'out'}",
        f"--model_dir={tmp_path / 'exp'}",
        f"--tokenizer_path={tmp_path / 'vocab.txt'}",
        "--do_train=True",
        "--use_tpu=True",
        f"--tpu={tpu}",
        f"--tpu_connect_timeout={timeout_secs}",
    )


@pytest.mark.parametrize("tpu_address", ["closed_port", "silent_port"], indirect=True)
def test_an_unreachable_tpu_address_is_one_line_within_the_timeout(tmp_path, tpu_address):
    address, reason = tpu_address
    proc = run_classifier_on_tpu(tmp_path, address, 3)
    assert_one_line_error(proc, "classifier.py", f"cannot reach the TPU --tpu='{address}': dialled")
    assert reason in proc.stderr


def test_an_unknown_tpu_name_is_one_line_naming_the_lookup(tmp_path):
    proc = run_classifier_on_tpu(tmp_path, "nonexistent-tpu", 20)
    assert_one_line_error(
        proc,
        "classifier.py",
        "cannot reach the TPU --tpu='nonexistent-tpu': looked up TPU 'nonexistent-tpu' through the "
        "Cloud TPU API",
    )


@pytest.mark.slow
def test_create_pretrain_data_save_dir_under_a_file(tmp_path, corpus):  # noqa: F811
    vocab = corpus[0]
    text = tmp_path / "text.txt"
    text.write_text("a line of text\n\nanother one\n")
    under = a_file(tmp_path) / "records"
    proc = run(
        "create_pretrain_data.py",
        f"--input_glob={text}",
        f"--save_dir={under}",
        f"--tokenizer_path={vocab}",
    )
    assert_one_line_error(
        proc, "create_pretrain_data.py", f"--save_dir={under} is not a writable directory"
    )


@pytest.mark.slow
def test_modify_ckpt_refuses_to_export_beside_its_source(tmp_path):
    source = tmp_path / "run"
    shutil.copytree(GOLDEN, source)
    proc = run("modify_ckpt.py", f"--src_ckpt={source}", f"--tgt_ckpt={source / 'model.ckpt'}")
    assert_one_line_error(proc, "modify_ckpt.py", "is in the directory of the source checkpoint")
    assert (source / "model.ckpt.index").read_bytes() == (GOLDEN / "model.ckpt.index").read_bytes()


def test_a_byte_order_mark_in_a_csv_task_file_just_works(tmp_path):
    rows = '"2","A title","great food"\n"1","Another","cold, sadly"\n'
    (tmp_path / "train.csv").write_bytes(b"\xef\xbb\xbf" + rows.encode("utf-8"))
    examples = classifier_utils.get_processor("amazon2").get_examples(str(tmp_path), "train")
    assert [(e.label, e.text_a, e.text_b) for e in examples] == [
        ("2", "A title", "great food"),
        ("1", "Another", "cold, sadly"),
    ]


# ------------------------------------------------------------------------------------ finished runs
@pytest.mark.slow
def test_rerunning_a_finished_train_and_eval_command_does_nothing(tmp_path, shared_data):
    data_dir = glue_dir(tmp_path, shared_data, "mrpc")
    vocab = write_vocab(tmp_path / "vocab.txt", [data_dir])
    flags = classifier_flags(tmp_path, data_dir, vocab, train_steps=4, save_steps=2)
    flags += ["--do_eval=True", "--iterations=2"]
    first = run("classifier.py", *flags)
    assert first.returncode == 0, first.stderr[-3000:]
    best = (tmp_path / "exp" / "best_result.json").read_text()
    assert not list((tmp_path / "exp").glob("model.ckpt-*"))  # cleaned up after evaluation

    again = run("classifier.py", *flags)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "holds a finished run (step 4): nothing to train" in again.stderr
    assert "Training from step" not in again.stderr
    assert (tmp_path / "exp" / "best_result.json").read_text() == best
    assert not list((tmp_path / "exp").glob("model.ckpt-*"))


# ----------------------------------------------------------------------------------------- kill -9
def checkpoint_tensors(path):
    reader = tf.train.load_checkpoint(str(path))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def run_killed(cmd, kill_after_secs):
    """Runs `cmd` and kills it with SIGKILL after each delay, rerunning it each time; then to the end."""
    for delay in kill_after_secs:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=SCRIPT_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(delay)
        proc.kill()
        proc.wait()
    final = subprocess.run(
        cmd, cwd=REPO, env=SCRIPT_ENV, capture_output=True, text=True, timeout=600
    )
    assert final.returncode == 0, final.stderr[-3000:]


def assert_bit_identical(killed_dir, reference_dir, step):
    killed = checkpoint_tensors(killed_dir / f"model.ckpt-{step}")
    reference = checkpoint_tensors(reference_dir / f"model.ckpt-{step}")
    assert sorted(killed) == sorted(reference)
    for name, value in reference.items():
        np.testing.assert_array_equal(killed[name], value, err_msg=name)


# Moments of the kills, seconds after the start: during start-up and data preparation, compilation, and
# between or during checkpoint writes. Fixed so that a failure can be rerun.
KILLS = random.Random(12).sample(range(7, 22), 2)


@pytest.mark.slow
def test_classifier_killed_and_rerun_ends_bit_identical(tmp_path, shared_data):
    data_dir = glue_dir(tmp_path, shared_data, "mrpc")
    vocab = write_vocab(tmp_path / "vocab.txt", [data_dir])

    def command(name):
        # Dropout on (the golden config's 0.1): the seeded masks must repeat too.
        return script_command(
            "classifier.py",
            *classifier_flags(
                tmp_path,
                data_dir,
                vocab,
                output_dir=tmp_path / name / "proc",
                model_dir=tmp_path / name / "exp",
                train_steps=120,
                save_steps=10,
                warmup_steps=10,
            ),
            "--iterations=5",
            "--log_freq=10",
        )

    run_killed(command("reference"), [])
    run_killed(command("killed"), KILLS)
    assert_bit_identical(tmp_path / "killed" / "exp", tmp_path / "reference" / "exp", 120)


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", ["electra", "mlm"])
def test_pretrain_killed_and_rerun_ends_bit_identical(corpus, tmp_path, loss_type):  # noqa: F811
    def command(name):
        return script_command(
            "pretrain.py",
            *pretrain_args(
                corpus,
                tmp_path / name,
                f"--loss_type={loss_type}",
                "--train_steps=120",
                "--save_steps=10",
                "--iterations=5",
                "--log_freq=10",
            ),
        )

    run_killed(command("reference"), [])
    run_killed(command("killed"), KILLS)
    assert_bit_identical(tmp_path / "killed", tmp_path / "reference", 120)


# ---------------------------------------------------------------------------------------- quiet start
# absl's C++ format, e.g. "I0000 00:00:1796189183.847255    8912 port.cc:153] ...".
TENSORFLOW_CPP_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ \S+\.cc:\d+\]|absl::InitializeLog")


@pytest.mark.parametrize("verbose", [False, True])
def test_scripts_start_without_tensorflows_cpp_lines_unless_verbose(tmp_path, verbose):
    """TensorFlow's start-up lines ignore TF_CPP_MIN_LOG_LEVEL; `startup` keeps them off the console."""
    env = {k: v for k, v in SCRIPT_ENV.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    command = script_command(
        "classifier.py",
        "--task_name=mrpc",
        f"--data_dir={tmp_path / 'missing'}",
        f"--output_dir={tmp_path / 'out'}",
        f"--model_dir={tmp_path / 'exp'}",
        f"--tokenizer_path={tmp_path / 'vocab.txt'}",
        "--num_core_per_host=1",
        "--do_train=True",
        *(["--verbose"] if verbose else []),
    )
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.stderr.strip().splitlines()[-1] == (
        f"classifier.py: error: --data_dir={tmp_path / 'missing'} does not exist"
    )
    cpp_lines = [line for line in proc.stderr.splitlines() if TENSORFLOW_CPP_LINE.search(line)]
    if verbose:
        assert cpp_lines, proc.stderr
    else:
        assert not cpp_lines, proc.stderr
        # TensorFlow's own Python log lines come once, in absl's format.
        assert "INFO:tensorflow:" not in proc.stderr
