"""Every command block of README.md runs, as written, on tiny stand-ins for the data and checkpoints.

How a block is exercised:

- The blocks run with bash (`set -euo pipefail`) in a sandbox laid out like a checkout after the downloads
  (`sandbox` below): `ckpts/B6-6-6H768-ELEC-TF` is the tiny golden checkpoint with a 1,000-entry vocabulary,
  `data/` holds a few rows of each data set (`../shared/data` when it exists, else written here), and the
  README's variables (`${MODEL_DIR}`, `${GLUE_DIR}`, ...) are set in the environment (`BLOCK_ENV`).
- Long runs are made short on the test side: `shrink` replaces the values of the step and length flags
  (`--train_steps=5350` -> `--train_steps=4`, `SMALL_RUN`), and a line that runs a recipe script
  (`bash scripts/gpu_race.sh`) gets small flags appended (`RECIPE_FLAGS`; the scripts pass extra flags on).
- `python` is a stand-in (`tests/readme_python_shim.py`) that runs the command with the real interpreter, except a command
  that needs a TPU or several hosts (`--use_tpu=True`, `--num_hosts` > 1): its flags are only parsed, with
  the script's own absl definitions, so an unknown flag or a bad value fails the test. Every call is
  recorded, so a test can say which commands ran and which were checked.
- `TESTED_BLOCKS` counts the blocks under each heading; `test_every_readme_block_is_tested` fails when a
  block appears that no test takes (`blocks_under` hands a test its section's blocks).

The Python blocks run verbatim on the tiny golden checkpoint in place of a released one.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import model_utils
import modeling
from model_test_utils import GOLDEN_DIR, load_golden

REPO = pathlib.Path(__file__).resolve().parent.parent
README = REPO / "README.md"
RELEASED_DIR = "ckpts/B4-4-4H768-ELEC-TF"

# The command blocks (bash, shell, python) under each README heading. A test takes each section's blocks
# with blocks_under(heading); a section that gains a block fails test_every_readme_block_is_tested until a
# test runs it.
TESTED_BLOCKS = {
    "Quick start": 1,
    "Getting data and checkpoints": 1,
    "Text classification: GLUE, IMDB, Yelp, Amazon, AG, DBpedia (`classifier.py`)": 2,
    "RACE (`race.py`)": 1,
    "SQuAD 2.0 and 1.1 (`squad.py`)": 1,
    "Export for serving and to Hugging Face": 1,
    "Pretraining (`create_pretrain_data.py`, `pretrain.py`, `modify_ckpt.py`)": 4,
    "Devices: one, several GPUs, several hosts, TPU": 1,
    "Using the model from Python (notebooks)": 1,
}
COMMAND_LANGUAGES = ("bash", "shell", "sh", "python")
# Fenced blocks that show output or fragments, not commands.
OTHER_LANGUAGES = ("text", "json")


def readme_blocks(path=README):
    """[(heading, language, code)] of every fenced block, with the heading it sits under."""
    blocks, heading, fence = [], None, None
    for line in path.read_text().splitlines(keepends=True):
        if fence is None:
            if line.startswith("```"):
                fence = (line[3:].strip(), [])
            elif line.startswith("#"):
                heading = line.lstrip("#").strip()
        elif line.startswith("```"):
            blocks.append((heading, fence[0], "".join(fence[1])))
            fence = None
        else:
            fence[1].append(line)
    return blocks


def blocks_under(heading, path=README):
    """The code of the command blocks under `heading`, in README order; as many as TESTED_BLOCKS says."""
    codes = [c for h, lang, c in readme_blocks(path) if h == heading and lang in COMMAND_LANGUAGES]
    if path == README:
        assert len(codes) == TESTED_BLOCKS[heading], (heading, codes)
    return codes


def test_every_readme_block_is_tested():
    blocks = readme_blocks()
    unlabelled = [
        (h, c[:60]) for h, lang, c in blocks if lang not in COMMAND_LANGUAGES + OTHER_LANGUAGES
    ]
    assert not unlabelled, (
        f"label these README blocks (```shell, ```python or ```text): {unlabelled}"
    )
    counts = {}
    for heading, lang, _ in blocks:
        if lang in COMMAND_LANGUAGES:
            counts[heading] = counts.get(heading, 0) + 1
    missing = sorted(set(TESTED_BLOCKS) - set(markdown_headings(README)))
    assert not missing, f"README sections that tests expect are gone: {missing}"
    untested = {h: n for h, n in counts.items() if n != TESTED_BLOCKS.get(h, 0)}
    assert not untested, (
        f"README sections whose command blocks differ from what tests/test_readme.py runs "
        f"(heading: blocks now, TESTED_BLOCKS says {TESTED_BLOCKS}): {untested}; "
        "add a test that takes them with blocks_under(heading) and update TESTED_BLOCKS"
    )


def markdown_headings(path):
    """The headings of a page, outside its fenced blocks."""
    headings, fenced = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif line.startswith("#") and not fenced:
            headings.append(line.lstrip("#").strip())
    return headings


def heading_anchors(path):
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in markdown_headings(path)}


# Written by the download and export work.
PAGES_TO_COME = {"data.md", "export.md", "export_hf.md"}


def test_readme_stays_short_and_its_links_resolve():
    assert len(README.read_text().splitlines()) <= 300  # the target
    for page in [README, *(REPO / "docs").glob("*.md")]:
        for target, anchor in re.findall(r"\]\(([\w./-]+\.md)(?:#([\w-]+))?\)", page.read_text()):
            path = (page.parent / target).resolve()
            if path.name in PAGES_TO_COME and not path.exists():
                continue
            assert path.is_file(), (page.name, target)
            assert not anchor or anchor in heading_anchors(path), (page.name, target, anchor)


# --- The sandbox: a checkout after the downloads, with tiny data. ---------------------------------------

BLOCK_ENV = {
    "MODEL_DIR": "ckpts/B6-6-6H768-ELEC-TF",
    "GLUE_DIR": "data/glue",
    "SAVE_DIR": "proc_data/pretrain",
    "PATH_TO_WORD_PIECE": "ckpts/B6-6-6H768-ELEC-TF/vocab.uncased.txt",
    "PRETRAIN_DIR": "exp/tiny",
    "TPU_NAME": "readme-tpu",
    "GS_ROOT": "gs://readme-bucket",
}
# Flag values that make a README run short; a block keeps every other value.
SMALL_RUN = {
    "train_steps": "4",
    "warmup_steps": "1",
    "save_steps": "2",
    "iterations": "2",
    "log_freq": "2",
    "max_seq_length": "32",
    "seq_len": "32",
}
# Appended to a recipe script's command line: the values inside the script are for real runs.
SHORT_STEPS = "--train_steps=2 --warmup_steps=1 --save_steps=2 --iterations=2"
SQUAD_SHAPES = "--max_seq_length=64 --max_query_length=16 --doc_stride=32"
RECIPE_FLAGS = {
    "scripts/gpu_race.sh": "--max_seq_length=64 --max_qa_length=16 --train_batch_size=4 "
    f"--eval_batch_size=4 {SHORT_STEPS}",
    "scripts/prepro_squad.sh": SQUAD_SHAPES,
    "scripts/gpu_squad.sh": f"{SQUAD_SHAPES} --max_answer_length=8 --train_batch_size=4 "
    f"--predict_batch_size=4 {SHORT_STEPS}",
}

# The sandbox's `python`: tests/readme_python_shim.py, which runs a command or parses a cluster command's
# flags, and records each call.
PYTHON_WRAPPER = '#!/bin/sh\nexec "{python}" "{shim}" "$@"\n'


def install_python_shim(root):
    wrapper = root / "bin/python"
    wrapper.parent.mkdir(parents=True)
    shim = REPO / "tests/readme_python_shim.py"
    wrapper.write_text(PYTHON_WRAPPER.format(python=sys.executable, shim=shim))
    wrapper.chmod(0o755)
    return wrapper


def write_cola(glue_dir, shared_data):
    """CoLA rows: `source, label, mark, sentence` for train and dev, `index, sentence` for test."""
    cola = glue_dir / "CoLA"
    cola.mkdir(parents=True)
    if shared_data is not None:
        rows = (shared_data / "glue/CoLA/dev.tsv").read_text().splitlines()
        test = (shared_data / "glue/CoLA/test.tsv").read_text().splitlines()[:17]
    else:
        words = ["the cat sat", "cat the sat on", "a dog ran home", "dog a home ran the"]
        rows = [
            f"gj04\t{1 - i % 2}\t{'*' if i % 2 else ''}\t{words[i % 4]} {i}." for i in range(80)
        ]
        test = ["index\tsentence"] + [f"{i}\t{words[i % 4]} {i}." for i in range(16)]
    (cola / "train.tsv").write_text("\n".join(rows[:48]) + "\n")
    (cola / "dev.tsv").write_text("\n".join(rows[48:80]) + "\n")
    (cola / "test.tsv").write_text("\n".join(test) + "\n")


def write_race(race_dir):
    """Two articles per split and level, two questions each."""
    for split in ("train", "dev"):
        for level in ("middle", "high"):
            folder = race_dir / split / level
            folder.mkdir(parents=True)
            for n in range(2):
                article = {
                    "id": f"{level}{n}.txt",
                    "article": "Tom has a small brown dog. The dog likes the park near the river.",
                    "questions": ["What does Tom have?", "Where does the dog like to go?"],
                    "options": [
                        ["a cat", "a dog", "a bird", "a fish"],
                        ["school", "home", "park", "shop"],
                    ],
                    "answers": ["B", "C"],
                }
                (folder / f"{n}.txt").write_text(json.dumps(article))


def write_squad(squad_dir, shared_data):
    """train-v2.0.json and dev-v2.0.json: the shared sample, or one paragraph with two questions."""
    squad_dir.mkdir(parents=True)
    if shared_data is not None:
        text = (shared_data / "squad/dev-v2.0.json").read_text()
    else:
        context = "The park is near the river. Tom walks his dog there every morning."
        qas = [
            {
                "id": "q1",
                "question": "Where is the park?",
                "is_impossible": False,
                "answers": [{"text": "near the river", "answer_start": 12}],
            },
            {"id": "q2", "question": "Who owns the cat?", "is_impossible": True, "answers": []},
        ]
        paragraphs = [{"context": context, "qas": qas}]
        text = json.dumps(
            {"version": "v2.0", "data": [{"title": "Park", "paragraphs": paragraphs}]}
        )
    for name in ("train-v2.0.json", "dev-v2.0.json"):
        (squad_dir / name).write_text(text)


def write_text(text_dir, shared_data):
    text_dir.mkdir(parents=True)
    if shared_data is not None:
        shutil.copy(shared_data / "pretrain/wiki_00", text_dir / "wiki_00.txt")
    else:
        lines = [
            f"The {w} company said its market share rose {i} percent."
            for i, w in enumerate(["bank", "fund", "club", "team"] * 30)
        ]
        (text_dir / "news.txt").write_text(
            "\n".join(lines[:60]) + "\n\n" + "\n".join(lines[60:]) + "\n"
        )


def make_sandbox(root, shared_data):
    """A checkout as a user has it after the downloads: code linked, tiny checkpoint and data copied."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("tensorflow", "scripts", "data-scripts", "tests", ".venv", "pyproject.toml"):
        (root / name).symlink_to(REPO / name)
    for req in REPO.glob("requirements*.txt"):
        (root / req.name).symlink_to(req)
    subprocess.run(
        [sys.executable, str(REPO / "scripts/make_demo_data.py"), f"--output_dir={root / 'vocab'}"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    released = root / BLOCK_ENV["MODEL_DIR"]
    shutil.copytree(GOLDEN_DIR / "tiny_relshift", released)
    shutil.copy(root / "vocab/vocab.txt", released / "vocab.uncased.txt")
    write_cola(root / "data/glue", shared_data)
    write_race(root / "data/RACE")
    write_squad(root / "data/squad", shared_data)
    write_text(root / "data/text", shared_data)
    install_python_shim(root)
    return root


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    shared = REPO.parent / "shared" / "data"
    return make_sandbox(
        tmp_path_factory.mktemp("readme") / "checkout", shared if shared.is_dir() else None
    )


def shrink(code):
    """The block with short-run values for the SMALL_RUN flags, two pretraining passes and RECIPE_FLAGS
    after recipe scripts."""
    code = re.sub(r"--(\w+)=(\S+)", lambda m: f"--{m[1]}={SMALL_RUN.get(m[1], m[2])}", code)
    # A loop over pretraining passes runs two of them.
    code = re.sub(r"\$\(seq 0 \d+\)", "$(seq 0 1)", code)
    for script, extra in RECIPE_FLAGS.items():
        code = re.sub(rf"(bash {re.escape(script)})(?=\s|$)", rf"\1 {extra}", code)
    return code


def run_block(code, root, env=None, timeout=600):
    """Runs `code` with bash in `root`; returns (output, [the python calls, in order])."""
    calls = root / "python_calls.jsonl"
    calls.unlink(missing_ok=True)
    full_env = dict(
        os.environ,
        **BLOCK_ENV,
        **(env or {}),
        PATH=f"{root / 'bin'}:{pathlib.Path(sys.executable).parent}:/usr/bin:/bin",
        README_CALLS=str(calls),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=root,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{code}\n---\n{output[-4000:]}"
    recorded = (
        [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
    )
    return output, recorded


def modes(calls):
    return [(c["script"], c["mode"]) for c in calls]


def test_shrink_makes_runs_short_and_keeps_the_rest():
    code = "python tensorflow/classifier.py --train_steps=5350 --learning_rate=1e-5 \\\n  --seq_len=512\n"
    assert shrink(code) == (
        "python tensorflow/classifier.py --train_steps=4 --learning_rate=1e-5 \\\n  --seq_len=32\n"
    )
    assert shrink("X=1 bash scripts/gpu_race.sh   # note\n").startswith(
        f"X=1 bash scripts/gpu_race.sh {RECIPE_FLAGS['scripts/gpu_race.sh']}   # note"
    )
    assert shrink("bash scripts/tpu_race.sh\n") == "bash scripts/tpu_race.sh\n"
    assert shrink("for pass_id in $(seq 0 4); do") == "for pass_id in $(seq 0 1); do"


@pytest.mark.slow
def test_the_shim_fails_a_tpu_command_with_an_unknown_flag(tmp_path):
    shim = install_python_shim(tmp_path)
    calls = tmp_path / "calls.jsonl"
    proc = subprocess.run(
        ["bash", "-c", "python tensorflow/classifier.py --use_tpu=True --no_such_flag=1"],
        cwd=REPO,
        env=dict(os.environ, PATH=f"{shim.parent}:/usr/bin:/bin", README_CALLS=str(calls)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tensorflow/classifier.py: ") and "no_such_flag" in last, proc.stderr
    assert json.loads(calls.read_text())["mode"] == "parse"


# --- The README's command blocks. ------------------------------------------------------------------------

QUICKSTART_LINES = ["bash scripts/quickstart.sh", "bash scripts/test.sh"]


@pytest.mark.slow
def test_quick_start_block_trains_and_prints_a_one_screen_summary(sandbox):
    (block,) = blocks_under("Quick start")
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    assert commands == QUICKSTART_LINES
    output, _ = run_block(commands[0], sandbox, timeout=900)
    lines = output.rstrip("\n").splitlines()
    assert len(lines) <= 40, output
    assert not [line for line in lines if re.match(r"^I\d{4} ", line)], (
        "absl INFO lines on the console"
    )
    assert sum(bool(re.match(r"^step \d+/1200 \|", line)) for line in lines) == 6, output
    summary = output[output.index("\nSummary\n") :]
    match = re.search(
        r"best dev accuracy +([\d.]+) at step (\d+) \(chance, .*: ([\d.]+)\)", summary
    )
    assert match, summary
    accuracy, step, chance = float(match[1]), int(match[2]), float(match[3])
    assert chance == 0.525  # 105 of the 200 dev pairs have label 0
    assert accuracy > chance + 0.2, summary
    demo = sandbox / "demo"
    for path in (
        "exp/best_result.json",
        f"exp/eval/dev.ckpt-{step}.metrics.json",
        f"exp/eval/dev.ckpt-{step}.predictions.jsonl",
        f"exp/model.ckpt-{step}.index",
        "exp/submit/MRPC.tsv",
        "classifier.log",
    ):
        assert (demo / path).exists(), path
    for shown in (
        "demo/exp/best_result.json",
        "demo/exp/eval/dev.ckpt-<step>.metrics.json",
        f"demo/exp/eval/dev.ckpt-{step}.predictions.jsonl",
        f"demo/exp/model.ckpt-{step} ",
        "demo/exp/submit/MRPC.tsv",
        "demo/classifier.log",
    ):
        assert shown in summary, shown
    assert ".venv/bin/tensorboard --logdir demo/exp" in summary
    assert list((demo / "exp").glob("events.out.tfevents.*"))
    # The log file keeps what the console leaves out.
    assert "Loaded 123 variables" in (demo / "classifier.log").read_text()

    # test.sh takes pytest arguments: here it lints and only collects this file.
    output, _ = run_block(f"{commands[1]} --collect-only -q tests/test_readme.py", sandbox)
    assert "tests/test_readme.py: " in output  # -q -q: the count of tests collected


@pytest.mark.slow
def test_quick_start_failure_shows_the_error_and_the_log(tmp_path):
    root = make_sandbox(tmp_path / "checkout", None)
    proc = subprocess.run(
        ["bash", "scripts/quickstart.sh", "--warmup_steps=5000"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    output = (proc.stdout + proc.stderr).splitlines()
    assert any(line.startswith("classifier.py: error: ") for line in output), output
    assert (
        output[-1] == "quickstart.sh: classifier.py failed; its whole log is in demo/classifier.log"
    )


@pytest.mark.slow
def test_text_classification_blocks_train_then_evaluate_separately(sandbox):
    train, evaluate = blocks_under(
        "Text classification: GLUE, IMDB, Yelp, Amazon, AG, DBpedia (`classifier.py`)"
    )
    assert "--do_eval" not in train and "--do_train=False --do_eval=True" in evaluate
    run_block(shrink(train), sandbox)
    exp = sandbox / "exp/cola"
    assert sorted(p.name for p in exp.glob("model.ckpt-*.index")) == [
        "model.ckpt-2.index",
        "model.ckpt-4.index",
    ]
    assert (exp / "done").exists() and not (exp / "eval").exists()

    run_block(shrink(evaluate), sandbox)
    best = json.loads((exp / "best_result.json").read_text())
    assert sorted(p.name for p in (exp / "eval").glob("*.metrics.json")) == [
        "dev.ckpt-2.metrics.json",
        "dev.ckpt-4.metrics.json",
    ]
    # --retain_best keeps the best checkpoint for the submission; evaluation deleted the other.
    assert [p.name for p in exp.glob("model.ckpt-*.index")] == [f"model.ckpt-{best['step']}.index"]
    rows = (exp / "submit/CoLA.tsv").read_text().splitlines()
    assert rows[0] == "index\tprediction" and len(rows) == 17


@pytest.mark.slow
def test_download_block_fetches_a_checkpoint_glue_and_the_text_sets_from_a_mirror(tmp_path):
    from test_download_scripts import (
        GLUE_TASKS,
        TEXTCLS_TASKS,
        Mirror,
        ckpt_archive,
        glue_files,
        pins,
        textcls_files,
    )

    (block,) = blocks_under("Getting data and checkpoints")
    name = "B6-6-6H768-ELEC-TF"
    files = {**glue_files(), **textcls_files(), f"/ckpt/{name}.tar.gz": ckpt_archive(name)}
    mirror = Mirror()
    mirror.files.update(files)
    root = tmp_path / "checkout"
    root.mkdir()
    (root / "data-scripts").symlink_to(REPO / "data-scripts")
    env = {
        "FUNNEL_GLUE_URL": f"{mirror.url}/glue",
        "FUNNEL_SENTEVAL_URL": f"{mirror.url}/senteval",
        "FUNNEL_IMDB_URL": f"{mirror.url}/imdb",
        "FUNNEL_TEXTCLS_URL": f"{mirror.url}/fastai",
        "FUNNEL_CKPT_URL": f"{mirror.url}/ckpt",
        "FUNNEL_SHA256": pins(files),
        "no_proxy": "127.0.0.1",
    }
    try:
        run_block(block, root, env)
    finally:
        mirror.server.shutdown()
        mirror.server.server_close()
    config = modeling.ModelConfig.init_from_json(str(root / "ckpts" / name / "net_config.json"))
    assert config.block_size == "2_2_2"
    assert sorted(os.listdir(root / "data/glue")) == sorted(GLUE_TASKS)
    assert sorted(os.listdir(root / "data/text_cls")) == sorted(TEXTCLS_TASKS)


@pytest.mark.slow
def test_export_block_writes_a_savedmodel_and_a_hugging_face_directory(sandbox):
    import tensorflow_text  # noqa: F401 (the text signature's ops)

    (block,) = blocks_under("Export for serving and to Hugging Face")
    exp = sandbox / "exp/cola"
    if not (exp / "best_result.json").exists():  # run alone: the classification blocks first
        for code in blocks_under(
            "Text classification: GLUE, IMDB, Yelp, Amazon, AG, DBpedia (`classifier.py`)"
        ):
            run_block(shrink(code), sandbox)
    run_block(shrink(block), sandbox)
    step = json.loads((exp / "best_result.json").read_text())["step"]
    served = tf.saved_model.load(str(sandbox / "serving/cola" / str(step)))
    assert {"serving_default", "serve_text"} <= set(served.signatures)
    outputs = served.signatures["serve_text"](text_a=tf.constant(["The book was read by Mary."]))
    assert outputs["probabilities"].shape == (1, 2)
    np.testing.assert_allclose(tf.reduce_sum(outputs["probabilities"]), 1.0, rtol=1e-5)
    hf_config = json.loads((sandbox / "hf/cola/config.json").read_text())
    assert hf_config["architectures"] == ["FunnelForSequenceClassification"]
    assert hf_config["num_labels"] == 2 and (sandbox / "hf/cola/model.safetensors").is_file()


@pytest.mark.slow
def test_race_block_runs_on_cpu_and_checks_the_tpu_recipe(sandbox):
    (block,) = blocks_under("RACE (`race.py`)")
    _, calls = run_block(shrink(block), sandbox)
    assert modes(calls) == [("race.py", "run"), ("race.py", "parse")]
    best = json.loads((sandbox / "exp/race/best_result.json").read_text())
    assert best["step"] == 2


@pytest.mark.slow
def test_squad_block_preprocesses_trains_predicts_and_checks_the_tpu_recipe(sandbox):
    (block,) = blocks_under("SQuAD 2.0 and 1.1 (`squad.py`)")
    output, calls = run_block(shrink(block), sandbox, env={"NUM_PROC": "2"})
    assert "Downloading" not in output  # data/squad holds the files already
    # prepro_squad.sh: one process per training shard and one for the evaluation file.
    assert modes(calls) == [("squad.py", "run")] * 4 + [("squad.py", "parse")]
    predict = sandbox / "exp/squad/predict"
    assert (predict / "2.final_predictions.json").exists()
    assert "best_f1" in json.loads((predict / "2.metrics.json").read_text())


@pytest.mark.slow
def test_pretraining_blocks_write_records_check_the_tpu_command_train_and_export(sandbox):
    records, tpu, small, export = blocks_under(
        "Pretraining (`create_pretrain_data.py`, `pretrain.py`, `modify_ckpt.py`)"
    )
    _, calls = run_block(shrink(records), sandbox)
    assert modes(calls) == [("create_pretrain_data.py", "run")] * 2
    metas = sorted(p.name for p in (sandbox / "proc_data/pretrain").glob("meta.*"))
    assert [m.split(".")[2] for m in metas] == ["pass-0", "pass-1"]

    _, calls = run_block(shrink(tpu), sandbox, env={"NUM_HOSTS": "4", "NUM_CORE_PER_HOST": "8"})
    assert modes(calls) == [("train.py", "parse")]

    _, calls = run_block(shrink(small), sandbox)
    assert modes(calls) == [("create_pretrain_data.py", "run"), ("pretrain.py", "run")]
    assert (sandbox / "exp/tiny/model.ckpt-4.index").exists()

    run_block(shrink(export), sandbox)
    core = sandbox / "exp/tiny/core/model.ckpt"
    names = [name for name, _ in tf.train.list_variables(str(core))]
    assert names and not [n for n in names if "adam" in n or n.startswith("generator")]


@pytest.mark.slow
def test_multi_host_block_parses_with_the_classifier_flags(sandbox):
    (block,) = blocks_under("Devices: one, several GPUs, several hosts, TPU")
    _, calls = run_block(block, sandbox)
    assert modes(calls) == [("classifier.py", "parse")]
    assert calls[0]["args"][:2] == ["--num_hosts=2", "--num_core_per_host=1"]


# --- The quick start's console filter. -------------------------------------------------------------------


def test_quickstart_console_keeps_progress_warnings_and_errors():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import quickstart_report
    finally:
        sys.path.remove(str(REPO / "scripts"))
    prefix = "I1202 05:33:09.589506 140465756294016 training.py:938] "
    shown = quickstart_report.console_line
    assert (
        shown(prefix + "step 100/600 | loss 0.6940 | ETA 0:00:53")
        == "step 100/600 | loss 0.6940 | ETA 0:00:53"
    )
    assert shown(prefix + "Loaded 127 variables from demo/exp/model.ckpt-200") is None
    finished = "demo/exp holds a finished run (step 1200): nothing to train."
    assert shown(prefix + finished) == finished
    assert (
        shown(
            prefix
            + "Eval step 200 in 1s (2 more) | eval_loss 0.69 | eval_accuracy 0.475 | eval_tp 0"
        )
        == "eval step 200 | eval_loss 0.69 | eval_accuracy 0.475"
    )
    assert shown("W1202 05:33:09.5 1 training.py:9] disk is slow") == "WARNING: disk is slow"
    assert shown("classifier.py: error: --data_dir=x does not exist") == (
        "classifier.py: error: --data_dir=x does not exist"
    )


# --- Every flag of every script is documented. -----------------------------------------------------------

USER_SCRIPTS = [
    "classifier.py",
    "race.py",
    "squad.py",
    "create_pretrain_data.py",
    "pretrain.py",
    "modify_ckpt.py",
    "benchmark.py",
    "export.py",
    "export_hf.py",
]
LIST_FLAGS = textwrap.dedent(
    """
    import json, os, runpy, sys
    from absl import app, flags, logging  # noqa: F401 (absl's own flags are not the scripts')
    import tensorflow  # noqa: F401
    code_dir, scripts = sys.argv[1], sys.argv[2:]
    sys.path.insert(0, code_dir)
    baseline = set(flags.FLAGS)
    listing = {}

    # Every script has defined its flags when it calls absl.app.run, which then stops it.
    class Defined(Exception):
        pass

    def stop(main, argv=None, **kwargs):
        raise Defined

    app.run = stop
    for script in scripts:
        # Each script afresh: drop the flags so far and the project's modules (their define_* calls
        # define the shared flags).
        for name in set(flags.FLAGS) - baseline:
            delattr(flags.FLAGS, name)
        for name, module in list(sys.modules.items()):
            if os.path.dirname(getattr(module, "__file__", None) or "") == code_dir:
                del sys.modules[name]
        sys.argv = [script]
        try:
            runpy.run_path(os.path.join(code_dir, script), run_name="__main__")
        except Defined:
            pass
        listing[script] = sorted(set(flags.FLAGS) - baseline)
    print(json.dumps(listing))
    """
)


@pytest.mark.slow
def test_every_flag_of_every_script_is_documented():
    proc = subprocess.run(
        [sys.executable, "-c", LIST_FLAGS, str(REPO / "tensorflow"), *USER_SCRIPTS],
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    listing = json.loads(proc.stdout.splitlines()[-1])
    docs = README.read_text() + "".join(p.read_text() for p in (REPO / "docs").glob("*.md"))
    undocumented = {
        script: [f for f in names if not re.search(rf"--{re.escape(f)}\b", docs)]
        for script, names in listing.items()
    }
    assert all(len(names) > 2 for names in listing.values()), listing
    assert not {s: f for s, f in undocumented.items() if f}, undocumented


# --- The Python blocks. ----------------------------------------------------------------------------------


def notebook_snippets():
    """The README's one-call recipe, then docs/modeling.md's by-hand one."""
    (one_call,) = blocks_under("Using the model from Python (notebooks)")
    (by_hand,) = blocks_under("Loading by hand", REPO / "docs/modeling.md")
    return one_call, by_hand


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


def test_the_notebook_recipes_are_the_one_call_and_the_by_hand_ones():
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
