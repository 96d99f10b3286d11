"""Special-token ids, segment ids, pretraining file names and atomic file writes."""

import contextlib
import dataclasses
import json
import os
import re
import struct
import sys
import time
import traceback
import uuid

import tensorflow as tf
from absl import flags, logging

SEG_ID_A = 0
SEG_ID_B = 1
SEG_ID_CLS = 2
SEG_ID_PAD = 0


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """Vocabulary size and the ids of the special tokens, read from the tokenizer.

    The optional ids are None when the vocabulary lacks the token; no code path needs them.
    """

    vocab_size: int
    unk_id: int
    cls_id: int
    sep_id: int
    pad_id: int
    mask_id: int
    bos_id: int | None = None
    eos_id: int | None = None
    eod_id: int | None = None
    eop_id: int | None = None


# (field, spellings tried in order, required). Funnel's vocabularies spell the specials `<cls>`;
# a BERT vocabulary spells them `[CLS]`.
_SPECIAL_TOKENS = (
    ("unk_id", ("<unk>", "[UNK]"), True),
    ("bos_id", ("<s>",), False),
    ("eos_id", ("</s>",), False),
    ("cls_id", ("<cls>", "[CLS]"), True),
    ("sep_id", ("<sep>", "[SEP]"), True),
    ("pad_id", ("<pad>", "[PAD]"), True),
    ("mask_id", ("<mask>", "[MASK]"), True),
    ("eod_id", ("<eod>",), False),
    ("eop_id", ("<eop>",), False),
)


def setup_special_ids(tokenizer):
    """Looks up the special-token ids in `tokenizer`'s vocabulary.

    Args:
      tokenizer: a `tokenization` tokenizer (uses `get_vocab_size`, `get_token_id`, `path`).

    Returns:
      `SpecialIds`.

    Raises:
      ValueError: the vocabulary lacks `<unk>`, `<cls>`, `<sep>`, `<pad>` or `<mask>` in both
        spellings; the message names the tokens tried and the file.
    """
    ids = {"vocab_size": tokenizer.get_vocab_size()}
    logging.info("Set vocab_size: %d.", ids["vocab_size"])
    missing = []
    for field, spellings, required in _SPECIAL_TOKENS:
        for token in spellings:
            try:
                ids[field] = tokenizer.get_token_id(token)
            except KeyError:
                continue
            logging.info("Set %s to %d (%s).", field, ids[field], token)
            break
        else:
            tried = " or ".join(spellings)
            if required:
                missing.append(tried)
            else:
                logging.info("Skip %s: %s not found in the vocabulary.", field, tried)
    if missing:
        raise ValueError(
            f"vocabulary {tokenizer.path} lacks required special token(s): {', '.join(missing)}"
        )
    return SpecialIds(**ids)


def format_filename(prefix, suffix, seq_len, uncased):
    """`{prefix}.seq-{seq_len}.{uncased|cased}.{suffix}`: the original's name scheme."""
    case_str = "uncased" if uncased else "cased"
    return f"{prefix}.seq-{seq_len}.{case_str}.{suffix}"


def pretrain_record_name(split, pass_id, seq_len, uncased, task, num_task):
    """Base name of a pretraining tfrecord file, e.g.

    `data.train.pass-0.seq-512.uncased.tfrecord-00000-of-00001`.
    """
    return format_filename(
        f"data.{split}.pass-{pass_id}", f"tfrecord-{task:05d}-of-{num_task:05d}", seq_len, uncased
    )


def pretrain_meta_name(split, pass_id, seq_len, uncased, task, num_task):
    """Base name of the JSON meta file of `pretrain_record_name`, e.g.

    `meta.train.pass-0.seq-512.uncased.json-00000-of-00001`. It holds
    `{"filenames": [record base names], "num_example": n, "file_bytes": [sizes]}`.
    """
    return format_filename(
        f"meta.{split}.pass-{pass_id}", f"json-{task:05d}-of-{num_task:05d}", seq_len, uncased
    )


def pretrain_meta_glob(split, seq_len, uncased):
    """Glob pattern matching the meta files of every pass and task of one split."""
    return format_filename(f"meta.{split}.pass-*", "json*", seq_len, uncased)


