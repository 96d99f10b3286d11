"""The model against the original: golden outputs, checkpoint names, pooling lengths, precision, heads."""

import json
import logging

import numpy as np
import pytest
import tensorflow as tf

import model_utils
import modeling
import ops
from model_test_utils import (
    GOLDEN_MODELS,
    assert_round_trip,
    build,
    expected_variables,
    load_golden,
    random_batch,
    tiny_config,
)


def expected_core_variables(cfg, n_enc_layers, n_dec_layers):
    return expected_variables(
        "model",
        cfg.d_model,
        cfg.n_head,
        cfg.d_head,
        cfg.d_inner,
        cfg.d_embed,
        cfg.vocab_size,
        n_enc_layers,
        n_dec_layers,
    )


# ------------------------------------------------------------------------------------------ golden
def assert_matches_golden(model, ref, rows):
    """The model's hidden states on the reference rows `rows` (a slice) equal the original's."""
    inputs = [tf.constant(ref[k][rows]) for k in ("input_ids", "seg_id", "input_mask")]
    full, hiddens, ret = model.extract_hiddens(*inputs[:1], False, *inputs[1:], use_decoder=True)
    enc_hiddens = [ret["embedding_output"], *hiddens]
    n_enc = len([k for k in ref if k.startswith("enc_hidden_")])
    assert len(enc_hiddens) == n_enc
    for i, hidden in enumerate(enc_hiddens):
        np.testing.assert_allclose(
            hidden, ref[f"enc_hidden_{i:02d}"][rows], atol=1e-5, err_msg=f"enc {i}"
        )
    np.testing.assert_allclose(ret["encoder_output"], ref["enc_last_hidden"][rows], atol=1e-5)
    dec_hiddens = [ret["bridge_output"], *ret["decoder_hiddens"]]
    for i, hidden in enumerate(dec_hiddens):
        np.testing.assert_allclose(
            hidden, ref[f"dec_hidden_{i:02d}"][rows], atol=1e-5, err_msg=f"dec {i}"
        )
    np.testing.assert_allclose(full, ref["full_last_hidden"][rows], atol=1e-5)

    encoder_only, _, _ = model.extract_hiddens(*inputs[:1], False, *inputs[1:], use_decoder=False)
    np.testing.assert_allclose(encoder_only, ref["enc_last_hidden"][rows], atol=1e-5)


# Batch 1 is where TensorFlow 2.21's oneDNN broadcast matmul bug showed on AVX-512 CPUs.
@pytest.mark.parametrize("batch_size", [2, 1])
@pytest.mark.parametrize("name", GOLDEN_MODELS)
@pytest.mark.parametrize("rel_attn_impl", modeling.REL_ATTN_ALGORITHMS)
def test_reproduces_original_hidden_states(name, rel_attn_impl, batch_size):
    config, ckpt, ref = load_golden(name)
    model = modeling.FunnelTFM(config, rel_attn_impl=rel_attn_impl)
    build(model, ref["input_ids"].shape[1])
    report = model_utils.init_from_checkpoint(model, ckpt)
    assert report.missing == [] and report.unused == ["global_step"]
    assert len(report.loaded) == len(tf.train.list_variables(ckpt)) - 1

    n_rows = ref["input_ids"].shape[0]
    for start in range(0, n_rows, batch_size):
        assert_matches_golden(model, ref, slice(start, start + batch_size))

    unaligned = [tf.constant(ref[f"unaligned_{k}"]) for k in ("input_ids", "seg_id", "input_mask")]
    unaligned = [tf.tile(x, [batch_size, 1]) for x in unaligned]
    full, _, ret = model.extract_hiddens(unaligned[0], False, *unaligned[1:], use_decoder=True)
    for row in range(batch_size):
        np.testing.assert_allclose(
            ret["encoder_output"][row], ref["unaligned_enc_last_hidden"][0], atol=1e-5
        )
        np.testing.assert_allclose(full[row], ref["unaligned_full_last_hidden"][0], atol=1e-5)


def test_golden_checkpoint_names_match_spec():
    config, ckpt, _ = load_golden("tiny_relshift")
    expected = expected_core_variables(config, 6, 2) | {"global_step": []}
    assert dict(tf.train.list_variables(ckpt)) == expected


# --------------------------------------------------------------------------- checkpoints and config
@pytest.mark.parametrize(
    "overrides, n_enc, n_dec",
    [
        ({}, 3, 1),
        ({"block_size": "2_1x2_1x2", "decoder_size": "2", "d_embed": 24}, 4, 2),
        ({"block_size": "1_1", "decoder_size": "1x2"}, 2, 1),
    ],
)
def test_save_load_round_trip_uses_original_names(tmp_path, overrides, n_enc, n_dec):
    config = tiny_config(**overrides)
    model = modeling.FunnelTFM(config)
    inputs = random_batch(16)
    build(model)
    step = tf.Variable(7, dtype=tf.int64, name="global_step", trainable=False)
    listed = assert_round_trip(model, tmp_path, inputs)
    assert dict(listed) == expected_core_variables(config, n_enc, n_dec)
    model_utils.save_checkpoint([model, step], str(tmp_path / "with_step" / "model.ckpt-7"))
    assert ("global_step", []) in tf.train.list_variables(
        str(tmp_path / "with_step" / "model.ckpt-7")
    )


