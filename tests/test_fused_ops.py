"""The fused element-wise kernels (`ops.fused`): the same values and gradients as the plain ops, the dropout
rate they draw, and where XLA kernels may and may not appear."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import modeling
import ops
import optimization
from conftest import REPO_ROOT
from model_test_utils import build, random_batch, tiny_config

TOLERANCE = {"float32": 1e-5, "bfloat16": 2e-2, "float16": 3e-3}


def _values_and_gradients(fn, inputs, fusion):
    """fn(*inputs) and the gradients of a weighted sum of it with respect to the float inputs."""
    with ops.xla_fusion(fusion), ops.random_seed(tf.constant([3, 4])):
        with tf.GradientTape() as tape:
            floats = [x for x in inputs if x.dtype.is_floating]
            tape.watch(floats)
            y = fn(*inputs)
            weights = tf.cast(tf.range(tf.size(y)), tf.float32) % 7.0 - 3.0
            loss = tf.reduce_sum(tf.reshape(tf.cast(y, tf.float32), [-1]) * weights)
        return [y, *tape.gradient(loss, floats, unconnected_gradients="zero")]


def _random(shape, dtype, seed):
    return tf.cast(tf.random.stateless_normal(shape, [seed, 0]), dtype)


CASES = {
    "bias_gelu": lambda x, b, *_: ops.dense(x, tf.eye(16, dtype=x.dtype), b, "gelu"),
    "bias_tanh": lambda x, b, *_: ops.dense(x, tf.eye(16, dtype=x.dtype), b, "tanh"),
    "bias_relu": lambda x, b, *_: ops.dense(x, tf.eye(16, dtype=x.dtype), b, "relu"),
    "post_layer_norm": lambda x, b, r, g, beta: ops.post_layer_norm(r, x, b, g, beta, 0.0, True),
    "post_layer_norm_dropout": lambda x, b, r, g, beta: ops.post_layer_norm(
        r, x, b, g, beta, 0.25, True
    ),
    "dropout": lambda x, *_: ops.dropout(x, 0.3, True),
}


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_kernels_match_the_plain_ops(case, precision):
    """XLA kernels forward and backward (recomputing the chain) give the plain ops' values and gradients,
    with the same dropout masks."""
    dtype = ops.PRECISIONS[precision]
    inputs = [
        _random([2, 5, 16], dtype, 1),  # x
        _random([16], dtype, 2),  # bias
        _random([2, 5, 16], dtype, 3),  # residual
        1.0 + 0.1 * _random([16], tf.float32, 4),  # gamma
        _random([16], tf.float32, 5),  # beta
    ]
    plain = _values_and_gradients(CASES[case], inputs, fusion=False)
    fused = _values_and_gradients(CASES[case], inputs, fusion=True)
    assert fused[0].dtype == dtype and fused[0].shape == plain[0].shape
    for got, want in zip(fused, plain, strict=True):
        tol = TOLERANCE[precision] * max(
            1.0, float(tf.reduce_max(tf.abs(tf.cast(want, tf.float32))))
        )
        np.testing.assert_allclose(
            tf.cast(got, tf.float32).numpy(), tf.cast(want, tf.float32).numpy(), atol=tol
        )


def _assert_close(got, want, precision):
    want = tf.cast(want, tf.float32).numpy()
    tol = TOLERANCE[precision] * max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(tf.cast(got, tf.float32).numpy(), want, atol=tol)


def _attention_inputs(dtype, terms):
    """Scores [n_head 2, batch 3, q 8, k 8] of relative attention with `terms` among "position",
    "segment"; the second example's last three keys are padding."""
    shape = [2, 3, 8, 8]
    floats = [3.0 * _random(shape, dtype, 1)]
    if "position" in terms:
        floats.append(_random(shape, dtype, 2))
    if "segment" in terms:
        floats.append(_random(shape[:3] + [2], dtype, 3))
    seg_id = tf.constant([[2, 0, 0, 0, 1, 1, 1, 1], [2, 0, 0, 1, 1, 1, 1, 1], [2] + [0] * 7])
    seg_mat = tf.equal(seg_id[:, :, None], seg_id[:, None, :]) | tf.equal(seg_id, 2)[:, None, :]
    pos_mask = tf.pad(tf.ones([7, 7], tf.bool), [[1, 0], [1, 0]])
    pad_mask = tf.constant([[0.0] * 8, [0.0] * 5 + [1.0] * 3, [0.0] * 8])
    return floats, seg_mat, pos_mask, pad_mask


