"""Finetune and evaluate Funnel-Transformer on SQuAD 2.0 and 1.1 (SPEC §2.11, §6.3).

    python tensorflow/squad.py --do_train --do_predict --train_file=train-v2.0.json \\
      --predict_file=dev-v2.0.json --output_dir=proc_data/squad --model_dir=exp/squad \\
      --tokenizer_path=vocab.uncased.txt --model_config=net_config.json --init_checkpoint=model.ckpt

Steps, each optional:
  --prepro_split=train|eval: only preprocess (the training shard --proc_id of --num_proc, or the evaluation
    file) into --output_dir and exit; `scripts/prepro_squad.sh` runs the training shards in parallel.
  --do_train: preprocesses what is missing (every shard of --num_proc), then finetunes with the training
    engine (checkpoints `model_dir/model.ckpt-{step}`, then `model_dir/done`).
  --do_predict: predicts --predict_file with every checkpoint of --model_dir, waiting for new ones until
    `done` exists, and writes into --predict_dir (default `model_dir/predict`) per checkpoint
    `{step}.predictions.json` (the best non-null answer of each question), `{step}.nbest_predictions.json`,
    `{step}.null_odds.json`, `{step}.final_predictions.json` (the answers with the null threshold applied:
    "" = no answer, the file to submit) and `{step}.metrics.json`; then `model_dir/best_result.json`, the
    checkpoint best by --target_eval_key.
  --do_ensemble: averages the n-best probabilities and null odds of --ensemble_ckpts and writes the
    answers to --ensemble_output_file (with the metrics beside it).
After prediction the evaluated checkpoints are deleted unless --retain_all (--retain_best keeps the best),
as in the original.
"""

import startup  # noqa: F401 (first: TensorFlow's start-up lines stay off the console)

# isort: split
import json
import os

import tensorflow as tf
from absl import app, flags, logging

import data_utils
import model_utils
import modeling
import squad_metrics
import squad_prepro
import tokenization
import training

