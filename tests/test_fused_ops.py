"""The fused element-wise kernels (`ops.fused`): the same values and gradients as the plain ops, the dropout
rate they draw, and where XLA kernels may and may not appear."""

import numpy as np
import pytest
import tensorflow as tf

import modeling
import ops
import optimization
from model_test_utils import build, random_batch, tiny_config

TOLERANCE = {"float32": 1e-5, "bfloat16": 2e-2}


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
    kinds = ("bias_activation", "post_layer_norm", "dropout", "backward")
    compiled = {k for k in kinds if any(k in name for name in _xla_functions(graph))}
    assert compiled == (set(kinds) if fusion else set())
    # The embedding is gathered from the variable's value: a gather from the variable itself would
    # put it in copy-on-read mode, and the optimizer's read would copy the whole table.
    assert not any(op.type == "ResourceGather" for op in ops.graph_operations(graph))


def test_the_optimizer_update_is_one_xla_kernel_per_variable():
    var = tf.Variable(tf.ones([3, 2]), name="model/encoder/layer_0/ff/layer_1/kernel")
    optimizer = optimization.AdamWeightDecay(weight_decay_rate=0.1)
    optimizer.build([var])

    @tf.function(autograph=False)
    def update():
        optimizer.apply_gradients([(tf.fill([3, 2], 0.5), var)], 0.1, 0)

    graph = update.get_concrete_function().graph
    compiled = _xla_functions(graph)
    assert len(compiled) == 1 and "adam_update" in compiled[0]
    assert not any(op.type.startswith("ResourceApply") for op in ops.graph_operations(graph))
