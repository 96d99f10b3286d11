"""Tests of optimization.py against a NumPy re-implementation of the formulas of SPEC §7.

Run as a script (`python tests/test_optimization.py --mirrored`), this file is also the subprocess of the
MirroredStrategy test: logical CPU devices must be configured before TensorFlow initializes its devices.
"""

import json
import math
import os
import pathlib
import re
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

import optimization

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------------------------
# NumPy reference (float64), written from SPEC §7 and the TF1 `polynomial_decay` / `cosine_decay` formulas.


def np_learning_rate(t, lr, train_steps, warmup_steps, decay_method, min_lr_ratio):
    if t < warmup_steps:
        p = t / warmup_steps
        return lr * (p + (1 - p) * min_lr_ratio)
    decay_steps = train_steps - warmup_steps
    s = min(t - warmup_steps, decay_steps)
    if decay_method == "poly":
        end = lr * min_lr_ratio
        return (lr - end) * (1 - s / decay_steps) ** 1 + end
    cosine = 0.5 * (1 + math.cos(math.pi * s / decay_steps))
    return lr * ((1 - min_lr_ratio) * cosine + min_lr_ratio)


def np_is_decayed(name, weight_decay, use_wd_exclusion):
    if not weight_decay:
        return False
    if any(re.search(p, name) for p in ["r_s_bias", "r_r_bias", "r_w_bias"]):
        return True
    exclude = ["LayerNorm", "layer_norm", "bias"] if use_wd_exclusion else []
    return not any(re.search(p, name) for p in exclude)


def np_adamw_step(params, slots, grads, lr, t, *, wd, b1, b2, eps, correction, use_wd_exclusion):
    """One AdamW update of the dicts `params` and `slots` (name -> (m, v)) in place."""
    for name, g in grads.items():
        m, v = slots[name]
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        u = m / (np.sqrt(v) + eps)
        if np_is_decayed(name, wd, use_wd_exclusion):
            u = u + wd * params[name]
        lr_t = lr * math.sqrt(1 - b2 ** (t + 1)) / (1 - b1 ** (t + 1)) if correction else lr
        params[name] = params[name] - lr_t * u
        slots[name] = (m, v)


# ----------------------------------------------------------------------------------------------------------
# Learning-rate schedule


@pytest.mark.parametrize(
    "warmup_steps,decay_method,min_lr_ratio",
    [(0, "poly", 0.0), (4, "poly", 0.0), (4, "poly", 0.1), (0, "cos", 0.0), (3, "cos", 0.2)],
)
def test_learning_rate_matches_reference(warmup_steps, decay_method, min_lr_ratio):
    lr, train_steps = 3e-4, 20
    for t in [0, 1, 2, 3, 4, 5, 9, 13, 19, 20, 25]:
        got = optimization.get_learning_rate(
            tf.constant(t, tf.int64),
            learning_rate=lr,
            train_steps=train_steps,
            warmup_steps=warmup_steps,
            decay_method=decay_method,
            min_lr_ratio=min_lr_ratio,
        )
        assert got.dtype == tf.float32
        want = np_learning_rate(t, lr, train_steps, warmup_steps, decay_method, min_lr_ratio)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-12, err_msg=f"t={t}")


def test_learning_rate_landmarks():
    kwargs = dict(learning_rate=1.0, train_steps=10, warmup_steps=2)
    # Step 0 of a warmup has LR 0 (min_lr_ratio 0); the peak at the end of warmup; halfway down after.
    assert optimization.get_learning_rate(0, **kwargs).numpy() == 0.0
    assert optimization.get_learning_rate(1, **kwargs).numpy() == pytest.approx(0.5)
    assert optimization.get_learning_rate(2, **kwargs).numpy() == pytest.approx(1.0)
    assert optimization.get_learning_rate(6, **kwargs).numpy() == pytest.approx(0.5)
    assert optimization.get_learning_rate(10, **kwargs).numpy() == pytest.approx(0.0)
    # The cosine is at its midpoint halfway through the decay: lr * (alpha + (1 - alpha) / 2).
    cos = optimization.get_learning_rate(6, decay_method="cos", min_lr_ratio=0.2, **kwargs)
    assert cos.numpy() == pytest.approx(0.6)
    # Warmup starts from lr * min_lr_ratio; the schedule ends there too.
    assert optimization.get_learning_rate(0, min_lr_ratio=0.2, **kwargs).numpy() == pytest.approx(
        0.2
    )
    assert optimization.get_learning_rate(50, min_lr_ratio=0.2, **kwargs).numpy() == pytest.approx(
        0.2
    )


