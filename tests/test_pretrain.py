"""Pretraining: the MLM and ELECTRA objectives, checkpoint names, and tiny end-to-end runs of pretrain.py."""

import collections
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import create_pretrain_data
import model_test_utils
import model_utils
import modeling
import optimization
import pretrain
import tokenization
from conftest import SHARED_DATA
from model_test_utils import expected_variables

REPO = pathlib.Path(__file__).resolve().parent.parent
SEQ_LEN = 32
SPECIALS = ["<pad>", "<unk>", "<cls>", "<sep>", "<mask>"]
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(5)


def tiny_config(**overrides):
    """3 blocks of one layer, a one-layer decoder, d_model 32 and 4 heads (so a 0.5 generator has 2)."""
    return model_test_utils.tiny_config(**{"vocab_size": 60, "n_head": 4, **overrides})


def mlm_head_variables(scope, d_model, d_embed, vocab_size):
    return {
        f"{scope}/lm_proj/dense/kernel": [d_model, d_embed],
        f"{scope}/lm_proj/dense/bias": [d_embed],
        f"{scope}/lm_proj/layer_norm/gamma": [d_embed],
        f"{scope}/lm_proj/layer_norm/beta": [d_embed],
        f"{scope}/lm_loss/bias": [vocab_size],
    }


def binary_head_variables(d_model):
    return {
        "model/binary_proj/dense/kernel": [d_model, d_model],
        "model/binary_proj/dense/bias": [d_model],
        "model/binary_loss/weight": [d_model],
        "model/binary_loss/bias": [1],
    }


def electra_variables(d_model, n_head, d_head, d_inner, d_embed, vocab, n_enc, n_dec, shrink):
    """Every variable of an ELECTRA model: discriminator, binary head, generator, generator LM head."""
    dg, ng, fg = int(d_model * shrink), int(n_head * shrink), int(d_inner * shrink)
    names = expected_variables(
        "model", d_model, n_head, d_head, d_inner, d_embed, vocab, n_enc, n_dec
    )
    names.update(binary_head_variables(d_model))
    names.update(expected_variables("generator", dg, ng, d_head, fg, d_embed, vocab, n_enc, n_dec))
    names.update(mlm_head_variables("generator", dg, d_embed, vocab))
    return names


def variable_shapes(*modules):
    shapes = {}
    for module in modules:
        shapes.update({n: v.shape.as_list() for n, v in module.named_variables().items()})
    return shapes


def make_features(batch_size, seq_len, num_predict, vocab_size, seed=0, pad=4):
    """A hand-made pretraining batch: `<cls> A <sep> B <sep>`, the last row padded, targets masked.

    Returns a dict of tensors shaped like input_func_builder's (see its make_features).
    """
    rng = np.random.default_rng(seed)
    origin = rng.integers(len(SPECIALS), vocab_size, (batch_size, seq_len)).astype(np.int32)
    seg = np.zeros((batch_size, seq_len), np.int32)
    half = seq_len // 2
    origin[:, 0], seg[:, 0] = CLS_ID, 2
    origin[:, half - 1] = SEP_ID
    origin[:, -1] = SEP_ID
    seg[:, half:] = 1
    origin[-1, -pad:], seg[-1, -pad:] = PAD_ID, 0
    mapping = np.zeros((batch_size, num_predict, seq_len), np.float32)
    is_target = np.zeros((batch_size, seq_len), bool)
    for b in range(batch_size):
        candidates = np.flatnonzero(~np.isin(origin[b], [CLS_ID, SEP_ID, PAD_ID]))
        positions = np.sort(rng.choice(candidates, num_predict, replace=False))
        mapping[b, np.arange(num_predict), positions] = 1.0
        is_target[b, positions] = True
    masked = np.where(is_target, MASK_ID, origin)
    target = np.take_along_axis(origin, mapping.argmax(-1), axis=1)
    features = {
        "masked_input": masked,
        "origin_input": origin,
        "seg_id": seg,
        "is_target": is_target,
        "input_mask": np.isin(masked, [MASK_ID, PAD_ID]).astype(np.float32),
        "pad_mask": (masked == PAD_ID).astype(np.float32),
        "target_mapping": mapping,
        "target": target.astype(np.int32),
        "target_mask": np.ones((batch_size, num_predict), np.float32),
    }
    return {k: tf.constant(v) for k, v in features.items()}


