"""Pretraining input pipeline: tfrecords of `create_pretrain_data.py` -> masked-LM batches.

Targets are sampled online, a fresh sample each time a record is read. Every sample strategy picks
its targets among "candidate" tokens (all but cls, sep and pad), then tops up with uniformly chosen
single tokens so that each sequence has exactly `num_predict` targets whenever it has that many
candidates:
  single_token  uniform positions.
  whole_word    whole words (the spans between consecutive `boundary` entries) in random order.
  token_span    spans of min_tok..max_tok tokens, p(len) proportional to 1 / (len + 1), spread
                over the sequence: span k gets a slot of round(len * c) positions with
                c = (seq_len + 1 - stride) / num_predict, and starts round(u * len * (c - 1)) into it.
  word_span     the same laid out over word indices (slots of c / 1.2 words, min_word..max_word
                words per span), mapped to tokens through `boundary`, so spans start and end on
                word boundaries.
Span strategies keep spans whole: spans are taken in random order while their candidate tokens fit
into `num_predict`, spans that would overflow are left to the single-token top-up.
Each target is then corrupted: kept with probability leak_ratio, replaced by a uniform random id in
[0, vocab_size) with probability rand_ratio, else replaced by <mask>.

With `truncate_seq` and stride = 2**num_pool > 1, the last `stride` tokens of a record become
`[sep] + [pad] * (stride - 1)`: exactly the tokens that the truncating poolings drop. Unlike the
original, the pad positions get `SEG_ID_PAD`, and the truncated boundary list is closed at
`seq_len - stride` so that the last word before the new sep stays a whole-word candidate.
"""

import collections
import json
import os
from collections.abc import Callable, Sequence

import tensorflow as tf
from absl import logging

import data_utils

SAMPLE_STRATEGIES = ("single_token", "whole_word", "token_span", "word_span")

# token_span/word_span lay spans out over words with slots shorter by this factor (about 1.2 word
# pieces per word), the original's constant.
_TOKENS_PER_WORD = 1.2


def _split_dirs(record_dirs: str | Sequence[str]) -> list[str]:
    if isinstance(record_dirs, str):
        record_dirs = record_dirs.split(",")
    dirs = [d.strip() for d in record_dirs if d.strip()]
    if not dirs:
        raise ValueError("no record directory given (--record_dir is empty)")
    return dirs


def get_record_info(
    record_dirs: str | Sequence[str],
    split: str,
    seq_len: int,
    uncased: bool = True,
    num_passes: int = 1,
) -> tuple[list[str], int]:
    """Returns (record file paths, total number of examples) of passes < num_passes.

    `record_dirs` is a list or a comma-separated string of directories written by
    create_pretrain_data.py. Raises ValueError when a directory has no usable meta file.
    """
    filenames, num_example = [], 0
    pattern = data_utils.pretrain_meta_glob(split, seq_len, uncased)
    for record_dir in _split_dirs(record_dirs):
        metas = sorted(tf.io.gfile.glob(os.path.join(record_dir, pattern)))
        if not metas:
            raise ValueError(
                f"record directory {record_dir!r} has no meta file matching {pattern!r} "
                f"(run create_pretrain_data.py with --split={split} --seq_len={seq_len} "
                f"--uncased={uncased})"
            )
        metas = [m for m in metas if data_utils.meta_pass_id(m) < num_passes]
        if not metas:
            raise ValueError(
                f"record directory {record_dir!r} has no meta file of a pass < num_passes={num_passes}"
            )
        _check_task_sets(record_dir, metas)
        for meta_path in metas:
            try:
                with tf.io.gfile.GFile(meta_path) as f:
                    meta = json.load(f)
                names, count = meta["filenames"], int(meta["num_example"])
                file_bytes = meta.get("file_bytes")
                if file_bytes is not None and (
                    len(file_bytes) != len(names) or not all(isinstance(b, int) for b in file_bytes)
                ):
                    raise ValueError("file_bytes is not one size per file")
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{meta_path}: not a valid meta file ({e})") from None
            if count > 0:
                paths = [os.path.join(os.path.dirname(meta_path), n) for n in names]
                _check_records(meta_path, paths, count, file_bytes)
                filenames.extend(paths)
                num_example += count
    return filenames, num_example