def test_learning_rate_pure_warmup_stays_finite():
    got = optimization.get_learning_rate(5, learning_rate=1.0, train_steps=5, warmup_steps=5)
    assert np.isfinite(got.numpy())


def test_learning_rate_unknown_decay_method():
    with pytest.raises(ValueError, match="decay_method"):
        optimization.get_learning_rate(0, learning_rate=1.0, train_steps=10, decay_method="exp")


# ----------------------------------------------------------------------------------------------------------
# AdamWeightDecay

# Names chosen to exercise the include/exclude rules: r_w_bias contains "bias" but is always decayed.
ADAM_NAMES = [
    "model/encoder/layer_0/rel_attn/r_w_bias",
    "model/encoder/layer_0/rel_attn/r_s_bias",
    "model/encoder/layer_0/ff/layer_1/kernel",
    "model/encoder/layer_0/ff/layer_1/bias",
    "model/encoder/layer_0/ff/layer_norm/gamma",
    "model/cls/LayerNorm/beta",
]
ADAM_SHAPES = [[2, 3], [3], [3, 4], [4], [4], [2]]


def _make_problem(seed, n_steps):
    rng = np.random.default_rng(seed)
    params = {n: rng.normal(size=s) for n, s in zip(ADAM_NAMES, ADAM_SHAPES, strict=True)}
    grads = [
        {n: rng.normal(size=s) for n, s in zip(ADAM_NAMES, ADAM_SHAPES, strict=True)}
        for _ in range(n_steps)
    ]
    return params, grads


def _run_reference(params, grads, lrs, **hparams):
    params = dict(params)
    slots = {n: (np.zeros_like(p), np.zeros_like(p)) for n, p in params.items()}
    for t, (g, lr) in enumerate(zip(grads, lrs, strict=True)):
        np_adamw_step(params, slots, g, lr, t, **hparams)
    return params, slots


