"""Writes the quick start's built-in data: a small word-piece vocabulary and an MRPC-format paraphrase task.

The vocabulary has exactly the 1,000 entries of the tiny golden checkpoints in tests/fixtures/golden, with the
special tokens at the ids those checkpoints use (<pad> 0, <cls> 1, <sep> 2). Each pair is labelled 1 when both
sentences are about the same topic (finance, sports, politics) and 0 otherwise, a task a tiny model learns in a
few hundred steps on a CPU.

Usage: python scripts/make_demo_data.py --output_dir=demo
"""

import os
import random
import string

from absl import app, flags

flags.DEFINE_string("output_dir", "demo", "Where to write vocab.txt and MRPC/{train,dev,test}.tsv.")
flags.DEFINE_integer("num_train", 800, "Training pairs.")
flags.DEFINE_integer("num_dev", 200, "Dev pairs.")
FLAGS = flags.FLAGS

VOCAB_SIZE = 1000
SPECIALS = ["<pad>", "<cls>", "<sep>", "<mask>", "<unk>"]
TOPICS = {
    "finance": "company market price share stock bank profit revenue sales loss growth rate tax investor "
    "analyst percent million billion dollar euro deal agreement trading shares earnings quarter fund",
    "sports": "team game player season coach match goal score league cup win lost final victory fans "
    "stadium striker keeper title champion points round race runner tennis football club",
    "politics": "government minister president election campaign party vote law bill court police "
    "state country official leader parliament senate policy reform union protest mayor council",
}
TOPIC_WORDS = {topic: words.split() for topic, words in TOPICS.items()}
FUNCTION_WORDS = [
    "the",
    "a",
    "of",
    "to",
    "in",
    "on",
    "at",
    "by",
    "for",
    "with",
    "from",
    "about",
    "over",
    "after",
    "said",
    "says",
    "told",
    "new",
]
WORDS = sorted({w for ws in TOPIC_WORDS.values() for w in ws} | set(FUNCTION_WORDS))


def build_vocab():
    pieces = list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase]
    pieces += list(string.digits) + list(".,!?;:'\"()-")
    vocab = SPECIALS + [w for w in WORDS if w not in pieces] + pieces
    vocab += [f"[unused{i}]" for i in range(VOCAB_SIZE - len(vocab))]
    assert len(vocab) == VOCAB_SIZE and len(set(vocab)) == VOCAB_SIZE
    return vocab


def make_sentence(rng, topic):
    words = rng.sample(TOPIC_WORDS[topic], rng.randint(4, 7)) + rng.sample(FUNCTION_WORDS, 3)
    rng.shuffle(words)
    return " ".join(words).capitalize() + "."


def make_pair(rng):
    """Label 1: both sentences are about the same topic; label 0: different topics."""
    first, second = rng.sample(sorted(TOPICS), 2)
    label = int(rng.random() < 0.5)
    if label:
        second = first
    return label, make_sentence(rng, first), make_sentence(rng, second)


def write_tsv(path, rows, with_label=True):
    header = (
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
        if with_label
        else "index\t#1 ID\t#2 ID\t#1 String\t#2 String"
    )
    with open(path, "w", encoding="utf-8") as f:
        f.write(header + "\n")
        for i, (label, a, b) in enumerate(rows):
            first = str(label) if with_label else str(i)
            f.write(f"{first}\t{2 * i}\t{2 * i + 1}\t{a}\t{b}\n")


def main(_):
    rng = random.Random(12345)
    task_dir = os.path.join(FLAGS.output_dir, "MRPC")
    os.makedirs(task_dir, exist_ok=True)
    with open(os.path.join(FLAGS.output_dir, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(build_vocab()) + "\n")
    write_tsv(os.path.join(task_dir, "train.tsv"), [make_pair(rng) for _ in range(FLAGS.num_train)])
    write_tsv(os.path.join(task_dir, "dev.tsv"), [make_pair(rng) for _ in range(FLAGS.num_dev)])
    write_tsv(
        os.path.join(task_dir, "test.tsv"), [make_pair(rng) for _ in range(50)], with_label=False
    )
    print(f"wrote {FLAGS.output_dir}/vocab.txt and {task_dir}/{{train,dev,test}}.tsv")


if __name__ == "__main__":
    app.run(main)
