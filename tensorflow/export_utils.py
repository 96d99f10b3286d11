"""SavedModel export of finetuned task heads for serving (docs/export.md); `export.py` owns the flags.

A `ServingModule` wraps a restored `modeling.FunnelTFM` and one task head (`ClassificationHead`,
`RaceHead`, `SquadHead`) and exports two kinds of signature:

  - `serving_default`: the model inputs (`input_ids`, `segment_ids`, `input_mask` with 1.0 = padding) of
    any batch size and any length up to max_seq_length. They are padded to max_seq_length, the length
    the model was finetuned and evaluated at: pooling drops and pairs positions by absolute index, so
    a shorter padded length would give other outputs than the task scripts.
  - `serve_text` and `tokenize` (classification and RACE): raw UTF-8 strings, tokenized in the graph by a
    `WordPieceEncoder` or `SentencePieceEncoder`, which give the ids of `tokenization.py`, then laid out
    as `classifier_utils.convert_single_example` / `race_utils.encode_choice` do. `tokenize` returns
    the model inputs, `serve_text` the task outputs.

The text signatures use TensorFlow Text ops, so loading the SavedModel needs them registered
(`import tensorflow_text` in Python; TF Serving links them). Everything else is in the SavedModel: the
word-piece vocabulary is an asset, a sentencepiece model a constant of the graph.
"""

import functools
import logging as py_logging
import os
import unicodedata

import tensorflow as tf
import tensorflow_text
from absl import logging

import data_utils
import ops
import race_utils
import tokenization

# The longest word the word-piece tokenizer splits, as `tokenization.WordPieceTokenizer` has it.
MAX_CHARS_PER_WORD = 200
_MAX_UTF8_BYTES_PER_CHAR = 4


# ------------------------------------------------------------------------------------ character classes
def _char_class(predicate):
    """An RE2 character class of the code points `cp` with `predicate(chr(cp))` true.

    Built from the predicates of `tokenization.py` themselves and Python's `unicodedata`, so the graph
    and the Python tokenizers classify every character alike.
    """
    ranges = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:  # surrogates are not characters of valid UTF-8
            continue
        if predicate(chr(cp)):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
    if not ranges:
        raise ValueError("empty character class")
    parts = [f"\\x{{{lo:x}}}" + (f"-\\x{{{hi:x}}}" if hi > lo else "") for lo, hi in ranges]
    return "[" + "".join(parts) + "]"


@functools.cache
def _char_classes():
    """The character classes of the BERT basic tokenizer and of XLNet's preprocessing, computed once."""
    return {
        # `tokenization._clean_rule`: removed, made a space, spaced apart.
        "removed": _char_class(lambda c: c in ("\x00", "\ufffd") or tokenization._is_control(c)),
        "space": _char_class(tokenization._is_whitespace),
        "cjk": _char_class(tokenization._is_cjk),
        "accent": _char_class(lambda c: unicodedata.category(c) == "Mn"),
        "punct": _char_class(tokenization._is_punctuation),
        # What str.split() and str.strip() take for whitespace.
        "py_space": _char_class(str.isspace),
        # `tokenization.preprocess_text` drops these after NFKD.
        "combining": _char_class(unicodedata.combining),
        # str.isdigit, as in `tokenization.encode_pieces`.
        "digit": _char_class(str.isdigit),
    }


def _valid_utf8(texts):
    """Drops the bytes of `texts` that are not UTF-8, as `tokenization` decodes with errors="ignore"."""
    return tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="ignore")


def _last_of_row(ragged):
    """bool [values]: True at the last value of each row of `ragged` [N, (n)]."""
    positions = tf.range(tf.size(ragged.flat_values, tf.int64))
    return tf.equal(positions, tf.gather(ragged.row_limits() - 1, ragged.value_rowids()))


