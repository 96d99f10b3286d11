"""Finetune and evaluate Funnel-Transformer on RACE multiple-choice reading comprehension (SPEC §6.2).

    python tensorflow/race.py --do_train --do_eval --data_dir=RACE --output_dir=proc_data/race \\
      --model_dir=exp/race --tokenizer_path=vocab.uncased.txt --model_config=net_config.json \\
      --init_checkpoint=model.ckpt --num_core_per_host=1 --train_batch_size=16 --eval_batch_size=16 \\
      --learning_rate=2e-5 --train_steps=24000 --warmup_steps=2400 --save_steps=2400

Steps, each optional:
  --do_train: raw data -> cached tfrecords in --output_dir, finetuning with the training engine
    (checkpoints `model_dir/model.ckpt-{step}`), then the marker directory `model_dir/done`.
  --do_eval: evaluates every checkpoint of --model_dir (or --eval_model_dir) on --eval_split, waiting for new
    ones until `done` exists; writes `model_dir/eval/{split}.ckpt-{step}.metrics.json` (accuracy overall,
    of high-school and of middle-school questions, loss), the per-question
    `model_dir/eval/{split}.ckpt-{step}.predictions.jsonl`, and `model_dir/best_result.json`.
The tfrecords of both steps are written before training starts, so bad data stops the run at once.
After evaluation, the evaluated checkpoints are deleted unless --retain_all (--retain_best keeps the best
one), as in the original.
"""

import startup  # noqa: F401 (first: TensorFlow's start-up lines stay off the console)

# isort: split
import json
import os

import tensorflow as tf
from absl import app, flags

import data_utils
import modeling
import race_utils
import tokenization
import training

flags.DEFINE_bool("verbose", False, "Log every trainable variable.")
flags.DEFINE_string("output_dir", "", "Directory of the processed tfrecords.")
flags.DEFINE_string("data_dir", "", "RACE directory: {train,dev,test}/{middle,high}/*.txt.")
flags.DEFINE_bool("retain_all", False, "Keep every checkpoint after evaluation.")
flags.DEFINE_bool("retain_best", False, "Keep the best checkpoint after evaluation.")
flags.DEFINE_bool("overwrite_data", False, "Rebuild the tfrecords even if cached.")
flags.DEFINE_bool("overwrite", False, "Delete model_dir/eval before evaluating.")
flags.DEFINE_bool("do_train", False, "Finetune.")
flags.DEFINE_bool("do_eval", False, "Evaluate the saved checkpoints.")
flags.DEFINE_string(
    "eval_model_dir", "", "Evaluate the checkpoints of this directory instead of --model_dir."
)
flags.DEFINE_string("eval_split", "dev", "Split to evaluate: dev or test (or train).")
flags.DEFINE_integer("eval_start_step", -1, "Evaluate only checkpoints after this step.")
flags.DEFINE_integer("eval_end_step", 10000000, "Evaluate only checkpoints up to this step.")
flags.DEFINE_integer("eval_batch_size", 128, "Global evaluation batch size (questions).")
flags.DEFINE_integer("max_seq_length", 512, "Length of each choice's sequence.")
flags.DEFINE_integer(
    "max_qa_length", 128, "Most question+option pieces per choice (the last ones are kept)."
)
flags.DEFINE_integer("shuffle_buffer", 2048, "Shuffle buffer of the training input.")
training.define_engine_flags(
    num_core_per_host=8, train_steps=40000, iterations=1000, train_batch_size=128
)
training.define_model_flags()
training.define_optimizer_flags()
training.define_tokenizer_flags()

FLAGS = flags.FLAGS


def _validate_flags():
    """Flag checks that need no file access."""
    # The original named the undefined --do_predict / --do_submit here (SPEC §10.9).
    if not (FLAGS.do_train or FLAGS.do_eval):
        raise ValueError("at least one of --do_train, --do_eval must be true")
    for flag in ("data_dir", "output_dir", "model_dir", "tokenizer_path"):
        if not getattr(FLAGS, flag):
            raise ValueError(f"--{flag} is required")
    if FLAGS.eval_split not in race_utils.SPLITS:
        raise ValueError(
            f"--eval_split={FLAGS.eval_split!r} must be one of {', '.join(race_utils.SPLITS)}"
        )
    for flag in ("eval_batch_size", "max_seq_length", "max_qa_length", "shuffle_buffer"):
        if getattr(FLAGS, flag) <= 0:
            raise ValueError(f"--{flag} must be > 0, got {getattr(FLAGS, flag)}")
    if FLAGS.max_qa_length > FLAGS.max_seq_length - 3:
        raise ValueError(
            f"--max_qa_length={FLAGS.max_qa_length} must be at most --max_seq_length - 3 = "
            f"{FLAGS.max_seq_length - 3} ([cls] QA [sep] passage [sep])"
        )


