"""GLUE and text classification data: task processors, features, tfrecords, metrics, submission files.

Everything here is plain Python / tf.data and takes explicit arguments; `classifier.py` owns the flags.

Each task of SPEC §6.1 has a processor that reads the raw files of one split into `InputExample`s. Malformed
input (a missing file, an empty file, a row with too few columns, an unknown label) raises a ValueError whose
message names the file and line. Examples become fixed-length features (`convert_single_example`), which are
cached as a tfrecord plus a meta json in the output directory (`create_tfrecord`) and read back by
`make_dataset`.

Metrics are computed in numpy from the predictions of every real example (`compute_metrics`): accuracy and
loss for every classification task, F1 and Matthews correlation (label "1" = positive) for CoLA, MRPC and
QQP as the original reported them, Pearson and Spearman correlations for STS-B.
"""

import collections
import csv
import dataclasses
import os

import numpy as np
import tensorflow as tf
from absl import logging

import data_utils

# The GLUE leaderboard's file name of each task's test predictions.
SUBMIT_NAMES = {
    "cola": "CoLA",
    "mnli_matched": "MNLI-m",
    "mnli_mismatched": "MNLI-mm",
    "mrpc": "MRPC",
    "qqp": "QQP",
    "rte": "RTE",
    "sst-2": "SST-2",
    "wnli": "WNLI",
    "qnli": "QNLI",
    "sts-b": "STS-B",
    "diagnostic": "AX",
}

# GLUE's WNLI test set size; the original submits the majority class ("0") for every example.
WNLI_TEST_SIZE = 146

# Tasks whose results include F1 and Matthews correlation (label id 1 is the positive class).
BINARY_METRIC_TASKS = ("cola", "mrpc", "qqp")


@dataclasses.dataclass
class InputExample:
    """One raw example.

    Attributes:
      guid: unique id, e.g. "dev-12".
      text_a: first text.
      text_b: second text of a pair task, else None.
      label: label string (classification), float (regression), or None (unlabeled test data).
      source: "file:line" the example was read from, for error messages.
    """

    guid: str
    text_a: str
    text_b: str | None = None
    label: str | float | None = None
    source: str = ""


@dataclasses.dataclass
class InputFeatures:
    """Model inputs of one example, each list of length max_seq_length.

    input_mask is 1.0 for padding and 0.0 for real tokens (the original's convention).
    """

    input_ids: list
    input_mask: list
    segment_ids: list
    label_id: int | float
    is_real_example: bool = True


def clean_web_text(text):
    """The original's clean-up of web text (IMDB, Yelp, Amazon, AG, DBpedia).

    Removes `<br />`, `<p>` and anchor tags, unescapes `&quot;`, turns literal `\\n` and backslashes into spaces
    and collapses whitespace. Unlike the original (SPEC §10.23), an unterminated `<a href=` drops only the
    tag opener, not everything after it.
    """
    text = text.replace("<br />", " ").replace("&quot;", '"').replace("<p>", " ")
    opener = "<a href="
    if opener in text:
        while opener in text:
            start = text.find(opener)
            end = text.find(">", start)
            if end != -1:
                text = text[:start] + text[end + 1 :]
            else:
                text = text[:start] + text[start + len(opener) :]
        text = text.replace("</a>", "")
    text = text.replace("\\n", " ").replace("\\", " ")
    return " ".join(text.split())


def _check_file(path, data_dir):
    if not tf.io.gfile.exists(path):
        raise ValueError(f"{path} does not exist (check --data_dir={data_dir})")
    if tf.io.gfile.stat(path).length == 0:
        raise ValueError(f"{path} is empty")


def _decoded_lines(f, path):
    """The lines of the binary file `f` as str, without a leading UTF-8 byte order mark.

    Raises:
      ValueError: a line is not UTF-8, naming the file and the line.
    """
    for number, raw in enumerate(f, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{path}:{number}: not valid UTF-8 ({e.reason} at byte {e.start})"
            ) from None
        yield line.removeprefix("\ufeff") if number == 1 else line