def _lower_keeping_nul(texts):
    """str.lower of string [N] texts (ICU's full Unicode lower-casing).

    tf.strings.lower's UTF-8 path ends a text at its first NUL, and a NUL cannot be an op attribute
    (a join separator): the parts between NULs are lowered and each but the last gets its NUL back.
    """
    parts = tf.strings.split(texts, "\x00")
    values = tf.strings.lower(parts.flat_values, encoding="utf-8")
    values = tf.strings.join([values, tf.where(_last_of_row(parts), "", "\x00")])
    return tf.strings.reduce_join(parts.with_flat_values(values), axis=1)


# ------------------------------------------------------------------------------------------- encoders
class WordPieceEncoder(tf.Module):
    """`tokenization.WordPieceTokenizer.convert_text_to_ids` in the graph.

    The basic tokenizer is `tokenization.BasicTokenizer` step by step: clean-up, CJK spacing, then when
    uncased the full Unicode lower-casing of str.lower (ICU's), NFD and accent stripping, then the
    punctuation split. Word pieces come from `tensorflow_text.WordpieceTokenizer` (the same greedy longest
    match first) on the vocabulary, which the SavedModel keeps as an asset.

    Args:
      tokenizer: a `tokenization.WordPieceTokenizer`.
      asset_dir: a local directory to write the vocabulary asset in (the tokens in id order, as the
        tokenizer read them: stripped, a repeated line dropped); it must exist until the SavedModel
        is written.
    """

    def __init__(self, tokenizer, asset_dir):
        super().__init__(name="word_piece_encoder")
        self.uncased = tokenizer.uncased
        self.unk_token = tokenizer.unk_token
        vocab_path = os.path.join(asset_dir, tokenizer.name)
        tokens = tokenizer.convert_ids_to_tokens(range(tokenizer.get_vocab_size()))
        with open(vocab_path, "w", encoding="utf-8") as f:
            f.write("".join(t + "\n" for t in tokens))
        # A file name given to TextFileInitializer becomes a SavedModel asset.
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                vocab_path,
                tf.string,
                tf.lookup.TextFileIndex.WHOLE_LINE,
                tf.int64,
                tf.lookup.TextFileIndex.LINE_NUMBER,
            ),
            default_value=-1,
        )
        # Longer words are replaced by the unknown token before, so no word reaches this byte limit.
        self.wordpiece = tensorflow_text.WordpieceTokenizer(
            self.table,
            suffix_indicator="##",
            max_bytes_per_word=MAX_CHARS_PER_WORD * _MAX_UTF8_BYTES_PER_CHAR,
            token_out_type=tf.int64,
            unknown_token=self.unk_token,
        )

    def words(self, texts):
        """`tokenization.BasicTokenizer.tokenize` of string [N] texts: RaggedTensor string [N, (words)]."""
        cc = _char_classes()
        texts = _valid_utf8(texts)
        texts = tf.strings.regex_replace(texts, cc["removed"], "")
        texts = tf.strings.regex_replace(texts, cc["space"], " ")
        texts = tf.strings.regex_replace(texts, f"({cc['cjk']})", r" \1 ")
        if self.uncased:
            texts = tf.strings.lower(
                texts, encoding="utf-8"
            )  # no NUL is left (see _lower_keeping_nul)
            texts = tensorflow_text.normalize_utf8(texts, "NFD")
            texts = tf.strings.regex_replace(texts, cc["accent"], "")
        texts = tf.strings.regex_replace(texts, f"({cc['punct']})", r" \1 ")
        # str.split() also splits at the line and paragraph separators, which are no Zs spaces.
        texts = tf.strings.regex_replace(texts, cc["py_space"], " ")
        return tf.strings.split(texts)

    def __call__(self, texts):
        """Piece ids of string [N] texts: RaggedTensor int32 [N, (pieces)]."""
        words = self.words(texts)
        too_long = tf.strings.length(words.flat_values, unit="UTF8_CHAR") > MAX_CHARS_PER_WORD
        words = words.with_flat_values(tf.where(too_long, self.unk_token, words.flat_values))
        ids = self.wordpiece.tokenize(words).merge_dims(1, 2)
        return tf.cast(ids, tf.int32)


