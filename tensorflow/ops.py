"""Low-level ops of the Funnel-Transformer: dense, layer norm, activations, pooling, positional encodings.

Everything here is stateless: variables are owned by `modeling.FunnelTFM` and passed in already cast to the
compute dtype. Layer norm and the softmax normalisation run in float32 whatever the compute dtype.
"""

import contextlib
import functools
import math

import tensorflow as tf

# Large enough to remove padded keys from the softmax; applied in float32, so float16 cannot overflow.
INF = 1e6

PRECISIONS = {"float32": tf.float32, "bfloat16": tf.bfloat16, "float16": tf.float16}


def compute_dtype(use_bfloat16=False, precision=None):
    """Resolves the compute dtype from the seed's `use_bfloat16` switch or an explicit `precision` name."""
    if precision is None:
        return tf.bfloat16 if use_bfloat16 else tf.float32
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if use_bfloat16 and precision != "bfloat16":
        raise ValueError(f"use_bfloat16=True contradicts precision={precision!r}")
    return PRECISIONS[precision]


def static_shape(x, expected_rank=None, name="tensor"):
    """Returns the shape of `x` as a list, static dimensions as ints and unknown ones as scalar tensors."""
    static = x.shape.as_list()
    if expected_rank is not None and len(static) != expected_rank:
        raise ValueError(f"{name} must have rank {expected_rank}, got shape {x.shape}")
    dynamic = tf.shape(x)
    return [d if d is not None else dynamic[i] for i, d in enumerate(static)]


def dense(x, kernel, bias=None, activation=None, n_in=1):
    """Contracts the trailing `n_in` dims of `x` with the leading dims of `kernel` (the original `ops.dense`).

    Args:
      x: float [..., *in_dims].
      kernel: float [*in_dims, *out_dims].
      bias: float [*out_dims] or None.
      activation: a name of `ACTIVATIONS` or None; with the bias, one fused kernel (`fused`).
    Returns:
      float [..., *out_dims].
    """
    y = tf.tensordot(x, kernel, axes=n_in)
    if activation is not None:
        if bias is None:
            bias = tf.zeros(y.shape[x.shape.rank - n_in :], y.dtype)
        return _bias_activation(activation)(y, bias)
    if bias is not None:
        y = y + bias
    return y


def _layer_norm32(x, gamma, beta, epsilon):
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + epsilon) * gamma + beta


def _layer_norm_epsilon(dtype):
    return 1e-3 if dtype == tf.float16 else 1e-8


def layer_norm(x, gamma, beta):
    """Layer norm over the last axis, computed in float32 (epsilon 1e-8; 1e-3 for float16 inputs)."""
    y = _layer_norm32(tf.cast(x, tf.float32), gamma, beta, _layer_norm_epsilon(x.dtype))
    return tf.cast(y, x.dtype)


def gelu(x):
    """The tanh approximation of GELU used by the original (Hugging Face's `gelu_new`)."""
    cdf = 0.5 * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * tf.pow(x, 3))))
    return x * cdf


ACTIVATIONS = {"relu": tf.nn.relu, "gelu": gelu, "tanh": tf.tanh}


class _SeedStream:
    """A stateless random stream: every draw gets `fold_in(seed, n)` for the n-th draw of the trace."""

    def __init__(self, seed):
        self.seed = seed
        self.draws = 0

    def next_seed(self):
        self.draws += 1
        return tf.random.experimental.stateless_fold_in(self.seed, self.draws)


_seed_streams = []


@contextlib.contextmanager
def random_seed(seed):
    """Makes `dropout` and `uniform` inside the block deterministic functions of `seed`.

    The training engine enters this in every step with a seed made of `--seed`, the global step and the
    replica, so two runs of a command draw the same dropout masks, and a resumed run the masks it would
    have drawn. The n-th draw traced in the block uses `fold_in(seed, n)`: the same call site gets the same
    stream in every step's trace, and `tf.recompute_grad` redraws identical masks.

    Args:
      seed: int32/int64 [2], the stateless seed (a tensor: it may change every step).
    """
    _seed_streams.append(_SeedStream(tf.cast(seed, tf.int64)))
    try:
        yield
    finally:
        _seed_streams.pop()


def draw_seed():
    """A stateless seed, int64 [2]: the next of the stream under `random_seed`, else a random one.

    For a computation that must draw the same numbers twice, as a recomputed layer does.
    """
    if _seed_streams:
        return _seed_streams[-1].next_seed()
    return tf.random.uniform([2], maxval=tf.int64.max, dtype=tf.int64)


