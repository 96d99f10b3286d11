"""export_hf.py: our checkpoints as Hugging Face Funnel model directories.

The expected state-dict names and shapes are written out from the module structure of Hugging Face's
`transformers/models/funnel/modeling_funnel.py`, not from the exporter's mapping. The tests at the end load
the export with PyTorch and `transformers` and compare outputs; they are skipped without them
(requirements-hf.txt installs them).
"""

import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import safetensors
import safetensors.numpy
import sentencepiece as spm
import tensorflow as tf

import export_hf_utils
import model_utils
import modeling
import tokenization
from model_test_utils import GOLDEN_DIR, GOLDEN_MODELS, random_batch, tiny_config
from test_tokenization import train_spm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECIALS = ["<pad>", "<cls>", "<sep>", "<unk>", "<mask>"]
SEQ_LEN = 16
# The tiny model: block_size "2_1x2_1x2", decoder "1", d_model 32, 2 heads of 8 (not square: 16 != 32).
BLOCK_SIZE = "2_1x2_1x2"
D, N, H, F, V = 32, 2, 8, 48, 50


# --------------------------------------------------------------------- Hugging Face's module structure
def hf_layer(prefix):
    """`FunnelLayer`: `attention` (FunnelRelMultiheadAttention) and `ffn` (FunnelPositionwiseFFN)."""
    attention = {
        "q_head.weight": [N * H, D],  # nn.Linear(d_model, n_head * d_head, bias=False)
        "k_head.weight": [N * H, D],
        "k_head.bias": [N * H],
        "v_head.weight": [N * H, D],
        "v_head.bias": [N * H],
        "r_w_bias": [N, H],  # nn.Parameter([n_head, d_head])
        "r_r_bias": [N, H],
        "r_kernel": [D, N, H],  # nn.Parameter([d_model, n_head, d_head])
        "r_s_bias": [N, H],
        "seg_embed": [2, N, H],
        "post_proj.weight": [D, N * H],  # nn.Linear(n_head * d_head, d_model)
        "post_proj.bias": [D],
        "layer_norm.weight": [D],
        "layer_norm.bias": [D],
    }
    ffn = {
        "linear_1.weight": [F, D],
        "linear_1.bias": [F],
        "linear_2.weight": [D, F],
        "linear_2.bias": [D],
        "layer_norm.weight": [D],
        "layer_norm.bias": [D],
    }
    names = {f"{prefix}.attention.{k}": v for k, v in attention.items()}
    names.update({f"{prefix}.ffn.{k}": v for k, v in ffn.items()})
    return names


def hf_funnel(prefix="", block_sizes=(2, 1, 1), num_decoder_layers=1):
    """`FunnelModel` (`num_decoder_layers` > 0) or `FunnelBaseModel`: embeddings, encoder.blocks[b][l]
    (one module per parameter layer; repeats reuse it), decoder.layers[l]."""
    names = {
        f"{prefix}embeddings.word_embeddings.weight": [V, D],
        f"{prefix}embeddings.layer_norm.weight": [D],
        f"{prefix}embeddings.layer_norm.bias": [D],
    }
    for block, size in enumerate(block_sizes):
        for layer in range(size):
            names.update(hf_layer(f"{prefix}encoder.blocks.{block}.{layer}"))
    for layer in range(num_decoder_layers):
        names.update(hf_layer(f"{prefix}decoder.layers.{layer}"))
    return names


def hf_classification_head(n_labels):
    """`FunnelClassificationHead` as `classifier`: linear_hidden (d_model, d_model), linear_out."""
    return {
        "classifier.linear_hidden.weight": [D, D],
        "classifier.linear_hidden.bias": [D],
        "classifier.linear_out.weight": [n_labels, D],
        "classifier.linear_out.bias": [n_labels],
    }


