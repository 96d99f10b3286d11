"""Pretraining of Funnel-Transformer with the MLM or the ELECTRA objective (`train.py` is an alias).

    python tensorflow/pretrain.py --loss_type=electra --record_dir=proc_data/wiki \
      --tokenizer_path=vocab.uncased.txt --model_dir=exp/pretrain --seq_len=512 --num_predict=85 ...

ELECTRA (all released checkpoints are "-ELEC-"): a small generator (scope `generator`, `--width_shrink` of
the discriminator's d_model, n_head and d_inner) reads the masked input through the discriminator's own
input embedding and is trained with MLM; one token per target is sampled from it (Gumbel-max on float32
logits); the discriminator (scope `model`) tells, for every non-padding token, whether it is the original
token (label 1, the original's convention, SPEC §10.14) or a generator sample (label 0).
Loss = gen_loss + disc_coeff * disc_loss.

Writes into --model_dir: net_config.json, full checkpoints `model.ckpt-{step}` (model/..., generator/...,
Adam slots, global_step), TensorBoard events, and with --do_eval `eval_{split}.json` and `eval_{split}/`.
`modify_ckpt.py` exports a core-only checkpoint for finetuning. See the README, section "Pretraining".
"""

import startup  # noqa: F401 (first: TensorFlow's start-up lines stay off the console)

# isort: split
import json
import os

import tensorflow as tf
from absl import app, flags, logging

import data_utils
import input_func_builder
import model_utils
import modeling
import ops
import optimization
import tokenization
import training

FLAGS = flags.FLAGS

LOSS_TYPES = ("mlm", "electra")


def parse_loss_type(loss_type):
    """Normalizes `--loss_type` ("MLM", "Electra", ...) to "mlm" or "electra"; ValueError otherwise."""
    normalized = str(loss_type).strip().lower()
    if normalized not in LOSS_TYPES:
        raise ValueError(f"--loss_type={loss_type!r} must be mlm or electra (any case)")
    return normalized


def generator_config(net_config, width_shrink):
    """The ELECTRA generator's config (SPEC §4.2).

    d_model, n_head and d_inner are scaled by `width_shrink` (rounded down); d_head, d_embed, block_size,
    decoder_size and everything else are the discriminator's.
    """
    if not 0 < width_shrink <= 1:
        raise ValueError(f"--width_shrink={width_shrink} must be in (0, 1]")
    values = net_config.to_dict()
    for key in ("d_model", "n_head", "d_inner"):
        values[key] = int(values[key] * width_shrink)
        if values[key] < 1:
            raise ValueError(
                f"--width_shrink={width_shrink} gives the generator {key}=0 "
                f"(discriminator {key}={getattr(net_config, key)}); use a larger --width_shrink"
            )
    return modeling.ModelConfig(**values)


def _use_decoder(net_config):
    # A one-block model has no decoder; with more blocks the targets are read from the full-length output.
    return net_config.n_block > 1


def _masked_mean(values, weights):
    weights = tf.cast(weights, tf.float32)
    return tf.reduce_sum(tf.cast(values, tf.float32) * weights) / tf.maximum(
        tf.reduce_sum(weights), 1.0
    )


def lm_accuracy(logits, target, target_mask):
    """Fraction of real target slots whose argmax prediction is the original token.

    Args:
      logits: float32 [batch_size, num_predict, vocab_size]; target: int32 [batch_size, num_predict];
      target_mask: float [batch_size, num_predict], 1.0 = real target.
    Returns:
      float32 scalar.
    """
    correct = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), tf.cast(target, tf.int32))
    return _masked_mean(correct, target_mask)


