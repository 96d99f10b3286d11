"""Tests of the training engine: strategies, resume, loss scaling, warm start, logging, eval helpers.

The multi-device tests run in subprocesses (this file is their entry point): one process splits the CPU into
two logical devices for MirroredStrategy, two processes form a MultiWorkerMirroredStrategy cluster on
loopback ports. Each must end with the weights of a one-device run on the same global batch.
"""

import dataclasses
import json
import logging as py_logging
import os
import pathlib
import socket
import subprocess
import sys
import types

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tensorflow"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import model_test_utils  # noqa: E402
import model_utils  # noqa: E402
import modeling  # noqa: E402
import optimization  # noqa: E402
import training  # noqa: E402

THIS_FILE = pathlib.Path(__file__).resolve()
GLOBAL_BATCH = 8
SEQ_LEN = 16
N_EXAMPLES = 16  # two global batches, repeated
OPT = optimization.OptimizerConfig(learning_rate=1e-3, warmup_steps=2, weight_decay=0.01, clip=0.5)


def flag_values(**overrides):
    values = dict(
        use_tpu=False,
        tpu=None,
        master=None,
        tpu_zone=None,
        gcp_project=None,
        tpu_job_name=None,
        num_hosts=1,
        num_core_per_host=1,
    )
    values.update(overrides)
    return types.SimpleNamespace(**values)


def tiny_config(dropout=0.0, dropatt=0.0):
    # Dropout 0 by default: replicas must compute exactly what one device computes.
    return model_test_utils.tiny_config(
        block_size="1_1", vocab_size=30, dropout=dropout, dropatt=dropatt, decoder_size="0"
    )


def make_data(seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(5, 30, size=(N_EXAMPLES, SEQ_LEN)).astype(np.int32)
    ids[:, 0] = 1
    seg = np.zeros_like(ids)
    seg[:, 0] = 2
    seg[:, SEQ_LEN // 2 :] = 1
    mask = np.zeros(ids.shape, np.float32)
    mask[::3, -4:] = 1.0
    labels = rng.randint(0, 3, size=N_EXAMPLES).astype(np.int32)
    return {"input_ids": ids, "segment_ids": seg, "input_mask": mask, "label_ids": labels}


class Problem:
    """A 3-class classifier on a tiny Funnel-Transformer and a fixed, repeated dataset.

    `dropout` and `shuffle_seed` make a run random: dropout on, examples reshuffled every epoch.
    """

    def __init__(
        self, fail_after_batches=None, dropout=0.0, shuffle_seed=None, precision="float32"
    ):
        self.model = modeling.FunnelTFM(tiny_config(dropout=dropout, dropatt=dropout))
        self.data = make_data()
        self.fail_after_batches = fail_after_batches
        self.shuffle_seed = shuffle_seed
        self.precision = precision

    def forward(self, features, is_training):
        summary, _ = self.model.get_pooled_output(
            features["input_ids"],
            is_training,
            seg_id=features["segment_ids"],
            input_mask=features["input_mask"],
            precision=self.precision,
        )
        return self.model.classification_loss(summary, features["label_ids"], 3, is_training, "cls")

    def loss_fn(self, features, is_training):
        per_example_loss, logits = self.forward(features, is_training)
        top = tf.argmax(logits, -1, output_type=tf.int32)
        accuracy = tf.reduce_mean(tf.cast(tf.equal(top, features["label_ids"]), tf.float32))
        return tf.reduce_mean(per_example_loss), {"accuracy": accuracy}

    def dataset_fn(self, input_context):
        dataset = tf.data.Dataset.from_tensor_slices(self.data)
        if input_context.num_input_pipelines > 1:
            dataset = dataset.shard(
                input_context.num_input_pipelines, input_context.input_pipeline_id
            )
        if self.shuffle_seed is not None:
            dataset = dataset.shuffle(N_EXAMPLES, seed=self.shuffle_seed)
        dataset = dataset.repeat().batch(
            input_context.get_per_replica_batch_size(GLOBAL_BATCH), drop_remainder=True
        )
        if self.fail_after_batches is not None:
            # A crash in the middle of training: the input fails after this many batches.
            limit = self.fail_after_batches
            dataset = dataset.enumerate().map(
                lambda i, batch: (tf.debugging.assert_less(i, tf.cast(limit, tf.int64)), batch)[1]
            )
        return dataset

    def eval_dataset_fn(self, input_context):
        dataset = tf.data.Dataset.from_tensor_slices(self.data)
        return dataset.batch(input_context.get_per_replica_batch_size(4), drop_remainder=True)

    def predict_fn(self, features):
        _, logits = self.forward(features, False)
        return {"logits": logits, "label_ids": features["label_ids"]}


def make_init_checkpoint(path):
    """A checkpoint of every variable of the tiny model, so every run starts from the same weights."""
    problem = Problem()
    problem.loss_fn({k: tf.constant(v[:2]) for k, v in problem.data.items()}, False)
    return model_utils.save_checkpoint([problem.model], str(path))


def run_training(strategy, model_dir, init_checkpoint, train_steps=6, **run_overrides):
    problem = Problem(
        run_overrides.pop("fail_after_batches", None),
        run_overrides.pop("dropout", 0.0),
        run_overrides.pop("shuffle_seed", None),
        run_overrides.get("precision", "float32"),
    )
    opt_config = run_overrides.pop("opt_config", OPT)
    config = dict(
        model_dir=str(model_dir),
        train_steps=train_steps,
        train_batch_size=GLOBAL_BATCH,
        iterations=2,
        save_steps=3,
        log_freq=1,
        init_checkpoint=str(init_checkpoint),
    )
    config.update(run_overrides)
    result = training.train(
        strategy,
        problem.loss_fn,
        problem.dataset_fn,
        [problem.model],
        opt_config,
        training.RunConfig(**config),
    )
    return problem, result


def weights(problem):
    return {name: var.numpy() for name, var in problem.model.named_variables().items()}


def checkpoint_tensors(path):
    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def assert_same_weights(actual, expected, atol=2e-5):
    assert sorted(actual) == sorted(expected)
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], atol=atol, err_msg=name)


