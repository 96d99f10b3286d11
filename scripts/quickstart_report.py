"""What scripts/quickstart.sh shows on the console: classifier.py's progress, then a summary.

classifier.py logs every INFO line (examples, variables, file writes); a newcomer needs the training and
evaluation progress and any warning or error. Two commands:

  classifier.py ... 2>&1 | python scripts/quickstart_report.py progress LOG
      copies every line to LOG and prints the progress lines (without absl's prefix), warnings, errors and
      anything that is not an absl log line (a traceback, `classifier.py: error: ...`).
  python scripts/quickstart_report.py summary --model_dir=demo/exp --log=LOG
      prints the best dev accuracy next to chance (the majority-class rate of the dev set) and where the
      metrics, predictions, checkpoint, submission, log and TensorBoard files are.

Reads no TensorFlow, so it adds nothing to the quick start's time.
"""

import argparse
import collections
import json
import os
import re
import sys

# absl's prefix: level letter, date, time, thread id, file:line.
ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [^\]]+\] (.*)$")
PROGRESS = (
    re.compile(r"^Training from step \d+ to \d+\.$"),
    re.compile(r"^.* holds a finished run \(step \d+\): nothing to train\.$"),
    re.compile(r"^First call of the train loop"),
    re.compile(r"^step \d+/\d+ \|"),
    re.compile(r"^Wrote .*submit/"),
)
EVAL_LINE = re.compile(r"^Eval step (\d+) in [^|]*\| (.*)$")
# The confusion counts stay in the metrics files; the console gets the scores.
CONFUSION = re.compile(r"^eval_(tp|fp|tn|fn) ")
LEVELS = {"W": "WARNING", "E": "ERROR", "F": "FATAL"}


def console_line(line):
    """The console form of one log line, or None to leave it to the log file."""
    match = ABSL_LINE.match(line)
    if not match:
        return line
    level, message = match.groups()
    if level in LEVELS:
        return f"{LEVELS[level]}: {message}"
    if any(p.match(message) for p in PROGRESS):
        return message
    match = EVAL_LINE.match(message)
    if match:
        step, metrics = match.groups()
        kept = [m for m in metrics.split(" | ") if not CONFUSION.match(m)]
        return " | ".join([f"eval step {step}"] + kept)
    return None


def progress(log_path):
    with open(log_path, "w", encoding="utf-8") as log:
        for line in sys.stdin:
            log.write(line)
            log.flush()
            shown = console_line(line.rstrip("\n"))
            if shown is not None:
                print(shown, flush=True)


def majority_rate(predictions_path):
    with open(predictions_path, encoding="utf-8") as f:
        labels = collections.Counter(json.loads(line)["label"] for line in f)
    return max(labels.values()) / sum(labels.values()), sum(labels.values())


def summary(model_dir, log_path):
    with open(os.path.join(model_dir, "best_result.json"), encoding="utf-8") as f:
        best = json.load(f)
    step, ckpt = best["step"], best["path"]
    predictions = os.path.join(model_dir, "eval", f"dev.ckpt-{step}.predictions.jsonl")
    chance, n_dev = majority_rate(predictions)
    submit = os.path.join(model_dir, "submit")
    submissions = sorted(os.listdir(submit)) if os.path.isdir(submit) else []
    rows = [
        (
            "best dev accuracy",
            f"{best['accu']:.3f} at step {step} (chance, the majority class of the {n_dev} dev "
            f"examples: {chance:.3f})",
        ),
        (
            "metrics",
            f"{model_dir}/best_result.json, {model_dir}/eval/dev.ckpt-<step>.metrics.json",
        ),
        ("predictions", predictions),
        ("checkpoint", f"{ckpt} (the best; the others were deleted after evaluation)"),
        ("submission", ", ".join(os.path.join(submit, n) for n in submissions) or "none"),
        ("full log", log_path),
        ("TensorBoard", f".venv/bin/tensorboard --logdir {model_dir}"),
    ]
    print("\nSummary")
    for name, value in rows:
        print(f"  {name:<18} {value}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    follow = commands.add_parser("progress", help="filter classifier.py's output from stdin")
    follow.add_argument("log", help="where every line goes")
    report = commands.add_parser("summary", help="print the summary of a finished run")
    report.add_argument("--model_dir", default="demo/exp")
    report.add_argument("--log", default="demo/classifier.log")
    args = parser.parse_args()
    if args.command == "progress":
        progress(args.log)
    else:
        summary(args.model_dir, args.log)


if __name__ == "__main__":
    main()
