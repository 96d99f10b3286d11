"""RACE multiple-choice reading comprehension: raw files, features, tfrecords, metrics (SPEC §6.2).

Everything here takes explicit arguments; `race.py` owns the flags.

RACE is stored as `data_dir/{train,dev,test}/{middle,high}/*.txt`, one article per file, each a json object
with `article`, `questions`, `options` (4 strings per question), `answers` ("A".."D") and `id` (e.g.
"middle1.txt"). Every question is one example (`read_examples`). Each of its 4 choices becomes a sequence
`[cls] QA [sep] passage [sep]` (`encode_choice`), and the 4 sequences are concatenated along time
(`convert_example`), the layout `FunnelTFM.get_race_loss` takes. Examples are cached as a tfrecord plus a
meta json (`create_tfrecord`), read back in batches by `make_dataset` (the classification pipeline of
`classifier_utils`, on sequences of 4·L tokens) and, for the per-question bookkeeping of evaluation, by
`read_record_index`. Malformed input raises a ValueError that names the file (and the question).
"""

import collections
import dataclasses
import json
import os

import numpy as np
import tensorflow as tf
from absl import logging

import classifier_utils
import data_utils

SPLITS = ("train", "dev", "test")
LEVELS = ("middle", "high")
ANSWERS = ("A", "B", "C", "D")
NUM_CHOICES = len(ANSWERS)


@dataclasses.dataclass
class RaceExample:
    """One question.

    Attributes:
      example_id: the file's `id` (e.g. "middle1.txt"); `{level}/{file name}` when the file has none.
      question_index: position of the question in its file.
      level: "middle" or "high".
      article: the passage.
      qa_texts: NUM_CHOICES strings, question and option combined by `qa_text`.
      label: index of the right option (0 for "A" .. 3 for "D").
      source: "file, question i", for messages.
    """

    example_id: str
    question_index: int
    level: str
    article: str
    qa_texts: list
    label: int
    source: str = ""


@dataclasses.dataclass
class RaceFeatures:
    """Model inputs of one question: NUM_CHOICES sequences of max_seq_length, concatenated.

    input_ids / segment_ids: int lists of NUM_CHOICES * max_seq_length; input_mask: float list of the same
    length, 1.0 for padding and 0.0 for real tokens (the original's convention).
    """

    input_ids: list
    input_mask: list
    segment_ids: list
    label_id: int
    is_real_example: bool = True
    is_high_example: bool = False


def qa_text(question, option):
    """The original's QA text: a fill-in-the-blank question gets the option in every `_`, any other
    question is followed by the option."""
    if "_" in question:
        return question.replace("_", option)
    return " ".join([question, option])


def _read_article(path):
    try:
        with tf.io.gfile.GFile(path) as f:
            data = json.load(f)
    except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{path}: not a RACE json file ({e})") from None
    except tf.errors.OpError as e:  # e.g. a folder
        raise ValueError(f"{path}: cannot be read as a RACE file ({e.message})") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: not a RACE json file (expected an object, got {type(data).__name__})"
        )
    for key, kind in (("article", str), ("questions", list), ("options", list), ("answers", list)):
        if key not in data:
            raise ValueError(f"{path}: missing key {key!r}")
        if not isinstance(data[key], kind):
            raise ValueError(f"{path}: {key!r} must be a {kind.__name__}")
    counts = [len(data[k]) for k in ("questions", "options", "answers")]
    if len(set(counts)) != 1:
        raise ValueError(
            f"{path}: {counts[0]} questions but {counts[1]} option lists and {counts[2]} answers"
        )
    return data


def _file_examples(path, level, default_id):
    """The RaceExamples of one RACE file."""
    data = _read_article(path)
    example_id = str(data.get("id") or default_id)
    examples = []
    for i, (question, options, answer) in enumerate(
        zip(data["questions"], data["options"], data["answers"], strict=True)
    ):
        where = f"{path}: question {i}"
        if not isinstance(options, list) or len(options) != NUM_CHOICES:
            got = len(options) if isinstance(options, list) else type(options).__name__
            raise ValueError(f"{where} has {got} options, expected {NUM_CHOICES}")
        if not isinstance(question, str) or not all(isinstance(o, str) for o in options):
            raise ValueError(f"{where}: the question and its options must be strings")
        if answer not in ANSWERS:
            raise ValueError(f"{where}: answer {answer!r} is not one of {', '.join(ANSWERS)}")
        examples.append(
            RaceExample(
                example_id=example_id,
                question_index=i,
                level=level,
                article=data["article"],
                qa_texts=[qa_text(question, option) for option in options],
                label=ANSWERS.index(answer),
                source=where,
            )
        )
    return examples


