"""Turns raw text into pretraining tfrecords of `[cls] A [sep] B [sep]` segment pairs.

Input text: one sentence per line, an empty line ends a document (the end of a file ends one too).
WikiExtractor markup lines (`<doc id=... >` and `</doc>`) are not text: they are dropped, and each
also ends the current document.

Unlike the original, which read every input file of a task into memory and shuffled all documents
at once, documents are streamed: they are grouped into chunks of about `--chunk_tokens` tokens, and
each chunk is shuffled, concatenated and cut into segment pairs on its own (negative B segments are
drawn from the same chunk). The tokens left over at the end of a chunk (fewer than `--seq_len`) are
carried to the front of the next chunk, so no text is lost at chunk borders. With a corpus smaller
than one chunk this is exactly the original's global shuffle. All randomness comes from one numpy
generator seeded by (`--pass_id`, `--task`), so a run is reproducible byte for byte.

Output, per task: `data.{split}.pass-{pass_id}.seq-{seq_len}.{uncased|cased}.tfrecord-{task}-of-{num_task}`
and the meta json `meta.{...}.json-{task}-of-{num_task}` = {"filenames": [...], "num_example": n,
"file_bytes": [...]}.
Each tf.train.Example holds int64 features:
  input    [seq_len]   token ids `[cls] A [sep] B [sep]`
  seg_id   [seq_len]   SEG_ID_CLS for cls, SEG_ID_A for A and its sep, SEG_ID_B for B and its sep
  boundary [n + 1]     positions of word-start tokens, then seq_len
  label    [1]         1 = B continues A, 0 = B is a random span (stored, unused by training)
"""

import startup  # noqa: F401 (first: TensorFlow's start-up lines stay off the console)

# isort: split
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

import data_utils
import tokenization

flags.DEFINE_integer("min_doc_len", 1, "Drop documents with fewer tokens than this.")
flags.DEFINE_integer("seq_len", 512, "Sequence length of each record.")
flags.DEFINE_string("input_glob", "data/example/*.txt", "Glob of the input text files.")
flags.DEFINE_string("save_dir", "proc_data/example", "Directory for the tfrecords and meta files.")
flags.DEFINE_enum("split", "train", ["train", "dev", "test"], "Split name used in file names.")
flags.DEFINE_integer(
    "pass_id",
    0,
    "Pass index: seeds the document shuffle and the A/B sampling, and names the files. "
    "Different passes pair different segments.",
)
flags.DEFINE_integer("num_task", 1, "Number of parallel workers the input files are split over.")
flags.DEFINE_integer(
    "task", 0, "This worker's id in [0, num_task): it reads sorted(glob)[task::num_task]."
)
flags.DEFINE_integer(
    "chunk_tokens",
    4_000_000,
    "Documents are shuffled and paired within chunks of about this many tokens, so memory stays "
    "bounded on large corpora.",
)
flags.DEFINE_enum(
    "tokenizer_type", "word_piece", list(tokenization.TOKENIZER_TYPES), "Tokenizer type."
)
flags.DEFINE_string(
    "tokenizer_path", "", "Vocabulary file (word_piece) or sentencepiece .model file (sent_piece)."
)
flags.DEFINE_bool("uncased", True, "Lower-case and strip accents; also names the output files.")
flags.DEFINE_integer("log_every_secs", 30, "Seconds between progress lines.")

FLAGS = flags.FLAGS

_WIKI_DOC_LINE = re.compile(r"^(<doc( [^>]*)?>|</doc>)$")


class Progress:
    """Counts documents, tokens and records, and logs throughput every `every_secs` seconds."""

    def __init__(self, name: str, every_secs: float):
        self.name = name
        self.every_secs = every_secs
        self.docs = 0
        self.tokens = 0
        self.records = 0
        self._start = time.monotonic()
        self._last = self._start

    def add_document(self, num_tokens: int) -> None:
        self.docs += 1
        self.tokens += num_tokens
        now = time.monotonic()
        if now - self._last >= self.every_secs:
            self._last = now
            self.log()

    def log(self) -> None:
        secs = max(time.monotonic() - self._start, 1e-9)
        logging.info(
            "[%s] %d docs, %d tokens, %d records | %.1f docs/s, %.1f tokens/s",
            self.name,
            self.docs,
            self.tokens,
            self.records,
            self.docs / secs,
            self.tokens / secs,
        )


