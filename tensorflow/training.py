"""The training engine that replaces TPUEstimator, shared by every script.

Scripts call, in this order:

    strategy = training.get_strategy(FLAGS)                  # first: it configures devices
    run_config = training.RunConfig.from_flags(FLAGS)
    training.train(strategy, loss_fn, dataset_fn, modules, opt_config, run_config)

where
  - `loss_fn(features, is_training) -> (loss, monitors)`: `loss` is the float32 scalar loss averaged over the
    per-replica batch, `monitors` a dict of float scalars to log (may be empty). It is traced as written,
    without autograph, like the model: control flow that depends on tensor values needs `tf.cond` or
    `tf.while_loop` (converting the whole model took seconds of every first call and changed nothing);
  - `dataset_fn(input_context) -> tf.data.Dataset` of per-replica batches (dicts of tensors), repeated;
  - `modules` are the objects whose variables are trained and checkpointed (they have `named_variables()`),
    e.g. `[model]`, or `[model, generator]` for ELECTRA;
  - `opt_config` is an `optimization.OptimizerConfig`.

What `train` does:
  - creates `global_step` (int64, checkpointed), builds the model variables with one eager call of `loss_fn`
    inside `strategy.scope()`, then the optimizer slots (`<var>/adam_m`, `<var>/adam_v`);
  - resumes from the latest checkpoint in `model_dir` (variables, slots and global_step; the input goes on
    where that run was in it); without one, warm starts from `init_checkpoint` by variable name (all
    variables with `init_global_vars`, the step count too, else the trainable ones only; SPEC §4.4), and
    reads the input from its start (the step it started at goes to `model_dir/input_start.json`);
  - runs a `tf.function` that performs up to `iterations` steps per call. Each step computes per-replica
    gradients, averages them across replicas (all-reduce MEAN), clips the average once by its global norm
    (`OptimizerConfig.gradient_scales`) and applies AdamW, so N replicas give the same weights as one
    device on the same global batch;
  - with precision float16, scales the loss dynamically (x2 after 2000 finite steps, /2 and skip the update
    on a non-finite gradient);
  - logs step, loss, learning rate, gradient norm, monitors, examples/sec and ETA every `log_freq` steps,
    writes the same scalars as TensorBoard summaries to `model_dir`, and saves name-based checkpoints
    `model_dir/model.ckpt-{step}` every `save_steps` steps and at the end (keeping `max_save`; 0 = all).

Evaluation helpers: `build_variables`, `iterate_checkpoints`, `restore_checkpoint` and `Predictor`.
Flag helpers: `define_engine_flags`, `define_model_flags`, `define_optimizer_flags`,
`define_tokenizer_flags`, `model_config_from_flags`. They only define flags; library code takes explicit
arguments.
"""

import collections
import contextlib
import dataclasses
import datetime
import functools
import json
import math
import os
import re
import socket
import threading
import time

import numpy as np
import tensorflow as tf
from absl import flags, logging

import data_utils
import model_utils
import modeling
import ops
import optimization
import tokenization

PRECISIONS = ("float32", "bfloat16", "float16")

# Name of the directory a finished training run creates in model_dir (the original's marker); evaluation
# stops polling for new checkpoints once it exists.
DONE_MARKER = "done"
# The global step at which a warm start (init_global_vars) began reading the input from its start: a
# resume in the same model_dir skips only the batches trained on since (json {"global_step": N}).
INPUT_START_FILE = "input_start.json"


# ------------------------------------------------------------------------------------------------- flags
def define_engine_flags(**defaults):
    """Defines the engine flags (strategy, precision, loop, saving, warm start, logging).

    Args:
      **defaults: per-script defaults, e.g. `num_core_per_host=8, train_steps=40000`.
    """
    values = dict(
        use_tpu=False,
        tpu=None,
        tpu_zone=None,
        gcp_project=None,
        master=None,
        tpu_job_name=None,
        tpu_connect_timeout=300,
        num_hosts=1,
        num_core_per_host=8,
        use_bfloat16=False,
        precision=None,
        model_dir="",
        init_checkpoint=None,
        init_global_vars=False,
        train_batch_size=128,
        train_steps=40000,
        iterations=1000,
        save_steps=None,
        max_save=0,
        log_freq=100,
        jit_compile=False,
        recompute=False,
        seed=0,
    )
    unknown = set(defaults) - set(values)
    if unknown:
        raise ValueError(f"define_engine_flags: unknown flag(s) {sorted(unknown)}")
    values.update(defaults)
    flags.DEFINE_bool("use_tpu", values["use_tpu"], "Train on a Cloud TPU (TPUStrategy).")
    flags.DEFINE_string("tpu", values["tpu"], "TPU name or grpc:// address (with --use_tpu).")
    flags.DEFINE_string("tpu_zone", values["tpu_zone"], "GCE zone of the TPU.")
    flags.DEFINE_string("gcp_project", values["gcp_project"], "GCP project of the TPU.")
    flags.DEFINE_string(
        "master", values["master"], "TPU grpc:// address, used when --tpu is unset."
    )
    flags.DEFINE_string("tpu_job_name", values["tpu_job_name"], "TPU worker job name.")
    flags.DEFINE_integer(
        "tpu_connect_timeout",
        values["tpu_connect_timeout"],
        "Seconds to wait for the TPU to answer before giving up (with --use_tpu).",
    )
    flags.DEFINE_integer(
        "num_hosts",
        values["num_hosts"],
        "Hosts (workers). > 1 without TPU: MultiWorkerMirroredStrategy from the TF_CONFIG variable.",
    )
    flags.DEFINE_integer(
        "num_core_per_host",
        values["num_core_per_host"],
        "Devices per host. > 1 without TPU: MirroredStrategy over that many GPUs (or logical CPUs "
        "when there is no GPU); 1: one device.",
    )
    flags.DEFINE_bool("use_bfloat16", values["use_bfloat16"], "Same as --precision=bfloat16.")
    flags.DEFINE_enum(
        "precision",
        values["precision"],
        list(PRECISIONS),
        "Compute dtype: float32, bfloat16 (TPU) or float16 (GPU, dynamic loss scaling). "
        "Unset: bfloat16 with --use_bfloat16, else float32.",
    )
    flags.DEFINE_string("model_dir", values["model_dir"], "Checkpoints and TensorBoard summaries.")
    flags.DEFINE_string(
        "init_checkpoint",
        values["init_checkpoint"],
        "Warm start from this checkpoint (prefix, directory or <dir>/latest) by variable name, "
        "when model_dir has no checkpoint yet.",
    )
    flags.DEFINE_bool(
        "init_global_vars",
        values["init_global_vars"],
        "Warm start every variable (optimizer slots and global_step too); else trainable ones only.",
    )
    flags.DEFINE_integer(
        "train_batch_size", values["train_batch_size"], "Global training batch size."
    )
    flags.DEFINE_integer("train_steps", values["train_steps"], "Total number of training steps.")
    flags.DEFINE_integer(
        "iterations", values["iterations"], "Most training steps run by one device call."
    )
    flags.DEFINE_integer(
        "save_steps",
        values["save_steps"],
        "Save a checkpoint every this many steps; unset or 0: only at the end.",
    )
    flags.DEFINE_integer(
        "max_save", values["max_save"], "Keep at most this many checkpoints; 0 keeps all."
    )
    flags.DEFINE_integer(
        "log_freq", values["log_freq"], "Log and write summaries every this many steps."
    )
    flags.DEFINE_bool(
        "deterministic",
        True,
        "Run one TensorFlow op at a time, so that runs with the same --seed give bit-identical weights "
        "on CPU (float results of overlapping ops depend on thread timing). False may be faster on "
        "many-core hosts.",
    )
    flags.DEFINE_integer(
        "seed",
        values["seed"],
        "Seeds everything random: the initialisation of new variables, dropout, the training shuffle and "
        "the pretraining corruption. Two runs of one command end with identical weights (float32, CPU).",
    )
    flags.DEFINE_integer(
        "eval_timeout",
        0,
        "Evaluation gives up after waiting this many seconds for a new checkpoint (0: waits as long as "
        "a training run is writing model_dir), and an evaluation-only job waits at most this long "
        "(60 s when 0) for its training run to start.",
    )
    flags.DEFINE_bool(
        "jit_compile",
        values["jit_compile"],
        "Compile each step's forward and backward pass with XLA (fuses the element-wise work; on TPU "
        "everything is compiled anyway).",
    )
    flags.DEFINE_bool(
        "recompute",
        values["recompute"],
        "Keep only each layer's input for the backward pass and recompute the layer there "
        "(tf.recompute_grad, same dropout masks): less memory per example for about a third more "
        "time per step.",
    )


