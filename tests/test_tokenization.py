"""Tests for tokenization.py.

Expected outputs are worked out by hand from BERT's and XLNet's rules (or taken from well-known
published BERT outputs), not recorded from this implementation.
"""

import io
import pathlib
import pickle
import unicodedata

import numpy as np
import pytest
import sentencepiece as spm

import tokenization
from model_test_utils import bert_vocab_path

# Angle-bracket specials as in Funnel's released vocab.uncased.txt, then ordinary pieces.
SMALL_VOCAB = [
    "<unk>", "<cls>", "<sep>", "<pad>", "<mask>", "<eop>",
    "the", "quick", "brown", "fox", "jump", "##ed", ".", ",", "!", "<", ">", "e", "##op",
    "un", "##aff", "##able", "una", "cafe", "naive", "Hello", "hello", "a", "##a", "中", "国",
]  # fmt: skip


def write_vocab(tmp_path, tokens, name="vocab.txt", newline="\n"):
    path = tmp_path / name
    path.write_bytes(newline.join(tokens).encode("utf-8") + newline.encode())
    return str(path)


@pytest.fixture
def small_tok(tmp_path):
    return tokenization.get_tokenizer(
        "word_piece", write_vocab(tmp_path, SMALL_VOCAB), uncased=True
    )


def basic(text, uncased=True):
    return tokenization.BasicTokenizer(uncased).tokenize(text)


# ---------------------------------------------------------------- BasicTokenizer


def test_basic_punctuation_splits_every_non_alnum_ascii():
    assert basic("Hello, world! It's $5.00 (approx.)") == [
        "hello", ",", "world", "!", "it", "'", "s", "$", "5", ".", "00", "(", "approx", ".", ")",
    ]  # fmt: skip
    # ^ ` | are symbols (Sk/Sm) in Unicode but count as punctuation because they are ASCII.
    assert basic("a^b`c|d") == ["a", "^", "b", "`", "c", "|", "d"]
    # Non-ASCII punctuation (Pi, Pf, Pd, Po) splits; a non-ASCII symbol (Sc) does not.
    assert basic("\u00abquoted\u00bb\u2014dash\u2026 5\u20ac") == [
        "\u00ab", "quoted", "\u00bb", "\u2014", "dash", "\u2026", "5\u20ac",
    ]  # fmt: skip


def test_basic_function_tokens_are_split_like_text():
    # SPEC §5.1: a literal <eop> in text is not kept whole.
    assert basic("end <eop> next") == ["end", "<", "eop", ">", "next"]
    assert basic("[CLS] x") == ["[", "cls", "]", "x"]
    assert basic("[CLS] x", uncased=False) == ["[", "CLS", "]", "x"]


def test_basic_accents_uncased_and_cased():
    assert basic("Caf\u00e9 Na\u00efve \u00c0\u00c9\u00ce\u00d5\u00dc") == [
        "cafe",
        "naive",
        "aeiou",
    ]
    assert basic("Caf\u00e9 Na\u00efve") == basic("Cafe\u0301 Nai\u0308ve")
    assert basic("Caf\u00e9 Na\u00efve", uncased=False) == ["Caf\u00e9", "Na\u00efve"]
    # Cased mode does not normalise: a decomposed accent stays decomposed.
    assert basic("Cafe\u0301", uncased=False) == ["Cafe\u0301"]
    assert basic("Hello WORLD", uncased=False) == ["Hello", "WORLD"]
    # GREEK VARIA decomposes (NFD) to "`", which is then punctuation; only when uncased.
    assert basic("a\u1fefb") == ["a", "`", "b"]
    assert basic("a\u1fefb", uncased=False) == ["a\u1fefb"]
    # Hangul syllables are not CJK ideographs and NFD turns them into conjoining jamo (letters).
    assert basic("\ud55c\uad6d\uc5b4") == [unicodedata.normalize("NFD", "\ud55c\uad6d\uc5b4")]


