"""Tests of SQuAD decoding, the official v1.1 / v2.0 metrics, the ensemble and the prediction files.

Every expected number is worked out by hand in the comments next to it.
"""

import dataclasses
import json
import math
import os

import numpy as np
import pytest

import squad_metrics as sm


@dataclasses.dataclass
class Example:
    """The fields of `squad_prepro.SquadExample` that decoding and evaluation read."""

    qas_id: str
    answers: list
    paragraph_text: str = ""
    is_impossible: bool = False


def answerable(qas_id, *answers):
    return Example(qas_id, list(answers))


def unanswerable(qas_id):
    return Example(qas_id, [], is_impossible=True)


# ---------------------------------------------------------------------------------------------
# Normalization and per-answer scores


def test_normalize_answer():
    # lower -> drop punctuation ("," "-" "!") -> drop whole-word articles -> collapse spaces;
    # "theater", "and" and "anew" keep their article-like prefixes.
    assert sm.normalize_answer("  The  Quick, brown-fox an apple! ") == "quick brownfox apple"
    assert sm.normalize_answer("Theater and anew A") == "theater and anew"
    assert sm.normalize_answer("The ... a") == ""


def test_f1_score_v2_rules():
    # gold 3 tokens, prediction 3 tokens, 2 shared: P = R = 2/3, F1 = 2/3.
    assert sm.f1_score(
        "Bernadette Soubirous church", "Saint Bernadette Soubirous"
    ) == pytest.approx(2 / 3)
    # Repeated tokens count once per occurrence: pred "x y y", gold "y":
    # shared 1, P = 1/3, R = 1, F1 = 2·(1/3)/(4/3) = 1/2.
    assert sm.f1_score("x y y", "y") == pytest.approx(0.5)
    # v2.0: an empty side scores 1 only if both are empty.
    assert sm.f1_score("", "the") == 1.0
    assert sm.f1_score("Broncos", "") == 0.0
    assert sm.exact_score("The Broncos!", "broncos") == 1.0


# ---------------------------------------------------------------------------------------------
# v2.0 evaluation


# q1: three golds, prediction equal to two of them after normalization.
# q2: golds "Saint Bernadette Soubirous" / "Bernadette"; prediction "Bernadette Soubirous church":
#     vs gold 1: shared 2 of 3 and 3 -> F1 2/3; vs gold 2: P 1/3, R 1 -> F1 1/2; max 2/3, EM 0.
# q3: wrong. q4, q5: unanswerable with a non-empty prediction.
# q6: answerable, exact after dropping "The", but its null odds are high.
V2_EXAMPLES = [
    answerable("q1", "Denver Broncos", "The Denver Broncos", "Broncos"),
    answerable("q2", "Saint Bernadette Soubirous", "Bernadette"),
    answerable("q3", "Santa Clara"),
    unanswerable("q4"),
    unanswerable("q5"),
    answerable("q6", "The Eiffel Tower"),
]
V2_PREDICTIONS = {
    "q1": "denver broncos!",
    "q2": "Bernadette Soubirous church",
    "q3": "Levi's Stadium",
    "q4": "the Broncos",
    "q5": "Carolina",
    "q6": "Eiffel Tower",
}
V2_NULL_ODDS = {"q1": -3.0, "q2": -1.0, "q3": 0.5, "q4": 1.5, "q5": 0.0, "q6": 2.0}


def brute_force_best(examples, predictions, null_odds, key):
    """Best thresholded `key` over every threshold that changes the predictions.

    The candidates are one value below all null odds (everything "") and each null-odds value
    (everything above it ""). Returns (best score, lowest candidate threshold reaching it).
    """
    values = sorted(set(null_odds.values()))
    candidates = [values[0] - 1.0, *values]
    scores = [sm.evaluate_v2(examples, predictions, null_odds, t)[key] for t in candidates]
    best = max(scores)
    return best, candidates[scores.index(best)]


