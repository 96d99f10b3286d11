"""A checkpoint in the layout of Hugging Face's PyTorch Funnel port (docs/export_hf.md); `export_hf.py` owns
the flags.

Hugging Face (`transformers.models.funnel`) names a model by its PyTorch modules: `FunnelModel` (embedding,
encoder `encoder.blocks.{block}.{layer}`, decoder `decoder.layers.{layer}`), `FunnelBaseModel` (no decoder)
and, under the prefix `funnel.`, the task models `FunnelForSequenceClassification` / `FunnelForMultipleChoice`
(`classifier.linear_hidden`, `classifier.linear_out`) and `FunnelForPreTraining`
(`discriminator_predictions.dense`, `.dense_prediction`). Their `nn.Linear` weights are [out, in] where our
kernels are [in, out], and the attention projections are flat: q/k/v `Linear(d_model, n_head * d_head)`,
the output `Linear(n_head * d_head, d_model)`. `plan_export` decides what a checkpoint becomes and refuses what
Hugging Face computes differently; `hf_tensors`, `hf_config` and `tokenizer_files` produce the files, and
`export` writes them.
"""

import dataclasses
import os
import re

import numpy as np
import safetensors.numpy
import tensorflow as tf
from absl import logging

import data_utils
import model_utils

HEADS = ("auto", "none", "classification", "race", "discriminator")

_ATTENTION_TYPES = {"rel_shift": "relative_shift", "factorized": "factorized"}
# Our "gelu" is the tanh approximation, which Hugging Face calls "gelu_new".
_ACTIVATIONS = {"gelu": "gelu_new", "relu": "relu", "tanh": "tanh"}
# float32 layer norm (`ops.layer_norm`); Hugging Face's default is 1e-9.
LAYER_NORM_EPS = 1e-8

_CLS_LOGIT_RE = re.compile(r"^model/(.+)/logit/kernel$")
_SUMMARY = "model/sequnece_summary/summary"
_RACE_LOGITS = "model/race/logits"
_DISCRIMINATOR = ("model/binary_proj/", "model/binary_loss/")
# Heads Hugging Face has no module for, by the reason given when one is in the way.
_INEXPRESSIBLE_HEADS = {
    "MLM head (lm_proj, lm_loss): Hugging Face's FunnelForMaskedLM is a single Linear(d_model, "
    "vocab_size), without our dense + layer norm projection": ("model/lm_proj/", "model/lm_loss/"),
    "SQuAD head (start_logits, end_logits, answer_class): Hugging Face's FunnelForQuestionAnswering is "
    "a single Linear(d_model, 2)": (
        "model/start_logits/",
        "model/end_logits/",
        "model/answer_class/",
    ),
}

# (our name under a layer, Hugging Face's name under the layer, our shape, conversion). Shape letters:
# D d_model, N n_head, H d_head, F d_inner, 2 the two segment classes.
_LAYER_TENSORS = (
    ("rel_attn/q/kernel", "attention.q_head.weight", "DNH", "heads_in"),
    ("rel_attn/k/kernel", "attention.k_head.weight", "DNH", "heads_in"),
    ("rel_attn/k/bias", "attention.k_head.bias", "NH", "flat"),
    ("rel_attn/v/kernel", "attention.v_head.weight", "DNH", "heads_in"),
    ("rel_attn/v/bias", "attention.v_head.bias", "NH", "flat"),
    ("rel_attn/r_w_bias", "attention.r_w_bias", "NH", "same"),
    ("rel_attn/r_r_bias", "attention.r_r_bias", "NH", "same"),
    ("rel_attn/r/kernel", "attention.r_kernel", "DNH", "same"),
    ("rel_attn/r_s_bias", "attention.r_s_bias", "NH", "same"),
    ("rel_attn/seg_embed", "attention.seg_embed", "2NH", "same"),
    ("rel_attn/o/kernel", "attention.post_proj.weight", "NHD", "heads_out"),
    ("rel_attn/o/bias", "attention.post_proj.bias", "D", "same"),
    ("rel_attn/layer_norm/gamma", "attention.layer_norm.weight", "D", "same"),
    ("rel_attn/layer_norm/beta", "attention.layer_norm.bias", "D", "same"),
    ("ff/layer_1/kernel", "ffn.linear_1.weight", "DF", "linear"),
    ("ff/layer_1/bias", "ffn.linear_1.bias", "F", "same"),
    ("ff/layer_2/kernel", "ffn.linear_2.weight", "FD", "linear"),
    ("ff/layer_2/bias", "ffn.linear_2.bias", "D", "same"),
    ("ff/layer_norm/gamma", "ffn.layer_norm.weight", "D", "same"),
    ("ff/layer_norm/beta", "ffn.layer_norm.bias", "D", "same"),
)