def test_checkpoint_state_file_and_max_to_keep(tmp_path):
    model = modeling.FunnelTFM(tiny_config())
    build(model)
    for step in (1, 2, 3):
        model_utils.save_checkpoint(model, str(tmp_path / f"model.ckpt-{step}"), max_to_keep=2)
    listed = model_utils.list_checkpoints(str(tmp_path))
    assert [model_utils.checkpoint_step(p) for p in listed] == [2, 3]
    assert not tf.io.gfile.glob(str(tmp_path / "model.ckpt-1.*"))
    assert model_utils.resolve_checkpoint(str(tmp_path / "latest")) == str(
        tmp_path / "model.ckpt-3"
    )


def test_state_file_is_readable_by_tensorflow_and_prefix_without_step_resolves(tmp_path):
    model = modeling.FunnelTFM(tiny_config())
    build(model)
    for step in (10, 200):
        model_utils.save_checkpoint(model, str(tmp_path / f"model.ckpt-{step}"))
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt-200")
    state = tf.train.get_checkpoint_state(str(tmp_path))
    assert [p.rsplit("-", 1)[1] for p in state.all_model_checkpoint_paths] == ["10", "200"]
    # The seed passes `--init_checkpoint=${MODEL_DIR}/model.ckpt` whatever the step suffix.
    assert model_utils.resolve_checkpoint(str(tmp_path / "model.ckpt")).endswith("model.ckpt-200")
    with pytest.raises(ValueError, match="does not exist"):
        model_utils.resolve_checkpoint(str(tmp_path / "other.ckpt"))


def test_directory_without_state_file_resolves_like_a_released_model(tmp_path):
    """A released model's directory holds `model.ckpt.{index,data-*}` and no `checkpoint` state file."""
    model = modeling.FunnelTFM(tiny_config())
    build(model)
    released = tmp_path / "B4-4-4H768-ELEC-TF"
    path = model_utils.save_checkpoint(model, str(released / "model.ckpt"))
    (released / "checkpoint").unlink()
    assert model_utils.resolve_checkpoint(str(released)) == path
    assert model_utils.resolve_checkpoint(str(released / "latest")) == path
    for step in (20, 100):
        model_utils.save_checkpoint(model, str(tmp_path / "run" / f"model.ckpt-{step}"))
    (tmp_path / "run" / "checkpoint").unlink()
    assert model_utils.resolve_checkpoint(str(tmp_path / "run")).endswith("model.ckpt-100")
    model_utils.save_checkpoint(model, str(released / "other.ckpt"))
    (released / "checkpoint").unlink()
    with pytest.raises(
        ValueError, match="several checkpoints .*model.ckpt, other.ckpt.*: name one"
    ):
        model_utils.resolve_checkpoint(str(released))
    # Only the name `latest` stands for its directory; `model_latest` is a checkpoint of its own.
    own = model_utils.save_checkpoint(model, str(tmp_path / "best" / "model_latest"))
    model_utils.save_checkpoint(model, str(tmp_path / "best" / "model.ckpt-5"))
    assert model_utils.resolve_checkpoint(own) == own


def test_shape_mismatch_is_refused_with_names_and_shapes(tmp_path):
    small = modeling.FunnelTFM(tiny_config())
    build(small)
    path = model_utils.save_checkpoint(small, str(tmp_path / "model.ckpt-1"))
    wide = modeling.FunnelTFM(tiny_config(d_inner=64))
    build(wide)
    with pytest.raises(ValueError, match=r"ff/layer_1/bias has shape \[48\].*\[64\]"):
        model_utils.init_from_checkpoint(wide, path)


def test_warm_start_reports_missing_and_unused(tmp_path):
    source = modeling.FunnelTFM(tiny_config())
    build(source)
    path = model_utils.save_checkpoint(source, str(tmp_path / "model.ckpt-1"))
    target = modeling.FunnelTFM(tiny_config(decoder_size="0"))
    ids, seg, mask = random_batch(16)
    target.get_classification_loss(tf.constant([0, 1]), ids, 3, False, "mrpc", seg, mask)
    report = model_utils.init_from_checkpoint(target, path)
    assert report.missing == sorted(
        ["model/mrpc/logit/kernel", "model/mrpc/logit/bias"]
        + [f"model/sequnece_summary/summary/{v}" for v in ("kernel", "bias")]
    )
    assert report.unused and all(n.startswith("model/decoder/layer_3/") for n in report.unused)