def meta_pass_id(meta_path):
    """The pass id of a meta file name, e.g. 3 for `.../meta.train.pass-3.seq-512...`."""
    name = os.path.basename(meta_path)
    fields = name.split(".")
    if len(fields) < 3 or not fields[2].startswith("pass-") or not fields[2][5:].isdigit():
        raise ValueError(f"{meta_path}: not a pretraining meta file name (meta.SPLIT.pass-N....)")
    return int(fields[2][5:])


def meta_task(meta_path):
    """(task, num_task) of a meta file name, e.g. (3, 8) for `...json-00003-of-00008`; None for a name
    without the task suffix."""
    match = re.search(r"json-(\d+)-of-(\d+)$", os.path.basename(meta_path))
    return (int(match.group(1)), int(match.group(2))) if match else None


def _remove_file_or_tree(path):
    if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
    else:
        tf.io.gfile.remove(path)


@contextlib.contextmanager
def atomic_output_path(path):
    """Yields a temporary path beside `path`; renames it to `path` when the block succeeds.

    A reader never sees a half-written `path`: on error the temporary file is removed and `path`
    is left as it was. Works for local and gs:// paths (tf.io.gfile). The block may write a directory
    at the temporary path (e.g. a SavedModel); then `path` must not exist when the block ends.
    """
    # A hidden name with the random part first never matches a glob for the finished files.
    head, tail = os.path.split(path)
    # What a killed writer of this file left behind.
    for orphan in tf.io.gfile.glob(os.path.join(head, f".tmp-*-{tail}")):
        logging.info("Removing %s, left by an interrupted run.", orphan)
        _remove_file_or_tree(orphan)
    tmp_path = os.path.join(head, f".tmp-{uuid.uuid4().hex}-{tail}")
    try:
        yield tmp_path
        tf.io.gfile.rename(tmp_path, path, overwrite=True)
    except BaseException:
        if tf.io.gfile.exists(tmp_path):
            _remove_file_or_tree(tmp_path)
        raise


