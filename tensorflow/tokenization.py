"""Tokenization with BERT word pieces or sentencepiece (SPEC §8).

`get_tokenizer(tokenizer_type, tokenizer_path, uncased)` returns a `WordPieceTokenizer` (BERT
`FullTokenizer` semantics) or a `SentencePieceTokenizer` (XLNet-style preprocessing). Both expose
the same methods; `data_utils.setup_special_ids` reads the special-token ids from either.
"""

import functools
import os
import unicodedata

import numpy as np
import sentencepiece as spm
import tensorflow as tf
from absl import logging

import data_utils

TOKENIZER_TYPES = ("word_piece", "sent_piece")

SPIECE_UNDERLINE = "\u2581"

# BERT spells the function tokens this way; `[UNK]`, like `<unk>`, is not a function token.
_BRACKET_FUNC_TOKENS = frozenset(("[CLS]", "[SEP]", "[PAD]", "[MASK]"))

# The original's sentencepiece start-of-word punctuation set. Its literal repeats `"` where `'`
# was probably meant, so `'` is not a word start; kept so boundaries match the original data.
_SPM_START_PUNCT = frozenset('!"#$%&()*+,-./:;?@[\\]^_`{|}~')

_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def _is_whitespace(char):
    # \t, \n and \r are control characters by category, but BERT treats them as spaces.
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char):
    if char in "\t\n\r":
        return False
    return unicodedata.category(char) in ("Cc", "Cf")


def _is_punctuation(char):
    # Every non-alphanumeric ASCII character counts, e.g. "^", "$" and "`", which Unicode does
    # not class as punctuation.
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_cjk(char):
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


class _CharMap(dict):
    """A `str.translate` table filled lazily: each code point is classified once per process."""

    def __init__(self, rule):
        super().__init__()
        self._rule = rule

    def __missing__(self, cp):
        value = self._rule(chr(cp))
        self[cp] = value
        return value


def _clean_rule(char):
    if char in ("\x00", "\ufffd") or _is_control(char):
        return None
    if _is_whitespace(char):
        return " "
    if _is_cjk(char):
        return f" {char} "
    return char


def _split_punct_rule(char):
    return f" {char} " if _is_punctuation(char) else char


def _strip_accent_split_punct_rule(char):
    if unicodedata.category(char) == "Mn":
        return None
    return _split_punct_rule(char)


# Shared by all tokenizers: the tables only grow with the number of distinct characters seen.
_CLEAN_MAP = _CharMap(_clean_rule)
_SPLIT_PUNCT_MAP = _CharMap(_split_punct_rule)
_STRIP_ACCENT_SPLIT_PUNCT_MAP = _CharMap(_strip_accent_split_punct_rule)
_DROP_COMBINING_MAP = _CharMap(lambda char: None if unicodedata.combining(char) else char)


def _to_str(text):
    if isinstance(text, bytes):
        return text.decode("utf-8", "ignore")
    if isinstance(text, str):
        return text
    raise ValueError(f"expected str or bytes text, got {type(text).__name__}")


class BasicTokenizer:
    """BERT's basic tokenizer: cleanup, CJK spacing, optional lower-casing, punctuation split.

    Every step of BERT's per-character loops is a per-character map, so they run as
    `str.translate` passes over the whole text; the word list is identical.
    """

    def __init__(self, uncased=True):
        self.uncased = uncased

    def tokenize(self, text):
        """Splits `text` (str, or utf-8 bytes) into a list of words and punctuation marks."""
        text = _to_str(text).translate(_CLEAN_MAP)
        if self.uncased:
            # BERT lower-cases word by word; str.lower's only context rule (Greek final sigma)
            # stops at whitespace, so lowering the whole text gives the same words.
            text = text.lower()
            if not text.isascii():
                text = unicodedata.normalize("NFD", text)
            return text.translate(_STRIP_ACCENT_SPLIT_PUNCT_MAP).split()
        return text.translate(_SPLIT_PUNCT_MAP).split()


def _read_file(path, what):
    """Returns the bytes of `path` (local or gs://); a missing or unreadable file is a ValueError."""
    if not path:
        raise ValueError(f"no {what} file given (tokenizer_path is empty)")
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    except (tf.errors.OpError, OSError) as e:
        raise ValueError(f"cannot read {what} {path}: {e}") from None


def load_vocab(vocab_file):
    """Reads a word-piece vocabulary: one token per line, id = order of first appearance.

    Returns:
      dict token -> id. Lines are stripped; a repeated token keeps its first id and does not
      take an id of its own (the original's behaviour).
    """
    data = _read_file(vocab_file, "vocabulary")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{vocab_file}:{line}: not valid UTF-8") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    vocab = {}
    for line in lines:
        vocab.setdefault(line.strip(), len(vocab))
    if not vocab:
        raise ValueError(f"vocabulary {vocab_file} is empty")
    return vocab


