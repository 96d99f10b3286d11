"""Analytic FLOP count of the Funnel-Transformer, for the benchmark's achieved FLOP/s.

Only contractions are counted: a matmul [m, k] x [k, n] is 2mkn FLOPs; element-wise work (layer norm,
softmax, gelu, dropout, pooling, the rel_shift copies) is not. The backward pass is counted as twice the
forward pass, so a training step is 3 x forward (the optimizer update is element-wise and not counted).

The count follows what `modeling.FunnelTFM` computes: per-block lengths after pooling (the first layer of a
pooled block has pooled queries and, with pool_q_only, full-length keys), the decoder at full length, and the
relative-attention terms of the algorithm that runs (`modeling.rel_attn_algorithm`: off TPU a "factorized"
config runs rel_shift unless `rel_attn_impl` forces the factorized algorithm):
  rel_shift:  the projection of the R relative-distance encodings, R x d_model x (n_head d_head), shared by
              the whole batch (so divided by the batch size here), and the query-distance score, q_len x R per
              head, of which the rel_shift trick keeps q_len x k_len;
  factorized: the projection of the queries back to d_model per head, q_len x (n_head d_head) x d_model,
              and the position score, a contraction over d_model per head and (query, key) pair;
  null:       none (absolute position embeddings are added, not multiplied).
"""

import modeling
import ops

HEADS = ("none", "classification", "mlm", "squad")


def _matmul(m, k, n):
    return 2 * m * k * n


def layer_flops(
    net_config, q_len, k_len, q_pow=0, k_pow=0, batch_size=1, with_seg=True, rel_attn_impl=None
):
    """Forward FLOPs per example of one attention + feed-forward layer.

    Args:
      net_config: `modeling.ModelConfig`.
      rel_attn_impl: as `modeling.FunnelTFM`'s.
      q_len, k_len: query and key/value lengths.
      q_pow, k_pow: log2 of the query and key strides (they set the rel_shift distance rows).
      batch_size: examples sharing the batch-independent rel_shift projection.
      with_seg: count the segment term (present when segment ids are given).
    Returns:
      dict: "projection" (q, k, v, o), "attention" (content score and probabilities x values), "relative"
      (position and segment terms), "ffn", and "total"; ints or floats (the rel_shift share of the batch).
    """
    d_model, d_inner = net_config.d_model, net_config.d_inner
    n_head, d_head = net_config.n_head, net_config.d_head
    nh = n_head * d_head
    counts = {
        "projection": _matmul(q_len, d_model, nh)
        + 2 * _matmul(k_len, d_model, nh)
        + _matmul(q_len, nh, d_model),
        "attention": 2 * _matmul(q_len, nh, k_len),
        "ffn": _matmul(q_len, d_model, d_inner) + _matmul(q_len, d_inner, d_model),
        "relative": 0,
    }
    algorithm = modeling.rel_attn_algorithm(net_config, rel_attn_impl)
    if algorithm == "rel_shift":
        n_rows = len(ops.rel_shift_positions(q_len, q_pow, k_len, k_pow)[0])
        counts["relative"] = _matmul(n_rows, d_model, nh) / batch_size + _matmul(q_len, nh, n_rows)
    elif algorithm == "factorized":
        counts["relative"] = _matmul(q_len, nh, d_model) + n_head * _matmul(q_len, d_model, k_len)
    if with_seg and algorithm != "null":
        counts["relative"] += _matmul(q_len, nh, 2)
    counts["total"] = sum(counts.values())
    return counts


def layer_shapes(net_config, seq_len, use_decoder=False, truncate_seq=True):
    """The (q_len, k_len, q_pow, k_pow) of every layer application, encoder first, as `encode` runs them."""
    modeling.check_seq_len(net_config, seq_len, truncate_seq, use_decoder)
    lengths = modeling.pooled_lengths(net_config, seq_len, truncate_seq)
    shapes = []
    for block_idx, length in enumerate(lengths):
        for depth_idx in range(net_config.block_depth[block_idx]):
            first_pooled = block_idx > 0 and depth_idx == 0
            if first_pooled and net_config.pool_q_only:
                shapes.append((length, lengths[block_idx - 1], block_idx, block_idx - 1))
            else:
                shapes.append((length, length, block_idx, block_idx))
    if use_decoder:
        shapes += [(seq_len, seq_len, 0, 0)] * net_config.decoder_depth
    return shapes


def head_flops(net_config, seq_len, head, n_class=2, num_predict=None):
    """Forward FLOPs per example of a task head on top of the encoder (or decoder) output.

    Args:
      head: "none", "classification" (sequence summary + logits), "mlm" (target gather, lm_proj and the tied
        softmax over the vocabulary at `num_predict` positions) or "squad" (start logits, answer class, and
        the end logits conditioned on the gold start).
    """
    d_model, d_embed = net_config.d_model, net_config.d_embed
    if head == "none":
        return 0
    if head == "classification":
        return _matmul(1, d_model, d_model) + _matmul(1, d_model, n_class)
    if head == "mlm":
        if not num_predict:
            raise ValueError("head 'mlm' needs num_predict > 0")
        return (
            _matmul(num_predict, seq_len, d_model)
            + _matmul(num_predict, d_model, d_embed)
            + _matmul(num_predict, d_embed, net_config.vocab_size)
        )
    if head == "squad":
        start = _matmul(seq_len, d_model, 1)
        answer_class = (
            _matmul(1, seq_len, d_model) + _matmul(1, 2 * d_model, d_model) + _matmul(1, d_model, 1)
        )
        end = _matmul(seq_len, 2 * d_model, d_model) + _matmul(seq_len, d_model, 1)
        return start + answer_class + end
    raise ValueError(f"head must be one of {HEADS}, got {head!r}")


def forward_flops(
    net_config,
    seq_len,
    use_decoder=False,
    head="none",
    batch_size=1,
    with_seg=True,
    truncate_seq=True,
    n_class=2,
    num_predict=None,
    rel_attn_impl=None,
):
    """Forward FLOPs per example of the whole model (`rel_attn_impl` as `modeling.FunnelTFM`'s).

    Returns:
      dict: "input_projection", "encoder", "decoder", "head" and "total".
    """
    shapes = layer_shapes(net_config, seq_len, use_decoder, truncate_seq)
    n_enc = sum(net_config.block_depth)
    per_layer = [
        layer_flops(
            net_config,
            *shape,
            batch_size=batch_size,
            with_seg=with_seg,
            rel_attn_impl=rel_attn_impl,
        )["total"]
        for shape in shapes
    ]
    counts = {
        "input_projection": 0
        if net_config.d_embed == net_config.d_model
        else _matmul(seq_len, net_config.d_embed, net_config.d_model),
        "encoder": sum(per_layer[:n_enc]),
        "decoder": sum(per_layer[n_enc:]),
        "head": head_flops(net_config, seq_len, head, n_class, num_predict),
    }
    counts["total"] = sum(counts.values())
    return counts


def train_flops(net_config, seq_len, **kwargs):
    """FLOPs per example of forward + backward (3 x forward); kwargs as `forward_flops`."""
    return 3 * forward_flops(net_config, seq_len, **kwargs)["total"]
