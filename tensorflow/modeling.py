"""The Funnel-Transformer model: config, encoder with pooling, decoder, and the task heads.

Variables are plain `tf.Variable`s named exactly as in the original checkpoints
(`model/encoder/layer_0/rel_attn/q/kernel`, ...), created the first time a computation needs them. They are
stored in float32 and cast to the compute dtype on use; layer norm, the softmax normalisation and every
logit are float32.

Nothing here reads absl FLAGS: configuration comes from `ModelConfig` and explicit arguments.
"""

import json
import re
import zlib

import tensorflow as tf
from absl import logging

import data_utils
import model_utils
import ops
import tokenization

_DEPTH_RE = re.compile(r"^(\d+)(?:x(\d+))?$")


def parse_depth_string(depth_str, what="block_size"):
    """Parses "6_3x2_3x2" into [(param_layers, repeats), ...]: "PxR" is P layers each applied R times."""
    blocks = []
    for entry in str(depth_str).split("_"):
        match = _DEPTH_RE.match(entry.strip())
        if not match:
            raise ValueError(
                f"{what}={depth_str!r}: each '_'-separated entry must be P or PxR (e.g. '6_3x2_3x2')"
            )
        blocks.append((int(match.group(1)), int(match.group(2) or 1)))
    return blocks


