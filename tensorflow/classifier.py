"""Finetune and evaluate Funnel-Transformer on GLUE and text classification (SPEC §6.1).

    python tensorflow/classifier.py --do_train --do_eval --task_name=mrpc --data_dir=glue/MRPC \\
      --output_dir=proc_data/mrpc --model_dir=exp/mrpc --tokenizer_path=vocab.uncased.txt \\
      --model_config=net_config.json --init_checkpoint=model.ckpt --num_core_per_host=1

Steps, each optional:
  --do_train: raw data -> cached tfrecords in --output_dir, finetuning with the training engine
    (checkpoints `model_dir/model.ckpt-{step}`), then the marker directory `model_dir/done`.
  --do_eval: evaluates every checkpoint of --model_dir (or --eval_model_dir) on --eval_split, waiting for new
    ones until `done` exists; writes `model_dir/eval/{split}.ckpt-{step}.metrics.json`, the per-example
    `model_dir/eval/{split}.ckpt-{step}.predictions.jsonl`, and `model_dir/best_result.json`.
  --do_submit: predicts the test split with the best checkpoint and writes the GLUE submission files
    `{submit_dir}/{TASK}.tsv` and `{TASK}.logits.json` (MNLI-m also writes AX, the diagnostic set).
After evaluation, the evaluated checkpoints are deleted unless --retain_all (--retain_best keeps the best
one), as in the original.
"""

import startup  # noqa: F401 (first: TensorFlow's start-up lines stay off the console)

# isort: split
import functools
import json
import os

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

import classifier_utils
import data_utils
import modeling
import tokenization
import training

flags.DEFINE_bool("verbose", False, "Log every trainable variable.")
flags.DEFINE_string("output_dir", "", "Directory of the processed tfrecords.")
flags.DEFINE_string(
    "eval_model_dir", "", "Evaluate the checkpoints of this directory instead of --model_dir."
)
flags.DEFINE_string("data_dir", "", "Directory of the raw data.")
flags.DEFINE_bool("retain_all", False, "Keep every checkpoint after evaluation.")
flags.DEFINE_bool("retain_best", False, "Keep the best checkpoint after evaluation.")
flags.DEFINE_bool("overwrite_data", False, "Rebuild the tfrecords even if cached.")
flags.DEFINE_bool("overwrite", False, "Delete model_dir/eval before evaluating.")
flags.DEFINE_bool("do_train", False, "Finetune.")
flags.DEFINE_bool("do_eval", False, "Evaluate the saved checkpoints.")
flags.DEFINE_bool("do_predict", False, "Only triggers the checkpoint clean-up, as in the original.")
flags.DEFINE_bool("do_submit", False, "Write GLUE submission files with the best checkpoint.")
flags.DEFINE_bool(
    "eval_all_ckpt", True, "Evaluate every checkpoint (the default); false: only the latest one."
)
flags.DEFINE_string("eval_split", "dev", "Split to evaluate: dev or test.")
flags.DEFINE_integer("eval_start_step", -1, "Evaluate only checkpoints after this step.")
flags.DEFINE_integer("eval_end_step", 10000000, "Evaluate only checkpoints up to this step.")
flags.DEFINE_integer("eval_batch_size", 8, "Global evaluation batch size.")
flags.DEFINE_integer("predict_batch_size", 8, "Global batch size of the submission predictions.")
flags.DEFINE_string("submit_dir", None, "Submission directory; default model_dir/submit.")
flags.DEFINE_string("task_name", None, "Task, e.g. mrpc, sts-b, mnli_matched, imdb.")
flags.DEFINE_integer("max_seq_length", 128, "Sequence length.")
flags.DEFINE_integer("shuffle_buffer", 2048, "Shuffle buffer of the training input.")
flags.DEFINE_bool(
    "shuffle_examples", True, "Shuffle training examples before writing the tfrecord."
)
flags.DEFINE_integer("num_passes", 1, "Write the training examples this many times.")
flags.DEFINE_string("cls_scope", None, "Scope of the classification head; default: the task name.")
flags.DEFINE_bool(
    "skip_incomplete_rows",
    False,
    "Skip (and log) data rows with too few columns instead of failing.",
)
flags.DEFINE_bool("debug_mode", False, "Run tf.functions eagerly (slow; for debugging).")
training.define_engine_flags(num_core_per_host=8, train_steps=40000, iterations=1000)
training.define_model_flags()
training.define_optimizer_flags()
training.define_tokenizer_flags()