def uniform(shape, dtype=tf.float32):
    """Uniform [0, 1) numbers: stateless under `random_seed`, else TensorFlow's global generator."""
    if _seed_streams:
        return tf.random.stateless_uniform(shape, _seed_streams[-1].next_seed(), dtype=dtype)
    return tf.random.uniform(shape, dtype=dtype)


def dropout(x, rate, is_training):
    """Inverted dropout, active only when training; seeded under `random_seed`."""
    if not is_training or rate == 0.0:
        return x
    return _dropout(rate)(x, dropout_bits(x))


# ----------------------------------------------------------------------------------- fused element-wise
# A chain of element-wise ops costs a pass over memory per op, and TensorFlow's bfloat16 element-wise
# kernels are several times slower than its float32 ones. `fused` runs such a chain as one XLA kernel (in
# float32 inside), and its gradient as another that recomputes the chain; matmuls stay outside, in oneDNN.

_fusion_enabled = [True]


@contextlib.contextmanager
def xla_fusion(enabled):
    """Whether the fused element-wise chains (`fused`) traced in the block run as XLA kernels (the default)
    or as plain TensorFlow ops (the same math), e.g. for a graph that must run where XLA is not built in."""
    _fusion_enabled.append(enabled)
    try:
        yield
    finally:
        _fusion_enabled.pop()


def xla_kernel(fn):
    """`fn` as a tf.function that XLA compiles, traced once per input shape."""
    kernel = tf.function(fn, jit_compile=True, autograph=False)
    # Called on every shape of a model (each block length, each head, each variable shape), a kernel is
    # traced once per shape by design; run eagerly (a notebook, the first build), TensorFlow would log that
    # as suspicious retracing (a private switch of tf.function; the tests check that no warning shows).
    kernel._omit_frequent_tracing_warning = True
    return kernel


def fused(fn, linear=False):
    """`fn` as one XLA kernel forward and one backward, under `xla_fusion(True)`.

    Args:
      fn: a function of tensors (non-float ones get no gradient) returning one tensor; Python settings go in
        a closure, so build one `fused` function per setting (see the cached factories below).
      linear: `fn` is affine in its float inputs, so its gradient does not depend on their values: the
        backward pass keeps only their shapes.
    Returns:
      A function with `fn`'s signature. Its gradient recomputes `fn` inside the backward kernel, so nothing
      but the inputs is kept for the backward pass.
    """
    forward = xla_kernel(fn)

    def gradients(dy, args):
        floats = [a for a in args if a.dtype.is_floating]
        with tf.GradientTape() as tape:
            tape.watch(floats)
            y = fn(*args)
        grads = iter(tape.gradient(y, floats, output_gradients=dy, unconnected_gradients="zero"))
        return [next(grads) if a.dtype.is_floating else None for a in args]

    @xla_kernel
    def backward(dy, *args):
        return gradients(dy, args)

    @xla_kernel
    def linear_backward(dy, float_dtypes, *args):
        args = [a if d is None else tf.zeros(a, d) for a, d in zip(args, float_dtypes, strict=True)]
        return gradients(dy, args)

    @tf.custom_gradient
    def call(*args):
        if not linear:
            return forward(*args), lambda dy: backward(dy, *args)
        float_dtypes = tuple(a.dtype if a.dtype.is_floating else None for a in args)
        kept = [tf.shape(a) if a.dtype.is_floating else a for a in args]
        return forward(*args), lambda dy: linear_backward(dy, float_dtypes, *kept)

    @functools.wraps(fn)
    def run(*args):
        return call(*args) if _fusion_enabled[-1] else fn(*args)

    return run


@functools.cache
def _bias_activation(activation):
    def bias_activation(x, bias):
        y = ACTIVATIONS[activation](tf.cast(x, tf.float32) + tf.cast(bias, tf.float32))
        return tf.cast(y, x.dtype)

    return fused(bias_activation)


# Dropout draws 16 random bits per element (half the random words of a float32 uniform): an element is
# kept when its bits, read as int16, are >= the threshold, so the rate is a multiple of 1/65536.
def _keep_threshold(rate):
    dropped = round(rate * 65536)
    if not 0 <= dropped < 65536:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    return dropped - 32768, 65536 / (65536 - dropped)