def gumbel_sample(logits):
    """One sample per row from softmax(logits), by Gumbel-max (temperature 1, as the original).

    Args:
      logits: float32 [..., vocab_size].
    Returns:
      int32 [...]. Not differentiable: no gradient flows from the samples into the generator.
    """
    u = ops.uniform(tf.shape(logits))
    gumbel = -tf.math.log(-tf.math.log(u + 1e-9) + 1e-9)
    return tf.argmax(tf.cast(logits, tf.float32) + gumbel, axis=-1, output_type=tf.int32)


def scatter_targets(values, target_mapping, is_target, default):
    """Puts per-target values back at their positions.

    Args:
      values: int32 [batch_size, num_predict]; target_mapping: float [batch_size, num_predict, seq_len]
        one-hot rows (zero rows for unused slots); is_target: bool [batch_size, seq_len];
      default: int32 [batch_size, seq_len], kept where is_target is False.
    Returns:
      int32 [batch_size, seq_len].
    """
    mapping = tf.cast(target_mapping, tf.int32)
    scattered = tf.reduce_sum(values[:, :, None] * mapping, axis=1)
    return tf.where(tf.cast(is_target, tf.bool), scattered, default)


def mlm_forward(model, features, is_training, precision="float32", truncate_seq=True):
    """MLM objective (SPEC §5.3): `<mask>` and padding are excluded as attention keys (`input_mask`).

    Args:
      model: FunnelTFM, scope "model".
      features: the pretraining batch of input_func_builder (masked_input, seg_id, input_mask,
        target_mapping, target, target_mask; [batch_size, ...]).
    Returns:
      dict: loss (float32 scalar, the mean over real target slots), mlm_accuracy (float32 scalar),
        logits (float32 [batch_size, num_predict, vocab_size]).
    """
    loss, aux = model.get_mlm_loss(
        features["target"],
        features["masked_input"],
        is_training,
        seg_id=features["seg_id"],
        input_mask=features["input_mask"],
        target_mapping=features["target_mapping"],
        target_mask=features["target_mask"],
        precision=precision,
        truncate_seq=truncate_seq,
    )
    accuracy = lm_accuracy(aux["logits"], features["target"], features["target_mask"])
    return {"loss": loss, "mlm_accuracy": accuracy, "logits": aux["logits"]}


def electra_forward(
    model, generator, features, is_training, disc_coeff, precision="float32", truncate_seq=True
):
    """ELECTRA objective (SPEC §5.4).

    Both networks mask only padding (`pad_mask`) in attention. The generator has no embedding of its own:
    it encodes the discriminator's `model/input` embedding of the masked input and predicts with the
    discriminator's lookup table as softmax weight (its own `generator/lm_loss/bias`).

    Args:
      model: FunnelTFM, scope "model" (the discriminator); generator: FunnelTFM, scope "generator".
      features: the pretraining batch of input_func_builder ([batch_size, ...]).
      disc_coeff: weight of the discriminator loss.
    Returns:
      dict of float32 scalars: loss (= gen_loss + disc_coeff * disc_loss), gen_loss, disc_loss,
        gen_accuracy (generator argmax == original token, over real target slots), real_ratio (fraction of
        target positions where the sample is the original token), disc_accuracy (over non-padding
        tokens); and tensors sample_input, binary_target (int32 [batch_size, seq_len], 1 = original token),
        gen_logits (float32 [batch_size, num_predict, vocab_size]), disc_logits (float32
        [batch_size, seq_len]).
    """
    seg_id, pad_mask = features["seg_id"], features["pad_mask"]
    origin_input = features["origin_input"]
    is_target = tf.cast(features["is_target"], tf.bool)

    masked_embed, table = model.input_embedding(
        features["masked_input"], is_training, seg_id, precision=precision
    )
    gen_output, _, _ = generator.encode(
        masked_embed,
        is_training,
        seg_id,
        pad_mask,
        _use_decoder(generator.net_config),
        truncate_seq,
    )
    per_target, gen_logits = generator.lm_loss(
        gen_output, features["target"], table, features["target_mapping"]
    )
    gen_loss = _masked_mean(per_target, features["target_mask"])

    samples = gumbel_sample(gen_logits)
    sample_input = scatter_targets(samples, features["target_mapping"], is_target, origin_input)
    binary_target = tf.cast(tf.equal(sample_input, origin_input), tf.int32)

    sample_embed, _ = model.input_embedding(sample_input, is_training, seg_id, precision=precision)
    disc_output, _, _ = model.encode(
        sample_embed, is_training, seg_id, pad_mask, _use_decoder(model.net_config), truncate_seq
    )
    disc_loss, disc_logits = model.binary_loss(disc_output, binary_target, pad_mask)

    non_pad = 1.0 - tf.cast(pad_mask, tf.float32)
    disc_correct = tf.equal(tf.cast(disc_logits > 0, tf.int32), binary_target)
    return {
        "loss": gen_loss + disc_coeff * disc_loss,
        "gen_loss": gen_loss,
        "disc_loss": disc_loss,
        "gen_accuracy": lm_accuracy(gen_logits, features["target"], features["target_mask"]),
        "real_ratio": _masked_mean(binary_target, is_target),
        "disc_accuracy": _masked_mean(disc_correct, non_pad),
        "sample_input": sample_input,
        "binary_target": binary_target,
        "gen_logits": gen_logits,
        "disc_logits": disc_logits,
    }