@pytest.mark.parametrize("correction", [True, False])
@pytest.mark.parametrize("use_wd_exclusion", [True, False])
def test_adamw_matches_reference_eager(correction, use_wd_exclusion, caplog):
    n_steps, wd, b1, b2, eps = 4, 0.05, 0.9, 0.99, 1e-6
    params, grads = _make_problem(0, n_steps)
    lrs = [np_learning_rate(t, 0.1, 10, 2, "poly", 0.0) for t in range(n_steps)]
    want, want_slots = _run_reference(
        params,
        grads,
        lrs,
        wd=wd,
        b1=b1,
        b2=b2,
        eps=eps,
        correction=correction,
        use_wd_exclusion=use_wd_exclusion,
    )

    variables = [tf.Variable(params[n], dtype=tf.float32, name=n) for n in ADAM_NAMES]
    opt = optimization.AdamWeightDecay(
        weight_decay_rate=wd,
        beta_1=b1,
        beta_2=b2,
        epsilon=eps,
        bias_correction=correction,
        use_wd_exclusion=use_wd_exclusion,
    )
    with caplog.at_level("WARNING", logger="tensorflow"):
        for t in range(n_steps):
            lr = optimization.get_learning_rate(
                t, learning_rate=0.1, train_steps=10, warmup_steps=2
            )
            opt.apply_gradients(
                [
                    (tf.constant(grads[t][n], tf.float32), v)
                    for n, v in zip(ADAM_NAMES, variables, strict=True)
                ],
                lr,
                t,
            )
    # The update kernel is traced once per shape by design: no retracing warning.
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
    slots = opt.named_variables()
    for name, var in zip(ADAM_NAMES, variables, strict=True):
        np.testing.assert_allclose(var.numpy(), want[name], rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(
            slots[f"{name}/adam_m"].numpy(), want_slots[name][0], rtol=1e-5, atol=1e-7
        )
        np.testing.assert_allclose(
            slots[f"{name}/adam_v"].numpy(), want_slots[name][1], rtol=1e-5, atol=1e-8
        )


def test_weight_decay_rules():
    opt = optimization.AdamWeightDecay(weight_decay_rate=0.01, use_wd_exclusion=True)
    plain = optimization.AdamWeightDecay(weight_decay_rate=0.01)
    off = optimization.AdamWeightDecay(weight_decay_rate=0.0)
    for name in ADAM_NAMES + ["model/encoder/layer_1/rel_attn/r_r_bias"]:
        assert opt.uses_weight_decay(name) == np_is_decayed(name, 0.01, True), name
        assert plain.uses_weight_decay(name), name
        assert not off.uses_weight_decay(name), name
    assert opt.uses_weight_decay("model/encoder/layer_0/rel_attn/r_r_bias")
    assert not opt.uses_weight_decay("model/encoder/layer_0/rel_attn/o/bias")


def test_adamw_in_tf_function_loop_with_default_strategy():
    """The engine's pattern: build eagerly, then several steps inside one tf.function."""
    n_steps = 3
    params, grads = _make_problem(1, n_steps)
    hparams = dict(wd=0.02, b1=0.8, b2=0.95, eps=1e-6, correction=True, use_wd_exclusion=True)
    lrs = [np_learning_rate(t, 0.05, 8, 0, "cos", 0.1) for t in range(n_steps)]
    want, _ = _run_reference(params, grads, lrs, **hparams)

    config = optimization.OptimizerConfig(
        learning_rate=0.05,
        decay_method="cos",
        min_lr_ratio=0.1,
        weight_decay=0.02,
        adam_beta1=0.8,
        adam_beta2=0.95,
        use_wd_exclusion=True,
    )
    variables = [tf.Variable(params[n], dtype=tf.float32, name=n) for n in ADAM_NAMES]
    opt = config.create_optimizer()
    opt.build(variables)
    step = tf.Variable(0, dtype=tf.int64, name="global_step")
    stacked = [tf.constant(np.stack([g[n] for g in grads]), tf.float32) for n in ADAM_NAMES]

    @tf.function
    def train():
        for i in tf.range(n_steps):
            lr = config.get_learning_rate(step, train_steps=8)
            opt.apply_gradients(
                [(g[i], v) for g, v in zip(stacked, variables, strict=True)], lr, step
            )
            step.assign_add(1)

    train()
    assert step.numpy() == n_steps
    for name, var in zip(ADAM_NAMES, variables, strict=True):
        np.testing.assert_allclose(var.numpy(), want[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_slot_names_and_build():
    variables = [
        tf.Variable(tf.ones(s), name=n) for n, s in zip(ADAM_NAMES, ADAM_SHAPES, strict=True)
    ]
    opt = optimization.AdamWeightDecay()
    with tf.name_scope("engine"):  # an enclosing scope must not change the checkpoint names
        opt.build(variables)
    opt.build(variables[:2])  # idempotent
    slots = opt.named_variables()
    assert sorted(slots) == sorted(f"{n}/{s}" for n in ADAM_NAMES for s in ("adam_m", "adam_v"))
    for key, slot in slots.items():
        assert slot.name == key + ":0"
        assert slot.dtype == tf.float32
        assert not slot.trainable
        assert not np.any(slot.numpy())
    shapes = dict(zip(ADAM_NAMES, ADAM_SHAPES, strict=True))
    assert slots[f"{ADAM_NAMES[2]}/adam_v"].shape == shapes[ADAM_NAMES[2]]
    assert len(opt.variables) == 2 * len(ADAM_NAMES)
    assert not opt.trainable_variables  # the model's variables are not tracked as the optimizer's

    impostor = tf.Variable(tf.ones([2, 3]), name=ADAM_NAMES[0])
    with pytest.raises(ValueError, match="two different variables"):
        opt.build([impostor])


def test_apply_without_build_inside_function_fails_clearly():
    var = tf.Variable(tf.ones([2]), name="model/encoder/layer_0/ff/layer_1/bias")
    opt = optimization.AdamWeightDecay()

    @tf.function
    def apply():
        opt.apply_gradients([(tf.ones([2]), var)], 0.1, 0)

    with pytest.raises(ValueError, match=r"build\(\) was not called for model/encoder/layer_0"):
        apply()


def test_none_gradient_leaves_variable_alone():
    a = tf.Variable([1.0, 2.0], name="model/a")
    b = tf.Variable([3.0], name="model/b")
    opt = optimization.AdamWeightDecay(weight_decay_rate=0.1)
    opt.apply_gradients([(None, a), (tf.constant([1.0]), b)], 0.1, 0)
    np.testing.assert_array_equal(a.numpy(), [1.0, 2.0])
    assert b.numpy()[0] != 3.0


# ----------------------------------------------------------------------------------------------------------
# Gradient processing


def test_layer_decay_scales_two_blocks_with_decoder():
    # block_size "1_1", decoder_size "1": encoder layers 0 and 1, decoder layer 2 (SPEC §3.9 naming).
    names = [
        "model/input/word_embedding/lookup_table",
        "model/input/layer_norm/gamma",
        "model/encoder/input_projection/kernel",
        "model/encoder/layer_0/rel_attn/q/kernel",
        "model/encoder/layer_1/ff/layer_2/bias",
        "model/decoder/layer_2/rel_attn/r_w_bias",
        "model/qa_start/kernel",
        "global_step",
    ]
    rate = 0.75
    # ids: input 0, layer_0 1, layer_1 2, decoder layer_2 3 -> n_layer 4, scale rate^(3 - id).
    want = [rate**3, rate**3, 1.0, rate**2, rate, 1.0, 1.0, 1.0]
    got = optimization.layer_decay_scales(names, rate)
    np.testing.assert_allclose(got, want)
    assert optimization.layer_decay_scales(names, 1.0) == [1.0] * len(names)


def test_layer_decay_scales_two_digit_layers():
    names = [f"model/encoder/layer_{i}/ff/layer_1/kernel" for i in range(12)]
    got = optimization.layer_decay_scales(names, 0.5)
    np.testing.assert_allclose(got, [0.5 ** (11 - i) for i in range(12)])


def _vars(shapes, names):
    return [tf.Variable(tf.zeros(s), name=n) for s, n in zip(shapes, names, strict=True)]


def test_process_gradients_clips_then_decays():
    names = [
        "model/input/word_embedding/lookup_table",
        "model/encoder/layer_0/ff/layer_1/kernel",
        "model/head/kernel",
    ]
    variables = _vars([[3], [2], [1]], names)
    grads = [tf.constant([3.0, 0.0, 4.0]), tf.constant([0.0, 12.0]), tf.constant([0.0])]
    norm = 13.0  # sqrt(9 + 16 + 144)

    out, gnorm = optimization.process_gradients(grads, variables, clip=1.0, lr_layer_decay_rate=0.5)
    assert gnorm.numpy() == pytest.approx(norm)
    # Clip to norm 1 first, then the input layer (id 0 of n_layer 2) gets 0.5, layer_0 and the head 1.
    np.testing.assert_allclose(out[0].numpy(), np.array([3.0, 0.0, 4.0]) / norm * 0.5, rtol=1e-6)
    np.testing.assert_allclose(out[1].numpy(), np.array([0.0, 12.0]) / norm, rtol=1e-6)
    np.testing.assert_allclose(out[2].numpy(), [0.0])

    out, gnorm = optimization.process_gradients(grads, variables, clip=100.0)
    assert gnorm.numpy() == pytest.approx(norm)
    for g, o in zip(grads, out, strict=True):
        np.testing.assert_array_equal(g.numpy(), o.numpy())

    out, gnorm = optimization.process_gradients(grads, variables, clip=0.0)
    assert gnorm.numpy() == pytest.approx(norm)
    np.testing.assert_array_equal(out[1].numpy(), [0.0, 12.0])


def test_scales_applied_in_the_update_equal_the_processed_gradients():
    """The engine's path (factors applied inside the update kernel) and process_gradients' (gradients
    multiplied first) give the same weights and slots, with clipping and layer decay active, a sparse
    gradient and a variable without gradient."""
    names = [
        "model/input/word_embedding/lookup_table",
        "model/encoder/layer_0/ff/layer_1/kernel",
        "model/encoder/layer_1/ff/layer_1/bias",
        "model/head/kernel",
    ]
    shapes = [[4, 2], [2, 3], [3], [2]]
    rng = np.random.default_rng(3)
    initial = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
    grads = [
        tf.IndexedSlices(tf.constant([[3.0, -4.0]]), tf.constant([1]), tf.constant([4, 2])),
        tf.constant(rng.normal(size=[2, 3]).astype(np.float32)),
        tf.constant(rng.normal(size=[3]).astype(np.float32)),
        None,
    ]
    results = []
    for fused in (False, True):
        variables = [tf.Variable(x, name=n) for x, n in zip(initial, names, strict=True)]
        optimizer = optimization.AdamWeightDecay(weight_decay_rate=0.01)
        settings = dict(clip=0.5, lr_layer_decay_rate=0.8)
        for step in range(2):
            if fused:
                processed, _, scales = optimization.gradient_scales(grads, variables, **settings)
            else:
                processed, _ = optimization.process_gradients(grads, variables, **settings)
                scales = None
            optimizer.apply_gradients(zip(processed, variables, strict=True), 0.1, step, scales)
        results.append(
            [v.numpy() for v in variables]
            + [v.numpy() for v in optimizer.named_variables().values()]
        )
    assert len(results[1]) == len(shapes) + 2 * 3  # no slots for the variable without gradient
    for got, want in zip(*results[::-1], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(results[1][3], initial[3])


def test_process_gradients_skip_nan_and_sparse():
    names = [
        "model/input/word_embedding/lookup_table",
        "model/encoder/layer_0/a",
        "model/encoder/layer_0/b",
        "model/c",
    ]
    variables = _vars([[4, 2], [2], [2], [1]], names)
    sparse = tf.IndexedSlices(tf.constant([[3.0, 4.0]]), tf.constant([2]), tf.constant([4, 2]))
    grads = [sparse, tf.constant([np.nan, 1.0]), tf.constant([np.inf, 1.0]), None]

    out, gnorm = optimization.process_gradients(grads, variables, clip=1.0, skip_nan_grad=True)
    assert gnorm.numpy() == pytest.approx(5.0)  # only the finite tensor counts
    np.testing.assert_array_equal(out[1].numpy(), [0.0, 0.0])
    np.testing.assert_array_equal(out[2].numpy(), [0.0, 0.0])
    assert out[3] is None
    assert isinstance(out[0], tf.IndexedSlices)
    np.testing.assert_allclose(tf.convert_to_tensor(out[0]).numpy()[2], [0.6, 0.8], rtol=1e-6)

    out, gnorm = optimization.process_gradients(grads, variables, clip=1.0)
    assert not np.isfinite(gnorm.numpy())

    with pytest.raises(ValueError, match="3 gradients for 4 variables"):
        optimization.process_gradients(grads[:3], variables)


def test_sparse_gradient_update_matches_dense():
    rows = tf.IndexedSlices(tf.constant([[1.0, -2.0]]), tf.constant([1]), tf.constant([3, 2]))
    dense = tf.convert_to_tensor(rows)
    results = []
    for grad in (rows, dense):
        var = tf.Variable(tf.ones([3, 2]), name="model/input/word_embedding/lookup_table")
        optimization.AdamWeightDecay(weight_decay_rate=0.1).apply_gradients([(grad, var)], 0.1, 0)
        results.append(var.numpy())
    np.testing.assert_array_equal(results[0], results[1])


# ----------------------------------------------------------------------------------------------------------
# OptimizerConfig


def test_config_from_flags_and_validation():
    defaults = optimization.OptimizerConfig()
    assert (defaults.adam_beta2, defaults.adam_epsilon, defaults.clip, defaults.learning_rate) == (
        0.99,
        1e-6,
        1.0,
        1e-5,
    )
    assert defaults.adam_correction and defaults.per_core_clip and not defaults.use_wd_exclusion

    values = {f: getattr(defaults, f) for f in optimization.OptimizerConfig.__dataclass_fields__}
    values.update(learning_rate=3e-5, lr_layer_decay_rate=0.75, unrelated_flag="x")
    config = optimization.OptimizerConfig.from_flags(types.SimpleNamespace(**values))
    assert config.learning_rate == 3e-5 and config.lr_layer_decay_rate == 0.75

    with pytest.raises(ValueError, match="--decay_method must be one of"):
        optimization.OptimizerConfig(decay_method="linear")
    with pytest.raises(ValueError, match="--adam_beta2 must be in"):
        optimization.OptimizerConfig(adam_beta2=1.0)

    opt = config.create_optimizer()
    assert (opt.beta_1, opt.beta_2, opt.epsilon, opt.bias_correction) == (0.9, 0.99, 1e-6, True)


# ----------------------------------------------------------------------------------------------------------
# MirroredStrategy on two logical CPUs (subprocess)


@pytest.mark.slow
def test_mirrored_update_equals_single_device():
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO_ROOT / "tensorflow"),
        TF_CPP_MIN_LOG_LEVEL="2",
        CUDA_VISIBLE_DEVICES="",
    )
    proc = subprocess.run(
        [sys.executable, __file__, "--mirrored"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["num_replicas"] == 2
    for name, single in result["single"].items():
        replicas = result["mirrored"][name]
        np.testing.assert_array_equal(replicas[0], replicas[1], err_msg=name)
        np.testing.assert_allclose(replicas[0], single, rtol=1e-5, atol=1e-6, err_msg=name)
        if not name.endswith(("adam_m", "adam_v")):
            assert not np.allclose(single, result["initial"][name]), f"{name} was not updated"
    assert sorted(result["slot_names"]) == sorted(
        f"{name}:0" for name in result["single"] if name.endswith(("adam_m", "adam_v"))
    )
    for name, replicas in result["cross_replica"].items():
        np.testing.assert_array_equal(replicas[0], replicas[1], err_msg=name)


def _mirrored_main():
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    rng = np.random.default_rng(0)
    shapes = {
        "model/input/word_embedding/lookup_table": [10, 4],
        "model/encoder/layer_0/ff/layer_1/kernel": [4, 4],
        "model/encoder/layer_0/ff/layer_1/bias": [4],
        "model/encoder/layer_0/rel_attn/r_w_bias": [4],
        "model/encoder/layer_1/ff/layer_norm/gamma": [4],
        "model/classifier/kernel": [4, 1],
    }
    initial = {n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}
    ids = rng.integers(0, 10, size=(8, 5)).astype(np.int32)
    targets = rng.normal(size=(8, 1)).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((ids, targets)).repeat().batch(4)
    config = optimization.OptimizerConfig(
        learning_rate=0.05,
        warmup_steps=2,
        weight_decay=0.01,
        clip=0.05,
        skip_nan_grad=True,
        lr_layer_decay_rate=0.8,
        use_wd_exclusion=True,
    )
    n_steps, train_steps = 4, 6

    def train(strategy):
        with strategy.scope():
            variables = [tf.Variable(initial[n], name=n) for n in shapes]
            step = tf.Variable(
                0, dtype=tf.int64, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA
            )
            opt = config.create_optimizer()
            opt.build(variables)
        iterator = iter(strategy.experimental_distribute_dataset(dataset))

        def step_fn(batch):
            batch_ids, batch_targets = batch
            with tf.GradientTape() as tape:
                emb, kernel, bias, r_w_bias, gamma, head = variables
                hidden = tf.reduce_mean(tf.gather(emb, batch_ids), axis=1)
                hidden = tf.tanh(hidden @ kernel + bias + r_w_bias) * gamma
                loss = tf.reduce_mean(tf.square(hidden @ head - batch_targets))
            grads = tape.gradient(loss, variables)
            grads = tf.distribute.get_replica_context().all_reduce("mean", grads)
            grads, _, scales = config.gradient_scales(grads, variables)
            opt.apply_gradients(
                zip(grads, variables, strict=True),
                config.get_learning_rate(step, train_steps),
                step,
                scales,
            )
            step.assign_add(1)

        @tf.function
        def loop():
            for _ in tf.range(n_steps):
                strategy.run(step_fn, args=(next(iterator),))

        loop()
        return strategy, variables, opt

    def replica_values(var):
        return [v.numpy().tolist() for v in getattr(var, "values", [var])]

    _, single_vars, single_opt = train(tf.distribute.OneDeviceStrategy("/cpu:0"))
    strategy, mirrored_vars, mirrored_opt = train(
        tf.distribute.MirroredStrategy(
            ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    )
    single = {v.name[:-2]: v.numpy().tolist() for v in single_vars}
    single.update({k: v.numpy().tolist() for k, v in single_opt.named_variables().items()})
    mirrored = {v.name[:-2]: replica_values(v) for v in mirrored_vars}
    mirrored.update({k: replica_values(v) for k, v in mirrored_opt.named_variables().items()})

    # The cross-replica path: the engine calling apply_gradients outside strategy.run.
    with strategy.scope():
        mirrored_opt.apply_gradients([(tf.ones_like(v), v) for v in mirrored_vars], 0.1, 7)
    cross_replica = {v.name[:-2]: replica_values(v) for v in mirrored_vars}

    print(
        json.dumps(
            {
                "num_replicas": strategy.num_replicas_in_sync,
                "initial": {n: x.tolist() for n, x in initial.items()},
                "single": single,
                "mirrored": mirrored,
                "cross_replica": cross_replica,
                "slot_names": [v.name for v in mirrored_opt.named_variables().values()],
            }
        )
    )


if __name__ == "__main__" and sys.argv[1:] == ["--mirrored"]:
    _mirrored_main()