_MODEL_FLAG_HELP = {
    "block_size": "Per-block depth, '_'-separated P or PxR entries.",
    "vocab_size": "Vocabulary size (must match the tokenizer).",
    "d_embed": "Embedding size.",
    "d_model": "Hidden size.",
    "n_head": "Attention heads.",
    "d_head": "Size of each head.",
    "d_inner": "Feed-forward inner size.",
    "ff_activation": "Feed-forward activation: relu, gelu or tanh.",
    "dropout": "Hidden dropout.",
    "dropatt": "Attention-probability dropout.",
    "dropact": "Dropout after the feed-forward activation.",
    "init": "Initializer: normal, uniform or truncated_normal.",
    "init_std": "Std of normal / truncated_normal initialization.",
    "init_range": "Range of uniform initialization.",
    "rel_attn_type": "factorized, rel_shift or null.",
    "separate_cls": "Keep <cls> out of pooling.",
    "pooling_type": "mean or max.",
    "pooling_size": "Pooling kernel and stride (only 2).",
    "pool_q_only": "Pool only the query of a block's first layer.",
    "decoder_size": "Decoder depth, same syntax as block_size.",
}

# The original's flag defaults (SPEC §2.3); vocab_size comes from the tokenizer.
_MODEL_FLAG_DEFAULTS = {
    "block_size": "3_3_3",
    "vocab_size": None,
    "d_embed": 512,
    "d_model": 512,
    "n_head": 8,
    "d_head": 64,
    "d_inner": 2048,
    "ff_activation": "gelu",
    "dropout": 0.1,
    "dropatt": 0.1,
    "dropact": 0.0,
    "init": "truncated_normal",
    "init_std": 0.02,
    "init_range": 0.1,
    "rel_attn_type": "factorized",
    "separate_cls": True,
    "pooling_type": "mean",
    "pooling_size": 2,
    "pool_q_only": True,
    "decoder_size": "2",
}


def define_model_flags():
    """Defines --model_config (alias --model_config_path), --overwrite_keys, --truncate_seq and the 20 config
    keys of `modeling.ModelConfig` with the original's defaults."""
    flags.DEFINE_string(
        "model_config", "", "net_config.json of the model; else the config flags below."
    )
    flags.DEFINE_alias("model_config_path", "model_config")
    flags.DEFINE_string(
        "overwrite_keys",
        "",
        "Comma-separated config keys whose flag value replaces the value in --model_config.",
    )
    flags.DEFINE_bool(
        "truncate_seq", True, "With separate_cls, drop the last token before each pooling."
    )
    definers = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float}
    for key in modeling.ModelConfig.keys:
        kind = modeling.ModelConfig._types[key]
        default, help_text = _MODEL_FLAG_DEFAULTS[key], _MODEL_FLAG_HELP[key]
        if kind is bool:
            flags.DEFINE_bool(key, default, help_text)
        else:
            definers[kind](key, default, help_text)


def model_config_from_flags(flag_values, vocab_size=None, config_path=None):
    """The `ModelConfig` of --model_config (with --overwrite_keys) or of the config flags.

    Args:
      flag_values: object with the attributes of `define_model_flags` (e.g. absl FLAGS).
      vocab_size: the tokenizer's vocabulary size: fills an unset --vocab_size, and a config whose
        vocab_size differs raises ValueError.
      config_path: a net_config.json to use instead of --model_config.
    """
    config_path = config_path or flag_values.model_config
    keys = [k.strip() for k in (flag_values.overwrite_keys or "").split(",") if k.strip()]
    unknown = [k for k in keys if k not in modeling.ModelConfig.keys]
    if unknown:
        raise ValueError(f"--overwrite_keys: {unknown} are not config keys")
    if config_path:
        overrides = {k: getattr(flag_values, k) for k in keys}
        if "vocab_size" in overrides and overrides["vocab_size"] is None:
            overrides["vocab_size"] = vocab_size
        config = modeling.ModelConfig.init_from_json(config_path, overrides)
        source = f"model config {config_path}"
    else:
        values = {k: getattr(flag_values, k) for k in modeling.ModelConfig.keys}
        if values["vocab_size"] is None:
            if vocab_size is None:
                raise ValueError("--vocab_size is unset and there is no tokenizer to take it from")
            values["vocab_size"] = vocab_size
        config = modeling.ModelConfig(**values)
        source = "the config flags"
    if vocab_size is not None and config.vocab_size != vocab_size:
        raise ValueError(
            f"{source} has vocab_size {config.vocab_size} but the tokenizer (--tokenizer_path) has "
            f"{vocab_size} entries"
        )
    return config


def model_config_for_run(strategy, flag_values, vocab_size, do_train, eval_model_dir=""):
    """The `ModelConfig` of a script's run: --model_config, else the net_config.json of a training run in
    --eval_model_dir or --model_dir, else the config flags (see `model_config_from_flags`).

    An evaluation-only run without --model_config first waits for its training run to write the config
    (`wait_for_training_run`, at most --eval_timeout, 60 s when 0); a training run writes it at once
    (`write_run_config`), before its data preparation.
    """
    model_dir = flag_values.model_dir
    if not do_train and not flag_values.model_config:
        wait_for_training_run(eval_model_dir or model_dir, flag_values.eval_timeout or 60)
    config_path = flag_values.model_config
    if not config_path:
        for directory in (eval_model_dir, model_dir):
            saved = os.path.join(directory, "net_config.json") if directory else ""
            if saved and tf.io.gfile.exists(saved):
                logging.info("Model config from %s.", saved)
                config_path = saved
                break
    net_config = model_config_from_flags(flag_values, vocab_size, config_path)
    if do_train:
        write_run_config(strategy, net_config, model_dir)
    return net_config