# Scalars each objective reports besides the loss, in logs, TensorBoard and evaluation results.
MONITORS = {
    "mlm": ("mlm_accuracy",),
    "electra": ("gen_loss", "disc_loss", "gen_accuracy", "real_ratio", "disc_accuracy"),
}


class Pretrainer:
    """The networks of one pretraining objective and its loss function for the training engine.

    Attributes:
      loss_type: "mlm" or "electra".
      model: the main model (scope "model"; the ELECTRA discriminator), the one finetuning starts from.
      generator: the ELECTRA generator (scope "generator"), or None for MLM.
      modules: the networks whose variables are trained and checkpointed.
    """

    def __init__(
        self,
        net_config,
        loss_type,
        width_shrink=0.25,
        disc_coeff=50.0,
        precision="float32",
        truncate_seq=True,
        seed=0,
        recompute=False,
    ):
        self.loss_type = parse_loss_type(loss_type)
        self.disc_coeff = disc_coeff
        self.precision = precision
        self.truncate_seq = truncate_seq
        self.model = modeling.FunnelTFM(net_config, "model", seed=seed, recompute=recompute)
        self.generator = None
        if self.loss_type == "electra":
            self.generator = modeling.FunnelTFM(
                generator_config(net_config, width_shrink),
                "generator",
                seed=seed,
                recompute=recompute,
            )
        self.modules = [m for m in (self.model, self.generator) if m is not None]

    def forward(self, features, is_training):
        """All outputs of `mlm_forward` or `electra_forward`."""
        if self.loss_type == "mlm":
            return mlm_forward(self.model, features, is_training, self.precision, self.truncate_seq)
        return electra_forward(
            self.model,
            self.generator,
            features,
            is_training,
            self.disc_coeff,
            self.precision,
            self.truncate_seq,
        )

    def loss_fn(self, features, is_training):
        """(float32 scalar loss, dict of float32 scalar monitors): the engine's `loss_fn`."""
        outputs = self.forward(features, is_training)
        return outputs["loss"], {name: outputs[name] for name in MONITORS[self.loss_type]}


