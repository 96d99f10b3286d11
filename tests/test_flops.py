"""The analytic FLOP count against a count written out by hand, and against the lengths the model runs."""

import pytest

import flops
import modeling
from model_test_utils import build, tiny_config

# A 2-block model with a 1-layer decoder: d_model 8, 2 heads of 4, d_inner 12, seq_len 8, batch 2.
D, N, H, F, T, B = 8, 2, 4, 12, 8, 2


def _config(rel_attn_type):
    return tiny_config(
        block_size="1_1",
        vocab_size=20,
        d_embed=D,
        d_model=D,
        n_head=N,
        d_head=H,
        d_inner=F,
        rel_attn_type=rel_attn_type,
        decoder_size="1",
    )


def mm(m, k, n):
    return 2 * m * k * n


def hand_layer(q_len, k_len, rel_attn_type, n_rows=None):
    """One layer, matmul by matmul, as SPEC §3.5 describes it."""
    count = (
        mm(q_len, D, N * H)  # q = x W_q
        + mm(k_len, D, N * H)  # k
        + mm(k_len, D, N * H)  # v
        + N * mm(q_len, H, k_len)  # content score, per head
        + N * mm(q_len, k_len, H)  # probabilities x values, per head
        + mm(q_len, N * H, D)  # output projection
        + mm(q_len, D, F)  # ff/layer_1
        + mm(q_len, F, D)  # ff/layer_2
    )
    if rel_attn_type == "rel_shift":
        count += mm(n_rows, D, N * H) / B  # encodings x W_r, once per batch
        count += N * mm(q_len, H, n_rows)  # query x every distance row
    if rel_attn_type == "factorized":
        count += N * mm(q_len, H, D)  # queries back to d_model per head
        count += N * mm(q_len, D, k_len)  # (q_r * enc_q) enc_k^T
    if rel_attn_type != "null":
        count += N * mm(q_len, H, 2)  # segment score against the two segment embeddings
    return count


# Lengths: block 0 runs at 8; pooling (separate_cls, truncate_seq) keeps <cls> and averages 6 of the other
# 7 tokens in pairs: 1 + 3 = 4. The first layer of block 1 has pooled queries and full-length keys.
# rel_shift distance rows (descending, step = key stride):
#   block 0, strides 1/1: distances 8 .. -7 -> 16 rows;
#   block 1 pooling layer, query stride 2 (positions -1, 1, 3, 5), key stride 1 (0..7): 7 .. -8 -> 16 rows.
# The decoder runs at the full length with block 0's structure.
# Off TPU a factorized config runs the rel_shift algorithm unless the factorized one is forced.
@pytest.mark.parametrize(
    "rel_attn_type, rel_attn_impl, algorithm",
    [
        ("rel_shift", None, "rel_shift"),
        ("factorized", None, "rel_shift"),
        ("factorized", "factorized", "factorized"),
        ("null", None, "null"),
    ],
)
def test_forward_flops_match_a_hand_count(rel_attn_type, rel_attn_impl, algorithm):
    cfg = _config(rel_attn_type)
    encoder = hand_layer(8, 8, algorithm, 16) + hand_layer(4, 8, algorithm, 16)
    decoder = hand_layer(8, 8, algorithm, 16)
    head = mm(1, D, D) + mm(1, D, 3)  # sequence summary, logits
    options = dict(
        use_decoder=True,
        head="classification",
        batch_size=B,
        n_class=3,
        rel_attn_impl=rel_attn_impl,
    )
    counts = flops.forward_flops(cfg, T, **options)
    assert counts["encoder"] == pytest.approx(encoder)
    assert counts["decoder"] == pytest.approx(decoder)
    assert counts["head"] == head
    assert counts["total"] == pytest.approx(encoder + decoder + head)
    train = flops.train_flops(cfg, T, **options)
    assert train == pytest.approx(3 * (encoder + decoder + head))


def test_heads_and_input_projection():
    cfg = _config("null")
    cfg.d_embed = 6
    assert flops.forward_flops(cfg, T)["input_projection"] == mm(T, 6, D)
    # MLM: gather the 3 targets (one-hot matmul), lm_proj to d_embed, tied softmax over 20 words.
    assert flops.head_flops(cfg, T, "mlm", num_predict=3) == mm(3, T, D) + mm(3, D, 6) + mm(
        3, 6, 20
    )
    squad = (
        mm(T, D, 1)  # start logits
        + mm(1, T, D)  # start-probability-weighted feature
        + mm(1, 2 * D, D)  # answer_class/dense_0
        + mm(1, D, 1)  # answer_class/dense_1
        + mm(T, 2 * D, D)  # end_logits/dense_0 on [output, start feature]
        + mm(T, D, 1)  # end_logits/dense_1
    )
    assert flops.head_flops(cfg, T, "squad") == squad
    with pytest.raises(ValueError, match="head must be one of"):
        flops.head_flops(cfg, T, "ner")


@pytest.mark.parametrize(
    "overrides",
    [{}, {"block_size": "2_1x2_1x2", "decoder_size": "2"}, {"pool_q_only": False}],
)
def test_layer_shapes_are_the_lengths_the_model_runs(overrides):
    cfg = tiny_config(**overrides)
    model = modeling.FunnelTFM(cfg)
    _, hiddens, ret = build(model, seq_len=16, use_decoder=True)
    shapes = flops.layer_shapes(cfg, 16, use_decoder=True)
    ran = [h.shape[1] for h in hiddens + ret["decoder_hiddens"]]
    assert [q_len for q_len, _, _, _ in shapes] == ran
    # Keys: the query length of the layer before, except a pooling layer with pool_q_only.
    previous = [16] + ran[:-1]
    for (q_len, k_len, q_pow, _), prev in zip(shapes, previous, strict=True):
        pooled = q_pow > 0 and q_len != prev and cfg.pool_q_only
        assert k_len == (prev if pooled else q_len)


def test_funnel_saves_flops_against_the_standard_stack():
    funnel = tiny_config(
        block_size="6_6_6",
        vocab_size=30522,
        d_embed=768,
        d_model=768,
        n_head=12,
        d_head=64,
        d_inner=3072,
        rel_attn_type="rel_shift",
        decoder_size="2",
    )
    standard = modeling.ModelConfig(**{**funnel.to_dict(), "block_size": "18", "decoder_size": "0"})
    ratio = flops.forward_flops(funnel, 512)["total"] / flops.forward_flops(standard, 512)["total"]
    # Blocks at 512, 256, 128: linear work (6 + 3 + 1.5) / 18 plus attention's quadratic share.
    assert 0.5 < ratio < 0.6
