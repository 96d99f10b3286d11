"""SQuAD 1.1 / 2.0 preprocessing: json -> examples -> windowed features -> tfrecords (SPEC §6.3).

Plain Python and tf.data with explicit arguments; `squad.py` owns the flags. The pipeline:

1. `read_squad_examples(path, is_training, version)` -> list of `SquadExample`, one per question.
2. `convert_examples_to_features(examples, tokenizer, special_ids, max_seq_length, doc_stride,
   max_query_length, is_training)` yields `SquadFeature`s, one per window of a paragraph.
3. `create_squad_tfrecord(...)` writes them (in parallel) to a tfrecord, plus, for evaluation, the
   JSON-lines side file that prediction decoding needs, and a meta json written last.
4. `make_dataset(path, max_seq_length, is_training, batch_size, ...)` reads the tfrecord back.

Character alignment. Every paragraph token carries the inclusive character span
`[start_char, end_char]` of `paragraph_text` it came from (`CharAligner`). The token ids are
exactly `tokenizer.convert_text_to_ids(paragraph_text)`. The paragraph is split at whitespace
(keeping offsets) and each whitespace-separated word is aligned on its own, once per distinct
word: both tokenizers split at whitespace before anything else, so the word's own pieces are,
with rare exceptions, its pieces in the paragraph (where a sentencepiece model breaks a tie
between equally scored segmentations differently in context, the paragraph's pieces are aligned
to the words instead). Inside a word, each character is normalized on its own exactly as the
tokenizer normalizes text (word piece: BERT's cleanup, lower-casing and accent stripping;
sentencepiece: `tokenization.preprocess_text` and the model's own normalizer), which gives every
normalized character the raw character it came from; the pieces, without their `##` / `▁`
markers, are then laid over the normalized word. Where the per-character normalization is not
the word's (context rules such as Greek final sigma, "``" -> '"', an unknown-token piece), the
pieces are matched to the normalized characters by a longest-common-subsequence alignment within
that word only, and characters left unmatched go to the pieces on both sides of the gap. A gold
answer's character span then maps to the shortest run of tokens that covers it
(`char_span_to_token_span`), which is as tight as tokens allow (BERT's `_improve_answer_span`
searches for this span; here it is direct). An answer is *unaligned* only if no token overlaps
it (e.g. it consists of characters the tokenizer drops); unaligned training examples are left
out and every count and id is reported (the original silently dropped the examples its
edit-distance alignment failed on).

Windows (SPEC §6.3). The query keeps its first `max_query_length` ids. A window holds
`max_seq_length - len(query) - 3` paragraph tokens and windows start `doc_stride` tokens apart
(the last may be shorter). Layout, padded to `max_seq_length`:

    position:     0     1..q      q+1    q+2 .. q+1+d       q+2+d   rest
    input_ids:    cls   query     sep    paragraph window   sep     pad
    segment_ids:  2     1         1      0                  0       0
    p_mask:       0     1         1      0                  1       1
    input_mask:   0     0         0      0                  0       1

`cls_index` is 0. A training window that does not contain the whole answer, and every window of
an unanswerable question, has `start_position = end_position = cls_index` and `is_impossible = 1`.
`token_is_max_context[i]` is True where window `i` has the most context around that paragraph
token among the windows that contain it (BERT's `min(left, right) + 0.01 * length` score).

Files (`squad_file_paths`) in `output_dir`, `{tok}` = `tokenizer.name`, `[v1.]` for version v1:
- training shard `proc_id`: `{tok}.{proc_id}.slen-{L}.qlen-{Q}.train.[v1.]tfrecord` with int64
  `unique_ids`, `input_ids` [L], `segment_ids` [L], `cls_index`, `start_positions`,
  `end_positions`, float `input_mask` [L], `p_mask` [L], `is_impossible`;
- evaluation: `{tok}.slen-{L}.qlen-{Q}.eval.[v1.]tfrecord` with the same features less the three
  training targets, and `...eval.[v1.]features.jsonl`, one JSON object per feature (in record
  order) with `unique_id`, `example_index`, `qas_id`, `doc_span_index`, `token_char_spans`
  (per position `[start_char, end_char]` or null) and `token_is_max_context` (per position
  true/false); `read_eval_features` reads it. No pickle: a pickle file runs code when loaded.
- the meta json `... .meta.json` (written last: its presence marks a complete cache) with
  `num_examples`, `num_features`, `num_unaligned`, `unaligned_ids`, `num_skipped`, `skipped_ids`
  and the `settings` the files were made with (a cache made with other settings is rebuilt).

Unique ids run from 1000000000 in record order within each file. `make_dataset` pads evaluation
with fake features whose `unique_ids` is `PAD_UNIQUE_ID` (0), which no real feature has.
"""

import bisect
import collections
import contextlib
import dataclasses
import difflib
import json
import multiprocessing
import os
import re

import numpy as np
import tensorflow as tf
from absl import logging

import data_utils
import tokenization

UNIQUE_ID_START = 1000000000

# `unique_ids` of the fake features that pad evaluation to whole batches.
PAD_UNIQUE_ID = 0

SQUAD_VERSIONS = ("v1", "v2")

# Characters at which the paragraph is split into words: the characters that both tokenizers
# treat as word separators (BERT: " \t\n\r" and Unicode Zs; Zl/Zp survive its cleanup and
# str.split splits at them; sentencepiece's preprocessing splits at every str.isspace character).
# Other str.isspace characters (\x0b, \x0c, \x1c-\x1f, \x85) are control characters that BERT
# deletes, so "a\x0cb" is one word for it; they are left inside words.
_WORD_RE = re.compile("[^ \t\n\r\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")