def test_decoder_created_after_the_load_takes_the_checkpoint_values():
    config, ckpt, ref = load_golden("tiny_relshift")
    model = modeling.FunnelTFM(config)
    inputs = [tf.constant(ref[k]) for k in ("input_ids", "seg_id", "input_mask")]
    model.extract_hiddens(*inputs[:1], False, *inputs[1:], use_decoder=False)
    report = model_utils.init_from_checkpoint(model, ckpt)
    decoder = sorted(n for n in dict(tf.train.list_variables(ckpt)) if "/decoder/" in n)
    assert len(decoder) == 40 and report.deferred == decoder
    assert report.unused == sorted([*decoder, "global_step"])

    full, _, _ = model.extract_hiddens(*inputs[:1], False, *inputs[1:], use_decoder=True)
    np.testing.assert_allclose(full, ref["full_last_hidden"], atol=1e-5)


@pytest.mark.parametrize("regression", [False, True], ids=["classification", "regression"])
def test_finetuned_head_called_first_after_the_load_has_the_finetuned_values(tmp_path, regression):
    ids, seg, mask = random_batch(16)
    labels = tf.constant([0.5, 1.0]) if regression else tf.constant([0, 2])

    def head(model):
        if regression:
            return model.get_regression_loss(labels, ids, False, "sts-b", seg, mask)
        return model.get_classification_loss(labels, ids, 3, False, "mnli", seg, mask)

    finetuned = modeling.FunnelTFM(tiny_config())
    expected_loss, expected = head(finetuned)
    path = model_utils.save_checkpoint(finetuned, str(tmp_path / "model.ckpt-9"))

    # A notebook: a fresh model, the load before any call, then the head.
    fresh = modeling.FunnelTFM(tiny_config())
    report = model_utils.init_from_checkpoint(fresh, path)
    assert report.loaded == [] and report.deferred == report.unused
    loss, outputs = head(fresh)
    np.testing.assert_array_equal(outputs, expected)
    np.testing.assert_array_equal(loss, expected_loss)
    assert sorted(fresh.named_variables()) == sorted(finetuned.named_variables())


def test_a_pretrained_part_missing_from_the_checkpoint_is_a_warning(tmp_path, caplog):
    """A finetuned classifier's checkpoint has no decoder: a SQuAD model (or a notebook asking for the
    decoder's states) loaded from it trains its decoder from scratch, and says so; a new head is normal."""
    ids, seg, mask = random_batch(16)
    finetuned = modeling.FunnelTFM(tiny_config())
    finetuned.get_classification_loss(tf.constant([0, 1]), ids, 3, False, "mnli", seg, mask)
    path = model_utils.save_checkpoint(finetuned, str(tmp_path / "model.ckpt-30"))

    def records(level):
        return [r.getMessage() for r in caplog.records if r.levelno == level]

    caplog.set_level(logging.INFO, logger="absl")
    fresh = modeling.FunnelTFM(tiny_config())
    model_utils.init_from_checkpoint(fresh, path)
    fresh.extract_hiddens(ids, False, seg, mask, use_decoder=True)
    fresh.get_race_loss(tf.zeros([1], tf.int32), tf.reshape(ids, [1, 32]), False)
    assert records(logging.WARNING) == [
        f"model/decoder is not in {path}: its variables are initialised randomly"
    ]
    assert f"New head model/race (not in {path}): initialised randomly" in records(logging.INFO)

    # The same when the decoder exists before the load (the training engine builds the model first).
    caplog.clear()
    built = modeling.FunnelTFM(tiny_config())
    build(built)
    report = model_utils.init_from_checkpoint(built, path)
    assert report.missing and all("/decoder/" in n for n in report.missing)
    assert records(logging.WARNING) == [
        f"model/decoder is not in {path}: its variables are initialised randomly"
    ]


def _write_vocab(path, size):
    specials = ["<pad>", "<unk>", "<cls>", "<sep>", "<mask>"]
    path.write_text("\n".join(specials + [f"w{i}" for i in range(size - len(specials))]) + "\n")


def test_from_pretrained_loads_a_finetuned_directory_heads_included(tmp_path):
    config = tiny_config()
    finetuned = modeling.FunnelTFM(config)
    ids, seg, mask = random_batch(16)
    _, logits = finetuned.get_classification_loss([0, 1], ids, 3, False, "mnli", seg, mask)
    model_utils.save_checkpoint(finetuned, str(tmp_path / "model.ckpt-30"))
    config.to_json(str(tmp_path / "net_config.json"))
    _write_vocab(tmp_path / "vocab.cased.txt", config.vocab_size)

    model, tokenizer = modeling.FunnelTFM.from_pretrained(str(tmp_path))
    assert tokenizer.path.endswith("vocab.cased.txt") and not tokenizer.uncased
    core = {n for n in finetuned.named_variables() if "/mnli/" not in n and "sequnece" not in n}
    assert set(model.named_variables()) == core
    for name, var in model.named_variables().items():
        np.testing.assert_array_equal(var, finetuned.named_variables()[name])
    _, reloaded = model.get_classification_loss([0, 1], ids, 3, False, "mnli", seg, mask)
    np.testing.assert_array_equal(reloaded, logits)