HF_LAYOUTS = {
    "FunnelModel": hf_funnel(),
    "FunnelBaseModel": hf_funnel(num_decoder_layers=0),
    "FunnelForSequenceClassification": {
        **hf_funnel("funnel.", num_decoder_layers=0),
        **hf_classification_head(2),
    },
    "FunnelForMultipleChoice": {
        **hf_funnel("funnel.", num_decoder_layers=0),
        **hf_classification_head(1),
    },
    "FunnelForPreTraining": {
        **hf_funnel("funnel."),
        "discriminator_predictions.dense.weight": [D, D],
        "discriminator_predictions.dense.bias": [D],
        "discriminator_predictions.dense_prediction.weight": [1, D],
        "discriminator_predictions.dense_prediction.bias": [1],
    },
}


# ------------------------------------------------------------------------------------------- fixtures
def write_vocab(path, size):
    path.write_text("\n".join(SPECIALS + [f"w{i}" for i in range(size - len(SPECIALS))]) + "\n")
    return path


HEADS = {
    "mrpc": ("model/mrpc/", "model/sequnece_summary/"),
    "sts-b": ("model/sts-b/", "model/sequnece_summary/"),
    "race": ("model/race/", "model/sequnece_summary/"),
    "discriminator": ("model/binary_proj/", "model/binary_loss/"),
    "mlm": ("model/lm_proj/", "model/lm_loss/"),
}


class Trained:
    """A tiny model with every head, its variables set to random values; writes model directories."""

    def __init__(self, rel_attn_type, root):
        self.config = tiny_config(block_size=BLOCK_SIZE, rel_attn_type=rel_attn_type)
        self.model = modeling.FunnelTFM(self.config)
        self.root = root
        self.inputs = random_batch(SEQ_LEN, pad_last=3)
        ids, seg, mask = self.inputs
        model = self.model
        full, _, _ = model.extract_hiddens(ids, False, seg, mask, use_decoder=True)
        summary, _ = model.get_pooled_output(ids, False, seg, mask)
        model.classification_loss(summary, tf.constant([0, 1]), 2, False, "mrpc")
        model.regression_loss(summary, tf.constant([0.5, 1.0]), False, "sts-b")
        race_inputs = [tf.concat([x, x], axis=1) for x in self.inputs]
        model.get_race_loss(
            tf.constant([0, 1]), race_inputs[0], False, *race_inputs[1:], n_choice=2
        )
        model.binary_logits(full)
        model.lm_logits(full, model.named_variables()["model/input/word_embedding/lookup_table"])
        rng = np.random.default_rng(0)
        # Random biases and layer norms too, so a misplaced one shows.
        for var in model.named_variables().values():
            var.assign(rng.normal(0.0, 0.3, var.shape).astype(np.float32))

    def variables(self, heads=(), decoder=True):
        """The model's variables without the heads not in `heads` (and without the decoder)."""
        dropped = tuple(
            p for name, prefixes in HEADS.items() if name not in heads for p in prefixes
        )
        kept = tuple(p for name in heads for p in HEADS[name])
        if not decoder:
            dropped += ("model/decoder/",)
        return [
            v
            for n, v in self.model.named_variables().items()
            if n.startswith(kept) or not n.startswith(dropped)
        ]

    def model_dir(self, name, heads=(), decoder=True, extra=(), config=None):
        """A directory with net_config.json, vocab.txt and the checkpoint `model.ckpt-1`, written once."""
        path = self.root / name
        if path.exists():
            return path
        path.mkdir()
        (config or self.config).to_json(str(path / "net_config.json"))
        write_vocab(path / "vocab.txt", self.config.vocab_size)
        objects = self.variables(heads, decoder) + list(extra)
        model_utils.save_checkpoint(objects, str(path / "model.ckpt-1"))
        return path

    def value(self, name):
        return self.model.named_variables()[name].numpy()


@pytest.fixture(scope="module", params=["rel_shift", "factorized"])
def trained(request, tmp_path_factory):
    return Trained(request.param, tmp_path_factory.mktemp(request.param))