def read_examples(data_dir, split):
    """Every question of `split` under `data_dir`, middle school first, files in name order.

    Hidden files (names starting with ".") are skipped; every other entry must be a RACE json file.

    Raises:
      ValueError: a missing split or level folder, a folder without files, or a malformed file (the
        message names the file, and the question when one is at fault).
    """
    split_dir = os.path.join(data_dir, split)
    layout = f"RACE is read from DATA_DIR/{split}/{{{','.join(LEVELS)}}}/*.txt"
    if not tf.io.gfile.isdir(split_dir):
        raise ValueError(f"{split_dir} does not exist ({layout}; check --data_dir={data_dir})")
    examples = []
    for level in LEVELS:
        level_dir = os.path.join(split_dir, level)
        if not tf.io.gfile.isdir(level_dir):
            raise ValueError(f"{level_dir} does not exist ({layout})")
        # No is-directory test per entry: on gs:// each would be a request, for some 28,000 files.
        names = sorted(
            name.rstrip("/") for name in tf.io.gfile.listdir(level_dir) if not name.startswith(".")
        )
        if not names:
            raise ValueError(f"{level_dir} has no RACE files")
        for name in names:
            examples += _file_examples(os.path.join(level_dir, name), level, f"{level}/{name}")
    if not examples:
        raise ValueError(f"{split_dir}: the RACE files hold no questions")
    logging.info("Read %d %s questions from %s.", len(examples), split, split_dir)
    return examples


def encode_choice(qa_ids, passage_ids, special_ids, max_seq_length, max_qa_length):
    """One choice as `[cls] QA [sep] passage [sep]`, padded to `max_seq_length`.

    QA keeps its last `max_qa_length` pieces (a long question loses its beginning, not an appended
    option); the passage then keeps its first `max_seq_length - 3 - len(QA)` pieces. Segment ids: cls 2,
    QA and its sep 0, passage and its sep 1, padding 0.

    Args:
      qa_ids: int list, the QA text's pieces.
      passage_ids: int list, the article's pieces.
      special_ids: `data_utils.SpecialIds` (cls_id, sep_id, pad_id).
      max_seq_length: L, at least max_qa_length + 3.
      max_qa_length: most QA pieces kept.

    Returns:
      (input_ids int list [L], input_mask float list [L] with 1.0 for padding, segment_ids int list [L],
      number of passage pieces cut off).
    """
    qa_ids = qa_ids[-max_qa_length:]
    room = max_seq_length - 3 - len(qa_ids)
    if room < 0:
        raise ValueError(
            f"max_qa_length={max_qa_length} leaves no room in max_seq_length={max_seq_length}"
        )
    kept = passage_ids[:room]
    input_ids = [special_ids.cls_id, *qa_ids, special_ids.sep_id, *kept, special_ids.sep_id]
    segment_ids = (
        [data_utils.SEG_ID_CLS]
        + [data_utils.SEG_ID_A] * (len(qa_ids) + 1)
        + [data_utils.SEG_ID_B] * (len(kept) + 1)
    )
    input_mask = [0.0] * len(input_ids)
    n_pad = max_seq_length - len(input_ids)
    # pad_id rather than the original's 0 (SPEC §6.2): the same for a vocabulary whose `<pad>` is id 0,
    # and otherwise id 0 is a real token whose hidden state enters the unmasked mean pooling.
    input_ids += [special_ids.pad_id] * n_pad
    input_mask += [1.0] * n_pad
    segment_ids += [data_utils.SEG_ID_PAD] * n_pad
    return input_ids, input_mask, segment_ids, len(passage_ids) - len(kept)


def convert_example(
    example, tokenize_fn, special_ids, max_seq_length, max_qa_length, article_ids=None
):
    """The features of one question: its NUM_CHOICES choices concatenated (see `encode_choice`).

    Args:
      example: `RaceExample`.
      tokenize_fn: str -> int list of piece ids.
      special_ids: `data_utils.SpecialIds`.
      max_seq_length: L, the length of each choice.
      max_qa_length: most QA pieces kept per choice.
      article_ids: the article's piece ids when already tokenized (articles are shared by questions).

    Returns:
      (RaceFeatures with lists of NUM_CHOICES * L, passage pieces cut off summed over the choices).
    """
    if article_ids is None:
        article_ids = tokenize_fn(example.article)
    input_ids, input_mask, segment_ids, cut = [], [], [], 0
    for text in example.qa_texts:
        ids, mask, seg, n_cut = encode_choice(
            tokenize_fn(text), article_ids, special_ids, max_seq_length, max_qa_length
        )
        input_ids += ids
        input_mask += mask
        segment_ids += seg
        cut += n_cut
    features = RaceFeatures(
        input_ids,
        input_mask,
        segment_ids,
        example.label,
        is_real_example=True,
        is_high_example=example.level == "high",
    )
    return features, cut