def _attention_probs(terms, seg_mat, pos_mask, pad_mask, rate, is_training):
    def probs(score, *floats):
        pos_score = floats[0] if "position" in terms else None
        seg = (floats[1], seg_mat) if "segment" in terms else None
        return ops.attention_probs(score, pos_score, seg, pos_mask, pad_mask, rate, is_training)

    return probs


def _reference_probs(terms, seg_mat, pos_mask, pad_mask):
    """The formula of the original (SPEC §3.7), in float32."""

    def probs(score, *floats):
        logits = tf.cast(score, tf.float32)
        if "position" in terms:
            extra = tf.cast(floats[0], tf.float32)
            if "segment" in terms:
                seg_score = tf.cast(floats[1], tf.float32)
                extra += tf.where(seg_mat[None], seg_score[..., 1:], seg_score[..., :1])
            logits += extra * tf.cast(pos_mask, tf.float32)
        return tf.nn.softmax(logits - ops.INF * pad_mask[None, :, None, :], axis=-1)

    return probs


TERMS = {"null": (), "position": ("position",), "position_segment": ("position", "segment")}


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("terms", sorted(TERMS))
@pytest.mark.parametrize("is_training", [True, False])
def test_attention_probabilities_and_their_gradients_follow_the_formula(
    precision, terms, is_training
):
    """Without dropout: the original's softmax over masked logits, values and gradients, fused (XLA
    kernels, bfloat16 logits where the softmax keeps float32 accuracy) and plain."""
    dtype = ops.PRECISIONS[precision]
    floats, *masks = _attention_inputs(dtype, TERMS[terms])
    want = _values_and_gradients(_reference_probs(TERMS[terms], *masks), floats, fusion=False)
    rate = 0.0 if is_training else 0.1  # inference leaves dropout out
    probs = _attention_probs(TERMS[terms], *masks, rate=rate, is_training=is_training)
    for fusion in (True, False):
        got = _values_and_gradients(probs, floats, fusion=fusion)
        assert got[0].dtype == dtype
        for g, w in zip(got, want, strict=True):
            _assert_close(g, w, precision)
    # Padded keys get no probability; every row sums to one.
    prob = tf.cast(got[0], tf.float32)
    assert float(tf.reduce_max(prob[:, 1, :, 5:])) == 0.0
    np.testing.assert_allclose(tf.reduce_sum(prob, -1), 1.0, atol=TOLERANCE[precision] * 2)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("bfloat16_softmax", [True, False])
def test_attention_dropout_fused_and_plain_draw_the_same_masks(
    precision, bfloat16_softmax, monkeypatch
):
    if bfloat16_softmax and not ops._bfloat16_softmax_is_accurate():
        pytest.skip("this TensorFlow's bfloat16 softmax sums in bfloat16; float32 logits run here")
    monkeypatch.setattr(ops, "_bfloat16_softmax_is_accurate", lambda: bfloat16_softmax)
    dtype = ops.PRECISIONS[precision]
    floats, *masks = _attention_inputs(dtype, TERMS["position_segment"])
    probs = _attention_probs(TERMS["position_segment"], *masks, rate=0.25, is_training=True)
    plain = _values_and_gradients(probs, floats, fusion=False)
    fused = _values_and_gradients(probs, floats, fusion=True)
    for got, want in zip(fused, plain, strict=True):
        _assert_close(got, want, precision)
    dropped = float(tf.reduce_mean(tf.cast(fused[0] == 0, tf.float32)))
    assert 0.2 < dropped < 0.5  # 25% dropped, beside the padded keys (one entry in eight)