def test_basic_cjk_characters_are_words():
    assert basic("\u6211\u7231\u5317\u4eacabc") == ["\u6211", "\u7231", "\u5317", "\u4eac", "abc"]
    # CJK Extension B (a 4-byte code point) is spaced too; Hiragana is not.
    assert basic("x\U00020000y") == ["x", "\U00020000", "y"]
    assert basic("\u3072\u3089\u304c\u306a", uncased=False) == ["\u3072\u3089\u304c\u306a"]
    # Uncased, NFD splits the voiced mark (U+3099, Mn) off "ga", and accent stripping drops it.
    assert basic("\u3072\u3089\u304c\u306a") == ["\u3072\u3089\u304b\u306a"]


def test_basic_control_characters_and_whitespace():
    # NUL, U+FFFD, zero-width space (Cf) and BEL (Cc) vanish without splitting the word.
    assert basic("a\x00b\ufffdc\u200bd e\x07f") == ["abcd", "ef"]
    # Tab, newline, CR, no-break space and ideographic space (Zs) all separate words.
    assert basic("a\tb\nc\rd\u00a0e\u3000f  ") == ["a", "b", "c", "d", "e", "f"]
    assert basic("  \t\n ") == []
    assert basic("") == []


def test_basic_accepts_utf8_bytes():
    assert basic(b"Caf\xc3\xa9!") == ["cafe", "!"]


# ---------------------------------------------------------------- word pieces (small vocab)


def test_wordpiece_greedy_longest_match(tmp_path):
    tok = tokenization.get_tokenizer(
        "word_piece", write_vocab(tmp_path, ["<unk>", "un", "##aff", "##able"])
    )
    assert tok.tokenize("unaffable") == ["un", "##aff", "##able"]
    # Greedy longest match takes "una" first and then cannot cover "ffable": the whole word
    # becomes <unk>, although un ##aff ##able would have covered it.
    tok = tokenization.get_tokenizer(
        "word_piece", write_vocab(tmp_path, ["<unk>", "un", "una", "##aff", "##able"], "v2.txt")
    )
    assert tok.tokenize("unaffable") == ["<unk>"]
    assert tok.tokenize("unaffable una") == ["<unk>", "una"]


def test_wordpiece_sentence_ids_and_round_trip(small_tok):
    text = "The quick brown fox jumped, the FOX jumped!"
    tokens = [
        "the", "quick", "brown", "fox", "jump", "##ed", ",", "the", "fox", "jump", "##ed", "!",
    ]  # fmt: skip
    assert small_tok.tokenize(text) == tokens
    assert small_tok.convert_text_to_tokens(text) == tokens
    ids = small_tok.convert_text_to_ids(text)
    assert ids == [SMALL_VOCAB.index(t) for t in tokens]
    assert small_tok.convert_tokens_to_ids(tokens) == ids
    assert small_tok.convert_ids_to_tokens(ids) == tokens
    assert small_tok.convert_ids_to_text(ids) == "the quick brown fox jumped , the fox jumped !"
    assert small_tok.get_vocab_size() == len(SMALL_VOCAB)


def test_wordpiece_unknown_words_accents_and_cjk(small_tok):
    assert small_tok.unk_token == "<unk>"
    assert small_tok.tokenize("the zzz fox") == ["the", "<unk>", "fox"]
    assert small_tok.tokenize("Caf\u00e9 NA\u00cfVE") == ["cafe", "naive"]
    assert small_tok.tokenize("\u4e2d\u56fd\u4eba") == ["\u4e2d", "\u56fd", "<unk>"]


def test_wordpiece_eop_in_text_is_split_even_if_in_vocab(small_tok):
    assert "<eop>" in small_tok.vocab
    assert small_tok.tokenize("the <eop>") == ["the", "<", "e", "##op", ">"]


def test_wordpiece_max_200_chars_per_word(small_tok):
    assert small_tok.tokenize("a" * 200) == ["a"] + ["##a"] * 199
    assert small_tok.tokenize("a" * 201) == ["<unk>"]
    assert small_tok.tokenize("the " + "a" * 201 + " fox") == ["the", "<unk>", "fox"]


def test_wordpiece_cased(tmp_path):
    path = write_vocab(tmp_path, SMALL_VOCAB)
    cased = tokenization.get_tokenizer("word_piece", path, uncased=False)
    uncased = tokenization.get_tokenizer("word_piece", path, uncased=True)
    assert cased.uncased is False and uncased.uncased is True
    assert cased.tokenize("Hello hello HELLO") == ["Hello", "hello", "<unk>"]
    assert uncased.tokenize("Hello hello HELLO") == ["hello", "hello", "hello"]
    # Cased text keeps its accent, which this vocabulary does not have.
    assert cased.tokenize("caf\u00e9") == ["<unk>"]