def read_rows(path, delimiter="\t", quotechar=None):
    """Yields (line_number, row) of a delimited text file; line numbers are 1-based.

    Raises ValueError naming the file and line for a row the csv module cannot read.

    Args:
      path: local or gs:// file.
      delimiter: "\\t" for GLUE, "," for the csv tasks.
      quotechar: None reads every character literally (GLUE), '"' for csv quoting.
    """
    quoting = csv.QUOTE_NONE if quotechar is None else csv.QUOTE_MINIMAL
    with tf.io.gfile.GFile(path, "rb") as f:
        reader = csv.reader(
            _decoded_lines(f, path), delimiter=delimiter, quotechar=quotechar, quoting=quoting
        )
        start = 1
        try:
            for row in reader:
                # reader.line_num is the last physical line of the row; a quoted field may span lines.
                yield start, row
                start = reader.line_num + 1
        except csv.Error as e:  # e.g. an unclosed quote: the rest of the file became one field
            raise ValueError(f"{path}:{start}: {e}") from None


class DataProcessor:
    """Reads the raw files of one task.

    Attributes:
      name: the lower-cased task name.
      labels: the label strings, in label-id order; None for regression.
      splits: the splits this task has files for.
    """

    labels = ("0", "1")
    splits = ("train", "dev", "test")

    def __init__(self, name, skip_incomplete_rows=False):
        self.name = name
        self.skip_incomplete_rows = skip_incomplete_rows

    @property
    def is_regression(self):
        return self.labels is None

    @property
    def is_pair(self):
        """Whether the task's examples have a second text (text_b)."""
        return False

    def get_examples(self, data_dir, split):
        """The examples of `split` ("train", "dev" or "test") under `data_dir`."""
        if split not in self.splits:
            raise ValueError(
                f"task {self.name} has no {split!r} split (it has {', '.join(self.splits)})"
            )
        examples = self._read_split(data_dir, split)
        if not examples:
            raise ValueError(f"task {self.name}: no {split} examples found under {data_dir}")
        return examples

    def _read_split(self, data_dir, split):
        raise NotImplementedError

    def _row_too_short(self, path, line, row, needed, skippable=True):
        """Raises (or, with skip_incomplete_rows and `skippable`, logs and returns True) for a row of
        < `needed` columns."""
        if len(row) >= needed:
            return False
        message = f"{path}:{line}: expected at least {needed} columns, got {len(row)}"
        if not skippable:
            raise ValueError(f"{message} (a submission needs a prediction for every test row)")
        if self.skip_incomplete_rows:
            logging.warning("%s; row skipped", message)
            return True
        raise ValueError(f"{message} (--skip_incomplete_rows skips such rows)")

    def _check_label(self, label, source):
        if self.labels is None:
            try:
                return float(label)
            except ValueError:
                raise ValueError(f"{source}: label {label!r} is not a number") from None
        if label not in self.labels:
            raise ValueError(
                f"{source}: unknown label {label!r} for task {self.name} "
                f"(expected one of {', '.join(self.labels)})"
            )
        return label