FLAGS = flags.FLAGS


def _validate_flags():
    """Flag checks that need no file access."""
    if not (FLAGS.do_train or FLAGS.do_eval or FLAGS.do_submit):
        raise ValueError("at least one of --do_train, --do_eval, --do_submit must be true")
    processor = classifier_utils.get_processor(FLAGS.task_name, FLAGS.skip_incomplete_rows)
    for flag in ("data_dir", "output_dir", "model_dir", "tokenizer_path"):
        if not getattr(FLAGS, flag):
            raise ValueError(f"--{flag} is required")
    if FLAGS.do_submit and processor.name not in classifier_utils.SUBMIT_NAMES:
        raise ValueError(
            f"--do_submit writes GLUE files; --task_name={FLAGS.task_name} is not a GLUE task"
        )
    if FLAGS.eval_split not in ("dev", "test"):
        raise ValueError(f"--eval_split={FLAGS.eval_split!r} must be dev or test")
    for flag in ("eval_batch_size", "predict_batch_size", "max_seq_length", "num_passes"):
        if getattr(FLAGS, flag) <= 0:
            raise ValueError(f"--{flag} must be > 0, got {getattr(FLAGS, flag)}")
    return processor


class Task:
    """The model side of one task: forward pass, training loss, predictions."""

    def __init__(self, model, processor, precision):
        self.model = model
        self.regression = processor.is_regression
        self.n_class = 1 if self.regression else len(processor.labels)
        self.scope = FLAGS.cls_scope or processor.name
        self.precision = precision

    def forward(self, features, is_training):
        """(per_example_loss float32 [B], outputs: logits float32 [B, n_class] or scores float32 [B])."""
        summary, _ = self.model.get_pooled_output(
            features["input_ids"],
            is_training,
            seg_id=features["segment_ids"],
            input_mask=features["input_mask"],
            use_tpu=FLAGS.use_tpu,
            precision=self.precision,
            truncate_seq=FLAGS.truncate_seq,
        )
        labels = features["label_ids"]
        if self.regression:
            return self.model.regression_loss(summary, labels, is_training, self.scope)
        return self.model.classification_loss(
            summary, labels, self.n_class, is_training, self.scope
        )

    def loss_fn(self, features, is_training):
        per_example_loss, outputs = self.forward(features, is_training)
        monitors = {}
        if not self.regression:
            predictions = tf.argmax(outputs, axis=-1, output_type=features["label_ids"].dtype)
            monitors["accuracy"] = tf.reduce_mean(
                tf.cast(tf.equal(predictions, features["label_ids"]), tf.float32)
            )
        return tf.reduce_mean(per_example_loss), monitors

    def predict_fn(self, features):
        per_example_loss, outputs = self.forward(features, False)
        return {
            "per_example_loss": per_example_loss,
            "outputs": outputs,
            "label_ids": features["label_ids"],
            "is_real_example": features["is_real_example"],
        }


def _create_tfrecord(processor, split, tokenizer, special_ids, data_dir=None, output_dir=None):
    return classifier_utils.create_tfrecord(
        processor,
        split,
        data_dir or FLAGS.data_dir,
        output_dir or FLAGS.output_dir,
        tokenizer,
        special_ids,
        FLAGS.max_seq_length,
        overwrite_data=FLAGS.overwrite_data,
        shuffle_examples=FLAGS.shuffle_examples,
        num_passes=FLAGS.num_passes,
        seed=FLAGS.seed,
    )


def _eval_dataset_fn(path, num_examples, regression, batch_size):
    def dataset_fn(input_context):
        return classifier_utils.make_dataset(
            path,
            FLAGS.max_seq_length,
            regression,
            batch_size,
            is_training=False,
            input_context=input_context,
            num_examples=num_examples,
        )

    return dataset_fn


