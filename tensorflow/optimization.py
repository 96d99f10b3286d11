"""Optimization: learning-rate schedule, AdamW with the original semantics, gradient processing.

Mirrors the original `optimization.py` (SPEC §7) without `tf.compat.v1` optimizers, so it runs under every
`tf.distribute` strategy. The training engine calls, per step and inside `strategy.run`:

    grads = <gradients averaged across replicas>
    grads, gnorm, scales = config.gradient_scales(grads, variables)  # NaN/Inf zeroing; clip, layer decay
    lr = config.get_learning_rate(step, train_steps)
    optimizer.apply_gradients(zip(grads, variables), lr, step, scales)  # then step += 1

Deviation from the original: gradients are averaged across replicas and then clipped once by their global
norm, so a run gives the same updates on 1 or N devices for the same global batch. The original clipped each
core's gradient and summed them (`per_core_clip`); that flag is accepted and ignored.
"""

import dataclasses
import functools
import math
import re

import tensorflow as tf
from absl import logging

import ops

DECAY_METHODS = ("poly", "cos")

# Names matching these are always weight-decayed; checked before the exclusions (the relative-attention
# biases contain "bias" but the original decays them).
INCLUDE_IN_WEIGHT_DECAY = ("r_s_bias", "r_r_bias", "r_w_bias")
# Excluded from weight decay only with `use_wd_exclusion` (BERT's rule).
EXCLUDE_FROM_WEIGHT_DECAY = ("LayerNorm", "layer_norm", "bias")

_LAYER_RE = re.compile(r"model/(encoder|decoder)/layer_(\d+?)/")


def _variable_name(variable):
    """The checkpoint name of `variable`: its `.name` without the `:N` output suffix."""
    return re.sub(r":\d+$", "", variable.name)


def get_learning_rate(
    global_step,
    *,
    learning_rate,
    train_steps,
    warmup_steps=0,
    decay_method="poly",
    min_lr_ratio=0.0,
):
    """The learning rate of the update that follows `global_step` updates (SPEC §7).

    Linear warmup from `learning_rate * min_lr_ratio` to `learning_rate` over `warmup_steps`, then linear
    (`poly`, power 1) or cosine (`cos`) decay to `learning_rate * min_lr_ratio` at `train_steps`; constant
    after that.

    Args:
      global_step: integer scalar (Python int, tensor or variable): updates done so far.
      learning_rate: peak learning rate.
      train_steps: total number of updates.
      warmup_steps: number of warmup updates.
      decay_method: "poly" or "cos".
      min_lr_ratio: final (and initial warmup) learning rate as a fraction of `learning_rate`.

    Returns:
      float32 scalar tensor.
    """
    if decay_method not in DECAY_METHODS:
        raise ValueError(f"decay_method must be one of {DECAY_METHODS}, got {decay_method!r}")
    step = tf.cast(global_step, tf.float32)

    # Without warmup the warmup branch is never selected; max() only avoids a division by zero.
    progress = step / float(max(warmup_steps, 1))
    warmup_lr = learning_rate * (progress + (1.0 - progress) * min_lr_ratio)

    # The original divides by `train_steps - warmup_steps` and gets NaN when they are equal; at least one
    # decay step keeps a pure-warmup run finite.
    decay_steps = float(max(train_steps - warmup_steps, 1))
    decay_progress = tf.minimum(step - warmup_steps, decay_steps) / decay_steps
    if decay_method == "poly":
        decay_factor = 1.0 - decay_progress
    else:
        decay_factor = 0.5 * (1.0 + tf.cos(math.pi * decay_progress))
    decay_lr = learning_rate * ((1.0 - min_lr_ratio) * decay_factor + min_lr_ratio)

    return tf.where(step < warmup_steps, warmup_lr, decay_lr)


def _layer_id(name):
    """0 for the input embedding, k + 1 for `model/(encoder|decoder)/layer_k/`, None otherwise."""
    if "model/input" in name:
        return 0
    match = _LAYER_RE.search(name)
    return int(match.group(2)) + 1 if match else None