class GlueProcessor(DataProcessor):
    """A GLUE task stored as `{train,dev,test}.tsv` (columns given by the class attributes).

    `label_column` may be negative (counted from the end). Test files have no labels; their text columns
    may differ (`test_text_a_column`, `test_text_b_column`). Rows labelled `no_label` (a pair the
    annotators did not agree on) are skipped, with a count in the log.
    """

    train_file = "train.tsv"
    dev_file = "dev.tsv"
    test_file = "test.tsv"
    label_column = None
    text_a_column = None
    text_b_column = None
    contains_header = True
    test_text_a_column = None
    test_text_b_column = None
    test_contains_header = True
    no_label = None

    @property
    def is_pair(self):
        return self.text_b_column is not None or self.test_text_b_column is not None

    def _file_name(self, data_dir, split):
        return {"train": self.train_file, "dev": self.dev_file, "test": self.test_file}[split]

    def _read_split(self, data_dir, split):
        path = os.path.join(data_dir, self._file_name(data_dir, split))
        _check_file(path, data_dir)
        is_test = split == "test"
        if is_test:
            a_col = (
                self.test_text_a_column
                if self.test_text_a_column is not None
                else self.text_a_column
            )
            b_col = (
                self.test_text_b_column
                if self.test_text_b_column is not None
                else self.text_b_column
            )
            header = self.test_contains_header
        else:
            a_col, b_col, header = self.text_a_column, self.text_b_column, self.contains_header
        columns = [a_col] + ([b_col] if b_col is not None else [])
        if not is_test:
            columns.append(self.label_column)
        needed = max(c + 1 if c >= 0 else -c for c in columns)

        examples = []
        num_unlabelled = 0
        for line, row in read_rows(path):
            if line == 1 and header:
                continue
            if self._row_too_short(path, line, row, needed, skippable=not is_test):
                continue
            if (
                not is_test
                and self.no_label is not None
                and row[self.label_column] == self.no_label
            ):
                num_unlabelled += 1
                continue
            source = f"{path}:{line}"
            label = None if is_test else self._check_label(row[self.label_column], source)
            examples.append(
                InputExample(
                    guid=f"{split}-{line - 1}",
                    text_a=row[a_col],
                    text_b=row[b_col] if b_col is not None else None,
                    label=label,
                    source=source,
                )
            )
        if num_unlabelled:
            logging.info("%s: skipped %d rows labelled %r.", path, num_unlabelled, self.no_label)
        return examples


class ColaProcessor(GlueProcessor):
    label_column = 1
    text_a_column = 3
    contains_header = False
    test_text_a_column = 1


class Sst2Processor(GlueProcessor):
    """SST-2: the original reads `{split}.detok.tsv` (SPEC §10.4); GLUE's download has `{split}.tsv`.

    The detokenized file is used when present, the plain one otherwise.
    """

    label_column = 1
    text_a_column = 0
    test_text_a_column = 1

    def _file_name(self, data_dir, split):
        detok = f"{split}.detok.tsv"
        if tf.io.gfile.exists(os.path.join(data_dir, detok)):
            return detok
        return f"{split}.tsv"


class MrpcProcessor(GlueProcessor):
    label_column = 0
    text_a_column = 3
    text_b_column = 4


class QqpProcessor(GlueProcessor):
    label_column = 5
    text_a_column = 3
    text_b_column = 4
    test_text_a_column = 1
    test_text_b_column = 2


class MnliMatchedProcessor(GlueProcessor):
    labels = ("contradiction", "entailment", "neutral")
    dev_file = "dev_matched.tsv"
    test_file = "test_matched.tsv"
    label_column = -1
    text_a_column = 8
    text_b_column = 9


class MnliMismatchedProcessor(MnliMatchedProcessor):
    dev_file = "dev_mismatched.tsv"
    test_file = "test_mismatched.tsv"


class SnliProcessor(GlueProcessor):
    """GLUE's SNLI: index, captionID, pairID, four parses, sentence1, sentence2, label1 (…label5), gold_label.

    The original read it with the MNLI columns (8, 9), which in SNLI are sentence2 and the first
    annotator's label: the label leaked into the input (SPEC §6.1; docs/deviations.md). SNLI marks pairs
    without a gold label "-".
    """

    labels = MnliMatchedProcessor.labels
    label_column = -1
    text_a_column = 7
    text_b_column = 8
    no_label = "-"


class QnliProcessor(GlueProcessor):
    labels = ("entailment", "not_entailment")
    label_column = 3
    text_a_column = 1
    text_b_column = 2


class RteProcessor(QnliProcessor):
    pass


class WnliProcessor(GlueProcessor):
    label_column = 3
    text_a_column = 1
    text_b_column = 2


class StsbProcessor(GlueProcessor):
    labels = None
    label_column = 9
    text_a_column = 7
    text_b_column = 8


class DiagnosticProcessor(GlueProcessor):
    """GLUE's diagnostic set (AX): test only, predicted with an MNLI model."""

    labels = MnliMatchedProcessor.labels
    splits = ("test",)
    test_file = "diagnostic.tsv"
    test_text_a_column = 1
    test_text_b_column = 2