def make_evaluator(strategy, pretrainer, dataset_fn, num_steps):
    """Returns `evaluate() -> dict name -> float`: mean loss and monitors over `num_steps` eval batches.

    The model runs without dropout on the current values of its variables; the step function is traced
    once, so several checkpoints can be evaluated in turn.

    Args:
      strategy: the strategy the variables were built under.
      pretrainer: a `Pretrainer`.
      dataset_fn: callable(InputContext) -> finite dataset of per-replica batches, holding at least
        `num_steps * num_replicas / num_input_pipelines` batches per pipeline.
      num_steps: number of global batches; every replica gets a full batch at each step.
    """

    def per_pipeline(input_context):
        replicas = input_context.num_replicas_in_sync // input_context.num_input_pipelines
        return dataset_fn(input_context).take(num_steps * replicas)

    @tf.function(autograph=False)
    def eval_step(batch):
        loss, monitors = strategy.run(pretrainer.loss_fn, args=(batch, False))
        values = {"loss": loss, **monitors}
        return {
            k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in values.items()
        }

    def evaluate():
        sums, count = {}, 0
        for batch in strategy.distribute_datasets_from_function(per_pipeline):
            for name, value in eval_step(batch).items():
                sums[name] = sums.get(name, 0.0) + float(value)
            count += 1
        if count < num_steps:
            raise ValueError(f"the evaluation data gave {count} batches, expected {num_steps}")
        return {name: total / count for name, total in sums.items()}

    return evaluate


# ------------------------------------------------------------------------------------------------- script
def define_flags():
    """Defines the flags of pretrain.py / train.py (SPEC §2.8), with the engine, model, optimizer and
    tokenizer flags shared by every training script."""
    training.define_engine_flags(
        num_core_per_host=1,
        init_global_vars=True,
        train_batch_size=60,
        train_steps=100000,
        iterations=1000,
        save_steps=10000,
        max_save=100000,
    )
    training.define_model_flags()
    training.define_optimizer_flags()
    training.define_tokenizer_flags()
    flags.DEFINE_string(
        "record_dir", None, "Directories of pretraining tfrecords, comma-separated."
    )
    flags.DEFINE_bool(
        "overwrite", False, "Accepted for compatibility; unused (as in the original)."
    )
    flags.DEFINE_bool("do_train", True, "Train.")
    flags.DEFINE_bool("do_eval", False, "Evaluate checkpoints on the --eval_split records.")
    flags.DEFINE_string(
        "eval_ckpt_path",
        None,
        "Evaluate only this checkpoint; else every checkpoint of model_dir from --start_eval_steps on.",
    )
    flags.DEFINE_integer("eval_batch_size", 60, "Global evaluation batch size.")
    flags.DEFINE_integer(
        "max_eval_batch", -1, "Evaluate at most this many batches; -1: the whole split."
    )
    flags.DEFINE_integer(
        "start_eval_steps", 200000, "Evaluate only checkpoints at or after this step."
    )
    flags.DEFINE_string("eval_split", "dev", "Split of the evaluation records (train, dev, test).")
    flags.DEFINE_integer("num_passes", 1, "Use the records of passes 0 .. num_passes - 1.")
    flags.DEFINE_integer("seq_len", 0, "Sequence length of the records; must be > 0.")
    flags.DEFINE_integer(
        "num_predict", None, "Prediction targets per sequence: 0 < num_predict < seq_len - 3."
    )
    flags.DEFINE_string("loss_type", "mlm", "Objective: mlm or electra (any case).")
    flags.DEFINE_float(
        "width_shrink", 0.25, "ELECTRA generator's d_model, n_head, d_inner / the discriminator's."
    )
    flags.DEFINE_float("disc_coeff", 50.0, "Weight of the ELECTRA discriminator loss.")
    flags.DEFINE_enum(
        "sample_strategy",
        "single_token",
        list(input_func_builder.SAMPLE_STRATEGIES),
        "How prediction targets are chosen.",
    )
    flags.DEFINE_bool(
        "shard_across_host", True, "Split the record files across hosts (input pipelines)."
    )
    flags.DEFINE_float("leak_ratio", 0.1, "Fraction of targets left as the original token.")
    flags.DEFINE_float("rand_ratio", 0.1, "Fraction of targets replaced by a random token id.")
    flags.DEFINE_integer("max_tok", 5, "Longest span (tokens) of token_span.")
    flags.DEFINE_integer("min_tok", 1, "Shortest span (tokens) of token_span.")
    flags.DEFINE_integer("max_word", 5, "Longest span (words) of word_span.")
    flags.DEFINE_integer("min_word", 1, "Shortest span (words) of word_span.")
    flags.DEFINE_bool("verbose", False, "Debug logging, and a full traceback on errors.")