_OPTIMIZER_FLAG_HELP = {
    "learning_rate": "Peak learning rate.",
    "warmup_steps": "Linear warmup steps.",
    "decay_method": "poly (linear) or cos.",
    "min_lr_ratio": "Final (and warmup start) learning rate as a fraction of --learning_rate.",
    "weight_decay": "Decoupled weight decay rate.",
    "clip": "Global-norm clip of the replica-averaged gradient; <= 0 disables.",
    "per_core_clip": "Accepted for compatibility; gradients are averaged, then clipped once.",
    "skip_nan_grad": "Zero gradient tensors that contain NaN or Inf.",
    "lr_layer_decay_rate": "Layer-wise learning-rate decay; 1.0 disables.",
    "adam_beta1": "Adam beta1.",
    "adam_beta2": "Adam beta2.",
    "adam_correction": "Adam bias correction folded into the learning rate.",
    "use_wd_exclusion": "No weight decay for LayerNorm, layer_norm and bias variables.",
    "adam_epsilon": "Adam epsilon.",
}


def define_optimizer_flags():
    """Defines one flag per `optimization.OptimizerConfig` field, with the field's default."""
    definers = {
        bool: flags.DEFINE_bool,
        int: flags.DEFINE_integer,
        float: flags.DEFINE_float,
        str: flags.DEFINE_string,
    }
    for field in dataclasses.fields(optimization.OptimizerConfig):
        kind = type(field.default)
        definers[kind](field.name, field.default, _OPTIMIZER_FLAG_HELP[field.name])


def define_tokenizer_flags():
    """Defines --tokenizer_type, --tokenizer_path and --uncased (SPEC §2.2)."""
    flags.DEFINE_enum(
        "tokenizer_type",
        "word_piece",
        list(tokenization.TOKENIZER_TYPES),
        "word_piece (vocabulary file) or sent_piece (sentencepiece model).",
    )
    flags.DEFINE_string("tokenizer_path", "", "Vocabulary file or sentencepiece model.")
    flags.DEFINE_bool("uncased", True, "Lower-case and strip accents before tokenizing.")


# ------------------------------------------------------------------------------ strategy and precision
def resolve_precision(use_bfloat16=False, precision=None):
    """The compute dtype name from --use_bfloat16 and --precision (unset: bfloat16 or float32)."""
    if not precision:
        return "bfloat16" if use_bfloat16 else "float32"
    if precision not in PRECISIONS:
        raise ValueError(f"--precision={precision!r} must be one of {', '.join(PRECISIONS)}")
    if use_bfloat16 and precision != "bfloat16":
        raise ValueError(f"--use_bfloat16 conflicts with --precision={precision}")
    return precision


def _logical_cpus(count):
    """Splits the CPU into `count` logical devices (must run before TensorFlow initializes devices)."""
    cpus = tf.config.list_physical_devices("CPU")
    # RuntimeError: devices are initialized already (a second strategy in one process); use what exists.
    with contextlib.suppress(RuntimeError):
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * count
        )
    logical = tf.config.list_logical_devices("CPU")
    if len(logical) < count:
        raise ValueError(
            f"--num_core_per_host={count} needs {count} CPU devices but TensorFlow was initialized "
            f"with {len(logical)}; call training.get_strategy before any other TensorFlow work"
        )
    return [d.name for d in logical[:count]]


def _check_tf_config(num_hosts):
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError(
            f"--num_hosts={num_hosts} without --use_tpu needs the TF_CONFIG environment variable "
            "(cluster and task of MultiWorkerMirroredStrategy)"
        )
    try:
        config = json.loads(raw)
        cluster = config["cluster"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"TF_CONFIG is not a JSON object with a 'cluster' entry: {e}") from None
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    if workers != num_hosts:
        raise ValueError(f"--num_hosts={num_hosts} but TF_CONFIG lists {workers} workers")


def _connect_tpu(flag_values):
    """The TPUClusterResolver of --tpu (or --master), connected and initialised.

    A TPU name is looked up through the Cloud TPU API (in --tpu_zone, --gcp_project) or, without
    them, the GCE metadata server; a grpc:// address is dialled directly. TensorFlow waits forever for
    an address where no TPU answers, so the connection runs in a thread given --tpu_connect_timeout.

    Raises:
      ValueError: naming the flag, what was tried and why it failed.
    """
    flag = "--tpu" if flag_values.tpu else "--master"
    tpu = flag_values.tpu or flag_values.master
    if not tpu:
        raise ValueError("--use_tpu needs --tpu (a TPU name or grpc://host:port) or --master")
    if tpu.startswith("grpc://"):
        tried = f"dialled {tpu}"
        host, _, port = tpu[len("grpc://") :].rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot reach the TPU {flag}={tpu!r}: {tried}: {e}") from None
    else:
        where = ", ".join(
            f"{name}={value!r}"
            for name, value in (
                ("--tpu_zone", flag_values.tpu_zone),
                ("--gcp_project", flag_values.gcp_project),
            )
            if value
        )
        tried = f"looked up TPU {tpu!r} through the Cloud TPU API" + (
            f" ({where})" if where else " (zone and project from the GCE metadata server)"
        )
    kwargs = {"job_name": flag_values.tpu_job_name} if flag_values.tpu_job_name else {}
    outcome = {}

    def connect():
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
                tpu=tpu, zone=flag_values.tpu_zone, project=flag_values.gcp_project, **kwargs
            )
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            outcome["resolver"] = resolver
        except Exception as e:  # noqa: BLE001 (reported on the calling thread)
            outcome["error"] = e

    # A daemon thread: one stuck in TensorFlow's connection must not keep the process alive.
    thread = threading.Thread(target=connect, name="tpu-connect", daemon=True)
    thread.start()
    thread.join(flag_values.tpu_connect_timeout)
    if thread.is_alive():
        raise ValueError(
            f"cannot reach the TPU {flag}={tpu!r}: {tried}; no answer within "
            f"--tpu_connect_timeout={flag_values.tpu_connect_timeout}s"
        )
    if "error" in outcome:
        reason = " ".join(str(outcome["error"]).split())
        if isinstance(outcome["error"], OSError) and not tpu.startswith("grpc://"):
            reason += " (a TPU name resolves only on Google Cloud; elsewhere give grpc://host:port)"
        raise ValueError(f"cannot reach the TPU {flag}={tpu!r}: {tried}: {reason}")
    return outcome["resolver"]