class ModelConfig:
    """The 20 hyper-parameters saved as `net_config.json` next to every checkpoint.

    Fields:
      block_size: per-block depth, '_'-separated "P" or "PxR" entries, e.g. "6_6_6" or "6_3x2_3x2".
      vocab_size: vocabulary size; must equal the tokenizer's.
      d_embed: embedding size (projected to d_model by the encoder when different).
      d_model: hidden size.
      n_head: attention heads.
      d_head: size of each head.
      d_inner: feed-forward inner size.
      ff_activation: "relu", "gelu" (tanh approximation) or "tanh".
      dropout: hidden dropout (also on positional encodings and in the heads).
      dropatt: dropout on attention probabilities.
      dropact: dropout after the feed-forward activation.
      init: "normal", "uniform" or "truncated_normal".
      init_std: std of normal / truncated_normal initialisation.
      init_range: range of uniform initialisation.
      rel_attn_type: "factorized", "rel_shift" (both compute the same function, see `rel_attn_algorithm`)
        or "null" (absolute position and segment embeddings, no relative terms).
      separate_cls: keep `<cls>` out of pooling.
      pooling_type: "mean" or "max".
      pooling_size: pooling kernel and stride; only 2 is supported, as in the original.
      pool_q_only: pool only the query of the first layer of each block.
      decoder_size: decoder depth, same syntax as block_size; "0" for none.
    """

    keys = (
        "block_size",
        "vocab_size",
        "d_embed",
        "d_model",
        "n_head",
        "d_head",
        "d_inner",
        "ff_activation",
        "dropout",
        "dropatt",
        "dropact",
        "init",
        "init_std",
        "init_range",
        "rel_attn_type",
        "separate_cls",
        "pooling_type",
        "pooling_size",
        "pool_q_only",
        "decoder_size",
    )
    _required = keys[:11]
    _types = {
        "block_size": str,
        "vocab_size": int,
        "d_embed": int,
        "d_model": int,
        "n_head": int,
        "d_head": int,
        "d_inner": int,
        "ff_activation": str,
        "dropout": float,
        "dropatt": float,
        "dropact": float,
        "init": str,
        "init_std": float,
        "init_range": float,
        "rel_attn_type": str,
        "separate_cls": bool,
        "pooling_type": str,
        "pooling_size": int,
        "pool_q_only": bool,
        "decoder_size": str,
    }

    def __init__(
        self,
        block_size,
        vocab_size,
        d_embed,
        d_model,
        n_head,
        d_head,
        d_inner,
        ff_activation,
        dropout,
        dropatt,
        dropact,
        init="truncated_normal",
        init_std=0.02,
        init_range=0.1,
        rel_attn_type="factorized",
        separate_cls=True,
        pooling_type="mean",
        pooling_size=2,
        pool_q_only=True,
        decoder_size="0",
    ):
        values = dict(locals())
        for key in self.keys:
            setattr(self, key, self._coerce(key, values[key]))
        self._validate()

    @classmethod
    def _coerce(cls, key, value):
        kind = cls._types[key]
        if kind is bool and isinstance(value, str):
            if value.lower() not in ("true", "false"):
                raise ValueError(f"config key {key!r} must be a boolean, got {value!r}")
            return value.lower() == "true"
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"config key {key!r} must be an integer, got {value!r}")
        try:
            return kind(value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"config key {key!r} must be {kind.__name__}, got {value!r}") from e

    def _validate(self):
        choices = {
            "ff_activation": tuple(ops.ACTIVATIONS),
            "init": ("normal", "uniform", "truncated_normal"),
            "rel_attn_type": ("factorized", "rel_shift", "null"),
            "pooling_type": ("mean", "max"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(
                    f"config key {key!r} must be one of {allowed}, got {getattr(self, key)!r}"
                )
        if self.pooling_size != 2:
            raise ValueError(
                f"pooling_size={self.pooling_size}: only 2 is supported (the original hard-codes stride 2 "
                "in the decoder bridge and the input pipeline)"
            )
        for key in ("vocab_size", "d_embed", "d_model", "n_head", "d_head", "d_inner"):
            if getattr(self, key) <= 0:
                raise ValueError(f"config key {key!r} must be positive, got {getattr(self, key)}")
        blocks = parse_depth_string(self.block_size, "block_size")
        self.block_param_size = [p for p, _ in blocks]
        self.block_repeat_size = [r for _, r in blocks]
        self.block_depth = [p * r for p, r in blocks]
        self.n_block = len(blocks)
        if self.decoder_size in ("", "0"):
            self.decoder_param_size, self.decoder_repeat_size = 0, 1
        else:
            ((self.decoder_param_size, self.decoder_repeat_size),) = parse_depth_string(
                self.decoder_size, "decoder_size"
            )
        self.decoder_depth = self.decoder_param_size * self.decoder_repeat_size
        if self.n_block == 1 and self.decoder_depth > 0:
            raise ValueError(
                f"block_size={self.block_size!r} has one block, so decoder_size must be '0', "
                f"got {self.decoder_size!r}"
            )

    def to_dict(self):
        return {key: getattr(self, key) for key in self.keys}

    @classmethod
    def from_dict(cls, values, source="config"):
        unknown = sorted(set(values) - set(cls.keys))
        if unknown:
            raise ValueError(
                f"{source}: unknown config key(s) {unknown}; valid keys: {list(cls.keys)}"
            )
        missing = [key for key in cls._required if key not in values]
        if missing:
            raise ValueError(f"{source}: missing required config key(s) {missing}")
        return cls(**values)

    @classmethod
    def init_from_json(cls, json_path, overrides=None):
        """Reads `net_config.json`; `overrides` (the scripts' --overwrite_keys) replaces individual keys."""
        try:
            with tf.io.gfile.GFile(json_path) as f:
                values = json.load(f)
        except tf.errors.NotFoundError as e:
            raise ValueError(f"model config {json_path} does not exist") from e
        except json.JSONDecodeError as e:
            raise ValueError(f"model config {json_path} is not valid JSON: {e}") from e
        if not isinstance(values, dict):
            raise ValueError(f"model config {json_path} must hold a JSON object")
        values.update(overrides or {})
        return cls.from_dict(values, source=json_path)

    @classmethod
    def init_from_flags(cls, flag_values=None):
        """Builds a config from an object holding the 20 keys as attributes (e.g. absl FLAGS).

        Without an argument (the seed's `ModelConfig.init_from_flags()`) it reads the parsed absl flags;
        an unset `--vocab_size` is then the size of the `--tokenizer_path` vocabulary, as the original's
        `setup_special_ids` made it.
        """
        if flag_values is None:
            values = data_utils.parsed_flag_values("ModelConfig.init_from_flags()", cls.keys)
            if values["vocab_size"] is None:
                values["vocab_size"] = tokenization.get_tokenizer().get_vocab_size()
            return cls(**values)
        missing = [key for key in cls.keys if not hasattr(flag_values, key)]
        if missing:
            raise ValueError(f"flags object lacks config key(s) {missing}")
        return cls(**{key: getattr(flag_values, key) for key in cls.keys})

    def to_json(self, json_path):
        """Writes the original format (indent 4, sorted keys), under a temporary name first."""
        data_utils.atomic_write_text(
            json_path, json.dumps(self.to_dict(), indent=4, sort_keys=True)
        )

    def __eq__(self, other):
        return isinstance(other, ModelConfig) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return f"ModelConfig({self.to_dict()})"


def pooled_lengths(net_config, seq_len, truncate_seq=True):
    """The sequence length seen by each block, e.g. [128, 64, 32] for 3 blocks."""
    lengths = [seq_len]
    for _ in range(net_config.n_block - 1):
        lengths.append(ops.pooled_length(lengths[-1], net_config.separate_cls, truncate_seq))
    return lengths


def check_seq_len(net_config, seq_len, truncate_seq=True, use_decoder=False):
    """Raises a clear ValueError when pooling cannot handle `seq_len` (instead of a shape error deep inside)."""
    truncate = truncate_seq and net_config.separate_cls
    n_pool = net_config.n_block - 1
    minimum = 2 if net_config.separate_cls else 1
    lengths = pooled_lengths(net_config, seq_len, truncate_seq)
    if seq_len < minimum or (n_pool and lengths[-2] <= minimum):
        raise ValueError(
            f"seq_len={seq_len} is too short for {net_config.n_block} blocks (block lengths {lengths})"
        )
    if truncate and n_pool and seq_len % (2**n_pool):
        raise ValueError(
            f"seq_len={seq_len} must be a multiple of {2**n_pool} (2**(n_block-1)) with truncate_seq and "
            f"separate_cls, so every pooling halves the length exactly (block lengths would be {lengths})"
        )
    if use_decoder and not truncate and n_pool:
        stride = 2**n_pool
        covered = (
            1 + (lengths[-1] - 1) * stride if net_config.separate_cls else lengths[-1] * stride
        )
        if covered < seq_len:
            raise ValueError(
                f"seq_len={seq_len} cannot be upsampled back from {lengths[-1]} positions"
            )


REL_ATTN_ALGORITHMS = ("rel_shift", "factorized")


def rel_attn_algorithm(net_config, rel_attn_impl=None):
    """The algorithm that computes the relative position term of `net_config.rel_attn_type`.

    "rel_shift" and "factorized" compute the same function. The factorized algorithm contracts the queries
    with the position encodings over d_model in every head (n_head times the FLOPs of the content score) but
    needs no reshape, which suits the TPU; rel_shift scores 2 x seq_len distances over d_head and realigns
    them with a reshape (2 times the content score). So, as the original did (it switched "factorized" to
    "rel_shift" when not on TPU), a "factorized" config runs the factorized algorithm only under a
    TPUStrategy; the config itself, and the checkpoint, keep saying "factorized".

    Args:
      rel_attn_impl: None (that choice), or "rel_shift" / "factorized" to force an algorithm.
    Returns:
      "rel_shift", "factorized", or "null" for absolute position embeddings.
    """
    if rel_attn_impl is not None and rel_attn_impl not in REL_ATTN_ALGORITHMS:
        raise ValueError(
            f"rel_attn_impl must be one of {REL_ATTN_ALGORITHMS}, got {rel_attn_impl!r}"
        )
    if net_config.rel_attn_type == "null":
        if rel_attn_impl is not None:
            raise ValueError(
                f"rel_attn_impl={rel_attn_impl!r} needs a relative rel_attn_type, got 'null'"
            )
        return "null"
    if rel_attn_impl is not None:
        return rel_attn_impl
    if net_config.rel_attn_type == "factorized" and ops.under_tpu_strategy():
        return "factorized"
    return "rel_shift"


def _as_tensors(*values):
    """Python lists and numpy arrays as tensors, converted once; tensors and None pass through."""
    return [None if v is None else tf.convert_to_tensor(v) for v in values]


class _AttentionStructure:
    """What every attention layer of a block needs besides the hidden states.

    Attributes:
      algorithm: "rel_shift", "factorized" or "null", from `rel_attn_algorithm`.
      pos_enc: rel_shift: (encodings float [n_rows, d_model], shift); factorized: (enc_q_1, enc_q_2, enc_k_1),
        each float [len, d_model] (the original's enc_k_2 is implied by enc_k_1, see
        `ops.factorized_pos_score`); None for rel_attn_type "null".
      seg_mat: bool [batch_size, q_len, k_len], True where the segment term uses "same segment"; or None.
      func_mask: bool [q_len, k_len], False where the query or the key is `<cls>` (position 0).
      q_len, k_len, q_pow, k_pow: lengths and log2 strides of queries and keys (rel_shift bookkeeping).
    """

    def __init__(self, algorithm, pos_enc, seg_mat, func_mask, q_len, k_len, q_pow, k_pow):
        self.algorithm = algorithm
        self.pos_enc = pos_enc
        self.seg_mat = seg_mat
        self.func_mask = func_mask
        self.q_len, self.k_len, self.q_pow, self.k_pow = q_len, k_len, q_pow, k_pow


class FunnelTFM(tf.Module):
    """Funnel-Transformer: embedding, pooled encoder blocks, optional upsampling decoder, task heads.

    `scope` is the checkpoint prefix: "model" for the main model (discriminator), "generator" for the ELECTRA
    generator, which consumes the main model's input embedding. `rel_attn_impl` forces the algorithm of the
    relative attention ("rel_shift" or "factorized"); by default `rel_attn_algorithm` chooses it. `seed`
    (an int) makes the random initial values a function of the seed and the variable's name, so two
    models built alike start alike (the engine passes `--seed`). `recompute` (the engine's
    `--recompute`) keeps only each layer's inputs for the backward pass and recomputes the rest
    (`tf.recompute_grad`), with the same dropout masks: less memory for about one more forward pass.
    """

    def __init__(self, net_config, scope="model", rel_attn_impl=None, seed=0, recompute=False):
        super().__init__(name=scope)
        rel_attn_algorithm(net_config, rel_attn_impl)  # validates
        self.net_config = net_config
        self.scope = scope
        self.rel_attn_impl = rel_attn_impl
        self.seed = seed
        self.recompute = recompute
        self._vars = {}
        self._restore_from = None
        self._initialised_after_load = set()

    @classmethod
    def from_pretrained(
        cls,
        model_dir,
        checkpoint=None,
        tokenizer_type=None,
        tokenizer_path=None,
        uncased=None,
        scope="model",
        rel_attn_impl=None,
    ):
        """A model with every variable of its checkpoint loaded, and its tokenizer, from one directory.

        `model_dir` is a released checkpoint directory (e.g. `B4-4-4H768-ELEC-TF`) or one our scripts
        wrote: `net_config.json`, the checkpoint, and a vocabulary. The encoder, and the decoder when the
        checkpoint has it, are created and loaded now; heads saved in the checkpoint (a finetuned
        classifier's) are loaded when first called.

        Args:
          model_dir: the directory.
          checkpoint: a checkpoint prefix; default the newest checkpoint in `model_dir`.
          tokenizer_type, tokenizer_path, uncased: default the vocabulary found in `model_dir`, in this
            order: `vocab.uncased.txt` (word_piece, uncased), `vocab.cased.txt` (word_piece, cased),
            `vocab.txt` (word_piece, uncased), `*.model` (sent_piece, uncased unless its name says
            cased); the type and case of a given `tokenizer_path` default to what its name implies
            (`tokenization.get_model_dir_tokenizer`).
          scope, rel_attn_impl: as for the constructor.
        Returns:
          (FunnelTFM, tokenizer).
        Raises:
          ValueError: a file is missing, or the checkpoint lacks a variable of the config's encoder (the
            config does not describe the checkpoint).
        """
        net_config = ModelConfig.init_from_json(f"{model_dir}/net_config.json")
        tokenizer = tokenization.get_model_dir_tokenizer(
            model_dir, tokenizer_type, tokenizer_path, uncased
        )
        if tokenizer.get_vocab_size() != net_config.vocab_size:
            raise ValueError(
                f"{tokenizer.path} has {tokenizer.get_vocab_size()} entries but {model_dir}/"
                f"net_config.json says vocab_size {net_config.vocab_size}"
            )
        checkpoint = model_utils.resolve_checkpoint(checkpoint or model_dir)
        model = cls(net_config, scope, rel_attn_impl)
        report = model_utils.init_from_checkpoint(model, checkpoint)
        # Creating the encoder (and the decoder, which a finetuned classifier's checkpoint lacks) restores
        # their variables; see `restore_on_creation`.
        has_decoder = any(n.startswith(f"{scope}/decoder/") for n in report.deferred)
        ids = tf.zeros([1, 4 * 2 ** (net_config.n_block - 1)], tf.int32)
        model.extract_hiddens(ids, False, seg_id=ids, use_decoder=has_decoder)
        absent = sorted(set(model.named_variables()) - set(report.deferred))
        if absent:
            raise ValueError(
                f"checkpoint {checkpoint} lacks {len(absent)} variable(s) of {model_dir}/"
                f"net_config.json, e.g. {', '.join(absent[:3])}"
            )
        return model, tokenizer

    # ----------------------------------------------------------------------------------------- variables
    def named_variables(self):
        """Every variable created so far, keyed by its checkpoint name."""
        return dict(self._vars)

    def restore_on_creation(self, checkpoint_values):
        """Variables created from now on take their value from this checkpoint when it has their name.

        TF2's deferred restoration, for name-based checkpoints: `model_utils.init_from_checkpoint` calls
        this, so a head or the decoder first called after a load gets the checkpoint's values, never random
        ones. A later load replaces the earlier one.

        Args:
          checkpoint_values: a `model_utils.CheckpointValues` (anything with `get(name, shape)` returning
            a numpy value or None).
        """
        self._restore_from = checkpoint_values

    def _log_initialised_after_load(self, full_name):
        """Says once per part (`model/decoder`, a head) that a variable created after a load was not in
        the checkpoint; a warning for the pretrained parts (`model_utils.pretrained_part`)."""
        pretrained = model_utils.pretrained_part(full_name)
        part = pretrained or "/".join(full_name.split("/")[:2])
        if part in self._initialised_after_load:
            return
        self._initialised_after_load.add(part)
        if pretrained:
            model_utils.warn_randomly_initialised([full_name], self._restore_from.path)
        else:
            logging.info(
                "New head %s (not in %s): initialised randomly", part, self._restore_from.path
            )

    def _initial_value(self, name, shape):
        """The config's random initialisation of `name`, a function of (`seed`, `name`) only.

        Keyed by the name, not by the order of creation, so a variable gets the same value whichever head
        or path creates it first.
        """
        cfg = self.net_config
        seed = [self.seed, zlib.crc32(name.encode("utf-8"))]
        if cfg.init == "uniform":
            return tf.random.stateless_uniform(shape, seed, -cfg.init_range, cfg.init_range)
        if cfg.init == "normal":
            return tf.random.stateless_normal(shape, seed, stddev=cfg.init_std)
        return tf.random.stateless_truncated_normal(shape, seed, stddev=cfg.init_std)

    def _var(self, name, shape, dtype, init="random"):
        """Returns the variable `{scope}/{name}` cast to `dtype`, creating it on first use."""
        full_name = f"{self.scope}/{name}"
        var = self._vars.get(full_name)
        if var is None:
            # Lifted out of any tf.function being traced, like TF1 get_variable at graph-build time;
            # no enclosing name scope may prefix the checkpoint name.
            restored = (
                None if self._restore_from is None else self._restore_from.get(full_name, shape)
            )
            with tf.init_scope(), tf.compat.v1.name_scope(None):
                if restored is None and self._restore_from is not None:
                    self._log_initialised_after_load(full_name)
                if restored is not None:
                    value = restored
                    logging.info(
                        "Restored at creation from %s: %s", self._restore_from.path, full_name
                    )
                elif init == "zeros":
                    value = tf.zeros(shape)
                elif init == "ones":
                    value = tf.ones(shape)
                else:
                    value = self._initial_value(full_name, shape)
                var = tf.Variable(value, name=full_name, dtype=tf.float32)
            self._vars[full_name] = var
        elif var.shape.as_list() != list(shape):
            raise ValueError(
                f"variable {full_name} exists with shape {var.shape}, requested {shape}"
            )
        return tf.cast(var, dtype)

    def _dense(self, name, x, out_shape, use_bias=True, activation=None, n_in=1):
        in_shape = x.shape.as_list()[-n_in:]
        kernel = self._var(f"{name}/kernel", in_shape + list(out_shape), x.dtype)
        bias = self._var(f"{name}/bias", list(out_shape), x.dtype, "zeros") if use_bias else None
        return ops.dense(x, kernel, bias, activation, n_in)

    def _layer_norm_params(self, name, dim):
        gamma = self._var(f"{name}/gamma", [dim], tf.float32, "ones")
        beta = self._var(f"{name}/beta", [dim], tf.float32, "zeros")
        return gamma, beta

    def _layer_norm(self, name, x):
        return ops.layer_norm(x, *self._layer_norm_params(name, x.shape[-1]))

    def _sublayer_output(self, scope, dense_name, residual, x, is_training, n_in=1):
        """`{scope}/layer_norm`(residual + dropout(dense `{scope}/{dense_name}`(x))), in one fused kernel
        after the matmul.

        Args:
          residual: float [batch_size, len, d_model]; x: float [batch_size, len, *in_dims].
        """
        d_model = residual.shape[-1]
        y = self._dense(f"{scope}/{dense_name}", x, [d_model], use_bias=False, n_in=n_in)
        bias = self._var(f"{scope}/{dense_name}/bias", [d_model], x.dtype, "zeros")
        gamma, beta = self._layer_norm_params(f"{scope}/layer_norm", d_model)
        return ops.post_layer_norm(
            residual, y, bias, gamma, beta, self.net_config.dropout, is_training
        )

    # --------------------------------------------------------------------------------------- embedding
    def input_embedding(
        self, inputs, is_training, seg_id=None, use_tpu=False, use_bfloat16=False, precision=None
    ):
        """Word embedding (+ absolute position/segment embeddings for rel_attn_type "null"), layer norm, dropout.

        Args:
          inputs: int32 [batch_size, seq_len] token ids.
          seg_id: int32 [batch_size, seq_len] or None; used only by rel_attn_type "null".
          use_tpu: look up by one-hot matmul (faster on TPU) instead of a gather.
        Returns:
          (embedding float [batch_size, seq_len, d_embed] in the compute dtype,
           lookup table float32 variable [vocab_size, d_embed], shared with the LM heads).
        """
        cfg = self.net_config
        dtype = ops.compute_dtype(use_bfloat16, precision)
        self._var("input/word_embedding/lookup_table", [cfg.vocab_size, cfg.d_embed], dtype)
        table = self._vars[f"{self.scope}/input/word_embedding/lookup_table"]
        if use_tpu:
            embed = tf.einsum(
                "blv,ve->ble",
                tf.one_hot(inputs, cfg.vocab_size, dtype=dtype),
                tf.cast(table, dtype),
            )
        else:
            # A gather from the variable itself would put it in copy-on-read mode: every later read
            # (the optimizer's) would copy the whole table.
            embed = tf.cast(tf.gather(table.value(), inputs), dtype)
        if cfg.rel_attn_type == "null":
            seq_len = inputs.shape[1]
            pos_table = self._var(
                "input/position_embedding/lookup_table", [512, cfg.d_embed], dtype
            )
            if seq_len > 512:
                raise ValueError(f"rel_attn_type 'null' supports seq_len <= 512, got {seq_len}")
            embed += pos_table[None, :seq_len]
            if seg_id is not None:
                seg_table = self._var(
                    "input/segment_embedding/lookup_table", [2, cfg.d_embed], dtype
                )
                embed += tf.gather(seg_table, seg_id % 2)
        embed = self._layer_norm("input/layer_norm", embed)
        return ops.dropout(embed, cfg.dropout, is_training), table

    # -------------------------------------------------------------------------- attention structures
    def _pos_enc_rel_shift(self, q_len, q_pow, k_len, k_pow, is_training, dtype):
        positions, shift = ops.rel_shift_positions(q_len, q_pow, k_len, k_pow)
        sin, cos = ops.sinusoid(tf.constant(list(positions), tf.float32), self.net_config.d_model)
        sin = ops.dropout(sin, self.net_config.dropout, is_training)
        cos = ops.dropout(cos, self.net_config.dropout, is_training)
        return tf.cast(tf.concat([sin, cos], axis=-1), dtype), shift

    def _pos_enc_factorized(self, seq_len, is_training, dtype):
        # Positions centred on 0; only differences matter, so the offset cancels.
        positions = tf.range(-seq_len // 2, seq_len // 2, dtype=tf.float32)
        sin, cos = ops.sinusoid(positions, self.net_config.d_model)
        sin_q = ops.dropout(sin, self.net_config.dropout, is_training)
        cos_q = ops.dropout(cos, self.net_config.dropout, is_training)
        encodings = (
            tf.concat([sin_q, sin_q], axis=-1),
            tf.concat([cos_q, cos_q], axis=-1),
            tf.concat([cos, sin], axis=-1),
        )
        return tuple(tf.cast(e, dtype) for e in encodings)

    def _init_attn_structure(self, seq_len, seg_id, is_training, dtype):
        cfg = self.net_config
        algorithm = rel_attn_algorithm(cfg, self.rel_attn_impl)
        if algorithm == "rel_shift":
            pos_enc = self._pos_enc_rel_shift(seq_len, 0, seq_len, 0, is_training, dtype)
        elif algorithm == "factorized":
            pos_enc = self._pos_enc_factorized(seq_len, is_training, dtype)
        else:
            pos_enc = None
        seg_mat = None
        if seg_id is not None and cfg.rel_attn_type != "null":
            same = tf.equal(seg_id[:, :, None], seg_id[:, None, :])
            is_cls = tf.equal(seg_id, data_utils.SEG_ID_CLS)
            seg_mat = same | is_cls[:, :, None] | is_cls[:, None, :]
        # The original zeroes the position/segment terms of <cls> whether or not separate_cls is set.
        func_mask = tf.pad(tf.ones([seq_len - 1, seq_len - 1], tf.bool), [[1, 0], [1, 0]])
        return _AttentionStructure(algorithm, pos_enc, seg_mat, func_mask, seq_len, seq_len, 0, 0)

    def _pool_structure(self, struct, block_idx, pool_q, pool_k, is_training, truncate_seq):
        """Pools the query side and/or the key side of an attention structure for block `block_idx`."""
        cfg = self.net_config

        def pool(x, axis):
            return ops.stride_pool(x, axis, cfg.separate_cls, truncate_seq)

        q_len, k_len, q_pow, k_pow = struct.q_len, struct.k_len, struct.q_pow, struct.k_pow
        seg_mat, func_mask, pos_enc = struct.seg_mat, struct.func_mask, struct.pos_enc
        if pool_q:
            q_len, q_pow = ops.pooled_length(q_len, cfg.separate_cls, truncate_seq), block_idx
            func_mask = pool(func_mask, 0)
            seg_mat = pool(seg_mat, 1) if seg_mat is not None else None
        if pool_k:
            k_len, k_pow = ops.pooled_length(k_len, cfg.separate_cls, truncate_seq), block_idx
            func_mask = pool(func_mask, 1)
            seg_mat = pool(seg_mat, 2) if seg_mat is not None else None
        if struct.algorithm == "rel_shift":
            dtype = pos_enc[0].dtype
            pos_enc = self._pos_enc_rel_shift(q_len, q_pow, k_len, k_pow, is_training, dtype)
        elif struct.algorithm == "factorized":
            enc_q_1, enc_q_2, enc_k_1 = pos_enc
            if pool_q:
                enc_q_1, enc_q_2 = pool(enc_q_1, 0), pool(enc_q_2, 0)
            if pool_k:
                enc_k_1 = pool(enc_k_1, 0)
            pos_enc = (enc_q_1, enc_q_2, enc_k_1)
        return _AttentionStructure(
            struct.algorithm, pos_enc, seg_mat, func_mask, q_len, k_len, q_pow, k_pow
        )

    # ------------------------------------------------------------------------------------------ layers
    def _head_projections(self, scope, x, names):
        """The projections `{scope}/{name}` of `x` to heads (bias for all but "q"), in one matmul.

        The kernels are concatenated at call time (the variables keep their names and shapes): one wide
        matmul is faster than several narrow ones.

        Args:
          x: float [batch_size, len, d_model].
          names: projection names among "q", "k", "v".
        Returns:
          One float [n_head, batch_size, len, d_head] per name: heads first, so that every attention
          product is a plain batched matmul, and the batch-shared position projection one matmul per head
          over all batch_size x len queries.
        """
        cfg = self.net_config
        shape = [cfg.d_model, cfg.n_head, cfg.d_head]
        kernel = tf.stack([self._var(f"{scope}/{n}/kernel", shape, x.dtype) for n in names], axis=1)
        heads = tf.transpose(ops.dense(x, kernel), [2, 3, 0, 1, 4])
        outputs = []
        for name, head in zip(names, tf.unstack(heads, axis=0), strict=True):
            if name != "q":
                head += self._var(f"{scope}/{name}/bias", shape[1:], x.dtype, "zeros")[
                    :, None, None
                ]
            outputs.append(head)
        return outputs

    def _rel_attn(self, prefix, q, kv, struct, attn_mask, is_training):
        """Relative multi-head attention with post-layer-norm; the residual is the (pooled) query.

        Args:
          q: float [batch_size, q_len, d_model]; kv: float [batch_size, k_len, d_model].
          attn_mask: float [batch_size, k_len], 1.0 for padded keys.
        Returns:
          float [batch_size, q_len, d_model].
        """
        cfg = self.net_config
        n_head, d_head, d_model, dtype = cfg.n_head, cfg.d_head, cfg.d_model, q.dtype
        scale = 1.0 / (d_head**0.5)
        scope = f"{prefix}/rel_attn"
        if q is kv:
            q_head, k_head, v_head = self._head_projections(scope, q, ("q", "k", "v"))
        else:
            (q_head,) = self._head_projections(scope, q, ("q",))
            k_head, v_head = self._head_projections(scope, kv, ("k", "v"))
        q_head *= scale
        r_w_bias = self._var(f"{scope}/r_w_bias", [n_head, d_head], dtype)
        r_r_bias = self._var(f"{scope}/r_r_bias", [n_head, d_head], dtype)
        r_kernel = self._var(f"{scope}/r/kernel", [d_model, n_head, d_head], dtype)
        r_s_bias = self._var(f"{scope}/r_s_bias", [n_head, d_head], dtype)
        seg_embed = self._var(f"{scope}/seg_embed", [2, n_head, d_head], dtype)

        # Every score below is [n_head, batch_size, q_len, k_len].
        score = tf.matmul(q_head + r_w_bias[:, None, None] * scale, k_head, transpose_b=True)
        pos_score, seg = None, None
        if struct.algorithm != "null":
            q_r = q_head + r_r_bias[:, None, None] * scale
            if struct.algorithm == "rel_shift":
                pos_enc, shift = struct.pos_enc
                r_head = tf.einsum("rd,dnh->nhr", pos_enc, r_kernel)
                # The distance encodings are shared by the batch: one [batch_size x q_len, n_rows]
                # product per head instead of a broadcast batched matmul.
                rows = tf.matmul(tf.reshape(q_r, [n_head, -1, d_head]), r_head)
                rows = tf.reshape(rows, ops.static_shape(q_r)[:3] + [r_head.shape[-1]])
                pos_score = ops.rel_shift(rows, struct.k_len, shift)
            else:
                pos_score = ops.factorized_pos_score(
                    tf.einsum("nbih,dnh->nbid", q_r, r_kernel), *struct.pos_enc
                )
            if struct.seg_mat is not None:
                seg_score = tf.einsum(
                    "nbih,snh->nbis", q_head + r_s_bias[:, None, None] * scale, seg_embed
                )
                seg = (seg_score, struct.seg_mat)
        prob = ops.attention_probs(
            score, pos_score, seg, struct.func_mask, attn_mask, cfg.dropatt, is_training
        )
        attn_vec = tf.transpose(tf.matmul(prob, v_head), [1, 2, 0, 3])
        return self._sublayer_output(scope, "o", q, attn_vec, is_training, n_in=2)

    def _ffn(self, prefix, x, is_training):
        cfg = self.net_config
        scope = f"{prefix}/ff"
        h = self._dense(f"{scope}/layer_1", x, [cfg.d_inner], activation=cfg.ff_activation)
        h = ops.dropout(h, cfg.dropact, is_training)
        return self._sublayer_output(scope, "layer_2", x, h, is_training)

    def _layer(self, prefix, q, kv, struct, attn_mask, is_training):
        def layer(q, kv):
            attn = self._rel_attn(prefix, q, kv, struct, attn_mask, is_training)
            return self._ffn(prefix, attn, is_training)

        if not is_training:
            return layer(q, kv)

        # Each layer draws its dropout masks from a seed of its own, drawn once outside it, so that the
        # recomputation in the backward pass draws the forward pass's masks, and a run with --recompute
        # draws the masks of one without.
        def seeded_layer(q, kv, seed):
            with ops.random_seed(seed):
                return layer(q, kv)

        seed = ops.draw_seed()
        # The first call creates the layer's variables, which tf.recompute_grad cannot hold.
        if self.recompute and f"{self.scope}/{prefix}/ff/layer_norm/gamma" in self._vars:
            return tf.recompute_grad(seeded_layer)(q, kv, seed)
        return seeded_layer(q, kv, seed)

    # ---------------------------------------------------------------------------------- encoder/decoder
    def encode(
        self,
        word_embed,
        is_training,
        seg_id=None,
        input_mask=None,
        use_decoder=False,
        truncate_seq=True,
    ):
        """Runs the encoder (and the decoder when asked) on an input embedding.

        The compute dtype is the dtype of `word_embed`. The ELECTRA generator calls this on the main model's
        embedding.

        Args:
          word_embed: float [batch_size, seq_len, d_embed].
          seg_id: int32 [batch_size, seq_len] or None.
          input_mask: float [batch_size, seq_len], 1.0 = padding; None = no padding.
          use_decoder: upsample and run the decoder to get full-length outputs.
          truncate_seq: with separate_cls, drop the last token before each pooling (original default).
        Returns:
          (output: decoder output [batch_size, seq_len, d_model] if use_decoder, else the last encoder hidden
             state [batch_size, pooled_len, d_model];
           encoder_hiddens: list with the output of every encoder layer application;
           ret_dict: {"embedding_output", "encoder_output", "block_outputs"} and, with the decoder,
             "bridge_output" and "decoder_hiddens").
        """
        cfg = self.net_config
        dtype = word_embed.dtype
        seq_len = word_embed.shape[1]
        if seq_len is None:
            raise ValueError("seq_len must be static (known when the computation is traced)")
        check_seq_len(cfg, seq_len, truncate_seq, use_decoder)
        if input_mask is None:
            input_mask = tf.zeros(tf.shape(word_embed)[:2], dtype)
        input_mask = tf.cast(input_mask, dtype)
        truncate = truncate_seq and cfg.separate_cls

        output = word_embed
        if cfg.d_embed != cfg.d_model:
            output = self._dense("encoder/input_projection", output, [cfg.d_model])

        hiddens, block_outputs = [], []
        attn_mask = input_mask
        block0_struct = self._init_attn_structure(seq_len, seg_id, is_training, dtype)
        struct = block0_struct
        layer_idx = 0
        for block_idx in range(cfg.n_block):
            pooled = None
            if block_idx > 0:
                pooled = ops.pool_tensor(output, cfg.pooling_type, cfg.separate_cls, truncate)
                struct = self._pool_structure(
                    struct, block_idx, True, not cfg.pool_q_only, is_training, truncate
                )
                if not cfg.pool_q_only:
                    attn_mask = ops.pool_tensor(attn_mask, "min", cfg.separate_cls, truncate)
            for _ in range(cfg.block_param_size[block_idx]):
                prefix = f"encoder/layer_{layer_idx}"
                for _ in range(cfg.block_repeat_size[block_idx]):
                    if pooled is not None:
                        kv = output if cfg.pool_q_only else pooled
                        output = self._layer(prefix, pooled, kv, struct, attn_mask, is_training)
                        pooled = None
                        if cfg.pool_q_only:
                            struct = self._pool_structure(
                                struct, block_idx, False, True, is_training, truncate
                            )
                            attn_mask = ops.pool_tensor(
                                attn_mask, "min", cfg.separate_cls, truncate
                            )
                    else:
                        output = self._layer(prefix, output, output, struct, attn_mask, is_training)
                    hiddens.append(output)
                layer_idx += 1
            block_outputs.append(output)

        ret_dict = {
            "embedding_output": word_embed,
            "encoder_output": output,
            "block_outputs": block_outputs,
        }
        if not use_decoder:
            return output, hiddens, ret_dict

        stride = 2 ** (cfg.n_block - 1)
        bridge = (
            ops.upsample(output, stride, seq_len, cfg.separate_cls, truncate) + block_outputs[0]
        )
        ret_dict["bridge_output"] = bridge
        output, decoder_hiddens = bridge, []
        for param_idx in range(cfg.decoder_param_size):
            prefix = f"decoder/layer_{sum(cfg.block_param_size) + param_idx}"
            for _ in range(cfg.decoder_repeat_size):
                output = self._layer(prefix, output, output, block0_struct, input_mask, is_training)
                decoder_hiddens.append(output)
        ret_dict["decoder_hiddens"] = decoder_hiddens
        return output, hiddens, ret_dict

    def extract_hiddens(
        self,
        inputs,
        is_training,
        seg_id=None,
        input_mask=None,
        use_decoder=False,
        use_tpu=False,
        use_bfloat16=False,
        precision=None,
        truncate_seq=True,
    ):
        """Hidden states of a batch (the seed's "Custom Usage" API).

        Args:
          inputs: int32 [batch_size, seq_len].
          is_training: enables dropout.
          seg_id: int32 [batch_size, seq_len]; <cls> = 2, segment A = 0, segment B = 1.
          input_mask: float [batch_size, seq_len], 1.0 = padding, 0.0 = real token.
          use_decoder: return the full-length decoder output instead of the pooled encoder output.
          use_tpu: one-hot embedding lookup.
          use_bfloat16 / precision: compute dtype ("float32", "bfloat16", "float16").
          truncate_seq: see `encode`.
        Returns:
          (last_hidden, encoder_hiddens, ret_dict) as in `encode`, in the compute dtype.
        """
        inputs, seg_id, input_mask = _as_tensors(inputs, seg_id, input_mask)
        self._check_inputs(inputs, seg_id, input_mask)
        word_embed, _ = self.input_embedding(
            inputs, is_training, seg_id, use_tpu, use_bfloat16, precision
        )
        return self.encode(word_embed, is_training, seg_id, input_mask, use_decoder, truncate_seq)

    @staticmethod
    def _check_inputs(inputs, seg_id, input_mask):
        ops.static_shape(inputs, 2, "inputs")
        if not inputs.dtype.is_integer:
            raise ValueError(f"inputs must be integer token ids, got {inputs.dtype}")
        for name, tensor in (("seg_id", seg_id), ("input_mask", input_mask)):
            if tensor is not None and tensor.shape.as_list() != inputs.shape.as_list():
                raise ValueError(f"{name} has shape {tensor.shape}, inputs has {inputs.shape}")

    # ---------------------------------------------------------------------------------------- heads
    def summarize_sequence(self, hidden):
        """tanh(W h_cls + b) under `sequnece_summary/summary` (sic: the original's spelling).

        Args:
          hidden: float [batch_size, seq_len, d_model].
        Returns:
          float [batch_size, d_model], compute dtype.
        """
        return self._dense(
            "sequnece_summary/summary", hidden[:, 0], [self.net_config.d_model], activation="tanh"
        )

    def get_pooled_output(
        self,
        inputs,
        is_training,
        seg_id=None,
        input_mask=None,
        use_tpu=False,
        use_bfloat16=False,
        precision=None,
        truncate_seq=True,
    ):
        """A single vector per sequence from the encoder.

        Returns:
          (summary float [batch_size, d_model], output float [batch_size, pooled_len, d_model]).
        """
        output, _, _ = self.extract_hiddens(
            inputs,
            is_training,
            seg_id,
            input_mask,
            False,
            use_tpu,
            use_bfloat16,
            precision,
            truncate_seq,
        )
        return self.summarize_sequence(output), output

    def _logits(self, name, hidden, n_out, is_training):
        hidden = ops.dropout(hidden, self.net_config.dropout, is_training)
        return tf.cast(self._dense(name, hidden, [n_out]), tf.float32)

    def classification_loss(self, hidden, labels, n_class, is_training, scope):
        """Dropout, dense `{scope}/logit`, softmax cross-entropy.

        Args:
          hidden: float [batch_size, d_model]; labels: int32 [batch_size].
        Returns:
          (per_example_loss float32 [batch_size], logits float32 [batch_size, n_class]).
        """
        logits = self._logits(f"{scope}/logit", hidden, n_class, is_training)
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        per_example_loss = -tf.reduce_sum(tf.one_hot(labels, n_class) * log_probs, axis=-1)
        return per_example_loss, logits

    def regression_loss(self, hidden, labels, is_training, scope):
        """Dropout, dense `{scope}/logit` to one value, squared error (no 1/2, as the original).

        Returns:
          (per_example_loss float32 [batch_size], predictions float32 [batch_size]).
        """
        predictions = self._logits(f"{scope}/logit", hidden, 1, is_training)[:, 0]
        return tf.square(predictions - tf.cast(labels, tf.float32)), predictions

    def get_classification_loss(
        self,
        labels,
        inputs,
        n_class,
        is_training,
        scope,
        seg_id=None,
        input_mask=None,
        use_tpu=False,
        use_bfloat16=False,
        precision=None,
        truncate_seq=True,
    ):
        """Sequence classification from the pooled summary; see `classification_loss`."""
        summary, _ = self.get_pooled_output(
            inputs, is_training, seg_id, input_mask, use_tpu, use_bfloat16, precision, truncate_seq
        )
        return self.classification_loss(summary, labels, n_class, is_training, scope)

    def get_regression_loss(
        self,
        labels,
        inputs,
        is_training,
        scope,
        seg_id=None,
        input_mask=None,
        use_tpu=False,
        use_bfloat16=False,
        precision=None,
        truncate_seq=True,
    ):
        """Sequence regression (STS-B) from the pooled summary; see `regression_loss`."""
        summary, _ = self.get_pooled_output(
            inputs, is_training, seg_id, input_mask, use_tpu, use_bfloat16, precision, truncate_seq
        )
        return self.regression_loss(summary, labels, is_training, scope)

    def get_race_loss(
        self,
        labels,
        inputs,
        is_training,
        seg_id=None,
        input_mask=None,
        use_tpu=False,
        use_bfloat16=False,
        precision=None,
        n_choice=4,
        truncate_seq=True,
    ):
        """Multiple choice: the choices are concatenated along time; one score each under `race/logits`.

        Args:
          labels: int32 [batch_size]; inputs/seg_id/input_mask: [batch_size, n_choice * seq_len].
        Returns:
          (per_example_loss float32 [batch_size], logits float32 [batch_size, n_choice]).
        """
        inputs, seg_id, input_mask = _as_tensors(inputs, seg_id, input_mask)
        batch_size = tf.shape(inputs)[0]
        seq_len = inputs.shape[1] // n_choice

        def flatten(x):
            return None if x is None else tf.reshape(x, [-1, seq_len])

        summary, _ = self.get_pooled_output(
            flatten(inputs),
            is_training,
            flatten(seg_id),
            flatten(input_mask),
            use_tpu,
            use_bfloat16,
            precision,
            truncate_seq,
        )
        logits = tf.reshape(
            self._logits("race/logits", summary, 1, is_training), [batch_size, n_choice]
        )
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        return -tf.reduce_sum(tf.one_hot(labels, n_choice) * log_probs, axis=-1), logits

    def lm_logits(self, hidden, lookup_table):
        """`lm_proj` (dense d_model -> d_embed with ff_activation, layer norm) then the tied softmax.

        Args:
          hidden: float [..., d_model]; lookup_table: float32 [vocab_size, d_embed] (the input embedding).
        Returns:
          float32 [..., vocab_size].
        """
        cfg = self.net_config
        h = self._dense("lm_proj/dense", hidden, [cfg.d_embed], activation=cfg.ff_activation)
        h = self._layer_norm("lm_proj/layer_norm", h)
        bias = self._var("lm_loss/bias", [cfg.vocab_size], tf.float32, "zeros")
        # A tensordot, not einsum("...e,ve->...v"): TF's einsum gradient for the table materializes the
        # broadcast product [..., vocab_size, d_embed] before summing it (54 GB for a B4-4-4H768 MLM step).
        logits = tf.tensordot(h, tf.cast(lookup_table, h.dtype), [[h.shape.rank - 1], [1]])
        return tf.cast(logits, tf.float32) + bias

    def lm_loss(self, hidden, target, lookup_table, target_mapping=None):
        """Masked-LM cross-entropy at the target positions.

        Args:
          hidden: float [batch_size, seq_len, d_model].
          target: int32 [batch_size, num_predict] (or [batch_size, seq_len] without target_mapping).
          target_mapping: float [batch_size, num_predict, seq_len] one-hot rows, or None.
        Returns:
          (per-target loss float32 [batch_size, num_predict], logits float32 [..., vocab_size]).
        """
        if target_mapping is not None:
            hidden = tf.einsum("bpl,bld->bpd", tf.cast(target_mapping, hidden.dtype), hidden)
        logits = self.lm_logits(hidden, lookup_table)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=logits)
        return loss, logits

    def get_mlm_loss(
        self,
        target,
        inputs,
        is_training,
        seg_id=None,
        input_mask=None,
        target_mapping=None,
        target_mask=None,
        use_tpu=False,
        use_bfloat16=False,
        precision=None,
        truncate_seq=True,
    ):
        """MLM objective: encoder (+ decoder when there is more than one block), LM head at the targets.

        Unlike the original (SPEC §10.13) the mean is weighted by `target_mask` when given, so padded
        target slots do not train the model to predict id 0.

        Returns:
          (loss float32 scalar, {"per_target_loss", "logits"}).
        """
        target, target_mapping, target_mask = _as_tensors(target, target_mapping, target_mask)
        output, _, _ = self.extract_hiddens(
            inputs,
            is_training,
            seg_id,
            input_mask,
            self.net_config.n_block > 1,
            use_tpu,
            use_bfloat16,
            precision,
            truncate_seq,
        )
        table = self._vars[f"{self.scope}/input/word_embedding/lookup_table"]
        per_target, logits = self.lm_loss(output, target, table, target_mapping)
        if target_mask is None:
            loss = tf.reduce_mean(per_target)
        else:
            weights = tf.cast(target_mask, tf.float32)
            loss = tf.reduce_sum(per_target * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
        return loss, {"per_target_loss": per_target, "logits": logits}

    def binary_logits(self, hidden):
        """ELECTRA discriminator head: `binary_proj` (dense + gelu) then a per-token logit.

        Args:
          hidden: float [batch_size, seq_len, d_model].
        Returns:
          float32 [batch_size, seq_len]; positive = original token (the original's convention).
        """
        d_model = self.net_config.d_model
        h = self._dense("binary_proj/dense", hidden, [d_model], activation="gelu")
        weight = self._var("binary_loss/weight", [d_model], h.dtype)
        bias = self._var("binary_loss/bias", [1], tf.float32, "zeros")
        return tf.cast(tf.einsum("bld,d->bl", h, weight), tf.float32) + bias

    def binary_loss(self, hidden, binary_target, pad_mask):
        """Sigmoid cross-entropy per token, averaged over non-padding tokens.

        Args:
          binary_target: int/bool [batch_size, seq_len], 1 = original token; pad_mask: float, 1.0 = padding.
        Returns:
          (loss float32 scalar, logits float32 [batch_size, seq_len]).
        """
        logits = self.binary_logits(hidden)
        per_token = tf.nn.sigmoid_cross_entropy_with_logits(
            labels=tf.cast(binary_target, tf.float32), logits=logits
        )
        weights = 1.0 - tf.cast(pad_mask, tf.float32)
        loss = tf.reduce_sum(per_token * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
        return loss, logits

    # ------------------------------------------------------------------------------------ SQuAD heads
    def _squad_start(
        self, output, p_mask, cls_index, use_masked_loss, is_training, use_answer_class
    ):
        """Start log-probabilities and the answerability logit (positive = unanswerable)."""
        start_logits = tf.cast(self._dense("start_logits/dense", output, [1])[..., 0], tf.float32)
        if use_masked_loss:
            start_logits = start_logits * (1.0 - p_mask) - 1e30 * p_mask
        start_log_probs = tf.nn.log_softmax(start_logits, axis=-1)
        if not use_answer_class:
            cls_logits = tf.gather(start_log_probs, cls_index, batch_dims=1)
            return start_log_probs, cls_logits
        start_probs = tf.cast(tf.exp(start_log_probs), output.dtype)
        start_feature = tf.einsum("bl,bld->bd", start_probs, output)
        cls_feature = tf.gather(output, cls_index, batch_dims=1)
        feature = tf.concat([start_feature, cls_feature], axis=-1)
        d_model = self.net_config.d_model
        feature = self._dense("answer_class/dense_0", feature, [d_model], activation="tanh")
        feature = ops.dropout(feature, self.net_config.dropout, is_training)
        cls_logits = self._dense("answer_class/dense_1", feature, [1], use_bias=False)
        return start_log_probs, tf.cast(cls_logits[:, 0], tf.float32)

    def _squad_end_log_probs(self, output, start_feature, p_mask, conditional_end, use_masked_loss):
        """End log-probabilities given one start representation per row.

        Args:
          output: float [batch, seq_len, d_model]; start_feature: float [batch, d_model] or None.
          p_mask: float32 [batch, seq_len], 1.0 where an answer cannot be.
        Returns:
          float32 [batch, seq_len].
        """
        if conditional_end:
            seq_len = output.shape[1]
            tiled = tf.tile(start_feature[:, None], [1, seq_len, 1])
            h = self._dense(
                "end_logits/dense_0",
                tf.concat([output, tiled], axis=-1),
                [self.net_config.d_model],
                activation="tanh",
            )
            h = self._layer_norm("end_logits/layer_norm", h)
            end_logits = self._dense("end_logits/dense_1", h, [1])
        else:
            end_logits = self._dense("end_logits/dense", output, [1])
        end_logits = tf.cast(end_logits[..., 0], tf.float32)
        if use_masked_loss:
            end_logits = end_logits * (1.0 - p_mask) - 1e30 * p_mask
        return tf.nn.log_softmax(end_logits, axis=-1)

    def _squad_encode(self, features, is_training, use_tpu, use_bfloat16, precision):
        """The SQuAD heads' inputs: (output [batch, seq_len, d_model], the full-length decoder output;
        p_mask float32 [batch, seq_len]; cls_index int32 [batch])."""
        output, _, _ = self.extract_hiddens(
            features["input_ids"],
            is_training,
            features["segment_ids"],
            features["input_mask"],
            True,
            use_tpu,
            use_bfloat16,
            precision,
        )
        p_mask = tf.cast(features["p_mask"], tf.float32)
        return output, p_mask, tf.cast(features["cls_index"], tf.int32)

    def get_squad_loss(
        self,
        features,
        is_training,
        use_answer_class=True,
        use_masked_loss=True,
        conditional_end=True,
        cls_loss_weight=0.5,
        ans_loss_weight=0.5,
        use_tpu=False,
        use_bfloat16=False,
        precision=None,
    ):
        """SQuAD training objective on the full-length (decoder) output, conditioned on the gold start.

        Args:
          features: dict with `input_ids` int32 [batch, seq_len], `segment_ids`, `input_mask` (1.0 = pad),
            `p_mask` float [batch, seq_len] (1.0 = cannot be part of the answer), `cls_index` int32 [batch],
            `start_positions`, `end_positions` int32 [batch], `is_impossible` float [batch].
        Returns:
          (per_example_loss float32 [batch],
           {"start_log_probs", "end_log_probs" float32 [batch, seq_len], "cls_logits" float32 [batch]}).
        """
        features = dict(zip(features, _as_tensors(*features.values()), strict=True))
        output, p_mask, cls_index = self._squad_encode(
            features, is_training, use_tpu, use_bfloat16, precision
        )
        start_positions = tf.cast(features["start_positions"], tf.int32)
        end_positions = tf.cast(features["end_positions"], tf.int32)
        start_log_probs, cls_logits = self._squad_start(
            output, p_mask, cls_index, use_masked_loss, is_training, use_answer_class
        )
        start_feature = (
            tf.gather(output, start_positions, batch_dims=1) if conditional_end else None
        )
        end_log_probs = self._squad_end_log_probs(
            output, start_feature, p_mask, conditional_end, use_masked_loss
        )
        start_loss = -tf.gather(start_log_probs, start_positions, batch_dims=1)
        end_loss = -tf.gather(end_log_probs, end_positions, batch_dims=1)
        per_example_loss = ans_loss_weight * (start_loss + end_loss)
        if use_answer_class:
            per_example_loss += cls_loss_weight * tf.nn.sigmoid_cross_entropy_with_logits(
                labels=tf.cast(features["is_impossible"], tf.float32), logits=cls_logits
            )
        outputs = {
            "start_log_probs": start_log_probs,
            "end_log_probs": end_log_probs,
            "cls_logits": cls_logits,
        }
        return per_example_loss, outputs

    def get_squad_predictions(
        self,
        features,
        start_n_top=5,
        end_n_top=5,
        use_answer_class=True,
        use_masked_loss=True,
        conditional_end=True,
        use_tpu=False,
        use_bfloat16=False,
        precision=None,
    ):
        """Beam over answer spans: the top starts, then for each the top ends (no dropout).

        Args:
          features: as `get_squad_loss`, without the labels.
        Returns:
          dict with `start_top_log_probs`, `start_top_index` [batch, start_n_top];
          `end_top_log_probs`, `end_top_index` [batch, start_n_top * end_n_top] (start-major);
          `cls_logits` float32 [batch].
        """
        features = dict(zip(features, _as_tensors(*features.values()), strict=True))
        output, p_mask, cls_index = self._squad_encode(
            features, False, use_tpu, use_bfloat16, precision
        )
        start_log_probs, cls_logits = self._squad_start(
            output, p_mask, cls_index, use_masked_loss, False, use_answer_class
        )
        start_top_log_probs, start_top_index = tf.math.top_k(start_log_probs, k=start_n_top)
        batch_size = tf.shape(output)[0]
        if conditional_end:
            # One row per (example, start candidate).
            start_feature = tf.reshape(
                tf.gather(output, start_top_index, batch_dims=1), [-1, output.shape[-1]]
            )
            repeated = tf.repeat(output, start_n_top, axis=0)
            end_log_probs = self._squad_end_log_probs(
                repeated,
                start_feature,
                tf.repeat(p_mask, start_n_top, axis=0),
                True,
                use_masked_loss,
            )
        else:
            end_log_probs = tf.repeat(
                self._squad_end_log_probs(output, None, p_mask, False, use_masked_loss),
                start_n_top,
                axis=0,
            )
        end_top_log_probs, end_top_index = tf.math.top_k(end_log_probs, k=end_n_top)
        return {
            "start_top_log_probs": start_top_log_probs,
            "start_top_index": start_top_index,
            "end_top_log_probs": tf.reshape(end_top_log_probs, [batch_size, -1]),
            "end_top_index": tf.reshape(end_top_index, [batch_size, -1]),
            "cls_logits": cls_logits,
        }