def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def write_text(path, num_docs=40, seed=0):
    """A small corpus in the pretraining text format, for when ../shared/data is absent."""
    rng = np.random.default_rng(seed)
    subjects = ["the cat", "a dog", "the old man", "my sister", "the teacher", "a bird"]
    verbs = ["sees", "likes", "finds", "paints", "follows", "hears"]
    objects = ["the river", "a red ball", "the small house", "an apple", "the garden", "music"]
    docs = []
    for _ in range(num_docs):
        lines = [
            f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} today."
            for _ in range(rng.integers(3, 9))
        ]
        docs.append("\n".join(lines))
    path.write_text("\n\n".join(docs) + "\n")


def build_vocab(text_path, vocab_path, num_words=150):
    """Word-piece vocabulary: specials, every character alone and as `##` piece, frequent words."""
    basic = tokenization.BasicTokenizer(uncased=True)
    words = collections.Counter(basic.tokenize(text_path.read_text(encoding="utf-8")))
    chars = sorted({c for w in words for c in w})
    frequent = [w for w, _ in words.most_common() if len(w) > 1][:num_words]
    tokens = SPECIALS + chars + [f"##{c}" for c in chars] + frequent
    vocab_path.write_text("\n".join(tokens) + "\n")
    return len(tokens)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(vocab path, vocab size, record dir) with train and dev records of seq_len 32."""
    root = tmp_path_factory.mktemp("pretrain_data")
    wiki = SHARED_DATA / "pretrain" / "wiki_00"
    if wiki.is_file():
        text_path = wiki
    else:
        text_path = root / "text.txt"
        write_text(text_path)
    vocab_path = root / "vocab.txt"
    vocab_size = build_vocab(text_path, vocab_path)
    tokenizer = tokenization.get_tokenizer("word_piece", str(vocab_path), uncased=True)
    record_dir = root / "records"
    for split in ("train", "dev"):
        _, count = create_pretrain_data.create_pretrain_data(
            tokenizer, str(text_path), str(record_dir), seq_len=SEQ_LEN, split=split
        )
        assert count > 50
    return vocab_path, vocab_size, record_dir


# --------------------------------------------------------------------------------------- unit tests
@pytest.mark.parametrize(
    "d_model,n_head,d_inner,expected",
    [(768, 12, 3072, (192, 3, 768)), (1024, 16, 4096, (256, 4, 1024))],
)
def test_generator_config_matches_spec(d_model, n_head, d_inner, expected):
    cfg = tiny_config(
        block_size="6_6_6",
        d_model=d_model,
        d_embed=d_model,
        n_head=n_head,
        d_head=64,
        d_inner=d_inner,
    )
    gen = pretrain.generator_config(cfg, 0.25)
    assert (gen.d_model, gen.n_head, gen.d_inner) == expected
    unchanged = ("d_head", "d_embed", "block_size", "decoder_size", "vocab_size", "ff_activation")
    assert all(getattr(gen, k) == getattr(cfg, k) for k in unchanged)


def test_generator_config_rejects_empty_generator():
    with pytest.raises(ValueError, match="width_shrink.*n_head=0"):
        pretrain.generator_config(tiny_config(n_head=2), 0.25)
    with pytest.raises(ValueError, match="width_shrink"):
        pretrain.generator_config(tiny_config(), 0.0)


@pytest.mark.parametrize(
    "value,expected", [("MLM", "mlm"), ("ELECTRA", "electra"), ("Electra", "electra")]
)
def test_loss_type_any_case(value, expected):
    assert pretrain.parse_loss_type(value) == expected


def test_loss_type_unknown():
    with pytest.raises(ValueError, match="--loss_type='bert'.*mlm or electra"):
        pretrain.parse_loss_type("bert")


def test_gumbel_sample_follows_softmax():
    tf.random.set_seed(1)
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    logits = tf.constant(np.log(np.tile(probs, (40000, 1))) + 3.0, tf.float32)
    samples = pretrain.gumbel_sample(logits).numpy()
    freq = np.bincount(samples, minlength=4) / samples.size
    # 4 standard errors of a binomial proportion at n = 40000.
    np.testing.assert_allclose(freq, probs, atol=4 * np.sqrt(0.25 / 40000))


def test_scatter_targets():
    mapping = np.zeros((1, 3, 6), np.float32)
    mapping[0, 0, 1] = mapping[0, 1, 4] = 1.0  # the third slot is unused
    is_target = np.array([[False, True, False, False, True, False]])
    out = pretrain.scatter_targets(
        tf.constant([[7, 9, 5]]),
        tf.constant(mapping),
        tf.constant(is_target),
        tf.constant([[1, 2, 3, 4, 5, 6]]),
    )
    np.testing.assert_array_equal(out.numpy(), [[1, 7, 3, 4, 9, 6]])


def test_mlm_forward_loss_and_accuracy():
    cfg = tiny_config()
    model = modeling.FunnelTFM(cfg)
    features = make_features(3, 16, 4, cfg.vocab_size)
    out = pretrain.mlm_forward(model, features, is_training=False)
    logits = out["logits"].numpy()
    target = features["target"].numpy()
    nll = -np.take_along_axis(np_log_softmax(logits.astype(np.float64)), target[..., None], -1)[
        ..., 0
    ]
    np.testing.assert_allclose(out["loss"].numpy(), nll.mean(), rtol=1e-5)
    np.testing.assert_allclose(out["mlm_accuracy"].numpy(), (logits.argmax(-1) == target).mean())
    expected = expected_variables("model", 32, 4, 8, 48, 32, cfg.vocab_size, 3, 1)
    expected.update(mlm_head_variables("model", 32, 32, cfg.vocab_size))
    assert variable_shapes(model) == expected


def _electra(cfg, shrink=0.5):
    model = modeling.FunnelTFM(cfg, "model")
    generator = modeling.FunnelTFM(pretrain.generator_config(cfg, shrink), "generator")
    return model, generator


@pytest.mark.parametrize("d_embed", [32, 24])
def test_electra_variables_match_spec(d_embed):
    cfg = tiny_config(d_embed=d_embed)
    model, generator = _electra(cfg)
    pretrain.electra_forward(model, generator, make_features(2, 16, 3, cfg.vocab_size), True, 50.0)
    expected = electra_variables(32, 4, 8, 48, d_embed, cfg.vocab_size, 3, 1, 0.5)
    assert variable_shapes(model, generator) == expected
    # The generator is narrower than the embedding, so it always projects it.
    assert expected["generator/encoder/input_projection/kernel"] == [d_embed, 16]


def test_electra_forward_plumbing():
    """A generator forced to always sample one token id: every downstream value is predictable."""
    tf.random.set_seed(0)
    cfg = tiny_config()
    model, generator = _electra(cfg)
    features = make_features(3, 16, 4, cfg.vocab_size, seed=3)
    pretrain.electra_forward(model, generator, features, False, 50.0)
    forced = 7
    bias = np.zeros(cfg.vocab_size, np.float32)
    bias[forced] = 100.0
    generator.named_variables()["generator/lm_loss/bias"].assign(bias)

    out = pretrain.electra_forward(model, generator, features, False, 50.0)
    origin = features["origin_input"].numpy()
    is_target = features["is_target"].numpy()
    pad = features["pad_mask"].numpy()
    expected_sample = np.where(is_target, forced, origin)
    np.testing.assert_array_equal(out["sample_input"].numpy(), expected_sample)
    binary = (expected_sample == origin).astype(np.int32)
    np.testing.assert_array_equal(out["binary_target"].numpy(), binary)
    assert out["real_ratio"].numpy() == pytest.approx((origin[is_target] == forced).mean())

    target = features["target"].numpy()
    gen_logits = out["gen_logits"].numpy().astype(np.float64)
    nll = -np.take_along_axis(np_log_softmax(gen_logits), target[..., None], -1)[..., 0]
    assert out["gen_loss"].numpy() == pytest.approx(nll.mean(), rel=1e-5)
    assert out["gen_accuracy"].numpy() == pytest.approx((target == forced).mean())

    # The discriminator reads the sampled input (not the masked one) and masks only padding.
    embed, _ = model.input_embedding(tf.constant(expected_sample), False, features["seg_id"])
    hidden, _, _ = model.encode(embed, False, features["seg_id"], features["pad_mask"], True)
    disc_logits = model.binary_logits(hidden).numpy()
    np.testing.assert_allclose(out["disc_logits"].numpy(), disc_logits, rtol=1e-5, atol=1e-6)
    z = disc_logits.astype(np.float64)
    per_token = np.maximum(z, 0) - z * binary + np.log1p(np.exp(-np.abs(z)))
    disc_loss = (per_token * (1 - pad)).sum() / (1 - pad).sum()
    assert out["disc_loss"].numpy() == pytest.approx(disc_loss, rel=1e-5)
    disc_acc = (((z > 0).astype(np.int32) == binary) * (1 - pad)).sum() / (1 - pad).sum()
    assert out["disc_accuracy"].numpy() == pytest.approx(disc_acc)
    assert out["loss"].numpy() == pytest.approx(nll.mean() + 50.0 * disc_loss, rel=1e-5)


def test_electra_gradients_shared_embedding_and_no_sample_gradient():
    cfg = tiny_config()
    model, generator = _electra(cfg)
    features = make_features(2, 16, 3, cfg.vocab_size)
    pretrain.electra_forward(model, generator, features, True, 50.0)
    gen_vars = generator.named_variables()
    table = model.named_variables()["model/input/word_embedding/lookup_table"]
    with tf.GradientTape(persistent=True) as tape:
        out = pretrain.electra_forward(model, generator, features, True, 50.0)
    # The generator trains the shared embedding...
    gen_grad = tape.gradient(out["gen_loss"], table)
    assert gen_grad is not None and np.abs(tf.convert_to_tensor(gen_grad).numpy()).sum() > 0
    # ...and the discriminator loss does not reach the generator through the samples.
    disc_grads = tape.gradient(out["disc_loss"], list(gen_vars.values()))
    assert all(g is None for g in disc_grads)
    # Every variable of both networks gets a gradient from the total loss.
    all_vars = {**model.named_variables(), **gen_vars}
    grads = tape.gradient(out["loss"], list(all_vars.values()))
    assert [n for n, g in zip(all_vars, grads, strict=True) if g is None] == []


# ------------------------------------------------------------------------------------ end-to-end runs
TINY_MODEL_FLAGS = [
    "--block_size=1_1_1",
    "--decoder_size=1",
    "--d_model=32",
    "--d_embed=32",
    "--n_head=4",
    "--d_head=8",
    "--d_inner=64",
    "--width_shrink=0.5",
]


def run_script(script, *args):
    """Runs tensorflow/<script> on the CPU; returns the CompletedProcess (stdout and stderr together in .stdout)."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, str(REPO / "tensorflow" / script), *map(str, args)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )


