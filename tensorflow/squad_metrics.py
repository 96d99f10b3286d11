"""SQuAD prediction decoding, the official v1.1 / v2.0 evaluation, ensembling, prediction files.

Plain Python and numpy with explicit arguments: `squad.py` owns the flags. Only the file functions
import TensorFlow (through `data_utils`, for gs:// paths), and only when called.

- `decode_predictions` turns the model's beam (`FunnelTFM.get_squad_predictions`) over every window
  of every example into the answer text, the n-best list and the null odds (SPEC §6.3).
- `evaluate_v2` / `evaluate_v1` are the official SQuAD metrics, written from their published
  definition: answer normalization, exact match and token F1 (max over the gold answers), in
  percent, plus the v2 best null-threshold search.
- `apply_null_threshold` gives the final v2 answers ("" where the null odds exceed a threshold).
- `ensemble_nbest` averages n-best probabilities and null odds over checkpoints.
- `write_prediction_files` / `read_prediction_files`: `{prefix}.predictions.json`,
  `{prefix}.nbest_predictions.json`, `{prefix}.null_odds.json`.

Inputs, as `squad_prepro.py` produces them:
- an example has the attributes `qas_id`, `paragraph_text`, `answers` (all gold texts, empty for an
  unanswerable question);
- a feature (one window) is a mapping with `unique_id`, `example_index`, `qas_id`,
  `token_char_spans` (per position `[start_char, end_char]`, inclusive, into `paragraph_text`, or
  None outside the paragraph) and `token_is_max_context` (per position);
- a result is a mapping with `start_top_log_probs`, `start_top_index` [start_n_top],
  `end_top_log_probs`, `end_top_index` [start_n_top * end_n_top] (start-major) and `cls_logits`.

See docs/squad_evaluation.md for the definitions and the deviations from the original.
"""

import collections
import itertools
import json
import math
import os
import re
import string

import numpy as np

# Null odds of an example without any window (preprocessing dropped it): the original's starting
# value of the running minimum, so the example is predicted unanswerable at any usual threshold.
NO_WINDOW_NULL_ODDS = 1e6

# Log-probabilities of the "" entry that stands in for an empty n-best list, as in the original.
EMPTY_NBEST_LOG_PROB = -1e6

PREDICTION_FILE_KINDS = ("predictions", "nbest_predictions", "null_odds")

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


# ---------------------------------------------------------------------------------------------
# Decoding


def _paragraph_span(spans, index):
    """`spans[index]` as (start_char, end_char), or None outside the window's paragraph."""
    if not 0 <= index < len(spans) or spans[index] is None:
        return None
    start_char, end_char = spans[index]
    return int(start_char), int(end_char)


def _window_candidates(feature, result, max_answer_length, start_n_top, end_n_top):
    """Yields (start_log_prob, end_log_prob, start_char, end_char) of the valid spans of a window."""
    start_log_probs = np.asarray(result["start_top_log_probs"], dtype=np.float64).reshape(-1)
    start_index = np.asarray(result["start_top_index"]).reshape(-1)
    end_log_probs = np.asarray(result["end_top_log_probs"], dtype=np.float64).reshape(-1)
    end_index = np.asarray(result["end_top_index"]).reshape(-1)
    n_beam = start_n_top * end_n_top
    if (
        len(start_log_probs) != start_n_top
        or len(start_index) != start_n_top
        or len(end_log_probs) != n_beam
        or len(end_index) != n_beam
    ):
        raise ValueError(
            f"result of unique_id {feature['unique_id']}: expected {start_n_top} start and "
            f"{n_beam} end candidates (start_n_top={start_n_top}, end_n_top={end_n_top}), got "
            f"{len(start_index)} and {len(end_index)}"
        )
    spans = feature["token_char_spans"]
    is_max_context = feature["token_is_max_context"]
    for i in range(start_n_top):
        start = int(start_index[i])
        start_span = _paragraph_span(spans, start)
        # A token seen in several windows is only answered from the window where it has the
        # most context on both sides, so each span is scored once, by its best window.
        if start_span is None or not is_max_context[start]:
            continue
        for j in range(end_n_top):
            k = i * end_n_top + j
            end = int(end_index[k])
            end_span = _paragraph_span(spans, end)
            if end_span is None or end < start or end - start + 1 > max_answer_length:
                continue
            yield float(start_log_probs[i]), float(end_log_probs[k]), start_span[0], end_span[1]