class Tokenizer:
    """What both tokenizer types share.

    Attributes:
      tokenizer_type: "word_piece" or "sent_piece".
      path: the vocabulary / model file it was loaded from.
      name: basename of `path`, usable in file names.
      uncased: whether text is lower-cased and accent-stripped before tokenization.
    """

    tokenizer_type = None

    def __init__(self, path, uncased):
        self.path = path
        self.name = os.path.basename(path.rstrip("/"))
        self.uncased = uncased

    def tokenize(self, text):
        """Same as `convert_text_to_tokens`."""
        return self.convert_text_to_tokens(text)

    def convert_text_to_ids(self, text):
        """Tokenizes `text` (str) into a list of int ids."""
        return self.convert_tokens_to_ids(self.convert_text_to_tokens(text))

    def is_func_token(self, token):
        """True for function tokens: `<...>` except `<unk>`, and `[CLS]`, `[SEP]`, `[PAD]`, `[MASK]`."""
        if token in _BRACKET_FUNC_TOKENS:
            return True
        return token != "<unk>" and token.startswith("<") and token.endswith(">")

    def is_func_id(self, token_id):
        return self.is_func_token(self.convert_ids_to_tokens([token_id])[0])

    def _begins_word(self, token):
        raise NotImplementedError

    def is_start_token(self, token):
        """True if `token` starts a word, as the pretraining `boundary` feature defines it.

        Word piece: not `##`-prefixed; sentencepiece: `▁`-prefixed or ASCII punctuation. Function
        tokens (see `is_func_token`) never start a word.
        """
        return self._begins_word(token) and not self.is_func_token(token)

    @functools.cached_property
    def word_start_mask(self):
        """bool numpy array [vocab_size]: `is_start_token` of every id, computed once."""
        tokens = self.convert_ids_to_tokens(range(self.get_vocab_size()))
        return np.array([self.is_start_token(t) for t in tokens], dtype=bool)

    def is_start_id(self, token_id):
        """`is_start_token` of the token with id `token_id` in [0, vocab_size)."""
        return bool(self.word_start_mask[token_id])