def pretrain_args(corpus, model_dir, *extra):
    vocab_path, _, record_dir = corpus
    return [
        f"--record_dir={record_dir}",
        f"--tokenizer_path={vocab_path}",
        f"--model_dir={model_dir}",
        f"--seq_len={SEQ_LEN}",
        "--num_predict=5",
        "--train_batch_size=16",
        "--learning_rate=1e-3",
        "--warmup_steps=20",
        "--iterations=50",
        "--log_freq=20",
        *TINY_MODEL_FLAGS,
        *extra,
    ]


def check_ok(result):
    assert result.returncode == 0, result.stdout[-3000:]
    return result


@pytest.fixture(scope="module")
def electra_run(corpus, tmp_path_factory):
    """160 ELECTRA steps through the train.py alias (loss type spelled as in the seed), then evaluation."""
    model_dir = tmp_path_factory.mktemp("electra")
    args = pretrain_args(
        corpus,
        model_dir,
        "--loss_type=ELECTRA",
        "--train_steps=160",
        "--save_steps=80",
        "--do_eval",
        "--start_eval_steps=0",
        "--eval_batch_size=16",
    )
    check_ok(run_script("train.py", *args))
    return model_dir


@pytest.fixture(scope="module")
def mlm_run(corpus, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("mlm")
    args = pretrain_args(corpus, model_dir, "--loss_type=mlm", "--train_steps=160")
    check_ok(run_script("pretrain.py", *args))
    return model_dir


def tiny_run_config(vocab_size):
    return tiny_config(vocab_size=vocab_size, d_inner=64, dropout=0.1, dropatt=0.1)


def full_checkpoint_names(trainable):
    """A full checkpoint: the variables, their Adam slots, and global_step."""
    names = dict(trainable)
    for name, shape in trainable.items():
        names[f"{name}/adam_m"] = shape
        names[f"{name}/adam_v"] = shape
    names["global_step"] = []
    return names


@pytest.mark.slow
def test_electra_run_losses_fall_and_are_logged(electra_run):
    scalars = model_test_utils.summary_scalars(electra_run)
    for tag in ("loss", "gen_loss", "disc_loss", "real_ratio", "gen_accuracy", "disc_accuracy"):
        assert [step for step, _ in scalars[tag]] == list(range(20, 161, 20)), tag
    first, last = scalars["loss"][0][1], scalars["loss"][-1][1]
    assert last < 0.8 * first
    assert scalars["gen_loss"][-1][1] < scalars["gen_loss"][0][1] - 0.5
    assert scalars["disc_loss"][-1][1] < scalars["disc_loss"][0][1]
    assert all(0.0 <= v <= 1.0 for _, v in scalars["real_ratio"])


@pytest.mark.slow
def test_electra_checkpoint_is_full_with_spec_names(electra_run, corpus):
    _, vocab_size, _ = corpus
    path = str(electra_run / "model.ckpt-160")
    trainable = electra_variables(32, 4, 8, 64, 32, vocab_size, 3, 1, 0.5)
    got = {name: shape for name, shape in tf.train.list_variables(path)}
    assert got == full_checkpoint_names(trainable)
    assert tf.train.load_checkpoint(path).get_tensor("global_step") == 160
    config = modeling.ModelConfig.init_from_json(str(electra_run / "net_config.json"))
    assert config == tiny_run_config(vocab_size)


@pytest.mark.slow
def test_electra_eval_on_held_out_split(electra_run):
    results = json.loads((electra_run / "eval_dev.json").read_text())
    assert sorted(results, key=int) == ["80", "160"]
    for metrics in results.values():
        assert set(metrics) == {"loss", *pretrain.MONITORS["electra"]}
        assert all(np.isfinite(v) for v in metrics.values())
    first_train_loss = model_test_utils.summary_scalars(electra_run)["loss"][0][1]
    assert results["160"]["loss"] < 0.8 * first_train_loss
    assert [s for s, _ in model_test_utils.summary_scalars(electra_run / "eval_dev")["loss"]] == [
        80,
        160,
    ]


@pytest.mark.slow
def test_resume_continues_from_saved_step(electra_run, corpus, tmp_path):
    model_dir = tmp_path / "resumed"
    shutil.copytree(electra_run, model_dir)
    before = tf.train.load_checkpoint(str(model_dir / "model.ckpt-160"))
    args = pretrain_args(corpus, model_dir, "--loss_type=electra", "--train_steps=180")
    check_ok(run_script("pretrain.py", *args))
    after = tf.train.load_checkpoint(str(model_dir / "model.ckpt-180"))
    assert after.get_tensor("global_step") == 180
    # The resumed run logs only steps after 160, and starts from the trained loss, not from scratch.
    new_steps = [s for s, _ in model_test_utils.summary_scalars(model_dir)["loss"] if s > 160]
    assert new_steps == [180]
    losses = dict(model_test_utils.summary_scalars(model_dir)["loss"])
    assert losses[180] < 0.85 * losses[20]
    # Adam's second moments kept accumulating from the saved ones rather than restarting from zero.
    name = "model/encoder/layer_0/ff/layer_1/kernel/adam_v"
    assert np.abs(after.get_tensor(name) - before.get_tensor(name)).max() > 0
    assert np.abs(after.get_tensor(name)).sum() > 0.5 * np.abs(before.get_tensor(name)).sum()


@pytest.mark.slow
def test_mlm_run(mlm_run, corpus):
    _, vocab_size, _ = corpus
    scalars = model_test_utils.summary_scalars(mlm_run)
    assert scalars["loss"][-1][1] < scalars["loss"][0][1] - 0.5
    assert scalars["mlm_accuracy"][-1][1] > scalars["mlm_accuracy"][0][1]
    trainable = expected_variables("model", 32, 4, 8, 64, 32, vocab_size, 3, 1)
    trainable.update(mlm_head_variables("model", 32, 32, vocab_size))
    got = dict(tf.train.list_variables(str(mlm_run / "model.ckpt-160")))
    assert got == full_checkpoint_names(trainable)


@pytest.mark.slow
def test_core_export_initializes_finetuning(electra_run, corpus, tmp_path):
    _, vocab_size, _ = corpus
    core = tmp_path / "core" / "model.ckpt"
    check_ok(run_script("modify_ckpt.py", f"--src_ckpt={electra_run}", f"--tgt_ckpt={core}"))
    core_names = dict(tf.train.list_variables(str(core)))
    expected = expected_variables("model", 32, 4, 8, 64, 32, vocab_size, 3, 1)
    expected.update(binary_head_variables(32))
    assert core_names == expected

    # A classifier starts from the pretrained encoder; only its new heads keep their initial values.
    config = modeling.ModelConfig.init_from_json(str(electra_run / "net_config.json"))
    classifier = modeling.FunnelTFM(config)
    rng = np.random.default_rng(0)
    ids = rng.integers(len(SPECIALS), vocab_size, (16, SEQ_LEN)).astype(np.int32)
    ids[:, 0] = CLS_ID
    labels = (ids[:, 1:] < vocab_size // 2).sum(-1) > (SEQ_LEN - 1) // 2
    ids, labels = tf.constant(ids), tf.constant(labels.astype(np.int32))

    def loss_fn():
        per_example, _ = classifier.get_classification_loss(labels, ids, 2, True, "toy")
        return tf.reduce_mean(per_example)

    loss_fn()
    report = model_utils.init_from_checkpoint(classifier, str(core))
    assert sorted(report.missing) == [
        "model/sequnece_summary/summary/bias",
        "model/sequnece_summary/summary/kernel",
        "model/toy/logit/bias",
        "model/toy/logit/kernel",
    ]
    # The discriminator head and the decoder (a classifier reads the pooled encoder output) stay unused.
    decoder = expected_variables("model", 32, 4, 8, 64, 32, vocab_size, 3, 1)
    decoder = [n for n in decoder if n.startswith("model/decoder/")]
    assert sorted(report.unused) == sorted([*binary_head_variables(32), *decoder])
    reader = tf.train.load_checkpoint(str(electra_run / "model.ckpt-160"))
    name = "model/encoder/layer_2/rel_attn/q/kernel"
    np.testing.assert_array_equal(
        classifier.named_variables()[name].numpy(), reader.get_tensor(name)
    )
    optimizer = optimization.AdamWeightDecay()
    variables = list(classifier.named_variables().values())
    losses = []
    for step in range(30):
        with tf.GradientTape() as tape:
            loss = loss_fn()
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True), 1e-3, step)
        losses.append(float(loss))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra,message",
    [
        (["--loss_type=bert"], "--loss_type='bert' must be mlm or electra"),
        (["--num_predict=29"], "--num_predict=29 must be in (0, seq_len - 3 = 29)"),
        (["--seq_len=30"], "seq_len=30 must be a multiple of 4"),
        (["--record_dir={empty}"], "has no meta file"),
    ],
)
def test_bad_input_one_line_error(corpus, tmp_path, extra, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = pretrain_args(corpus, tmp_path / "model", "--train_steps=10")
    args += [e.format(empty=empty) for e in extra]
    result = run_script("pretrain.py", *args)
    assert result.returncode != 0
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("pretrain.py: error: ") and message in last, result.stdout[-2000:]
    assert "Traceback" not in result.stdout


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_reduced_precision_matches_float32(precision):
    cfg = tiny_config()
    model, generator = _electra(cfg)
    features = make_features(2, 16, 3, cfg.vocab_size)
    ref = pretrain.electra_forward(model, generator, features, False, 50.0)
    low = pretrain.electra_forward(model, generator, features, False, 50.0, precision=precision)
    assert low["gen_logits"].dtype == tf.float32 and low["disc_logits"].dtype == tf.float32
    assert low["gen_loss"].numpy() == pytest.approx(ref["gen_loss"].numpy(), rel=2e-2)
    assert np.isfinite(low["disc_loss"].numpy())
    ref_mlm = pretrain.mlm_forward(model, features, False)
    low_mlm = pretrain.mlm_forward(model, features, False, precision=precision)
    assert low_mlm["loss"].numpy() == pytest.approx(ref_mlm["loss"].numpy(), rel=2e-2)