def _check_flags():
    """Cheap checks of the flags, before TensorFlow touches a device."""
    parse_loss_type(FLAGS.loss_type)
    if not (FLAGS.do_train or FLAGS.do_eval):
        raise ValueError("nothing to do: set --do_train and/or --do_eval")
    if not FLAGS.record_dir:
        raise ValueError("--record_dir is required")
    if FLAGS.seq_len <= 0:
        raise ValueError(f"--seq_len={FLAGS.seq_len} must be > 0 (the records' sequence length)")
    if FLAGS.num_predict is None or not 0 < FLAGS.num_predict < FLAGS.seq_len - 3:
        raise ValueError(
            f"--num_predict={FLAGS.num_predict} must be in (0, seq_len - 3 = {FLAGS.seq_len - 3}) "
            f"for --seq_len={FLAGS.seq_len}"
        )
    if not FLAGS.model_dir:
        raise ValueError("--model_dir is required")
    if FLAGS.do_eval and FLAGS.eval_batch_size <= 0:
        raise ValueError(f"--eval_batch_size={FLAGS.eval_batch_size} must be > 0")


def _per_replica(batch_size, strategy, flag):
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(f"--{flag}={batch_size} must be a multiple of the {replicas} replicas")
    return batch_size // replicas


def _input_fn(special_ids, net_config, split, batch_size_per_replica, is_training):
    return input_func_builder.get_input_fn(
        FLAGS.record_dir,
        split,
        batch_size_per_replica,
        FLAGS.seq_len,
        FLAGS.num_predict,
        special_ids,
        num_pool=net_config.n_block - 1,
        truncate_seq=FLAGS.truncate_seq and net_config.separate_cls,
        sample_strategy=FLAGS.sample_strategy,
        leak_ratio=FLAGS.leak_ratio,
        rand_ratio=FLAGS.rand_ratio,
        min_tok=FLAGS.min_tok,
        max_tok=FLAGS.max_tok,
        min_word=FLAGS.min_word,
        max_word=FLAGS.max_word,
        uncased=FLAGS.uncased,
        num_passes=FLAGS.num_passes,
        is_training=is_training,
        shard_across_host=FLAGS.shard_across_host,
        seed=FLAGS.seed,
    )


def _record_files(split):
    return input_func_builder.get_record_info(
        FLAGS.record_dir, split, FLAGS.seq_len, FLAGS.uncased, FLAGS.num_passes
    )[0]


def _eval_checkpoints():
    """[(step, checkpoint prefix)] to evaluate: --eval_ckpt_path, or model_dir's from --start_eval_steps."""
    if FLAGS.eval_ckpt_path:
        path = model_utils.resolve_checkpoint(FLAGS.eval_ckpt_path)
        return [(model_utils.checkpoint_step(path), path)]
    found = [
        (s, p) for s, p in training.step_checkpoints(FLAGS.model_dir) if s >= FLAGS.start_eval_steps
    ]
    if not found:
        logging.warning(
            "No checkpoint in %s at or after --start_eval_steps=%d to evaluate.",
            FLAGS.model_dir,
            FLAGS.start_eval_steps,
        )
    return found