_CONVERSIONS = {
    "same": lambda x: x,
    "linear": lambda x: x.T,
    # [D, N, H] -> [N*H, D]: output feature n*H + h of Linear(d_model, n_head * d_head).
    "heads_in": lambda x: x.reshape(x.shape[0], -1).T,
    # [N, H, D] -> [D, N*H]: input feature n*H + h of Linear(n_head * d_head, d_model).
    "heads_out": lambda x: x.reshape(-1, x.shape[-1]).T,
    "flat": lambda x: x.reshape(-1),
    # Our discriminator logit is positive for an original token, Hugging Face's for a replaced one.
    "negated_row": lambda x: -x[None, :],
    "negated": lambda x: -x,
}


@dataclasses.dataclass(frozen=True)
class ExportPlan:
    """What a checkpoint becomes.

    Attributes:
      architecture: the Hugging Face class: FunnelModel, FunnelBaseModel, FunnelForSequenceClassification,
        FunnelForMultipleChoice or FunnelForPreTraining.
      head: None, "classification", "race" or "discriminator".
      cls_scope: the scope of the classification head (`model/{cls_scope}/logit`), else None.
      n_labels: outputs of the classification head, else None.
      use_decoder: whether the decoder is exported (FunnelModel, FunnelForPreTraining).
      left_out: checkpoint names deliberately not exported (training state, unused heads, the decoder of a
        base model), sorted.
    """

    architecture: str
    head: str | None
    cls_scope: str | None
    n_labels: int | None
    use_decoder: bool
    left_out: tuple


def check_expressible(net_config):
    """Raises ValueError when Hugging Face's Funnel computes another function than `net_config`'s encoder."""
    if net_config.rel_attn_type not in _ATTENTION_TYPES:
        raise ValueError(
            f"rel_attn_type={net_config.rel_attn_type!r}: Hugging Face's Funnel has only relative "
            "attention (attention_type 'relative_shift' or 'factorized'), no absolute position embeddings"
        )
    if net_config.d_embed != net_config.d_model:
        raise ValueError(
            f"d_embed={net_config.d_embed} differs from d_model={net_config.d_model}: Hugging Face's "
            "Funnel embeds into d_model and has no input projection"
        )
    if not net_config.separate_cls:
        raise ValueError(
            "separate_cls=false: Hugging Face's Funnel masks the position and segment terms of <cls> only "
            "with separate_cls, while this model (like the original) always masks them"
        )


def _names_under(names, prefixes):
    return sorted(n for n in names if n.startswith(tuple(prefixes)))


def _check_decoder(net_config):
    """Raises ValueError when Hugging Face's FunnelModel would run `net_config`'s decoder differently."""
    if net_config.decoder_repeat_size > 1:
        raise ValueError(
            f"decoder_size={net_config.decoder_size!r} repeats its layers: Hugging Face's decoder has no "
            "repeats (pass --base_model to export the encoder only)"
        )
    if net_config.block_repeat_size[0] > 1:
        raise ValueError(
            f"block_size={net_config.block_size!r} repeats the layers of block 0: Hugging Face's decoder "
            "adds the hidden state after block_sizes[0] layer applications, not block 0's output (pass "
            "--base_model to export the encoder only)"
        )