def get_strategy(flag_values):
    """The `tf.distribute` strategy the flags ask for. Call it before any other TensorFlow work.

    - --use_tpu: TPUStrategy on --tpu (or --master), with --tpu_zone, --gcp_project, --tpu_job_name;
    - --num_hosts > 1: MultiWorkerMirroredStrategy, cluster from TF_CONFIG (each host uses its GPUs);
    - --num_core_per_host > 1: MirroredStrategy over that many GPUs, or logical CPUs without a GPU;
    - otherwise OneDeviceStrategy on the first GPU, else the CPU.

    With --deterministic (the default), TensorFlow runs one op at a time (inter-op parallelism 1): with
    several ops in flight, oneDNN splits an op's work by the threads free at that moment and the float
    sums come out in a different order, so two seeded runs differed in the last bits after some steps.

    Args:
      flag_values: object with the attributes of `define_engine_flags` (e.g. absl FLAGS).
    """
    if getattr(flag_values, "deterministic", True):
        try:
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            logging.warning("TensorFlow is already running: --deterministic cannot take effect.")
    if flag_values.use_tpu:
        strategy = tf.distribute.TPUStrategy(_connect_tpu(flag_values))
    elif flag_values.num_hosts > 1:
        _check_tf_config(flag_values.num_hosts)
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif flag_values.num_core_per_host > 1:
        count = flag_values.num_core_per_host
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            if len(gpus) < count:
                raise ValueError(
                    f"--num_core_per_host={count} but only {len(gpus)} GPU(s) are visible"
                )
            devices = [f"/gpu:{i}" for i in range(count)]
        else:
            devices = _logical_cpus(count)
        strategy = tf.distribute.MirroredStrategy(devices)
    else:
        device = "/gpu:0" if tf.config.list_physical_devices("GPU") else "/cpu:0"
        strategy = tf.distribute.OneDeviceStrategy(device)
    logging.info(
        "Strategy %s with %d replica(s).", type(strategy).__name__, strategy.num_replicas_in_sync
    )
    return strategy


# ---------------------------------------------------------------------------------------- run config
@dataclasses.dataclass(frozen=True)
class RunConfig:
    """How to train (the engine flags).

    Attributes:
      model_dir: checkpoints (`model.ckpt-{step}`) and TensorBoard summaries.
      train_steps: total number of steps; training resumes from model_dir's latest checkpoint.
      train_batch_size: global batch size (for examples/sec).
      iterations: most steps run by one device call.
      save_steps: checkpoint period in steps; None or 0 saves only at the end.
      max_save: checkpoints kept; 0 keeps all.
      log_freq: logging and summary period in steps.
      precision: "float32", "bfloat16" or "float16" (float16 enables dynamic loss scaling).
      jit_compile: compile each step's forward and backward pass with XLA.
      init_checkpoint: warm start when model_dir has no checkpoint; None for none.
      init_global_vars: warm start every variable instead of the trainable ones.
      seed: seeds dropout (`ops.random_seed`, per step and replica); the scripts also give it to the
        models (initialisation) and the training input (shuffle, corruption).
    """

    model_dir: str
    train_steps: int
    train_batch_size: int
    iterations: int = 1000
    save_steps: int | None = None
    max_save: int = 0
    log_freq: int = 100
    precision: str = "float32"
    init_checkpoint: str | None = None
    init_global_vars: bool = False
    jit_compile: bool = False
    seed: int = 0

    def __post_init__(self):
        checks = [
            ("model_dir", bool(self.model_dir), "is required"),
            ("train_steps", self.train_steps > 0, "must be > 0"),
            ("train_batch_size", self.train_batch_size > 0, "must be > 0"),
            ("iterations", self.iterations > 0, "must be > 0"),
            ("save_steps", self.save_steps is None or self.save_steps >= 0, "must be >= 0"),
            ("max_save", self.max_save >= 0, "must be >= 0"),
            ("log_freq", self.log_freq > 0, "must be > 0"),
            ("precision", self.precision in PRECISIONS, f"must be one of {PRECISIONS}"),
        ]
        for flag, ok, requirement in checks:
            if not ok:
                raise ValueError(f"--{flag} {requirement}, got {getattr(self, flag)!r}")

    @classmethod
    def from_flags(cls, flag_values):
        """From an object with the attributes of `define_engine_flags` (e.g. absl FLAGS)."""
        return cls(
            model_dir=flag_values.model_dir,
            train_steps=flag_values.train_steps,
            train_batch_size=flag_values.train_batch_size,
            iterations=flag_values.iterations,
            save_steps=flag_values.save_steps,
            max_save=flag_values.max_save,
            log_freq=flag_values.log_freq,
            precision=resolve_precision(flag_values.use_bfloat16, flag_values.precision),
            init_checkpoint=flag_values.init_checkpoint,
            init_global_vars=flag_values.init_global_vars,
            jit_compile=flag_values.jit_compile,
            seed=flag_values.seed,
        )


# -------------------------------------------------------------------------------------------- helpers
def build_variables(strategy, fn, dataset_fn):
    """Creates the variables `fn` uses with one eager call inside `strategy.scope()`.

    Model variables are created lazily by their first call; building them here, in cross-replica context,
    makes them distributed variables before any step is traced.

    Args:
      strategy: the `tf.distribute` strategy.
      fn: callable(features) run once, e.g. `lambda f: loss_fn(f, True)`.
      dataset_fn: the dataset function; the first example of its first batch is used.

    Returns:
      what `fn` returns.
    """
    dataset = dataset_fn(tf.distribute.InputContext())
    features = next(iter(dataset.take(1)))
    features = tf.nest.map_structure(lambda t: t[:1] if t.shape.rank else t, features)
    with strategy.scope():
        return fn(features)


def _collect_trainable(modules):
    """Trainable variables of `modules` (deduplicated), sorted by checkpoint name."""
    named = model_utils.collect_variables(list(modules))
    return [named[name] for name in sorted(named) if named[name].trainable]


def _log_init_report(report, what, path):
    logging.info(
        "%s %s: %d variables loaded, %d kept their initial value, %d in the checkpoint unused.",
        what,
        path,
        len(report.loaded),
        len(report.missing),
        len(report.unused),
    )


class _DynamicLossScale(tf.Module):
    """Loss scale for float16: doubles after `growth_interval` finite steps, halves on a non-finite one."""

    def __init__(self, initial_scale=2.0**15, growth_interval=2000):
        super().__init__(name="loss_scale")
        self.growth_interval = growth_interval
        self.scale = tf.Variable(
            initial_scale, dtype=tf.float32, trainable=False, name="loss_scale/current_loss_scale"
        )
        self.good_steps = tf.Variable(
            0, dtype=tf.int64, trainable=False, name="loss_scale/good_steps"
        )

    def named_variables(self):
        return {
            "loss_scale/current_loss_scale": self.scale,
            "loss_scale/good_steps": self.good_steps,
        }

    def update(self, finite):
        """Updates the scale after a step; `finite` is a bool scalar. Call in cross-replica context."""
        good = self.good_steps + 1
        grow = tf.logical_and(finite, good >= self.growth_interval)
        new_scale = tf.where(
            finite, tf.where(grow, self.scale * 2.0, self.scale), tf.maximum(self.scale / 2.0, 1.0)
        )
        self.scale.assign(new_scale)
        self.good_steps.assign(tf.where(tf.logical_and(finite, ~grow), good, tf.zeros_like(good)))