def run_eval(strategy, pretrainer, special_ids, net_config):
    """Evaluates checkpoints on --eval_split; writes TensorBoard scalars to model_dir/eval_{split} and
    all results to model_dir/eval_{split}.json ({step: {name: value}})."""
    per_replica = _per_replica(FLAGS.eval_batch_size, strategy, "eval_batch_size")
    dataset_fn = _input_fn(special_ids, net_config, FLAGS.eval_split, per_replica, False)
    num_example = input_func_builder.get_num_example(
        FLAGS.record_dir, FLAGS.eval_split, FLAGS.seq_len, FLAGS.uncased, FLAGS.num_passes
    )
    num_steps = num_example // FLAGS.eval_batch_size
    if FLAGS.max_eval_batch > 0:
        num_steps = min(num_steps, FLAGS.max_eval_batch)
    if num_steps == 0:
        raise ValueError(
            f"the {FLAGS.eval_split} records hold {num_example} examples, fewer than "
            f"--eval_batch_size={FLAGS.eval_batch_size}"
        )
    training.build_variables(strategy, lambda f: pretrainer.loss_fn(f, False), dataset_fn)

    results_path = os.path.join(FLAGS.model_dir, f"eval_{FLAGS.eval_split}.json")
    results = {}
    if tf.io.gfile.exists(results_path):
        with tf.io.gfile.GFile(results_path) as f:
            results = json.load(f)
    writer = tf.summary.create_file_writer(
        os.path.join(FLAGS.model_dir, f"eval_{FLAGS.eval_split}")
    )
    evaluate = make_evaluator(strategy, pretrainer, dataset_fn, num_steps)
    for step, path in _eval_checkpoints():
        training.restore_checkpoint(pretrainer.modules, path)
        metrics = evaluate()
        logging.info(
            "Eval %s (%d batches) of %s: %s",
            FLAGS.eval_split,
            num_steps,
            path,
            " | ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())),
        )
        results[str(step)] = metrics
        if step is not None:
            with writer.as_default(step=step):
                for name, value in metrics.items():
                    tf.summary.scalar(name, value)
            writer.flush()
        data_utils.atomic_write_json(results_path, results, indent=2)
    return results


def main(_):
    if FLAGS.verbose:
        logging.set_verbosity(logging.DEBUG)
    data_utils.run_main(_run, FLAGS.verbose)


def _run():
    _check_flags()
    strategy = training.get_strategy(FLAGS)
    tokenizer = tokenization.get_tokenizer(
        FLAGS.tokenizer_type, FLAGS.tokenizer_path, FLAGS.uncased
    )
    special_ids = data_utils.setup_special_ids(tokenizer)
    net_config = training.model_config_from_flags(FLAGS, special_ids.vocab_size)
    modeling.check_seq_len(
        net_config, FLAGS.seq_len, FLAGS.truncate_seq, use_decoder=net_config.n_block > 1
    )
    precision = training.resolve_precision(FLAGS.use_bfloat16, FLAGS.precision)
    pretrainer = Pretrainer(
        net_config,
        FLAGS.loss_type,
        FLAGS.width_shrink,
        FLAGS.disc_coeff,
        precision,
        FLAGS.truncate_seq,
        FLAGS.seed,
        FLAGS.recompute,
    )
    if FLAGS.do_train:
        per_replica = _per_replica(FLAGS.train_batch_size, strategy, "train_batch_size")
        dataset_fn = _input_fn(special_ids, net_config, "train", per_replica, True)
        opt_config = optimization.OptimizerConfig.from_flags(FLAGS)
        run_config = training.RunConfig.from_flags(FLAGS)
        training.write_run_config(strategy, net_config, FLAGS.model_dir)
        # The record files are listed again only after a checksum error.
        with data_utils.naming_corrupt_records(lambda: _record_files("train")):
            training.train(
                strategy, pretrainer.loss_fn, dataset_fn, pretrainer.modules, opt_config, run_config
            )
    if FLAGS.do_eval:
        with data_utils.naming_corrupt_records(lambda: _record_files(FLAGS.eval_split)):
            run_eval(strategy, pretrainer, special_ids, net_config)


def run():
    """Entry point of pretrain.py and its alias train.py."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