def _softmax(scores):
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def decode_predictions(
    examples,
    features,
    results,
    n_best_size=5,
    max_answer_length=64,
    start_n_top=5,
    end_n_top=5,
    use_answer_class=True,
):
    """Answer text, n-best list and null odds of every example from the model's span beam.

    Every (start, end) pair of the beam of every window of an example is a candidate unless
    end < start, the span is longer than `max_answer_length` tokens, the start token does not have
    its maximum context in this window, or either token is outside the paragraph. Candidates are
    ranked by start + end log-probability; the first `n_best_size` distinct texts form the n-best
    list, whose probabilities are a softmax over those scores.

    Args:
      examples: sequence of examples (attributes `qas_id`, `paragraph_text`); a feature's
        `example_index` indexes it.
      features: iterable of window mappings (`unique_id`, `example_index`, `qas_id`,
        `token_char_spans`, `token_is_max_context`).
      results: mapping unique_id -> model outputs of that window (`start_top_log_probs`,
        `start_top_index` [start_n_top], `end_top_log_probs`, `end_top_index`
        [start_n_top * end_n_top], `cls_logits` scalar); numpy arrays or lists.
      n_best_size: length of the n-best lists.
      max_answer_length: longest answer, in tokens.
      start_n_top, end_n_top: the beam sizes the model was run with.
      use_answer_class: whether the model has the answerability head (--use_answer_class); without
        it `cls_logits` is the start log-probability of <cls>, and the null odds subtract the best
        span's score, as in the original.

    Returns:
      (predictions, nbest, null_odds), each keyed by qas_id, in example order:
      predictions: the best non-null text, "" when no candidate is valid (v2 decides "no answer"
        later, by a threshold on the null odds).
      nbest: list of {"text", "probability", "start_log_prob", "end_log_prob"}, best first; a single
        "" entry (probability 1, log-probabilities -1e6) when no candidate is valid.
      null_odds: the minimum of `cls_logits` over the example's windows (positive = unanswerable),
        minus the first n-best entry's start + end log-probability without the answer class;
        `NO_WINDOW_NULL_ODDS` for an example without windows.

    Raises:
      ValueError: a feature's example_index or qas_id does not match `examples`, a feature has no
        result, or a result's beam size does not match `start_n_top` / `end_n_top`.
    """
    windows_of = collections.defaultdict(list)
    for feature in features:
        index = feature["example_index"]
        if not 0 <= index < len(examples) or examples[index].qas_id != feature["qas_id"]:
            raise ValueError(
                f"feature {feature['unique_id']}: example_index {index} and qas_id "
                f"{feature['qas_id']!r} do not match the examples"
            )
        if feature["unique_id"] not in results:
            raise ValueError(f"feature {feature['unique_id']} has no model result")
        windows_of[index].append(feature)

    predictions, nbest, null_odds = {}, {}, {}
    for index, example in enumerate(examples):
        candidates = []
        null_score = NO_WINDOW_NULL_ODDS
        for feature in windows_of[index]:
            result = results[feature["unique_id"]]
            null_score = min(null_score, float(np.asarray(result["cls_logits"]).reshape(())))
            candidates.extend(
                _window_candidates(feature, result, max_answer_length, start_n_top, end_n_top)
            )
        # Stable sort: equal scores keep window and beam order.
        candidates.sort(key=lambda c: c[0] + c[1], reverse=True)

        entries = []
        seen = set()
        for start_log_prob, end_log_prob, start_char, end_char in candidates:
            if len(entries) >= n_best_size:
                break
            # Character offsets may include the space a sentencepiece token absorbed.
            text = example.paragraph_text[start_char : end_char + 1].strip()
            # An empty text would read as "no answer"; that is the null odds' decision.
            if not text or text in seen:
                continue
            seen.add(text)
            entries.append(
                {"text": text, "start_log_prob": start_log_prob, "end_log_prob": end_log_prob}
            )
        if not entries:
            entries = [
                {
                    "text": "",
                    "start_log_prob": EMPTY_NBEST_LOG_PROB,
                    "end_log_prob": EMPTY_NBEST_LOG_PROB,
                }
            ]
        probs = _softmax([e["start_log_prob"] + e["end_log_prob"] for e in entries])
        nbest[example.qas_id] = [
            {
                "text": e["text"],
                "probability": p,
                "start_log_prob": e["start_log_prob"],
                "end_log_prob": e["end_log_prob"],
            }
            for e, p in zip(entries, probs, strict=True)
        ]
        predictions[example.qas_id] = entries[0]["text"]
        if not use_answer_class and windows_of[index]:
            null_score -= entries[0]["start_log_prob"] + entries[0]["end_log_prob"]
        null_odds[example.qas_id] = null_score
    return predictions, nbest, null_odds