def _apply_dropout(x, bits, rate):
    """float32 `x` with the elements whose int16 `bits` are below the rate's threshold zeroed, the others
    scaled so that the expectation is unchanged."""
    threshold, scale = _keep_threshold(rate)
    return tf.where(bits >= threshold, x * scale, tf.zeros_like(x))


def dropout_bits(x):
    """int16 random bits shaped like `x` (static or dynamic shape) for the fused dropouts: stateless under
    `random_seed`."""
    n = tf.size(x)
    words = tf.random.stateless_uniform(
        [(n + 1) // 2], draw_seed(), dtype=tf.int32, minval=None, maxval=None
    )
    bits = tf.reshape(tf.bitcast(words, tf.int16), [-1])
    static_n = x.shape.num_elements()
    if static_n is None or static_n % 2:
        bits = bits[:n]
    return tf.reshape(bits, tf.shape(x))


@functools.cache
def _dropout(rate):
    def dropout(x, bits):
        return tf.cast(_apply_dropout(tf.cast(x, tf.float32), bits, rate), x.dtype)

    return fused(dropout)


@functools.cache
def _post_layer_norm(rate):
    def post_layer_norm(residual, y, bias, gamma, beta, *bits):
        h = tf.cast(y, tf.float32) + tf.cast(bias, tf.float32)
        if bits:
            h = _apply_dropout(h, bits[0], rate)
        x = tf.cast(residual, tf.float32) + h
        return tf.cast(_layer_norm32(x, gamma, beta, _layer_norm_epsilon(y.dtype)), y.dtype)

    return fused(post_layer_norm)


def post_layer_norm(residual, y, bias, gamma, beta, rate, is_training):
    """`layer_norm(residual + dropout(y + bias))`, the end of every attention and feed-forward sublayer.

    Args:
      residual, y: float [..., d_model] in the compute dtype; bias: [d_model] in it too.
      gamma, beta: float32 [d_model].
    Returns:
      float [..., d_model] in the compute dtype.
    """
    if is_training and rate > 0.0:
        return _post_layer_norm(rate)(residual, y, bias, gamma, beta, dropout_bits(y))
    return _post_layer_norm(0.0)(residual, y, bias, gamma, beta)


# ------------------------------------------------------------------------------ attention probabilities
def under_tpu_strategy():
    strategy = tf.distribute.get_strategy()
    return isinstance(strategy, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy))


@functools.cache
def _bfloat16_softmax_is_accurate():
    """Whether TensorFlow's bfloat16 softmax on this machine's default device normalises in float32, as
    oneDNN's CPU kernel does (its outputs are then the float32 softmax rounded once). Where oneDNN has no
    bfloat16 kernel or is switched off (TF_ENABLE_ONEDNN_OPTS=0), Eigen's kernel sums in bfloat16: ~8% off."""
    with tf.init_scope():
        logits = tf.cast(tf.cast(tf.linspace(-8.0, 8.0, 4096), tf.bfloat16), tf.float32)
        exact = tf.nn.softmax(logits)
        low = tf.cast(tf.nn.softmax(tf.cast(logits, tf.bfloat16)), tf.float32)
        return float(tf.reduce_max(tf.abs(low - exact) / exact)) < 0.01


def _logits_dtype(dtype):
    """bfloat16 logits for a bfloat16 model where the softmax keeps float32 accuracy (its kernel then
    reads and writes half the bytes and runs twice as fast); float32 otherwise: INF would overflow
    float16, and a graph traced with `xla_fusion(False)` (the SavedModel export) must be exact anywhere."""
    low_precision = dtype == tf.bfloat16 and _fusion_enabled[-1] and not under_tpu_strategy()
    return tf.bfloat16 if low_precision and _bfloat16_softmax_is_accurate() else tf.float32


@functools.cache
def _attention_logits(logits_dtype, with_position, with_segment):
    def attention_logits(score, *terms):
        *terms, pos_mask, pad_mask_bits = terms
        logits = tf.cast(score, tf.float32)
        if with_position:
            position = tf.cast(terms[0], tf.float32)
            if with_segment:
                seg_score, seg_mat = terms[1:]
                same, other = (tf.cast(seg_score[..., i : i + 1], tf.float32) for i in (1, 0))
                position += tf.where(seg_mat[None], same, other)
            logits += tf.where(pos_mask, position, 0.0)
        pad_mask = tf.bitcast(pad_mask_bits, tf.float32)
        logits -= INF * pad_mask[None, :, None, :]
        return tf.cast(logits, logits_dtype)

    return fused(attention_logits, linear=True)