def write_tfrecord(examples, tokenize_fn, special_ids, max_seq_length, max_qa_length, path):
    """Writes the features of `examples` to the tfrecord `path`, in order.

    Record features: input_ids int64 [4·L], input_mask float [4·L], segment_ids int64 [4·L], label_ids
    int64 [], is_real_example int64 [], is_high_example int64 [] (the original's), and example_id bytes [],
    question_index int64 [] (for the per-question predictions). The file appears under its name only when
    complete.

    Returns:
      number of examples whose passage was cut short in at least one choice.
    """
    # Every question of an article shares its pieces; keyed by the text, which the examples hold anyway.
    article_ids = {}
    n_cut = 0
    progress = data_utils.ProgressLog(f"Writing {path}", len(examples), "questions")
    with data_utils.atomic_output_path(path) as tmp_path, tf.io.TFRecordWriter(tmp_path) as writer:
        for index, example in enumerate(examples):
            if example.article not in article_ids:
                article_ids[example.article] = tokenize_fn(example.article)
            feature, cut = convert_example(
                example,
                tokenize_fn,
                special_ids,
                max_seq_length,
                max_qa_length,
                article_ids[example.article],
            )
            n_cut += cut > 0
            if index < 3:
                logging.info(
                    "Example %s: label %d, input_ids of choice A %s",
                    example.source,
                    example.label,
                    feature.input_ids[:max_seq_length],
                )
            features = collections.OrderedDict(
                input_ids=data_utils.int64_feature(feature.input_ids),
                input_mask=data_utils.float_feature(feature.input_mask),
                segment_ids=data_utils.int64_feature(feature.segment_ids),
                label_ids=data_utils.int64_feature([feature.label_id]),
                is_real_example=data_utils.int64_feature([int(feature.is_real_example)]),
                is_high_example=data_utils.int64_feature([int(feature.is_high_example)]),
                example_id=data_utils.bytes_feature([example.example_id]),
                question_index=data_utils.int64_feature([example.question_index]),
            )
            writer.write(data_utils.serialize_example(features))
            progress.advance()
    progress.finish()
    logging.info(
        "%d of %d questions have a passage longer than the room left by max_seq_length=%d.",
        n_cut,
        len(examples),
        max_seq_length,
    )
    return n_cut


def tfrecord_paths(output_dir, tokenizer_name, max_seq_length, max_qa_length, split):
    """(`{tok}.len-{L}.qa-{Q}.{split}.tfrecord`, `{tok}.len-{L}.qa-{Q}.{split}.meta.json`) under
    `output_dir`."""
    base = os.path.join(
        output_dir, f"{tokenizer_name}.len-{max_seq_length}.qa-{max_qa_length}.{split}"
    )
    return f"{base}.tfrecord", f"{base}.meta.json"


def create_tfrecord(
    split,
    data_dir,
    output_dir,
    tokenizer,
    special_ids,
    max_seq_length,
    max_qa_length,
    overwrite_data=False,
    seed=0,
):
    """Converts a split to a cached tfrecord, or reuses the cached one.

    The meta json ({"num_real_examples", "num_examples", "num_high_examples", "settings"}) is written
    after the tfrecord, so its presence marks a complete cache. Training examples are shuffled with `seed`
    before writing. A cache made with other settings (data_dir, tokenizer, lengths, seed) is rebuilt.

    Args:
      split: "train", "dev" or "test".
      data_dir: the RACE directory (--data_dir).
      output_dir: tfrecord directory (--output_dir).
      tokenizer: a `tokenization` tokenizer; its file name is part of the cache name.
      special_ids: `data_utils.SpecialIds`.
      max_seq_length, max_qa_length: see `encode_choice`; both are part of the cache name.

    Returns:
      (tfrecord path, meta dict).
    """
    record_path, meta_path = tfrecord_paths(
        output_dir, tokenizer.name, max_seq_length, max_qa_length, split
    )
    settings = {
        "data_dir": data_dir,
        "split": split,
        **data_utils.tokenizer_settings(tokenizer),
        "max_seq_length": max_seq_length,
        "max_qa_length": max_qa_length,
        "shuffle_seed": seed if split == "train" else None,
    }
    if not overwrite_data:
        meta = data_utils.read_cached_meta(meta_path, settings, [record_path])
        if meta is not None:
            logging.info("Use cached %s (%d questions).", record_path, meta["num_examples"])
            return record_path, meta

    examples = read_examples(data_dir, split)
    if split == "train":
        np.random.RandomState(seed).shuffle(examples)
    tf.io.gfile.makedirs(output_dir)
    logging.info("Create %s from %d %s questions.", record_path, len(examples), split)
    write_tfrecord(
        examples,
        tokenizer.convert_text_to_ids,
        special_ids,
        max_seq_length,
        max_qa_length,
        record_path,
    )
    meta = {
        "num_real_examples": len(examples),
        "num_examples": len(examples),
        "num_high_examples": sum(e.level == "high" for e in examples),
        "settings": settings,
    }
    data_utils.atomic_write_json(meta_path, meta, indent=4)
    return record_path, meta