def test_from_pretrained_errors_name_what_is_wrong(tmp_path):
    config = tiny_config(decoder_size="0")
    model = modeling.FunnelTFM(config)
    build(model, use_decoder=False)
    model_utils.save_checkpoint(model, str(tmp_path / "model.ckpt"))
    config.to_json(str(tmp_path / "net_config.json"))
    with pytest.raises(ValueError, match=r"no vocabulary in .*vocab.uncased.txt"):
        modeling.FunnelTFM.from_pretrained(str(tmp_path))
    _write_vocab(tmp_path / "vocab.uncased.txt", 40)
    with pytest.raises(ValueError, match=r"40 entries but .*net_config.json says vocab_size 50"):
        modeling.FunnelTFM.from_pretrained(str(tmp_path))
    _write_vocab(tmp_path / "vocab.uncased.txt", 50)
    tiny_config(block_size="2_1_1", decoder_size="0").to_json(str(tmp_path / "net_config.json"))
    with pytest.raises(ValueError, match=r"lacks 20 variable\(s\) of .*net_config.json"):
        modeling.FunnelTFM.from_pretrained(str(tmp_path))


def test_a_variable_created_after_the_load_with_another_shape_is_refused(tmp_path):
    source = modeling.FunnelTFM(tiny_config())
    ids, seg, mask = random_batch(16)
    source.get_classification_loss(tf.constant([0, 1]), ids, 2, False, "task", seg, mask)
    path = model_utils.save_checkpoint(source, str(tmp_path / "model.ckpt-1"))
    target = modeling.FunnelTFM(tiny_config())
    model_utils.init_from_checkpoint(target, path)
    with pytest.raises(ValueError, match=r"model/task/logit/kernel has shape \[32, 2\].*\[32, 5\]"):
        target.get_classification_loss(tf.constant([0, 1]), ids, 5, False, "task", seg, mask)


def test_export_core_checkpoint_drops_optimizer_generator_step_and_loss_scale(tmp_path):
    model = modeling.FunnelTFM(tiny_config())
    build(model)
    extra = [
        tf.Variable(tf.zeros([2]), name="model/input/layer_norm/gamma/adam_m"),
        tf.Variable(tf.zeros([3]), name="generator/lm_loss/bias"),
        tf.Variable(5, dtype=tf.int64, name="global_step"),
        tf.Variable(2.0**15, name="loss_scale/current_loss_scale"),
        tf.Variable(3, dtype=tf.int64, name="loss_scale/good_steps"),
    ]
    src = model_utils.save_checkpoint([model, *extra], str(tmp_path / "full" / "model.ckpt-5"))
    names = model_utils.export_core_checkpoint(src, str(tmp_path / "core" / "model.ckpt"))
    assert sorted(names) == sorted(model.named_variables())
    listed = {n for n, _ in tf.train.list_variables(str(tmp_path / "core" / "model.ckpt"))}
    assert listed == set(model.named_variables())
    # Into the source's directory (the training model_dir, or the source itself) it would become the
    # latest checkpoint there, and a resumed run would restart from it.
    for target in (src, str(tmp_path / "full" / "core.ckpt")):
        with pytest.raises(ValueError, match="in the directory of the source checkpoint"):
            model_utils.export_core_checkpoint(str(tmp_path / "full"), target)
    assert model_utils.latest_checkpoint(str(tmp_path / "full")) == src


def test_config_json_round_trip_and_original_format(tmp_path):
    config = tiny_config(block_size="6_3x2_3x2", decoder_size="2")
    path = tmp_path / "net_config.json"
    config.to_json(str(path))
    text = path.read_text()
    assert text == json.dumps(config.to_dict(), indent=4, sort_keys=True)
    assert len(json.loads(text)) == 20
    loaded = modeling.ModelConfig.init_from_json(str(path))
    assert loaded == config
    assert loaded.block_param_size == [6, 3, 3] and loaded.block_repeat_size == [1, 2, 2]
    assert loaded.block_depth == [6, 6, 6] and loaded.decoder_depth == 2
    assert modeling.ModelConfig.init_from_json(str(path), {"d_inner": 7}).d_inner == 7


@pytest.mark.parametrize(
    "change, message",
    [
        ({"d_modle": 32}, r"unknown config key\(s\) \['d_modle'\]"),
        ({"block_size": "2_x_2"}, "block_size='2_x_2'"),
        ({"pooling_type": "sum"}, "pooling_type"),
        ({"pooling_size": 3}, "pooling_size=3"),
        ({"block_size": "3", "decoder_size": "2"}, "decoder_size must be '0'"),
    ],
)
def test_bad_config_is_rejected_clearly(tmp_path, change, message):
    values = tiny_config().to_dict() | change
    path = tmp_path / "net_config.json"
    path.write_text(json.dumps(values))
    with pytest.raises(ValueError, match=message):
        modeling.ModelConfig.init_from_json(str(path))


