"""No broadcast batched matmul anywhere: the guard against tensorflow#117700 that holds on every CPU.

TensorFlow 2.21's oneDNN batched matmul miscomputes a product whose operands have different batch shapes on
AVX-512 CPUs, then corrupts the heap. The crash shows only on such a CPU; these tests inspect the traced
forward and backward graphs instead, so they fail on any machine when a broadcast matmul comes back.
"""

import numpy as np
import pytest
import tensorflow as tf

import modeling
import ops
import pretrain
from model_test_utils import random_batch, tiny_config

SEQ_LEN = 16
BATCH_SIZES = (1, 2)
PRECISIONS = ("float32", "bfloat16")


def traced_graph(loss_fn, *args):
    """The graph of `loss_fn(*args)` and the gradient of its loss with respect to every variable it reads.

    `loss_fn` returns (loss, outputs); without variables read (none), only the forward pass is traced.
    """

    # No autograph: the model is plain Python control flow, and converting it triples the tracing time.
    @tf.function(autograph=False)
    def step(*args):
        with tf.GradientTape() as tape:
            loss, outputs = loss_fn(*args)
        return tape.gradient(loss, tape.watched_variables()), outputs

    return step.get_concrete_function(*args).graph


def assert_no_broadcast_matmul_in_every_case(make_loss_fn):
    """Traces `make_loss_fn(batch_size, precision)()` for every batch size and precision.

    One set of networks serves all cases, so only the first trace creates variables (and traces twice).
    """
    for batch_size in BATCH_SIZES:
        for precision in PRECISIONS:
            graph = traced_graph(make_loss_fn(batch_size, precision))
            products = [op for op in graph.get_operations() if "MatMul" in op.type]
            assert products, "the traced graph must contain the model's products"
            found = ops.broadcast_matmuls(graph)
            assert not found, f"batch {batch_size}, {precision}: broadcast batched matmuls:\n" + (
                "\n".join(found)
            )


def _inputs(batch_size):
    return random_batch(SEQ_LEN, batch_size=batch_size, pad_last=3)


# ------------------------------------------------------------------------------------------- the checker
def test_checker_finds_broadcast_products_in_nested_functions_loops_and_einsums():
    @tf.function
    def inner(a, b):
        return tf.matmul(a, b)

    @tf.function
    def outer(a, b):
        x = inner(a, b)
        x = tf.while_loop(lambda i, v: i < 2, lambda i, v: (i + 1, tf.matmul(v, b[0])), [0, x])[1]
        x = tf.einsum("...e,ve->...v", x, b[0])
        same = tf.matmul(x, tf.transpose(x, [0, 1, 3, 2]))
        return tf.cond(tf.reduce_sum(same) > 0, lambda: tf.matmul(x, b), lambda: x)

    graph = outer.get_concrete_function(tf.TensorSpec([4, 1, 8, 8]), tf.TensorSpec([1, 8, 8])).graph
    found = ops.broadcast_matmuls(graph)
    assert len(found) == 4, found
    assert sum("(Einsum)" in line for line in found) == 1


def test_checker_catches_the_broadcast_position_score_when_it_is_put_back(monkeypatch):
    def broadcast_pos_score(q_r, enc_q_1, enc_q_2, enc_k_1):
        x, y = q_r * enc_q_1, q_r * enc_q_2
        x_1, x_2 = tf.split(x, 2, axis=-1)
        y_1, y_2 = tf.split(y, 2, axis=-1)
        return tf.matmul(tf.concat([x_1 + y_2, x_2 - y_1], -1), enc_k_1, transpose_b=True)

    monkeypatch.setattr(ops, "factorized_pos_score", broadcast_pos_score)
    model = modeling.FunnelTFM(tiny_config(), rel_attn_impl="factorized")
    ids, seg, mask = _inputs(1)
    graph = traced_graph(
        lambda: (tf.reduce_sum(model.extract_hiddens(ids, True, seg, mask)[0]), ()),
    )
    # Forward and gradient, in every layer.
    assert len(ops.broadcast_matmuls(graph)) >= 2 * 3


def test_rank_two_position_score_equals_the_batched_product():
    rng = np.random.default_rng(0)
    q_r = tf.constant(rng.normal(size=(2, 3, 5, 8)), tf.float32)
    enc = [tf.constant(rng.normal(size=(n, 8)), tf.float32) for n in (5, 5, 7)]
    x, y = (q_r * enc[0]).numpy(), (q_r * enc[1]).numpy()
    folded = np.concatenate([x[..., :4] + y[..., 4:], x[..., 4:] - y[..., :4]], -1)
    np.testing.assert_allclose(
        ops.factorized_pos_score(q_r, *enc), folded @ enc[2].numpy().T, rtol=1e-5, atol=1e-5
    )


# ------------------------------------------------------------------------------------------ model paths
MODEL_PATHS = {
    "rel_shift": ({}, "rel_shift"),
    "factorized": ({}, "factorized"),
    "null": ({"rel_attn_type": "null"}, None),
    "factorized-pool_kv-no_separate_cls": (
        {"pool_q_only": False, "separate_cls": False, "pooling_type": "max"},
        "factorized",
    ),
    "rel_shift-pool_kv-repeats-projection": (
        {"pool_q_only": False, "block_size": "1_1x2_1", "d_embed": 24},
        "rel_shift",
    ),
    "factorized-repeats-decoder_repeat": (
        {"block_size": "2_1x2", "decoder_size": "1x2"},
        "factorized",
    ),
}