class SentencePieceEncoder(tf.Module):
    """`tokenization.SentencePieceTokenizer.convert_text_to_ids` in the graph.

    XLNet's preprocessing (`tokenization.preprocess_text`: whitespace collapsed, quotes made ASCII,
    NFKD and combining marks dropped, lower-cased when uncased), `tensorflow_text.SentencepieceTokenizer`,
    then the digit-comma fix of `tokenization.encode_pieces`.

    Args:
      tokenizer: a `tokenization.SentencePieceTokenizer`; its serialized model becomes a constant of
        the graph (the form `tensorflow_text` loads).
    """

    def __init__(self, tokenizer):
        super().__init__(name="sentence_piece_encoder")
        self.uncased = tokenizer.uncased
        self.sentencepiece = tensorflow_text.SentencepieceTokenizer(
            tokenizer.sp_model.serialized_model_proto(), out_type=tf.string
        )

    def preprocess(self, texts):
        """`tokenization.preprocess_text(text, lower=uncased)` of string [N] texts."""
        cc = _char_classes()
        texts = _valid_utf8(texts)
        texts = tf.strings.regex_replace(texts, f"{cc['py_space']}+", " ")
        texts = tf.strings.regex_replace(texts, "^ | $", "")
        for old, new in (("``", '"'), ("''", '"'), ("\u201d", '"'), ("\u201c", '"')):
            texts = tf.strings.regex_replace(texts, old, new)
        for old in ("\u2018", "\u2019"):
            texts = tf.strings.regex_replace(texts, old, "'")
        texts = tensorflow_text.normalize_utf8(texts, "NFKD")
        texts = tf.strings.regex_replace(texts, cc["combining"], "")
        if self.uncased:
            texts = _lower_keeping_nul(texts)
        return texts

    def _fix_digit_commas(self, pieces):
        """`tokenization.encode_pieces`' fix: a piece ending in a digit and "," is re-encoded without the
        comma, which becomes a piece of its own.

        Args:
          pieces: RaggedTensor string [N, (pieces)].
        Returns:
          RaggedTensor string [N, (pieces)].
        """
        underline = tokenization.SPIECE_UNDERLINE
        flat = pieces.flat_values
        fix = tf.strings.regex_full_match(flat, f"(?s).*{_char_classes()['digit']},")
        body = tf.strings.regex_replace(tf.strings.regex_replace(flat, ",$", ""), underline, "")
        body = tf.where(fix, body, "")
        sub = self.sentencepiece.tokenize(body)  # no pieces for the "" of the other pieces
        values, rows = sub.flat_values, sub.value_rowids()
        # Re-encoding starts a word the original piece did not start: drop that marker (or the piece
        # that is only the marker).
        first = tf.equal(tf.range(tf.size(values, tf.int64)), tf.gather(sub.row_starts(), rows))
        starts_word = tf.strings.regex_full_match(flat, f"(?s){underline}.*")
        strip = (
            first
            & ~tf.gather(starts_word, rows)
            & tf.strings.regex_full_match(values, f"(?s){underline}.*")
        )
        values = tf.where(strip, tf.strings.regex_replace(values, f"^{underline}", ""), values)
        keep = tf.strings.length(values) > 0
        sub = tf.RaggedTensor.from_value_rowids(
            tf.boolean_mask(values, keep),
            tf.boolean_mask(rows, keep),
            nrows=tf.size(flat, tf.int64),
        )
        own = tf.RaggedTensor.from_row_lengths(tf.boolean_mask(flat, ~fix), tf.cast(~fix, tf.int64))
        comma = tf.RaggedTensor.from_row_lengths(
            tf.fill([tf.reduce_sum(tf.cast(fix, tf.int32))], ","), tf.cast(fix, tf.int64)
        )
        replaced = tf.concat([own, sub, comma], axis=1)
        return pieces.with_flat_values(replaced).merge_dims(1, 2)

    def __call__(self, texts):
        """Piece ids of string [N] texts: RaggedTensor int32 [N, (pieces)]."""
        pieces = self._fix_digit_commas(self.sentencepiece.tokenize(self.preprocess(texts)))
        return tf.cast(self.sentencepiece.string_to_id(pieces), tf.int32)