# ------------------------------------------------------------------------------------ flags and configs
def test_resolve_precision():
    assert training.resolve_precision(False, None) == "float32"
    assert training.resolve_precision(True, None) == "bfloat16"
    assert training.resolve_precision(True, "bfloat16") == "bfloat16"
    assert training.resolve_precision(False, "float16") == "float16"
    with pytest.raises(ValueError, match="--use_bfloat16 conflicts with --precision=float16"):
        training.resolve_precision(True, "float16")
    with pytest.raises(ValueError, match="--precision"):
        training.resolve_precision(False, "int8")


def test_run_config_from_flags_and_validation():
    flags = types.SimpleNamespace(
        model_dir="/tmp/x",
        train_steps=10,
        train_batch_size=4,
        iterations=5,
        save_steps=None,
        max_save=0,
        log_freq=2,
        use_bfloat16=True,
        precision=None,
        init_checkpoint=None,
        init_global_vars=False,
        jit_compile=True,
        seed=3,
    )
    config = training.RunConfig.from_flags(flags)
    assert config.precision == "bfloat16" and config.train_steps == 10 and config.jit_compile
    assert config.seed == 3
    with pytest.raises(ValueError, match="--model_dir is required"):
        training.RunConfig(model_dir="", train_steps=1, train_batch_size=1)
    with pytest.raises(ValueError, match="--iterations must be > 0"):
        training.RunConfig(model_dir="d", train_steps=1, train_batch_size=1, iterations=0)


def test_strategy_from_flags():
    strategy = training.get_strategy(flag_values())
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
    assert strategy.num_replicas_in_sync == 1


def test_multi_host_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="--num_hosts=2 .*TF_CONFIG"):
        training.get_strategy(flag_values(num_hosts=2))
    cluster = {"cluster": {"worker": ["localhost:1", "localhost:2", "localhost:3"]}}
    monkeypatch.setenv("TF_CONFIG", json.dumps({**cluster, "task": {"type": "worker", "index": 0}}))
    with pytest.raises(ValueError, match="--num_hosts=2 but TF_CONFIG lists 3 workers"):
        training.get_strategy(flag_values(num_hosts=2))


def test_model_config_from_flags(tmp_path):
    config = tiny_config()
    path = tmp_path / "net_config.json"
    config.to_json(str(path))
    flags = types.SimpleNamespace(
        model_config=str(path), overwrite_keys="d_inner, dropout", d_inner=64, dropout=0.3
    )
    loaded = training.model_config_from_flags(flags, vocab_size=30)
    assert loaded.d_inner == 64 and loaded.dropout == 0.3 and loaded.d_model == config.d_model
    with pytest.raises(ValueError, match="vocab_size 30 but the tokenizer .* has 31 entries"):
        training.model_config_from_flags(flags, vocab_size=31)
    flags.overwrite_keys = "d_inner,colour"
    with pytest.raises(ValueError, match="--overwrite_keys"):
        training.model_config_from_flags(flags)