def _resume(ckpt_objects, model_dir):
    """Restores the newest readable checkpoint of `model_dir`; returns its path, or None for none.

    A damaged newest checkpoint (cut short by a full disk or a kill during a copy) is reported and the
    previous complete one is used.
    """
    checkpoints = model_utils.list_checkpoints(model_dir)
    for path in reversed(checkpoints):
        try:
            report = model_utils.init_from_checkpoint(ckpt_objects, path)
        except model_utils.DamagedCheckpointError as e:
            logging.warning("%s Trying the previous checkpoint.", e)
            continue
        _log_init_report(report, "Resumed from", path)
        return path
    if checkpoints:
        raise model_utils.DamagedCheckpointError(
            f"no checkpoint of {model_dir} can be read ({len(checkpoints)} damaged): delete them to "
            "train afresh"
        )
    return None


def _check_finite(variables, step):
    """Raises FloatingPointError naming the variables holding NaN or Inf: they are never saved."""
    finite = [bool(tf.reduce_all(tf.math.is_finite(v))) for v in variables]
    bad = [v.name.split(":")[0] for v, ok in zip(variables, finite, strict=True) if not ok]
    if bad:
        raise FloatingPointError(
            f"step {step}: {len(bad)} variable(s) hold NaN or Inf, e.g. {', '.join(bad[:3])}: not "
            "saved, training stopped"
        )


def _resumed(dataset_fn, start_step):
    """`dataset_fn` positioned where a run resumed at `start_step` is in it.

    The input is a deterministic function of the step (a seeded shuffle): skipping the batches the earlier
    steps consumed makes a resumed run see the examples an uninterrupted one sees. The skipped part is read
    and preprocessed again, without the model.
    """
    if not start_step:
        return dataset_fn

    def dataset_at_step(input_context):
        # Each step takes one batch per replica from its worker's dataset.
        per_worker = input_context.num_replicas_in_sync // input_context.num_input_pipelines
        skipped = start_step * per_worker
        logging.info("Resuming the input: skipping %d batches already trained on.", skipped)
        return dataset_fn(input_context).skip(skipped)

    return dataset_at_step


def _format_duration(seconds):
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