def text_encoder(tokenizer, asset_dir):
    """The in-graph encoder of a `tokenization` tokenizer (see `WordPieceEncoder` for `asset_dir`)."""
    if tokenizer.tokenizer_type == "word_piece":
        return WordPieceEncoder(tokenizer, asset_dir)
    return SentencePieceEncoder(tokenizer)


# ------------------------------------------------------------------------------------- input layouts
def _prefix(ids, lengths):
    """The first `lengths` [N] ids of each row of RaggedTensor `ids` [N, (n)]."""
    return tf.ragged.boolean_mask(ids, tf.ragged.range(ids.row_lengths()) < lengths[:, None])


def _column(value, n):
    """RaggedTensor int32 [n, (1)] of `value`."""
    return tf.RaggedTensor.from_tensor(tf.fill([n, 1], value))


def _assemble(ids_a, ids_b, with_b, special_ids, max_seq_length):
    """`[cls] A [sep] (B [sep])` padded to max_seq_length, the layout of every task of the project.

    Args:
      ids_a, ids_b: RaggedTensor int32 [N, (n)], already truncated to fit; ids_b has no pieces in
        the rows without B.
      with_b: bool [N]: the rows that get B and its [sep].
    Returns:
      (input_ids int32 [N, L], segment_ids int32 [N, L], input_mask float32 [N, L], 1.0 = padding).
    """
    n = tf.shape(with_b)[0]
    sep_b = tf.RaggedTensor.from_row_lengths(
        tf.fill([tf.reduce_sum(tf.cast(with_b, tf.int32))], special_ids.sep_id),
        tf.cast(with_b, tf.int64),
    )
    input_ids = tf.concat(
        [_column(special_ids.cls_id, n), ids_a, _column(special_ids.sep_id, n), ids_b, sep_b], 1
    )
    segment_ids = tf.concat(
        [
            _column(data_utils.SEG_ID_CLS, n),
            tf.ones_like(ids_a) * data_utils.SEG_ID_A,
            _column(data_utils.SEG_ID_A, n),
            tf.ones_like(ids_b) * data_utils.SEG_ID_B,
            tf.ones_like(sep_b) * data_utils.SEG_ID_B,
        ],
        1,
    )
    shape = [None, max_seq_length]
    real = tf.ones_like(input_ids, tf.float32).to_tensor(0.0, shape=shape)
    return (
        input_ids.to_tensor(special_ids.pad_id, shape=shape),
        segment_ids.to_tensor(data_utils.SEG_ID_PAD, shape=shape),
        1.0 - real,
    )