@pytest.mark.parametrize("path", sorted(MODEL_PATHS))
def test_model_paths_build_no_broadcast_matmul(path):
    overrides, impl = MODEL_PATHS[path]
    model = modeling.FunnelTFM(tiny_config(**overrides), rel_attn_impl=impl)

    def make_loss_fn(batch_size, precision):
        ids, seg, mask = _inputs(batch_size)

        def loss_fn():
            output, _, _ = model.extract_hiddens(
                ids, True, seg, mask, use_decoder=True, precision=precision
            )
            return tf.reduce_sum(tf.cast(output, tf.float32)), output

        return loss_fn

    # The decoder graph holds the encoder-only one; the heads below cover use_decoder=False.
    assert_no_broadcast_matmul_in_every_case(make_loss_fn)


# ------------------------------------------------------------------------------------------ heads
def _squad_features(batch_size):
    ids, seg, mask = _inputs(batch_size)
    p_mask = np.zeros((batch_size, SEQ_LEN), np.float32)
    p_mask[:, 1:5] = 1.0
    return {
        "input_ids": ids,
        "segment_ids": seg,
        "input_mask": mask,
        "p_mask": tf.constant(p_mask),
        "cls_index": tf.zeros([batch_size], tf.int32),
        "start_positions": tf.fill([batch_size], 6),
        "end_positions": tf.fill([batch_size], 8),
        "is_impossible": tf.zeros([batch_size]),
    }


def _pretrain_features(batch_size, num_predict=3):
    ids, seg, mask = _inputs(batch_size)
    positions = np.tile([[2, 5, 9]], [batch_size, 1])
    mapping = tf.one_hot(positions, SEQ_LEN)
    is_target = tf.reduce_sum(mapping, axis=1) > 0
    return {
        "masked_input": tf.where(is_target, 4, ids),
        "origin_input": ids,
        "seg_id": seg,
        "is_target": is_target,
        "input_mask": tf.maximum(mask, tf.cast(is_target, tf.float32)),
        "pad_mask": mask,
        "target_mapping": mapping,
        "target": tf.gather(ids, positions, batch_dims=1),
        "target_mask": tf.ones([batch_size, num_predict]),
    }


def _head_loss_fn(head):
    """Builds the networks of one head; returns make_loss_fn(batch_size, precision) -> loss_fn.

    loss_fn() -> (float32 scalar loss, outputs).
    """
    config = tiny_config(n_head=4)
    if head in ("mlm", "electra"):
        nets = pretrain.Pretrainer(config, head, width_shrink=0.5)

        def make_pretrain_loss_fn(batch_size, precision):
            features = _pretrain_features(batch_size)

            def loss_fn():
                if head == "mlm":
                    outputs = pretrain.mlm_forward(nets.model, features, True, precision)
                else:
                    outputs = pretrain.electra_forward(
                        nets.model, nets.generator, features, True, 50.0, precision
                    )
                return outputs["loss"], ()

            return loss_fn

        return make_pretrain_loss_fn

    model = modeling.FunnelTFM(config, rel_attn_impl="factorized")

    def make_loss_fn(batch_size, precision):
        ids, seg, mask = _inputs(batch_size)
        labels = tf.zeros([batch_size], tf.int32)
        squad = _squad_features(batch_size)
        choices = [tf.tile(x, [1, 4]) for x in (ids, seg, mask)]
        kwargs = {"precision": precision}
        heads = {
            "classification": lambda: model.get_classification_loss(
                labels, ids, 3, True, "cls", seg, mask, **kwargs
            ),
            "classification-tpu_embedding": lambda: model.get_classification_loss(
                labels, ids, 2, True, "cls", seg, mask, use_tpu=True, **kwargs
            ),
            "regression": lambda: model.get_regression_loss(
                tf.ones([batch_size]), ids, True, "sts", seg, mask, **kwargs
            ),
            "race": lambda: model.get_race_loss(labels, choices[0], True, *choices[1:], **kwargs),
            "squad_loss": lambda: model.get_squad_loss(squad, True, **kwargs),
            "squad_loss-unconditional_end": lambda: model.get_squad_loss(
                squad, True, conditional_end=False, **kwargs
            ),
            # No gradient: a zero loss traces the forward pass only.
            "squad_predictions": lambda: (
                tf.zeros([batch_size]),
                model.get_squad_predictions(squad, 3, 2, **kwargs),
            ),
        }
        per_example = heads[head]
        return lambda: (tf.reduce_mean(per_example()[0]), ())

    return make_loss_fn


HEADS = (
    "classification",
    "classification-tpu_embedding",
    "regression",
    "race",
    "squad_loss",
    "squad_loss-unconditional_end",
    "squad_predictions",
    "mlm",
    "electra",
)


@pytest.mark.parametrize("head", HEADS)
def test_heads_and_losses_build_no_broadcast_matmul(head):
    assert_no_broadcast_matmul_in_every_case(_head_loss_fn(head))