def test_evaluate_v2_official_numbers():
    out = sm.evaluate_v2(V2_EXAMPLES, V2_PREDICTIONS, V2_NULL_ODDS, na_prob_thresh=1.0)
    # Raw (unthresholded) scores:      q1  q2   q3  q4  q5  q6
    #   exact                           1   0    0   0   0   1
    #   f1                              1   2/3  0   0   0   1
    # At threshold 1.0 the null odds of q4 (1.5) and q6 (2.0) exceed it: q4 (unanswerable)
    # scores 1, q6 (answerable) 0.
    #   exact                           1   0    0   1   0   0    -> 2 / 6
    #   f1                              1   2/3  0   1   0   0    -> (8/3) / 6
    assert out["total"] == 6
    assert out["exact"] == pytest.approx(100 * 2 / 6)
    assert out["f1"] == pytest.approx(100 * (8 / 3) / 6)
    # HasAns = q1, q2, q3, q6: exact 1/4, f1 (1 + 2/3) / 4 = 5/12. NoAns = q4, q5: 1/2 each.
    assert out["HasAns_total"] == 4
    assert out["HasAns_exact"] == pytest.approx(25.0)
    assert out["HasAns_f1"] == pytest.approx(100 * 5 / 12)
    assert out["NoAns_total"] == 2
    assert out["NoAns_exact"] == pytest.approx(50.0)
    assert out["NoAns_f1"] == pytest.approx(50.0)
    # The original's has_ans values: raw mean over HasAns, as a fraction.
    # exact (1 + 0 + 0 + 1) / 4 = 0.5; f1 (1 + 2/3 + 0 + 1) / 4 = 2/3.
    assert out["has_ans_exact"] == pytest.approx(0.5)
    assert out["has_ans_f1"] == pytest.approx(2 / 3)
    # --target_eval_key is checked against these before any prediction runs.
    scores = {k for k in out if not k.endswith(("_thresh", "total"))}
    assert scores == set(sm.V2_SCORES)


def test_evaluate_v2_drops_golds_that_normalize_to_empty():
    # Gold "The" normalizes to "" and is not a gold answer; only "Broncos" is. "an" also
    # normalizes to "": against "Broncos" exact 0 and f1 0 (one side empty). Counting "The"
    # would give 1 for both.
    examples = [answerable("g", "The", "Broncos")]
    out = sm.evaluate_v2(examples, {"g": "an"}, {"g": 0.0})
    assert out["exact"] == out["f1"] == 0.0
    assert sm.evaluate_v2(examples, {"g": "Broncos"}, {"g": 0.0})["exact"] == 100.0


def test_best_threshold_interior_and_minimum():
    out = sm.evaluate_v2(V2_EXAMPLES, V2_PREDICTIONS, V2_NULL_ODDS)
    # Raise the threshold through the null odds in order; all "" scores #NoAns = 2. Each
    # question switched to its prediction adds raw score - (1 if unanswerable else 0):
    #   odds:    (all "")  -3 q1  -1 q2  0 q5  0.5 q3  1.5 q4  2 q6
    #   exact:     2        3      3      2     2       1       2
    #   f1:        2        3      11/3   8/3   8/3     5/3     8/3
    # exact peaks first at the minimum null odds, -3.0: 3/6.
    assert out["best_exact"] == pytest.approx(50.0)
    assert out["best_exact_thresh"] == -3.0
    # f1 peaks with q1, q2 answered and the rest "": a cut strictly between the null odds -1.0
    # and 0.0, reported as the lower value, as the official script does. (11/3) / 6.
    assert out["best_f1"] == pytest.approx(100 * (11 / 3) / 6)
    assert out["best_f1_thresh"] == -1.0
    midpoint = sm.evaluate_v2(V2_EXAMPLES, V2_PREDICTIONS, V2_NULL_ODDS, na_prob_thresh=-0.5)
    assert midpoint["f1"] == pytest.approx(out["best_f1"])

    for key in ("exact", "f1"):
        best, thresh = brute_force_best(V2_EXAMPLES, V2_PREDICTIONS, V2_NULL_ODDS, key)
        assert out[f"best_{key}"] == pytest.approx(best)
        assert out[f"best_{key}_thresh"] == thresh


def test_best_threshold_all_null():
    # Both unanswerable questions have non-empty predictions and the answerable one is wrong, so
    # every question "" is best: 2 of 3. The threshold must lie below every null odds value.
    examples = [unanswerable("u1"), answerable("a1", "Paris"), unanswerable("u2")]
    predictions = {"u1": "Rome", "a1": "Berlin", "u2": "Madrid"}
    null_odds = {"u1": 0.3, "a1": 0.5, "u2": 0.7}
    out = sm.evaluate_v2(examples, predictions, null_odds)
    assert out["best_exact"] == pytest.approx(100 * 2 / 3)
    assert out["best_exact_thresh"] < 0.3
    best, _ = brute_force_best(examples, predictions, null_odds, "exact")
    assert out["best_exact"] == pytest.approx(best)
    final = sm.apply_null_threshold(predictions, null_odds, out["best_exact_thresh"])
    assert final == {"u1": "", "a1": "", "u2": ""}