def test_bfloat16_logits_only_where_the_softmax_normalises_in_float32():
    """float16 and an export (`xla_fusion(False)`) keep float32 logits; without oneDNN, TensorFlow's
    bfloat16 softmax (Eigen's) sums in bfloat16, so bfloat16 models keep float32 logits there too."""
    assert ops._logits_dtype(tf.float16) == ops._logits_dtype(tf.float32) == tf.float32
    with ops.xla_fusion(False):
        assert ops._logits_dtype(tf.bfloat16) == tf.float32
    program = (
        "import ops, tensorflow as tf; "
        "print(ops._bfloat16_softmax_is_accurate(), ops._logits_dtype(tf.bfloat16).name)"
    )
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0")
    run = subprocess.run(
        [sys.executable, "-c", program],
        cwd=REPO_ROOT / "tensorflow",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["False", "float32"]


def test_dropout_keeps_the_expected_fraction_and_the_expectation():
    x = tf.ones([1000, 1000])
    with ops.random_seed(tf.constant([1, 2])):
        y = ops.dropout(x, 0.1, True).numpy()
    kept = y != 0
    # 1e6 Bernoulli(0.9) draws: the standard deviation of the fraction is 3e-4.
    assert abs(kept.mean() - (1 - 6554 / 65536)) < 2e-3
    np.testing.assert_allclose(y[kept], 65536 / (65536 - 6554), rtol=1e-6)
    assert abs(y.mean() - 1.0) < 3e-3
    # Another seed, other masks; the same seed, the same masks.
    with ops.random_seed(tf.constant([1, 3])):
        other = ops.dropout(x, 0.1, True).numpy()
    with ops.random_seed(tf.constant([1, 2])):
        again = ops.dropout(x, 0.1, True).numpy()
    assert (other != y).any() and (again == y).all()
    assert ops.dropout(x, 0.1, False) is x


def test_dropout_of_an_odd_size_and_a_bad_rate():
    with ops.random_seed(tf.constant([1, 2])):
        y = ops.dropout(tf.ones([3, 5, 7]), 0.5, True)
    assert y.shape == [3, 5, 7] and 0 < int(tf.math.count_nonzero(y)) < 105
    with pytest.raises(ValueError, match=r"dropout rate must be in \[0, 1\)"):
        ops.dropout(tf.ones([4]), 1.0, True)


def test_dropout_and_the_sublayer_output_in_a_function_of_unknown_batch_size():
    # A notebook's tf.function with a None batch dimension, training with dropout.
    gamma, beta = tf.ones([8]), tf.zeros([8])

    @tf.function(input_signature=[tf.TensorSpec([None, 5, 8])])
    def train_forward(x):
        h = ops.dropout(x, 0.5, True)
        return h, ops.post_layer_norm(x, h, tf.zeros([8]), gamma, beta, 0.5, True)

    with ops.random_seed(tf.constant([1, 2])):
        h, y = train_forward(tf.ones([3, 5, 8]))
    assert h.shape == y.shape == [3, 5, 8]
    assert set(np.unique(h.numpy())) == {0.0, 2.0}
    np.testing.assert_allclose(tf.reduce_mean(y, -1), 0.0, atol=1e-5)


def test_a_fused_kernel_called_on_many_shapes_traces_each_once(caplog):
    # A model run eagerly (a notebook, the variables' first build) calls each fused chain on several
    # shapes: a single tf.function retraced for each logs TensorFlow's retracing warning.
    kernel, bias = tf.ones([4, 4]), tf.zeros([4])
    with caplog.at_level("WARNING", logger="tensorflow"):
        outputs = [ops.dense(tf.ones([n, 4]), kernel, bias, "gelu") for n in range(1, 9)]
    assert [y.shape[0] for y in outputs] == list(range(1, 9))
    np.testing.assert_allclose(
        outputs[-1].numpy(), ops.gelu(tf.fill([8, 4], 4.0)).numpy(), rtol=1e-6
    )
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]