def layer_decay_scales(variable_names, lr_layer_decay_rate):
    """Per-variable gradient multipliers of layer-wise learning-rate decay (SPEC §7).

    With `n_layer = max layer id + 1`, a variable of layer `id` gets `rate ** (n_layer - 1 - id)`: the top
    layer keeps the full learning rate. Decoder layers are named `decoder/layer_{nL + p}` after the nL
    encoder layers, so they count as the top layers. Variables outside the layers (heads, summary,
    input_projection, ...) get 1.0.

    Args:
      variable_names: checkpoint names, e.g. "model/encoder/layer_3/rel_attn/q/kernel".
      lr_layer_decay_rate: decay per layer; 1.0 turns layer decay off.

    Returns:
      list of Python floats, one per name.
    """
    if lr_layer_decay_rate == 1.0:
        return [1.0] * len(variable_names)
    layer_ids = [_layer_id(name) for name in variable_names]
    n_layer = max((i + 1 for i in layer_ids if i is not None), default=0)
    scales = []
    for name, layer_id in zip(variable_names, layer_ids, strict=True):
        if layer_id is None:
            scales.append(1.0)
            logging.info("Grad of %s is not decayed.", name)
        else:
            scales.append(lr_layer_decay_rate ** (n_layer - 1 - layer_id))
            logging.info("Apply mult %.4f to the grad of %s", scales[-1], name)
    return scales


def _map_gradient(grad, fn):
    """Applies `fn` to a dense gradient or to the values of a sparse (`tf.IndexedSlices`) one."""
    if isinstance(grad, tf.IndexedSlices):
        return tf.IndexedSlices(fn(grad.values), grad.indices, grad.dense_shape)
    return fn(grad)


def _zero_if_not_finite(values):
    return tf.where(tf.reduce_all(tf.math.is_finite(values)), values, tf.zeros_like(values))


def gradient_scales(grads, variables, *, clip=0.0, lr_layer_decay_rate=1.0, skip_nan_grad=False):
    """The gradient processing between cross-replica averaging and the update, as factors.

    In order: (1) with `skip_nan_grad`, every gradient tensor containing a NaN or Inf is replaced by zeros
    (so one bad tensor cannot poison the global norm); (2) with `clip > 0`, clip by global norm (as
    `tf.clip_by_global_norm`: a non-finite norm makes the factors NaN); (3) layer-wise learning-rate decay
    (see `layer_decay_scales`). Steps 2 and 3 are returned as one factor per gradient, which
    `AdamWeightDecay.apply_gradients(..., grad_scales=...)` applies inside its update kernel: a pass over
    every gradient less than multiplying them first (`process_gradients`).

    Args:
      grads: list of float32 gradients (dense tensors, `tf.IndexedSlices` or None), each shaped like its
        variable; already averaged across replicas.
      variables: the matching list of variables (their names drive layer decay).
      clip: global-norm clip value; <= 0 disables clipping.
      lr_layer_decay_rate: layer-wise decay rate; 1.0 disables it.
      skip_nan_grad: zero non-finite gradient tensors.

    Returns:
      (grads, global_norm, scales): the gradients after NaN/Inf zeroing (None stays None), the float32
      scalar global norm of those, and per gradient a float32 scalar factor.
    """
    grads = list(grads)
    variables = list(variables)
    if len(grads) != len(variables):
        raise ValueError(f"got {len(grads)} gradients for {len(variables)} variables")
    if skip_nan_grad:
        grads = [None if g is None else _map_gradient(g, _zero_if_not_finite) for g in grads]
    global_norm = tf.linalg.global_norm(grads)
    clip_scale = tf.constant(1.0)
    if clip > 0:
        clip_scale = clip * tf.minimum(1.0 / global_norm, 1.0 / clip)
        clip_scale = tf.where(tf.math.is_finite(global_norm), clip_scale, float("nan"))
    layer_scales = layer_decay_scales([_variable_name(v) for v in variables], lr_layer_decay_rate)
    return grads, global_norm, [clip_scale * s if s != 1.0 else clip_scale for s in layer_scales]