def _write_predictions(path, processor, outputs):
    """One JSON line per real example: index, label, prediction (and logits for classification)."""
    lines = []
    for i, (label_id, out) in enumerate(zip(outputs["label_ids"], outputs["outputs"], strict=True)):
        if processor.is_regression:
            record = {"index": i, "label": float(label_id), "prediction": float(out)}
        else:
            record = {
                "index": i,
                "label": processor.labels[int(label_id)],
                "prediction": processor.labels[int(np.argmax(out))],
                "logits": [float(x) for x in out],
            }
        lines.append(json.dumps(record))
    data_utils.atomic_write_text(path, "\n".join(lines) + "\n")


def train(strategy, task, processor, tokenizer, special_ids, net_config):
    train_file, _ = _create_tfrecord(processor, "train", tokenizer, special_ids)

    def dataset_fn(input_context):
        return classifier_utils.make_dataset(
            train_file,
            FLAGS.max_seq_length,
            task.regression,
            FLAGS.train_batch_size,
            is_training=True,
            shuffle_buffer=FLAGS.shuffle_buffer,
            input_context=input_context,
            seed=FLAGS.seed,
        )

    training.finetune(strategy, task.loss_fn, dataset_fn, task.model, net_config, FLAGS)


def evaluate(strategy, task, processor, tokenizer, special_ids):
    """Evaluates the checkpoints; returns the evaluated [(step, path, metrics)] and the best one."""
    eval_file, meta = _create_tfrecord(processor, FLAGS.eval_split, tokenizer, special_ids)
    dataset_fn = _eval_dataset_fn(
        eval_file, meta["num_examples"], task.regression, FLAGS.eval_batch_size
    )
    training.build_variables(strategy, task.predict_fn, dataset_fn)

    eval_dir = os.path.join(FLAGS.model_dir, "eval")
    if FLAGS.overwrite and tf.io.gfile.exists(eval_dir):
        tf.io.gfile.rmtree(eval_dir)
    tf.io.gfile.makedirs(eval_dir)
    writer = tf.summary.create_file_writer(eval_dir)
    ckpt_dir = FLAGS.eval_model_dir or FLAGS.model_dir

    predictor = training.Predictor(strategy, task.predict_fn)

    def evaluate_checkpoint(step, path):
        training.restore_checkpoint([task.model], path)
        outputs = training.real_examples(predictor(dataset_fn))
        base = os.path.join(eval_dir, f"{FLAGS.eval_split}.ckpt-{step}")
        _write_predictions(f"{base}.predictions.jsonl", processor, outputs)
        return classifier_utils.compute_metrics(
            processor.name, outputs["label_ids"], outputs["outputs"], outputs["per_example_loss"]
        )

    results = training.evaluate_checkpoints(
        ckpt_dir,
        evaluate_checkpoint,
        os.path.join(eval_dir, f"{FLAGS.eval_split}.ckpt-{{step}}.metrics.json"),
        writer,
        FLAGS.eval_start_step,
        FLAGS.eval_end_step,
        latest_only=not FLAGS.eval_all_ckpt,
        timeout_secs=FLAGS.eval_timeout,
        settings=training.flag_settings(
            FLAGS,
            (
                "eval_model_dir",
                "task_name",
                "data_dir",
                "max_seq_length",
                "tokenizer_path",
                "uncased",
            ),
        ),
    )
    best = training.write_best_result(
        results,
        functools.partial(classifier_utils.selection_score, processor.name),
        functools.partial(classifier_utils.best_result_record, processor.name),
        FLAGS.model_dir,
    )
    return results, best


