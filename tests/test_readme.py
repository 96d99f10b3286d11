"""The README's Python examples run as written, on the tiny golden checkpoint in place of a released one."""

import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import model_utils
import modeling
from model_test_utils import GOLDEN_DIR, load_golden

REPO = pathlib.Path(__file__).resolve().parent.parent
RELEASED_DIR = "ckpts/B4-4-4H768-ELEC-TF"


def notebook_snippets():
    """The ```python blocks of the README's notebook section."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Using the model from Python (notebooks)")[1].split("\n## ")[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture
def released_dir(tmp_path, monkeypatch):
    """A released-checkpoint layout (net_config.json, model.ckpt, vocab.uncased.txt) holding tiny_relshift."""
    released = tmp_path / RELEASED_DIR
    shutil.copytree(GOLDEN_DIR / "tiny_relshift", released)
    subprocess.run(
        [sys.executable, str(REPO / "scripts/make_demo_data.py"), f"--output_dir={tmp_path}"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    shutil.copy(tmp_path / "vocab.txt", released / "vocab.uncased.txt")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO / "tensorflow"))
    return released


def run_snippet(snippet):
    namespace = {}
    code = snippet.replace('sys.path.insert(0, "tensorflow")', "pass")
    exec(compile(code, "README", "exec"), namespace)
    return namespace


def expected_hiddens(inputs, seg_id, input_mask):
    """The decoder output of the golden model built, then loaded: the order that always worked."""
    config, ckpt, _ = load_golden("tiny_relshift")
    model = modeling.FunnelTFM(config)
    model.extract_hiddens(inputs, False, seg_id, input_mask, use_decoder=True)
    model_utils.init_from_checkpoint(model, ckpt)
    return model.extract_hiddens(inputs, False, seg_id, input_mask, use_decoder=True)[0]


def assert_reproduces_golden(model):
    _, _, ref = load_golden("tiny_relshift")
    inputs = [tf.constant(ref[k]) for k in ("input_ids", "seg_id", "input_mask")]
    full, _, ret = model.extract_hiddens(inputs[0], False, *inputs[1:], use_decoder=True)
    np.testing.assert_allclose(full, ref["full_last_hidden"], atol=1e-5)
    for i, hidden in enumerate(ret["decoder_hiddens"], start=1):
        np.testing.assert_allclose(hidden, ref[f"dec_hidden_{i:02d}"], atol=1e-5)


def test_the_notebook_section_has_the_one_call_and_the_by_hand_recipes():
    one_call, by_hand = notebook_snippets()
    assert "FunnelTFM.from_pretrained" in one_call and RELEASED_DIR in one_call
    # The by-hand recipe loads between a call without and a call with the decoder.
    order = [
        by_hand.index(s)
        for s in ("input_mask=input_mask)", "init_from_checkpoint", "use_decoder=True")
    ]
    assert order == sorted(order)


def test_one_call_recipe_loads_every_weight(released_dir):
    namespace = run_snippet(notebook_snippets()[0])
    assert namespace["summary"].shape == (1, 64)
    assert namespace["encoder_output"].shape == (1, 4, 64)  # 16 -> 8 -> 4 over three blocks
    assert namespace["last_hidden"].shape == (1, 16, 64)
    assert len(namespace["encoder_hiddens"]) == 6
    assert namespace["tokenizer"].get_vocab_size() == 1000
    model = namespace["model"]
    inputs = [tf.constant(namespace[k]) for k in ("inputs", "seg_id", "input_mask")]
    np.testing.assert_allclose(namespace["last_hidden"], expected_hiddens(*inputs), atol=1e-6)
    assert_reproduces_golden(model)


def test_by_hand_recipe_restores_the_decoder_created_after_the_load(released_dir):
    namespace = run_snippet(notebook_snippets()[1])
    assert len(namespace["report"].deferred) == 40  # the decoder's variables
    inputs = [tf.constant(namespace[k]) for k in ("inputs", "seg_id", "input_mask")]
    np.testing.assert_allclose(namespace["last_hidden"], expected_hiddens(*inputs), atol=1e-6)
    assert_reproduces_golden(namespace["model"])


# The seed README's "Custom Usage" calls, with its placeholders filled in.
SEED_CUSTOM_USAGE = """
import sys
from absl import flags
import data_utils, modeling, tokenization, training
training.define_tokenizer_flags()
training.define_model_flags()
FLAGS = flags.FLAGS
FLAGS(sys.argv[:1] + sys.argv[1:])

tokenizer = tokenization.get_tokenizer()
data_utils.setup_special_ids(tokenizer)
if FLAGS.model_config:
    net_config = modeling.ModelConfig.init_from_json(FLAGS.model_config)
else:
    net_config = modeling.ModelConfig.init_from_flags()
model = modeling.FunnelTFM(net_config)
inputs = [[1] + tokenizer.convert_text_to_ids("the cat sees a dog") + [2] + [0] * 2]
inputs = [row + [0] * (16 - len(row)) for row in inputs]
seg_id = [[2] + [0] * 15]
input_mask = [[0.0 if i else 1.0 for i in inputs[0]]]
summary, _ = model.get_pooled_output(
    inputs, False, seg_id=seg_id, input_mask=input_mask, use_tpu=False, use_bfloat16=False)
last_hidden, encoder_hiddens, ret_dict = model.extract_hiddens(
    inputs, False, seg_id=seg_id, input_mask=input_mask, use_decoder=True, use_tpu=False,
    use_bfloat16=False)
print("SHAPES", summary.shape.as_list(), last_hidden.shape.as_list(), net_config.vocab_size)
"""


def run_python(code, *args, cwd):
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env={"PYTHONPATH": str(REPO / "tensorflow"), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.parametrize("from_json", [False, True], ids=["config_flags", "model_config"])
def test_seed_custom_usage_runs_once_flags_are_parsed(released_dir, from_json):
    vocab = released_dir / "vocab.uncased.txt"
    args = [f"--tokenizer_path={vocab}"]
    if from_json:
        args.append(f"--model_config={released_dir / 'net_config.json'}")
    else:
        args += ["--block_size=1_1", "--decoder_size=1", "--d_model=32", "--d_embed=32"]
        args += ["--n_head=2", "--d_head=8", "--d_inner=48"]
    result = run_python(SEED_CUSTOM_USAGE, *args, cwd=released_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    d_model = 64 if from_json else 32
    assert f"SHAPES [1, {d_model}] [1, 16, {d_model}] 1000" in result.stdout


@pytest.mark.slow
def test_seed_no_argument_calls_without_parsed_flags_say_what_to_pass(tmp_path):
    code = """
import tokenization, modeling
for call in (tokenization.get_tokenizer, modeling.ModelConfig.init_from_flags):
    try:
        call()
    except ValueError as e:
        print("ERROR", e)
"""
    result = run_python(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 2
    assert "get_tokenizer() without arguments reads the flags --tokenizer_type" in errors[0]
    assert "init_from_flags() without arguments" in errors[1]
    assert all("flags are not parsed: pass the arguments" in e for e in errors)