def plan_export(net_config, shapes, head="auto", cls_scope=None, base_model=False):
    """Chooses the Hugging Face model class for a checkpoint, or refuses.

    Args:
      net_config: the checkpoint's `modeling.ModelConfig`.
      shapes: dict checkpoint name -> shape (`model_utils.CheckpointValues.shapes`).
      head: one of `HEADS`. "auto" exports the checkpoint's one head that Hugging Face can express and
        refuses a checkpoint with several heads or with a head it cannot express; "none" exports the
        backbone; the others pick that head.
      cls_scope: the classification head's scope when the checkpoint has several; implies
        head="classification" under "auto".
      base_model: leave the decoder out (FunnelBaseModel) even when the checkpoint has one.
    Returns:
      ExportPlan.
    Raises:
      ValueError: what Hugging Face cannot express, or a head that is not in the checkpoint.
    """
    if head not in HEADS:
        raise ValueError(f"--head={head!r} must be one of {', '.join(HEADS)}")
    check_expressible(net_config)
    names = set(shapes)
    # Never exported: the training state and the ELECTRA generator.
    model_names = {
        n
        for n in names
        if not (model_utils.TRAINING_STATE_RE.search(n) or n.startswith("generator/"))
    }
    scopes = sorted(m.group(1) for n in model_names if (m := _CLS_LOGIT_RE.match(n)))
    found = [("classification", s) for s in scopes]
    if f"{_RACE_LOGITS}/kernel" in model_names:
        found.append(("race", None))
    if f"{_DISCRIMINATOR[0]}dense/kernel" in model_names:
        found.append(("discriminator", None))
    inexpressible = {
        reason: prefixes
        for reason, prefixes in _INEXPRESSIBLE_HEADS.items()
        if _names_under(model_names, prefixes)
    }

    if cls_scope:
        if head not in ("auto", "classification"):
            raise ValueError(
                f"--cls_scope={cls_scope} names a classification head, not --head={head}"
            )
        if cls_scope not in scopes:
            raise ValueError(
                f"the checkpoint has no classification head model/{cls_scope}/logit (found: "
                f"{', '.join(scopes) or 'none'})"
            )
        chosen = ("classification", cls_scope)
    elif head == "none":
        chosen = None
    elif head == "auto":
        if inexpressible:
            raise ValueError(
                f"the checkpoint holds the {next(iter(inexpressible))}; pass --head=none to export the "
                "model without it"
            )
        if len(found) > 1:
            listed = ", ".join(s or k for k, s in found)
            raise ValueError(
                f"the checkpoint has several heads ({listed}): choose one with --head (and --cls_scope)"
            )
        chosen = found[0] if found else None
    else:
        matches = [f for f in found if f[0] == head]
        if not matches:
            raise ValueError(f"--head={head}: the checkpoint has no {head} head")
        if len(matches) > 1:
            raise ValueError(
                f"the checkpoint has several classification heads ({', '.join(scopes)}): choose one "
                "with --cls_scope"
            )
        chosen = matches[0]
    kind, scope = chosen if chosen else (None, None)

    has_decoder = any(n.startswith("model/decoder/") for n in model_names)
    if has_decoder and net_config.decoder_param_size == 0:
        raise ValueError(
            f"the checkpoint has a decoder but its config says decoder_size={net_config.decoder_size!r}"
        )
    use_decoder = has_decoder and not base_model and kind in (None, "discriminator")
    if kind == "discriminator":
        if not use_decoder:
            raise ValueError(
                "the ELECTRA discriminator head reads the decoder output: Hugging Face's "
                "FunnelForPreTraining needs the decoder, and the checkpoint has none or --base_model "
                "leaves it out"
            )
        if net_config.ff_activation != "gelu":
            raise ValueError(
                f"ff_activation={net_config.ff_activation!r}: Hugging Face's discriminator head uses "
                "hidden_act, ours always gelu; pass --head=none to export the model without it"
            )
    if use_decoder:
        _check_decoder(net_config)

    exported_heads = {
        "classification": (f"model/{scope}/logit/", f"{_SUMMARY}/"),
        "race": (f"{_RACE_LOGITS}/", f"{_SUMMARY}/"),
        "discriminator": _DISCRIMINATOR,
    }.get(kind, ())
    droppable = [f"model/{s}/logit/" for s in scopes] + [f"{_RACE_LOGITS}/", f"{_SUMMARY}/"]
    droppable += list(_DISCRIMINATOR)
    droppable += [p for prefixes in _INEXPRESSIBLE_HEADS.values() for p in prefixes]
    if not use_decoder:
        droppable.append("model/decoder/")
    left_out = sorted(names - model_names) + [
        n for n in _names_under(model_names, droppable) if not n.startswith(exported_heads)
    ]

    n_labels = None
    if kind == "classification":
        n_labels = shapes[f"model/{scope}/logit/kernel"][-1]
    architecture = {
        "classification": "FunnelForSequenceClassification",
        "race": "FunnelForMultipleChoice",
        "discriminator": "FunnelForPreTraining",
    }.get(kind, "FunnelModel" if use_decoder else "FunnelBaseModel")
    return ExportPlan(architecture, kind, scope, n_labels, use_decoder, tuple(sorted(left_out)))