def export(model_dir, output_dir, **kwargs):
    """Exports `model_dir` (see `Trained.model_dir`); returns (plan, config.json, tensors, metadata)."""
    config = modeling.ModelConfig.init_from_json(str(model_dir / "net_config.json"))
    tokenizer = tokenization.get_tokenizer("word_piece", str(model_dir / "vocab.txt"))
    plan, _ = export_hf_utils.export(
        str(model_dir / "model.ckpt-1"), config, tokenizer, str(output_dir), **kwargs
    )
    with open(output_dir / "config.json") as f:
        hf_config = json.load(f)
    path = str(output_dir / "model.safetensors")
    with safetensors.safe_open(path, "np") as f:
        metadata = f.metadata()
    return plan, hf_config, safetensors.numpy.load_file(path), metadata


def shapes(tensors):
    return {name: list(value.shape) for name, value in tensors.items()}


# --------------------------------------------------------------------------- layout and values (CI)
def test_core_checkpoint_becomes_funnel_model(trained, tmp_path):
    plan, config, tensors, metadata = export(trained.model_dir("core"), tmp_path)
    assert plan.architecture == "FunnelModel" and plan.use_decoder
    assert shapes(tensors) == HF_LAYOUTS["FunnelModel"]
    assert metadata == {"format": "pt"}
    assert all(t.dtype == np.float32 for t in tensors.values())
    attention_type = {"rel_shift": "relative_shift", "factorized": "factorized"}
    expected = {
        "architectures": ["FunnelModel"],
        "model_type": "funnel",
        "vocab_size": V,
        "block_sizes": [2, 1, 1],
        "block_repeats": [1, 2, 2],
        "num_decoder_layers": 1,
        "d_model": D,
        "n_head": N,
        "d_head": H,
        "d_inner": F,
        "hidden_act": "gelu_new",
        "hidden_dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
        "initializer_range": 0.1,
        "initializer_std": 0.02,
        "layer_norm_eps": 1e-8,
        "pooling_type": "mean",
        "attention_type": attention_type[trained.config.rel_attn_type],
        "separate_cls": True,
        "truncate_seq": True,
        "pool_q_only": True,
        "max_position_embeddings": 512,
        "type_vocab_size": 3,
        "pad_token_id": 0,
        "torch_dtype": "float32",
    }
    assert config == expected


def test_tensors_are_the_checkpoint_tensors_rearranged(trained, tmp_path):
    _, _, t, _ = export(trained.model_dir("core"), tmp_path)
    # encoder.blocks.1.0 is parameter layer 2 (block 0 has two); the decoder continues at layer 4.
    layer, hf = "model/encoder/layer_2/rel_attn", "encoder.blocks.1.0.attention"
    q = trained.value(f"{layer}/q/kernel")  # [D, N, H]
    for n in range(N):
        for h in range(H):
            np.testing.assert_array_equal(t[f"{hf}.q_head.weight"][n * H + h], q[:, n, h])
    o = trained.value(f"{layer}/o/kernel")  # [N, H, D]
    np.testing.assert_array_equal(t[f"{hf}.post_proj.weight"][:, 1 * H + 3], o[1, 3])
    np.testing.assert_array_equal(t[f"{hf}.v_head.bias"][H:], trained.value(f"{layer}/v/bias")[1])
    np.testing.assert_array_equal(t[f"{hf}.r_kernel"], trained.value(f"{layer}/r/kernel"))
    np.testing.assert_array_equal(t[f"{hf}.seg_embed"], trained.value(f"{layer}/seg_embed"))
    np.testing.assert_array_equal(
        t["decoder.layers.0.ffn.linear_1.weight"],
        trained.value("model/decoder/layer_4/ff/layer_1/kernel").T,
    )
    np.testing.assert_array_equal(
        t["decoder.layers.0.attention.layer_norm.bias"],
        trained.value("model/decoder/layer_4/rel_attn/layer_norm/beta"),
    )
    np.testing.assert_array_equal(
        t["embeddings.word_embeddings.weight"],
        trained.value("model/input/word_embedding/lookup_table"),
    )