def test_config_from_flags_object():
    class Flags:
        pass

    flags = Flags()
    for key, value in tiny_config().to_dict().items():
        setattr(flags, key, value)
    assert modeling.ModelConfig.init_from_flags(flags) == tiny_config()
    del flags.d_head
    with pytest.raises(ValueError, match="d_head"):
        modeling.ModelConfig.init_from_flags(flags)


# ------------------------------------------------------------------------------ pooling and shapes
@pytest.mark.parametrize(
    "separate_cls, truncate_seq, seq_len, lengths",
    [
        # <cls> + (32 - 2) / 2 = 16, then <cls> + (16 - 2) / 2 = 8.
        (True, True, 32, [32, 16, 8]),
        # <cls> + ceil(20 / 2) = 11, then <cls> + ceil(10 / 2) = 6.
        (True, False, 21, [21, 11, 6]),
        # ceil(21 / 2) = 11, ceil(11 / 2) = 6.
        (False, True, 21, [21, 11, 6]),
    ],
)
@pytest.mark.parametrize("pooling_type", ["mean", "max"])
@pytest.mark.parametrize("pool_q_only", [True, False])
def test_pooled_lengths(separate_cls, truncate_seq, seq_len, lengths, pooling_type, pool_q_only):
    config = tiny_config(
        block_size="1_1x2_1",
        separate_cls=separate_cls,
        pooling_type=pooling_type,
        pool_q_only=pool_q_only,
        decoder_size="0",
    )
    assert modeling.pooled_lengths(config, seq_len, truncate_seq) == lengths
    model = modeling.FunnelTFM(config)
    ids, seg, mask = random_batch(seq_len)
    last, hiddens, ret = model.extract_hiddens(ids, False, seg, mask, truncate_seq=truncate_seq)
    assert [h.shape[1] for h in hiddens] == [lengths[0], lengths[1], lengths[1], lengths[2]]
    assert last.shape == (2, lengths[2], 32)
    assert [b.shape[1] for b in ret["block_outputs"]] == lengths
    assert np.isfinite(last.numpy()).all()


@pytest.mark.parametrize("seq_len, message", [(30, "multiple of 4"), (2, "too short")])
def test_unpoolable_seq_len_gets_a_clear_error(seq_len, message):
    model = modeling.FunnelTFM(tiny_config())
    ids, seg, mask = random_batch(seq_len, pad_last=0)
    with pytest.raises(ValueError, match=message):
        model.extract_hiddens(ids, False, seg, mask)


def test_decoder_output_is_full_length_and_max_pooling_differs_from_mean():
    outputs = {}
    for pooling_type in ("mean", "max"):
        tf.random.set_seed(3)
        model = modeling.FunnelTFM(tiny_config(pooling_type=pooling_type))
        full, _, _ = build(model, 16, use_decoder=True)
        outputs[pooling_type] = full.numpy()
        assert full.shape == (2, 16, 32)
    assert not np.allclose(outputs["mean"], outputs["max"], atol=1e-4)


@pytest.mark.parametrize("pool_q_only", [True, False])
@pytest.mark.parametrize("truncate_seq", [True, False])
@pytest.mark.parametrize("block_size", ["1_1_1", "2_1x2"])
def test_rel_shift_and_factorized_compute_the_same_function(pool_q_only, truncate_seq, block_size):
    config = tiny_config(block_size=block_size, pool_q_only=pool_q_only, decoder_size="1")
    model = modeling.FunnelTFM(config, rel_attn_impl="factorized")
    seq_len = 16 if truncate_seq else 19
    ids, seg, mask = random_batch(seq_len)
    ref_full, _, _ = model.extract_hiddens(ids, False, seg, mask, True, truncate_seq=truncate_seq)
    model.rel_attn_impl = "rel_shift"
    full, _, _ = model.extract_hiddens(ids, False, seg, mask, True, truncate_seq=truncate_seq)
    np.testing.assert_allclose(full, ref_full, atol=1e-5)


@pytest.mark.parametrize(
    "rel_attn_type, rel_attn_impl, on_tpu, expected",
    [
        ("factorized", None, False, "rel_shift"),
        ("factorized", None, True, "factorized"),
        ("rel_shift", None, True, "rel_shift"),
        ("factorized", "factorized", False, "factorized"),
        ("rel_shift", "factorized", False, "factorized"),
        ("null", None, True, "null"),
    ],
)
def test_factorized_configs_run_the_factorized_algorithm_only_on_tpu(
    monkeypatch, rel_attn_type, rel_attn_impl, on_tpu, expected
):
    monkeypatch.setattr(ops, "under_tpu_strategy", lambda: on_tpu)
    config = tiny_config(rel_attn_type=rel_attn_type)
    assert modeling.rel_attn_algorithm(config, rel_attn_impl) == expected


def test_the_default_algorithm_is_the_one_that_runs():
    """A factorized config off TPU runs rel_shift: its graph has the rel_shift reshape, not the factorized
    position encodings' [len, d_model] multiplications."""
    model = modeling.FunnelTFM(tiny_config(rel_attn_type="factorized"))
    ids, seg, mask = random_batch(16)
    graphs = {}
    for impl in (None, "rel_shift", "factorized"):
        model.rel_attn_impl = impl
        fn = tf.function(lambda: model.extract_hiddens(ids, False, seg, mask)[0])
        graphs[impl] = sorted(op.type for op in fn.get_concrete_function().graph.get_operations())
    assert graphs[None] == graphs["rel_shift"] != graphs["factorized"]