def _layer_prefixes(net_config, use_decoder):
    """(our layer scope, Hugging Face's layer prefix) of every parameter layer."""
    prefixes = []
    layer = 0
    for block, size in enumerate(net_config.block_param_size):
        for index in range(size):
            prefixes.append((f"model/encoder/layer_{layer}", f"encoder.blocks.{block}.{index}"))
            layer += 1
    if use_decoder:
        for index in range(net_config.decoder_param_size):
            prefixes.append((f"model/decoder/layer_{layer + index}", f"decoder.layers.{index}"))
    return prefixes


def tensor_map(net_config, plan):
    """Every exported tensor: Hugging Face name -> (our checkpoint name, our shape, conversion name).

    The conversions are keys of `_CONVERSIONS`; the Hugging Face names are those of `plan.architecture`'s
    state dict.
    """
    cfg = net_config
    dims = {"D": cfg.d_model, "N": cfg.n_head, "H": cfg.d_head, "F": cfg.d_inner, "2": 2}
    base = "funnel." if plan.head else ""
    entries = {
        f"{base}embeddings.word_embeddings.weight": (
            "model/input/word_embedding/lookup_table",
            [cfg.vocab_size, cfg.d_model],
            "same",
        ),
        f"{base}embeddings.layer_norm.weight": (
            "model/input/layer_norm/gamma",
            [cfg.d_model],
            "same",
        ),
        f"{base}embeddings.layer_norm.bias": ("model/input/layer_norm/beta", [cfg.d_model], "same"),
    }
    for ours, theirs in _layer_prefixes(cfg, plan.use_decoder):
        for suffix, hf_suffix, shape, conversion in _LAYER_TENSORS:
            entries[f"{base}{theirs}.{hf_suffix}"] = (
                f"{ours}/{suffix}",
                [dims[c] for c in shape],
                conversion,
            )
    d_model = cfg.d_model
    if plan.head in ("classification", "race"):
        logit = f"model/{plan.cls_scope}/logit" if plan.head == "classification" else _RACE_LOGITS
        n_out = plan.n_labels or 1
        entries.update(
            {
                "classifier.linear_hidden.weight": (
                    f"{_SUMMARY}/kernel",
                    [d_model, d_model],
                    "linear",
                ),
                "classifier.linear_hidden.bias": (f"{_SUMMARY}/bias", [d_model], "same"),
                "classifier.linear_out.weight": (f"{logit}/kernel", [d_model, n_out], "linear"),
                "classifier.linear_out.bias": (f"{logit}/bias", [n_out], "same"),
            }
        )
    elif plan.head == "discriminator":
        entries.update(
            {
                "discriminator_predictions.dense.weight": (
                    "model/binary_proj/dense/kernel",
                    [d_model, d_model],
                    "linear",
                ),
                "discriminator_predictions.dense.bias": (
                    "model/binary_proj/dense/bias",
                    [d_model],
                    "same",
                ),
                "discriminator_predictions.dense_prediction.weight": (
                    "model/binary_loss/weight",
                    [d_model],
                    "negated_row",
                ),
                "discriminator_predictions.dense_prediction.bias": (
                    "model/binary_loss/bias",
                    [1],
                    "negated",
                ),
            }
        )
    return entries