class Task:
    """The model side of RACE: forward pass, training loss, predictions."""

    def __init__(self, model, precision, use_tpu):
        self.model = model
        self.precision = precision
        self.use_tpu = use_tpu

    def forward(self, features, is_training):
        """(per_example_loss float32 [B], logits float32 [B, NUM_CHOICES]).

        features: input_ids / segment_ids int32 [B, 4·L], input_mask float32 [B, 4·L], label_ids int32 [B].
        """
        return self.model.get_race_loss(
            features["label_ids"],
            features["input_ids"],
            is_training,
            seg_id=features["segment_ids"],
            input_mask=features["input_mask"],
            use_tpu=self.use_tpu,
            precision=self.precision,
            n_choice=race_utils.NUM_CHOICES,
            truncate_seq=FLAGS.truncate_seq,
        )

    def loss_fn(self, features, is_training):
        per_example_loss, logits = self.forward(features, is_training)
        predictions = tf.argmax(logits, axis=-1, output_type=features["label_ids"].dtype)
        accuracy = tf.reduce_mean(tf.cast(tf.equal(predictions, features["label_ids"]), tf.float32))
        return tf.reduce_mean(per_example_loss), {"accuracy": accuracy}

    def predict_fn(self, features):
        per_example_loss, logits = self.forward(features, False)
        return {
            "per_example_loss": per_example_loss,
            "logits": logits,
            "label_ids": features["label_ids"],
            "is_real_example": features["is_real_example"],
        }


def _create_tfrecord(split, tokenizer, special_ids):
    return race_utils.create_tfrecord(
        split,
        FLAGS.data_dir,
        FLAGS.output_dir,
        tokenizer,
        special_ids,
        FLAGS.max_seq_length,
        FLAGS.max_qa_length,
        overwrite_data=FLAGS.overwrite_data,
        seed=FLAGS.seed,
    )


def train(strategy, task, train_file, net_config):
    def dataset_fn(input_context):
        return race_utils.make_dataset(
            train_file,
            FLAGS.max_seq_length,
            FLAGS.train_batch_size,
            is_training=True,
            shuffle_buffer=FLAGS.shuffle_buffer,
            input_context=input_context,
            seed=FLAGS.seed,
        )

    training.finetune(strategy, task.loss_fn, dataset_fn, task.model, net_config, FLAGS)


def evaluate(strategy, task, eval_file, meta):
    """Evaluates the checkpoints; returns the evaluated [(step, path, metrics)] and the best one."""

    def dataset_fn(input_context):
        return race_utils.make_dataset(
            eval_file,
            FLAGS.max_seq_length,
            FLAGS.eval_batch_size,
            is_training=False,
            input_context=input_context,
            num_examples=meta["num_examples"],
        )

    training.build_variables(strategy, task.predict_fn, dataset_fn)
    index = race_utils.read_record_index(eval_file)

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
        records = race_utils.prediction_records(index, outputs["logits"])
        data_utils.atomic_write_text(
            os.path.join(eval_dir, f"{FLAGS.eval_split}.ckpt-{step}.predictions.jsonl"),
            "".join(json.dumps(r) + "\n" for r in records),
        )
        return race_utils.compute_metrics(
            outputs["label_ids"],
            outputs["logits"],
            outputs["per_example_loss"],
            index["is_high_example"],
        )

    results = training.evaluate_checkpoints(
        ckpt_dir,
        evaluate_checkpoint,
        os.path.join(eval_dir, f"{FLAGS.eval_split}.ckpt-{{step}}.metrics.json"),
        writer,
        FLAGS.eval_start_step,
        FLAGS.eval_end_step,
        timeout_secs=FLAGS.eval_timeout,
        settings=training.flag_settings(
            FLAGS,
            (
                "eval_model_dir",
                "data_dir",
                "max_seq_length",
                "max_qa_length",
                "tokenizer_path",
                "uncased",
            ),
        ),
    )
    best = training.write_best_result(
        results,
        lambda metrics: metrics["eval_accuracy"],
        race_utils.best_result_record,
        FLAGS.model_dir,
    )
    return results, best


def run():
    _validate_flags()
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
        precision,
        FLAGS.use_tpu,
    )

    splits = (["train"] if FLAGS.do_train else []) + ([FLAGS.eval_split] if FLAGS.do_eval else [])
    records = {
        split: _create_tfrecord(split, tokenizer, special_ids) for split in dict.fromkeys(splits)
    }
    if FLAGS.do_train:
        train(strategy, task, records["train"][0], net_config)
    if FLAGS.do_eval:
        results, best = evaluate(strategy, task, *records[FLAGS.eval_split])
        if not FLAGS.retain_all:
            keep = [best["path"]] if FLAGS.retain_best and best else []
            training.delete_checkpoints([path for _, path, _ in results], keep)


def main(_):
    data_utils.run_main(run, FLAGS.verbose)


if __name__ == "__main__":
    app.run(main)