def test_classifier_becomes_sequence_classification(trained, tmp_path):
    model_dir = trained.model_dir("mrpc", heads=("mrpc",))
    plan, config, t, _ = export(model_dir, tmp_path, labels=("no", "yes"))
    assert plan.architecture == "FunnelForSequenceClassification" and not plan.use_decoder
    assert shapes(t) == HF_LAYOUTS["FunnelForSequenceClassification"]
    assert config["architectures"] == ["FunnelForSequenceClassification"]
    assert config["num_labels"] == 2 and "problem_type" not in config
    assert config["id2label"] == {"0": "no", "1": "yes"}
    assert config["label2id"] == {"no": 0, "yes": 1}
    np.testing.assert_array_equal(
        t["classifier.linear_hidden.weight"],
        trained.value("model/sequnece_summary/summary/kernel").T,
    )
    np.testing.assert_array_equal(
        t["classifier.linear_out.weight"], trained.value("model/mrpc/logit/kernel").T
    )
    np.testing.assert_array_equal(
        t["classifier.linear_out.bias"], trained.value("model/mrpc/logit/bias")
    )
    # The classifier never ran the decoder; a checkpoint that has one leaves it out.
    assert any(n.startswith("model/decoder/") for n in plan.left_out)


def test_regression_race_and_discriminator_heads(trained, tmp_path):
    plan, config, t, _ = export(
        trained.model_dir("stsb", heads=("sts-b",)), tmp_path / "stsb", regression=True
    )
    assert plan.cls_scope == "sts-b" and config["num_labels"] == 1
    assert config["problem_type"] == "regression"
    assert shapes(t) == {
        **HF_LAYOUTS["FunnelForSequenceClassification"],
        **hf_classification_head(1),
    }

    plan, config, t, _ = export(trained.model_dir("race", heads=("race",)), tmp_path / "race")
    assert config["architectures"] == ["FunnelForMultipleChoice"] and "num_labels" not in config
    assert shapes(t) == HF_LAYOUTS["FunnelForMultipleChoice"]
    np.testing.assert_array_equal(
        t["classifier.linear_out.weight"], trained.value("model/race/logits/kernel").T
    )

    plan, config, t, _ = export(trained.model_dir("disc", heads=("discriminator",)), tmp_path / "d")
    assert config["architectures"] == ["FunnelForPreTraining"]
    assert shapes(t) == HF_LAYOUTS["FunnelForPreTraining"]
    # Ours is positive for an original token, Hugging Face's for a replaced one.
    np.testing.assert_array_equal(
        t["discriminator_predictions.dense_prediction.weight"],
        -trained.value("model/binary_loss/weight")[None],
    )
    np.testing.assert_array_equal(
        t["discriminator_predictions.dense_prediction.bias"],
        -trained.value("model/binary_loss/bias"),
    )


def test_full_pretraining_checkpoint_leaves_training_state_out(trained, tmp_path):
    extra = [
        tf.Variable(7, dtype=tf.int64, name="global_step"),
        tf.Variable(tf.zeros([D, F]), name="model/encoder/layer_0/ff/layer_1/kernel/adam_m"),
        tf.Variable(tf.zeros([D, F]), name="model/encoder/layer_0/ff/layer_1/kernel/adam_v"),
        tf.Variable(tf.zeros([8, 8]), name="generator/encoder/layer_0/ff/layer_1/kernel"),
        # A float16 run's dynamic loss scale.
        tf.Variable(2.0**15, name="loss_scale/current_loss_scale"),
        tf.Variable(3, dtype=tf.int64, name="loss_scale/good_steps"),
    ]
    model_dir = trained.model_dir("full", heads=("mlm",), extra=extra)
    with pytest.raises(ValueError, match=r"MLM head .*--head=none"):
        export(model_dir, tmp_path / "auto")
    plan, _, t, _ = export(model_dir, tmp_path / "none", head="none")
    assert plan.architecture == "FunnelModel"
    assert shapes(t) == HF_LAYOUTS["FunnelModel"]
    assert {
        "global_step",
        "generator/encoder/layer_0/ff/layer_1/kernel",
        "loss_scale/current_loss_scale",
        "loss_scale/good_steps",
    } <= set(plan.left_out)
    assert "model/lm_proj/dense/kernel" in plan.left_out

    plan, _, t, _ = export(model_dir, tmp_path / "base", head="none", base_model=True)
    assert plan.architecture == "FunnelBaseModel"
    assert shapes(t) == HF_LAYOUTS["FunnelBaseModel"]