def process_gradients(grads, variables, *, clip=0.0, lr_layer_decay_rate=1.0, skip_nan_grad=False):
    """`gradient_scales` with the factors applied: the processed gradients themselves.

    Returns:
      (grads, global_norm): the processed list (None stays None) and the float32 scalar global norm of the
      gradients before clipping (after NaN/Inf zeroing).
    """
    grads, global_norm, scales = gradient_scales(
        grads,
        variables,
        clip=clip,
        lr_layer_decay_rate=lr_layer_decay_rate,
        skip_nan_grad=skip_nan_grad,
    )
    grads = [
        None if g is None else _map_gradient(g, lambda x, s=scale: x * s)
        for g, scale in zip(grads, scales, strict=True)
    ]
    return grads, global_norm


class AdamWeightDecay(tf.Module):
    """Adam with decoupled weight decay, as the original `AdamWeightDecayOptimizer` (SPEC §7).

    Per variable θ with gradient g, at global step t (before the update):
      m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;  u = m / (√v + ε);  u += wd·θ if θ is decayed;
      θ ← θ − lr'·u,  lr' = lr·√(1−β2^(t+1)) / (1−β1^(t+1)) with `bias_correction`, else lr.
    The weight decay is thus scaled by the (bias-corrected) learning rate, as in the original.

    Slots are float32 variables named `<variable name>/adam_m` and `<variable name>/adam_v`, the names the
    original checkpoints use. Create them with `build` (eagerly, inside `strategy.scope()` when
    distributed) before tracing the train step.
    """

    def __init__(
        self,
        weight_decay_rate=0.0,
        beta_1=0.9,
        beta_2=0.99,
        epsilon=1e-6,
        bias_correction=True,
        use_wd_exclusion=False,
        name="adam_weight_decay",
    ):
        super().__init__(name=name)
        self.weight_decay_rate = weight_decay_rate
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.bias_correction = bias_correction
        self.exclude_from_weight_decay = EXCLUDE_FROM_WEIGHT_DECAY if use_wd_exclusion else ()
        # name -> (adam_m, adam_v); the owners are kept as references so the module does not track the
        # model's variables as its own.
        self._slots = {}
        self._owners = {}

    def uses_weight_decay(self, name):
        """Whether the variable with checkpoint name `name` is weight-decayed."""
        if not self.weight_decay_rate:
            return False
        if any(pattern in name for pattern in INCLUDE_IN_WEIGHT_DECAY):
            return True
        return not any(pattern in name for pattern in self.exclude_from_weight_decay)

    def build(self, variables):
        """Creates the zero-initialized slots of `variables` that do not have them yet.

        Call eagerly; under a `tf.distribute` strategy, in cross-replica context inside `strategy.scope()`
        so the slots are distributed like their variables.
        """
        strategy = tf.distribute.get_strategy()
        for var in variables:
            name = _variable_name(var)
            if name in self._owners:
                if self._owners[name] != var.ref():
                    raise ValueError(f"two different variables are named {name!r}")
                continue
            slots = []
            for slot in ("adam_m", "adam_v"):
                # The slot's name is its checkpoint name, so no enclosing name scope may prefix it.
                with strategy.extended.colocate_vars_with(var), tf.compat.v1.name_scope(None):
                    slots.append(
                        tf.Variable(
                            functools.partial(tf.zeros, var.shape, tf.float32),
                            name=f"{name}/{slot}",
                            trainable=False,
                        )
                    )
            self._slots[name] = tuple(slots)
            self._owners[name] = var.ref()

    def named_variables(self):
        """The slots as `{"<variable name>/adam_m": variable, "<variable name>/adam_v": variable}`."""
        named = {}
        for name, (m, v) in self._slots.items():
            named[f"{name}/adam_m"] = m
            named[f"{name}/adam_v"] = v
        return named

    def apply_gradients(self, grads_and_vars, learning_rate, step, grad_scales=None):
        """Applies one update; every replica's copy of a variable gets the same update.

        Call in a replica context (inside `strategy.run`, or plain code under the default strategy) or in a
        cross-replica context. In a replica context of a multi-replica strategy the update goes through
        `merge_call` and `strategy.extended.update`, so the gradients must already be identical across
        replicas (averaged by the caller). In plain eager code without a strategy, missing slots are created
        on the fly; elsewhere `build` must have been called.

        Args:
          grads_and_vars: iterable of (gradient, variable); gradients are float32 tensors or
            `tf.IndexedSlices` shaped like the variable, or None (variable skipped).
          learning_rate: float32 scalar, e.g. from `get_learning_rate`.
          step: integer scalar, the global step before this update (for bias correction).
          grad_scales: None, or per gradient a float32 scalar the update multiplies it by (inside the
            update kernel), e.g. from `gradient_scales`.
        """
        grads_and_vars = list(grads_and_vars)
        if grad_scales is None:
            grad_scales = [tf.constant(1.0)] * len(grads_and_vars)
        updates = [
            (g, v, tf.cast(s, tf.float32))
            for (g, v), s in zip(grads_and_vars, grad_scales, strict=True)
            if g is not None
        ]
        missing = [v for _, v, _ in updates if _variable_name(v) not in self._slots]
        if missing:
            if tf.inside_function() or tf.distribute.has_strategy():
                raise ValueError(
                    "AdamWeightDecay.build() was not called for "
                    + ", ".join(_variable_name(v) for v in missing)
                )
            self.build(missing)

        learning_rate = tf.cast(learning_rate, tf.float32)
        if self.bias_correction:
            next_step = tf.cast(step, tf.float32) + 1.0
            learning_rate *= tf.sqrt(1.0 - self.beta_2**next_step) / (1.0 - self.beta_1**next_step)

        if tf.distribute.in_cross_replica_context():
            self._apply(tf.distribute.get_strategy(), updates, learning_rate)
        else:
            tf.distribute.get_replica_context().merge_call(
                self._apply, args=(updates, learning_rate)
            )

    def _apply(self, strategy, updates, learning_rate):
        """Cross-replica part of `apply_gradients`: updates each variable's copies on their devices."""
        for grad, var, grad_scale in updates:
            name = _variable_name(var)
            m, v = self._slots[name]
            strategy.extended.update(
                var,
                functools.partial(self._update_variable, decay=self.uses_weight_decay(name)),
                args=(grad, grad_scale, m, v, learning_rate),
                group=True,
            )

    def _update_variable(self, var, grad, grad_scale, m, v, learning_rate, decay):
        # `var` is the copy on one device, and so are the handles of the slots here: a tf.function given the
        # distributed slot variables themselves would keep the first ones it saw (TensorFlow 2.21).
        decay_rate = learning_rate * self.weight_decay_rate if decay else tf.constant(0.0)
        _adam_update(
            var.handle,
            m.handle,
            v.handle,
            tf.convert_to_tensor(grad),
            grad_scale,
            learning_rate,
            decay_rate,
            self.beta_1,
            self.beta_2,
            self.epsilon,
        )