@contextlib.contextmanager
def atomic_open(path, mode="w"):
    """Like `tf.io.gfile.GFile(path, mode)` for writing ("w" or "wb"), renamed into place on success."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_output_path(path) as tmp_path, tf.io.gfile.GFile(tmp_path, mode) as f:
        # GFile creates the file on the first write; an empty write makes an empty result a file.
        f.write(b"" if mode == "wb" else "")
        yield f


def atomic_write_text(path, text):
    """Writes the str `text` to `path` through a temporary file."""
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path, obj, indent=None):
    """Writes `obj` as JSON to `path` through a temporary file."""
    atomic_write_text(path, json.dumps(obj, indent=indent))


def tokenizer_settings(tokenizer):
    """What of a tokenizer a cached tfrecord depends on: {"tokenizer", "tokenizer_type", "uncased"}."""
    return {
        "tokenizer": tokenizer.name,
        "tokenizer_type": tokenizer.tokenizer_type,
        "uncased": tokenizer.uncased,
    }


def read_cached_meta(meta_path, settings, data_paths):
    """The meta dict of a complete cache made with `settings`, else None.

    A cache is complete when its meta json (written last) and every file of `data_paths` exist. One
    made with other settings, or before they were recorded in its meta json (`"settings"`), is stale:
    the caller rebuilds it (logged here, with the settings that differ).
    """
    if not all(tf.io.gfile.exists(p) for p in (meta_path, *data_paths)):
        return None
    with tf.io.gfile.GFile(meta_path) as f:
        try:
            meta = json.load(f)
        except json.JSONDecodeError:
            return None
    cached = meta.get("settings")
    if cached != settings:
        if cached is None:
            why = "none recorded"
        else:
            changed = [
                f"{k} {cached.get(k)!r} -> {v!r}" for k, v in settings.items() if cached.get(k) != v
            ]
            why = ", ".join(changed) or repr(cached)
        logging.warning("%s was made with other settings (%s); rebuilding it.", data_paths[0], why)
        return None
    return meta


def parsed_flag_values(caller, names):
    """The parsed absl flags `names`, for the seed's no-argument calls (`get_tokenizer()`, ...).

    Library functions read flags only when called without arguments, as the original's did.

    Args:
      caller: the call, for the message, e.g. "tokenization.get_tokenizer()".
      names: flag names.
    Returns:
      dict name -> value.
    Raises:
      ValueError: flags are not parsed, or one of `names` is not defined; the message says what to pass.
    """
    wanted = ", ".join(f"--{n}" for n in names)
    if not flags.FLAGS.is_parsed():
        raise ValueError(
            f"{caller} without arguments reads the flags {wanted}, but flags are not parsed: pass "
            "the arguments explicitly, or parse flags first"
        )
    missing = [n for n in names if n not in flags.FLAGS]
    if missing:
        raise ValueError(
            f"{caller} without arguments reads the flags {wanted}, but "
            f"{', '.join('--' + n for n in missing)} are not defined: pass the arguments explicitly, "
            "or define them (training.define_tokenizer_flags(), training.define_model_flags())"
        )
    return {n: flags.FLAGS[n].value for n in names}


def int64_feature(values):
    """A `tf.train.Feature` of integers."""
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def float_feature(values):
    """A `tf.train.Feature` of floats."""
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def bytes_feature(values):
    """A `tf.train.Feature` of strings (str are UTF-8 encoded)."""
    encoded = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=encoded))


def serialize_example(features):
    """The `tf.train.Example` of `features` (name -> `tf.train.Feature`) as bytes, the same in every run.

    Protobuf writes the feature map in an order that follows Python's string hashing (PYTHONHASHSEED);
    deterministic serialization sorts it, so the same features always give byte-identical tfrecords.
    """
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString(deterministic=True)


# What a user can act on: a bad flag, file or datum, a full disk, a non-finite loss. Anything else is a
# bug and keeps its traceback.
USER_ERRORS = (
    ValueError,
    OSError,
    FloatingPointError,
    tf.errors.NotFoundError,
    tf.errors.PermissionDeniedError,
    tf.errors.FailedPreconditionError,
    tf.errors.DataLossError,
    tf.errors.ResourceExhaustedError,
)


class ProgressLog:
    """Sparse progress lines for a long phase: `done/total` with the rate and the time left.

    A line is logged at most every `every_secs` seconds, and once at the end (`finish`), so a phase of
    67k rows shows a handful of lines, not one per row.
    """

    def __init__(self, what, total, unit, every_secs=15.0):
        self.what, self.total, self.unit, self.every_secs = what, total, unit, every_secs
        self.done = 0
        self._start = self._last = time.monotonic()

    def advance(self, count=1, detail=""):
        """Counts `count` more units; `detail` (e.g. "1,234 features") is shown after the rate."""
        self.done += count
        now = time.monotonic()
        if now - self._last >= self.every_secs and self.done < self.total:
            self._last = now
            self._log(now, detail)

    def finish(self, detail=""):
        self._log(time.monotonic(), detail)

    def _log(self, now, detail):
        secs = max(now - self._start, 1e-9)
        rate = self.done / secs
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = f", {_clock(left)} left" if self.done < self.total and left != float("inf") else ""
        logging.info(
            "%s: %s/%s %s (%.0f%%) in %s, %.0f %s/s%s%s",
            self.what,
            f"{self.done:,}",
            f"{self.total:,}",
            self.unit,
            100.0 * self.done / max(self.total, 1),
            _clock(secs),
            rate,
            self.unit,
            eta,
            f", {detail}" if detail else "",
        )


def _clock(secs):
    minutes, secs = divmod(int(round(secs)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def run_main(run, verbose=False):
    """Calls `run()`; a user error ends the script with one line `<script>: error: <what>`, exit 1.

    Args:
      run: the script's work, a callable without arguments.
      verbose: also print the traceback (the scripts' --verbose).
    """
    try:
        run()
    except USER_ERRORS as e:
        if verbose:
            traceback.print_exc()
        sys.exit(f"{os.path.basename(sys.argv[0])}: error: {' '.join(str(e).split())}")


def decode_record(record, spec):
    """Parses one tf.train.Example by `spec`; int64 features become int32."""
    example = tf.io.parse_single_example(record, spec)
    return {k: tf.cast(v, tf.int32) if v.dtype == tf.int64 else v for k, v in example.items()}


def make_record_dataset(
    paths,
    spec,
    batch_size,
    is_training,
    padding=None,
    num_records=None,
    input_context=None,
    shuffle_buffer=2048,
    seed=None,
):
    """Batches of the tf.train.Example records of `paths`, for training or for evaluation.

    Training: shard per input pipeline, shuffle (seeded), repeat, fixed-size batches. Evaluation: one pass
    in file order, then copies of the fake record `padding` up to a multiple of the global batch size, so
    every replica gets full batches and no real record is dropped (the fake ones carry a marker the
    caller drops: `is_real_example` 0, a reserved unique id).

    Args:
      paths: a tfrecord path or a list of them.
      spec: feature name -> `tf.io.FixedLenFeature`.
      batch_size: global batch size; divided by the replica count when `input_context` is given.
      is_training: see above.
      padding: evaluation only: dict name -> tensor, a record as `decode_record` returns it.
      num_records: evaluation only: records in `paths`.
      input_context: `tf.distribute.InputContext` or None (one pipeline, one replica).
      shuffle_buffer, seed: the training shuffle.
    Returns:
      tf.data.Dataset of dicts of [per-replica batch, ...] tensors (int64 features as int32).
    """
    per_replica = batch_size
    if input_context is not None:
        if batch_size % input_context.num_replicas_in_sync:
            raise ValueError(
                f"batch size {batch_size} is not divisible by the {input_context.num_replicas_in_sync} "
                "replicas (--num_hosts x --num_core_per_host)"
            )
        per_replica = input_context.get_per_replica_batch_size(batch_size)
    several_pipelines = input_context is not None and input_context.num_input_pipelines > 1
    dataset = tf.data.TFRecordDataset(paths)
    if is_training:
        if several_pipelines:
            dataset = dataset.shard(
                input_context.num_input_pipelines, input_context.input_pipeline_id
            )
        dataset = dataset.shuffle(shuffle_buffer, seed=seed).repeat()
        dataset = dataset.map(lambda r: decode_record(r, spec), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        if several_pipelines:
            raise ValueError("evaluation runs on one host (--num_hosts=1), as in the original")
        if num_records is None or padding is None:
            raise ValueError(
                "an evaluation dataset needs the number of records and a padding record"
            )
        dataset = dataset.map(lambda r: decode_record(r, spec))
        n_pad = -num_records % batch_size
        dataset = dataset.concatenate(tf.data.Dataset.from_tensors(padding).repeat(n_pad))
    return dataset.batch(per_replica, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def ensure_writable_dir(path, flag):
    """Creates directory `path` if needed and checks that files can be written in it.

    Raises:
      ValueError: naming `--{flag}` and why (a file in the way, no permission), before any long work.
    """
    try:
        tf.io.gfile.makedirs(path)
        probe = os.path.join(path, f".tmp-{uuid.uuid4().hex}-write-test")
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("")
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as e:
        reason = e.message if isinstance(e, tf.errors.OpError) else str(e)
        raise ValueError(f"--{flag}={path} is not a writable directory: {reason}") from None


def count_tfrecords(path):
    """The number of records in the tfrecord file `path`, reading only their length headers.

    Raises:
      ValueError: naming the file, when it ends inside a record (a truncated copy, a killed writer, or
        a damaged length header).
    """
    size = tf.io.gfile.stat(path).length
    count = offset = 0
    with tf.io.gfile.GFile(path, "rb") as f:
        while offset < size:
            header = f.read(12)  # uint64 length, uint32 masked CRC of the length
            end = offset + 12 + (struct.unpack("<Q", header[:8])[0] if len(header) == 12 else 0) + 4
            if len(header) < 12 or end > size:
                raise ValueError(
                    f"{path} is truncated or corrupt: record {count + 1} starts at byte {offset} "
                    f"and does not end before the end of the file ({size} bytes)"
                )
            offset = end
            f.seek(offset)
            count += 1
    return count


@contextlib.contextmanager
def naming_corrupt_records(list_paths):
    """Turns TensorFlow's DataLossError from reading tfrecord files, which names no file, into a
    ValueError naming the first file whose records fail their checksums.

    Args:
      list_paths: callable() -> the paths of the files read in the block; called only after an error.
    """
    try:
        yield
    except tf.errors.DataLossError as e:
        reason = e.message.split("}}")[-1].split("[Op:")[0].strip()
        for path in list_paths():
            try:
                tf.data.TFRecordDataset(path).reduce(0, lambda n, _: n + 1)
            except tf.errors.DataLossError:
                raise ValueError(f"{path} is corrupt: {reason}") from None
        raise