@pytest.mark.parametrize("config_type, impl", [("factorized", "xla"), ("null", "rel_shift")])
def test_rel_attn_impl_is_validated(config_type, impl):
    with pytest.raises(ValueError, match="rel_attn_impl"):
        modeling.FunnelTFM(tiny_config(rel_attn_type=config_type), rel_attn_impl=impl)


def test_input_projection_and_absolute_embeddings():
    config = tiny_config(d_embed=24, rel_attn_type="null")
    model = modeling.FunnelTFM(config)
    full, _, ret = build(model)
    assert ret["embedding_output"].shape == (2, 16, 24) and full.shape == (2, 16, 32)
    shapes = {n: v.shape.as_list() for n, v in model.named_variables().items()}
    assert shapes["model/encoder/input_projection/kernel"] == [24, 32]
    assert shapes["model/input/position_embedding/lookup_table"] == [512, 24]
    assert shapes["model/input/segment_embedding/lookup_table"] == [2, 24]


def test_padding_does_not_leak_into_real_tokens_of_block_zero():
    """Changing the ids of padded positions leaves the first layer's real outputs unchanged."""
    model = modeling.FunnelTFM(tiny_config())
    ids, seg, mask = random_batch(16, pad_last=6)
    _, hiddens, _ = model.extract_hiddens(ids, False, seg, mask)
    other_ids = tf.where(mask > 0, 7, ids)
    _, other, _ = model.extract_hiddens(other_ids, False, seg, mask)
    np.testing.assert_allclose(hiddens[0][:, :10], other[0][:, :10], atol=1e-5)


def test_dropout_only_when_training():
    model = modeling.FunnelTFM(tiny_config(dropout=0.3))
    ids, seg, mask = random_batch(16)
    eval_a, _ = model.get_pooled_output(ids, False, seg, mask)
    eval_b, _ = model.get_pooled_output(ids, False, seg, mask)
    train, _ = model.get_pooled_output(ids, True, seg, mask)
    np.testing.assert_array_equal(eval_a, eval_b)
    assert not np.allclose(eval_a, train, atol=1e-4)


# ------------------------------------------------------------------------------------- precision
@pytest.mark.parametrize("precision, atol", [("bfloat16", 0.15), ("float16", 0.02)])
@pytest.mark.parametrize("rel_attn_impl", modeling.REL_ATTN_ALGORITHMS)
def test_reduced_precision_stays_close_to_float32(precision, atol, rel_attn_impl):
    config, ckpt, ref = load_golden("tiny_relshift")
    model = modeling.FunnelTFM(config, rel_attn_impl=rel_attn_impl)
    inputs = [tf.constant(ref[k]) for k in ("input_ids", "seg_id", "input_mask")]
    build(model, 32)
    model_utils.init_from_checkpoint(model, ckpt)
    full, _, ret = model.extract_hiddens(
        inputs[0], False, *inputs[1:], use_decoder=True, precision=precision
    )
    assert full.dtype == tf.as_dtype(precision)
    assert all(v.dtype == tf.float32 for v in model.trainable_variables)
    np.testing.assert_allclose(tf.cast(full, tf.float32), ref["full_last_hidden"], atol=atol)
    summary, _ = model.get_pooled_output(inputs[0], False, *inputs[1:], use_bfloat16=True)
    assert summary.dtype == tf.bfloat16


def test_precision_arguments_are_validated():
    model = modeling.FunnelTFM(tiny_config())
    ids, seg, mask = random_batch(16)
    with pytest.raises(ValueError, match="precision must be one of"):
        model.extract_hiddens(ids, False, seg, mask, precision="float8")


# ------------------------------------------------------------------------------------------ heads
def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_classification_and_regression_heads():
    model = modeling.FunnelTFM(tiny_config(decoder_size="0"))
    ids, seg, mask = random_batch(16)
    labels = tf.constant([2, 0])
    loss, logits = model.get_classification_loss(labels, ids, 3, False, "mnli_matched", seg, mask)
    expected = -_log_softmax(logits.numpy())[[0, 1], [2, 0]]
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    targets = tf.constant([0.5, 4.0])
    sq_loss, preds = model.get_regression_loss(targets, ids, False, "sts-b", seg, mask)
    np.testing.assert_allclose(sq_loss, (preds.numpy() - targets.numpy()) ** 2, rtol=1e-5)
    shapes = {n: v.shape.as_list() for n, v in model.named_variables().items()}
    assert shapes["model/sequnece_summary/summary/kernel"] == [32, 32]
    assert shapes["model/mnli_matched/logit/kernel"] == [32, 3]
    assert shapes["model/sts-b/logit/bias"] == [1]