def test_several_heads_need_a_choice(trained, tmp_path):
    model_dir = trained.model_dir("two", heads=("mrpc", "sts-b"))
    with pytest.raises(ValueError, match=r"several heads \(mrpc, sts-b\)"):
        export(model_dir, tmp_path / "a")
    with pytest.raises(ValueError, match="several classification heads"):
        export(model_dir, tmp_path / "b", head="classification")
    with pytest.raises(ValueError, match="no classification head model/cola/logit"):
        export(model_dir, tmp_path / "c", cls_scope="cola")
    plan, _, _, _ = export(model_dir, tmp_path / "d", cls_scope="sts-b")
    assert plan.n_labels == 1 and "model/mrpc/logit/kernel" in plan.left_out
    with pytest.raises(ValueError, match="has 2 outputs but the task has 3 labels"):
        export(model_dir, tmp_path / "e", cls_scope="mrpc", labels=("a", "b", "c"))


def test_unknown_and_missing_variables_are_refused(trained, tmp_path):
    extra = [tf.Variable(tf.zeros([3]), name="model/encoder/extra/bias")]
    with pytest.raises(ValueError, match="no Hugging Face counterpart, e.g. model/encoder/extra"):
        export(trained.model_dir("extra", extra=extra), tmp_path / "a")
    deeper = tiny_config(block_size="3_1x2_1x2", rel_attn_type=trained.config.rel_attn_type)
    with pytest.raises(
        ValueError, match=r"lacks 40 variable.*\(does net_config.json describe it\?\)"
    ):
        export(trained.model_dir("deeper", config=deeper), tmp_path / "b")


# ------------------------------------------------------------------------------------ refusals (CI)
def _shapes(config, *heads):
    """A checkpoint's name -> shape with an encoder layer, a decoder layer and `heads`' variables."""
    names = {"model/encoder/layer_0/ff/layer_1/kernel": [D, F]}
    if config.decoder_param_size:
        names[f"model/decoder/layer_{sum(config.block_param_size)}/ff/layer_1/kernel"] = [D, F]
    names.update({f"{head}/kernel": [D, 1] for head in heads})
    return names


@pytest.mark.parametrize(
    "overrides, heads, kwargs, message",
    [
        ({"separate_cls": False}, (), {}, "separate_cls=false: Hugging Face's Funnel masks"),
        ({"rel_attn_type": "null"}, (), {}, "only relative attention"),
        ({"d_embed": 24}, (), {}, "d_embed=24 differs from d_model=32"),
        ({"decoder_size": "1x2"}, (), {}, "decoder_size='1x2' repeats its layers"),
        ({"block_size": "1x2_1_1"}, (), {}, "repeats the layers of block 0"),
        ({"decoder_size": "0"}, (), {}, "has a decoder but its config says decoder_size='0'"),
        (
            {"ff_activation": "relu"},
            ("model/binary_proj/dense",),
            {},
            "ff_activation='relu': Hugging Face's discriminator head uses hidden_act",
        ),
        ({}, ("model/binary_proj/dense",), {"base_model": True}, "FunnelForPreTraining needs"),
        ({}, ("model/start_logits/dense",), {}, "SQuAD head .* Linear\\(d_model, 2\\)"),
        ({}, (), {"head": "race"}, "--head=race: the checkpoint has no race head"),
    ],
)
def test_refuses_what_hugging_face_cannot_express(overrides, heads, kwargs, message):
    config = tiny_config(**overrides)
    shapes = _shapes(config, *heads)
    if overrides.get("decoder_size") == "0":
        shapes["model/decoder/layer_3/ff/layer_1/kernel"] = [D, F]
    with pytest.raises(ValueError, match=message):
        export_hf_utils.plan_export(config, shapes, **kwargs)