# Stands for a piece whose text is unknown (word piece `[UNK]`) in the fallback alignment; a
# Unicode noncharacter, so it matches nothing in real text.
_UNKNOWN_SURFACE = "\uffff"


@dataclasses.dataclass
class SquadExample:
    """One question about one paragraph.

    Attributes:
      qas_id: the question id of the json.
      question_text: the question.
      paragraph_text: the paragraph (`context`), as in the json.
      orig_answer_text: the (first) gold answer text; "" for an unanswerable question.
      start_char: int offset of `orig_answer_text` in `paragraph_text`, or -1 (unanswerable, or
        an evaluation answer whose offset does not match its text).
      is_impossible: True for a SQuAD 2.0 unanswerable question.
      answers: list of str, every gold answer text (for evaluation); [] if unanswerable.
    """

    qas_id: str
    question_text: str
    paragraph_text: str
    orig_answer_text: str
    start_char: int
    is_impossible: bool
    answers: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class SquadFeature:
    """One window of one example; every list has length max_seq_length (L).

    Attributes:
      unique_id: int, from `UNIQUE_ID_START` in output order.
      example_index: index of the example in the list given to `convert_examples_to_features`.
      qas_id: the example's question id.
      doc_span_index: index of this window among the example's windows.
      input_ids: list of int [L] token ids.
      input_mask: list of float [L]: 1.0 for padding, 0.0 for real tokens.
      segment_ids: list of int [L]: `SEG_ID_CLS`, `SEG_ID_B` (query + sep), `SEG_ID_A`
        (paragraph + final sep, and padding).
      p_mask: list of float [L]: 0.0 where an answer may start or end (cls, paragraph), else 1.0.
      cls_index: int, always 0.
      start_position, end_position: int positions of the answer in the window (inclusive);
        `cls_index` when the window does not contain it. Computed for evaluation too (from
        `start_char`), but only training records store them.
      is_impossible: bool, the window does not contain an answer.
      token_char_spans: list [L] of `[start_char, end_char]` (inclusive offsets into
        `paragraph_text`) for paragraph tokens, None elsewhere; the pairs are shared by the
        windows of a paragraph, so treat them as read-only.
      token_is_max_context: list of bool [L]; False outside the paragraph.
    """

    unique_id: int
    example_index: int
    qas_id: str
    doc_span_index: int
    input_ids: list
    input_mask: list
    segment_ids: list
    p_mask: list
    cls_index: int
    start_position: int
    end_position: int
    is_impossible: bool
    token_char_spans: list
    token_is_max_context: list


# ------------------------------------------------------------------------------------------ reading
def _check_version(version):
    if version not in SQUAD_VERSIONS:
        raise ValueError(
            f"SQuAD version must be one of {', '.join(SQUAD_VERSIONS)}, got {version!r}"
        )