def test_wordpiece_vocab_file_quirks(tmp_path):
    # CRLF line ends are stripped; a repeated token keeps its first id and takes no id of its own.
    tok = tokenization.get_tokenizer(
        "word_piece", write_vocab(tmp_path, ["<unk>", "a", "a", "b"], newline="\r\n")
    )
    assert tok.get_vocab_size() == 3
    assert tok.get_token_id("a") == 1
    assert tok.get_token_id("b") == 2
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<unk>", "a", "b"]


def test_wordpiece_lookup_errors(small_tok):
    with pytest.raises(KeyError, match="zebra"):
        small_tok.get_token_id("zebra")
    with pytest.raises(KeyError):
        small_tok.convert_tokens_to_ids(["the", "zebra"])
    with pytest.raises(KeyError):
        small_tok.convert_ids_to_tokens([len(SMALL_VOCAB)])
    with pytest.raises(KeyError):
        small_tok.convert_ids_to_tokens([-1])


def test_func_and_start_tokens(small_tok):
    assert small_tok.is_func_token("<cls>") and small_tok.is_func_token("<eop>")
    assert small_tok.is_func_token("[CLS]") and small_tok.is_func_token("[MASK]")
    assert not small_tok.is_func_token("<unk>") and not small_tok.is_func_token("[UNK]")
    assert not small_tok.is_func_token("<") and not small_tok.is_func_token("the")
    assert small_tok.is_start_token("the") and small_tok.is_start_token(",")
    assert small_tok.is_start_token("<unk>")
    assert not small_tok.is_start_token("##ed")
    assert not small_tok.is_start_token("<cls>") and not small_tok.is_start_token("[SEP]")
    expected = [not (t.startswith("##") or t in ("<cls>", "<sep>", "<pad>", "<mask>", "<eop>"))
                for t in SMALL_VOCAB]  # fmt: skip
    assert small_tok.word_start_mask.dtype == np.bool_
    assert small_tok.word_start_mask.tolist() == expected
    assert [small_tok.is_start_id(i) for i in range(len(SMALL_VOCAB))] == expected
    assert small_tok.is_func_id(SMALL_VOCAB.index("<sep>"))
    assert not small_tok.is_func_id(SMALL_VOCAB.index("<unk>"))


def test_bert_bracket_vocab_uses_bracket_unk(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "fox"]
    tok = tokenization.get_tokenizer("word_piece", write_vocab(tmp_path, vocab))
    assert tok.unk_token == "[UNK]"
    assert tok.convert_text_to_ids("the cat fox") == [5, 1, 6]
    assert not tok.is_start_id(2) and tok.is_start_id(1)


def test_get_tokenizer_errors(tmp_path):
    with pytest.raises(ValueError, match="bpe"):
        tokenization.get_tokenizer("bpe", "x")
    with pytest.raises(ValueError, match="tokenizer_path"):
        tokenization.get_tokenizer("word_piece", "")
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="nope.txt"):
        tokenization.get_tokenizer("word_piece", missing)
    with pytest.raises(ValueError, match="nope.txt"):
        tokenization.get_tokenizer("sent_piece", missing)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"<unk>\nok\n\xff\xfe\n")
    with pytest.raises(ValueError, match=r"bad.txt:3"):
        tokenization.get_tokenizer("word_piece", str(bad))
    with pytest.raises(ValueError, match="bad.txt"):
        tokenization.get_tokenizer("sent_piece", str(bad))


def test_tokenizers_pickle_for_worker_processes(small_tok, spm_path):
    sp_tok = tokenization.get_tokenizer("sent_piece", spm_path)
    for tok, text in ((small_tok, "The fox jumped."), (sp_tok, "the lazy dog, hello!")):
        tok.tokenize(text)  # fills the caches, which must not break pickling
        copy = pickle.loads(pickle.dumps(tok))
        assert copy.tokenize(text) == tok.tokenize(text)
        assert copy.convert_text_to_ids(text) == tok.convert_text_to_ids(text)