def test_repeated_block_0_exports_as_base_model():
    config = tiny_config(block_size="1x2_1_1")
    plan = export_hf_utils.plan_export(config, _shapes(config), base_model=True)
    assert plan.architecture == "FunnelBaseModel" and not plan.use_decoder


def test_sentencepiece_tokenizer_files(tmp_path):
    path = train_spm(tmp_path, ["<cls>", "<sep>", "<pad>", "<mask>"])
    model_bytes = pathlib.Path(path).read_bytes()
    tokenizer = tokenization.get_tokenizer("sent_piece", path, uncased=True)
    files = export_hf_utils.tokenizer_files(tokenizer, model_bytes)
    assert files["spiece.model"] == model_bytes
    assert files["tokenizer_config.json"] == {
        "tokenizer_class": "AlbertTokenizer",
        "do_lower_case": True,
        "remove_space": True,
        "keep_accents": False,
        "unk_token": "<unk>",
        "cls_token": "<cls>",
        "sep_token": "<sep>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
        "bos_token": "<s>",
        "eos_token": "</s>",
    }


# ---------------------------------------------------------------------------------------- the script
def run_script(*flags):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "tensorflow", "export_hf.py"), *map(str, flags)],
        cwd=REPO,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""),
        capture_output=True,
        text=True,
        timeout=600,
    )