flags.DEFINE_bool("verbose", False, "Log every trainable variable.")
flags.DEFINE_enum(
    "prepro_split",
    None,
    ["train", "eval"],
    "Only preprocess this split into --output_dir, then exit.",
)
flags.DEFINE_integer("num_proc", 1, "Training preprocessing runs as this many shards.")
flags.DEFINE_integer(
    "proc_id", 0, "The shard this process preprocesses (with --prepro_split=train)."
)
flags.DEFINE_integer(
    "num_workers",
    None,
    "Processes that preprocess one file (one shard) in parallel; default: every core.",
)
flags.DEFINE_integer("max_seq_length", 512, "Sequence length.")
flags.DEFINE_integer("max_query_length", 64, "Question pieces kept (from the front).")
flags.DEFINE_integer("doc_stride", 128, "Paragraph tokens between the starts of two windows.")
flags.DEFINE_integer("max_answer_length", 64, "Longest answer, in tokens.")
flags.DEFINE_bool(
    "keep_accents",
    False,
    "Accepted for compatibility: the original's character alignment used it; ours aligns through the "
    "tokenizer's own normalization (--uncased decides the accents).",
)
flags.DEFINE_enum("train_version", "v2", ["v1", "v2"], "SQuAD version of --train_file.")
flags.DEFINE_enum("eval_version", "v2", ["v1", "v2"], "SQuAD version of --predict_file.")
flags.DEFINE_integer("shuffle_buffer", 2048, "Shuffle buffer of the training input.")
flags.DEFINE_bool("retain_all", False, "Keep every checkpoint after prediction.")
flags.DEFINE_bool("retain_best", False, "Keep the best checkpoint after prediction.")
flags.DEFINE_string("output_dir", "", "Directory of the preprocessed tfrecords.")
flags.DEFINE_string("predict_dir", "", "Prediction files; default model_dir/predict.")
flags.DEFINE_string("train_file", "", "SQuAD json to train on.")
flags.DEFINE_string("predict_file", "", "SQuAD json to predict and evaluate.")
flags.DEFINE_bool("do_train", False, "Finetune.")
flags.DEFINE_bool("do_predict", False, "Predict and evaluate the saved checkpoints.")
flags.DEFINE_integer("eval_start_step", -1, "Predict only with checkpoints after this step.")
flags.DEFINE_integer("eval_end_step", 10000000, "Predict only with checkpoints up to this step.")
flags.DEFINE_integer("predict_batch_size", 128, "Global prediction batch size.")
flags.DEFINE_string(
    "target_eval_key", "best_f1", "Metric that selects the best checkpoint (f1 for v1)."
)
flags.DEFINE_integer("n_best_size", 5, "Answers kept per question in the n-best file.")
flags.DEFINE_integer("start_n_top", 5, "Beam size of the start positions.")
flags.DEFINE_integer("end_n_top", 5, "Beam size of the end positions, per start.")
flags.DEFINE_bool("do_ensemble", False, "Ensemble the predictions of --ensemble_ckpts.")
flags.DEFINE_list("ensemble_ckpts", None, "Comma-separated checkpoints to ensemble.")
flags.DEFINE_bool(
    "search_threshold",
    False,
    "Answer with the null threshold that maximizes F1 on --predict_file (it has the answers); "
    "else --na_threshold.",
)
flags.DEFINE_float(
    "na_threshold", 0.0, "Null odds above which a question is answered with no answer."
)
flags.DEFINE_string(
    "ensemble_output_file",
    "",
    "Answers of the ensemble; default model_dir/ensemble_predictions.json.",
)
flags.DEFINE_bool(
    "use_answer_class", True, "Answerability head on the start distribution and <cls>."
)
flags.DEFINE_bool("use_masked_loss", True, "No probability outside the paragraph (p_mask).")
flags.DEFINE_bool("conditional_end", True, "End logits conditioned on the start.")
flags.DEFINE_float("cls_loss_weight", 0.5, "Weight of the answerability loss.")
flags.DEFINE_float("ans_loss_weight", 0.5, "Weight of the start and end losses.")
flags.DEFINE_bool("debug_mode", False, "Run tf.functions eagerly (slow; for debugging).")
training.define_engine_flags(
    num_core_per_host=8, train_steps=5500, iterations=1000, train_batch_size=128
)
training.define_model_flags()
training.define_optimizer_flags()
training.define_tokenizer_flags()

FLAGS = flags.FLAGS


def _validate_flags():
    """Flag checks that need no file access."""
    if not (FLAGS.prepro_split or FLAGS.do_train or FLAGS.do_predict or FLAGS.do_ensemble):
        raise ValueError(
            "nothing to do: give --prepro_split, --do_train, --do_predict or --do_ensemble"
        )
    required = ["output_dir", "tokenizer_path"]
    if FLAGS.do_train or FLAGS.do_predict or FLAGS.do_ensemble:
        required.append("model_dir")
    if FLAGS.do_train or FLAGS.prepro_split == "train":
        required.append("train_file")
    if FLAGS.do_predict or FLAGS.do_ensemble or FLAGS.prepro_split == "eval":
        required.append("predict_file")
    for flag in required:
        if not getattr(FLAGS, flag):
            raise ValueError(f"--{flag} is required")
    if not 0 <= FLAGS.proc_id < FLAGS.num_proc:
        raise ValueError(f"--proc_id={FLAGS.proc_id} must be in [0, --num_proc={FLAGS.num_proc})")
    if FLAGS.do_ensemble and not FLAGS.ensemble_ckpts:
        raise ValueError("--do_ensemble needs --ensemble_ckpts")
    for flag in ("max_seq_length", "max_query_length", "doc_stride", "max_answer_length"):
        if getattr(FLAGS, flag) <= 0:
            raise ValueError(f"--{flag} must be > 0, got {getattr(FLAGS, flag)}")
    for flag in ("predict_batch_size", "n_best_size", "start_n_top", "end_n_top"):
        if getattr(FLAGS, flag) <= 0:
            raise ValueError(f"--{flag} must be > 0, got {getattr(FLAGS, flag)}")
    if FLAGS.start_n_top > FLAGS.max_seq_length or FLAGS.end_n_top > FLAGS.max_seq_length:
        raise ValueError("--start_n_top and --end_n_top must not exceed --max_seq_length")
    if (
        FLAGS.do_predict
        and FLAGS.eval_version == "v2"
        and FLAGS.target_eval_key not in squad_metrics.V2_SCORES
    ):
        raise ValueError(
            f"--target_eval_key={FLAGS.target_eval_key!r} is not a SQuAD 2.0 score: one of "
            f"{', '.join(squad_metrics.V2_SCORES)}"
        )