def _xla_functions(graph):
    """Names of the functions that `graph` and its functions call and that XLA must compile."""
    names = []
    for op in ops.graph_operations(graph):
        if op.type in ("PartitionedCall", "StatefulPartitionedCall"):
            name = op.get_attr("f").name
            if graph._get_function(name).definition.attr["_XlaMustCompile"].b:
                names.append(name)
    return names


@pytest.mark.parametrize("fusion", [True, False])
def test_a_training_step_runs_its_element_wise_chains_as_xla_kernels_unless_switched_off(fusion):
    config = tiny_config(rel_attn_type="rel_shift")
    model = modeling.FunnelTFM(config)
    build(model)
    ids, seg, mask = random_batch(16, vocab_size=config.vocab_size)

    @tf.function(autograph=False)
    def step():
        with tf.GradientTape() as tape:
            output, _, _ = model.extract_hiddens(ids, True, seg, mask, precision="bfloat16")
            loss = tf.reduce_sum(tf.cast(output, tf.float32))
        return tape.gradient(loss, model.trainable_variables)

    with ops.xla_fusion(fusion):
        graph = step.get_concrete_function().graph
    kinds = (
        "bias_activation",
        "post_layer_norm",
        "dropout",
        "attention_logits",
        "dropped",
        "softmax_gradient",
        "backward",
    )
    compiled = {k for k in kinds if any(k in name for name in _xla_functions(graph))}
    assert compiled == (set(kinds) if fusion else set())
    # The attention logits are affine in the scores: their backward kernel gets the scores' shapes, not
    # the [n_head, batch, q_len, k_len] scores, which would otherwise stay in memory for the backward pass.
    linear_calls = [
        op
        for op in ops.graph_operations(graph)
        if op.type in ("PartitionedCall", "StatefulPartitionedCall")
        and "linear_backward" in op.get_attr("f").name
    ]
    assert len(linear_calls) == (3 if fusion else 0)  # one attention layer in each of three blocks
    for op in linear_calls:
        assert [x.dtype.is_floating for x in op.inputs] == [True] + [False] * (len(op.inputs) - 1)
    # The embedding is gathered from the variable's value: a gather from the variable itself would
    # put it in copy-on-read mode, and the optimizer's read would copy the whole table.
    assert not any(op.type == "ResourceGather" for op in ops.graph_operations(graph))


def test_the_optimizer_update_is_one_xla_kernel_per_variable_compiled_once_per_shape():
    shapes = [[3, 2], [4], [3, 2]]
    variables = [
        tf.Variable(tf.ones(shape), name=f"model/encoder/layer_{i}/ff/layer_1/kernel")
        for i, shape in enumerate(shapes)
    ]
    optimizer = optimization.AdamWeightDecay(weight_decay_rate=0.1)
    optimizer.build(variables)

    @tf.function(autograph=False)
    def update():
        optimizer.apply_gradients([(tf.fill(v.shape, 0.5), v) for v in variables], 0.1, 0)

    graph = update.get_concrete_function().graph
    compiled = _xla_functions(graph)
    assert len(compiled) == 3 and all("adam_update" in name for name in compiled)
    # The kernel takes the variables' handles: variables of one shape share one traced function, so XLA
    # compiles once per shape, not once per variable (~250 for a B4-4-4H768).
    assert compiled[0] == compiled[2] != compiled[1]
    assert not any(op.type.startswith("ResourceApply") for op in ops.graph_operations(graph))