def test_best_threshold_ties_switch_together():
    # Equal null odds: no threshold answers a1 without u1. Answering both gives 1 (a1) + 0 (u1)
    # = 1, the same as all "" (u1 scores 1), so the best is 1 of 2; answering only a1 (2 of 2),
    # which a question-by-question scan in this order passes through, is not reachable.
    examples = [answerable("a1", "Paris"), unanswerable("u1")]
    predictions = {"a1": "Paris", "u1": "Rome"}
    null_odds = {"a1": 0.2, "u1": 0.2}
    out = sm.evaluate_v2(examples, predictions, null_odds)
    assert out["best_exact"] == pytest.approx(50.0)
    best, _ = brute_force_best(examples, predictions, null_odds, "exact")
    assert out["best_exact"] == pytest.approx(best)


def test_evaluate_v2_threshold_applied_equals_best():
    out = sm.evaluate_v2(V2_EXAMPLES, V2_PREDICTIONS, V2_NULL_ODDS)
    final = sm.apply_null_threshold(V2_PREDICTIONS, V2_NULL_ODDS, out["best_f1_thresh"])
    # Threshold -1.0: q1 (-3) and q2 (-1) keep their text, the rest become "".
    assert final == {"q1": "denver broncos!", "q2": "Bernadette Soubirous church"} | {
        q: "" for q in ("q3", "q4", "q5", "q6")
    }
    # Scoring the final answers with no threshold in play gives the best f1 back.
    never_null = {q: -math.inf for q in final}
    again = sm.evaluate_v2(V2_EXAMPLES, final, never_null)
    assert again["f1"] == pytest.approx(out["best_f1"])


def test_evaluate_v2_errors_and_defaults():
    with pytest.raises(ValueError, match="no prediction"):
        sm.evaluate_v2(V2_EXAMPLES, {"q1": "x"}, V2_NULL_ODDS)
    with pytest.raises(ValueError, match="no null odds"):
        sm.evaluate_v2(V2_EXAMPLES, V2_PREDICTIONS, {"q1": 0.0})
    # Without null odds nothing exceeds the threshold 1.0: raw exact 1, 0, 0, 0, 0, 1 -> 2/6.
    out = sm.evaluate_v2(V2_EXAMPLES, V2_PREDICTIONS, None)
    assert out["exact"] == pytest.approx(100 * 2 / 6)
    only_unanswerable = sm.evaluate_v2([unanswerable("u")], {"u": ""}, {"u": 0.0})
    assert only_unanswerable["exact"] == 100.0
    assert "HasAns_total" not in only_unanswerable and "has_ans_f1" not in only_unanswerable


def test_apply_null_threshold():
    out = sm.apply_null_threshold(
        {"a": "x", "b": "y", "c": "z"}, {"a": 0.5, "b": 1.0, "c": 1.5}, 1.0
    )
    # Strictly greater than the threshold becomes "": only c.
    assert out == {"a": "x", "b": "y", "c": ""}
    with pytest.raises(ValueError, match="no null odds"):
        sm.apply_null_threshold({"a": "x"}, {}, 0.0)


# ---------------------------------------------------------------------------------------------
# v1.1 evaluation


def test_evaluate_v1_official_numbers():
    examples = [
        answerable("a", "Denver Broncos", "Broncos"),
        answerable("b", "Saint Bernadette Soubirous"),
        answerable("c", "1990"),
        answerable("d", "the"),
    ]
    predictions = {"a": "The Denver Broncos.", "b": "Bernadette", "c": "", "d": "a"}
    # a: exact 1, f1 1. b: exact 0; P 1/1, R 1/3 -> f1 2·(1/3)/(4/3) = 1/2.
    # c: empty prediction: 0, 0. d: "a" and "the" both normalize to "": exact 1, but the v1.1
    # F1 has no shared tokens: 0.
    out = sm.evaluate_v1(examples, predictions)
    assert out["exact_match"] == pytest.approx(100 * 2 / 4)
    assert out["f1"] == pytest.approx(100 * 1.5 / 4)
    with pytest.raises(ValueError, match="evaluate_v2"):
        sm.evaluate_v1([unanswerable("u")], {"u": ""})


# ---------------------------------------------------------------------------------------------
# Decoding