def test_name_and_type(small_tok):
    assert small_tok.name == "vocab.txt"
    assert small_tok.tokenizer_type == "word_piece"


# ---------------------------------------------------------------- real BERT uncased vocabulary


@pytest.fixture(scope="module")
def bert_tok():
    return tokenization.get_tokenizer("word_piece", bert_vocab_path(), uncased=True)


def test_bert_vocab_published_example(bert_tok):
    # The classic bert-base-uncased example (ids as published for that vocabulary).
    text = "Here is the sentence I want embeddings for."
    assert bert_tok.tokenize(text) == [
        "here", "is", "the", "sentence", "i", "want", "em", "##bed", "##ding", "##s", "for", ".",
    ]  # fmt: skip
    assert bert_tok.convert_text_to_ids(text) == [
        2182, 2003, 1996, 6251, 1045, 2215, 7861, 8270, 4667, 2015, 2005, 1012,
    ]  # fmt: skip
    assert bert_tok.convert_text_to_ids("Hello, world!") == [7592, 1010, 2088, 999]
    assert bert_tok.unk_token == "[UNK]"
    assert bert_tok.get_vocab_size() == 30522


def test_bert_vocab_greedy_and_specials(bert_tok):
    # The real vocabulary has "una" but no "unaf"/"unaff"/..., then "##ffa" but no longer
    # "##ffab..." piece, then "##ble": so not the docstring's un ##aff ##able.
    assert bert_tok.tokenize("unaffable") == ["una", "##ffa", "##ble"]
    assert bert_tok.tokenize("<eop>") == ["<", "e", "##op", ">"]
    assert bert_tok.tokenize("Caf\u00e9 \u4e2d\u56fd") == ["cafe", "\u4e2d", "\u56fd"]
    assert bert_tok.tokenize("x" * 201) == ["[UNK]"]
    assert bert_tok.convert_ids_to_text(bert_tok.convert_text_to_ids("Here are embeddings.")) == (
        "here are embeddings ."
    )
    assert not bert_tok.is_start_id(101)  # [CLS]
    assert bert_tok.is_start_id(100)  # [UNK]
    assert not bert_tok.is_start_id(2015)  # ##s


# ---------------------------------------------------------------- sentencepiece

SPECIALS = ["<cls>", "<sep>", "<pad>", "<mask>", "<eod>", "<eop>"]


def train_spm(tmp_path, user_symbols, name="spm.model", model_type="bpe"):
    lines = [
        "The quick brown fox jumped over the lazy dog.",
        "In 1990, the dog said: hello world!",
        "Count 5, 6, 7 and 8, then stop.",
        "A cat sat on the mat, and the hat was red.",
        "Year 1990 was good, and 1990 ended.",
    ] * 50
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=120,
        hard_vocab_limit=False,
        model_type=model_type,
        user_defined_symbols=user_symbols,
        minloglevel=2,
    )
    path = tmp_path / name
    path.write_bytes(model.getvalue())
    return str(path)


@pytest.fixture(scope="module")
def spm_path(tmp_path_factory):
    return train_spm(tmp_path_factory.mktemp("spm"), SPECIALS + ["1990,"])


def test_preprocess_text():
    pre = tokenization.preprocess_text
    assert pre("  Hello \t\n  World  ") == "Hello World"
    assert pre("``quoted''") == '"quoted"'
    assert pre("\u201cHi\u201d \u2018x\u2019") == "\"Hi\" 'x'"
    assert pre("Caf\u00e9 \u00c0B", lower=True) == "cafe ab"
    assert pre("Caf\u00e9", keep_accents=True) == "Caf\u00e9"
    # NFKD also applies compatibility mappings: ligature fi, circled one, ellipsis.
    assert pre("\ufb01 \u2460 \u2026") == "fi 1 ..."
    assert pre(" a  b ", remove_space=False) == " a  b "