def hf_tensors(net_config, plan, values):
    """The state dict of `plan.architecture`, from a checkpoint.

    Args:
      values: a `model_utils.CheckpointValues` (`get(name, shape)` -> numpy or None, `shapes`).
    Returns:
      dict Hugging Face name -> float32 C-contiguous numpy array.
    Raises:
      ValueError: a tensor is missing or has another shape than the config gives (the config does not
        describe the checkpoint), or the checkpoint holds model variables nothing exports.
    """
    entries = tensor_map(net_config, plan)
    tensors, missing = {}, []
    for hf_name, (name, shape, conversion) in entries.items():
        value = values.get(name, shape)
        if value is None:
            missing.append(name)
            continue
        converted = _CONVERSIONS[conversion](np.asarray(value, np.float32))
        tensors[hf_name] = np.ascontiguousarray(converted)
    if missing:
        raise ValueError(
            f"checkpoint {values.path} lacks {len(missing)} variable(s) of its config, e.g. "
            f"{', '.join(missing[:3])} (does net_config.json describe it?)"
        )
    used = {name for name, _, _ in entries.values()}
    unknown = sorted(set(values.shapes) - used - set(plan.left_out))
    if unknown:
        raise ValueError(
            f"checkpoint {values.path} has {len(unknown)} variable(s) with no Hugging Face counterpart, "
            f"e.g. {', '.join(unknown[:3])}"
        )
    return tensors


def hf_config(net_config, plan, truncate_seq, pad_id, labels=None, regression=False):
    """The `config.json` of the export: a Hugging Face `FunnelConfig`.

    Args:
      truncate_seq: the runtime flag the model was trained and evaluated with.
      pad_id: the tokenizer's padding id (`pad_token_id`).
      labels: label names in id order for a classification head; default LABEL_0, LABEL_1, ...
      regression: the classification head is a regression (one output, problem_type "regression").
    Returns:
      dict, JSON-serializable.
    """
    cfg = net_config
    config = {
        "architectures": [plan.architecture],
        "model_type": "funnel",
        "vocab_size": cfg.vocab_size,
        "block_sizes": list(cfg.block_param_size),
        "block_repeats": list(cfg.block_repeat_size),
        "num_decoder_layers": cfg.decoder_param_size,
        "d_model": cfg.d_model,
        "n_head": cfg.n_head,
        "d_head": cfg.d_head,
        "d_inner": cfg.d_inner,
        "hidden_act": _ACTIVATIONS[cfg.ff_activation],
        "hidden_dropout": cfg.dropout,
        "attention_dropout": cfg.dropatt,
        "activation_dropout": cfg.dropact,
        # Hugging Face initializes its new weights only (a head the checkpoint lacks) from these.
        "initializer_range": cfg.init_range,
        "initializer_std": cfg.init_std,
        "layer_norm_eps": LAYER_NORM_EPS,
        "pooling_type": cfg.pooling_type,
        "attention_type": _ATTENTION_TYPES[cfg.rel_attn_type],
        "separate_cls": cfg.separate_cls,
        "truncate_seq": truncate_seq,
        "pool_q_only": cfg.pool_q_only,
        # Unused by the relative attention; older FunnelConfig versions read them.
        "max_position_embeddings": 512,
        "type_vocab_size": 3,
        "pad_token_id": pad_id,
        "torch_dtype": "float32",
    }
    if plan.head == "classification":
        if labels is not None and len(labels) != plan.n_labels:
            raise ValueError(
                f"the classification head model/{plan.cls_scope}/logit has {plan.n_labels} outputs but "
                f"the task has {len(labels)} labels ({', '.join(labels)})"
            )
        names = list(labels) if labels else [f"LABEL_{i}" for i in range(plan.n_labels)]
        config["num_labels"] = plan.n_labels
        config["id2label"] = {str(i): name for i, name in enumerate(names)}
        config["label2id"] = {name: i for i, name in enumerate(names)}
        if regression or plan.n_labels == 1:
            config["problem_type"] = "regression"
    return config