# Tokens and their inclusive character spans.
PARAGRAPH = "Alpha beta gamma delta beta zeta"
TOKEN_SPANS = [[0, 4], [6, 9], [11, 15], [17, 21], [23, 26], [28, 31]]

# Two windows of 4 paragraph tokens, stride 2: [cls] q [sep] p p p p [sep] [pad].
# Max context (min(left, right) + 0.01·4): gamma (token 2) is 1.04 in A, 0.04 in B -> A;
# delta (token 3) is 0.04 in A, 1.04 in B -> B.
NONE3 = [None, None, None]
WINDOW_A = {
    "unique_id": 1000000000,
    "example_index": 0,
    "qas_id": "e0",
    "doc_span_index": 0,
    "token_char_spans": NONE3 + TOKEN_SPANS[0:4] + [None, None],
    "token_is_max_context": [False] * 3 + [True, True, True, False] + [False] * 2,
}
WINDOW_B = {
    "unique_id": 1000000001,
    "example_index": 0,
    "qas_id": "e0",
    "doc_span_index": 1,
    "token_char_spans": NONE3 + TOKEN_SPANS[2:6] + [None, None],
    "token_is_max_context": [False] * 4 + [True, True, True] + [False] * 2,
}


def result(start_index, start_log_probs, end_index, end_log_probs, cls_logits):
    return {
        "start_top_index": np.asarray(start_index, np.int32),
        "start_top_log_probs": np.asarray(start_log_probs, np.float32),
        "end_top_index": np.asarray(end_index, np.int32),
        "end_top_log_probs": np.asarray(end_log_probs, np.float32),
        "cls_logits": np.float32(cls_logits),
    }


# start_n_top 3, end_n_top 2 (end entry i·2 + j). Candidates (position -> token):
# A: start 6 = delta: not max context in A -> its ends dropped (it would win with -0.2);
#    start 4 = beta (token 1): end 4 -> "beta" -0.5-0.3 = -0.8; end 3 < start -> dropped;
#    start 3 = Alpha: end 6 = delta -> 4 tokens > max_answer_length 3 -> dropped;
#                     end 3 -> "Alpha" -0.7-0.9 = -1.6.
# B: start 5 = beta (token 4): end 5 -> "beta" -0.2-0.1 = -0.3; end 7 = [sep] -> outside;
#    start 3 = gamma: not max context in B -> dropped;
#    start 4 = delta: end 5 -> "delta beta" -0.6-0.15 = -0.75; end 4 -> "delta" -0.6-0.3 = -0.9.
# cls_logits: A -1.5, B 2.0.
RESULTS = {
    1000000000: result(
        [6, 4, 3],
        [-0.1, -0.5, -0.7],
        [6, 5, 4, 3, 6, 3],
        [-0.1, -0.2, -0.3, -0.4, -0.2, -0.9],
        -1.5,
    ),
    1000000001: result(
        [5, 3, 4],
        [-0.2, -0.25, -0.6],
        [5, 7, 3, 4, 5, 4],
        [-0.1, -0.05, -0.1, -0.1, -0.15, -0.3],
        2.0,
    ),
}
BEAM = {"start_n_top": 3, "end_n_top": 2}


def decode_example():
    examples = [Example("e0", ["beta"], paragraph_text=PARAGRAPH)]
    return examples, [WINDOW_A, WINDOW_B]


def test_token_spans_match_paragraph():
    assert [PARAGRAPH[s : e + 1] for s, e in TOKEN_SPANS] == PARAGRAPH.split()


def test_decode_predictions_beam_rules():
    examples, features = decode_example()
    predictions, nbest, null_odds = sm.decode_predictions(
        examples, features, RESULTS, n_best_size=3, max_answer_length=3, **BEAM
    )
    # Ranked: "beta" -0.3, "delta beta" -0.75, "beta" -0.8 (same text: skipped), "delta" -0.9,
    # "Alpha" -1.6 (past n_best_size).
    entries = nbest["e0"]
    assert [e["text"] for e in entries] == ["beta", "delta beta", "delta"]
    assert predictions == {"e0": "beta"}
    assert entries[0]["start_log_prob"] == pytest.approx(-0.2)
    assert entries[0]["end_log_prob"] == pytest.approx(-0.1)
    scores = [-0.3, -0.75, -0.9]
    expected = [math.exp(s) / sum(math.exp(t) for t in scores) for s in scores]
    assert [e["probability"] for e in entries] == pytest.approx(expected, rel=1e-5)
    assert sum(e["probability"] for e in entries) == pytest.approx(1.0)
    # min(-1.5, 2.0): the window with the lower cls logit decides, here the first.
    assert null_odds == {"e0": -1.5}
    assert all(isinstance(v, float) for e in entries for k, v in e.items() if k != "text")