class Yelp5Processor(DataProcessor):
    """Yelp / Amazon / AG / DBpedia: `train.csv` and `test.csv` (dev = test), label in column 0.

    Yelp has one text column; the others have a title (text_a) and a body (text_b).
    """

    labels = ("1", "2", "3", "4", "5")
    splits = ("train", "dev")
    text_columns = (1,)

    @property
    def is_pair(self):
        return len(self.text_columns) > 1

    def _read_split(self, data_dir, split):
        file_split = "train" if split == "train" else "test"
        path = os.path.join(data_dir, f"{file_split}.csv")
        _check_file(path, data_dir)
        needed = max(self.text_columns) + 1
        examples = []
        for line, row in read_rows(path, delimiter=",", quotechar='"'):
            if self._row_too_short(path, line, row, needed):
                continue
            source = f"{path}:{line}"
            texts = [clean_web_text(row[c]) for c in self.text_columns]
            examples.append(
                InputExample(
                    guid=f"{file_split}-{len(examples)}",
                    text_a=texts[0],
                    text_b=texts[1] if len(texts) > 1 else None,
                    label=self._check_label(row[0], source),
                    source=source,
                )
            )
        return examples


class Yelp2Processor(Yelp5Processor):
    labels = ("1", "2")


class DbpediaProcessor(Yelp5Processor):
    labels = tuple(str(i) for i in range(1, 15))
    text_columns = (1, 2)


class Amazon5Processor(DbpediaProcessor):
    labels = ("1", "2", "3", "4", "5")


class Amazon2Processor(DbpediaProcessor):
    labels = ("1", "2")


class AgProcessor(DbpediaProcessor):
    labels = ("1", "2", "3", "4")


class ImdbProcessor(DataProcessor):
    """IMDB (aclImdb): one review per `{train,test}/{neg,pos}/*.txt` file; dev = test."""

    labels = ("neg", "pos")
    splits = ("train", "dev")

    def _read_split(self, data_dir, split):
        split_dir = os.path.join(data_dir, "train" if split == "train" else "test")
        examples = []
        for label in self.labels:
            label_dir = os.path.join(split_dir, label)
            if not tf.io.gfile.isdir(label_dir):
                raise ValueError(f"{label_dir} does not exist (check --data_dir={data_dir})")
            for filename in sorted(tf.io.gfile.listdir(label_dir)):
                if not filename.endswith("txt"):
                    continue
                path = os.path.join(label_dir, filename)
                with tf.io.gfile.GFile(path) as f:
                    text = clean_web_text(f.read().strip())
                examples.append(
                    InputExample(
                        guid=f"{split}-{label}-{filename[:-4]}",
                        text_a=text,
                        label=label,
                        source=path,
                    )
                )
        return examples


PROCESSORS = {
    "cola": ColaProcessor,
    "mnli_matched": MnliMatchedProcessor,
    "mnli_mismatched": MnliMismatchedProcessor,
    "mrpc": MrpcProcessor,
    "qqp": QqpProcessor,
    "rte": RteProcessor,
    "snli": SnliProcessor,
    "sst-2": Sst2Processor,
    "wnli": WnliProcessor,
    "qnli": QnliProcessor,
    "sts-b": StsbProcessor,
    "diagnostic": DiagnosticProcessor,
    "yelp5": Yelp5Processor,
    "yelp2": Yelp2Processor,
    "amazon5": Amazon5Processor,
    "amazon2": Amazon2Processor,
    "imdb": ImdbProcessor,
    "ag": AgProcessor,
    "dbpedia": DbpediaProcessor,
}


def get_processor(task_name, skip_incomplete_rows=False):
    """The processor of `task_name` (case-insensitive); ValueError naming --task_name if unknown."""
    name = (task_name or "").lower()
    if name not in PROCESSORS:
        raise ValueError(
            f"--task_name={task_name!r} is not a known task; choose one of {', '.join(PROCESSORS)}"
        )
    return PROCESSORS[name](name, skip_incomplete_rows)


