"""The benchmark runs end to end on tiny models, and the fast attention paths equal their plain formulas."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import benchmark
import ops
from conftest import REPO_ROOT


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


# ------------------------------------------------------------------------------------ the benchmark
@pytest.mark.slow
def test_benchmark_runs_on_tiny_models_and_writes_consistent_json(tmp_path):
    output = tmp_path / "bench.json"
    command = [
        sys.executable,
        str(REPO_ROOT / "tensorflow" / "benchmark.py"),
        "--config=tiny",
        "--models=B1-1H768",
        "--seq_lens=16",
        "--tasks=classification,squad",
        "--modes=train,grad",
        "--steps=2",
        "--warmup_steps=0",
        "--compare_precision=false",
        "--compare_jit=false",
        "--compare_models=B1-1H768,L2H768",
        "--compare_seq_len=16",
        "--compare_recompute=true",
        "--rel_attn_seq_len=16",
        "--profile_steps=1",
        f"--output={output}",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "relative-attention share" in run.stdout and "L2H768 training time" in run.stdout
    result = json.loads(output.read_text())
    rows = result["table"]
    assert [(r["model"], r["task"], r["mode"]) for r in rows] == [
        ("B1-1H768", "classification", "train"),
        ("B1-1H768", "classification", "grad"),
        ("B1-1H768", "squad", "train"),
        ("B1-1H768", "squad", "grad"),
    ]
    for row in rows:
        case = benchmark.Case(**{k: row[k] for k in benchmark.Case.__dataclass_fields__})
        assert row["gflop_per_example"] == pytest.approx(case.flops_per_example() / 1e9)
        assert len(row["round_step_s"]) == 2
        assert row["examples_per_s"] == pytest.approx(row["batch_size"] / row["step_s"])
        assert row["gflop_per_s"] == pytest.approx(row["gflop_per_example"] * row["examples_per_s"])
        assert (
            row["ratio_to_limit"] > 0 and row["peak_memory_mb"] > row["memory_per_example_mb"] > 0
        )
        # The profiler's breakdown of a training step: matmuls, the fused kernels, the rest.
        profile = row["profile"]
        assert profile["matmul_ms"] > 0 and profile["xla_ms"] > 0 and profile["other_ms"] > 0
        assert set(profile["top_ms"]) & set(benchmark._MATMUL_OPS) and "xla" in profile["top_ms"]
        assert f"{case.label()}: matmul " in run.stdout
    # SQuAD runs the decoder at full length, classification does not; training adds only element-wise work.
    assert rows[2]["gflop_per_example"] > rows[0]["gflop_per_example"]
    assert rows[0]["gflop_per_example"] == rows[1]["gflop_per_example"]
    comparisons = result["comparisons"]
    assert set(comparisons) == {
        "funnel_vs_standard",
        "rel_attn_cost",
        "recompute_cost",
        "fusion_speedup",
    }
    fusion = comparisons["fusion_speedup"]
    assert [c["fusion"] for c in fusion["cases"]] == [False, True]
    # Unfused, only the optimizer's update runs as XLA kernels.
    profiles = fusion["float32"]["unfused_profile"], fusion["float32"]["fused_profile"]
    assert fusion["float32"]["speedup"] > 0 and profiles[0]["xla_ms"] < profiles[1]["xla_ms"]
    assert "fused / unfused element-wise training speedup, float32" in run.stdout
    recompute = comparisons["recompute_cost"]
    assert [c["recompute"] for c in recompute["cases"]] == [False, True]
    assert recompute["time_ratio"] > 0 and "--recompute / plain training time" in run.stdout
    shares = comparisons["rel_attn_cost"]
    assert [c["rel_attn_type"] for c in shares["cases"]] == ["null", "rel_shift", "factorized"]
    assert shares["rel_shift_share"] < 1 and shares["factorized_share"] < 1
    assert result["machine"]["TF_CPU_ALLOCATOR_USE_BFC"] == "true"


def test_bad_flags_fail_with_one_line():
    command = [
        sys.executable,
        str(REPO_ROOT / "tensorflow" / "benchmark.py"),
        "--config=tiny",
        "--models=B4-4-4",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1].startswith("benchmark.py: error: unknown model")


def test_plan_validates_before_running():
    with pytest.raises(ValueError, match="multiple of 4"):
        benchmark.plan(
            ["B4-4-4H768"], [130], ["classification"], ["train"], ["float32"], [False], 8
        )
    with pytest.raises(ValueError, match="unknown task"):
        benchmark.plan(["B4-4-4H768"], [128], ["ner"], ["train"], ["float32"], [False], 8)
    table, comparisons = benchmark.plan(
        ["B4-4-4H768", "L12H768"],
        [128, 512],
        ["classification"],
        ["train", "infer"],
        ["float32"],
        [False, True],
        8,
        compare_jit=False,
    )
    assert len(table) == 2 * 2 * 2 * 2
    assert set(comparisons) == {
        "bfloat16_vs_float32",
        "funnel_vs_standard",
        "rel_attn_cost",
        "fusion_speedup",
    }
    cfg = benchmark.model_config("B6-3x2-3x2H768")
    assert (cfg.block_size, cfg.decoder_size, cfg.n_head, cfg.d_inner) == (
        "6_3x2_3x2",
        "2",
        12,
        3072,
    )
    assert benchmark.model_config("L12H768").decoder_size == "0"


@pytest.mark.parametrize("limit", [0, 1, 2, 37, 48, 64, 100])
def test_memory_search_finds_the_largest_fitting_batch(limit):
    calls = []

    def fits(batch):
        calls.append(batch)
        return batch <= limit

    assert benchmark.largest_fitting(fits, max_value=100) == limit
    assert len(calls) <= 2 * 7 + 1  # doubling, then bisection
    assert benchmark.largest_fitting(lambda b: True, max_value=50) == 50