def _check_task_sets(record_dir, metas):
    """Each pass's meta files come from one create_pretrain_data.py run: a second run with another
    --num_task into the same directory would have its text read twice. A set with tasks missing (still
    being written) is read as it is, with a warning."""
    tasks = collections.defaultdict(set)
    for meta_path in metas:
        task = data_utils.meta_task(meta_path)
        if task is not None:
            tasks[data_utils.meta_pass_id(meta_path), task[1]].add(task[0])
    for pass_id in sorted({p for p, _ in tasks}):
        totals = sorted(n for p, n in tasks if p == pass_id)
        if len(totals) > 1:
            raise ValueError(
                f"record directory {record_dir!r} holds pass {pass_id} meta files of runs with "
                f"--num_task {' and '.join(map(str, totals))}: their text would be read twice; delete "
                "one set"
            )
        found = len(tasks[pass_id, totals[0]])
        if found < totals[0]:
            logging.warning(
                "Record directory %s has %d of the %d task meta files of pass %d.",
                record_dir,
                found,
                totals[0],
                pass_id,
            )


def _check_records(meta_path, paths, count, file_bytes=None):
    """The record files a meta file lists exist and are whole.

    With the `file_bytes` create_pretrain_data.py records, each file's size must be its own: a stat, so
    a large corpus starts at once. A meta file without them (the original's) has every record header
    read, and the records must be the `num_example` it says.
    """
    for path in paths:
        if not tf.io.gfile.exists(path):
            raise ValueError(f"{meta_path} lists {path}, which does not exist")
    if file_bytes is not None:
        for path, expected in zip(paths, file_bytes, strict=True):
            size = tf.io.gfile.stat(path).length
            if size != expected:
                raise ValueError(
                    f"{path} is truncated or was replaced: {size} bytes, but {meta_path} says "
                    f"{expected}"
                )
        return
    found = sum(data_utils.count_tfrecords(path) for path in paths)
    if found != count:
        raise ValueError(
            f"{meta_path} says num_example {count}, but its record files hold {found} records"
        )


def get_num_example(
    record_dirs: str | Sequence[str],
    split: str,
    seq_len: int,
    uncased: bool = True,
    num_passes: int = 1,
) -> int:
    """Total `num_example` of the meta files of passes < num_passes in `record_dirs`."""
    return get_record_info(record_dirs, split, seq_len, uncased, num_passes)[1]