def one_line_error(proc):
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("export_hf.py: error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


@pytest.mark.parametrize("trained", ["rel_shift"], indirect=True)
def test_script_exports_a_finetuned_classifier(trained, tmp_path):
    model_dir = trained.model_dir("script", heads=("mrpc",))
    out = tmp_path / "hf"
    proc = run_script(f"--model_dir={model_dir}", "--task_name=MRPC", f"--output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(out)) == [
        "config.json",
        "model.safetensors",
        "tokenizer_config.json",
        "vocab.txt",
    ]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["FunnelForSequenceClassification"]
    assert config["id2label"] == {"0": "0", "1": "1"}
    assert (out / "vocab.txt").read_bytes() == (model_dir / "vocab.txt").read_bytes()
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "FunnelTokenizer"
    assert tokenizer_config["do_lower_case"] is True and tokenizer_config["bos_token"] is None

    again = run_script(f"--model_dir={model_dir}", "--task_name=mrpc", f"--output_dir={out}")
    assert "is not empty: pass --overwrite" in one_line_error(again)

    # net_config.json with separate_cls false beside the same checkpoint.
    values = trained.config.to_dict() | {"separate_cls": False}
    (model_dir / "net_config.json").write_text(json.dumps(values))
    refused = run_script(f"--model_dir={model_dir}", f"--output_dir={tmp_path / 'other'}")
    assert "separate_cls=false" in one_line_error(refused)


# ------------------------------------------------------------------ Hugging Face's outputs (optional)
def _hf():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    return torch, transformers


def _hf_inputs(torch, ids, seg, mask):
    """Hugging Face's inputs: attention_mask 1 = real token (ours: input_mask 1.0 = padding)."""
    return {
        "input_ids": torch.tensor(np.asarray(ids), dtype=torch.long),
        "token_type_ids": torch.tensor(np.asarray(seg), dtype=torch.long),
        "attention_mask": torch.tensor(1.0 - np.asarray(mask), dtype=torch.float32),
    }


def _max_error(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_hf_reproduces_the_original_golden_outputs(name, tmp_path):
    """The released-format fixtures: Hugging Face equals the original on the main batch, not on a row
    whose pooling windows mix real and padding tokens (docs/export_hf.md)."""
    torch, transformers = _hf()
    folder = GOLDEN_DIR / name
    config = modeling.ModelConfig.init_from_json(str(folder / "net_config.json"))
    write_vocab(tmp_path / "vocab.txt", config.vocab_size)
    tokenizer = tokenization.get_tokenizer("word_piece", str(tmp_path / "vocab.txt"))
    out = tmp_path / "hf"
    export_hf_utils.export(str(folder / "model.ckpt"), config, tokenizer, str(out))
    full = transformers.AutoModel.from_pretrained(out).eval()
    base = transformers.FunnelBaseModel.from_pretrained(out).eval()
    assert type(full).__name__ == "FunnelModel"
    with np.load(folder / "reference.npz") as npz:
        ref = dict(npz)
    errors = {}
    with torch.no_grad():
        for prefix in ("", "unaligned_"):
            inputs = _hf_inputs(
                torch, ref[f"{prefix}input_ids"], ref[f"{prefix}seg_id"], ref[f"{prefix}input_mask"]
            )
            for key, hf_model in (("full_last_hidden", full), ("enc_last_hidden", base)):
                got = hf_model(**inputs).last_hidden_state.numpy()
                errors[prefix + key] = _max_error(got, ref[f"{prefix}{key}"])
                assert _max_error(got, ref[f"{prefix}{key}_hf"]) < 1e-5
    print(name, "max |HF - original|:", errors)
    assert errors["full_last_hidden"] < 1e-4 and errors["enc_last_hidden"] < 1e-4
    # Hugging Face counts a pooled key as padding if any token of its window is; the original only if
    # every one is.
    assert errors["unaligned_enc_last_hidden"] > 1e-3


@pytest.mark.parametrize(
    "overrides",
    [{}, {"pool_q_only": False, "pooling_type": "max"}],
    ids=["pool_q_only", "pool_qkv_max"],
)
def test_hf_hidden_states_and_logits_match_ours(trained, tmp_path, overrides):
    torch, transformers = _hf()
    config = modeling.ModelConfig.from_dict(trained.config.to_dict() | overrides)
    model_dir = trained.model_dir(f"all-{'-'.join(overrides)}", heads=tuple(HEADS), config=config)
    model = modeling.FunnelTFM(config)
    model_utils.init_from_checkpoint(model, str(model_dir / "model.ckpt-1"))
    ids, seg, mask = trained.inputs
    hf_inputs = _hf_inputs(torch, ids, seg, mask)
    errors = {}

    def compare(key, ours, theirs, tolerance=1e-4):
        errors[key] = _max_error(ours, theirs)
        assert errors[key] < tolerance, (key, errors[key])

    with torch.no_grad():
        out = tmp_path / "core"
        export(model_dir, out, head="none")
        full, _, _ = model.extract_hiddens(ids, False, seg, mask, use_decoder=True)
        encoder, _, _ = model.extract_hiddens(ids, False, seg, mask)
        hf = transformers.FunnelModel.from_pretrained(out).eval()
        compare("decoder output", full, hf(**hf_inputs).last_hidden_state)
        hf = transformers.FunnelBaseModel.from_pretrained(out).eval()
        compare("encoder output", encoder, hf(**hf_inputs).last_hidden_state)

        out = tmp_path / "mrpc"
        export(model_dir, out, cls_scope="mrpc")
        summary, _ = model.get_pooled_output(ids, False, seg, mask)
        _, logits = model.classification_loss(summary, tf.constant([0, 1]), 2, False, "mrpc")
        hf = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
        compare("classification logits", logits, hf(**hf_inputs).logits)

        out = tmp_path / "race"
        export(model_dir, out, head="race")
        race_inputs = [tf.concat([x, x[::-1]], axis=1) for x in trained.inputs]
        _, logits = model.get_race_loss(
            tf.constant([0, 1]), race_inputs[0], False, *race_inputs[1:], n_choice=2
        )
        hf = transformers.FunnelForMultipleChoice.from_pretrained(out).eval()
        choices = {k: v.view(2, 2, SEQ_LEN) for k, v in _hf_inputs(torch, *race_inputs).items()}
        compare("race logits", logits, hf(**choices).logits)

        out = tmp_path / "disc"
        export(model_dir, out, head="discriminator")
        hf = transformers.FunnelForPreTraining.from_pretrained(out).eval()
        compare(
            "discriminator logits (negated)", -model.binary_logits(full), hf(**hf_inputs).logits
        )
    print(trained.config.rel_attn_type, overrides, "max |HF - ours|:", errors)


def test_hf_tokenizers_match_ours(tmp_path):
    """FunnelTokenizer gives our word-piece ids. AlbertTokenizer gives our sentencepiece ids except for
    curly quotes (we make them ASCII); its fast version (AutoTokenizer's default) also keeps a
    "<digits>," piece whole (ours splits the comma off) and spells <cls> and <sep> "[CLS]", "[SEP]".
    FunnelTokenizer's word pieces stop at 100 characters a word, ours at 200."""
    _, transformers = _hf()
    plain, digit_comma = 'Caf\u00e9 "d\u00e9j\u00e0 vu" --  spaces', "The fox, born 1990, jumped!"
    curly = "He said \u201chi\u201d and ``bye''"
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([plain, digit_comma] * 20),
        model_writer=model,
        vocab_size=60,
        hard_vocab_limit=False,
        user_defined_symbols=["<cls>", "<sep>", "<pad>", "<mask>", "1990,"],
        minloglevel=2,
    )
    (tmp_path / "sp.model").write_bytes(model.getvalue())
    chars = sorted({c for t in (plain, digit_comma) for c in t.lower() if c.strip()})
    vocab = SPECIALS + chars + [f"##{c}" for c in chars] + ["the", "fox", "cafe", "deja", "x"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    for kind, path in (("word_piece", "vocab.txt"), ("sent_piece", "sp.model")):
        ours = tokenization.get_tokenizer(kind, str(tmp_path / path), uncased=True)
        out = tmp_path / kind
        out.mkdir()
        for name, content in export_hf_utils.tokenizer_files(
            ours, (tmp_path / path).read_bytes()
        ).items():
            if isinstance(content, dict):
                (out / name).write_text(json.dumps(content))
            else:
                (out / name).write_bytes(content)
        for use_fast in (False, True):
            theirs = transformers.AutoTokenizer.from_pretrained(out, use_fast=use_fast)
            differs = {plain: False, digit_comma: kind == "sent_piece" and use_fast}
            differs[curly] = kind == "sent_piece"
            # Hugging Face's word pieces give up on words over 100 characters, ours over 200.
            differs["x" * 150] = kind == "word_piece"
            for text, expect_difference in differs.items():
                same = theirs(text, add_special_tokens=False)["input_ids"] == (
                    ours.convert_text_to_ids(text)
                )
                assert same != expect_difference, (kind, type(theirs).__name__, text)
            pair = theirs(plain, plain.upper())
            a, b = ours.convert_text_to_ids(plain), ours.convert_text_to_ids(plain.upper())
            cls, sep = ours.get_token_id("<cls>"), ours.get_token_id("<sep>")
            if kind == "sent_piece" and use_fast:
                # AlbertTokenizerFast's template inserts "[CLS]" and "[SEP]" whatever the model's
                # special tokens are: here <unk>.
                cls = sep = ours.get_token_id("<unk>")
            assert pair["input_ids"] == [cls, *a, sep, *b, sep], (kind, use_fast)
            # FunnelTokenizer gives <cls> token type 2, AlbertTokenizer 0: with separate_cls the model
            # masks every segment term of <cls>, so both give the same outputs.
            cls_type = 2 if kind == "word_piece" else 0
            assert pair["token_type_ids"] == [cls_type] + [0] * (len(a) + 1) + [1] * (len(b) + 1)