# What a checkpoint's predictions and metrics depend on.
_PREDICTION_FLAGS = (
    "model_dir",
    "predict_file",
    "eval_version",
    "max_seq_length",
    "max_query_length",
    "doc_stride",
    "tokenizer_path",
    "uncased",
    "n_best_size",
    "max_answer_length",
    "start_n_top",
    "end_n_top",
    "use_answer_class",
    "search_threshold",
    "na_threshold",
)


def _target_eval_key():
    """--target_eval_key; the original forced f1 for v1, whose metrics have no best_* keys."""
    return "f1" if FLAGS.eval_version == "v1" else FLAGS.target_eval_key


class Task:
    """The model side of SQuAD: the training loss and the beam search of predictions."""

    def __init__(self, model, precision):
        self.model = model
        self.precision = precision
        self.head = dict(
            use_answer_class=FLAGS.use_answer_class,
            use_masked_loss=FLAGS.use_masked_loss,
            conditional_end=FLAGS.conditional_end,
            use_tpu=FLAGS.use_tpu,
            precision=precision,
        )

    def loss_fn(self, features, is_training):
        per_example_loss, _ = self.model.get_squad_loss(
            features,
            is_training,
            cls_loss_weight=FLAGS.cls_loss_weight,
            ans_loss_weight=FLAGS.ans_loss_weight,
            **self.head,
        )
        return tf.reduce_mean(per_example_loss), {}

    def predict_fn(self, features):
        outputs = self.model.get_squad_predictions(
            features, FLAGS.start_n_top, FLAGS.end_n_top, **self.head
        )
        return {**outputs, "unique_ids": features["unique_ids"]}


def _prepro_settings(tokenizer, special_ids):
    return dict(
        tokenizer=tokenizer,
        special_ids=special_ids,
        max_seq_length=FLAGS.max_seq_length,
        doc_stride=FLAGS.doc_stride,
        max_query_length=FLAGS.max_query_length,
        output_dir=FLAGS.output_dir,
        num_workers=FLAGS.num_workers,
    )


def preprocess_train(tokenizer, special_ids, proc_ids):
    """The training tfrecords of shards `proc_ids` (cached); returns their paths."""
    paths = []
    for proc_id in proc_ids:
        path, _ = squad_prepro.create_squad_tfrecord(
            FLAGS.train_file,
            True,
            FLAGS.train_version,
            num_proc=FLAGS.num_proc,
            proc_id=proc_id,
            seed=FLAGS.seed,
            **_prepro_settings(tokenizer, special_ids),
        )
        paths.append(path)
    return paths


def preprocess_eval(tokenizer, special_ids):
    """(tfrecord path, meta) of --predict_file (cached)."""
    return squad_prepro.create_squad_tfrecord(
        FLAGS.predict_file, False, FLAGS.eval_version, **_prepro_settings(tokenizer, special_ids)
    )


def train(strategy, task, tokenizer, special_ids, net_config):
    train_files = preprocess_train(tokenizer, special_ids, range(FLAGS.num_proc))

    def dataset_fn(input_context):
        return squad_prepro.make_dataset(
            train_files,
            FLAGS.max_seq_length,
            is_training=True,
            batch_size=FLAGS.train_batch_size,
            input_context=input_context,
            shuffle_buffer=FLAGS.shuffle_buffer,
            seed=FLAGS.seed,
        )

    training.finetune(strategy, task.loss_fn, dataset_fn, task.model, net_config, FLAGS)