def _split_seed(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    return tf.unstack(tf.random.experimental.stateless_split(seed, num))


def truncate_tail(
    inputs: tf.Tensor,
    seg_id: tf.Tensor,
    boundary: tf.Tensor,
    stride: int,
    special_ids: "data_utils.SpecialIds",
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Replaces the last `stride` tokens by `[sep] + [pad] * (stride - 1)`.

    inputs, seg_id: int32 [seq_len]; boundary: int32 [num_words + 1].
    Returns the new inputs, seg_id (pads get SEG_ID_PAD) and boundary (entries >= seq_len - stride
    dropped, then closed by seq_len - stride).
    """
    keep = inputs.shape[0] - stride
    num_pad = stride - 1
    inputs = tf.concat(
        [inputs[:keep], [special_ids.sep_id], tf.fill([num_pad], special_ids.pad_id)], axis=0
    )
    seg_id = tf.concat([seg_id[: keep + 1], tf.fill([num_pad], data_utils.SEG_ID_PAD)], axis=0)
    boundary = tf.concat([boundary[boundary < keep], [keep]], axis=0)
    return inputs, seg_id, boundary


def single_token_mask(
    candidate: tf.Tensor, is_target: tf.Tensor, num_predict: int, seed: tf.Tensor
) -> tf.Tensor:
    """Adds uniformly chosen candidates to `is_target` until it has num_predict targets.

    candidate, is_target: bool [seq_len]; seed: int [2]. Returns bool [seq_len].
    """
    free = candidate & ~is_target
    remaining = num_predict - tf.reduce_sum(tf.cast(is_target, tf.int32))
    keys = tf.where(free, tf.random.stateless_uniform(tf.shape(candidate), seed), -1.0)
    rank = tf.argsort(tf.argsort(keys, direction="DESCENDING"))
    return is_target | (free & (rank < remaining))


def spans_to_mask(begins: tf.Tensor, ends: tf.Tensor, length: int) -> tf.Tensor:
    """bool [length]: positions inside any span [begins[k], ends[k]) (int32 [num_spans] each)."""
    ones = tf.ones_like(begins)
    delta = tf.scatter_nd(begins[:, None], ones, [length + 1]) - tf.scatter_nd(
        ends[:, None], ones, [length + 1]
    )
    return tf.cumsum(delta)[:length] > 0


def select_spans(
    begins: tf.Tensor, ends: tf.Tensor, candidate: tf.Tensor, num_predict: int, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Shuffles the spans and keeps the longest prefix whose candidate tokens fit into num_predict.

    begins, ends: int32 [num_spans] token positions; candidate: bool [seq_len]; seed: int [2].
    Returns the kept (begins, ends), int32 [num_kept] each.
    """
    cand_cum = tf.concat([[0], tf.cumsum(tf.cast(candidate, tf.int32))], axis=0)
    sizes = tf.gather(cand_cum, ends) - tf.gather(cand_cum, begins)
    order = tf.argsort(tf.random.stateless_uniform(tf.shape(begins), seed))
    kept = tf.boolean_mask(order, tf.cumsum(tf.gather(sizes, order)) <= num_predict)
    return tf.gather(begins, kept), tf.gather(ends, kept)


def lay_out_spans(
    num_spans: int,
    slot: float,
    min_len: int,
    max_len: int,
    limit: tf.Tensor,
    seed: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Lays `num_spans` random-length spans out left to right, one per slot.

    Span k has length l_k in [min_len, max_len] with p(l) proportional to 1 / (l + 1), owns
    round(l_k * slot) units and starts round(u_k * l_k * (slot - 1)) units into them, u_k ~ U[0, 1).
    Returns (begins, ends), int32 [num_kept] each, of the spans that end at or before `limit`.
    """
    len_seed, left_seed = _split_seed(seed, 2)
    lengths = tf.range(min_len, max_len + 1, dtype=tf.float32)
    logits = tf.math.log(1.0 / (lengths + 1.0))[None]
    span_len = tf.random.stateless_categorical(logits, num_spans, len_seed, dtype=tf.int32)[0]
    span_len = span_len + min_len
    len_f = tf.cast(span_len, tf.float32)
    u = tf.random.stateless_uniform([num_spans], left_seed)
    # With num_predict close to seq_len the slot is shorter than a span; spans then abut.
    left = tf.cast(tf.round(u * len_f * max(slot - 1.0, 0.0)), tf.int32)
    room = tf.maximum(tf.cast(tf.round(len_f * slot), tf.int32), span_len)
    begins = tf.cumsum(room, exclusive=True) + left
    ends = begins + span_len
    in_range = ends <= limit
    return tf.boolean_mask(begins, in_range), tf.boolean_mask(ends, in_range)


def candidate_mask(inputs: tf.Tensor, special_ids: "data_utils.SpecialIds") -> tf.Tensor:
    """bool, shape of `inputs`: tokens that may become targets (all but cls, sep and pad)."""
    return (
        (inputs != special_ids.cls_id)
        & (inputs != special_ids.sep_id)
        & (inputs != special_ids.pad_id)
    )


def sample_spans(
    candidate: tf.Tensor,
    boundary: tf.Tensor | None,
    seed: tf.Tensor,
    num_predict: int,
    sample_strategy: str = "single_token",
    stride: int = 1,
    valid_len: int | None = None,
    min_tok: int = 1,
    max_tok: int = 5,
    min_word: int = 1,
    max_word: int = 5,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Returns the target spans of a span strategy before the single-token top-up.

    candidate: bool [seq_len] (see candidate_mask); boundary: int32 [num_words + 1], word starts
    then the end (needed by whole_word and word_span); seed: int [2]; valid_len: positions at or
    after it hold the truncated tail (default seq_len).
    Returns (begins, ends), int32 [num_spans] token positions of disjoint spans [begin, end) that
    hold at most num_predict candidates in all; empty for single_token.
    """
    seq_len = candidate.shape[0]
    valid_len = seq_len if valid_len is None else valid_len
    layout_seed, select_seed = _split_seed(seed, 2)
    slot = (seq_len + 1 - stride) / num_predict
    if sample_strategy == "single_token":
        return tf.zeros([0], tf.int32), tf.zeros([0], tf.int32)
    if sample_strategy == "whole_word":
        begins, ends = boundary[:-1], boundary[1:]
    elif sample_strategy == "token_span":
        begins, ends = lay_out_spans(num_predict, slot, min_tok, max_tok, valid_len, layout_seed)
    elif sample_strategy == "word_span":
        num_words = tf.size(boundary) - 1
        word_begins, word_ends = lay_out_spans(
            num_predict, slot / _TOKENS_PER_WORD, min_word, max_word, num_words, layout_seed
        )
        begins, ends = tf.gather(boundary, word_begins), tf.gather(boundary, word_ends)
    else:
        raise ValueError(
            f"unknown sample_strategy {sample_strategy!r}; use one of {SAMPLE_STRATEGIES}"
        )
    return select_spans(begins, ends, candidate, num_predict, select_seed)


def sample_targets(
    inputs: tf.Tensor,
    boundary: tf.Tensor | None,
    seed: tf.Tensor,
    num_predict: int,
    special_ids: "data_utils.SpecialIds",
    **span_kwargs,
) -> tf.Tensor:
    """Returns is_target, bool [seq_len]: exactly num_predict targets if there are enough candidates.

    inputs: int32 [seq_len]; boundary, seed and `span_kwargs` (sample_strategy, stride, valid_len,
    min_tok, max_tok, min_word, max_word): see sample_spans. The spans' candidates become targets,
    then uniformly chosen single candidates fill up to num_predict.
    """
    candidate = candidate_mask(inputs, special_ids)
    span_seed, fill_seed = _split_seed(seed, 2)
    begins, ends = sample_spans(candidate, boundary, span_seed, num_predict, **span_kwargs)
    is_target = spans_to_mask(begins, ends, inputs.shape[0]) & candidate
    return single_token_mask(candidate, is_target, num_predict, fill_seed)


def corrupt(
    inputs: tf.Tensor,
    is_target: tf.Tensor,
    seed: tf.Tensor,
    special_ids: "data_utils.SpecialIds",
    leak_ratio: float = 0.1,
    rand_ratio: float = 0.1,
) -> tf.Tensor:
    """Returns masked_input, int32 [seq_len].

    Per target, u ~ U[0, 1): u <= leak_ratio keeps the token, u < leak_ratio + rand_ratio puts a
    uniform random id in [0, vocab_size), anything else puts <mask>.
    """
    u_seed, id_seed = _split_seed(seed, 2)
    u = tf.random.stateless_uniform(tf.shape(inputs), u_seed)
    random_ids = tf.random.stateless_uniform(
        tf.shape(inputs), id_seed, minval=0, maxval=special_ids.vocab_size, dtype=tf.int32
    )
    leak = u <= leak_ratio
    rand = ~leak & (u < leak_ratio + rand_ratio)
    replaced = tf.where(rand, random_ids, tf.fill(tf.shape(inputs), special_ids.mask_id))
    return tf.where(is_target & ~leak, replaced, inputs)


def make_features(
    inputs: tf.Tensor,
    seg_id: tf.Tensor,
    is_target: tf.Tensor,
    masked_input: tf.Tensor,
    num_predict: int,
    special_ids: "data_utils.SpecialIds",
) -> dict[str, tf.Tensor]:
    """Builds the model features of one sequence (L = seq_len, P = num_predict).

    Returns masked_input, origin_input, seg_id: int32 [L]; is_target: bool [L];
    input_mask (masked_input is <mask> or <pad>; 1.0 = not attended), pad_mask (is <pad>):
    float32 [L]; target_mapping: float32 [P, L], one-hot rows of the target positions in
    ascending order then zero rows; target: int32 [P] original ids, 0-padded;
    target_mask: float32 [P], 1.0 for real targets.
    """
    seq_len = inputs.shape[0]
    positions = tf.cast(tf.where(is_target)[:, 0], tf.int32)
    num_pad = num_predict - tf.size(positions)
    target_mapping = tf.pad(
        tf.one_hot(positions, seq_len, dtype=tf.float32), [[0, num_pad], [0, 0]]
    )
    target = tf.pad(tf.gather(inputs, positions), [[0, num_pad]])
    target_mask = tf.pad(tf.ones_like(positions, tf.float32), [[0, num_pad]])
    is_pad = masked_input == special_ids.pad_id
    return {
        "masked_input": masked_input,
        "origin_input": inputs,
        "seg_id": seg_id,
        "is_target": is_target,
        "input_mask": tf.cast((masked_input == special_ids.mask_id) | is_pad, tf.float32),
        "pad_mask": tf.cast(is_pad, tf.float32),
        "target_mapping": tf.ensure_shape(target_mapping, [num_predict, seq_len]),
        "target": tf.ensure_shape(target, [num_predict]),
        "target_mask": tf.ensure_shape(target_mask, [num_predict]),
    }


def get_input_fn(
    record_dirs: str | Sequence[str],
    split: str,
    batch_size_per_replica: int,
    seq_len: int,
    num_predict: int,
    special_ids: "data_utils.SpecialIds",
    num_pool: int,
    truncate_seq: bool,
    sample_strategy: str = "single_token",
    leak_ratio: float = 0.1,
    rand_ratio: float = 0.1,
    min_tok: int = 1,
    max_tok: int = 5,
    min_word: int = 1,
    max_word: int = 5,
    uncased: bool = True,
    num_passes: int = 1,
    is_training: bool = True,
    shard_across_host: bool = True,
    num_input_pipelines: int = 1,
    input_pipeline_id: int = 0,
    shuffle_buffer: int = 20480,
    drop_remainder: bool = True,
    seed: int | None = None,
) -> Callable[[tf.distribute.InputContext | None], tf.data.Dataset]:
    """Returns `dataset_fn(input_context=None) -> tf.data.Dataset` of feature dicts (see make_features).

    Each element is one replica's batch: every feature gets a leading [batch_size_per_replica] axis.
    `num_pool` = n_block - 1 sets stride = 2**num_pool for the truncate_seq tail and the span slots;
    pass truncate_seq = FLAGS.truncate_seq and separate_cls. Records are sharded over the
    `input_context`'s pipelines (else over num_input_pipelines/input_pipeline_id) when
    shard_across_host: by file when there are at least as many files as pipelines, else by record.
    Training reads shuffled files and records forever; evaluation (is_training=False) reads each
    record once, in order. `seed` makes the pipeline reproducible; evaluation uses seed 0 when it
    is None so that every evaluation sees the same targets.
    Raises ValueError on bad arguments or record directories without meta files.
    """
    if not 0 < num_predict < seq_len - 3:
        raise ValueError(f"--num_predict={num_predict} must be in (0, seq_len - 3 = {seq_len - 3})")
    if sample_strategy not in SAMPLE_STRATEGIES:
        raise ValueError(
            f"--sample_strategy={sample_strategy!r} must be one of {', '.join(SAMPLE_STRATEGIES)}"
        )
    if min(leak_ratio, rand_ratio) < 0 or leak_ratio + rand_ratio > 1:
        raise ValueError(
            f"--leak_ratio={leak_ratio} and --rand_ratio={rand_ratio} must be >= 0 with sum <= 1"
        )
    if not 1 <= min_tok <= max_tok:
        raise ValueError(
            f"--min_tok={min_tok} and --max_tok={max_tok} need 1 <= min_tok <= max_tok"
        )
    if not 1 <= min_word <= max_word:
        raise ValueError(
            f"--min_word={min_word} and --max_word={max_word} need 1 <= min_word <= max_word"
        )
    stride = 2**num_pool
    truncate = truncate_seq and stride > 1
    if truncate and stride >= seq_len:
        raise ValueError(f"--seq_len={seq_len} must exceed the pooling stride {stride}")
    for name in ("cls_id", "sep_id", "pad_id", "mask_id", "vocab_size"):
        if getattr(special_ids, name) is None:
            raise ValueError(f"special_ids.{name} is not set: the vocabulary lacks that token")

    files, _ = get_record_info(record_dirs, split, seq_len, uncased, num_passes)
    if not files:
        raise ValueError(f"record directories {record_dirs!r} hold no {split} example")
    if not is_training and seed is None:
        seed = 0
    deterministic = seed is not None or not is_training
    needs_boundary = sample_strategy in ("whole_word", "word_span")
    feature_spec = {
        "input": tf.io.FixedLenFeature([seq_len], tf.int64),
        "seg_id": tf.io.FixedLenFeature([seq_len], tf.int64),
    }
    if needs_boundary:
        feature_spec["boundary"] = tf.io.VarLenFeature(tf.int64)

    def process(serialized, element_seed):
        example = tf.io.parse_single_example(serialized, feature_spec)
        inputs = tf.cast(example["input"], tf.int32)
        seg_id = tf.cast(example["seg_id"], tf.int32)
        if needs_boundary:
            boundary = tf.cast(example["boundary"].values, tf.int32)
        else:
            boundary = tf.zeros([0], tf.int32)
        if truncate:
            inputs, seg_id, boundary = truncate_tail(inputs, seg_id, boundary, stride, special_ids)
        sample_seed, corrupt_seed = _split_seed(element_seed, 2)
        is_target = sample_targets(
            inputs,
            boundary,
            sample_seed,
            num_predict,
            special_ids,
            sample_strategy=sample_strategy,
            stride=stride,
            valid_len=seq_len - stride if truncate else seq_len,
            min_tok=min_tok,
            max_tok=max_tok,
            min_word=min_word,
            max_word=max_word,
        )
        masked_input = corrupt(inputs, is_target, corrupt_seed, special_ids, leak_ratio, rand_ratio)
        return make_features(inputs, seg_id, is_target, masked_input, num_predict, special_ids)

    def dataset_fn(input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        if input_context is not None:
            num_pipelines = input_context.num_input_pipelines
            pipeline_id = input_context.input_pipeline_id
        else:
            num_pipelines, pipeline_id = num_input_pipelines, input_pipeline_id
        shard = shard_across_host and num_pipelines > 1
        if shard and len(files) < num_pipelines:
            # Too few files to give each pipeline its own: every pipeline reads all of them in the
            # same order and keeps every num_pipelines-th record.
            dataset = tf.data.TFRecordDataset(files).shard(num_pipelines, pipeline_id)
            if is_training:
                dataset = dataset.repeat()
        else:
            pipeline_files = files[pipeline_id::num_pipelines] if shard else files
            dataset = tf.data.Dataset.from_tensor_slices(pipeline_files)
            if is_training:
                dataset = dataset.shuffle(len(pipeline_files), seed=seed).repeat()
            dataset = dataset.interleave(
                tf.data.TFRecordDataset,
                cycle_length=min(len(pipeline_files), 16),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=deterministic,
            )
        if is_training:
            dataset = dataset.shuffle(shuffle_buffer, seed=seed)
        # One random number per record seeds its stateless target sampling and corruption, so a
        # given seed reproduces the same batches however the map is parallelized.
        element_seeds = tf.data.Dataset.random(seed=seed).map(
            lambda r: tf.stack([r, tf.constant(pipeline_id, tf.int64)])
        )
        dataset = tf.data.Dataset.zip((dataset, element_seeds))
        dataset = dataset.map(
            process, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
        )
        dataset = dataset.batch(batch_size_per_replica, drop_remainder=drop_remainder)
        dataset = dataset.prefetch(tf.data.AUTOTUNE)
        options = tf.data.Options()
        options.deterministic = deterministic
        # Sharding is done above; keep tf.distribute from sharding again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return dataset.with_options(options)

    return dataset_fn