# ---------------------------------------------------------------------------------------------- train
def train(strategy, loss_fn, dataset_fn, modules, opt_config, run_config):
    """Trains `modules` until `run_config.train_steps`; see the module docstring.

    Args:
      strategy: from `get_strategy`.
      loss_fn: callable(features, is_training) -> (float32 scalar loss averaged over the per-replica batch,
        dict name -> float scalar monitor).
      dataset_fn: callable(tf.distribute.InputContext) -> repeated tf.data.Dataset of per-replica batches.
      modules: list of objects with `named_variables()`; their variables are trained and checkpointed.
      opt_config: `optimization.OptimizerConfig`.
      run_config: `RunConfig`.

    Returns:
      dict: "global_step" (int) and the last logged values (floats): loss, grad_norm and the monitors
      (means since the previous log), learning_rate (of the last update), and the current loss_scale with
      float16.
    """
    rc = run_config
    if opt_config.warmup_steps > rc.train_steps:
        raise ValueError(
            f"--warmup_steps={opt_config.warmup_steps} exceeds --train_steps={rc.train_steps}: the "
            "learning rate would never reach --learning_rate"
        )
    data_utils.ensure_writable_dir(rc.model_dir, "model_dir")
    finished = finished_step(rc.model_dir)
    # A finished run whose checkpoints evaluation cleaned up: done, not to be redone from step 0.
    if (
        finished is not None
        and finished >= rc.train_steps
        and not model_utils.list_checkpoints(rc.model_dir)
    ):
        logging.info("%s holds a finished run (step %d): nothing to train.", rc.model_dir, finished)
        return {"global_step": finished}
    modules = list(modules)
    with strategy.scope():
        global_step = tf.Variable(
            0,
            dtype=tf.int64,
            trainable=False,
            name="global_step",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )

    loss, monitors = build_variables(strategy, lambda f: loss_fn(f, True), dataset_fn)
    if loss.shape.rank != 0:
        raise ValueError(f"loss_fn must return a scalar loss, got shape {loss.shape}")
    monitor_names = sorted(monitors)
    variables = _collect_trainable(modules)
    if not variables:
        raise ValueError("the modules have no trainable variables")
    n_params = sum(int(np.prod(v.shape)) for v in variables)
    logging.info("%d trainable variables, %d parameters.", len(variables), n_params)

    use_loss_scale = rc.precision == "float16"
    with strategy.scope():
        optimizer = opt_config.create_optimizer()
        optimizer.build(variables)
        loss_scale = _DynamicLossScale() if use_loss_scale else None
    ckpt_objects = [*modules, optimizer, global_step] + ([loss_scale] if loss_scale else [])

    tf.io.gfile.makedirs(rc.model_dir)
    latest = _resume(ckpt_objects, rc.model_dir)
    if not latest and rc.init_checkpoint:
        objects = ckpt_objects if rc.init_global_vars else modules
        report = model_utils.init_from_checkpoint(
            objects, rc.init_checkpoint, trainable_only=not rc.init_global_vars
        )
        _log_init_report(report, "Warm start from", rc.init_checkpoint)

    step = int(global_step.numpy())
    if step >= rc.train_steps:
        logging.info("Step %d >= --train_steps=%d: nothing to train.", step, rc.train_steps)
        return {"global_step": step}

    def apply_if_finite(distribution, grads, scales, finite, trained):
        # Cross-replica context (merge_call), where a cond may hold the optimizer's own cross-replica update.
        all_finite = tf.reduce_all(
            [tf.reduce_all(x) for x in distribution.experimental_local_results(finite)]
        )
        lr = opt_config.get_learning_rate(global_step, rc.train_steps)

        def apply_branch():
            optimizer.apply_gradients(zip(grads, trained, strict=True), lr, global_step, scales)
            return tf.constant(True)

        tf.cond(all_finite, apply_branch, lambda: tf.constant(False))
        loss_scale.update(all_finite)

    def forward_backward(features):
        with tf.GradientTape() as tape:
            step_loss, step_monitors = loss_fn(features, True)
            scaled_loss = step_loss * loss_scale.scale if use_loss_scale else step_loss
        grads = tape.gradient(scaled_loss, variables)
        # Sparse (embedding) gradients are densified: all-reduce and clipping treat every tensor alike.
        grads = [None if g is None else tf.convert_to_tensor(g) for g in grads]
        return step_loss, step_monitors, grads

    if rc.jit_compile:
        # Only this part: the all-reduce and the optimizer's cross-replica update stay outside XLA.
        forward_backward = tf.function(forward_backward, jit_compile=True, autograph=False)

    @tf.autograph.experimental.do_not_convert
    def step_fn(features):
        # Dropout and sampling draw from (seed, step, replica): a rerun, or a resumed run, draws the same.
        replica = tf.distribute.get_replica_context()
        step_seed = tf.random.experimental.stateless_fold_in(
            tf.random.experimental.stateless_fold_in(
                tf.constant([rc.seed, 0], tf.int64), global_step.read_value()
            ),
            tf.cast(replica.replica_id_in_sync_group, tf.int64),
        )
        with ops.random_seed(step_seed):
            step_loss, step_monitors, grads = forward_backward(features)
        # As in the original, a variable without a gradient is not updated.
        trained = [v for g, v in zip(grads, variables, strict=True) if g is not None]
        for grad, var in zip(grads, variables, strict=True):
            if grad is None:
                logging.warning("No gradient, not trained: %s", var.name)
        grads = [g for g in grads if g is not None]
        grads = replica.all_reduce(tf.distribute.ReduceOp.MEAN, grads)
        lr = opt_config.get_learning_rate(global_step, rc.train_steps)
        outputs = {"loss": step_loss}
        if use_loss_scale:
            grads = [g / loss_scale.scale for g in grads]
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
            grads, outputs["grad_norm"], scales = opt_config.gradient_scales(grads, trained)
            replica.merge_call(
                functools.partial(apply_if_finite, trained=trained), args=(grads, scales, finite)
            )
        else:
            grads, outputs["grad_norm"], scales = opt_config.gradient_scales(grads, trained)
            optimizer.apply_gradients(zip(grads, trained, strict=True), lr, global_step, scales)
        global_step.assign_add(1)
        for name in monitor_names:
            outputs[name] = step_monitors[name]
        return {k: tf.cast(v, tf.float32) for k, v in outputs.items()}

    output_names = ["loss", "grad_norm", *monitor_names]

    @tf.function
    def train_loop(iterator, num_steps):
        """Means of the outputs over `num_steps` steps, and the first step whose loss is not finite."""
        sums = {name: tf.constant(0.0) for name in output_names}
        first_nonfinite = tf.constant(-1, tf.int64)
        for _ in tf.range(num_steps):
            outputs = strategy.run(step_fn, args=(next(iterator),))
            means = {
                name: strategy.reduce(tf.distribute.ReduceOp.MEAN, outputs[name], axis=None)
                for name in output_names
            }
            sums = {name: sums[name] + means[name] for name in output_names}
            first_nonfinite = tf.where(
                (first_nonfinite < 0) & ~tf.math.is_finite(means["loss"]),
                global_step.read_value(),
                first_nonfinite,
            )
        means = {name: sums[name] / tf.cast(num_steps, tf.float32) for name in output_names}
        return means, first_nonfinite

    is_chief = strategy.extended.should_checkpoint
    done_marker = os.path.join(rc.model_dir, DONE_MARKER)
    if is_chief and tf.io.gfile.exists(done_marker):
        tf.io.gfile.rmtree(done_marker)  # training goes on: more checkpoints will come
    writer = tf.summary.create_file_writer(rc.model_dir) if is_chief else None
    # A warm start (init_checkpoint with init_global_vars) keeps the step count but has trained on none
    # of this input; only a resume in model_dir skips what it consumed since the run began.
    input_start_path = os.path.join(rc.model_dir, INPUT_START_FILE)
    if latest:
        input_start = 0
        if tf.io.gfile.exists(input_start_path):
            with tf.io.gfile.GFile(input_start_path) as f:
                input_start = json.load(f)["global_step"]
        consumed = step - input_start
    else:
        consumed = 0
        if is_chief:
            data_utils.atomic_write_json(input_start_path, {"global_step": step})
    iterator = iter(strategy.distribute_datasets_from_function(_resumed(dataset_fn, consumed)))
    logging.info("Training from step %d to %d.", step, rc.train_steps)

    logged = {}
    interval_sums = collections.defaultdict(float)
    interval_start_step, interval_start_time = step, time.time()
    # (steps, seconds) of the first call, which includes tracing and compilation: left out of the
    # throughput when its interval has other calls.
    first_call = None
    while step < rc.train_steps:
        boundaries = [rc.iterations, rc.train_steps - step, rc.log_freq - step % rc.log_freq]
        if rc.save_steps:
            boundaries.append(rc.save_steps - step % rc.save_steps)
        num_steps = min(boundaries)
        call_start = time.time()
        means, first_nonfinite = train_loop(iterator, tf.constant(num_steps))
        for name, value in means.items():
            interval_sums[name] += float(value) * num_steps
        step = int(global_step.numpy())
        # Dynamic loss scaling and --skip_nan_grad skip such steps by design.
        if first_nonfinite >= 0 and not (opt_config.skip_nan_grad or use_loss_scale):
            raise FloatingPointError(
                f"the loss is not finite at step {int(first_nonfinite)}: training stopped; the last "
                f"checkpoint in {rc.model_dir} is intact (--skip_nan_grad skips such updates instead)"
            )
        done = step >= rc.train_steps
        if first_call is None:
            first_call = (num_steps, time.time() - call_start)
            logging.info("First call of the train loop (with compilation): %.1f s.", first_call[1])

        if step % rc.log_freq == 0 or done:
            elapsed = time.time() - interval_start_time
            n = step - interval_start_step
            logged = {name: total / n for name, total in interval_sums.items()}
            timed_steps, timed_secs = n, elapsed
            if first_call and n > first_call[0]:
                timed_steps, timed_secs = n - first_call[0], elapsed - first_call[1]
            first_call = ()
            steps_per_sec = timed_steps / max(timed_secs, 1e-9)
            eta = (rc.train_steps - step) / steps_per_sec
            # The learning rate of the last update.
            logged["learning_rate"] = float(opt_config.get_learning_rate(step - 1, rc.train_steps))
            parts = [f"step {step}/{rc.train_steps}", f"loss {logged['loss']:.4f}"]
            parts.append(f"lr {logged['learning_rate']:.3e}")
            parts += [f"{name} {logged[name]:.4g}" for name in output_names[1:]]
            if use_loss_scale:
                logged["loss_scale"] = float(loss_scale.scale.numpy())
                parts.append(f"loss_scale {logged['loss_scale']:g}")
            parts += [
                f"{steps_per_sec * rc.train_batch_size:.1f} examples/sec",
                f"ETA {_format_duration(eta)}",
            ]
            logging.info(" | ".join(parts))
            if writer is not None:
                with writer.as_default(step=step):
                    for name, value in logged.items():
                        tf.summary.scalar(name, value)
                    tf.summary.scalar("examples_per_sec", steps_per_sec * rc.train_batch_size)
                writer.flush()
            interval_sums.clear()
            interval_start_step, interval_start_time = step, time.time()

        if is_chief and (done or (rc.save_steps and step % rc.save_steps == 0)):
            path = os.path.join(rc.model_dir, f"model.ckpt-{step}")
            _check_finite(variables, step)
            model_utils.save_checkpoint(ckpt_objects, path, max_to_keep=rc.max_save)
            logging.info("Saved %s", path)
    if is_chief:
        # Tells evaluation jobs polling model_dir that no more checkpoints will come, and a rerun that
        # the run is finished.
        tf.io.gfile.makedirs(done_marker)
        data_utils.atomic_write_json(os.path.join(done_marker, "step.json"), {"global_step": step})
    return {"global_step": step, **logged}