def test_sentencepiece_ids_and_special_ids(spm_path):
    tok = tokenization.get_tokenizer("sent_piece", spm_path, uncased=True)
    sp = spm.SentencePieceProcessor(model_file=spm_path)
    assert tok.tokenizer_type == "sent_piece" and tok.name == "spm.model"
    assert tok.get_vocab_size() == sp.get_piece_size()
    # Sentencepiece numbers <unk>, <s>, </s> first, then the user-defined symbols in order.
    assert [tok.get_token_id(t) for t in ["<unk>", "<s>", "</s>"] + SPECIALS] == list(range(9))
    # Fix of SPEC §10.24: a missing piece is a KeyError, not silently the unk id.
    with pytest.raises(KeyError, match=r"\[CLS\]"):
        tok.get_token_id("[CLS]")
    text = "The  Lazy\u00a0DOG, hello!"
    pieces = tok.tokenize(text)
    # Preprocessing (whitespace collapsed, lower-cased) happens before sentencepiece.
    assert pieces == sp.encode("the lazy dog, hello!", out_type=str)
    assert tok.convert_text_to_ids(text) == [sp.piece_to_id(p) for p in pieces]
    assert tok.convert_ids_to_tokens(tok.convert_text_to_ids(text)) == pieces
    assert tok.convert_ids_to_text(tok.convert_text_to_ids(text)) == "the lazy dog, hello!"
    # A user-defined symbol stays one piece.
    assert "<cls>" in tok.tokenize("a <cls> b")


def test_sentencepiece_digit_comma_fix(spm_path):
    tok = tokenization.get_tokenizer("sent_piece", spm_path, uncased=True)
    sp = tok.sp_model
    raw = sp.encode("in 1990, we", out_type=str)
    # The user-defined symbol makes "1990," one piece without the word-start marker.
    i = raw.index("1990,")
    digits = sp.encode("1990", out_type=str)
    assert digits[0].startswith("\u2581")
    # XLNet's fix: re-encode the digits, drop the marker the original piece did not have, and
    # make the comma a piece of its own.
    digits = digits[1:] if digits[0] == "\u2581" else [digits[0][1:]] + digits[1:]
    assert tok.tokenize("In 1990, we") == raw[:i] + digits + [","] + raw[i + 1 :]
    for text in ("count 5, 6, 7 and 8, then", "in 1990, we"):
        pieces = tok.tokenize(text)
        assert not any(len(p) > 1 and p[-1] == "," and p[-2].isdigit() for p in pieces)
        assert "".join(pieces).replace("\u2581", " ").strip() == text


def test_sentencepiece_start_and_func_tokens(spm_path):
    tok = tokenization.get_tokenizer("sent_piece", spm_path)
    assert tok.is_start_token("\u2581the") and tok.is_start_token(",")
    assert tok.is_start_token("!") and not tok.is_start_token("'")
    assert not tok.is_start_token("he") and not tok.is_start_token("<unk>")
    assert not tok.is_start_token("<cls>") and tok.is_func_token("<cls>")
    sp = tok.sp_model
    for i in range(tok.get_vocab_size()):
        piece = sp.id_to_piece(i)
        expected = (
            piece.startswith("\u2581") or piece in set('!"#$%&()*+,-./:;?@[\\]^_`{|}~')
        ) and not (piece.startswith("<") and piece.endswith(">") and piece != "<unk>")
        assert tok.is_start_id(i) == expected, piece