def test_null_odds_without_the_answer_class_subtract_the_best_span():
    """Without the answerability head, cls_logits is log p(start = <cls>) <= 0: the null odds are that
    minus the best span's log-probability (the original's score_diff), so a likely <cls> start beats a
    weak span at the default threshold 0."""
    examples, features = decode_example()
    predictions, _, null_odds = sm.decode_predictions(
        examples,
        features,
        RESULTS,
        n_best_size=3,
        max_answer_length=3,
        use_answer_class=False,
        **BEAM,
    )
    # min(-1.5, 2.0) - ("beta": -0.2 + -0.1)
    assert null_odds == {"e0": pytest.approx(-1.5 + 0.3)}
    weak = {
        uid: {
            **r,
            "cls_logits": np.float32(np.log(0.95)),
            "end_top_log_probs": r["end_top_log_probs"] - 3,
        }
        for uid, r in RESULTS.items()
    }
    _, _, null_odds = sm.decode_predictions(
        examples, features, weak, n_best_size=3, max_answer_length=3, use_answer_class=False, **BEAM
    )
    assert null_odds["e0"] == pytest.approx(np.log(0.95) + 3.3, rel=1e-5)
    assert sm.apply_null_threshold(predictions, null_odds, 0.0) == {"e0": ""}


def test_decode_predictions_max_answer_length():
    examples, features = decode_example()
    _, nbest, _ = sm.decode_predictions(
        examples, features, RESULTS, n_best_size=10, max_answer_length=4, **BEAM
    )
    # At 4 tokens, A's Alpha..delta (-0.7-0.2 = -0.9) is admitted.
    texts = [e["text"] for e in nbest["e0"]]
    assert "Alpha beta gamma delta" in texts
    assert len(texts) == len(set(texts)) == 5


def test_decode_predictions_max_context_decides():
    # With window B's rows marked max-context everywhere, its gamma start (-0.25) becomes valid:
    # gamma..gamma = -0.35 and gamma..delta = -0.35; the first in beam order ranks first.
    examples, _ = decode_example()
    # The windows come in reverse order: the null odds are still the minimum, now of the last.
    all_max_b = dict(WINDOW_B, token_is_max_context=[True] * 9)
    _, nbest, null_odds = sm.decode_predictions(
        examples, [all_max_b, WINDOW_A], RESULTS, n_best_size=3, max_answer_length=3, **BEAM
    )
    assert [e["text"] for e in nbest["e0"]] == ["beta", "gamma", "gamma delta"]
    assert null_odds == {"e0": -1.5}


def test_decode_predictions_no_valid_span_and_no_window():
    examples = [
        Example("only_query", [], paragraph_text=PARAGRAPH),
        Example("dropped", [], paragraph_text=PARAGRAPH),
    ]
    # Every start points at the query or a [sep].
    window = dict(WINDOW_A, example_index=0, qas_id="only_query")
    results = {window["unique_id"]: result([1, 2, 7], [-1, -2, -3], [1, 2] * 3, [-1] * 6, 0.25)}
    predictions, nbest, null_odds = sm.decode_predictions(examples, [window], results, **BEAM)
    assert predictions == {"only_query": "", "dropped": ""}
    assert nbest["only_query"] == [
        {"text": "", "probability": 1.0, "start_log_prob": -1e6, "end_log_prob": -1e6}
    ]
    assert null_odds == {"only_query": 0.25, "dropped": sm.NO_WINDOW_NULL_ODDS}


def test_decode_predictions_errors():
    examples, features = decode_example()
    with pytest.raises(ValueError, match="expected 2 start"):
        sm.decode_predictions(examples, features, RESULTS, start_n_top=2, end_n_top=3)
    with pytest.raises(ValueError, match="no model result"):
        sm.decode_predictions(examples, features, {}, **BEAM)
    with pytest.raises(ValueError, match="do not match"):
        sm.decode_predictions(examples, [dict(WINDOW_A, qas_id="other")], RESULTS, **BEAM)


# ---------------------------------------------------------------------------------------------
# Real dev set


def load_squad_examples(path):
    with open(path) as f:
        data = json.load(f)["data"]
    return [
        Example(qa["id"], [a["text"] for a in qa["answers"]], is_impossible=qa["is_impossible"])
        for article in data
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]