def test_race_head_scores_each_choice_independently():
    model = modeling.FunnelTFM(tiny_config(decoder_size="0", dropout=0.0))
    ids, seg, mask = random_batch(16, batch_size=8)
    flat = [tf.reshape(x, [2, 4 * 16]) for x in (ids, seg, mask)]
    loss, logits = model.get_race_loss(tf.constant([1, 3]), flat[0], False, flat[1], flat[2])
    assert logits.shape == (2, 4)
    summary, _ = model.get_pooled_output(ids[:4], False, seg[:4], mask[:4])
    kernel = model.named_variables()["model/race/logits/kernel"].numpy()
    np.testing.assert_allclose(logits[0], (summary.numpy() @ kernel)[:, 0], atol=1e-5)
    np.testing.assert_allclose(loss[1], -_log_softmax(logits.numpy())[1, 3], rtol=1e-5)


def test_mlm_and_electra_heads_and_names():
    config = tiny_config(d_embed=24)
    model = modeling.FunnelTFM(config)
    ids, seg, mask = random_batch(16)
    positions = np.array([[1, 4, 9], [2, 3, 5]])
    mapping = tf.one_hot(positions, 16)
    target = tf.gather(ids, positions, batch_dims=1)
    loss, aux = model.get_mlm_loss(target, ids, False, seg, mask, mapping)
    logits = aux["logits"].numpy()
    assert logits.shape == (2, 3, 50)
    per_target = -np.take_along_axis(_log_softmax(logits), target.numpy()[..., None], -1)[..., 0]
    np.testing.assert_allclose(loss, per_target.mean(), rtol=1e-5)
    weighted, _ = model.get_mlm_loss(
        target, ids, False, seg, mask, mapping, target_mask=tf.constant([[1, 1, 0], [1, 0, 0]])
    )
    np.testing.assert_allclose(weighted, per_target[[0, 0, 1], [0, 1, 0]].mean(), rtol=1e-5)

    full, _, _ = model.extract_hiddens(ids, False, seg, mask, use_decoder=True)
    original = tf.constant(np.ones((2, 16), np.int32))
    disc_loss, disc_logits = model.binary_loss(full, original, mask)
    per_token = np.logaddexp(0, -disc_logits.numpy())
    real = 1 - mask.numpy()
    np.testing.assert_allclose(disc_loss, (per_token * real).sum() / real.sum(), rtol=1e-5)
    shapes = {n: v.shape.as_list() for n, v in model.named_variables().items()}
    assert shapes["model/lm_proj/dense/kernel"] == [32, 24]
    assert shapes["model/lm_proj/layer_norm/gamma"] == [24]
    assert shapes["model/lm_loss/bias"] == [50]
    assert shapes["model/binary_proj/dense/kernel"] == [32, 32]
    assert shapes["model/binary_loss/weight"] == [32]
    assert shapes["model/binary_loss/bias"] == [1]


def test_mlm_gradient_materializes_nothing_larger_than_the_embedding_table():
    """The tied softmax's table gradient is one matmul: no [batch, num_predict, vocab, d_embed] product."""
    vocab_size, d_embed = 1000, 24
    model = modeling.FunnelTFM(tiny_config(vocab_size=vocab_size, d_embed=d_embed))
    ids, seg, mask = random_batch(16, vocab_size=vocab_size)
    positions = np.array([[1, 4, 9], [2, 3, 5]])
    mapping = tf.one_hot(positions, 16)
    target = tf.gather(ids, positions, batch_dims=1)
    model.get_mlm_loss(target, ids, True, seg, mask, mapping)
    variables = model.trainable_variables

    @tf.function
    def gradients():
        with tf.GradientTape() as tape:
            loss, _ = model.get_mlm_loss(target, ids, True, seg, mask, mapping)
        return tape.gradient(loss, variables)

    graph = gradients.get_concrete_function().graph
    sizes = [
        tensor.shape.num_elements()
        for op in graph.get_operations()
        for tensor in op.outputs
        if tensor.shape.is_fully_defined()
    ]
    assert max(sizes) == vocab_size * d_embed


def test_works_inside_tf_function_and_creates_variables_once():
    model = modeling.FunnelTFM(tiny_config())
    ids, seg, mask = random_batch(16)

    @tf.function
    def pooled(ids, seg, mask):
        return model.get_pooled_output(ids, False, seg, mask)[0]

    first = pooled(ids, seg, mask)
    count = len(model.trainable_variables)
    np.testing.assert_allclose(pooled(ids, seg, mask), first)
    eager, _ = model.get_pooled_output(ids, False, seg, mask)
    np.testing.assert_allclose(eager, first, atol=1e-6)
    assert len(model.trainable_variables) == count


def _squad_features(seq_len=16):
    ids, seg, mask = random_batch(seq_len)
    p_mask = np.zeros((2, seq_len), np.float32)
    p_mask[:, 1:5] = 1.0  # the question
    p_mask[-1, -5:] = 1.0  # padding
    return {
        "input_ids": ids,
        "segment_ids": seg,
        "input_mask": mask,
        "p_mask": tf.constant(p_mask),
        "cls_index": tf.constant([0, 0]),
        "start_positions": tf.constant([6, 0]),
        "end_positions": tf.constant([8, 0]),
        "is_impossible": tf.constant([0.0, 1.0]),
    }