def make_dataset(
    path,
    max_seq_length,
    batch_size,
    is_training,
    shuffle_buffer=2048,
    input_context=None,
    num_examples=None,
    seed=None,
):
    """Batches of a RACE tfrecord: `classifier_utils.make_dataset` on sequences of NUM_CHOICES * L.

    Training shuffles and repeats; evaluation is one pass in file order padded with fake examples
    (is_real_example 0) to a multiple of `batch_size` (see there).

    Returns:
      tf.data.Dataset of dicts: input_ids int32 [B, 4·L], input_mask float32 [B, 4·L], segment_ids int32
      [B, 4·L], label_ids int32 [B], is_real_example int32 [B].
    """
    return classifier_utils.make_dataset(
        path,
        NUM_CHOICES * max_seq_length,
        False,
        batch_size,
        is_training,
        shuffle_buffer=shuffle_buffer,
        input_context=input_context,
        num_examples=num_examples,
        seed=seed,
    )


def read_record_index(path):
    """Who is who in a RACE tfrecord, in file order (the order of `make_dataset`'s evaluation batches).

    Returns:
      dict of numpy arrays [N]: example_id (str), question_index (int64), is_high_example (int64),
      label_ids (int64).
    """
    spec = {
        "example_id": tf.io.FixedLenFeature([], tf.string),
        "question_index": tf.io.FixedLenFeature([], tf.int64),
        "is_high_example": tf.io.FixedLenFeature([], tf.int64),
        "label_ids": tf.io.FixedLenFeature([], tf.int64),
    }
    columns = collections.defaultdict(list)
    dataset = tf.data.TFRecordDataset(path).map(lambda r: tf.io.parse_single_example(r, spec))
    for batch in dataset.batch(4096):
        for name, value in batch.items():
            columns[name].append(value.numpy())
    index = {
        name: np.concatenate(columns[name]) if columns[name] else np.zeros([0]) for name in spec
    }
    index["example_id"] = np.array([s.decode("utf-8") for s in index["example_id"]], dtype=object)
    return index


# ------------------------------------------------------------------------------------------------ metrics
def _accuracy(correct):
    return float(np.mean(correct)) if len(correct) else None


def compute_metrics(labels, logits, per_example_loss, is_high):
    """Evaluation metrics over the real questions, as the original reports them.

    Args:
      labels: int [N] right choices.
      logits: float [N, NUM_CHOICES].
      per_example_loss: float [N].
      is_high: int or bool [N], 1 for high-school questions.

    Returns:
      dict: eval_accuracy, eval_accuracy_high, eval_accuracy_mid, eval_loss (Python floats; a level
      without questions has accuracy None rather than the original's 0).
    """
    labels = np.asarray(labels)
    is_high = np.asarray(is_high).astype(bool)
    correct = np.argmax(np.asarray(logits), axis=-1) == labels
    return {
        "eval_accuracy": _accuracy(correct),
        "eval_accuracy_high": _accuracy(correct[is_high]),
        "eval_accuracy_mid": _accuracy(correct[~is_high]),
        "eval_loss": float(np.mean(per_example_loss)),
    }


def best_result_record(metrics, step, path):
    """The content of best_result.json: step, checkpoint path, accu (the original's keys) and the
    accuracy of each level."""
    return {
        "step": step,
        "path": path,
        "accu": metrics["eval_accuracy"],
        "accu_high": metrics["eval_accuracy_high"],
        "accu_mid": metrics["eval_accuracy_mid"],
    }


def prediction_records(index, logits):
    """One dict per question for the predictions file.

    Args:
      index: `read_record_index` of the evaluated tfrecord.
      logits: float [N, NUM_CHOICES], in the same order.

    Returns:
      list of {"id", "question", "level", "label", "prediction", "logits"}, labels and predictions as
      letters.
    """
    records = []
    for i, row in enumerate(np.asarray(logits)):
        records.append(
            {
                "id": str(index["example_id"][i]),
                "question": int(index["question_index"][i]),
                "level": LEVELS[int(index["is_high_example"][i])],
                "label": ANSWERS[int(index["label_ids"][i])],
                "prediction": ANSWERS[int(np.argmax(row))],
                "logits": [float(x) for x in row],
            }
        )
    return records