def tokenizer_files(tokenizer, vocab_bytes):
    """The tokenizer files of the export.

    word_piece: `vocab.txt` and a `FunnelTokenizer` config (BERT word pieces, `<cls>` token type 2).
    sent_piece: `spiece.model` and an `AlbertTokenizer` config: the Hugging Face sentencepiece tokenizer
    with our preprocessing (XLNet's: whitespace collapsed, accents stripped, lower-cased, the digit-comma
    fix) and layout (`<cls> A <sep> B <sep>`), in its slow version only; docs/export_hf.md says where
    they differ.

    Args:
      tokenizer: a `tokenization` tokenizer.
      vocab_bytes: the bytes of its vocabulary or sentencepiece model file.
    Returns:
      dict file name -> bytes or a JSON-serializable dict (`tokenizer_config.json`).
    """
    special = data_utils.setup_special_ids(tokenizer)

    def spelling(token_id):
        return None if token_id is None else tokenizer.convert_ids_to_tokens([token_id])[0]

    config = {
        "do_lower_case": tokenizer.uncased,
        "unk_token": spelling(special.unk_id),
        "cls_token": spelling(special.cls_id),
        "sep_token": spelling(special.sep_id),
        "pad_token": spelling(special.pad_id),
        "mask_token": spelling(special.mask_id),
        # None where the vocabulary lacks them: Hugging Face would add them as new tokens.
        "bos_token": spelling(special.bos_id),
        "eos_token": spelling(special.eos_id),
    }
    if tokenizer.tokenizer_type == "word_piece":
        config["tokenizer_class"] = "FunnelTokenizer"
        return {"vocab.txt": vocab_bytes, "tokenizer_config.json": config}
    config.update(tokenizer_class="AlbertTokenizer", remove_space=True, keep_accents=False)
    return {"spiece.model": vocab_bytes, "tokenizer_config.json": config}


def export(
    checkpoint,
    net_config,
    tokenizer,
    output_dir,
    head="auto",
    cls_scope=None,
    base_model=False,
    truncate_seq=True,
    labels=None,
    regression=False,
):
    """Writes the Hugging Face model directory of a checkpoint.

    The files are written under temporary names and renamed into place, `config.json` last: a directory
    with a `config.json` holds a complete export.

    Args:
      checkpoint: a checkpoint prefix.
      net_config: its `modeling.ModelConfig`.
      tokenizer: a `tokenization` tokenizer whose vocabulary has `net_config.vocab_size` entries.
      output_dir: a local directory, created if needed; files of the same names are replaced.
      head, cls_scope, base_model: see `plan_export`.
      truncate_seq, labels, regression: see `hf_config`.
    Returns:
      (ExportPlan, dict Hugging Face name -> numpy array of what `model.safetensors` holds).
    Raises:
      ValueError: see `plan_export`, `hf_tensors`, `hf_config`; a vocabulary of another size.
    """
    if tokenizer.get_vocab_size() != net_config.vocab_size:
        raise ValueError(
            f"{tokenizer.path} has {tokenizer.get_vocab_size()} entries but the model config says "
            f"vocab_size {net_config.vocab_size}"
        )
    values = model_utils.CheckpointValues(checkpoint)
    plan = plan_export(net_config, values.shapes, head, cls_scope, base_model)
    tensors = hf_tensors(net_config, plan, values)
    pad_id = data_utils.setup_special_ids(tokenizer).pad_id
    config = hf_config(net_config, plan, truncate_seq, pad_id, labels, regression)
    with tf.io.gfile.GFile(tokenizer.path, "rb") as f:
        files = tokenizer_files(tokenizer, f.read())
    data_utils.ensure_writable_dir(output_dir, "output_dir")
    for name, content in files.items():
        path = os.path.join(output_dir, name)
        if isinstance(content, dict):
            data_utils.atomic_write_json(path, content, indent=2)
        else:
            with data_utils.atomic_open(path, "wb") as f:
                f.write(content)
    with data_utils.atomic_output_path(os.path.join(output_dir, "model.safetensors")) as tmp_path:
        # Hugging Face's loader requires a state dict to say its format.
        safetensors.numpy.save_file(tensors, tmp_path, metadata={"format": "pt"})
    data_utils.atomic_write_json(os.path.join(output_dir, "config.json"), config, indent=2)
    if tokenizer.tokenizer_type == "sent_piece":
        logging.warning(
            "Load the tokenizer of %s with AutoTokenizer.from_pretrained(..., use_fast=False): the fast "
            "AlbertTokenizer inserts '[CLS]' and '[SEP]' whatever the model's special tokens are, and "
            "lacks the digit-comma fix (docs/export_hf.md).",
            output_dir,
        )
    return plan, tensors