def truncate_seq_pair(tokens_a, tokens_b, max_length):
    """Pops from the longer list (b on ties) until the total length is at most `max_length`, in place."""
    while len(tokens_a) + len(tokens_b) > max_length:
        if len(tokens_a) > len(tokens_b):
            tokens_a.pop()
        else:
            tokens_b.pop()


def convert_single_example(example, label_list, max_seq_length, tokenize_fn, special_ids):
    """Turns an example into `[cls] A [sep] (B [sep])` features padded to `max_seq_length`.

    Args:
      example: `InputExample`; its label is ignored when None (test data: label id 0).
      label_list: label strings in id order, or None for regression (float label).
      max_seq_length: length of every feature list.
      tokenize_fn: str -> list of int token ids.
      special_ids: `data_utils.SpecialIds` (cls_id, sep_id, pad_id).

    Returns:
      (InputFeatures, number of text tokens before truncation).
    """
    tokens_a = tokenize_fn(example.text_a)
    tokens_b = tokenize_fn(example.text_b) if example.text_b else None
    example_len = len(tokens_a) + (len(tokens_b) if tokens_b else 0)
    if tokens_b:
        truncate_seq_pair(tokens_a, tokens_b, max_seq_length - 3)
    else:
        tokens_a = tokens_a[: max_seq_length - 2]

    input_ids = [special_ids.cls_id, *tokens_a, special_ids.sep_id]
    segment_ids = [data_utils.SEG_ID_CLS] + [data_utils.SEG_ID_A] * (len(tokens_a) + 1)
    if tokens_b:
        input_ids += [*tokens_b, special_ids.sep_id]
        segment_ids += [data_utils.SEG_ID_B] * (len(tokens_b) + 1)
    input_mask = [0.0] * len(input_ids)
    n_pad = max_seq_length - len(input_ids)
    input_ids += [special_ids.pad_id] * n_pad
    input_mask += [1.0] * n_pad
    segment_ids += [data_utils.SEG_ID_PAD] * n_pad

    if example.label is None:
        label_id = 0.0 if label_list is None else 0
    elif label_list is None:
        label_id = float(example.label)
    else:
        label_id = label_list.index(example.label)
    return InputFeatures(input_ids, input_mask, segment_ids, label_id), example_len


def write_tfrecord(
    examples, label_list, max_seq_length, tokenize_fn, special_ids, path, num_passes=1
):
    """Writes the features of `examples` (repeated `num_passes` times) to the tfrecord `path`.

    Record features: input_ids int64 [L], input_mask float [L], segment_ids int64 [L], label_ids int64 []
    (float [] for regression), is_real_example int64 []. The file appears under its name only when complete.

    Returns:
      list of example lengths (text tokens before truncation), one per example.
    """
    lengths = []
    progress = data_utils.ProgressLog(f"Writing {path}", len(examples) * num_passes, "examples")
    with data_utils.atomic_output_path(path) as tmp_path, tf.io.TFRecordWriter(tmp_path) as writer:
        for index, example in enumerate(examples * num_passes):
            feature, example_len = convert_single_example(
                example, label_list, max_seq_length, tokenize_fn, special_ids
            )
            lengths.append(example_len)
            if index < 3:
                logging.info(
                    "Example %s (%s): label %r -> %r, input_ids %s",
                    example.guid,
                    example.source,
                    example.label,
                    feature.label_id,
                    feature.input_ids,
                )
            label_feature = (
                data_utils.float_feature([feature.label_id])
                if label_list is None
                else data_utils.int64_feature([feature.label_id])
            )
            features = collections.OrderedDict(
                input_ids=data_utils.int64_feature(feature.input_ids),
                input_mask=data_utils.float_feature(feature.input_mask),
                segment_ids=data_utils.int64_feature(feature.segment_ids),
                label_ids=label_feature,
                is_real_example=data_utils.int64_feature([int(feature.is_real_example)]),
            )
            writer.write(data_utils.serialize_example(features))
            progress.advance()
    progress.finish()
    hist, bins = np.histogram(lengths, bins=[0, 128, 256, 512, 1024, 102400])
    for count, low, high in zip(hist, bins[:-1], bins[1:], strict=True):
        logging.info("  length [%d, %d): %.4f", low, high, count / max(len(lengths), 1))
    return lengths