class _EvalData:
    """The evaluation examples, their features' metadata, and a prediction function over checkpoints."""

    def __init__(self, strategy, task, tokenizer, special_ids):
        record_path, meta = preprocess_eval(tokenizer, special_ids)
        self.examples = squad_prepro.read_squad_examples(
            FLAGS.predict_file, False, FLAGS.eval_version
        )
        paths = squad_prepro.squad_file_paths(
            FLAGS.output_dir,
            tokenizer.name,
            FLAGS.max_seq_length,
            FLAGS.max_query_length,
            False,
            FLAGS.eval_version,
        )
        self.features = list(squad_prepro.read_eval_features(paths["features"]))
        self.strategy, self.task = strategy, task

        def dataset_fn(input_context):
            return squad_prepro.make_dataset(
                record_path,
                FLAGS.max_seq_length,
                is_training=False,
                batch_size=FLAGS.predict_batch_size,
                input_context=input_context,
                num_features=meta["num_features"],
            )

        self.dataset_fn = dataset_fn
        training.build_variables(strategy, task.predict_fn, dataset_fn)
        self.predictor = training.Predictor(strategy, task.predict_fn)

    def predict(self, checkpoint):
        """(predictions, nbest, null_odds) of `checkpoint`."""
        training.restore_checkpoint([self.task.model], checkpoint)
        outputs = self.predictor(self.dataset_fn)
        results = {}
        for i, unique_id in enumerate(outputs["unique_ids"]):
            if unique_id != squad_prepro.PAD_UNIQUE_ID:
                results[int(unique_id)] = {k: v[i] for k, v in outputs.items()}
        return squad_metrics.decode_predictions(
            self.examples,
            self.features,
            results,
            n_best_size=FLAGS.n_best_size,
            max_answer_length=FLAGS.max_answer_length,
            start_n_top=FLAGS.start_n_top,
            end_n_top=FLAGS.end_n_top,
            use_answer_class=FLAGS.use_answer_class,
        )

    def evaluate(self, predictions, null_odds):
        """The metrics of FLAGS.eval_version and the null threshold the answers use.

        v2's exact, f1 and HasAns/NoAns scores are taken at that threshold: they are the official
        scores of the final answers written.
        """
        if FLAGS.eval_version == "v1":
            return squad_metrics.evaluate_v1(self.examples, predictions), None
        threshold = FLAGS.na_threshold
        if FLAGS.search_threshold:
            searched = squad_metrics.evaluate_v2(self.examples, predictions, null_odds)
            threshold = searched["best_f1_thresh"]
        metrics = squad_metrics.evaluate_v2(self.examples, predictions, null_odds, threshold)
        return metrics, threshold

    def write(self, output_dir, prefix, predictions, nbest, null_odds):
        """Writes the prediction files and the final answers; returns (metrics, final answers)."""
        squad_metrics.write_prediction_files(output_dir, prefix, predictions, nbest, null_odds)
        metrics, threshold = self.evaluate(predictions, null_odds)
        answers = predictions
        if threshold is not None:
            answers = squad_metrics.apply_null_threshold(predictions, null_odds, threshold)
            metrics["null_threshold"] = threshold
        data_utils.atomic_write_json(
            os.path.join(output_dir, f"{prefix}.final_predictions.json"), answers, indent=4
        )
        return metrics, answers