# ------------------------------------------------------------------------------------------- training
def test_train_logs_saves_and_learns(tmp_path, caplog):
    init = make_init_checkpoint(tmp_path / "init" / "model.ckpt")
    strategy = training.get_strategy(flag_values())
    # On the absl logger itself: absl may have been left at WARNING by an earlier test in the process.
    caplog.set_level(py_logging.INFO, logger="absl")
    problem, result = run_training(
        strategy, tmp_path / "run", init, train_steps=12, save_steps=4, max_save=2, log_freq=4
    )
    assert result["global_step"] == 12

    # Logging: step, loss, learning rate, examples/sec and ETA every log_freq steps.
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [line.split(" |")[0] for line in lines] == ["step 4/12", "step 8/12", "step 12/12"]
    for part in ("loss ", "lr ", "grad_norm ", "accuracy ", "examples/sec", "ETA "):
        assert all(part in line for line in lines)

    # The same scalars as TensorBoard summaries.
    losses = dict(model_test_utils.summary_scalars(tmp_path / "run")["loss"])
    assert sorted(losses) == [4, 8, 12]
    assert losses[12] < losses[4]  # it learns the 16 examples

    # Name-based checkpoints, only the last max_save kept, with global_step and the Adam slots.
    assert model_utils.list_checkpoints(str(tmp_path / "run")) == [
        str(tmp_path / "run" / "model.ckpt-8"),
        str(tmp_path / "run" / "model.ckpt-12"),
    ]
    assert not tf.io.gfile.glob(str(tmp_path / "run" / "model.ckpt-4.*"))
    saved = checkpoint_tensors(str(tmp_path / "run" / "model.ckpt-12"))
    assert saved["global_step"] == 12
    name = "model/encoder/layer_0/rel_attn/q/kernel"
    assert f"{name}/adam_m" in saved and f"{name}/adam_v" in saved
    assert_same_weights({k: saved[k] for k in weights(problem)}, weights(problem), atol=0)

    # The logged learning rate is the one of the last update.
    assert result["learning_rate"] == pytest.approx(float(OPT.get_learning_rate(11, 12)))

    # Evaluation jobs polling the directory stop once training has finished.
    assert tf.io.gfile.isdir(str(tmp_path / "run" / training.DONE_MARKER))
    evaluated = training.iterate_checkpoints(str(tmp_path / "run"), poll_secs=0)
    assert [step for step, _ in evaluated] == [8, 12]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_loss_and_predict_functions_are_traced_as_written(tmp_path, jit_compile):
    # Autograph would trace a converted copy of each function (and of the model code it calls), compiled
    # from a generated file: the code that runs would not be the code written here.
    traced_files = []

    class Recording(Problem):
        def loss_fn(self, features, is_training):
            traced_files.append(sys._getframe().f_code.co_filename)
            return super().loss_fn(features, is_training)

        def predict_fn(self, features):
            traced_files.append(sys._getframe().f_code.co_filename)
            return super().predict_fn(features)

    problem = Recording()
    strategy = training.get_strategy(flag_values())
    config = training.RunConfig(
        model_dir=str(tmp_path / "run"),
        train_steps=2,
        train_batch_size=GLOBAL_BATCH,
        iterations=2,
        jit_compile=jit_compile,
    )
    result = training.train(
        strategy, problem.loss_fn, problem.dataset_fn, [problem.model], OPT, config
    )
    assert result["global_step"] == 2 and np.isfinite(result["loss"])
    outputs = training.Predictor(strategy, problem.predict_fn)(problem.eval_dataset_fn)
    assert outputs["logits"].shape == (N_EXAMPLES, 3)
    # The eager call that builds the variables, the train step's trace, the prediction step's trace.
    assert len(traced_files) == 3
    assert set(traced_files) == {__file__}