class WordPieceTokenizer(Tokenizer):
    """BERT `FullTokenizer`: `BasicTokenizer` then greedy longest-match-first word pieces.

    The unknown token is `<unk>`; a BERT-style vocabulary that has `[UNK]` and no `<unk>` uses
    `[UNK]`. A word longer than `max_input_chars_per_word` characters, or one that cannot be
    covered by vocabulary pieces, becomes the single unknown token.
    """

    tokenizer_type = "word_piece"

    def __init__(self, vocab_file, uncased=True, max_input_chars_per_word=200, cache_size=1 << 18):
        super().__init__(vocab_file, uncased)
        self.vocab = load_vocab(vocab_file)
        self._inv_vocab = list(self.vocab)
        if "<unk>" not in self.vocab and "[UNK]" in self.vocab:
            self.unk_token = "[UNK]"
        else:
            self.unk_token = "<unk>"
            if "<unk>" not in self.vocab:
                logging.warning("Vocabulary %s has neither <unk> nor [UNK].", vocab_file)
        self.basic_tokenizer = BasicTokenizer(uncased)
        self.max_input_chars_per_word = max_input_chars_per_word
        # No piece is longer than the longest vocabulary entry, so the greedy search starts there.
        self._max_first_len = max(map(len, self.vocab))
        self._max_cont_len = max((len(t) - 2 for t in self.vocab if t.startswith("##")), default=0)
        self._cache_size = cache_size
        self._word_pieces = self._new_word_cache()

    def _new_word_cache(self):
        # Word frequencies are Zipfian: most words of a corpus hit this cache.
        return functools.lru_cache(maxsize=self._cache_size)(self._split_word)

    def __getstate__(self):
        # The cache wraps a bound method and cannot be pickled (e.g. to worker processes).
        state = self.__dict__.copy()
        del state["_word_pieces"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._word_pieces = self._new_word_cache()

    def _split_word(self, word):
        """Greedy longest-match-first word pieces of one word, as a tuple of str."""
        n = len(word)
        if n > self.max_input_chars_per_word:
            return (self.unk_token,)
        vocab = self.vocab
        pieces = []
        start = 0
        while start < n:
            if start == 0:
                end = min(n, self._max_first_len)
                while end > 0 and word[:end] not in vocab:
                    end -= 1
                piece = word[:end]
            else:
                end = min(n, start + self._max_cont_len)
                while end > start and "##" + word[start:end] not in vocab:
                    end -= 1
                piece = "##" + word[start:end]
            if end == start:
                return (self.unk_token,)
            pieces.append(piece)
            start = end
        return tuple(pieces)

    def convert_text_to_tokens(self, text):
        """Tokenizes `text` (str, or utf-8 bytes) into a list of word pieces."""
        pieces = []
        for word in self.basic_tokenizer.tokenize(text):
            pieces.extend(self._word_pieces(word))
        return pieces

    def convert_tokens_to_ids(self, tokens):
        """List of int ids; a token outside the vocabulary raises KeyError."""
        vocab = self.vocab
        return [vocab[t] for t in tokens]

    def convert_ids_to_tokens(self, ids):
        """List of tokens; an id outside [0, vocab_size) raises KeyError."""
        inv = self._inv_vocab
        tokens = []
        for i in ids:
            if not 0 <= i < len(inv):
                raise KeyError(f"id {i} is outside the vocabulary {self.path} (size {len(inv)})")
            tokens.append(inv[i])
        return tokens

    def convert_tokens_to_text(self, tokens):
        """Joins tokens with spaces and glues `##` continuations to the previous piece."""
        return " ".join(tokens).replace(" ##", "")

    def convert_ids_to_text(self, ids):
        return self.convert_tokens_to_text(self.convert_ids_to_tokens(ids))

    def get_vocab_size(self):
        return len(self.vocab)

    def get_token_id(self, token):
        """Id of `token`; KeyError if the vocabulary lacks it."""
        try:
            return self.vocab[token]
        except KeyError:
            raise KeyError(f"{token!r} is not in the vocabulary {self.path}") from None

    def _begins_word(self, token):
        return not token.startswith("##")


def preprocess_text(inputs, lower=False, remove_space=True, keep_accents=False):
    """XLNet text normalisation applied before sentencepiece.

    Collapses whitespace runs (if `remove_space`), maps ``, '' and curly quotes to ASCII quotes,
    drops combining marks after NFKD (unless `keep_accents`), lower-cases (if `lower`).
    """
    outputs = " ".join(inputs.strip().split()) if remove_space else inputs
    outputs = outputs.replace("``", '"').replace("''", '"')
    outputs = outputs.replace("\u201d", '"').replace("\u201c", '"')
    outputs = outputs.replace("\u2018", "'").replace("\u2019", "'")
    if not keep_accents and not outputs.isascii():
        outputs = unicodedata.normalize("NFKD", outputs).translate(_DROP_COMBINING_MAP)
    if lower:
        outputs = outputs.lower()
    return outputs


def encode_pieces(sp_model, text):
    """`sp_model` pieces of `text`, with XLNet's fix for pieces that end in a digit and a comma.

    Sentencepiece models trained on web text merge "1990," into one piece; such a piece is
    re-encoded without its comma and the comma becomes a piece of its own, so numbers tokenize
    the same with or without a following comma.
    """
    pieces = sp_model.encode(text, out_type=str)
    if "," not in text:
        return pieces
    fixed = []
    for piece in pieces:
        if len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit():
            sub = sp_model.encode(piece[:-1].replace(SPIECE_UNDERLINE, ""), out_type=str)
            # Re-encoding adds a word-start marker the original piece did not have.
            if piece[0] != SPIECE_UNDERLINE and sub[0][0] == SPIECE_UNDERLINE:
                if len(sub[0]) == 1:
                    sub = sub[1:]
                else:
                    sub[0] = sub[0][1:]
            fixed.extend(sub)
            fixed.append(piece[-1])
        else:
            fixed.append(piece)
    return fixed


class SentencePieceTokenizer(Tokenizer):
    """Sentencepiece model with XLNet preprocessing (`preprocess_text`, `encode_pieces`)."""

    tokenizer_type = "sent_piece"

    def __init__(self, model_file, uncased=True):
        super().__init__(model_file, uncased)
        proto = _read_file(model_file, "sentencepiece model")
        self.sp_model = spm.SentencePieceProcessor()
        try:
            self.sp_model.LoadFromSerializedProto(proto)
        except (RuntimeError, OSError) as e:
            raise ValueError(f"{model_file} is not a sentencepiece model: {e}") from None
        self._unk_id = self.sp_model.unk_id()
        self._unk_piece = self.sp_model.id_to_piece(self._unk_id)

    def convert_text_to_tokens(self, text):
        """Tokenizes `text` (str, or utf-8 bytes) into a list of sentence pieces."""
        return encode_pieces(self.sp_model, preprocess_text(_to_str(text), lower=self.uncased))

    def convert_tokens_to_ids(self, tokens):
        """List of int ids; an unknown piece maps to the unk id (sentencepiece semantics)."""
        return self.sp_model.piece_to_id(list(tokens))

    def convert_ids_to_tokens(self, ids):
        return self.sp_model.id_to_piece([int(i) for i in ids])

    def convert_tokens_to_text(self, tokens):
        return self.sp_model.decode_pieces(list(tokens))

    def convert_ids_to_text(self, ids):
        return self.sp_model.decode_ids([int(i) for i in ids])

    def get_vocab_size(self):
        return self.sp_model.get_piece_size()

    def get_token_id(self, token):
        """Id of the piece `token`; KeyError if the model lacks it.

        The original returned the unk id for a missing piece (SPEC §10.24), so absent special
        tokens silently became `<unk>`; here that is a KeyError, like the word-piece tokenizer.
        """
        token_id = self.sp_model.piece_to_id(token)
        if token_id == self._unk_id and token != self._unk_piece:
            raise KeyError(f"{token!r} is not in the sentencepiece model {self.path}")
        return token_id

    def _begins_word(self, token):
        return token.startswith(SPIECE_UNDERLINE) or token in _SPM_START_PUNCT


# The vocabulary files a checkpoint directory may hold, in the order they are looked for (then *.model).
MODEL_DIR_VOCABULARIES = ("vocab.uncased.txt", "vocab.cased.txt", "vocab.txt")


def vocabulary_settings(path):
    """(tokenizer_type, uncased) that a vocabulary file's name implies: `*.model` is sentencepiece, any
    other file word-piece; cased when the name says "cased" and not "uncased" (`vocab.cased.txt`,
    `spiece.cased.model`), uncased otherwise."""
    name = os.path.basename(path).lower()
    tokenizer_type = "sent_piece" if name.endswith(".model") else "word_piece"
    return tokenizer_type, "uncased" in name or "cased" not in name


def get_model_dir_tokenizer(model_dir, tokenizer_type=None, tokenizer_path=None, uncased=None):
    """The tokenizer of a checkpoint directory (`FunnelTFM.from_pretrained`, the exports).

    Args:
      model_dir: the directory; searched for `MODEL_DIR_VOCABULARIES`, then `*.model`, when
        `tokenizer_path` is None (only files of `tokenizer_type` when it is given).
      tokenizer_type, uncased: default what the vocabulary's name implies (`vocabulary_settings`).
      tokenizer_path: the vocabulary file; default the one found in `model_dir`.
    Raises:
      ValueError: no vocabulary in `model_dir`, or what `get_tokenizer` raises.
    """
    if not tokenizer_path:
        candidates = [os.path.join(model_dir, name) for name in MODEL_DIR_VOCABULARIES]
        candidates += sorted(tf.io.gfile.glob(os.path.join(model_dir, "*.model")))
        found = [
            p
            for p in candidates
            if tokenizer_type in (None, vocabulary_settings(p)[0]) and tf.io.gfile.exists(p)
        ]
        if not found:
            raise ValueError(
                f"no vocabulary in {model_dir} (looked for {', '.join(MODEL_DIR_VOCABULARIES)}, "
                "*.model): pass tokenizer_path"
            )
        tokenizer_path = found[0]
    implied_type, implied_uncased = vocabulary_settings(tokenizer_path)
    return get_tokenizer(
        tokenizer_type or implied_type,
        tokenizer_path,
        implied_uncased if uncased is None else uncased,
    )


def get_tokenizer(tokenizer_type=None, tokenizer_path=None, uncased=None):
    """Loads a word-piece or sentencepiece tokenizer.

    Called with no argument at all (the seed's `tokenization.get_tokenizer()`), it reads the parsed flags
    `--tokenizer_type`, `--tokenizer_path` and `--uncased`.

    Args:
      tokenizer_type: "word_piece" (vocabulary file, one token per line; the default) or "sent_piece"
        (sentencepiece .model file).
      tokenizer_path: local or gs:// path of that file.
      uncased: lower-case and strip accents before tokenizing (default True).

    Returns:
      A `WordPieceTokenizer` or `SentencePieceTokenizer`.

    Raises:
      ValueError: unknown type, or a missing or unreadable file; flags needed but not parsed.
    """
    if tokenizer_type is None and tokenizer_path is None and uncased is None:
        values = data_utils.parsed_flag_values(
            "tokenization.get_tokenizer()", ("tokenizer_type", "tokenizer_path", "uncased")
        )
        tokenizer_type, tokenizer_path, uncased = values.values()
    tokenizer_type = tokenizer_type or "word_piece"
    tokenizer_path = tokenizer_path or ""
    uncased = True if uncased is None else uncased
    if tokenizer_type == "word_piece":
        return WordPieceTokenizer(tokenizer_path, uncased=uncased)
    if tokenizer_type == "sent_piece":
        return SentencePieceTokenizer(tokenizer_path, uncased=uncased)
    raise ValueError(
        f"unknown tokenizer_type {tokenizer_type!r}: expected one of {', '.join(TOKENIZER_TYPES)}"
    )