def submit(strategy, task, processor, tokenizer, special_ids, best):
    submit_dir = FLAGS.submit_dir or os.path.join(FLAGS.model_dir, "submit")
    if processor.name == "wnli":
        path = classifier_utils.write_wnli_submission(submit_dir)
        logging.info("Wrote %s (the original's all-majority WNLI submission).", path)
        return
    if best is None:
        # Where --do_eval writes it, also when it evaluated the checkpoints of --eval_model_dir.
        best_path = os.path.join(FLAGS.model_dir, "best_result.json")
        if not tf.io.gfile.exists(best_path):
            raise ValueError(f"{best_path} not found: run --do_eval with this --model_dir first")
        with tf.io.gfile.GFile(best_path) as f:
            best = json.load(f)
    ckpt = best["path"]
    names = [processor.name] + (["diagnostic"] if processor.name == "mnli_matched" else [])
    if not tf.io.gfile.exists(ckpt + ".index"):
        written = os.path.join(submit_dir, f"{classifier_utils.SUBMIT_NAMES[processor.name]}.tsv")
        if tf.io.gfile.exists(written):
            # A rerun of a finished command: its submission was written before the clean-up.
            logging.info("%s exists and %s was cleaned up: nothing to submit.", written, ckpt)
            return
        raise ValueError(
            f"the best checkpoint {ckpt} was deleted after evaluation: --retain_best keeps it"
        )
    for name in names:
        cur = classifier_utils.get_processor(name)
        data_dir, output_dir = FLAGS.data_dir, FLAGS.output_dir
        if name == "diagnostic":
            # GLUE keeps the diagnostic set beside the task directories.
            data_dir = classifier_utils.sibling_dir(FLAGS.data_dir, name)
            output_dir = classifier_utils.sibling_dir(FLAGS.output_dir, name)
        test_file, meta = _create_tfrecord(
            cur, "test", tokenizer, special_ids, data_dir, output_dir
        )
        dataset_fn = _eval_dataset_fn(
            test_file, meta["num_examples"], task.regression, FLAGS.predict_batch_size
        )
        training.build_variables(strategy, task.predict_fn, dataset_fn)
        training.restore_checkpoint([task.model], ckpt)
        outputs = training.real_examples(training.Predictor(strategy, task.predict_fn)(dataset_fn))
        labels = None if cur.is_regression else list(cur.labels)
        predictions = classifier_utils.submission_predictions(outputs["outputs"], labels)
        path = classifier_utils.write_submission(submit_dir, name, predictions, outputs["outputs"])
        logging.info("Wrote %s with checkpoint %s.", path, ckpt)


def run():
    processor = _validate_flags()
    if FLAGS.debug_mode:
        tf.config.run_functions_eagerly(True)
    strategy = training.get_strategy(FLAGS)
    if not tf.io.gfile.isdir(FLAGS.data_dir):
        raise ValueError(f"--data_dir={FLAGS.data_dir} does not exist")
    tokenizer = tokenization.get_tokenizer(
        FLAGS.tokenizer_type, FLAGS.tokenizer_path, FLAGS.uncased
    )
    special_ids = data_utils.setup_special_ids(tokenizer)
    data_utils.ensure_writable_dir(FLAGS.output_dir, "output_dir")
    net_config = training.model_config_for_run(
        strategy, FLAGS, special_ids.vocab_size, FLAGS.do_train, FLAGS.eval_model_dir
    )
    modeling.check_seq_len(net_config, FLAGS.max_seq_length, FLAGS.truncate_seq)
    precision = training.resolve_precision(FLAGS.use_bfloat16, FLAGS.precision)
    task = Task(
        modeling.FunnelTFM(net_config, seed=FLAGS.seed, recompute=FLAGS.recompute),
        processor,
        precision,
    )
    logging.info("Task %s, labels %s.", processor.name, processor.labels)

    if FLAGS.do_train:
        train(strategy, task, processor, tokenizer, special_ids, net_config)
    results, best = [], None
    if FLAGS.do_eval:
        results, best = evaluate(strategy, task, processor, tokenizer, special_ids)
    if FLAGS.do_submit:
        submit(strategy, task, processor, tokenizer, special_ids, best)
    if (FLAGS.do_eval or FLAGS.do_predict) and not FLAGS.retain_all:
        keep = [best["path"]] if FLAGS.retain_best and best else []
        training.delete_checkpoints([path for _, path, _ in results], keep)


def main(_):
    data_utils.run_main(run, FLAGS.verbose)


if __name__ == "__main__":
    app.run(main)