def test_bfloat16_training_converges_as_float32_does(tmp_path):
    # Same weights, seed, dropout masks and batches: only the compute dtype differs.
    init = make_init_checkpoint(tmp_path / "init" / "model.ckpt")
    strategy = training.get_strategy(flag_values())
    losses = {}
    for precision in ("float32", "bfloat16"):
        model_dir = tmp_path / precision
        run_training(
            strategy,
            model_dir,
            init,
            train_steps=40,
            dropout=0.1,
            seed=5,
            precision=precision,
            opt_config=dataclasses.replace(OPT, learning_rate=1e-2),
        )
        losses[precision] = np.array(
            [v for _, v in model_test_utils.summary_scalars(model_dir)["loss"]]
        )
    f32, bf16 = losses["float32"], losses["bfloat16"]
    assert len(f32) == len(bf16) == 40
    # Both learn the 16 examples (the loss falls from ln 3 to ~0.58 in float32), along the same curve.
    assert f32[-4:].mean() < 0.65 * f32[:4].mean()
    assert bf16[-4:].mean() < 0.65 * bf16[:4].mean()
    np.testing.assert_allclose(bf16, f32, atol=0.03)


def test_resume_after_crash_matches_uninterrupted_run(tmp_path):
    init = make_init_checkpoint(tmp_path / "init" / "model.ckpt")
    strategy = training.get_strategy(flag_values())
    reference, result = run_training(strategy, tmp_path / "full", init, train_steps=6)
    assert result["global_step"] == 6

    # The input fails at the 5th batch: the checkpoint of step 4 survives the crash.
    with pytest.raises(tf.errors.InvalidArgumentError):
        run_training(
            strategy, tmp_path / "crash", init, train_steps=6, save_steps=2, fail_after_batches=4
        )
    assert model_utils.latest_checkpoint(str(tmp_path / "crash")).endswith("model.ckpt-4")

    # A fresh process state resumes from it by itself (init_checkpoint is ignored once model_dir has one),
    # and, the data having a period of 2 batches, sees the same batches as the uninterrupted run.
    resumed, result = run_training(strategy, tmp_path / "crash", init, train_steps=6)
    assert result["global_step"] == 6
    assert_same_weights(weights(resumed), weights(reference), atol=1e-6)
    full = checkpoint_tensors(str(tmp_path / "full" / "model.ckpt-6"))
    after_crash = checkpoint_tensors(str(tmp_path / "crash" / "model.ckpt-6"))
    assert_same_weights(after_crash, full, atol=1e-6)  # slots and global_step too

    # Training to the same step again does nothing.
    _, result = run_training(strategy, tmp_path / "crash", init, train_steps=6)
    assert result == {"global_step": 6}


def test_seeded_runs_with_dropout_and_shuffle_are_identical_and_resume_exactly(tmp_path):
    init = make_init_checkpoint(tmp_path / "init" / "model.ckpt")
    strategy = training.get_strategy(flag_values())
    random_run = dict(dropout=0.1, shuffle_seed=0, seed=7, train_steps=7)
    first, _ = run_training(strategy, tmp_path / "first", init, **random_run)
    second, _ = run_training(strategy, tmp_path / "second", init, **random_run)
    for name, value in weights(first).items():
        np.testing.assert_array_equal(weights(second)[name], value, err_msg=name)
    other_seed, _ = run_training(strategy, tmp_path / "other", init, **{**random_run, "seed": 8})
    kernel = "model/encoder/layer_0/ff/layer_1/kernel"
    assert not np.array_equal(weights(other_seed)[kernel], weights(first)[kernel])

    # A crash after step 3, in the middle of the second epoch: the resumed run reads on from the
    # checkpoint's step in the input and draws the same dropout masks, so it ends bit-identical.
    with pytest.raises(tf.errors.InvalidArgumentError):
        run_training(
            strategy, tmp_path / "crash", init, save_steps=3, fail_after_batches=4, **random_run
        )
    assert model_utils.latest_checkpoint(str(tmp_path / "crash")).endswith("model.ckpt-3")
    resumed, _ = run_training(strategy, tmp_path / "crash", init, save_steps=3, **random_run)
    for name, value in weights(first).items():
        np.testing.assert_array_equal(weights(resumed)[name], value, err_msg=name)