@pytest.fixture
def dev_v2_path(shared_data, tmp_path):
    if shared_data is not None:
        return shared_data / "squad" / "cs224n_split" / "dev-v2.0.json"
    qas = [
        {"id": "x1", "question": "?", "answers": [{"text": "Normandy", "answer_start": 0}]},
        {"id": "x2", "question": "?", "answers": [], "is_impossible": True},
        {"id": "x3", "question": "?", "answers": [{"text": "in 10th century", "answer_start": 9}]},
    ]
    for qa in qas:
        qa.setdefault("is_impossible", False)
    path = tmp_path / "dev-v2.0.json"
    path.write_text(
        json.dumps(
            {
                "version": "v2.0",
                "data": [{"paragraphs": [{"context": "Normandy in 10th century", "qas": qas}]}],
            }
        )
    )
    return path


def test_dev_v2_gold_predictions(dev_v2_path):
    examples = load_squad_examples(dev_v2_path)
    predictions = {e.qas_id: e.answers[0] if e.answers else "" for e in examples}
    null_odds = {e.qas_id: -5.0 if e.answers else 5.0 for e in examples}
    out = sm.evaluate_v2(examples, predictions, null_odds)
    assert out["exact"] == out["f1"] == 100.0
    assert out["best_exact"] == out["best_f1"] == 100.0
    assert out["has_ans_exact"] == out["has_ans_f1"] == 1.0

    everything_null = {e.qas_id: "" for e in examples}
    high = {e.qas_id: 5.0 for e in examples}
    out = sm.evaluate_v2(examples, everything_null, high)
    assert out["total"] == len(examples) == out["HasAns_total"] + out["NoAns_total"]
    assert out["NoAns_total"] == sum(e.is_impossible for e in examples)
    assert out["NoAns_exact"] == out["NoAns_f1"] == 100.0
    assert out["HasAns_exact"] == out["HasAns_f1"] == 0.0
    assert out["exact"] == pytest.approx(100 * out["NoAns_total"] / out["total"])
    assert out["f1"] == pytest.approx(out["exact"])


# ---------------------------------------------------------------------------------------------
# Ensemble and files


def test_ensemble_of_identical_runs_is_the_run():
    examples, features = decode_example()
    run = sm.decode_predictions(
        examples, features, RESULTS, n_best_size=3, max_answer_length=3, **BEAM
    )
    _, nbest, null_odds = run
    assert sm.ensemble_nbest([nbest, nbest], [null_odds, null_odds]) == run


def test_ensemble_averages():
    def entry(text, prob):
        return {"text": text, "probability": prob, "start_log_prob": -1.0, "end_log_prob": -2.0}

    run1 = {"q": [entry("A", 0.6), entry("B", 0.4)], "r": [entry("", 1.0)]}
    run2 = {"q": [entry("B", 0.7), entry("", 0.3)], "r": [entry("", 0.9), entry("C", 0.1)]}
    predictions, nbest, null_odds = sm.ensemble_nbest(
        [run1, run2], [{"q": 1.0, "r": 4.0}, {"q": -3.0, "r": 2.0}]
    )
    # q: B (0.4 + 0.7) / 2 = 0.55, A 0.6 / 2 = 0.3, "" 0.3 / 2 = 0.15.
    assert [(e["text"], e["probability"]) for e in nbest["q"]] == [
        ("B", pytest.approx(0.55)),
        ("A", pytest.approx(0.3)),
        ("", pytest.approx(0.15)),
    ]
    # r: "" 0.95 leads, but the prediction is the best non-empty text, C 0.05.
    assert predictions == {"q": "B", "r": "C"}
    assert null_odds == {"q": pytest.approx(-1.0), "r": pytest.approx(3.0)}
    with pytest.raises(ValueError, match="different questions"):
        sm.ensemble_nbest([run1, {"q": run1["q"]}], [{"q": 0, "r": 0}, {"q": 0}])


def test_write_and_read_prediction_files(tmp_path):
    examples, features = decode_example()
    run = sm.decode_predictions(examples, features, RESULTS, **BEAM)
    out_dir = str(tmp_path / "predict")
    paths = sm.write_prediction_files(out_dir, "8000", *run)
    assert sorted(os.listdir(out_dir)) == [
        "8000.nbest_predictions.json",
        "8000.null_odds.json",
        "8000.predictions.json",
    ]
    for path in paths.values():
        with open(path) as f:
            json.load(f)
    assert sm.read_prediction_files(out_dir, "8000") == run