def tfrecord_paths(output_dir, tokenizer_name, max_seq_length, split):
    """(`{tok}.len-{L}.{split}.tfrecord`, `{tok}.len-{L}.{split}.meta.json`) under `output_dir`."""
    base = os.path.join(output_dir, f"{tokenizer_name}.len-{max_seq_length}.{split}")
    return f"{base}.tfrecord", f"{base}.meta.json"


def create_tfrecord(
    processor,
    split,
    data_dir,
    output_dir,
    tokenizer,
    special_ids,
    max_seq_length,
    overwrite_data=False,
    shuffle_examples=True,
    num_passes=1,
    seed=0,
):
    """Converts a split to a cached tfrecord, or reuses the cached one.

    The meta json ({"num_real_examples", "num_examples", "settings"}) is written after the tfrecord, so
    its presence marks a complete cache. Training examples are shuffled (with `seed`) before writing when
    `shuffle_examples`, and repeated `num_passes` times. A cache made with other settings (task,
    data_dir, tokenizer, length, shuffle, passes) is rebuilt: MNLI's matched and mismatched dev sets, for
    one, share a cache name.

    Args:
      processor: `DataProcessor` of the task.
      split: "train", "dev" or "test".
      data_dir: raw data directory (--data_dir).
      output_dir: tfrecord directory (--output_dir).
      tokenizer: a `tokenization` tokenizer; its file name is part of the cache name.
      special_ids: `data_utils.SpecialIds`.

    Returns:
      (tfrecord path, meta dict).
    """
    record_path, meta_path = tfrecord_paths(output_dir, tokenizer.name, max_seq_length, split)
    is_training = split == "train"
    settings = {
        "task": processor.name,
        "data_dir": data_dir,
        "split": split,
        "skip_incomplete_rows": processor.skip_incomplete_rows,
        **data_utils.tokenizer_settings(tokenizer),
        "max_seq_length": max_seq_length,
        "shuffle_seed": seed if is_training and shuffle_examples else None,
        "num_passes": num_passes if is_training else 1,
    }
    if not overwrite_data:
        meta = data_utils.read_cached_meta(meta_path, settings, [record_path])
        if meta is not None:
            logging.info("Use cached %s (%d examples).", record_path, meta["num_examples"])
            return record_path, meta

    examples = processor.get_examples(data_dir, split)
    if settings["shuffle_seed"] is not None:
        np.random.RandomState(seed).shuffle(examples)
    tf.io.gfile.makedirs(output_dir)
    label_list = None if processor.is_regression else list(processor.labels)
    logging.info("Create %s from %d %s examples.", record_path, len(examples), split)
    write_tfrecord(
        examples,
        label_list,
        max_seq_length,
        tokenizer.convert_text_to_ids,
        special_ids,
        record_path,
        settings["num_passes"],
    )
    meta = {"num_real_examples": len(examples), "num_examples": len(examples), "settings": settings}
    data_utils.atomic_write_json(meta_path, meta, indent=4)
    return record_path, meta


def _feature_spec(max_seq_length, regression):
    return {
        "input_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "input_mask": tf.io.FixedLenFeature([max_seq_length], tf.float32),
        "segment_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "label_ids": tf.io.FixedLenFeature([], tf.float32 if regression else tf.int64),
        "is_real_example": tf.io.FixedLenFeature([], tf.int64),
    }


def _padding_example(max_seq_length, regression):
    """A fake example (is_real_example 0) with the dtypes of `data_utils.decode_record`."""
    return {
        "input_ids": tf.zeros([max_seq_length], tf.int32),
        "input_mask": tf.ones([max_seq_length], tf.float32),
        "segment_ids": tf.zeros([max_seq_length], tf.int32),
        "label_ids": tf.zeros([], tf.float32 if regression else tf.int32),
        "is_real_example": tf.zeros([], tf.int32),
    }