def test_a_non_finite_loss_stops_training_at_its_step_and_keeps_the_last_checkpoint(tmp_path):
    init = make_init_checkpoint(tmp_path / "init" / "model.ckpt")
    strategy = training.get_strategy(flag_values())
    problem = Problem()
    problem.data["input_mask"][N_EXAMPLES // 2 :, 1] = np.nan  # the second batch of every epoch
    config = training.RunConfig(
        model_dir=str(tmp_path / "nan"),
        train_steps=6,
        train_batch_size=GLOBAL_BATCH,
        iterations=1,
        save_steps=1,
        init_checkpoint=str(init),
    )
    args = (strategy, problem.loss_fn, problem.dataset_fn, [problem.model])
    with pytest.raises(FloatingPointError, match="not finite at step 2"):
        training.train(*args, OPT, config)
    latest = model_utils.latest_checkpoint(config.model_dir)
    assert latest.endswith("model.ckpt-1")
    assert all(np.isfinite(v).all() for v in checkpoint_tensors(latest).values())

    # --skip_nan_grad: the updates of those steps are skipped, the run ends, nothing is non-finite.
    skipping = dataclasses.replace(OPT, skip_nan_grad=True)
    result = training.train(
        *args, skipping, dataclasses.replace(config, model_dir=str(tmp_path / "skip"))
    )
    assert result["global_step"] == 6
    saved = checkpoint_tensors(str(tmp_path / "skip" / "model.ckpt-6"))
    assert all(np.isfinite(v).all() for v in saved.values())

    problem.model.named_variables()["model/cls/logit/bias"].assign([np.nan, 0.0, 0.0])
    with pytest.raises(FloatingPointError, match="step 6: 1 variable.*model/cls/logit/bias"):
        training._check_finite(list(problem.model.named_variables().values()), 6)


def test_a_full_disk_leaves_the_previous_checkpoint_latest(tmp_path, monkeypatch):
    init = make_init_checkpoint(tmp_path / "init" / "model.ckpt")
    strategy = training.get_strategy(flag_values())
    save = tf.raw_ops.SaveV2
    calls = []

    def save_until_full(**kwargs):
        calls.append(kwargs["prefix"])
        if len(calls) == 2:
            with open(kwargs["prefix"] + ".data-00000-of-00001", "wb") as f:
                f.write(b"partial")
            raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
        return save(**kwargs)

    monkeypatch.setattr(tf.raw_ops, "SaveV2", save_until_full)
    model_dir = tmp_path / "full_disk"
    with pytest.raises(
        OSError, match=f"cannot write checkpoint .*model.ckpt-4 in {model_dir}: No space"
    ):
        run_training(strategy, model_dir, init, train_steps=6, save_steps=2)
    assert model_utils.latest_checkpoint(str(model_dir)).endswith("model.ckpt-2")
    assert not list(model_dir.glob("model.ckpt-4*"))
    monkeypatch.setattr(tf.raw_ops, "SaveV2", save)
    resumed, result = run_training(strategy, model_dir, init, train_steps=6, save_steps=2)
    assert result["global_step"] == 6


def test_resume_skips_a_damaged_latest_checkpoint(tmp_path):
    init = make_init_checkpoint(tmp_path / "init" / "model.ckpt")
    strategy = training.get_strategy(flag_values())
    reference, _ = run_training(strategy, tmp_path / "full", init, train_steps=6, save_steps=2)
    run_training(strategy, tmp_path / "cut", init, train_steps=4, save_steps=2)
    data = tmp_path / "cut" / "model.ckpt-4.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])  # a copy cut short
    resumed, result = run_training(strategy, tmp_path / "cut", init, train_steps=6, save_steps=2)
    assert result["global_step"] == 6
    assert_same_weights(weights(resumed), weights(reference), atol=0)

    for step in (2, 4, 6):
        data = tmp_path / "cut" / f"model.ckpt-{step}.data-00000-of-00001"
        data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ValueError, match="no checkpoint of .* can be read \\(3 damaged\\)"):
        run_training(strategy, tmp_path / "cut", init, train_steps=8, save_steps=2)


def test_xla_compiled_steps_match_plain_steps(tmp_path):
    init = make_init_checkpoint(tmp_path / "init" / "model.ckpt")
    strategy = training.get_strategy(flag_values())
    plain, plain_result = run_training(strategy, tmp_path / "plain", init, train_steps=4)
    xla, xla_result = run_training(
        strategy, tmp_path / "xla", init, train_steps=4, jit_compile=True
    )
    assert xla_result["loss"] == pytest.approx(plain_result["loss"], rel=1e-4)
    assert_same_weights(weights(xla), weights(plain), atol=1e-4)
    kernel = "model/encoder/layer_0/ff/layer_1/kernel"
    moved = np.abs(weights(xla)[kernel] - checkpoint_tensors(str(init))[kernel]).max()
    assert moved > 1e-3  # four steps at this learning rate do move the weights