def test_model_dir_tokenizer_found_or_given_takes_type_and_case_from_the_name(spm_path, tmp_path):
    model_dir = tmp_path / "ckpt"
    model_dir.mkdir()
    with pytest.raises(ValueError, match=f"no vocabulary in {model_dir} .*pass tokenizer_path"):
        tokenization.get_model_dir_tokenizer(str(model_dir))
    vocab = pathlib.Path(bert_vocab_path()).read_text()
    (model_dir / "spiece.cased.model").write_bytes(pathlib.Path(spm_path).read_bytes())
    found = tokenization.get_model_dir_tokenizer(str(model_dir))
    assert isinstance(found, tokenization.SentencePieceTokenizer) and not found.uncased
    (model_dir / "vocab.cased.txt").write_text(vocab)
    found = tokenization.get_model_dir_tokenizer(str(model_dir))  # vocab files come first
    assert isinstance(found, tokenization.WordPieceTokenizer) and not found.uncased
    assert found.path == str(model_dir / "vocab.cased.txt")
    only_spm = tokenization.get_model_dir_tokenizer(str(model_dir), tokenizer_type="sent_piece")
    assert only_spm.path == str(model_dir / "spiece.cased.model")

    # A path given elsewhere: its name still sets the defaults; the arguments override them.
    elsewhere = tmp_path / "vocab.cased.txt"
    elsewhere.write_text(vocab)
    given = tokenization.get_model_dir_tokenizer(str(model_dir), tokenizer_path=str(elsewhere))
    assert given.path == str(elsewhere) and not given.uncased
    forced = tokenization.get_model_dir_tokenizer(
        str(model_dir), tokenizer_path=str(elsewhere), uncased=True
    )
    assert forced.uncased
    assert tokenization.vocabulary_settings("gs://b/vocab.uncased.txt") == ("word_piece", True)
    assert tokenization.vocabulary_settings("x/vocab.txt") == ("word_piece", True)
    assert tokenization.vocabulary_settings("x/30k-clean.model") == ("sent_piece", True)


def test_sentencepiece_not_a_model(tmp_path):
    path = write_vocab(tmp_path, SMALL_VOCAB)
    with pytest.raises(ValueError, match="not a sentencepiece model"):
        tokenization.get_tokenizer("sent_piece", path)


# ---------------------------------------------------------------- against a literal BERT loop


def _reference_basic_tokenize(text, uncased):
    """BERT's BasicTokenizer written as its character loops (SPEC §8), for comparison."""

    def is_punct(c):
        cp = ord(c)
        ascii_punct = 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126
        return ascii_punct or unicodedata.category(c).startswith("P")

    def is_cjk(cp):
        return any(lo <= cp <= hi for lo, hi in tokenization._CJK_RANGES)

    cleaned = []
    for c in text:
        cat = unicodedata.category(c)
        if c in "\x00\ufffd" or (c not in "\t\n\r" and cat in ("Cc", "Cf")):
            continue
        if c in " \t\n\r" or cat == "Zs":
            cleaned.append(" ")
        elif is_cjk(ord(c)):
            cleaned.append(" " + c + " ")
        else:
            cleaned.append(c)
    words = []
    for token in "".join(cleaned).split():
        if uncased:
            token = unicodedata.normalize("NFD", token.lower())
            token = "".join(c for c in token if unicodedata.category(c) != "Mn")
        current = ""
        for c in token:
            if is_punct(c):
                words += [current, c] if current else [c]
                current = ""
            else:
                current += c
        if current:
            words.append(current)
    return words


def _fuzz_texts(n, seed=0):
    rng = np.random.default_rng(seed)
    # Letters, accents, combining marks, Greek sigma, CJK, Hangul, kana, controls, spaces,
    # line separators, punctuation, symbols and characters whose NFD is ASCII punctuation.
    pool = list(
        "aZ9 \t\n\r.,!?'\"<>[]#^`|~\u00e9\u00c0\u00df\u0130\u212a\u03a3\u03c3\u0301\u0308\u0345"
        "\u4e2d\u56fd\U00020000\uf900\ud55c\u304c\u30ac\x00\x07\x1c\x85\u200b\u200d\ufffd\ufeff"
        "\u00a0\u2028\u3000\u00ab\u2014\u2026\u20ac\u1fef\u037e\u00a8\ufb01"
    )
    texts = []
    for _ in range(n):
        chars = rng.choice(pool, size=int(rng.integers(0, 24))).tolist()
        chars += [chr(int(c)) for c in rng.integers(0x20, 0xD7FF, size=3)]
        rng.shuffle(chars)
        texts.append("".join(chars))
    return texts


@pytest.mark.parametrize("uncased", [True, False])
def test_basic_tokenizer_matches_literal_loop(uncased, shared_data):
    texts = _fuzz_texts(3000)
    if shared_data is not None and (shared_data / "pretrain" / "wiki_00").is_file():
        texts += (shared_data / "pretrain" / "wiki_00").read_text(encoding="utf-8").split("\n")
    tokenizer = tokenization.BasicTokenizer(uncased)
    for text in texts:
        assert tokenizer.tokenize(text) == _reference_basic_tokenize(text, uncased), ascii(text)
