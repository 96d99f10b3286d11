"""`--recompute` (tf.recompute_grad per layer) keeps the gradients, and relative attention has no length
limit: a tiny model runs at T 2048, and what it computes for the real tokens does not depend on how much
padding follows them."""

import numpy as np
import pytest
import tensorflow as tf

import modeling
import ops
from model_test_utils import build, random_batch, tiny_config

SEQ_LEN = 16


def loss_and_gradients(model, ids, seg, mask, seed, decoder):
    """The loss and its gradients, traced once as the engine traces a step, dropout seeded by `seed`."""
    variables = sorted(model.trainable_variables, key=lambda v: v.name)

    @tf.function
    def step():
        with ops.random_seed(tf.constant(seed, tf.int64)), tf.GradientTape() as tape:
            output, _, _ = model.extract_hiddens(ids, True, seg, mask, use_decoder=decoder)
            weights = tf.random.stateless_normal(output.shape, seed=[7, 7])
            loss = tf.reduce_sum(output * weights)
        return loss, tape.gradient(loss, variables)

    return step()


@pytest.mark.parametrize("rel_attn_type", ["factorized", "rel_shift"])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("decoder", [False, True])
def test_recomputed_layers_give_the_same_gradients(rel_attn_type, dropout, decoder):
    config = tiny_config(rel_attn_type=rel_attn_type, dropout=dropout, dropatt=dropout)
    ids, seg, mask = random_batch(SEQ_LEN, vocab_size=config.vocab_size)
    results = []
    for recompute in (False, True):
        model = modeling.FunnelTFM(config, seed=3, recompute=recompute)
        build(model, SEQ_LEN)
        results.append(loss_and_gradients(model, ids, seg, mask, [5, 6], decoder))
    (loss, grads), (loss_recomputed, grads_recomputed) = results
    np.testing.assert_allclose(loss_recomputed.numpy(), loss.numpy(), rtol=1e-6)
    used = [(g, r) for g, r in zip(grads, grads_recomputed, strict=True) if g is not None]
    assert len(used) == sum(r is not None for r in grads_recomputed) > 0
    for grad, grad_recomputed in used:
        # The same dropout masks in the recomputation: equal up to float reassociation.
        grad = tf.convert_to_tensor(grad).numpy()
        np.testing.assert_allclose(
            tf.convert_to_tensor(grad_recomputed),
            grad,
            rtol=1e-4,
            atol=1e-6 * max(1.0, np.abs(grad).max()),
        )


def test_recomputation_reruns_the_layers_in_the_backward_pass():
    """The gradient graph calls the layers' forward kernels (here the fused bias + gelu) a second time."""
    config = tiny_config(dropout=0.0, dropatt=0.0)
    ids, seg, mask = random_batch(SEQ_LEN, vocab_size=config.vocab_size)
    counts = []
    for recompute in (False, True):
        model = modeling.FunnelTFM(config, recompute=recompute)
        build(model, SEQ_LEN)

        @tf.function
        def step(model=model):
            with tf.GradientTape() as tape:
                output, _, _ = model.extract_hiddens(ids, True, seg, mask, use_decoder=True)
                loss = tf.reduce_sum(output)
            return tape.gradient(loss, model.trainable_variables)

        graph = step.get_concrete_function().graph
        counts.append(
            sum(
                op.type in ("PartitionedCall", "StatefulPartitionedCall")
                and "bias_activation" in op.get_attr("f").name
                for op in ops.graph_operations(graph)
            )
        )
    n_layers = 4  # three encoder layers and one decoder layer, one gelu each
    assert counts == [n_layers, 2 * n_layers], counts


@pytest.mark.slow
def test_a_tiny_model_runs_at_2048_and_more_padding_does_not_change_the_real_tokens():
    """512 real tokens padded to 1024 and to 2048: the outputs on the real tokens are the same.

    Pooling windows end at the same tokens in both lengths (with separate_cls and truncate_seq, the
    last token is dropped before each pooling: here a padding token), and masked keys add nothing.
    """
    config = tiny_config(dropout=0.0, dropatt=0.0)
    model = modeling.FunnelTFM(config)
    real_len = 512
    rng = np.random.default_rng(0)
    real_ids = rng.integers(5, config.vocab_size, size=(1, real_len)).astype(np.int32)
    real_ids[0, 0] = 1

    def hiddens(total_len):
        ids = np.zeros((1, total_len), np.int32)
        ids[:, :real_len] = real_ids
        mask = np.ones((1, total_len), np.float32)
        mask[:, :real_len] = 0.0
        output, _, ret = model.extract_hiddens(
            tf.constant(ids),
            False,
            tf.zeros_like(ids),
            tf.constant(mask),
            use_decoder=True,
        )
        return output.numpy(), [block.numpy() for block in ret["block_outputs"]]

    short_output, short_blocks = hiddens(1024)
    long_output, long_blocks = hiddens(2048)
    assert long_output.shape == (1, 2048, config.d_model)
    assert [b.shape[1] for b in short_blocks] == [1024, 512, 256]
    assert [b.shape[1] for b in long_blocks] == [2048, 1024, 512]
    np.testing.assert_allclose(long_output[:, :real_len], short_output[:, :real_len], atol=2e-5)
    for block_idx, (long_block, short_block) in enumerate(
        zip(long_blocks, short_blocks, strict=True)
    ):
        covered = real_len // 2**block_idx  # pooled positions that see real tokens only
        np.testing.assert_allclose(long_block[:, :covered], short_block[:, :covered], atol=2e-5)


@pytest.mark.slow
def test_classifier_with_recompute_trains_as_without(tmp_path, shared_data):
    """--recompute reaches the model through the script, and a seeded run (dropout on) ends with the
    weights of the same run without it."""
    from test_classifier import glue_dir, write_vocab
    from test_reliability import GOLDEN, checkpoint_tensors, classifier_flags, run

    data_dir = glue_dir(tmp_path, shared_data, "mrpc")
    vocab = write_vocab(tmp_path / "vocab.txt", [data_dir])
    weights = []
    for recompute in (False, True):
        run_dir = tmp_path / f"recompute_{recompute}"
        flags = classifier_flags(
            run_dir, data_dir, vocab, train_steps=3, learning_rate=1e-2, recompute=recompute
        )
        proc = run("classifier.py", *flags)
        assert proc.returncode == 0, proc.stderr[-3000:]
        weights.append(checkpoint_tensors(run_dir / "exp" / "model.ckpt-3"))
    assert weights[0].keys() == weights[1].keys()
    for name, value in weights[0].items():
        np.testing.assert_allclose(weights[1][name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    # Both trained: the weights left the checkpoint they started from.
    start = checkpoint_tensors(GOLDEN / "model.ckpt")
    kernel = "model/encoder/layer_0/ff/layer_1/kernel"
    assert np.abs(weights[1][kernel] - start[kernel]).max() > 1e-3