def test_warm_start_trainable_only_or_all(tmp_path):
    init = make_init_checkpoint(tmp_path / "init" / "model.ckpt")
    strategy = training.get_strategy(flag_values())
    run_training(strategy, tmp_path / "first", init, train_steps=3)
    trained = str(tmp_path / "first" / "model.ckpt-3")
    saved = checkpoint_tensors(trained)

    # Default (finetuning): the trainable variables only, so training starts at step 0 from the
    # checkpoint's weights: the first step's loss is the loss of those weights.
    one_step = dataclasses.replace(OPT, warmup_steps=0)
    _, result = run_training(
        strategy, tmp_path / "a", trained, train_steps=1, log_freq=1, opt_config=one_step
    )
    assert result["global_step"] == 1
    check = Problem()
    first_batch = {k: tf.constant(v[:GLOBAL_BATCH]) for k, v in check.data.items()}
    check.loss_fn(first_batch, False)
    training.restore_checkpoint([check.model], trained)
    loss_of_first_batch = float(check.loss_fn(first_batch, False)[0])
    assert result["loss"] == pytest.approx(loss_of_first_batch, abs=1e-5)

    # With init_global_vars: global_step (3 >= train_steps) and the slots come from the checkpoint.
    problem, result = run_training(
        strategy, tmp_path / "b", trained, train_steps=3, init_global_vars=True
    )
    assert result == {"global_step": 3}
    assert_same_weights(weights(problem), {k: saved[k] for k in weights(problem)}, atol=0)
    # The step count goes on, but the input is read from its start: unlike a resume in the same
    # model_dir, a warm start has trained on none of it (step 4 would otherwise take the 4th batch).
    _, result = run_training(
        strategy, tmp_path / "c", trained, train_steps=4, init_global_vars=True, log_freq=1
    )
    assert result["global_step"] == 4
    assert result["loss"] == pytest.approx(loss_of_first_batch, abs=1e-5)


def test_resume_after_a_warm_start_that_kept_the_step_reads_on_where_it_was(tmp_path):
    init = make_init_checkpoint(tmp_path / "init" / "model.ckpt")
    strategy = training.get_strategy(flag_values())
    run_training(strategy, tmp_path / "first", init, train_steps=3)
    trained = str(tmp_path / "first" / "model.ckpt-3")
    warm = dict(init_global_vars=True, train_steps=7, save_steps=2)
    reference, _ = run_training(strategy, tmp_path / "full", trained, **warm)

    # Step 4 (saved) reads the input's first batch; the crash comes at its third, in steps 5-6.
    with pytest.raises(tf.errors.InvalidArgumentError):
        run_training(strategy, tmp_path / "crash", trained, fail_after_batches=2, **warm)
    assert model_utils.latest_checkpoint(str(tmp_path / "crash")).endswith("model.ckpt-4")
    assert json.loads((tmp_path / "crash" / "input_start.json").read_text()) == {"global_step": 3}
    # The resume skips that one batch, not four: the data's period being two batches, skipping four
    # would train steps 5 to 7 on the batches in the other order.
    resumed, result = run_training(strategy, tmp_path / "crash", trained, **warm)
    assert result["global_step"] == 7
    assert_same_weights(weights(resumed), weights(reference), atol=1e-6)