def iter_documents(
    paths: Iterable[str],
    text_to_ids: Callable[[str], list[int]],
    min_doc_len: int = 1,
    progress: Progress | None = None,
) -> Iterator[list[np.ndarray]]:
    """Yields documents, each a list of int32 [num_tokens] arrays (one per non-empty line).

    A document ends at an empty line, a WikiExtractor `<doc ...>`/`</doc>` line, or the end of
    its file, so no document spans two files and the last one of a file is kept. Documents with
    fewer than `min_doc_len` tokens are skipped. Raises ValueError naming the file and line of
    text that is not UTF-8.
    """
    for path in paths:
        doc: list[np.ndarray] = []
        with tf.io.gfile.GFile(path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError as e:
                    raise ValueError(
                        f"{path}:{line_no}: not valid UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})"
                    ) from None
                if not line or _WIKI_DOC_LINE.match(line):
                    yield from _finish_document(doc, min_doc_len, progress)
                    doc = []
                    continue
                ids = text_to_ids(line)
                if ids:
                    doc.append(np.asarray(ids, dtype=np.int32))
        yield from _finish_document(doc, min_doc_len, progress)


def _finish_document(doc, min_doc_len, progress):
    num_tokens = sum(len(s) for s in doc)
    if doc and num_tokens >= min_doc_len:
        if progress is not None:
            progress.add_document(num_tokens)
        yield doc


def iter_chunks(
    documents: Iterable[list[np.ndarray]], chunk_tokens: int
) -> Iterator[list[list[np.ndarray]]]:
    """Groups documents into lists holding at least `chunk_tokens` tokens (the last may hold fewer)."""
    chunk, num_tokens = [], 0
    for doc in documents:
        chunk.append(doc)
        num_tokens += sum(len(s) for s in doc)
        if num_tokens >= chunk_tokens:
            yield chunk
            chunk, num_tokens = [], 0
    if chunk:
        yield chunk


def build_stream(
    docs: list[list[np.ndarray]],
    rng: np.random.Generator,
    carry_tokens: np.ndarray,
    carry_sent_ids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffles `docs` and concatenates them after the carried tokens into one token stream.

    Returns (tokens int32 [n], sent_ids bool [n]). Sentence ids alternate line by line; a document's
    ids are flipped where needed so that the ids on either side of a document border differ, which
    makes every sentence and document border a change of sentence id.
    """
    tokens, sent_ids = [carry_tokens], [carry_sent_ids]
    last = bool(carry_sent_ids[-1]) if len(carry_sent_ids) else None
    for k in rng.permutation(len(docs)):
        sentences = docs[k]
        lengths = [len(s) for s in sentences]
        ids = np.repeat(np.arange(len(sentences)) % 2 == 0, lengths)
        if last is not None and ids[0] == last:
            ids = ~ids
        tokens.extend(sentences)
        sent_ids.append(ids)
        last = bool(ids[-1])
    return np.concatenate(tokens).astype(np.int32), np.concatenate(sent_ids).astype(bool)


def iter_segment_pairs(
    sent_ids: np.ndarray, seq_len: int, rng: np.random.Generator
) -> Iterator[tuple[int, int, int, int, int, int]]:
    """Walks a stream and yields (a_begin, a_end, b_begin, b_end, label, next_begin) per record.

    Same sampling as the original: from position i (while i + seq_len <= n), A and B together take
    exactly seq_len - 3 tokens. With probability 0.5, or when no sentence border lies within reach,
    the pair is negative (label 0): A runs from i to a random border (or to the reach limit) and B is
    a random stretch of whole sentences anywhere in the stream; the walk resumes at the end of A.
    Otherwise (label 1) A ends at a random border and B continues to the first border at which the
    pair reaches seq_len - 3 tokens; the walk resumes at the end of B. Over-long pairs are trimmed
    from the right of A while A is longer, else from a random side of B.
    """
    n = len(sent_ids)
    tot_len = seq_len - 3
    borders = np.flatnonzero(sent_ids[1:] != sent_ids[:-1]) + 1
    begin = 0
    while begin + seq_len <= n:
        lo = np.searchsorted(borders, begin + 1)
        hi = np.searchsorted(borders, begin + tot_len)
        cut_points = borders[lo:hi]
        end = int(borders[hi]) if hi < len(borders) else n

        if len(cut_points) == 0 or rng.random() < 0.5:
            label = 0
            a_end = end if len(cut_points) == 0 else int(rng.choice(cut_points))
            b_len = max(1, tot_len - (a_end - begin))
            b_begin = int(rng.integers(0, n - b_len))
            # Extend B to whole sentences: on to the next border, back to the previous one.
            k = np.searchsorted(borders, b_begin + b_len)
            b_end = int(borders[k]) if k < len(borders) else n
            k = np.searchsorted(borders, b_begin, side="right")
            b_begin = int(borders[k - 1]) if k > 0 else 0
            next_begin = a_end
        else:
            label = 1
            a_end = int(rng.choice(cut_points))
            b_begin, b_end = a_end, end
            next_begin = b_end

        a_begin = begin
        while (a_end - a_begin) + (b_end - b_begin) > tot_len:
            if a_end - a_begin > b_end - b_begin:
                a_end -= 1
            elif rng.random() < 0.5:
                b_end -= 1
            else:
                b_begin += 1
        yield a_begin, a_end, b_begin, b_end, label, next_begin
        begin = next_begin


def make_features(
    tokens: np.ndarray,
    pair: tuple[int, int, int, int, int],
    special_ids: "data_utils.SpecialIds",
    is_start: np.ndarray,
) -> dict:
    """The record features (name -> tf.train.Feature) of one segment pair (a_begin, a_end, b_begin,
    b_end, label)."""
    a_begin, a_end, b_begin, b_end, label = pair
    a, b = tokens[a_begin:a_end], tokens[b_begin:b_end]
    cls, sep = [special_ids.cls_id], [special_ids.sep_id]
    inputs = np.concatenate([cls, a, sep, b, sep]).astype(np.int64)
    seg_id = np.concatenate(
        [
            [data_utils.SEG_ID_CLS],
            np.full(len(a) + 1, data_utils.SEG_ID_A),
            np.full(len(b) + 1, data_utils.SEG_ID_B),
        ]
    )
    boundary = np.append(np.flatnonzero(is_start[inputs]), len(inputs))

    return {
        "input": data_utils.int64_feature(inputs),
        "seg_id": data_utils.int64_feature(seg_id),
        "boundary": data_utils.int64_feature(boundary),
        "label": data_utils.int64_feature([label]),
    }


def task_files(input_glob: str, num_task: int, task: int) -> list[str]:
    """Returns this task's input files, `sorted(glob)[task::num_task]`; ValueError on a bad glob or task."""
    if num_task < 1 or not 0 <= task < num_task:
        raise ValueError(f"--task={task} must be in [0, --num_task={num_task})")
    paths = sorted(tf.io.gfile.glob(input_glob))
    if not paths:
        raise ValueError(f"--input_glob={input_glob!r} matches no file")
    return paths[task::num_task]


def create_pretrain_data(
    tokenizer,
    input_glob: str,
    save_dir: str,
    seq_len: int = 512,
    split: str = "train",
    pass_id: int = 0,
    uncased: bool = True,
    min_doc_len: int = 1,
    num_task: int = 1,
    task: int = 0,
    chunk_tokens: int = 4_000_000,
    log_every_secs: float = 30.0,
) -> tuple[str, int]:
    """Writes this task's tfrecord file and meta json; returns (record path, number of records).

    The record file is written under a temporary name and renamed when complete; the meta file,
    which the input pipeline reads to find the records, is written last, also atomically.
    """
    if seq_len < 5:
        raise ValueError(f"--seq_len={seq_len} must be at least 5 (cls, sep, sep and two tokens)")
    if chunk_tokens < 1:
        raise ValueError(f"--chunk_tokens={chunk_tokens} must be positive")
    paths = task_files(input_glob, num_task, task)
    if not paths:
        logging.warning(
            "Task %d of %d has no input file: writing an empty record file.", task, num_task
        )
    special_ids = data_utils.setup_special_ids(tokenizer)
    is_start = tokenizer.word_start_mask

    data_utils.ensure_writable_dir(save_dir, "save_dir")
    record_path = os.path.join(
        save_dir,
        data_utils.pretrain_record_name(split, pass_id, seq_len, uncased, task, num_task),
    )
    meta_path = os.path.join(
        save_dir,
        data_utils.pretrain_meta_name(split, pass_id, seq_len, uncased, task, num_task),
    )
    rng = np.random.default_rng([pass_id, task])
    progress = Progress(f"task {task}/{num_task}", log_every_secs)
    documents = iter_documents(paths, tokenizer.convert_text_to_ids, min_doc_len, progress)

    carry_tokens = np.zeros([0], np.int32)
    carry_sent_ids = np.zeros([0], bool)
    with (
        data_utils.atomic_output_path(record_path) as tmp_path,
        tf.io.TFRecordWriter(tmp_path) as writer,
    ):
        for chunk in iter_chunks(documents, chunk_tokens):
            tokens, sent_ids = build_stream(chunk, rng, carry_tokens, carry_sent_ids)
            begin = 0
            for pair in iter_segment_pairs(sent_ids, seq_len, rng):
                features = make_features(tokens, pair[:5], special_ids, is_start)
                begin = pair[5]
                writer.write(data_utils.serialize_example(features))
                progress.records += 1
            carry_tokens, carry_sent_ids = tokens[begin:], sent_ids[begin:]
    progress.log()

    meta = {
        "filenames": [os.path.basename(record_path)],
        "num_example": progress.records,
        "file_bytes": [tf.io.gfile.stat(record_path).length],
    }
    data_utils.atomic_write_json(meta_path, meta)
    logging.info("Wrote %d records to %s", progress.records, record_path)
    return record_path, progress.records


def main(_):
    data_utils.run_main(_run)


def _run():
    tokenizer = tokenization.get_tokenizer(
        tokenizer_type=FLAGS.tokenizer_type,
        tokenizer_path=FLAGS.tokenizer_path,
        uncased=FLAGS.uncased,
    )
    create_pretrain_data(
        tokenizer,
        input_glob=FLAGS.input_glob,
        save_dir=FLAGS.save_dir,
        seq_len=FLAGS.seq_len,
        split=FLAGS.split,
        pass_id=FLAGS.pass_id,
        uncased=FLAGS.uncased,
        min_doc_len=FLAGS.min_doc_len,
        num_task=FLAGS.num_task,
        task=FLAGS.task,
        chunk_tokens=FLAGS.chunk_tokens,
        log_every_secs=FLAGS.log_every_secs,
    )


if __name__ == "__main__":
    app.run(main)