@ops.xla_kernel
def _adam_update(var, m, v, grad, grad_scale, learning_rate, decay, beta_1, beta_2, epsilon):
    """One variable's update in place, as one XLA kernel: `var`, `m`, `v` are float32 resource handles.

    θ ← θ − decay·θ − lr·m/(√v+ε) after the moment updates, in `ResourceApplyAdam`'s arithmetic, for the
    gradient grad·grad_scale. `learning_rate` already holds the bias correction and `decay` = lr·wd (0 for
    an undecayed variable), so the decay uses the θ of before the step, as the original. Sparse gradients
    arrive densified: the original's moments decay every row at every step.

    The optimizer is bound by memory traffic, a fifth of a B4-4-4H768 training step on CPU: one kernel makes
    a pass over θ, m, v and g where TensorFlow's Adam after a separate decay made three. Taking handles, it
    is traced and compiled once per shape, not once per variable (a B4-4-4H768 has ~250 variables).
    """

    def read(handle):
        return tf.raw_ops.ReadVariableOp(resource=handle, dtype=tf.float32)

    grad = grad * grad_scale
    theta, m_old, v_old = read(var), read(m), read(v)
    m_new = m_old + (grad - m_old) * (1.0 - beta_1)
    v_new = v_old + (tf.square(grad) - v_old) * (1.0 - beta_2)
    tf.raw_ops.AssignVariableOp(resource=m, value=m_new)
    tf.raw_ops.AssignVariableOp(resource=v, value=v_new)
    tf.raw_ops.AssignVariableOp(
        resource=var,
        value=theta - decay * theta - learning_rate * m_new / (tf.sqrt(v_new) + epsilon),
    )


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """The optimizer flags of the original (SPEC §2.5), with their defaults."""

    learning_rate: float = 1e-5  # peak learning rate
    warmup_steps: int = 0  # linear warmup steps
    decay_method: str = "poly"  # "poly" (linear) or "cos"
    min_lr_ratio: float = 0.0  # final LR (and warmup start) as a fraction of learning_rate
    weight_decay: float = 0.0  # decoupled weight decay rate
    clip: float = 1.0  # global-norm clip of the replica-averaged gradient; <= 0 disables
    per_core_clip: bool = True  # accepted for compatibility; no effect (see the module docstring)
    skip_nan_grad: bool = False  # zero gradient tensors that contain NaN or Inf
    lr_layer_decay_rate: float = 1.0  # layer-wise LR decay; 1.0 disables
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    adam_correction: bool = True  # Adam bias correction folded into the learning rate
    use_wd_exclusion: bool = (
        False  # no weight decay for names containing LayerNorm, layer_norm, bias
    )
    adam_epsilon: float = 1e-6

    def __post_init__(self):
        checks = [
            ("learning_rate", self.learning_rate >= 0, "must be >= 0"),
            ("warmup_steps", self.warmup_steps >= 0, "must be >= 0"),
            ("decay_method", self.decay_method in DECAY_METHODS, f"must be one of {DECAY_METHODS}"),
            ("min_lr_ratio", 0.0 <= self.min_lr_ratio <= 1.0, "must be in [0, 1]"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("lr_layer_decay_rate", self.lr_layer_decay_rate > 0, "must be > 0"),
            ("adam_beta1", 0.0 <= self.adam_beta1 < 1.0, "must be in [0, 1)"),
            ("adam_beta2", 0.0 <= self.adam_beta2 < 1.0, "must be in [0, 1)"),
            ("adam_epsilon", self.adam_epsilon > 0, "must be > 0"),
        ]
        for flag, ok, requirement in checks:
            if not ok:
                raise ValueError(f"--{flag} {requirement}, got {getattr(self, flag)!r}")

    @classmethod
    def from_flags(cls, flag_values):
        """Builds the config from any object with attributes of the same names (e.g. absl `FLAGS`)."""
        return cls(**{f.name: getattr(flag_values, f.name) for f in dataclasses.fields(cls)})

    def get_learning_rate(self, global_step, train_steps):
        """float32 scalar learning rate after `global_step` updates of `train_steps`."""
        return get_learning_rate(
            global_step,
            learning_rate=self.learning_rate,
            train_steps=train_steps,
            warmup_steps=self.warmup_steps,
            decay_method=self.decay_method,
            min_lr_ratio=self.min_lr_ratio,
        )

    def gradient_scales(self, grads, variables):
        """`gradient_scales` with this config's clip, layer decay and NaN/Inf handling."""
        return gradient_scales(
            grads,
            variables,
            clip=self.clip,
            lr_layer_decay_rate=self.lr_layer_decay_rate,
            skip_nan_grad=self.skip_nan_grad,
        )

    def create_optimizer(self):
        """An `AdamWeightDecay` with this config's hyper-parameters."""
        return AdamWeightDecay(
            weight_decay_rate=self.weight_decay,
            beta_1=self.adam_beta1,
            beta_2=self.adam_beta2,
            epsilon=self.adam_epsilon,
            bias_correction=self.adam_correction,
            use_wd_exclusion=self.use_wd_exclusion,
        )
