"""The benchmark runs end to end on tiny models, and the fast attention paths equal their plain formulas."""


import numpy as np
import pytest
import tensorflow as tf

import ops


# ------------------------------------------------------------------------ fast paths vs plain formulas
def _value_and_grad(fn, x, weight):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
        loss = tf.reduce_sum(y * weight)
    return y, tape.gradient(loss, x)


@pytest.mark.parametrize("q_len, q_pow, k_len, k_pow", [(8, 0, 8, 0), (5, 1, 9, 0), (3, 2, 3, 2)])
def test_rel_shift_value_and_gradient_equal_a_gather(q_len, q_pow, k_len, k_pow):
    positions, shift = ops.rel_shift_positions(q_len, q_pow, k_len, k_pow)
    n_rows = len(positions)
    x = tf.random.stateless_normal([2, 3, q_len, n_rows], seed=[1, 2])
    weight = tf.random.stateless_normal([2, 3, q_len, k_len], seed=[3, 4])
    # Row of query i for key j, from the docstring's formula, as an explicit gather.
    rows = shift * (q_len - np.arange(q_len))[:, None] + np.arange(k_len)[None, :]
    assert rows.max() < n_rows
    expected_y, expected_grad = _value_and_grad(
        lambda t: tf.stack([tf.gather(t[:, :, i], rows[i], axis=-1) for i in range(q_len)], axis=2),
        x,
        weight,
    )
    y, grad = _value_and_grad(lambda t: ops.rel_shift(t, k_len, shift), x, weight)
    np.testing.assert_allclose(y, expected_y, atol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-6)


def test_factorized_pos_score_equals_the_original_two_products():
    d_model, q_len, k_len = 8, 5, 7
    q_r = tf.random.stateless_normal([2, 3, q_len, d_model], seed=[5, 6])
    sin_q, cos_q = (tf.random.stateless_uniform([q_len, d_model // 2], seed=[7, i]) for i in (0, 1))
    sin_k, cos_k = (tf.random.stateless_uniform([k_len, d_model // 2], seed=[8, i]) for i in (0, 1))
    enc_q_1, enc_q_2 = tf.concat([sin_q, sin_q], -1), tf.concat([cos_q, cos_q], -1)
    enc_k_1, enc_k_2 = tf.concat([cos_k, sin_k], -1), tf.concat([-sin_k, cos_k], -1)
    weight = tf.random.stateless_normal([2, 3, q_len, k_len], seed=[9, 9])

    def original(q):
        return tf.einsum("bnid,jd->bnij", q * enc_q_1, enc_k_1) + tf.einsum(
            "bnid,jd->bnij", q * enc_q_2, enc_k_2
        )

    expected_y, expected_grad = _value_and_grad(original, q_r, weight)
    y, grad = _value_and_grad(
        lambda q: ops.factorized_pos_score(q, enc_q_1, enc_q_2, enc_k_1), q_r, weight
    )
    np.testing.assert_allclose(y, expected_y, atol=1e-5)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-5)