def make_dataset(
    path,
    max_seq_length,
    regression,
    batch_size,
    is_training,
    shuffle_buffer=2048,
    input_context=None,
    num_examples=None,
    seed=None,
):
    """Batches of a classification tfrecord.

    Training: shard per input pipeline, shuffle, repeat, fixed-size batches. Evaluation: one pass in file
    order, followed by fake examples (is_real_example 0) up to a multiple of the global batch size, so every
    replica gets full batches and no real example is dropped.

    Args:
      path: tfrecord written by `create_tfrecord`.
      max_seq_length: L.
      regression: float labels.
      batch_size: global batch size; divided by the replica count when `input_context` is given.
      is_training: see above.
      input_context: `tf.distribute.InputContext` or None (one pipeline, one replica).
      num_examples: records in the file; required for evaluation (padding).
      seed: shuffle seed.

    Returns:
      tf.data.Dataset of dicts: input_ids int32 [B, L], input_mask float32 [B, L], segment_ids int32 [B, L],
      label_ids int32 [B] (float32 [B] for regression), is_real_example int32 [B].
    """
    if not is_training and num_examples is None:
        raise ValueError("make_dataset needs num_examples for evaluation")
    return data_utils.make_record_dataset(
        path,
        _feature_spec(max_seq_length, regression),
        batch_size,
        is_training,
        padding=_padding_example(max_seq_length, regression),
        num_records=num_examples,
        input_context=input_context,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
    )


# ------------------------------------------------------------------------------------------------ metrics
def matthews_from_counts(tp, fp, tn, fn):
    """Matthews correlation from confusion counts; 0 when a marginal is empty (as the original)."""
    denom = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    return 0.0 if denom == 0 else (tp * tn - fp * fn) / float(np.sqrt(denom))


def f1_from_counts(tp, fp, fn):
    """F1 of the positive class; 0 when precision + recall is 0 (as the original)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _ranks(x):
    """1-based ranks with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = 0.5 * (start + end - 1) + 1.0
            start = end
    return ranks


def pearson(x, y):
    """Pearson correlation of two float arrays (nan when either is constant)."""
    x = np.asarray(x, np.float64) - np.mean(x)
    y = np.asarray(y, np.float64) - np.mean(y)
    denom = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / denom) if denom > 0 else float("nan")


def spearman(x, y):
    """Spearman rank correlation (Pearson of the tie-averaged ranks)."""
    return pearson(_ranks(np.asarray(x)), _ranks(np.asarray(y)))


def compute_metrics(task_name, labels, outputs, per_example_loss):
    """Evaluation metrics over the real examples.

    Args:
      task_name: lower-cased task name.
      labels: int [N] label ids, or float [N] scores for regression.
      outputs: float [N, n_class] logits, or float [N] predicted scores for regression.
      per_example_loss: float [N].

    Returns:
      dict of Python floats: eval_loss and eval_accuracy; for cola/mrpc/qqp also eval_f1, eval_corr (Matthews)
      and the confusion counts eval_tp/fp/tn/fn; for regression eval_pearsonr and eval_spearmanr instead
      of the accuracy.
    """
    labels = np.asarray(labels)
    outputs = np.asarray(outputs)
    metrics = {"eval_loss": float(np.mean(per_example_loss))}
    if outputs.ndim == 1:
        metrics["eval_pearsonr"] = pearson(outputs, labels)
        metrics["eval_spearmanr"] = spearman(outputs, labels)
        return metrics
    preds = np.argmax(outputs, axis=-1)
    metrics["eval_accuracy"] = float(np.mean(preds == labels))
    if task_name in BINARY_METRIC_TASKS:
        # Like tf.metrics.true_positives: every nonzero id counts as positive.
        pos_true, pos_pred = labels != 0, preds != 0
        tp = int(np.sum(pos_true & pos_pred))
        fp = int(np.sum(~pos_true & pos_pred))
        tn = int(np.sum(~pos_true & ~pos_pred))
        fn = int(np.sum(pos_true & ~pos_pred))
        metrics.update(eval_tp=tp, eval_fp=fp, eval_tn=tn, eval_fn=fn)
        metrics["eval_f1"] = f1_from_counts(tp, fp, fn)
        metrics["eval_corr"] = matthews_from_counts(tp, fp, tn, fn)
    return metrics