@functools.cache
def _softmax_dropout(rate, dtype):
    """softmax over the last axis, then dropout and the cast to `dtype`. The softmax is TensorFlow's kernel
    (oneDNN's on CPU, faster than XLA's); the rest, and the whole gradient, run as XLA kernels."""

    def dropped(prob, *bits):
        prob = tf.cast(prob, tf.float32)
        return tf.cast(_apply_dropout(prob, bits[0], rate) if bits else prob, dtype)

    def softmax_gradient(dy, prob, *bits):
        grad = tf.cast(dy, tf.float32)
        if bits:
            grad = _apply_dropout(grad, bits[0], rate)
        prob32 = tf.cast(prob, tf.float32)
        dlogits = (grad - tf.reduce_sum(grad * prob32, axis=-1, keepdims=True)) * prob32
        return tf.cast(dlogits, prob.dtype)

    forward, backward = xla_kernel(dropped), xla_kernel(softmax_gradient)

    @tf.custom_gradient
    def call(logits, *bits):
        prob = tf.nn.softmax(logits, axis=-1)
        # Without dropout or a cast the kernel would only copy the probabilities.
        out = forward(prob, *bits) if bits or prob.dtype != dtype else prob
        return out, lambda dy: [backward(dy, prob, *bits)] + [None] * len(bits)

    def run(logits, *bits):
        if _fusion_enabled[-1]:
            return call(logits, *bits)
        return dropped(tf.nn.softmax(logits, axis=-1), *bits)

    return run


def attention_probs(score, pos_score, seg, pos_mask, pad_mask, rate, is_training):
    """softmax over the keys of `score + (pos_score + segment term) * pos_mask - INF * pad_mask`, then
    attention dropout: the part of relative attention between its products.

    The logits are summed in float32; the softmax normalises in float32 (see `_logits_dtype` for the
    bfloat16 logits it may read).

    Args:
      score: float [n_head, batch_size, q_len, k_len] in the compute dtype, the content term.
      pos_score: like `score`, the position term; None for absolute position embeddings.
      seg: None, or (seg_score, seg_mat): float [n_head, batch_size, q_len, 2], the segment term of a
        different (0) and the same (1) segment, and bool [batch_size, q_len, k_len], True for the same
        segment.
      pos_mask: bool [q_len, k_len], False where the position and segment terms are left out (<cls>).
      pad_mask: float [batch_size, k_len], 1.0 for padded keys.
    Returns:
      float [n_head, batch_size, q_len, k_len] in the compute dtype.
    """
    dtype = score.dtype
    logits_dtype = _logits_dtype(dtype)
    terms = [score]
    if pos_score is not None:
        terms += [pos_score, *(seg or ())]
    # The padding mask as its bits: an integer input gets no gradient (`fused`), and a NaN in a mask
    # still reaches the loss.
    terms += [pos_mask, tf.bitcast(tf.cast(pad_mask, tf.float32), tf.int32)]
    logits = _attention_logits(logits_dtype, pos_score is not None, seg is not None)(*terms)
    bits = [dropout_bits(logits)] if is_training and rate > 0.0 else []
    return _softmax_dropout(rate if bits else 0.0, dtype)(logits, *bits)


def pool_tensor(x, mode, separate_cls, truncate_seq):
    """Pools the time axis by 2 (kernel = stride = 2, SAME padding), keeping `<cls>` out when separate_cls.

    Args:
      x: [batch_size, seq_len] or [batch_size, seq_len, d_model].
      mode: "mean", "max" or "min". "min" pools the padding mask: a pooled slot is padding only if every token
        in its window is padding.
      separate_cls: keep position 0 unpooled.
      truncate_seq: with separate_cls, drop the last token first so the length halves exactly.
    Returns:
      The pooled tensor, same rank.
    """
    if separate_cls:
        cls = x[:, :1]
        x = x[:, 1:-1] if truncate_seq else x[:, 1:]
    squeeze = x.shape.rank == 2
    if squeeze:
        x = x[:, :, None]
    if mode == "mean":
        pooled = tf.nn.avg_pool1d(x, ksize=2, strides=2, padding="SAME")
    elif mode == "max":
        pooled = tf.nn.max_pool1d(x, ksize=2, strides=2, padding="SAME")
    elif mode == "min":
        pooled = -tf.nn.max_pool1d(-x, ksize=2, strides=2, padding="SAME")
    else:
        raise ValueError(f"Unknown pooling mode {mode!r}")
    if squeeze:
        pooled = pooled[:, :, 0]
    return tf.concat([cls, pooled], axis=1) if separate_cls else pooled