def test_float16_loss_scale_skips_non_finite_steps(tmp_path):
    """A step whose gradient overflows leaves weights and slots alone and halves the loss scale."""

    class Linear(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = None

        def named_variables(self):
            return {"lin/w": self.w}

        def __call__(self, x):
            if self.w is None:
                with tf.init_scope():
                    self.w = tf.Variable(tf.fill([3, 1], 0.01), name="lin/w")
            return tf.matmul(tf.cast(x, tf.float16), tf.cast(self.w, tf.float16))

    model = Linear()
    # The second batch does not fit in float16: its loss and gradient are not finite.
    x = np.ones((6, 3), np.float32)
    x[2:4] = 1e7

    def dataset_fn(input_context):
        return tf.data.Dataset.from_tensor_slices({"x": x}).batch(2).repeat()

    def loss_fn(features, is_training):
        return tf.reduce_mean(tf.cast(model(features["x"]), tf.float32) ** 2), {}

    config = training.RunConfig(
        model_dir=str(tmp_path),
        train_steps=3,
        train_batch_size=2,
        precision="float16",
        save_steps=1,
        log_freq=1,
    )
    strategy = training.get_strategy(flag_values())
    training.train(strategy, loss_fn, dataset_fn, [model], OPT, config)
    ckpt = [checkpoint_tensors(str(tmp_path / f"model.ckpt-{step}")) for step in (1, 2, 3)]
    scale = "loss_scale/current_loss_scale"
    assert [c[scale] for c in ckpt] == [2.0**15, 2.0**14, 2.0**14]
    assert [int(c["global_step"]) for c in ckpt] == [1, 2, 3]
    skipped = {**ckpt[0], scale: 2.0**14, "global_step": 2, "loss_scale/good_steps": 0}
    assert int(ckpt[0]["loss_scale/good_steps"]) == 1
    assert_same_weights(ckpt[1], skipped, atol=0)  # weights and Adam slots unchanged
    assert not np.array_equal(ckpt[2]["lin/w"], ckpt[1]["lin/w"])
    assert np.all(np.isfinite(ckpt[2]["lin/w"]))


# ---------------------------------------------------------------------------------- evaluation helpers
def test_iterate_checkpoints(tmp_path):
    for step in (5, 10, 15):
        for suffix in (".index", ".data-00000-of-00001"):
            (tmp_path / f"model.ckpt-{step}{suffix}").write_text("")
    (tmp_path / training.DONE_MARKER).mkdir()
    found = list(training.iterate_checkpoints(str(tmp_path), start_step=5, end_step=15))
    assert found == [(10, str(tmp_path / "model.ckpt-10")), (15, str(tmp_path / "model.ckpt-15"))]
    assert [s for s, _ in training.iterate_checkpoints(str(tmp_path), latest_only=True)] == [15]
    assert [s for s, _ in training.iterate_checkpoints(str(tmp_path), end_step=7)] == [5]


def test_evaluate_checkpoints_then_write_best_result(tmp_path):
    model_dir, metrics_dir = tmp_path / "exp", tmp_path / "exp" / "eval"
    model_dir.mkdir()
    for step in (5, 10, 15):
        for suffix in (".index", ".data-00000-of-00001"):
            (model_dir / f"model.ckpt-{step}{suffix}").write_text("")
    (model_dir / training.DONE_MARKER).mkdir()
    accuracy = {5: 0.5, 10: 0.75, 15: 0.75}
    evaluated = []

    def evaluate_fn(step, path):
        evaluated.append((step, path))
        return {"eval_accuracy": accuracy[step]}

    def evaluate(start_step=-1, settings=None):
        return training.evaluate_checkpoints(
            str(model_dir),
            evaluate_fn,
            str(metrics_dir / "dev.ckpt-{step}.metrics.json"),
            start_step=start_step,
            settings=settings,
        )

    results = evaluate()
    assert results == [
        (s, str(model_dir / f"model.ckpt-{s}"), {"eval_accuracy": accuracy[s]}) for s in (5, 10, 15)
    ]
    best = training.write_best_result(
        results,
        lambda metrics: metrics["eval_accuracy"],
        lambda metrics, step, path: {"step": step, "path": path, "accu": metrics["eval_accuracy"]},
        str(model_dir),
    )
    # Of equal scores the earlier checkpoint wins.
    expected = {"step": 10, "path": str(model_dir / "model.ckpt-10"), "accu": 0.75}
    assert best == expected
    assert json.loads((model_dir / "best_result.json").read_text()) == expected
    # A NaN score (a correlation of constant predictions, say) ranks below every number, also first.
    scores = [(5, "a", {"r": float("nan")}), (10, "b", {"r": -0.5}), (15, "c", {"r": float("nan")})]
    record = training.write_best_result(
        scores, lambda m: m["r"], lambda m, step, path: {"step": step}, str(tmp_path)
    )
    assert record == {"step": 10}

    # A rerun reads the metrics files instead of evaluating again.
    assert evaluate() == results and len(evaluated) == 3
    # Unless they were written with other settings (another dev file): then the checkpoints that still
    # exist are evaluated again, and the metrics of a deleted one no longer count.
    for suffix in (".index", ".data-00000-of-00001"):
        (model_dir / f"model.ckpt-5{suffix}").unlink()
    other = {"data_dir": "glue/other", "max_seq_length": 32}
    accuracy.update({10: 0.25, 15: 0.5})
    assert evaluate(settings=other) == [
        (s, str(model_dir / f"model.ckpt-{s}"), {"eval_accuracy": accuracy[s]}) for s in (10, 15)
    ]
    assert [s for s, _ in evaluated[3:]] == [10, 15]
    record = json.loads((metrics_dir / "dev.ckpt-10.metrics.json").read_text())
    assert record["settings"] == other and record["eval_accuracy"] == 0.25
    assert len(evaluate(settings=other)) == 2 and len(evaluated) == 5
    with pytest.raises(
        ValueError, match=r"no checkpoint to evaluate in .*exp with step in \(15, None\]"
    ):
        evaluate(start_step=15)


def test_restore_checkpoint_and_predictor(tmp_path):
    init = make_init_checkpoint(tmp_path / "model.ckpt")
    strategy = training.get_strategy(flag_values())
    problem = Problem()
    training.build_variables(strategy, problem.predict_fn, problem.eval_dataset_fn)
    training.restore_checkpoint([problem.model], init)
    outputs = training.Predictor(strategy, problem.predict_fn)(problem.eval_dataset_fn)
    np.testing.assert_array_equal(outputs["label_ids"], problem.data["label_ids"])
    _, expected = problem.forward({k: tf.constant(v) for k, v in problem.data.items()}, False)
    np.testing.assert_allclose(outputs["logits"], expected.numpy(), atol=1e-5)

    other = modeling.FunnelTFM(tiny_config())
    other.get_pooled_output(tf.constant(problem.data["input_ids"][:1]), False)
    other.classification_loss(tf.zeros([1, 32]), tf.constant([0]), 5, False, "other")
    with pytest.raises(ValueError, match="lacks 2 variable"):
        training.restore_checkpoint([other], init)


# --------------------------------------------------------------------------------- multi-device runs
def _run_subprocesses(commands, envs, timeout=240):
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for cmd, env in zip(commands, envs, strict=True)
    ]
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output[-3000:]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_mirrored_two_cpus_matches_one_device(tmp_path):
    init = make_init_checkpoint(tmp_path / "init" / "model.ckpt")
    cmd = [sys.executable, str(THIS_FILE), "mirrored", str(tmp_path), init]
    _run_subprocesses([cmd], [dict(os.environ)])
    single = dict(np.load(tmp_path / "single.npz"))
    mirrored = dict(np.load(tmp_path / "mirrored.npz"))
    predictions = {k: mirrored.pop(k) for k in list(mirrored) if k.startswith("pred/")}
    assert_same_weights(mirrored, single)
    # The trained weights differ from the initial ones, and predictions come back in dataset order.
    assert not np.allclose(
        single["model/cls/logit/kernel"], checkpoint_tensors(init)["model/cls/logit/kernel"]
    )
    np.testing.assert_array_equal(predictions["pred/label_ids"], make_data()["label_ids"])