def write_run_config(strategy, net_config, model_dir):
    """Writes `model_dir/net_config.json`, the first thing a training run writes.

    Evaluation jobs and exports read the model's config from there, and an evaluation started with the
    training waits for it (`wait_for_training_run`). A different config already there (an earlier run's)
    is an error.
    """
    path = os.path.join(model_dir, "net_config.json")
    data_utils.ensure_writable_dir(model_dir, "model_dir")
    if tf.io.gfile.exists(path):
        existing = modeling.ModelConfig.init_from_json(path)
        if existing != net_config:
            changed = sorted(
                k
                for k in modeling.ModelConfig.keys
                if getattr(existing, k) != getattr(net_config, k)
            )
            raise ValueError(
                f"{path} differs from this run's model config in {changed}: use another --model_dir "
                f"or --model_config={path}"
            )
        return
    if strategy.extended.should_checkpoint:
        net_config.to_json(path)


def wait_for_training_run(model_dir, timeout_secs, poll_secs=5):
    """Waits until `model_dir` holds a `net_config.json` or a checkpoint, at most `timeout_secs`.

    For an evaluation job started together with its training job, which writes the config first.

    Raises:
      ValueError: nothing appeared in time.
    """
    waited = 0
    while not (
        tf.io.gfile.exists(os.path.join(model_dir, "net_config.json"))
        or step_checkpoints(model_dir)
    ):
        if waited >= timeout_secs:
            raise ValueError(
                f"{model_dir} holds no net_config.json and no checkpoint after {waited} s: no "
                "training run is writing there (give --model_config to evaluate other checkpoints)"
            )
        if waited == 0:
            logging.info("Waiting for a training run to start writing %s.", model_dir)
        time.sleep(poll_secs)
        waited += poll_secs


def finetune(strategy, loss_fn, dataset_fn, model, net_config, flag_values):
    """A finetuning script's training: `write_run_config`, then `train` on `model`.

    Args:
      strategy, loss_fn, dataset_fn: as for `train`.
      model: the `FunnelTFM` to train.
      net_config: its `ModelConfig`, written beside the checkpoints for evaluation and export.
      flag_values: the parsed flags of `define_engine_flags` and `define_optimizer_flags`, and
        `verbose` (log every variable first).
    Returns:
      what `train` returns.
    """
    write_run_config(strategy, net_config, flag_values.model_dir)
    if flag_values.verbose:
        build_variables(strategy, lambda f: loss_fn(f, True), dataset_fn)
        for name, var in sorted(model.named_variables().items()):
            logging.info("%s %s", name, var.shape.as_list())
    return train(
        strategy,
        loss_fn,
        dataset_fn,
        [model],
        optimization.OptimizerConfig.from_flags(flag_values),
        RunConfig.from_flags(flag_values),
    )


# ------------------------------------------------------------------------------------------ evaluation
def step_checkpoints(model_dir):
    """[(step, prefix)] of every `*-{step}.index` checkpoint in `model_dir`, by increasing step."""
    found = []
    for index_path in tf.io.gfile.glob(os.path.join(model_dir, "*.index")):
        prefix = index_path[: -len(".index")]
        step = model_utils.checkpoint_step(prefix)
        if step is not None:
            found.append((step, prefix))
    return sorted(found)


def finished_step(model_dir):
    """The final step of the finished training run in `model_dir`, or None."""
    path = os.path.join(model_dir, DONE_MARKER, "step.json")
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return int(json.load(f)["global_step"])


def iterate_checkpoints(
    model_dir, start_step=-1, end_step=None, poll_secs=60, latest_only=False, timeout_secs=0
):
    """Yields (step, prefix) of each checkpoint with start_step < step <= end_step, in step order.

    New checkpoints are picked up as a concurrent training job writes them: when none is left, it waits
    `poll_secs` and looks again, until `model_dir/done` (written when training finishes) exists. It waits
    only for a training run that plausibly writes there: `model_dir` must exist and hold a checkpoint or
    the `net_config.json` a starting run writes first.

    Args:
      model_dir: directory of `model.ckpt-{step}` checkpoints.
      start_step: only checkpoints after this step.
      end_step: only checkpoints up to this step (None: no limit).
      poll_secs: seconds between looks for new checkpoints.
      latest_only: yield only the newest checkpoint present at each look.
      timeout_secs: give up (ValueError) after waiting this long for a new checkpoint; 0: no limit.
    Raises:
      ValueError: nothing to wait for, or the timeout.
    """
    if not tf.io.gfile.isdir(model_dir):
        raise ValueError(f"{model_dir} does not exist: there is no checkpoint to evaluate")
    last = start_step
    waited = 0
    while end_step is None or last < end_step:
        pending = [
            (s, p)
            for s, p in step_checkpoints(model_dir)
            if s > last and (end_step is None or s <= end_step)
        ]
        if latest_only:
            pending = pending[-1:]
        if not pending:
            if tf.io.gfile.exists(os.path.join(model_dir, DONE_MARKER)):
                return
            if not step_checkpoints(model_dir) and not tf.io.gfile.exists(
                os.path.join(model_dir, "net_config.json")
            ):
                raise ValueError(
                    f"{model_dir} holds no checkpoint and no training run is writing there (it has "
                    "no net_config.json)"
                )
            if timeout_secs and waited >= timeout_secs:
                raise ValueError(
                    f"no new checkpoint in {model_dir} for {waited} s (--eval_timeout={timeout_secs})"
                )
            if waited == 0:
                logging.info(
                    "Waiting for new checkpoints in %s (stops once %s/%s exists).",
                    model_dir,
                    model_dir,
                    DONE_MARKER,
                )
            time.sleep(poll_secs)
            waited += poll_secs
            continue
        waited = 0
        for step, path in pending:
            yield step, path
            last = max(last, step)