def selection_score(task_name, metrics):
    """The original's checkpoint-selection key: Matthews (CoLA), F1 + accuracy (MRPC, QQP), Pearson (STS-B),
    accuracy otherwise."""
    if task_name == "sts-b":
        return metrics["eval_pearsonr"]
    if task_name == "cola":
        return metrics["eval_corr"]
    if task_name in ("mrpc", "qqp"):
        return metrics["eval_f1"] + metrics["eval_accuracy"]
    return metrics["eval_accuracy"]


def best_result_record(task_name, metrics, step, path):
    """The content of best_result.json: step, checkpoint path and the task's headline metrics."""
    record = {"step": step, "path": path}
    if task_name == "sts-b":
        record["pearsonr"] = metrics["eval_pearsonr"]
        record["spearmanr"] = metrics["eval_spearmanr"]
    else:
        record["accu"] = metrics["eval_accuracy"]
    if task_name in BINARY_METRIC_TASKS:
        record["f1"] = metrics["eval_f1"]
        record["corr"] = metrics["eval_corr"]
    return record


# --------------------------------------------------------------------------------------------- submission
def submission_predictions(outputs, label_list):
    """GLUE submission values, as the original computes them.

    Args:
      outputs: float [N, n_class] logits, or float [N] scores for regression (label_list None).
      label_list: label strings in id order, or None.

    Returns:
      list: label strings (2 classes: by the sign of logit[1] - logit[0]; 3 classes: argmax), or scores
      rescaled to `score / max(score) * 5` for regression (the original's STS-B normalisation, SPEC §10.25).
    """
    outputs = np.asarray(outputs, np.float64)
    if label_list is None:
        return [float(s) for s in outputs / np.max(outputs) * 5.0]
    if outputs.shape[-1] == 2:
        return [label_list[1] if row[1] - row[0] > 0.0 else label_list[0] for row in outputs]
    if outputs.shape[-1] == 3:
        return [label_list[int(np.argmax(row))] for row in outputs]
    raise ValueError(f"GLUE submissions need 2 or 3 classes (or a score), got {outputs.shape[-1]}")


def write_submission(submit_dir, task_name, predictions, outputs):
    """Writes `{Name}.tsv` ("index\\tprediction" rows) and `{Name}.logits.json` to `submit_dir`.

    Returns:
      path of the tsv file.
    """
    name = SUBMIT_NAMES[task_name]
    tf.io.gfile.makedirs(submit_dir)
    tsv_path = os.path.join(submit_dir, f"{name}.tsv")
    lines = ["index\tprediction"] + [f"{i}\t{p}" for i, p in enumerate(predictions)]
    data_utils.atomic_write_text(tsv_path, "\n".join(lines) + "\n")
    logits = np.asarray(outputs, np.float64).reshape(len(predictions), -1).tolist()
    data_utils.atomic_write_json(os.path.join(submit_dir, f"{name}.logits.json"), logits, indent=4)
    return tsv_path


def sibling_dir(path, name):
    """The directory `name` beside directory `path`, local or gs://: `glue/MNLI/` -> `glue/diagnostic`.

    GLUE keeps the diagnostic set (AX, predicted with the MNLI model) beside the task directories.
    """
    # Not os.path.normpath, which turns gs://bucket into gs:/bucket.
    return os.path.join(os.path.dirname(path.rstrip("/")), name)


def write_wnli_submission(submit_dir):
    """The original's WNLI submission: the majority class "0" for all 146 test examples."""
    tf.io.gfile.makedirs(submit_dir)
    path = os.path.join(submit_dir, f"{SUBMIT_NAMES['wnli']}.tsv")
    lines = ["index\tprediction"] + [f"{i}\t0" for i in range(WNLI_TEST_SIZE)]
    data_utils.atomic_write_text(path, "\n".join(lines) + "\n")
    return path