# ---------------------------------------------------------------------------------------------
# Official evaluation


def normalize_answer(text):
    """Lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_score(prediction, gold):
    """1.0 if the normalized texts are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def _overlap_f1(pred_tokens, gold_tokens):
    """Harmonic mean of token precision and recall, counting repeated tokens as multisets."""
    common = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction, gold):
    """Token F1 of the normalized texts, SQuAD v2.0 rule: if either is empty, 1.0 iff both are."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    return _overlap_f1(pred_tokens, gold_tokens)


def _check_covered(examples, mapping, what):
    missing = [e.qas_id for e in examples if e.qas_id not in mapping]
    if missing:
        raise ValueError(f"{len(missing)} question(s) have no {what}, e.g. {missing[:3]}")


def apply_null_threshold(predictions, null_odds, threshold):
    """The predictions with "" wherever the null odds exceed `threshold` (the final v2 answers).

    Raises:
      ValueError: a prediction has no null odds.
    """
    missing = [qid for qid in predictions if qid not in null_odds]
    if missing:
        raise ValueError(f"{len(missing)} prediction(s) have no null odds, e.g. {missing[:3]}")
    return {
        qid: "" if float(null_odds[qid]) > threshold else text for qid, text in predictions.items()
    }


def _mean_percent(scores, qids):
    return 100.0 * sum(scores[q] for q in qids) / len(qids)


def _best_threshold(raw_scores, has_ans, odds):
    """Best score in percent over all null thresholds, and the threshold that gives it.

    A question is predicted "" when its null odds exceed the threshold; it then scores 1 if it is
    unanswerable and 0 otherwise. Raising the threshold past a null-odds value switches the
    questions with that value from "" to their prediction, so the candidates are: below every
    value (all ""), and each distinct value. The lowest threshold among equal best scores wins.
    """
    score = float(sum(not has_ans[q] for q in raw_scores))
    best_score = score
    best_thresh = math.nextafter(min(odds[q] for q in raw_scores), -math.inf)
    ordered = sorted(raw_scores, key=odds.__getitem__)
    # Questions with equal null odds switch together: no threshold separates them.
    for value, group in itertools.groupby(ordered, key=odds.__getitem__):
        score += sum(raw_scores[q] - float(not has_ans[q]) for q in group)
        if score > best_score:
            best_score, best_thresh = score, value
    return 100.0 * best_score / len(raw_scores), best_thresh


# The scores of `evaluate_v2` a checkpoint can be selected by (--target_eval_key); the HasAns/NoAns ones
# exist only when the evaluation set has such questions.
V2_SCORES = (
    "best_f1",
    "best_exact",
    "f1",
    "exact",
    "HasAns_f1",
    "HasAns_exact",
    "NoAns_f1",
    "NoAns_exact",
    "has_ans_f1",
    "has_ans_exact",
)


def evaluate_v2(examples, predictions, null_odds, na_prob_thresh=1.0):
    """The official SQuAD v2.0 metrics, plus the original's best-threshold search.

    A question's gold answers are its answer texts that do not normalize to ""; an unanswerable
    question's only gold answer is "". Exact match and F1 are the maximum over the gold answers.
    A prediction counts as "" when its null odds exceed `na_prob_thresh`.

    Args:
      examples: sequence of examples (attributes `qas_id`, `answers`).
      predictions: dict qas_id -> predicted text (the best non-null text of `decode_predictions`).
      null_odds: dict qas_id -> null odds; None gives every question 0.0, as the official script
        does without a null-odds file.
      na_prob_thresh: the null threshold of `exact`, `f1`, `HasAns_*` and `NoAns_*`.

    Returns:
      dict with, in percent: `exact`, `f1` (thresholded), `HasAns_exact`, `HasAns_f1`,
      `NoAns_exact`, `NoAns_f1` (the same over the answerable / unanswerable questions; present
      only when that subset is non-empty, as in the official script), `best_exact`, `best_f1` (at
      the best threshold); the counts `total`, `HasAns_total`, `NoAns_total`; the thresholds
      `best_exact_thresh`, `best_f1_thresh`; and, as fractions in [0, 1] like the original,
      `has_ans_exact`, `has_ans_f1`: the unthresholded mean over the answerable questions.

    Raises:
      ValueError: no examples, or a question has no prediction or no null odds.
    """
    if not examples:
        raise ValueError("evaluate_v2: no examples")
    _check_covered(examples, predictions, "prediction")
    if null_odds is None:
        odds = {e.qas_id: 0.0 for e in examples}
    else:
        _check_covered(examples, null_odds, "null odds")
        odds = {e.qas_id: float(null_odds[e.qas_id]) for e in examples}

    exact_raw, f1_raw, has_ans = {}, {}, {}
    for example in examples:
        golds = [a for a in example.answers if normalize_answer(a)] or [""]
        prediction = predictions[example.qas_id]
        has_ans[example.qas_id] = bool(example.answers)
        exact_raw[example.qas_id] = max(exact_score(prediction, g) for g in golds)
        f1_raw[example.qas_id] = max(f1_score(prediction, g) for g in golds)

    def thresholded(raw):
        return {q: float(not has_ans[q]) if odds[q] > na_prob_thresh else s for q, s in raw.items()}

    exact_thresh, f1_thresh = thresholded(exact_raw), thresholded(f1_raw)
    qids = list(exact_raw)
    has_ans_qids = [q for q in qids if has_ans[q]]
    no_ans_qids = [q for q in qids if not has_ans[q]]
    out = {
        "exact": _mean_percent(exact_thresh, qids),
        "f1": _mean_percent(f1_thresh, qids),
        "total": len(qids),
    }
    for name, subset in (("HasAns", has_ans_qids), ("NoAns", no_ans_qids)):
        if subset:
            out[f"{name}_exact"] = _mean_percent(exact_thresh, subset)
            out[f"{name}_f1"] = _mean_percent(f1_thresh, subset)
            out[f"{name}_total"] = len(subset)
    out["best_exact"], out["best_exact_thresh"] = _best_threshold(exact_raw, has_ans, odds)
    out["best_f1"], out["best_f1_thresh"] = _best_threshold(f1_raw, has_ans, odds)
    if has_ans_qids:
        out["has_ans_exact"] = _mean_percent(exact_raw, has_ans_qids) / 100.0
        out["has_ans_f1"] = _mean_percent(f1_raw, has_ans_qids) / 100.0
    return out


def evaluate_v1(examples, predictions):
    """The official SQuAD v1.1 metrics: `exact_match` and `f1` in percent.

    Every answer text is a gold answer; the score of a question is the maximum over them. Unlike
    v2.0, F1 is 0 when the prediction or the gold answer normalizes to "".

    Raises:
      ValueError: no examples, a question has no prediction, or a question has no gold answer
        (unanswerable questions need `evaluate_v2`).
    """
    if not examples:
        raise ValueError("evaluate_v1: no examples")
    _check_covered(examples, predictions, "prediction")
    unanswerable = [e.qas_id for e in examples if not e.answers]
    if unanswerable:
        raise ValueError(
            f"evaluate_v1: {len(unanswerable)} question(s) have no gold answer, e.g. "
            f"{unanswerable[:3]}; use evaluate_v2"
        )
    exact = f1 = 0.0
    for example in examples:
        pred_tokens = normalize_answer(predictions[example.qas_id]).split()
        exact += max(exact_score(predictions[example.qas_id], g) for g in example.answers)
        f1 += max(_overlap_f1(pred_tokens, normalize_answer(g).split()) for g in example.answers)
    return {"exact_match": 100.0 * exact / len(examples), "f1": 100.0 * f1 / len(examples)}


# ---------------------------------------------------------------------------------------------
# Ensemble


def ensemble_nbest(nbest_list, null_odds_list):
    """Averages n-best probabilities per text and null odds over checkpoints.

    A text missing from a checkpoint's n-best list counts as probability 0 there. The merged list
    holds every text of any checkpoint, by decreasing mean probability (ties: first seen first);
    its log-probabilities are the means over the checkpoints that list the text. The prediction is
    the most probable non-empty text ("" if there is none).

    Args:
      nbest_list: list of `nbest` dicts (qas_id -> entries) of `decode_predictions`, one per
        checkpoint.
      null_odds_list: list of `null_odds` dicts, in the same order.

    Returns:
      (predictions, nbest, null_odds) in the format of `decode_predictions`.

    Raises:
      ValueError: no checkpoints, lists of different lengths, or checkpoints with different
        questions.
    """
    if not nbest_list or len(nbest_list) != len(null_odds_list):
        raise ValueError(
            f"ensemble_nbest: need one null-odds dict per n-best dict, got {len(nbest_list)} and "
            f"{len(null_odds_list)}"
        )
    qids = list(nbest_list[0])
    for run in itertools.chain(nbest_list, null_odds_list):
        if set(run) != set(qids):
            raise ValueError(
                "ensemble_nbest: the checkpoints' predictions cover different questions"
            )
    n_runs = len(nbest_list)
    predictions, nbest, null_odds = {}, {}, {}
    for qid in qids:
        # text -> [probability sum, start log-prob sum, end log-prob sum, number of lists]
        merged = {}
        for run in nbest_list:
            for entry in run[qid]:
                acc = merged.setdefault(entry["text"], [0.0, 0.0, 0.0, 0])
                acc[0] += entry["probability"]
                acc[1] += entry["start_log_prob"]
                acc[2] += entry["end_log_prob"]
                acc[3] += 1
        entries = [
            {
                "text": text,
                "probability": prob / n_runs,
                "start_log_prob": start / count,
                "end_log_prob": end / count,
            }
            for text, (prob, start, end, count) in merged.items()
        ]
        entries.sort(key=lambda e: e["probability"], reverse=True)
        nbest[qid] = entries
        predictions[qid] = next((e["text"] for e in entries if e["text"]), "")
        null_odds[qid] = sum(float(run[qid]) for run in null_odds_list) / n_runs
    return predictions, nbest, null_odds


# ---------------------------------------------------------------------------------------------
# Files


def prediction_file_paths(output_dir, prefix):
    """dict kind -> `{output_dir}/{prefix}.{kind}.json` for the kinds of `PREDICTION_FILE_KINDS`."""
    return {
        kind: os.path.join(output_dir, f"{prefix}.{kind}.json") for kind in PREDICTION_FILE_KINDS
    }


def write_prediction_files(output_dir, prefix, predictions, nbest, null_odds):
    """Writes `{prefix}.predictions.json`, `{prefix}.nbest_predictions.json`, `{prefix}.null_odds.json`.

    Each file is written through a temporary file and renamed into place, so a reader (the
    ensemble, a later evaluation) never sees a half-written one. `output_dir` is created if needed;
    local and gs:// paths work.

    Returns:
      dict kind -> path, as `prediction_file_paths`.
    """
    # Imported here: data_utils brings in TensorFlow (tf.io.gfile), which decoding and evaluation
    # do not need.
    import tensorflow as tf

    import data_utils

    tf.io.gfile.makedirs(output_dir)
    paths = prediction_file_paths(output_dir, prefix)
    for kind, obj in zip(PREDICTION_FILE_KINDS, (predictions, nbest, null_odds), strict=True):
        data_utils.atomic_write_json(paths[kind], obj, indent=4)
    return paths


def read_prediction_files(output_dir, prefix):
    """Reads back the files of `write_prediction_files`: (predictions, nbest, null_odds)."""
    # See write_prediction_files.
    import tensorflow as tf

    paths = prediction_file_paths(output_dir, prefix)
    loaded = []
    for kind in PREDICTION_FILE_KINDS:
        with tf.io.gfile.GFile(paths[kind], "r") as f:
            loaded.append(json.load(f))
    return tuple(loaded)