def _load_json(path):
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            text = f.read()
    except (tf.errors.OpError, OSError) as e:
        raise ValueError(f"cannot read SQuAD file {path}: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError(f"{path}: not a SQuAD file (no top-level 'data' list)")
    return data["data"]


def _check_json_type(path, what, value, expected):
    """`value`, or a one-line ValueError naming the file when it is not of the JSON type `expected`."""
    if not isinstance(value, expected):
        kind = {dict: "an object", list: "a list", str: "a string"}[expected]
        raise ValueError(f"{path}: {what} is not {kind} ({value!r:.100})")
    return value


def _answer_problem(context, answer):
    """None if `answer` (a json answer) matches its offset in `context`, else what is wrong."""
    text, start = answer.get("text"), answer.get("answer_start")
    if not isinstance(text, str) or not text.strip():
        return "empty answer text"
    if not isinstance(start, int) or isinstance(start, bool):
        return f"answer_start {start!r} is not an integer"
    if not 0 <= start <= len(context) - len(text):
        return f"answer_start {start} is outside the context"
    if context[start : start + len(text)] != text:
        return f"answer {text!r} does not match the context at offset {start}"
    return None


def load_squad_examples(path, is_training, version):
    """`read_squad_examples`, also returning the ids of the questions it skipped.

    Returns:
      (list of `SquadExample`, list of str qas_ids skipped as bad training data).
    """
    _check_version(version)
    articles = _load_json(path)
    examples, skipped = [], []
    for article in articles:
        _check_json_type(path, "an article", article, dict)
        for paragraph in _check_json_type(
            path, "'paragraphs'", article.get("paragraphs", []), list
        ):
            _check_json_type(path, "a paragraph", paragraph, dict)
            if "context" not in paragraph or "qas" not in paragraph:
                raise ValueError(f"{path}: a paragraph lacks 'context' or 'qas'")
            context = _check_json_type(path, "a 'context'", paragraph["context"], str)
            for qa in _check_json_type(path, "'qas'", paragraph["qas"], list):
                _check_json_type(path, "a question", qa, dict)
                qas_id = qa.get("id")
                if qas_id is None or "question" not in qa:
                    raise ValueError(f"{path}: a question lacks 'id' or 'question' ({qa!r:.200})")
                if "answers" not in qa:
                    raise ValueError(f"{path}: question {qas_id} has no 'answers'")
                answers = _check_json_type(
                    path, f"the 'answers' of question {qas_id}", qa["answers"], list
                )
                for answer in answers:
                    _check_json_type(path, f"an answer of question {qas_id}", answer, dict)
                is_impossible = version == "v2" and bool(qa.get("is_impossible", False))
                texts = [] if is_impossible else [a.get("text", "") for a in answers]
                text, start_char = "", -1
                if not is_impossible:
                    problem = _answer_problem(context, answers[0]) if answers else "no answer"
                    if problem is None:
                        text, start_char = answers[0]["text"], answers[0]["answer_start"]
                    elif is_training:
                        logging.warning("%s: skip question %s: %s.", path, qas_id, problem)
                        skipped.append(qas_id)
                        continue
                    else:
                        # Evaluation only needs the gold texts.
                        text = texts[0] if texts else ""
                examples.append(
                    SquadExample(
                        qas_id=qas_id,
                        question_text=qa["question"],
                        paragraph_text=context,
                        orig_answer_text=text,
                        start_char=start_char,
                        is_impossible=is_impossible,
                        answers=texts,
                    )
                )
    if skipped:
        logging.warning(
            "%s: skipped %d training question(s) with a bad answer: %s",
            path,
            len(skipped),
            ", ".join(skipped[:20]) + (" ..." if len(skipped) > 20 else ""),
        )
    logging.info("Read %d questions from %s.", len(examples), path)
    return examples, skipped


def read_squad_examples(path, is_training, version):
    """Reads a SQuAD json file (local or gs://) into one `SquadExample` per question.

    Args:
      path: SQuAD 1.1 or 2.0 json.
      is_training: training data: a question whose first answer does not match its offset (or is
        missing or empty) is skipped with a logged count and ids; for evaluation it is kept (with
        `start_char` -1), since evaluation only needs the answer texts.
      version: "v1" (no unanswerable questions; `is_impossible` is ignored) or "v2".

    Returns:
      list of `SquadExample` in file order.

    Raises:
      ValueError: unreadable file or invalid json (one line naming the file), a question without
        `answers` (naming the file and the question id), an unknown version.
    """
    return load_squad_examples(path, is_training, version)[0]


# ---------------------------------------------------------------------------------- char alignment
def split_words(text):
    """The whitespace-separated words of `text` as (offset, word) pairs (see `_WORD_RE`)."""
    return [(m.start(), m.group()) for m in _WORD_RE.finditer(text)]


class CharAligner:
    """Tokenizes paragraphs into ids with the character span of every token.

    Args:
      tokenizer: a `tokenization.WordPieceTokenizer` or `SentencePieceTokenizer`.
      cache_size: whitespace words whose alignment is remembered (word frequencies are Zipfian).
    """

    def __init__(self, tokenizer, cache_size=1 << 17):
        self.tokenizer = tokenizer
        self._is_word_piece = tokenizer.tokenizer_type == "word_piece"
        self._char_norms = {}
        self._word_cache = {}
        self._cache_size = cache_size

    def _char_norm(self, char):
        """The text one raw character becomes under the tokenizer's normalization ("" if dropped)."""
        norm = self._char_norms.get(char)
        if norm is None:
            tok = self.tokenizer
            if self._is_word_piece:
                norm = "".join(tok.basic_tokenizer.tokenize(char))
            else:
                text = tokenization.preprocess_text(char, lower=tok.uncased)
                norm = tok.sp_model.normalize(text).replace(tokenization.SPIECE_UNDERLINE, "")
            self._char_norms[char] = norm
        return norm

    def _surface(self, piece):
        """The normalized text a piece covers, without its marker; None if unknown (word piece)."""
        if self._is_word_piece:
            if piece == self.tokenizer.unk_token:
                return None
            return piece[2:] if piece.startswith("##") else piece
        return piece.replace(tokenization.SPIECE_UNDERLINE, "")

    def _piece_length(self, piece):
        surface = self._surface(piece)
        return 1 if surface is None else len(surface)

    def align(self, text, pieces):
        """Character spans of `pieces`, the tokenizer's pieces of `text` (str).

        Returns:
          list of (start, end) int pairs, one per piece, with `text[start : end + 1]` the
          characters the piece came from, non-decreasing. A piece without characters of its own
          (a lone sentencepiece "▁") gets the span of the character that follows it.
        """
        if not pieces:
            return []
        owners = []
        norm_parts = []
        for i, char in enumerate(text):
            norm = self._char_norm(char)
            norm_parts.append(norm)
            owners.extend([i] * len(norm))
        normalized = "".join(norm_parts)
        surfaces = [self._surface(p) for p in pieces]
        if not owners:
            # Nothing normalizes to any text (should not happen when there are pieces).
            return [(0, len(text) - 1)] * len(pieces)
        if None in surfaces or "".join(surfaces) != normalized:
            return _fuzzy_spans(normalized, owners, surfaces)
        spans = []
        pos = 0
        last = len(owners) - 1
        for surface in surfaces:
            begin = min(pos, last)
            pos += len(surface)
            spans.append((owners[begin], owners[max(begin, pos - 1)]))
        return spans

    def align_word(self, word):
        """The pieces of one word (no separator inside) with their character spans (cached).

        Returns:
          (tuple of (token_id, start, end) int triples, int length of the pieces' text).
        """
        cached = self._word_cache.get(word)
        if cached is None:
            pieces = self.tokenizer.tokenize(word)
            ids = self.tokenizer.convert_tokens_to_ids(pieces)
            spans = self.align(word, pieces)
            triples = tuple((i, s, e) for i, (s, e) in zip(ids, spans, strict=True))
            cached = triples, sum(map(self._piece_length, pieces))
            if len(self._word_cache) >= self._cache_size:
                self._word_cache.clear()
            self._word_cache[word] = cached
        return cached

    def tokenize_paragraph(self, text):
        """Token ids and character spans of a whole paragraph.

        The ids are `tokenizer.convert_text_to_ids(text)`. Word by word they are almost always
        the same, and then the cached word alignments give the spans; where they differ (a
        sentencepiece model may break ties between equally scored segmentations differently in
        context, e.g. "5,111" -> "1" "11" vs "11" "1"), the paragraph's own pieces are aligned to
        the words they cover.

        Returns:
          (ids, starts, ends): lists of int of equal length; token k came from
          `text[starts[k] : ends[k] + 1]`. `starts` and `ends` are non-decreasing.
        """
        pieces = self.tokenizer.tokenize(text)
        ids = self.tokenizer.convert_tokens_to_ids(pieces)
        words = split_words(text)
        aligned = [self.align_word(word) for _, word in words]
        starts, ends = [], []
        word_ids = []
        for (offset, _), (triples, _) in zip(words, aligned, strict=True):
            for token_id, start, end in triples:
                word_ids.append(token_id)
                starts.append(offset + start)
                ends.append(offset + end)
        if word_ids != ids:
            starts, ends = self._regroup(text, words, [n for _, n in aligned], pieces)
        return ids, starts, ends

    def _regroup(self, text, words, word_lengths, pieces):
        """Spans of the paragraph's `pieces`, taken word by word by the length of their text.

        Consecutive words form one unit when a piece crosses the boundary between them (a model
        trained without whitespace splitting); everything left over joins the last unit.

        Returns:
          (starts, ends): lists of int, one per piece.
        """
        lengths = [self._piece_length(p) for p in pieces]
        starts, ends = [], []
        i = w = 0
        while w < len(words):
            first = w
            target = word_lengths[w]
            w += 1
            taken = 0
            j = i
            while True:
                while j < len(pieces) and taken < target:
                    taken += lengths[j]
                    j += 1
                if taken <= target or w == len(words):
                    break
                target += word_lengths[w]
                w += 1
            if w == len(words):
                j = len(pieces)
            begin = words[first][0]
            end = words[w - 1][0] + len(words[w - 1][1])
            for s, e in self.align(text[begin:end], pieces[i:j]):
                starts.append(begin + s)
                ends.append(begin + e)
            i = j
        return starts, ends


def _fuzzy_spans(normalized, owners, surfaces):
    """Spans of pieces whose text is not exactly the normalized word (see the module docstring).

    Args:
      normalized: str, the per-character normalization of the word.
      owners: list of int, the raw character index of each character of `normalized`.
      surfaces: list of str or None (unknown), one per piece.

    Returns:
      list of (start, end) raw character indices, one per piece, non-decreasing.
    """
    joined = "".join(_UNKNOWN_SURFACE if s is None else s for s in surfaces)
    matched = [-1] * len(joined)
    matcher = difflib.SequenceMatcher(None, normalized, joined, autojunk=False)
    for a, b, size in matcher.get_matching_blocks():
        matched[b : b + size] = range(a, a + size)
    # before[j]: the last matched index of `normalized` for a position < j (-1 if none);
    # after[j]: the first one for a position >= j (len(normalized) if none).
    before = [-1] * (len(joined) + 1)
    for j, m in enumerate(matched):
        before[j + 1] = m if m >= 0 else before[j]
    after = [len(normalized)] * (len(joined) + 1)
    for j in range(len(joined) - 1, -1, -1):
        after[j] = matched[j] if matched[j] >= 0 else after[j + 1]
    spans = []
    pos = 0
    top = len(normalized) - 1
    prev_start = prev_end = 0
    for surface in surfaces:
        length = 1 if surface is None else len(surface)
        # An unmatched first (last) character reaches back (on) to the neighbouring match, so the
        # characters between two matches belong to the pieces on both sides of the gap.
        lo = before[pos] + 1
        if length and matched[pos] >= 0:
            lo = matched[pos]
        hi = lo
        if length:
            last = pos + length - 1
            hi = matched[last] if matched[last] >= 0 else max(after[last + 1] - 1, lo)
        lo, hi = min(max(lo, 0), top), min(max(hi, 0), top)
        start = max(owners[lo], prev_start)
        end = max(owners[hi], start, prev_end)
        spans.append((start, end))
        prev_start, prev_end = start, end
        pos += length
    return spans


def char_span_to_token_span(starts, ends, start_char, end_char):
    """The shortest run of tokens covering the characters `[start_char, end_char]`.

    Args:
      starts, ends: non-decreasing lists of int, the inclusive character span of each token.
      start_char, end_char: int, inclusive.

    Returns:
      (first token, last token) int indices, or None when no token overlaps the span.
    """
    first = bisect.bisect_left(ends, start_char)
    last = bisect.bisect_right(starts, end_char) - 1
    if first >= len(starts) or last < first:
        return None
    return first, last


def answer_char_span(example):
    """Inclusive character span of the example's answer without surrounding whitespace, or None."""
    if example.is_impossible or example.start_char < 0:
        return None
    text = example.orig_answer_text
    start = example.start_char + (len(text) - len(text.lstrip()))
    end = example.start_char + len(text.rstrip()) - 1
    return (start, end) if start <= end else None


# ---------------------------------------------------------------------------------------- windows
def doc_spans(num_tokens, max_tokens_for_doc, doc_stride):
    """Windows over `num_tokens` paragraph tokens as (start, length) pairs.

    Windows start `doc_stride` apart (or right after the previous one when it is shorter than the
    stride) and the last one ends at the paragraph's end. A paragraph without tokens gets one
    empty window, so every question has a feature (and a null score at evaluation).
    """
    spans = []
    start = 0
    while True:
        length = min(num_tokens - start, max_tokens_for_doc)
        spans.append((start, length))
        if start + length >= num_tokens:
            return spans
        start += min(length, doc_stride)


def max_context_flags(spans, num_tokens):
    """For each paragraph token, the index of the window where it has the most context.

    Score of token t in window (s, n): min(t - s, s + n - 1 - t) + 0.01 * n; the first window wins
    ties (BERT's `_check_is_max_context`).

    Returns:
      list of int [num_tokens].
    """
    if len(spans) == 1:
        return [0] * num_tokens
    best = [0] * num_tokens
    best_score = [-1.0] * num_tokens
    for w, (s, n) in enumerate(spans):
        for t in range(s, s + n):
            score = min(t - s, s + n - 1 - t) + 0.01 * n
            if score > best_score[t]:
                best_score[t] = score
                best[t] = w
    return best


def _example_features(example, example_index, paragraph, query_ids, special_ids, settings):
    """The windows of one example (unique_id left 0), and whether its answer is unaligned.

    Args:
      paragraph: (ids, starts, ends) of `CharAligner.tokenize_paragraph`, and the list of
        [start, end] lists of the tokens.
      query_ids: list of int, already truncated.
      settings: dict with max_seq_length, doc_stride, is_training.

    Returns:
      (list of `SquadFeature`, unaligned bool). An unaligned training example has no features.
    """
    para_ids, starts, ends, span_pairs = paragraph
    max_seq_length = settings["max_seq_length"]
    is_training = settings["is_training"]
    max_tokens_for_doc = max_seq_length - len(query_ids) - 3

    answer = None
    char_span = answer_char_span(example)
    unaligned = False
    if char_span is not None:
        answer = char_span_to_token_span(starts, ends, *char_span)
        unaligned = answer is None
        if unaligned and is_training:
            return [], True

    spans = doc_spans(len(para_ids), max_tokens_for_doc, settings["doc_stride"])
    best_window = max_context_flags(spans, len(para_ids))
    cls_index = 0
    prefix_ids = [special_ids.cls_id, *query_ids, special_ids.sep_id]
    offset = len(prefix_ids)
    features = []
    for w, (s, n) in enumerate(spans):
        n_pad = max_seq_length - offset - n - 1
        input_ids = prefix_ids + para_ids[s : s + n] + [special_ids.sep_id]
        input_ids += [special_ids.pad_id] * n_pad
        segment_ids = (
            [data_utils.SEG_ID_CLS]
            + [data_utils.SEG_ID_B] * (offset - 1)
            + [data_utils.SEG_ID_A] * (n + 1)
            + [data_utils.SEG_ID_PAD] * n_pad
        )
        p_mask = [0.0] + [1.0] * (offset - 1) + [0.0] * n + [1.0] * (n_pad + 1)
        input_mask = [0.0] * (offset + n + 1) + [1.0] * n_pad
        char_spans = [None] * offset
        char_spans += span_pairs[s : s + n]
        char_spans += [None] * (n_pad + 1)
        max_context = [False] * offset
        if len(spans) == 1:
            max_context += [True] * n
        else:
            max_context += [best_window[t] == w for t in range(s, s + n)]
        max_context += [False] * (n_pad + 1)

        start_position = end_position = cls_index
        impossible = True
        if answer is not None and s <= answer[0] and answer[1] < s + n:
            start_position = answer[0] - s + offset
            end_position = answer[1] - s + offset
            impossible = False
        features.append(
            SquadFeature(
                unique_id=0,
                example_index=example_index,
                qas_id=example.qas_id,
                doc_span_index=w,
                input_ids=input_ids,
                input_mask=input_mask,
                segment_ids=segment_ids,
                p_mask=p_mask,
                cls_index=cls_index,
                start_position=start_position,
                end_position=end_position,
                is_impossible=impossible,
                token_char_spans=char_spans,
                token_is_max_context=max_context,
            )
        )
    return features, unaligned


class _Featurizer:
    """Examples -> features with the per-process caches (tokenized paragraph, word alignments)."""

    def __init__(
        self, tokenizer, special_ids, max_seq_length, doc_stride, max_query_length, is_training
    ):
        if max_query_length < 0 or doc_stride < 1:
            raise ValueError(
                f"need max_query_length >= 0 and doc_stride >= 1, got {max_query_length}, {doc_stride}"
            )
        if max_seq_length - max_query_length - 3 < 1:
            raise ValueError(
                f"max_seq_length {max_seq_length} leaves no room for the paragraph after a query of "
                f"max_query_length {max_query_length} and 3 special tokens"
            )
        self.tokenizer = tokenizer
        self.special_ids = special_ids
        self.max_query_length = max_query_length
        self.settings = {
            "max_seq_length": max_seq_length,
            "doc_stride": doc_stride,
            "is_training": is_training,
        }
        self.aligner = CharAligner(tokenizer)
        self._last_text = None
        self._last_paragraph = None

    def paragraph(self, text):
        # Questions of one paragraph are consecutive in SQuAD files: tokenize it once for all.
        if text is not self._last_text and text != self._last_text:
            ids, starts, ends = self.aligner.tokenize_paragraph(text)
            # The [start, end] lists are shared by all windows of the paragraph (read-only).
            pairs = [[s, e] for s, e in zip(starts, ends, strict=True)]
            self._last_paragraph = ids, starts, ends, pairs
            self._last_text = text
        return self._last_paragraph

    def features(self, example, example_index):
        """(list of `SquadFeature` with unique_id 0, unaligned bool); see `_example_features`."""
        query_ids = self.tokenizer.convert_text_to_ids(example.question_text)
        query_ids = query_ids[: self.max_query_length]
        return _example_features(
            example,
            example_index,
            self.paragraph(example.paragraph_text),
            query_ids,
            self.special_ids,
            self.settings,
        )


def convert_examples_to_features(
    examples,
    tokenizer,
    special_ids,
    max_seq_length,
    doc_stride,
    max_query_length,
    is_training,
    unaligned_ids=None,
):
    """Yields the windows of every example, one `SquadFeature` each (a generator: memory is flat).

    Args:
      examples: iterable of `SquadExample`; `example_index` counts them from 0.
      tokenizer: `tokenization` tokenizer.
      special_ids: `data_utils.SpecialIds` (cls_id, sep_id, pad_id).
      max_seq_length: L, the length of every feature.
      doc_stride: paragraph tokens between the starts of consecutive windows.
      max_query_length: query ids kept (the first ones).
      is_training: an answerable example whose answer no token covers is left out (training
        needs a target); for evaluation it gets its windows like any other.
      unaligned_ids: optional list; the qas_id of every answerable example whose answer could not
        be mapped to tokens is appended to it.

    Yields:
      `SquadFeature`, unique ids from `UNIQUE_ID_START`.
    """
    featurizer = _Featurizer(
        tokenizer, special_ids, max_seq_length, doc_stride, max_query_length, is_training
    )
    unique_id = UNIQUE_ID_START
    for example_index, example in enumerate(examples):
        features, unaligned = featurizer.features(example, example_index)
        if unaligned:
            _report_unaligned(example)
            if unaligned_ids is not None:
                unaligned_ids.append(example.qas_id)
        for feature in features:
            feature.unique_id = unique_id
            unique_id += 1
            yield feature


def _report_unaligned(example):
    logging.warning(
        "Question %s: no token covers the answer %r.", example.qas_id, example.orig_answer_text
    )


# ------------------------------------------------------------------------------------- tfrecords
def _varint(value):
    """Protobuf base-128 varint encoding of a non-negative int."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _feature_entries(feature, is_training):
    """The serialized map entries of every record feature but `unique_ids` (bytes).

    A record is the deterministic serialization of a `tf.train.Example`: its `Features` map
    entries sorted by key, where `unique_ids` sorts last. Serialization (the costly part) runs in
    the worker processes, before the feature's place in the file, hence its unique id, is known;
    `_record_bytes` appends the `unique_ids` entry and the Example framing in the parent.
    """
    values = {
        "input_ids": data_utils.int64_feature(feature.input_ids),
        "input_mask": data_utils.float_feature(feature.input_mask),
        "p_mask": data_utils.float_feature(feature.p_mask),
        "segment_ids": data_utils.int64_feature(feature.segment_ids),
        "cls_index": data_utils.int64_feature([feature.cls_index]),
    }
    if is_training:
        values["start_positions"] = data_utils.int64_feature([feature.start_position])
        values["end_positions"] = data_utils.int64_feature([feature.end_position])
        values["is_impossible"] = data_utils.float_feature([float(feature.is_impossible)])
    return tf.train.Features(feature=values).SerializeToString(deterministic=True)


def _progress_detail(unique_id, unaligned_ids):
    return f"{unique_id - UNIQUE_ID_START:,} features, {len(unaligned_ids)} unaligned"


def _record_bytes(entries, unique_id):
    """The serialized `tf.train.Example` of `entries` (see `_feature_entries`) plus `unique_ids`."""
    uid = tf.train.Features(feature={"unique_ids": data_utils.int64_feature([unique_id])})
    features = entries + uid.SerializeToString()
    # Example has one field: `features` (field 1, length-delimited: tag byte 0x0a).
    return b"\x0a" + _varint(len(features)) + features


def _side_json(feature):
    """The JSON line of an evaluation feature without its leading `unique_id` member."""
    record = {
        "example_index": feature.example_index,
        "qas_id": feature.qas_id,
        "doc_span_index": feature.doc_span_index,
        "token_char_spans": feature.token_char_spans,
        "token_is_max_context": feature.token_is_max_context,
    }
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def _side_line(rest, unique_id):
    return f'{{"unique_id":{unique_id},{rest[1:]}\n'


def read_eval_features(path):
    """Yields the features of an evaluation `...features.jsonl` file, in record order.

    Yields:
      dict with unique_id (int), example_index (int), qas_id (str), doc_span_index (int),
      token_char_spans (list [L] of [start_char, end_char] or None), token_is_max_context
      (list of bool [L]): what `squad_metrics.decode_predictions` takes.
    """
    with tf.io.gfile.GFile(path, "r") as f:
        for line_number, line in enumerate(f, 1):
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_number}: not valid JSON: {e}") from None


# Per worker process: the `_Featurizer` set up by `_init_worker`.
_WORKER = None


def _init_worker(featurizer):
    global _WORKER
    _WORKER = featurizer


def _process_chunk(chunk):
    """Featurizes and serializes one chunk of (example_index, example) pairs.

    Returns:
      (list of (record entries bytes, side json str or None), list of unaligned qas_ids,
      number of examples).
    """
    featurizer = _WORKER
    is_training = featurizer.settings["is_training"]
    outputs, unaligned_ids = [], []
    for example_index, example in chunk:
        features, unaligned = featurizer.features(example, example_index)
        if unaligned:
            _report_unaligned(example)
            unaligned_ids.append(example.qas_id)
        for feature in features:
            side = None if is_training else _side_json(feature)
            outputs.append((_feature_entries(feature, is_training), side))
    return outputs, unaligned_ids, len(chunk)


def _chunks(indexed_examples, target_size):
    """Groups (index, example) pairs into lists of about `target_size`, cut between paragraphs.

    Keeping a paragraph's questions together lets each worker tokenize the paragraph once.
    """
    chunk = []
    for item in indexed_examples:
        if len(chunk) >= target_size and item[1].paragraph_text != chunk[-1][1].paragraph_text:
            yield chunk
            chunk = []
        chunk.append(item)
    if chunk:
        yield chunk


def _shuffle_paragraphs(indexed_examples, rng):
    """(index, example) pairs with their paragraphs in a random order; the questions of a paragraph
    stay together, in file order.

    The training records are then mixed across the whole file, so the input's shuffle buffer need
    not hold a large part of it (the original shuffles the questions before writing, for the same
    reason). Shuffling whole paragraphs keeps each paragraph tokenized once (`_chunks`); with a
    buffer of 2,048 records a batch still draws from hundreds of paragraphs.
    """
    paragraphs = []
    for item in indexed_examples:
        if paragraphs and item[1].paragraph_text == paragraphs[-1][-1][1].paragraph_text:
            paragraphs[-1].append(item)
        else:
            paragraphs.append([item])
    order = rng.permutation(len(paragraphs))
    return [item for i in order for item in paragraphs[i]]


def _map_chunks(featurizer, chunks, num_workers):
    """`_process_chunk` over `chunks`, in order, on `num_workers` processes (1: in this one)."""
    if num_workers <= 1:
        _init_worker(featurizer)
        try:
            yield from map(_process_chunk, chunks)
        finally:
            _init_worker(None)
        return
    # fork: the workers inherit the tokenizer and loaded modules instead of re-importing
    # TensorFlow (seconds per worker); they run only Python and protobuf code.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with context.Pool(num_workers, initializer=_init_worker, initargs=(featurizer,)) as pool:
        # At most two chunks per worker in flight, so that results waiting for the writer stay
        # bounded (Pool.imap would queue every chunk and every result).
        pending = collections.deque()
        for chunk in chunks:
            pending.append(pool.apply_async(_process_chunk, (chunk,)))
            if len(pending) >= 2 * num_workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def squad_file_paths(
    output_dir, tokenizer_name, max_seq_length, max_query_length, is_training, version, proc_id=0
):
    """Paths of the files `create_squad_tfrecord` writes.

    Returns:
      dict with "record" (the tfrecord), "meta" (meta json) and "features" (the evaluation
      JSON-lines side file; None for training).
    """
    _check_version(version)
    v1 = "v1." if version == "v1" else ""
    if is_training:
        base = (
            f"{tokenizer_name}.{proc_id}.slen-{max_seq_length}.qlen-{max_query_length}.train.{v1}"
        )
    else:
        base = f"{tokenizer_name}.slen-{max_seq_length}.qlen-{max_query_length}.eval.{v1}"
    base = os.path.join(output_dir, base)
    return {
        "record": base + "tfrecord",
        "meta": base + "meta.json",
        "features": None if is_training else base + "features.jsonl",
    }


def create_squad_tfrecord(
    path_json,
    is_training,
    version,
    output_dir,
    tokenizer,
    special_ids,
    max_seq_length,
    doc_stride,
    max_query_length,
    num_proc=1,
    proc_id=0,
    num_workers=None,
    overwrite=False,
    seed=0,
):
    """Preprocesses a SQuAD json file into a tfrecord (see the module docstring for the files).

    Args:
      path_json: SQuAD json (local or gs://).
      is_training: training: writes shard `proc_id` of `num_proc` (contiguous blocks of
        questions, so that separate processes can share the work), its paragraphs in an order
        shuffled with `seed` (see `_shuffle_paragraphs`); evaluation: all questions in file order,
        plus the features side file.
      version: "v1" or "v2".
      output_dir: directory of the output files (created if needed).
      tokenizer: `tokenization` tokenizer; its `name` is part of the file names.
      special_ids: `data_utils.SpecialIds`.
      max_seq_length, doc_stride, max_query_length: see `convert_examples_to_features`.
      num_proc, proc_id: the shard (training only).
      num_workers: processes that preprocess this call's examples; None: os.cpu_count(). The
        files are byte-identical for any value.
      overwrite: rebuild even if a complete cache made with the same settings exists.
      seed: the training shuffle's seed (--seed), with `proc_id`.

    Returns:
      (record path, meta dict). meta: num_examples (questions in this shard), num_features,
      num_unaligned, unaligned_ids, num_skipped, skipped_ids, settings.
    """
    if not 0 <= proc_id < num_proc:
        raise ValueError(f"proc_id {proc_id} is not in [0, num_proc={num_proc})")
    if not is_training and num_proc != 1:
        raise ValueError("evaluation data is not sharded: use num_proc=1")
    paths = squad_file_paths(
        output_dir, tokenizer.name, max_seq_length, max_query_length, is_training, version, proc_id
    )
    settings = {
        "input": path_json,
        "version": version,
        "is_training": is_training,
        **data_utils.tokenizer_settings(tokenizer),
        "max_seq_length": max_seq_length,
        "doc_stride": doc_stride,
        "max_query_length": max_query_length,
        "num_proc": num_proc,
        "proc_id": proc_id,
        "shuffle_seed": seed if is_training else None,
    }
    if not overwrite:
        data_paths = [paths["record"]] + ([paths["features"]] if paths["features"] else [])
        meta = data_utils.read_cached_meta(paths["meta"], settings, data_paths)
        if meta is not None:
            logging.info("Use cached %s (%d features).", paths["record"], meta["num_features"])
            return paths["record"], meta

    featurizer = _Featurizer(
        tokenizer, special_ids, max_seq_length, doc_stride, max_query_length, is_training
    )
    examples, skipped = load_squad_examples(path_json, is_training, version)
    begin = len(examples) * proc_id // num_proc
    end = len(examples) * (proc_id + 1) // num_proc
    shard = list(zip(range(begin, end), examples[begin:end], strict=True))
    if is_training:
        shard = _shuffle_paragraphs(shard, np.random.RandomState([seed, proc_id]))
    num_workers = os.cpu_count() if num_workers is None else num_workers
    # Several chunks per worker balance the load; a chunk much larger than a paragraph's
    # questions keeps the paragraph tokenized once per chunk.
    chunk_size = max(16, min(256, len(shard) // (4 * max(num_workers, 1)) + 1))
    num_workers = max(1, min(num_workers, -(-len(shard) // chunk_size)))
    logging.info(
        "Create %s from %d questions of %s on %d process(es).",
        paths["record"],
        len(shard),
        path_json,
        num_workers,
    )

    tf.io.gfile.makedirs(output_dir)
    unaligned_ids = []
    unique_id = UNIQUE_ID_START
    progress = data_utils.ProgressLog(f"Writing {paths['record']}", len(shard), "questions")
    with contextlib.ExitStack() as stack:
        # Exited in reverse: each file is closed, then renamed into place.
        record_tmp = stack.enter_context(data_utils.atomic_output_path(paths["record"]))
        writer = stack.enter_context(tf.io.TFRecordWriter(record_tmp))
        side_file = None
        if paths["features"]:
            side_file = stack.enter_context(data_utils.atomic_open(paths["features"], "w"))
        for outputs, chunk_unaligned, count in _map_chunks(
            featurizer, _chunks(shard, chunk_size), num_workers
        ):
            lines = []
            for entries, side in outputs:
                writer.write(_record_bytes(entries, unique_id))
                if side is not None:
                    lines.append(_side_line(side, unique_id))
                unique_id += 1
            if side_file is not None:
                side_file.write("".join(lines))
            unaligned_ids.extend(chunk_unaligned)
            progress.advance(count, _progress_detail(unique_id, unaligned_ids))
        progress.finish(_progress_detail(unique_id, unaligned_ids))

    meta = {
        "num_examples": len(shard),
        "num_features": unique_id - UNIQUE_ID_START,
        "num_unaligned": len(unaligned_ids),
        "unaligned_ids": unaligned_ids,
        "num_skipped": len(skipped),
        "skipped_ids": skipped,
        "settings": settings,
    }
    if unaligned_ids:
        logging.warning(
            "%d question(s) whose answer no token covers: %s",
            len(unaligned_ids),
            unaligned_ids[:20],
        )
    data_utils.atomic_write_json(paths["meta"], meta, indent=2)
    return paths["record"], meta


# --------------------------------------------------------------------------------------- reading
def _feature_spec(max_seq_length, is_training):
    spec = {
        "unique_ids": tf.io.FixedLenFeature([], tf.int64),
        "input_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "input_mask": tf.io.FixedLenFeature([max_seq_length], tf.float32),
        "p_mask": tf.io.FixedLenFeature([max_seq_length], tf.float32),
        "segment_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "cls_index": tf.io.FixedLenFeature([], tf.int64),
    }
    if is_training:
        spec["start_positions"] = tf.io.FixedLenFeature([], tf.int64)
        spec["end_positions"] = tf.io.FixedLenFeature([], tf.int64)
        spec["is_impossible"] = tf.io.FixedLenFeature([], tf.float32)
    return spec


def _padding_feature(max_seq_length):
    """A fake evaluation feature (unique_ids `PAD_UNIQUE_ID`) with the dtypes of `data_utils.decode_record`."""
    return {
        "unique_ids": tf.constant(PAD_UNIQUE_ID, tf.int32),
        "input_ids": tf.zeros([max_seq_length], tf.int32),
        "input_mask": tf.ones([max_seq_length], tf.float32),
        "p_mask": tf.ones([max_seq_length], tf.float32),
        "segment_ids": tf.zeros([max_seq_length], tf.int32),
        "cls_index": tf.zeros([], tf.int32),
    }


def make_dataset(
    path,
    max_seq_length,
    is_training,
    batch_size,
    input_context=None,
    num_features=None,
    shuffle_buffer=2048,
    seed=None,
):
    """Batches of a SQuAD tfrecord, like `classifier_utils.make_dataset`.

    Training: shard per input pipeline, shuffle, repeat, fixed-size batches. Evaluation: one pass
    in file order, then fake features (unique_ids `PAD_UNIQUE_ID` = 0, input_mask and p_mask all
    1) up to a multiple of the global batch size, so every replica gets full batches and no real
    feature is dropped; their results are to be ignored.

    Args:
      path: tfrecord (or list of tfrecords, e.g. the training shards) of `create_squad_tfrecord`.
      max_seq_length: L.
      is_training: see above; also selects the record features.
      batch_size: global batch size; divided by the replica count when `input_context` is given.
      input_context: `tf.distribute.InputContext` or None (one pipeline, one replica).
      num_features: records in the file (meta["num_features"]); required for evaluation.
      shuffle_buffer: training shuffle buffer size.
      seed: shuffle seed.

    Returns:
      tf.data.Dataset of dicts: unique_ids int32 [B], input_ids int32 [B, L], input_mask float32
      [B, L], p_mask float32 [B, L], segment_ids int32 [B, L], cls_index int32 [B]; training adds
      start_positions int32 [B], end_positions int32 [B], is_impossible float32 [B].
    """
    if not is_training and num_features is None:
        raise ValueError("make_dataset needs num_features for evaluation (meta['num_features'])")
    return data_utils.make_record_dataset(
        path,
        _feature_spec(max_seq_length, is_training),
        batch_size,
        is_training,
        padding=_padding_feature(max_seq_length),
        num_records=num_features,
        input_context=input_context,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
    )