@pytest.mark.parametrize("conditional_end", [True, False])
def test_squad_heads_loss_names_and_beam(conditional_end):
    model = modeling.FunnelTFM(tiny_config(dropout=0.0))
    features = _squad_features()
    loss, out = model.get_squad_loss(features, False, conditional_end=conditional_end)
    start, end, cls = (out[k].numpy() for k in ("start_log_probs", "end_log_probs", "cls_logits"))
    assert np.all(start[:, 1:5] < -1e20), "masked positions must get no probability"
    expected = 0.5 * (-start[[0, 1], [6, 0]] - end[[0, 1], [8, 0]])
    expected += 0.5 * (np.logaddexp(0, cls) - cls * np.array([0.0, 1.0]))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)

    beam = model.get_squad_predictions(features, 3, 2, conditional_end=conditional_end)
    assert beam["start_top_index"].shape == (2, 3) and beam["end_top_index"].shape == (2, 6)
    np.testing.assert_allclose(beam["start_top_log_probs"][:, 0], start.max(-1), rtol=1e-5)
    np.testing.assert_allclose(beam["cls_logits"], cls, rtol=1e-5)
    # The best end for the best start equals the training path's end distribution at that start.
    best_start = beam["start_top_index"].numpy()[:, 0]
    _, given = model.get_squad_loss(
        features | {"start_positions": tf.constant(best_start)},
        False,
        conditional_end=conditional_end,
    )
    np.testing.assert_allclose(
        beam["end_top_log_probs"][:, 0], given["end_log_probs"].numpy().max(-1), rtol=1e-5
    )

    shapes = {n: v.shape.as_list() for n, v in model.named_variables().items()}
    assert shapes["model/start_logits/dense/kernel"] == [32, 1]
    assert shapes["model/answer_class/dense_0/kernel"] == [64, 32]
    assert shapes["model/answer_class/dense_1/kernel"] == [32, 1]
    assert "model/answer_class/dense_1/bias" not in shapes
    if conditional_end:
        assert shapes["model/end_logits/dense_0/kernel"] == [64, 32]
        assert shapes["model/end_logits/layer_norm/gamma"] == [32]
        assert shapes["model/end_logits/dense_1/kernel"] == [32, 1]
    else:
        assert shapes["model/end_logits/dense/kernel"] == [32, 1]


def test_heads_accept_python_lists_and_numpy_arrays():
    model = modeling.FunnelTFM(tiny_config(dropout=0.0))
    ids, seg, mask = random_batch(16)
    as_numpy = [x.numpy() for x in (ids, seg, mask)]
    as_lists = [x.tolist() for x in as_numpy]

    expected, _ = model.get_pooled_output(ids, False, seg, mask)
    for inputs in (as_numpy, as_lists):
        np.testing.assert_array_equal(
            model.get_pooled_output(inputs[0], False, *inputs[1:])[0], expected
        )
    full, _, _ = model.extract_hiddens(ids, False, seg, mask, use_decoder=True)
    np.testing.assert_array_equal(
        model.extract_hiddens(as_lists[0], False, *as_lists[1:], use_decoder=True)[0], full
    )

    loss, _ = model.get_classification_loss(tf.constant([0, 1]), ids, 2, False, "cls", seg, mask)
    np.testing.assert_array_equal(
        model.get_classification_loss([0, 1], as_lists[0], 2, False, "cls", *as_lists[1:])[0], loss
    )
    race = [np.reshape(x, [1, 32]) for x in as_numpy]
    loss, _ = model.get_race_loss(
        tf.constant([1]),
        *[tf.constant(x) for x in race[:1]],
        False,
        *[tf.constant(x) for x in race[1:]],
        n_choice=2,
    )
    np.testing.assert_array_equal(
        model.get_race_loss([1], race[0], False, *race[1:], n_choice=2)[0], loss
    )

    squad = _squad_features()
    loss, _ = model.get_squad_loss(squad, False)
    np.testing.assert_array_equal(
        model.get_squad_loss({k: np.asarray(v) for k, v in squad.items()}, False)[0], loss
    )
    mapping = tf.one_hot([[1, 4], [2, 3]], 16)
    loss, _ = model.get_mlm_loss(tf.constant([[7, 8], [9, 10]]), ids, False, seg, mask, mapping)
    np.testing.assert_array_equal(
        model.get_mlm_loss([[7, 8], [9, 10]], as_lists[0], False, *as_lists[1:], mapping.numpy())[
            0
        ],
        loss,
    )


def test_variable_names_ignore_enclosing_name_scopes():
    model = modeling.FunnelTFM(tiny_config())
    with tf.name_scope("tower_0"):
        build(model)
    for name, var in model.named_variables().items():
        assert var.name == f"{name}:0"