def predict(strategy, task, tokenizer, special_ids):
    """Predicts with every checkpoint; returns the [(step, path, metrics)] and the best record."""
    data = _EvalData(strategy, task, tokenizer, special_ids)
    predict_dir = FLAGS.predict_dir or os.path.join(FLAGS.model_dir, "predict")
    tf.io.gfile.makedirs(predict_dir)
    key = _target_eval_key()

    def evaluate_checkpoint(step, path):
        predictions, nbest, null_odds = data.predict(path)
        metrics, _ = data.write(predict_dir, str(step), predictions, nbest, null_odds)
        return metrics

    results = training.evaluate_checkpoints(
        FLAGS.model_dir,
        evaluate_checkpoint,
        os.path.join(predict_dir, "{step}.metrics.json"),
        tf.summary.create_file_writer(predict_dir),
        FLAGS.eval_start_step,
        FLAGS.eval_end_step,
        timeout_secs=FLAGS.eval_timeout,
        settings=training.flag_settings(FLAGS, _PREDICTION_FLAGS),
    )
    if key not in results[0][2]:
        raise ValueError(
            f"--target_eval_key={key!r} is not a metric; metrics: {', '.join(sorted(results[0][2]))}"
        )
    best = training.write_best_result(
        results,
        lambda metrics: metrics[key],
        lambda metrics, step, path: {"step": step, "path": path, "target_eval_key": key, **metrics},
        FLAGS.model_dir,
    )
    return results, best


def ensemble(strategy, task, tokenizer, special_ids):
    """Averages the n-best lists and null odds of --ensemble_ckpts; writes the answers and metrics."""
    data = _EvalData(strategy, task, tokenizer, special_ids)
    nbest_list, null_odds_list = [], []
    for checkpoint in FLAGS.ensemble_ckpts:
        path = model_utils.resolve_checkpoint(checkpoint)
        _, nbest, null_odds = data.predict(path)
        nbest_list.append(nbest)
        null_odds_list.append(null_odds)
        logging.info("Predicted with %s.", path)
    predictions, nbest, null_odds = squad_metrics.ensemble_nbest(nbest_list, null_odds_list)
    output_file = FLAGS.ensemble_output_file or os.path.join(
        FLAGS.model_dir, "ensemble_predictions.json"
    )
    output_dir, name = os.path.split(output_file)
    prefix = (name[: -len(".json")] if name.endswith(".json") else name) + ".ensemble"
    output_dir = output_dir or "."
    metrics, answers = data.write(output_dir, prefix, predictions, nbest, null_odds)
    data_utils.atomic_write_json(
        os.path.join(output_dir, f"{prefix}.metrics.json"),
        {"checkpoints": FLAGS.ensemble_ckpts, **metrics},
        indent=4,
    )
    data_utils.atomic_write_json(output_file, answers, indent=4)
    logging.info("Ensemble of %d: %s", len(nbest_list), json.dumps(metrics))
    return metrics


def run():
    _validate_flags()
    if FLAGS.debug_mode:
        tf.config.run_functions_eagerly(True)
    tokenizer = tokenization.get_tokenizer(
        FLAGS.tokenizer_type, FLAGS.tokenizer_path, FLAGS.uncased
    )
    special_ids = data_utils.setup_special_ids(tokenizer)
    data_utils.ensure_writable_dir(FLAGS.output_dir, "output_dir")
    if FLAGS.prepro_split == "train":
        preprocess_train(tokenizer, special_ids, [FLAGS.proc_id])
        return
    if FLAGS.prepro_split == "eval":
        preprocess_eval(tokenizer, special_ids)
        return
    strategy = training.get_strategy(FLAGS)
    net_config = training.model_config_for_run(
        strategy, FLAGS, special_ids.vocab_size, FLAGS.do_train
    )
    modeling.check_seq_len(net_config, FLAGS.max_seq_length, FLAGS.truncate_seq, use_decoder=True)
    precision = training.resolve_precision(FLAGS.use_bfloat16, FLAGS.precision)
    task = Task(
        modeling.FunnelTFM(net_config, seed=FLAGS.seed, recompute=FLAGS.recompute), precision
    )

    if FLAGS.do_train:
        train(strategy, task, tokenizer, special_ids, net_config)
    if FLAGS.do_predict:
        results, best = predict(strategy, task, tokenizer, special_ids)
        if not FLAGS.retain_all:
            keep = [best["path"]] if FLAGS.retain_best and best else []
            training.delete_checkpoints([path for _, path, _ in results], keep)
    if FLAGS.do_ensemble:
        ensemble(strategy, task, tokenizer, special_ids)


def main(_):
    data_utils.run_main(run, FLAGS.verbose)


if __name__ == "__main__":
    app.run(main)