def stride_pool(x, axis, separate_cls, truncate_seq):
    """Keeps the first element of every pooled pair along `axis` (positions, segments, function masks)."""
    ndims = x.shape.rank
    axis = axis % ndims

    def take(sl):
        index = [slice(None)] * ndims
        index[axis] = sl
        return x[tuple(index)]

    if not separate_cls:
        return take(slice(None, None, 2))
    body = take(slice(1, -1, 2)) if truncate_seq else take(slice(1, None, 2))
    return tf.concat([take(slice(None, 1)), body], axis=axis)


def pooled_length(seq_len, separate_cls, truncate_seq):
    """The length after one pooling step, as `pool_tensor` computes it."""
    if separate_cls:
        body = seq_len - 2 if truncate_seq else seq_len - 1
        return 1 + (body + 1) // 2
    return (seq_len + 1) // 2


def upsample(x, stride, target_len, separate_cls, truncate_seq):
    """Repeats every pooled position `stride` times to get back to `target_len` (the decoder bridge).

    Args:
      x: float [batch_size, pooled_len, d_model].
    Returns:
      float [batch_size, target_len, d_model].
    """
    if stride == 1:
        return x
    if separate_cls:
        cls = x[:, :1]
        x = x[:, 1:]
    x = tf.repeat(x, repeats=stride, axis=1)
    if separate_cls:
        if truncate_seq:
            x = tf.pad(x, [[0, 0], [0, stride - 1], [0, 0]])
        x = x[:, : target_len - 1]
        return tf.concat([cls, x], axis=1)
    return x[:, :target_len]