def pair_lengths(len_a, len_b, max_length):
    """The lengths `classifier_utils.truncate_seq_pair` leaves: it pops from the longer list (B on ties)
    until the total is at most `max_length`.

    Args:
      len_a, len_b: int [N]; max_length: int.
    Returns:
      (int [N], int [N]).
    """
    shorter = tf.minimum(len_a, len_b)
    fits = len_a + len_b <= max_length
    # Only the longer list is cut when the shorter one fits in half; else both end at the half.
    one_cut = 2 * shorter <= max_length
    a_shorter = len_a <= len_b
    new_a = tf.where(one_cut, tf.where(a_shorter, len_a, max_length - len_b), (max_length + 1) // 2)
    new_b = tf.where(one_cut, tf.where(a_shorter, max_length - len_a, len_b), max_length // 2)
    return tf.where(fits, len_a, new_a), tf.where(fits, len_b, new_b)


def classifier_inputs(ids_a, ids_b, special_ids, max_seq_length):
    """`classifier_utils.convert_single_example` in the graph.

    Args:
      ids_a: RaggedTensor int32 [N, (n)], the pieces of text A.
      ids_b: the same of text B, or None for single-text tasks; a row without pieces gets the
        single-text layout, as an empty text B does in classifier_utils.
      special_ids: `data_utils.SpecialIds`.
    Returns:
      (input_ids int32 [N, L], segment_ids int32 [N, L], input_mask float32 [N, L], 1.0 = padding).
    """
    len_a = ids_a.row_lengths()
    if ids_b is None:
        ids_b = tf.RaggedTensor.from_row_lengths(tf.zeros([0], tf.int32), tf.zeros_like(len_a))
    len_b = ids_b.row_lengths()
    with_b = len_b > 0
    pair_a, pair_b = pair_lengths(len_a, len_b, max_seq_length - 3)
    keep_a = tf.where(with_b, pair_a, tf.minimum(len_a, max_seq_length - 2))
    keep_b = tf.where(with_b, pair_b, 0)
    return _assemble(
        _prefix(ids_a, keep_a), _prefix(ids_b, keep_b), with_b, special_ids, max_seq_length
    )


def race_inputs(qa_ids, passage_ids, special_ids, max_seq_length, max_qa_length):
    """`race_utils.encode_choice` in the graph: `[cls] QA [sep] passage [sep]`, QA keeping its last
    max_qa_length pieces and the passage its first ones that fit.

    Args:
      qa_ids, passage_ids: RaggedTensor int32 [N, (n)], one row per choice.
    Returns:
      (input_ids int32 [N, L], segment_ids int32 [N, L], input_mask float32 [N, L], 1.0 = padding).
    """
    len_qa = qa_ids.row_lengths()
    skip = tf.maximum(len_qa - max_qa_length, 0)
    qa_ids = tf.ragged.boolean_mask(qa_ids, tf.ragged.range(len_qa) >= skip[:, None])
    room = max_seq_length - 3 - qa_ids.row_lengths()
    with_b = tf.ones_like(room, tf.bool)
    return _assemble(qa_ids, _prefix(passage_ids, room), with_b, special_ids, max_seq_length)


def race_qa_texts(question, options):
    """`race_utils.qa_text` of string [N] questions and their string [N, C] options: string [N, C].

    A question with `_` gets the option in every `_`; any other is followed by " " and the option.
    """
    n_choice = options.shape[1]
    question = tf.repeat(question, n_choice)
    options = tf.reshape(options, [-1])
    parts = tf.strings.split(question, "_")  # [N*C, (k)]
    # part_0 option part_1 option ... part_k.
    fill = tf.where(_last_of_row(parts), "", tf.gather(options, parts.value_rowids()))
    filled = tf.strings.reduce_join(
        parts.with_flat_values(tf.strings.join([parts.flat_values, fill])), axis=1
    )
    has_blank = tf.strings.regex_full_match(question, "(?s).*_.*")
    qa = tf.where(has_blank, filled, tf.strings.join([question, options], " "))
    return tf.reshape(qa, [-1, n_choice])


def pad_to_length(x, length, value, axis=1):
    """Pads `x` along `axis` with `value` to `length`.

    Raises (when run): InvalidArgumentError for inputs longer than `length`.
    """
    n = tf.shape(x)[axis]
    check = tf.debugging.assert_less_equal(
        n, length, message=f"inputs are longer than max_seq_length={length}"
    )
    with tf.control_dependencies([check]):
        paddings = [[0, 0]] * x.shape.rank
        paddings[axis] = [0, length - n]
        padded = tf.pad(x, paddings, constant_values=value)
    shape = x.shape.as_list()
    shape[axis] = length
    return tf.ensure_shape(padded, shape)


# --------------------------------------------------------------------------------------------- heads
class ClassificationHead:
    """Classification or regression on the pooled summary, as classifier.py's Task (no dropout).

    Args:
      model: a `modeling.FunnelTFM`.
      labels: the label strings in id order (`processor.labels`), or None for regression.
      scope: the head's variable scope (classifier.py: --cls_scope or the task name).
      precision: compute dtype name; truncate_seq: as in training.
    """

    task = "classification"

    def __init__(self, model, labels, scope, precision="float32", truncate_seq=True):
        self.model = model
        self.labels = None if labels is None else list(labels)
        self.scope = scope
        self.precision = precision
        self.truncate_seq = truncate_seq

    def __call__(self, input_ids, segment_ids, input_mask):
        """Outputs of int32 [B, L] ids and segment ids and float32 [B, L] input_mask.

        Returns:
          classification: `logits` float32 [B, n_class], `probabilities` float32 [B, n_class] (softmax),
          `label` string [B] (the argmax's label); regression: `predictions` float32 [B].
        """
        summary, _ = self.model.get_pooled_output(
            input_ids,
            False,
            seg_id=segment_ids,
            input_mask=input_mask,
            precision=self.precision,
            truncate_seq=self.truncate_seq,
        )
        batch = tf.shape(input_ids)[:1]
        # The heads come with their losses; the zero labels only feed the unused loss.
        if self.labels is None:
            _, predictions = self.model.regression_loss(summary, tf.zeros(batch), False, self.scope)
            return {"predictions": predictions}
        _, logits = self.model.classification_loss(
            summary, tf.zeros(batch, tf.int32), len(self.labels), False, self.scope
        )
        label = tf.gather(tf.constant(self.labels), tf.argmax(logits, axis=-1))
        return {"logits": logits, "probabilities": tf.nn.softmax(logits), "label": label}


class RaceHead:
    """RACE multiple choice, as race.py's Task (no dropout): one score per choice.

    Args:
      model: a `modeling.FunnelTFM`; precision, truncate_seq: as in training.
    """

    task = "race"

    def __init__(self, model, precision="float32", truncate_seq=True):
        self.model = model
        self.precision = precision
        self.truncate_seq = truncate_seq

    def __call__(self, input_ids, segment_ids, input_mask):
        """Outputs of int32 [B, NUM_CHOICES, L] ids and segment ids and float32 input_mask.

        Returns:
          `logits` float32 [B, NUM_CHOICES], `probabilities` float32 [B, NUM_CHOICES] (softmax).
        """
        n_choice = race_utils.NUM_CHOICES
        length = input_ids.shape[-1]

        def flat(x):
            return tf.reshape(x, [-1, n_choice * length])

        _, logits = self.model.get_race_loss(
            tf.zeros(tf.shape(input_ids)[:1], tf.int32),
            flat(input_ids),
            False,
            seg_id=flat(segment_ids),
            input_mask=flat(input_mask),
            precision=self.precision,
            n_choice=n_choice,
            truncate_seq=self.truncate_seq,
        )
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}


class SquadHead:
    """SQuAD span prediction, as squad.py's predict (the beam of `get_squad_predictions`).

    Args:
      model: a `modeling.FunnelTFM`; start_n_top, end_n_top: beam sizes; use_answer_class,
        use_masked_loss, conditional_end: the head as trained; precision: compute dtype name.
    """

    task = "squad"

    def __init__(
        self,
        model,
        start_n_top=5,
        end_n_top=5,
        use_answer_class=True,
        use_masked_loss=True,
        conditional_end=True,
        precision="float32",
    ):
        self.model = model
        self.start_n_top, self.end_n_top = start_n_top, end_n_top
        self.head = dict(
            use_answer_class=use_answer_class,
            use_masked_loss=use_masked_loss,
            conditional_end=conditional_end,
            precision=precision,
        )

    def __call__(self, input_ids, segment_ids, input_mask, p_mask):
        """Outputs of int32 [B, L] ids and segment ids, float32 [B, L] input_mask and p_mask (1.0 where
        no answer may start or end); `<cls>` is at position 0, as squad_prepro lays every window out.

        Returns:
          `start_top_log_probs` float32 and `start_top_index` int32 [B, start_n_top];
          `end_top_log_probs` float32 and `end_top_index` int32 [B, start_n_top * end_n_top]
          (start-major); `cls_logits` float32 [B] (positive = no answer).
        """
        features = {
            "input_ids": input_ids,
            "segment_ids": segment_ids,
            "input_mask": input_mask,
            "p_mask": p_mask,
            "cls_index": tf.zeros(tf.shape(input_ids)[:1], tf.int32),
        }
        return self.model.get_squad_predictions(
            features, self.start_n_top, self.end_n_top, **self.head
        )


def build_variables(head, max_seq_length):
    """Creates the variables of `head` and its model with one eager call on a batch of padding."""
    shape = [1, max_seq_length]
    if head.task == "race":
        shape = [1, race_utils.NUM_CHOICES, max_seq_length]
    ids, mask = tf.zeros(shape, tf.int32), tf.zeros(shape)
    head(ids, ids, mask, *([mask] if head.task == "squad" else []))


# ------------------------------------------------------------------------------------------- serving
def _ids_spec(*shape):
    return tf.TensorSpec(shape, tf.int32)


def _mask_spec(*shape):
    return tf.TensorSpec(shape, tf.float32)


def _function(python_function, input_signature):
    # No autograph: the model is plain Python control flow, and converting it triples the tracing time.
    return tf.function(python_function, input_signature, autograph=False)


class ServingModule(tf.Module):
    """The exported object: the model's variables, the encoder's resources, and the signatures.

    Args:
      head: a `ClassificationHead`, `RaceHead` or `SquadHead` of a model whose variables exist (a call
        made them) and hold the finetuned values.
      special_ids: `data_utils.SpecialIds` of the tokenizer (cls, sep, pad ids).
      max_seq_length: L, the length the model was finetuned with (of each choice for RACE).
      encoder: a `text_encoder`, or None for no text signatures (SQuAD has none).
      text_pair: classification: `serve_text` takes `text_b` besides `text_a`.
      max_qa_length: RACE: the most question+option pieces of a choice.
    """

    def __init__(
        self, head, special_ids, max_seq_length, encoder=None, text_pair=False, max_qa_length=None
    ):
        super().__init__(name="funnel_serving")
        self.model = head.model
        self.encoder = encoder
        self._head = head
        self._special_ids = special_ids
        self._max_seq_length = max_seq_length
        self._text_pair = text_pair
        self._max_qa_length = max_qa_length

    def _padded(self, input_ids, segment_ids, input_mask, axis=1):
        length = self._max_seq_length
        return (
            pad_to_length(input_ids, length, self._special_ids.pad_id, axis),
            pad_to_length(segment_ids, length, data_utils.SEG_ID_PAD, axis),
            pad_to_length(input_mask, length, 1.0, axis),
        )

    def _classifier_inputs(self, ids_a, ids_b=None):
        names = ("input_ids", "segment_ids", "input_mask")
        inputs = classifier_inputs(ids_a, ids_b, self._special_ids, self._max_seq_length)
        return dict(zip(names, inputs, strict=True))

    def _race_inputs(self, article, question, options):
        n_choice = options.shape[1]
        qa_ids = self.encoder(tf.reshape(race_qa_texts(question, options), [-1]))
        # The article once per question, its pieces once per choice.
        passage_ids = tf.gather(
            self.encoder(article), tf.repeat(tf.range(tf.shape(article)[0]), n_choice)
        )
        inputs = race_inputs(
            qa_ids, passage_ids, self._special_ids, self._max_seq_length, self._max_qa_length
        )
        names = ("input_ids", "segment_ids", "input_mask")
        shape = [-1, n_choice, self._max_seq_length]
        return {name: tf.reshape(x, shape) for name, x in zip(names, inputs, strict=True)}

    def _functions(self):
        """name -> tf.function with its input signature, for the task of the head."""
        head, ids, mask, text = self._head, tf.int32, tf.float32, tf.TensorSpec([None], tf.string)
        if head.task == "squad":
            specs = [tf.TensorSpec([None, None], d) for d in (ids, ids, mask, mask)]

            def serve_squad(input_ids, segment_ids, input_mask, p_mask):
                p_mask = pad_to_length(p_mask, self._max_seq_length, 1.0)
                return head(*self._padded(input_ids, segment_ids, input_mask), p_mask)

            return {"serving_default": _function(serve_squad, specs)}
        if head.task == "race":
            n = race_utils.NUM_CHOICES
            specs = [tf.TensorSpec([None, n, None], d) for d in (ids, ids, mask)]
            text_specs = [text, text, tf.TensorSpec([None, n], tf.string)]

            def serve_race(input_ids, segment_ids, input_mask):
                return head(*self._padded(input_ids, segment_ids, input_mask, axis=2))

            def tokenize_race(article, question, options):
                return self._race_inputs(article, question, options)

            def serve_race_text(article, question, options):
                return head(**self._race_inputs(article, question, options))

            functions = {
                "serving_default": _function(serve_race, specs),
                "tokenize": _function(tokenize_race, text_specs),
                "serve_text": _function(serve_race_text, text_specs),
            }
        else:
            specs = [tf.TensorSpec([None, None], d) for d in (ids, ids, mask)]

            def serve(input_ids, segment_ids, input_mask):
                return head(*self._padded(input_ids, segment_ids, input_mask))

            def tokenize_pair(text_a, text_b):
                return self._classifier_inputs(self.encoder(text_a), self.encoder(text_b))

            def serve_pair_text(text_a, text_b):
                return head(**tokenize_pair(text_a, text_b))

            def tokenize_single(text_a):
                return self._classifier_inputs(self.encoder(text_a))

            def serve_single_text(text_a):
                return head(**tokenize_single(text_a))

            if self._text_pair:
                tokenize, serve_text, text_specs = tokenize_pair, serve_pair_text, [text, text]
            else:
                tokenize, serve_text, text_specs = tokenize_single, serve_single_text, [text]
            functions = {
                "serving_default": _function(serve, specs),
                "tokenize": _function(tokenize, text_specs),
                "serve_text": _function(serve_text, text_specs),
            }
        if self.encoder is None:
            return {"serving_default": functions["serving_default"]}
        return functions

    def signatures(self):
        """name -> concrete function: serving_default, and tokenize and serve_text with an encoder.

        The functions become attributes of the module, so `tf.saved_model.load` restores them too.
        """
        signatures = {}
        for name, function in self._functions().items():
            setattr(self, name, function)
            signatures[name] = function.get_concrete_function()
        return signatures


def save(module, export_dir, version, overwrite=False):
    """Writes the SavedModel of `module` to `{export_dir}/{version}`, the layout TF Serving watches.

    The SavedModel is written beside under a hidden temporary name and renamed when complete, so a
    server never loads half of it.

    Args:
      module: a `ServingModule`.
      export_dir: the model's base directory (local or gs://).
      version: positive int.
      overwrite: replace an existing `{export_dir}/{version}`; else that is a ValueError.
    Returns:
      The SavedModel directory.
    """
    path = os.path.join(export_dir, str(version))
    if tf.io.gfile.exists(path) and not overwrite:
        raise ValueError(f"{path} exists: pass --overwrite or another --version")
    tf.io.gfile.makedirs(export_dir)
    absl_logger = py_logging.getLogger("absl")
    level = absl_logger.level
    # Plain TensorFlow ops, no XLA kernels: TF Serving compiles none unless started with
    # --xla_cpu_compilation_enabled.
    with ops.xla_fusion(False), data_utils.atomic_output_path(path) as tmp_path:
        signatures = module.signatures()
        tf.saved_model.save(module, tmp_path, signatures=signatures)
        # TensorFlow 2.21's saver leaves absl's logger at WARNING, which silenced every later INFO line.
        absl_logger.setLevel(level)
        if tf.io.gfile.exists(path):
            tf.io.gfile.rmtree(path)
    logging.info("Wrote %s with the signatures %s.", path, ", ".join(signatures))
    return path