def evaluate_checkpoints(
    model_dir,
    evaluate_fn,
    metrics_path,
    writer=None,
    start_step=-1,
    end_step=None,
    latest_only=False,
    timeout_secs=0,
    settings=None,
):
    """Evaluates every checkpoint of `model_dir` (see `iterate_checkpoints`), each once.

    A checkpoint whose metrics file exists with the same `settings` was evaluated before: it is not
    evaluated again, and the metrics of checkpoints the clean-up has deleted since still count, so a
    rerun, or an evaluation job restarted after a kill, ends with the same results (delete the files to
    evaluate again). A metrics file written with other settings (another evaluation file, length or
    decoding option) is evaluated again where its checkpoint still exists, and left out otherwise.

    Args:
      model_dir: the checkpoints' directory.
      evaluate_fn: callable(step, checkpoint path) -> dict name -> float (or None): restores, predicts,
        writes any per-example files, returns the metrics.
      metrics_path: where a checkpoint's metrics go, a format string with `{step}`; the file (with `step`
        and `path` added) is written last, so it marks a complete evaluation.
      writer: a `tf.summary` writer for the metrics, or None.
      start_step, end_step, latest_only, timeout_secs: see `iterate_checkpoints`.
      settings: a JSON-able dict of what the metrics depend on besides the checkpoint; kept in each
        metrics file.
    Returns:
      [(step, checkpoint path, metrics)] of every evaluated step in (start_step, end_step], by step.
    Raises:
      ValueError: no checkpoint in that range (and those of `iterate_checkpoints`).
    """
    head, tail = os.path.split(metrics_path)
    step_re = re.compile("^" + re.escape(tail).replace(re.escape("{step}"), r"(\d+)") + "$")
    tf.io.gfile.makedirs(head)
    # Compared as JSON: a tuple setting reads back as a list.
    settings_as_read = json.loads(json.dumps(settings))
    done = {}
    for name in tf.io.gfile.listdir(head):
        match = step_re.match(name)
        if match:
            with tf.io.gfile.GFile(os.path.join(head, name)) as f:
                record = json.load(f)
            if record.pop("settings", None) != settings_as_read:
                logging.info("%s was evaluated with other settings: not used.", name)
                continue
            done[int(match.group(1))] = (record.pop("path"), record)
    for step, path in iterate_checkpoints(
        model_dir, start_step, end_step, latest_only=latest_only, timeout_secs=timeout_secs
    ):
        if step in done:
            logging.info(
                "Checkpoint %s was evaluated before: %s.", path, metrics_path.format(step=step)
            )
            continue
        started = time.monotonic()
        metrics = evaluate_fn(step, path)
        eval_secs = time.monotonic() - started
        record = {"step": step, "path": path, **metrics}
        if settings is not None:
            record["settings"] = settings
        data_utils.atomic_write_json(metrics_path.format(step=step), record, indent=4)
        if writer is not None:
            with writer.as_default(step=step):
                for name, value in metrics.items():
                    if value is not None:
                        tf.summary.scalar(name, value)
            writer.flush()
        done[step] = (path, {"step": step, **metrics})
        waiting = (
            []
            if latest_only
            else [
                s
                for s, _ in step_checkpoints(model_dir)
                if s > step and (end_step is None or s <= end_step) and s not in done
            ]
        )
        logging.info(
            "Eval step %d in %.0fs (%d more checkpoint(s) waiting, about %.0fs) | %s",
            step,
            eval_secs,
            len(waiting),
            len(waiting) * eval_secs,
            " | ".join(f"{k} {'n/a' if v is None else f'{v:.4g}'}" for k, v in metrics.items()),
        )
    in_range = [s for s in done if s > start_step and (end_step is None or s <= end_step)]
    if not in_range:
        raise ValueError(
            f"no checkpoint to evaluate in {model_dir} with step in ({start_step}, {end_step}] "
            "(--eval_start_step, --eval_end_step)"
        )
    return [
        (s, done[s][0], {k: v for k, v in done[s][1].items() if k != "step"})
        for s in sorted(in_range)
    ]


def write_best_result(results, score_fn, record_fn, model_dir):
    """The best of `evaluate_checkpoints`' results, written to `model_dir/best_result.json` (what a
    later --do_submit and the exports read).

    Args:
      results: [(step, checkpoint path, metrics)], from `evaluate_checkpoints`.
      score_fn: callable(metrics) -> float, higher is better; of equal scores the earliest step wins; NaN
        (e.g. a Pearson correlation of constant predictions) ranks below every number.
      record_fn: callable(metrics, step, path) -> the JSON record, with "step" and "path".
      model_dir: where best_result.json goes.
    Returns:
      The record.
    """

    def rank(result):
        score = score_fn(result[2])
        return -math.inf if math.isnan(score) else score

    step, path, metrics = max(results, key=rank)
    best = record_fn(metrics, step, path)
    data_utils.atomic_write_json(os.path.join(model_dir, "best_result.json"), best, indent=4)
    logging.info("Best result: %s", best)
    return best


def flag_settings(flag_values, names):
    """{name: value} of the flags `names`, the `settings` of `evaluate_checkpoints`."""
    return {name: getattr(flag_values, name) for name in names}


def delete_checkpoints(paths, keep=()):
    """Deletes the files of the checkpoints `paths` except those in `keep`.

    The original's clean-up after evaluation (--retain_all keeps everything, --retain_best the best).
    """
    for path in paths:
        if path in keep:
            continue
        for filename in tf.io.gfile.glob(path + ".*"):
            tf.io.gfile.remove(filename)
        logging.info("Deleted %s (--retain_all / --retain_best keep checkpoints).", path)


def real_examples(outputs):
    """The rows of `outputs` (numpy, from `Predictor`) whose `is_real_example` is 1: no padding."""
    real = outputs["is_real_example"] == 1
    return {k: v[real] for k, v in outputs.items()}


def restore_checkpoint(modules, path):
    """Loads every variable of `modules` from the checkpoint `path`; ValueError if any is missing."""
    report = model_utils.init_from_checkpoint(list(modules), path)
    if report.missing:
        raise ValueError(
            f"checkpoint {path} lacks {len(report.missing)} variable(s) of the model, e.g. "
            f"{', '.join(report.missing[:3])}"
        )
    return report


class Predictor:
    """Runs a prediction function over finite datasets and gathers its outputs in dataset order.

    The traced step is kept across calls, so evaluating many checkpoints traces once.

    Args:
      strategy: the strategy (one host).
      predict_fn: callable(features) -> dict name -> tensor with a leading per-replica batch dimension;
        traced without autograph, as `train`'s `loss_fn`.
    """

    def __init__(self, strategy, predict_fn):
        self.strategy = strategy

        @tf.function(autograph=False)
        def predict_step(batch):
            outputs = strategy.run(predict_fn, args=(batch,))
            return {name: strategy.gather(value, axis=0) for name, value in outputs.items()}

        self._predict_step = predict_step

    def __call__(self, dataset_fn):
        """Predictions for every example of `dataset_fn`.

        Args:
          dataset_fn: callable(InputContext) -> finite dataset of per-replica batches; the number of batches
            must be a multiple of the replica count (pad the data, e.g. with fake examples).

        Returns:
          dict name -> numpy array, concatenated over all examples.
        """
        chunks = collections.defaultdict(list)
        for batch in self.strategy.distribute_datasets_from_function(dataset_fn):
            for name, value in self._predict_step(batch).items():
                chunks[name].append(value.numpy())
        return {name: np.concatenate(values) for name, values in chunks.items()}