def sinusoid(positions, d_model):
    """`[sin(pos * f), cos(pos * f)]` with f_k = 1 / 10000^(k / (d_model / 2)).

    Args:
      positions: float32 [n].
    Returns:
      (sin, cos), each float32 [n, d_model // 2].
    """
    freq_seq = tf.range(0, d_model // 2, dtype=tf.float32)
    inv_freq = 1.0 / (10000.0 ** (freq_seq / (d_model // 2)))
    angles = positions[:, None] * inv_freq[None, :]
    return tf.sin(angles), tf.cos(angles)


def rel_shift_positions(q_len, q_pow, k_len, k_pow):
    """The descending relative distances whose encodings the rel_shift trick needs (SPEC §3.7).

    In a block with stride s = 2**pow, token j sits at position (1 - s) + j * s. Returns (positions, shift),
    positions a Python range of distances and shift = q_stride // k_stride.
    """
    q_stride, k_stride = 2**q_pow, 2**k_pow
    shift = q_stride // k_stride
    min_pos_k = 1 - k_stride
    max_pos_k = min_pos_k + (k_len - 1) * k_stride
    min_pos_q = 1 - q_stride
    ref_point = min_pos_q - min_pos_k
    max_dist = ref_point + shift * q_len * k_stride
    min_dist = min_pos_q - max_pos_k
    return range(max_dist, min_dist - 1, -k_stride), shift


def rel_shift(x, k_len, shift):
    """The Transformer-XL reshape trick: score[..., i, r] over distance rows -> score[..., i, j] over keys.

    Row r of query i holds distance max_dist - r * k_stride; the key j that sits at that distance is
    r = shift * (q_len - i) + j, which the reshape below realises without a gather.

    Args:
      x: [*lead, q_len, n_rows] (two leading dimensions: heads and batch).
    Returns:
      [*lead, q_len, k_len].
    """
    *lead, q_len, n_rows = static_shape(x)

    # The gradient pads back what the slices dropped: TF's generic strided-slice gradient is an order of
    # magnitude slower on these large score tensors.
    @tf.custom_gradient
    def shifted(x):
        y = tf.reshape(x, [*lead, n_rows, q_len])[:, :, shift:]
        y = tf.reshape(y, [*lead, q_len, n_rows - shift])[..., :k_len]

        def grad(dy):
            dx = tf.pad(dy, [[0, 0], [0, 0], [0, 0], [0, n_rows - shift - k_len]])
            dx = tf.reshape(dx, [*lead, n_rows - shift, q_len])
            dx = tf.pad(dx, [[0, 0], [0, 0], [shift, 0], [0, 0]])
            return tf.reshape(dx, [*lead, q_len, n_rows])

        return y, grad

    return shifted(x)


def factorized_pos_score(q_r, enc_q_1, enc_q_2, enc_k_1):
    """The position score of the factorized relative attention (SPEC §3.7), in one matmul.

    The original computes (q_r * enc_q_1) enc_k_1^T + (q_r * enc_q_2) enc_k_2^T with enc_k_1 = [cos_k, sin_k]
    and enc_k_2 = [-sin_k, cos_k]; the second product's halves fold into the first's, which halves the work.

    Args:
      q_r: [n_head, batch_size, q_len, d_model], the queries projected back to d_model per head.
      enc_q_1 = [sin_q, sin_q], enc_q_2 = [cos_q, cos_q]: [q_len, d_model] (with dropout when training).
      enc_k_1 = [cos_k, sin_k]: [k_len, d_model].
    Returns:
      [n_head, batch_size, q_len, k_len].
    """
    x, y = q_r * enc_q_1, q_r * enc_q_2
    x_1, x_2 = tf.split(x, 2, axis=-1)
    y_1, y_2 = tf.split(y, 2, axis=-1)
    folded = tf.concat([x_1 + y_2, x_2 - y_1], axis=-1)
    # One [n_head x batch x q_len, d_model] x [d_model, k_len] product: a batched matmul against the
    # batch-free encodings would broadcast, which oneDNN miscomputes on AVX-512 (see `broadcast_matmuls`).
    *lead, d_model = static_shape(folded)
    score = tf.matmul(tf.reshape(folded, [-1, d_model]), enc_k_1, transpose_b=True)
    return tf.reshape(score, [*lead, enc_k_1.shape[0]])


_BATCH_MATMULS = ("BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")


def graph_operations(graph, seen=None):
    """The operations of `graph` and, recursively, of every function they call (loops, conditionals,
    custom gradients), each function once."""
    seen = set() if seen is None else seen
    for op in graph.get_operations():
        yield op
        for attr in op.node_def.attr.values():
            names = [attr.func.name] if attr.HasField("func") else []
            names += [f.name for f in attr.list.func]
            for name in names:
                if name in seen:
                    continue
                seen.add(name)
                body = getattr(graph._get_function(name), "graph", None)
                if body is not None:
                    yield from graph_operations(body, seen)


def _ellipsis_shape(term, shape):
    """The dimensions an einsum operand `term` (e.g. "...ij") covers with its ellipsis."""
    if "..." not in term:
        return []
    if shape.rank is None:
        return None
    n_labels = len(term.replace("...", ""))
    start = term.index("...")
    return shape.as_list()[start : shape.rank - (n_labels - start)]


def broadcast_matmuls(graph):
    """The batched matmuls of `graph` whose two operands have different batch shapes.

    TensorFlow 2.21's oneDNN batched matmul miscomputes a broadcast product (e.g. [4, 1, 16, 64] against
    [16, 64]) on AVX-512 CPUs and then corrupts the heap (tensorflow#117700). Nothing in this project may
    build one, in the forward or the backward pass; code built on top can check its own step with this.

    Args:
      graph: a `tf.Graph`, e.g. `tf.function(f).get_concrete_function(...).graph`.
    Returns:
      One "op name (type): shapes" line per offending `BatchMatMul*` or broadcasting `Einsum` op, in the
      graph and in every function it calls; empty when there is none.
    """
    found = []
    for op in graph_operations(graph):
        shapes = [x.shape for x in op.inputs[:2]]
        if op.type in _BATCH_MATMULS:
            batch = [None if s.rank is None else s.as_list()[:-2] for s in shapes]
            differ = None in batch or batch[0] != batch[1]
        elif op.type == "Einsum" and len(op.inputs) == 2:
            terms = op.get_attr("equation").decode().split("->")[0].split(",")
            batch = [_ellipsis_shape(t, s) for t, s in zip(terms, shapes, strict=True)]
            differ = None in batch or batch[0] != batch[1]
        else:
            continue
        if differ:
            found.append(f"{op.name} ({op.type}): {shapes[0]} x {shapes[1]}")
    return found