@pytest.mark.slow
def test_multi_worker_matches_one_device(tmp_path):
    init = make_init_checkpoint(tmp_path / "init" / "model.ckpt")
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    commands, envs = [], []
    for index in range(2):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}
        )
        commands.append([sys.executable, str(THIS_FILE), "worker", str(tmp_path), init, str(index)])
        envs.append(env)
    _run_subprocesses(commands, envs)

    strategy = training.get_strategy(flag_values())
    reference, _ = run_training(strategy, tmp_path / "single", init)
    expected = weights(reference)
    for index in range(2):
        assert_same_weights(dict(np.load(tmp_path / f"worker{index}.npz")), expected)
    # Only the chief writes checkpoints.
    saved = checkpoint_tensors(str(tmp_path / "multi" / "model.ckpt-6"))
    assert_same_weights({k: saved[k] for k in expected}, expected)


def _subprocess_main(argv):
    mode, out_dir, init = argv[1], pathlib.Path(argv[2]), argv[3]
    if mode == "mirrored":
        strategy = training.get_strategy(flag_values(num_core_per_host=2))
        assert isinstance(strategy, tf.distribute.MirroredStrategy)
        assert strategy.num_replicas_in_sync == 2
        problem, _ = run_training(strategy, out_dir / "mirrored", init)
        result = weights(problem)
        predictions = training.Predictor(strategy, problem.predict_fn)(problem.eval_dataset_fn)
        result.update({f"pred/{k}": v for k, v in predictions.items()})
        np.savez(out_dir / "mirrored.npz", **result)
        single, _ = run_training(
            tf.distribute.OneDeviceStrategy("/cpu:0"), out_dir / "single", init
        )
        np.savez(out_dir / "single.npz", **weights(single))
    elif mode == "worker":
        strategy = training.get_strategy(flag_values(num_hosts=2))
        assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        index = argv[4]
        problem, _ = run_training(strategy, out_dir / "multi", init)
        np.savez(out_dir / f"worker{index}.npz", **weights(problem))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    _subprocess_main(sys.argv)
