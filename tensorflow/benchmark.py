"""Training and inference throughput, FLOP/s against the machine's own matmul rate, and memory, in one command.

    python tensorflow/benchmark.py                       # the default table (B4-4-4H768, see the README's Performance section)
    python tensorflow/benchmark.py --models=all --seq_lens=128,512 --tasks=classification,mlm,squad \\
        --precisions=float32,bfloat16 --jit=false,true --output=benchmark.json
    python tensorflow/benchmark.py --config=tiny --steps=2   # a smoke test in seconds
    python tensorflow/benchmark.py --memory_search           # GPU: largest trainable batch of B8-8-8H1024

Every case is measured side by side with a large matmul of the same precision: the cases of a group and the
reference matmul run in alternation, and every ratio printed (achieved / limit, bfloat16 / float32,
Funnel / standard Transformer, relative-attention share of a layer) is the median of ratios taken within one
round, so slow drifts of a shared machine's load cancel. Times are wall-clock; the `cpu` ratios use the
process CPU time instead (FLOPs per core-second over the matmul's FLOPs per core-second), which is less
sensitive to other processes on the machine.

A train step is forward + backward + global-norm clipping + `optimization.AdamWeightDecay`; an inference
step is the forward pass of the same loss without dropout. FLOPs come from `flops.py` (backward = 2 x
forward). Each group runs in a fresh process (`--isolate`), so the peak memory reported is that of the group:
host RSS on CPU, the device's peak allocation on GPU.
"""

import os

# Before TensorFlow starts (and inherited by the worker processes): TF's default CPU allocator hands large
# tensors back to the OS, and every step then page-faults them in again (10-20% of a step's CPU time in
# system time on the development machine); the BFC allocator keeps them. Set it to false to compare.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

import startup  # noqa: E402, F401 (before TensorFlow: its start-up lines stay off the console)

# isort: split
import collections  # noqa: E402
import concurrent.futures  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import data_utils  # noqa: E402
import flops  # noqa: E402
import modeling  # noqa: E402
import optimization  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_enum(
    "config",
    "released",
    ["released", "tiny"],
    "released: the shapes of the released models (SPEC §9); tiny: the same depths with d_model 32, "
    "2 heads, d_inner 64 and a 64-token vocabulary, for a quick check that everything runs.",
)
flags.DEFINE_list(
    "models",
    ["B4-4-4H768"],
    "Models of the throughput table, in the paper's notation: B4-4-4H768 (Funnel blocks of 4 layers, "
    "d_model 768, 2 decoder layers), L12H768 (a standard 12-layer Transformer), or 'all' for the four "
    "released shapes (B4-4-4H768, B6-6-6H768, B8-8-8H1024, B10-10-10H1024).",
)
flags.DEFINE_list("seq_lens", ["128"], "Sequence lengths of the throughput table.")
flags.DEFINE_list(
    "tasks",
    ["classification"],
    "classification (encoder only + sequence summary), mlm (encoder + decoder + masked-LM head, the "
    "pretraining objective), squad (encoder + decoder + SQuAD span head).",
)
flags.DEFINE_list(
    "modes",
    ["train", "grad", "infer"],
    "train (forward, backward, AdamW), grad (forward and backward only), infer (forward only).",
)
flags.DEFINE_list("precisions", ["float32"], "Compute precisions: float32, bfloat16, float16.")
flags.DEFINE_list(
    "jit",
    ["false"],
    "XLA (jit_compile of the step function): false, true, or both; the comparisons other than "
    "--compare_jit use the first value.",
)
flags.DEFINE_integer("batch_size", 8, "Examples per step.")
flags.DEFINE_integer("steps", 5, "Timed rounds; every reported time is a median over them.")
flags.DEFINE_integer("warmup_steps", 1, "Untimed steps per case after tracing.")
flags.DEFINE_string(
    "rel_attn_type",
    "rel_shift",
    "Relative-attention algorithm of every model: rel_shift (what runs off TPU, also for configs that say "
    "factorized), factorized (the algorithm factorized configs run on TPU), or null.",
)
flags.DEFINE_list(
    "matmul_sizes",
    ["1024", "1536", "2048", "2560", "3072"],
    "The limit is the FLOP/s of the fastest n x n x n matmul over these n (--config=tiny: 128, 256).",
)
flags.DEFINE_bool(
    "compare_precision", True, "Side by side: bfloat16 vs float32 training of the first model."
)
flags.DEFINE_bool("compare_jit", True, "Side by side: XLA vs no XLA training of the first model.")
flags.DEFINE_bool(
    "compare_standard",
    True,
    "Side by side: the two --compare_models, a Funnel and a standard Transformer of the same layers.",
)
flags.DEFINE_list(
    "compare_models",
    ["B6-6-6H768", "L12H768"],
    "Funnel and standard Transformer of --compare_standard; the default is the paper's pair: "
    "B6-6-6H768 (18 layers of width 768, pooled twice) against L12H768 (12 such layers, BERT-base size, "
    "no pooling), whose FLOPs are close.",
)
flags.DEFINE_bool(
    "rel_attn_cost",
    True,
    "Side by side: one layer with rel_shift, factorized and null attention; the relative terms' share.",
)
flags.DEFINE_integer(
    "rel_attn_seq_len", 512, "Sequence length of the relative-attention comparison."
)
flags.DEFINE_integer("compare_seq_len", 128, "Sequence length of the side-by-side comparisons.")
flags.DEFINE_bool(
    "isolate", True, "Run every group in a fresh process (exact peak memory per group)."
)
flags.DEFINE_integer(
    "inter_op_threads", 0, "tf.config.threading inter-op threads (0: TF's default)."
)
flags.DEFINE_integer(
    "intra_op_threads", 0, "tf.config.threading intra-op threads (0: TF's default)."
)
flags.DEFINE_string("output", "benchmark.json", "Where to write the results as JSON.")
flags.DEFINE_bool(
    "memory_search",
    False,
    "Instead of the throughput table: the largest batch of --search_model that trains within "
    "--memory_limit_mb of GPU memory, for each of --search_seq_lens (needs a GPU).",
)
flags.DEFINE_string("search_model", "B8-8-8H1024", "Model of the memory search.")
flags.DEFINE_list("search_seq_lens", ["64", "128", "256", "512"], "Lengths of the memory search.")
flags.DEFINE_string("search_precision", "float16", "Compute precision of the memory search.")
flags.DEFINE_integer(
    "memory_limit_mb",
    16000,
    "GPU memory given to TensorFlow in the memory search (a logical device with this limit); 16000 "
    "emulates the original's 16 GB V100.",
)
flags.DEFINE_integer("max_batch", 4096, "Upper end of the memory search.")
flags.DEFINE_list(
    "recompute",
    ["false"],
    "Recompute every layer in the backward pass (the engine's --recompute): false, true, or both "
    "(table rows of each); the memory search uses the first value.",
)
flags.DEFINE_bool(
    "compare_recompute",
    False,
    "Side by side: training the first model with and without --recompute (the time it costs).",
)
flags.DEFINE_bool(
    "compare_fusion",
    True,
    "Side by side, in each of --precisions: training the first model with the element-wise chains as "
    "fused XLA kernels (the default everywhere) and as plain TensorFlow ops.",
)
flags.DEFINE_integer(
    "profile_steps",
    0,
    "After timing, trace this many steps of every case with the TensorFlow profiler and report the time "
    "in matmuls, in the fused XLA kernels and in the other ops (0: no profile).",
)

# The released shapes (SPEC §9): d_head 64, d_inner 4 d_model, two decoder layers, vocabulary 30522.
RELEASED = ("B4-4-4H768", "B6-6-6H768", "B8-8-8H1024", "B10-10-10H1024")
_FUNNEL_RE = re.compile(r"^B(\d+(?:x\d+)?(?:-\d+(?:x\d+)?)*)H(\d+)$")
_STANDARD_RE = re.compile(r"^L(\d+)H(\d+)$")
TASKS = ("classification", "mlm", "squad", "encoder")
MODES = ("train", "grad", "infer")
TINY = dict(d_model=32, n_head=2, d_head=16, d_inner=64, vocab_size=64)
LEARNING_RATE = 1e-5


def model_config(name, config="released", rel_attn_type="rel_shift"):
    """The `ModelConfig` of a model name in the paper's notation.

    Args:
      name: "B6-6-6H768" (a Funnel-Transformer: blocks of 6 layers, d_model 768, two decoder layers;
        "B6-3x2-3x2H768" repeats layers), "L12H768" (a standard Transformer: one block of 12 layers, no
        pooling, no decoder). d_head is 64 and d_inner 4 d_model, as in every released model.
      config: "released" or "tiny" (the same depths with TINY widths).
    """
    funnel, standard = _FUNNEL_RE.match(name), _STANDARD_RE.match(name)
    if funnel:
        block_size, d_model = funnel.group(1).replace("-", "_"), int(funnel.group(2))
        decoder_size = "2" if "_" in block_size else "0"
    elif standard:
        block_size, d_model, decoder_size = standard.group(1), int(standard.group(2)), "0"
    else:
        raise ValueError(
            f"unknown model {name!r}: expected a name like B6-6-6H768 (Funnel) or L12H768 (standard)"
        )
    if d_model % 64:
        raise ValueError(f"model {name!r}: d_model must be a multiple of d_head 64")
    dims = dict(
        d_model=d_model, n_head=d_model // 64, d_head=64, d_inner=4 * d_model, vocab_size=30522
    )
    if config == "tiny":
        dims = dict(TINY)
    return modeling.ModelConfig(
        block_size=block_size,
        d_embed=dims["d_model"],
        ff_activation="gelu",
        dropout=0.1,
        dropatt=0.1,
        dropact=0.0,
        rel_attn_type=rel_attn_type,
        decoder_size=decoder_size,
        **dims,
    )


@dataclasses.dataclass(frozen=True)
class Case:
    """One measured configuration.

    task: classification, mlm, squad, or "encoder" (the encoder output alone, for the layer comparison).
    mode: "train" (forward, backward, AdamW), "grad" (forward and backward only) or "infer" (forward).
    """

    model: str
    seq_len: int
    task: str = "classification"
    mode: str = "train"
    precision: str = "float32"
    jit: bool = False
    batch_size: int = 8
    rel_attn_type: str = "rel_shift"
    config: str = "released"
    recompute: bool = False
    fusion: bool = True

    def net_config(self):
        return model_config(self.model, self.config, self.rel_attn_type)

    def rel_attn_impl(self):
        """The algorithm is forced: a factorized config alone would run rel_shift off TPU."""
        return None if self.rel_attn_type == "null" else self.rel_attn_type

    def use_decoder(self):
        return self.task in ("mlm", "squad") and self.net_config().n_block > 1

    def num_predict(self):
        return max(1, round(0.15 * self.seq_len))

    def flops_per_example(self):
        """Analytic FLOPs of one example's step: forward, x3 when training."""
        head = {"encoder": "none"}.get(self.task, self.task)
        forward = flops.forward_flops(
            self.net_config(),
            self.seq_len,
            use_decoder=self.use_decoder(),
            head=head,
            batch_size=self.batch_size,
            num_predict=self.num_predict(),
            rel_attn_impl=self.rel_attn_impl(),
        )["total"]
        return forward if self.mode == "infer" else 3 * forward

    def label(self):
        jit = "xla" if self.jit else "-"
        return (
            f"{self.model} {self.task} T={self.seq_len} {self.mode} {self.precision} {jit} "
            f"{self.rel_attn_type}"
            + (" recompute" if self.recompute else "")
            + ("" if self.fusion else " unfused")
        )


def _inputs(case, net_config, seed=0):
    """Random inputs in the original conventions: <cls> A B, no padding."""
    rng = np.random.default_rng(seed)
    batch, seq_len = case.batch_size, case.seq_len
    ids = rng.integers(5, net_config.vocab_size, size=(batch, seq_len)).astype(np.int32)
    seg = np.zeros((batch, seq_len), np.int32)
    seg[:, 0] = data_utils.SEG_ID_CLS
    seg[:, seq_len // 2 :] = data_utils.SEG_ID_B
    inputs = {
        "input_ids": tf.constant(ids),
        "segment_ids": tf.constant(seg),
        "input_mask": tf.zeros([batch, seq_len], tf.float32),
        "label": tf.constant(rng.integers(0, 2, size=batch).astype(np.int32)),
    }
    if case.task == "mlm":
        n_pred = case.num_predict()
        positions = np.sort(
            np.stack(
                [rng.choice(np.arange(1, seq_len), n_pred, replace=False) for _ in range(batch)]
            )
        )
        inputs["target_mapping"] = tf.one_hot(positions, seq_len, dtype=tf.float32)
        inputs["target"] = tf.constant(np.take_along_axis(ids, positions, axis=1))
    if case.task == "squad":
        start = rng.integers(seq_len // 2, seq_len - 2, size=batch).astype(np.int32)
        p_mask = np.ones((batch, seq_len), np.float32)
        p_mask[:, seq_len // 2 :] = 0.0
        p_mask[:, 0] = 0.0
        inputs.update(
            p_mask=tf.constant(p_mask),
            cls_index=tf.zeros([batch], tf.int32),
            start_positions=tf.constant(start),
            end_positions=tf.constant(start + 1),
            is_impossible=tf.zeros([batch], tf.float32),
        )
    return inputs


def _loss(model, case, inputs, is_training):
    """float32 scalar loss of the case's task."""
    ids, seg, mask = inputs["input_ids"], inputs["segment_ids"], inputs["input_mask"]
    if case.task == "classification":
        per_example, _ = model.get_classification_loss(
            inputs["label"], ids, 2, is_training, "benchmark", seg, mask, precision=case.precision
        )
        return tf.reduce_mean(per_example)
    if case.task == "mlm":
        loss, _ = model.get_mlm_loss(
            inputs["target"],
            ids,
            is_training,
            seg,
            mask,
            target_mapping=inputs["target_mapping"],
            precision=case.precision,
        )
        return loss
    if case.task == "squad":
        per_example, _ = model.get_squad_loss(inputs, is_training, precision=case.precision)
        return tf.reduce_mean(per_example)
    output, _, _ = model.extract_hiddens(ids, is_training, seg, mask, precision=case.precision)
    return tf.reduce_mean(tf.square(tf.cast(output, tf.float32)))


def build_step(case):
    """Creates the model (and optimizer) of `case` and returns a zero-argument step function.

    The step runs one training step (forward, backward, clipping, AdamWeightDecay), a forward and backward
    pass, or one forward pass, and returns the loss as a Python float (which waits for the computation).
    """
    if case.task not in TASKS:
        raise ValueError(f"--tasks: unknown task {case.task!r}; known: {TASKS}")
    if case.mode not in MODES:
        raise ValueError(f"--modes: unknown mode {case.mode!r}; known: {MODES}")
    net_config = case.net_config()
    model = modeling.FunnelTFM(
        net_config, rel_attn_impl=case.rel_attn_impl(), recompute=case.recompute
    )
    inputs = _inputs(case, net_config)
    _loss(model, case, inputs, False)  # creates the variables eagerly
    # The model's Python control flow depends only on static shapes and settings: no autograph needed.
    function = functools.partial(tf.function, jit_compile=case.jit, autograph=False)
    if case.mode == "infer":
        step_fn = function(lambda: _loss(model, case, inputs, False))
        with modeling.ops.xla_fusion(case.fusion):
            step_fn.get_concrete_function()
        return lambda: float(step_fn())

    variables = list(model.named_variables().values())
    optimizer = None
    if case.mode == "train":
        optimizer = optimization.AdamWeightDecay(weight_decay_rate=0.01)
        optimizer.build(variables)

    @function
    def train_step(step):
        with tf.GradientTape() as tape:
            loss = _loss(model, case, inputs, True)
        grads = tape.gradient(loss, variables)
        if optimizer is None:
            # Returned, so that the function does not prune the backward pass.
            return loss, grads
        grads, _, scales = optimization.gradient_scales(grads, variables, clip=1.0)
        optimizer.apply_gradients(zip(grads, variables, strict=True), LEARNING_RATE, step, scales)
        return loss, []

    with modeling.ops.xla_fusion(case.fusion):
        train_step.get_concrete_function(tf.TensorSpec([], tf.int64))
    counter = iter(range(1 << 30))
    return lambda: float(train_step(tf.constant(next(counter), tf.int64))[0])


class _MatmulReference:
    """The machine's limit: FLOP/s of the fastest n x n x n matmul in one precision, timed like the cases.

    Square matmuls of different sizes run at quite different rates (on the development machine n = 2048
    is ~25% slower than n = 2560), so the limit is the fastest size of `sizes`, chosen once.
    """

    def __init__(self, sizes, precision):
        dtype = modeling.ops.PRECISIONS[precision]
        best_rate = 0.0
        self.rates = {}
        for n in sizes:
            rng = tf.random.Generator.from_seed(n)
            a = tf.cast(rng.normal([n, n]), dtype)
            b = tf.cast(rng.normal([n, n]), dtype)
            fn = tf.function(
                lambda a=a, b=b: tf.reduce_sum(tf.cast(tf.matmul(a, b)[:1, :1], tf.float32))
            )
            step = functools.partial(lambda fn: float(fn()), fn)
            step()
            rate = 2 * n**3 / statistics.median(_time(step)[0] for _ in range(3))
            self.rates[n] = rate
            if rate > best_rate:
                best_rate, self.size, self.step = rate, n, step
        self.flops = 2 * self.size**3

    def measure(self):
        """(wall seconds, CPU seconds) of one matmul: the median of three."""
        samples = sorted(_time(self.step) for _ in range(3))
        return samples[1]


def _time(step):
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    return time.perf_counter() - wall, time.process_time() - cpu


def _gpu_available():
    return bool(tf.config.list_physical_devices("GPU"))


def _memory_bytes():
    """Current process RSS (CPU) or device allocation (GPU)."""
    if _gpu_available():
        return tf.config.experimental.get_memory_info("GPU:0")["current"]
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_memory_bytes():
    if _gpu_available():
        return tf.config.experimental.get_memory_info("GPU:0")["peak"]
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


_MATMUL_OPS = (
    "MatMul",
    "BatchMatMulV2",
    "BatchMatMulV3",
    "Einsum",
    "_MklMatMul",
    "_MklBatchMatMulV2",
    "_MklEinsum",
    "_MklFusedMatMul",
)
# TensorFlow op events of the trace are named "<op name>:<op type>".
_TF_OP_EVENT = re.compile(r"^[^\s:]+:(\w+)$")


def profile_step(step, steps, logdir):
    """Where the time of `step` goes, from the TensorFlow profiler's trace of `steps` calls.

    Returns:
      dict of milliseconds per step, summed over threads (ops that run concurrently both count):
      "matmul_ms" (MatMul, BatchMatMul, Einsum), "xla_ms" (the fused XLA kernels), "other_ms" (every other
      TensorFlow op), and "top_ms", the ten op types (or "xla") that took longest.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    tf.io.gfile.makedirs(logdir)
    tf.profiler.experimental.start(logdir)
    try:
        for _ in range(steps):
            step()
    finally:
        tf.profiler.experimental.stop()
    by_type = collections.Counter()
    for path in tf.io.gfile.glob(os.path.join(logdir, "plugins/profile/*/*.xplane.pb")):
        space = xplane_pb2.XSpace.FromString(tf.io.gfile.GFile(path, "rb").read())
        for plane in space.planes:
            if not plane.name.startswith("/host:CPU") and not plane.name.startswith("/device:"):
                continue
            for line in plane.lines:
                for event in line.events:
                    name = plane.event_metadata[event.metadata_id].name
                    match = _TF_OP_EVENT.match(name)
                    if name == "CpuExecutable::ExecuteAsyncOnStream":
                        op_type = "xla"
                    # A function call's event encloses its kernels' (an XLA step's: all of them).
                    elif match and not match.group(1).startswith(("_Xla", "__inference_")):
                        op_type = match.group(1)
                    else:
                        continue
                    by_type[op_type] += event.duration_ps / 1e9 / steps
    matmul = sum(by_type[t] for t in _MATMUL_OPS)
    return {
        "matmul_ms": matmul,
        "xla_ms": by_type["xla"],
        "other_ms": sum(by_type.values()) - matmul - by_type["xla"],
        "top_ms": dict(by_type.most_common(10)),
    }


def run_group(cases, steps, warmup_steps, matmul_sizes, threads=(0, 0), profile_steps=0):
    """Measures `cases` side by side with the reference matmuls of their precisions.

    Each round times every reference matmul, then one step of every case (in a rotating order).

    Returns:
      dict: "cases", a list of per-case result dicts (times in seconds, FLOP/s, the ratios to the limit, the
      per-round wall times; with `profile_steps`, the `profile_step` breakdown), and "limits",
      {precision: {"flops_per_s", "flops_per_cpu_s"}}, and "peak_memory_mb", the group's peak (host RSS or
      device).
    """
    if any(threads):
        tf.config.threading.set_inter_op_parallelism_threads(threads[0])
        tf.config.threading.set_intra_op_parallelism_threads(threads[1])
    precisions = sorted({c.precision for c in cases} | {"float32"})
    refs = {p: _MatmulReference(matmul_sizes, p) for p in precisions}
    if _gpu_available():
        tf.config.experimental.reset_memory_stats("GPU:0")
    base_memory = _memory_bytes()
    built = []
    for case in cases:
        logging.info("building %s", case.label())
        start = time.perf_counter()
        step = build_step(case)
        step()
        first = time.perf_counter() - start
        for _ in range(warmup_steps):
            step()
        built.append((case, step, first))

    ref_times = {p: [] for p in precisions}
    case_times = [[] for _ in cases]
    for round_idx in range(steps):
        for p in precisions:
            ref_times[p].append(refs[p].measure())
        order = list(range(len(cases)))
        order = order[round_idx % len(order) :] + order[: round_idx % len(order)]
        for i in order:
            case_times[i].append(_time(built[i][1]))
            logging.info("%s: %.3f s", cases[i].label(), case_times[i][-1][0])

    limits = {
        p: {
            "flops_per_s": refs[p].flops / statistics.median(t[0] for t in ref_times[p]),
            "flops_per_cpu_s": refs[p].flops / statistics.median(t[1] for t in ref_times[p]),
            "matmul_size": refs[p].size,
            "flops_per_s_by_size": refs[p].rates,
        }
        for p in precisions
    }
    peak = _peak_memory_bytes()
    profiles = []
    for _, step, _ in built:
        if not profile_steps:
            profiles.append(None)
            continue
        with tempfile.TemporaryDirectory(prefix="benchmark_profile_") as logdir:
            profiles.append(profile_step(step, profile_steps, logdir))
    results = []
    for (case, _, first), times, profile in zip(built, case_times, profiles, strict=True):
        flop = case.flops_per_example() * case.batch_size
        refs_p = ref_times[case.precision]
        wall = statistics.median(t[0] for t in times)
        results.append(
            {
                **dataclasses.asdict(case),
                "step_s": wall,
                "step_cpu_s": statistics.median(t[1] for t in times),
                "first_step_s": first,
                "examples_per_s": case.batch_size / wall,
                "gflop_per_example": case.flops_per_example() / 1e9,
                "gflop_per_s": flop / wall / 1e9,
                "limit_gflop_per_s": limits[case.precision]["flops_per_s"] / 1e9,
                # Both ratios pair each step with the reference matmul of the same round.
                "ratio_to_limit": statistics.median(
                    (flop / t[0]) / (refs[case.precision].flops / r[0])
                    for t, r in zip(times, refs_p, strict=True)
                ),
                "ratio_to_limit_cpu": statistics.median(
                    (flop / t[1]) / (refs[case.precision].flops / r[1])
                    for t, r in zip(times, refs_p, strict=True)
                ),
                "round_step_s": [t[0] for t in times],
                **({"profile": profile} if profile else {}),
            }
        )
    memory = {
        "peak_memory_mb": peak / 2**20,
        "memory_per_example_mb": (peak - base_memory) / 2**20 / max(c.batch_size for c in cases),
        "memory_kind": "device" if _gpu_available() else "host_rss",
    }
    return {"cases": results, "limits": limits, **memory}


def _run_group_worker(args):
    cases, *settings = args
    logging.set_verbosity(logging.WARNING)
    return run_group([Case(**c) for c in cases], *settings)


def run_groups(groups, steps, warmup_steps, matmul_sizes, isolate, threads=(0, 0), profile_steps=0):
    """Runs each group of cases (in a fresh process with `isolate`); returns their results in order.

    A group that fails (out of memory, an unsupported op) gives {"error": message} and the others run on.
    """
    results = []
    for cases in groups:
        settings = (steps, warmup_steps, matmul_sizes, threads, profile_steps)
        args = ([dataclasses.asdict(c) for c in cases], *settings)
        try:
            if isolate:
                context = multiprocessing.get_context("spawn")
                with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
                    result = pool.submit(_run_group_worker, args).result()
            else:
                result = run_group(cases, *settings)
        except (tf.errors.OpError, ValueError, concurrent.futures.process.BrokenProcessPool) as e:
            message = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}"
            logging.error("%s failed: %s", ", ".join(c.label() for c in cases), message)
            results.append({"error": message, "cases": [dataclasses.asdict(c) for c in cases]})
            continue
        results.append(result)
        for case_result in result["cases"]:
            logging.info(
                "%s: %.2f examples/s, %.2f of the matmul rate",
                Case(**{f.name: case_result[f.name] for f in dataclasses.fields(Case)}).label(),
                case_result["examples_per_s"],
                case_result["ratio_to_limit"],
            )
    return results


def paired_ratio(result_a, result_b):
    """Median over rounds of step time a / step time b (the rounds ran side by side)."""
    return statistics.median(
        a / b for a, b in zip(result_a["round_step_s"], result_b["round_step_s"], strict=True)
    )


def _flag_bools(values, name):
    table = {"false": False, "true": True}
    try:
        return [table[v.lower()] for v in values]
    except KeyError as e:
        raise ValueError(f"--{name} takes false and/or true, got {values}") from e


def plan(
    models,
    seq_lens,
    tasks,
    modes,
    precisions,
    jits,
    batch_size,
    rel_attn_type="rel_shift",
    recomputes=(False,),
    config="released",
    compare_precision=True,
    compare_jit=True,
    compare_standard=True,
    rel_attn_cost=True,
    compare_seq_len=128,
    rel_attn_seq_len=512,
    compare_models=("B6-6-6H768", "L12H768"),
    compare_recompute=False,
    compare_fusion=True,
):
    """The groups to run: one per table case, then the side-by-side comparisons.

    Returns:
      (table_groups, comparisons): lists of case lists; `comparisons` maps a name to (group, description).
    """
    # The comparisons other than XLA's own run with the first --jit value.
    common = dict(batch_size=batch_size, rel_attn_type=rel_attn_type, config=config)
    compared = dict(common, jit=jits[0])
    table = [
        [Case(m, t, task, mode, p, j, **common, recompute=r)]
        for m in models
        for t in seq_lens
        for task in tasks
        for mode in modes
        for p in precisions
        for j in jits
        for r in recomputes
    ]
    first = models[0]
    comparisons = {}
    if compare_precision:
        comparisons["bfloat16_vs_float32"] = [
            Case(first, compare_seq_len, precision=p, **compared) for p in ("float32", "bfloat16")
        ]
    if compare_jit:
        comparisons["xla_vs_no_xla"] = [
            Case(first, compare_seq_len, jit=j, **common) for j in (False, True)
        ]
    if compare_standard:
        comparisons["funnel_vs_standard"] = [
            Case(m, compare_seq_len, **compared) for m in compare_models
        ]
    if compare_fusion:
        comparisons["fusion_speedup"] = [
            Case(first, compare_seq_len, precision=p, fusion=f, **compared)
            for p in precisions
            for f in (False, True)
        ]
    if compare_recompute:
        comparisons["recompute_cost"] = [
            Case(first, compare_seq_len, recompute=r, **compared) for r in (False, True)
        ]
    if rel_attn_cost:
        comparisons["rel_attn_cost"] = [
            Case("L1H768", rel_attn_seq_len, "encoder", "grad", **{**compared, "rel_attn_type": r})
            for r in ("null", "rel_shift", "factorized")
        ]
    # Unknown names, tasks and lengths fail here, before anything runs.
    for case in [c for group in table + list(comparisons.values()) for c in group]:
        if case.task not in TASKS or case.mode not in MODES:
            raise ValueError(f"--tasks/--modes: unknown task or mode in {case.label()}")
        modeling.ops.compute_dtype(precision=case.precision)
        flops.layer_shapes(case.net_config(), case.seq_len, case.use_decoder())
    return table, comparisons


def summarize_comparisons(comparisons, results):
    """Turns the comparison groups' results into the headline ratios."""
    summary = {}
    for name, result in zip(comparisons, results, strict=True):
        cases = result["cases"]
        if "error" in result:
            summary[name] = {"error": result["error"]}
        elif name == "bfloat16_vs_float32":
            summary[name] = {
                "speedup": paired_ratio(cases[0], cases[1]),
                "float32_step_s": cases[0]["step_s"],
                "bfloat16_step_s": cases[1]["step_s"],
            }
        elif name == "xla_vs_no_xla":
            summary[name] = {
                "speedup": paired_ratio(cases[0], cases[1]),
                "no_xla_step_s": cases[0]["step_s"],
                "xla_step_s": cases[1]["step_s"],
            }
        elif name == "funnel_vs_standard":
            summary[name] = {
                "time_ratio": paired_ratio(cases[0], cases[1]),
                "funnel_step_s": cases[0]["step_s"],
                "standard_step_s": cases[1]["step_s"],
                "flop_ratio": cases[0]["gflop_per_example"] / cases[1]["gflop_per_example"],
            }
        elif name == "fusion_speedup":
            pairs = zip(cases[::2], cases[1::2], strict=True)
            summary[name] = {
                plain["precision"]: {
                    "speedup": paired_ratio(plain, fused),
                    "unfused_step_s": plain["step_s"],
                    "fused_step_s": fused["step_s"],
                    **(
                        {"unfused_profile": plain["profile"], "fused_profile": fused["profile"]}
                        if "profile" in fused
                        else {}
                    ),
                }
                for plain, fused in pairs
            }
        elif name == "recompute_cost":
            summary[name] = {
                "time_ratio": paired_ratio(cases[1], cases[0]),
                "step_s": cases[0]["step_s"],
                "recompute_step_s": cases[1]["step_s"],
            }
        elif name == "rel_attn_cost":
            null = cases[0]
            summary[name] = {
                "layer_step_s": {c["rel_attn_type"]: c["step_s"] for c in cases},
                **{f"{c['rel_attn_type']}_share": 1.0 - paired_ratio(null, c) for c in cases[1:]},
            }
        summary[name]["cases"] = cases
    return summary


def machine_info():
    """What the numbers depend on: CPU, its bfloat16 support, TensorFlow and the threading settings."""
    info = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(default)"),
        "TF_CPU_ALLOCATOR_USE_BFC": os.environ.get("TF_CPU_ALLOCATOR_USE_BFC"),
    }
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        model = [
            line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line
        ]
        cpu_flags = (
            set(text.split("flags", 1)[1].split("\n", 1)[0].split()) if "flags" in text else set()
        )
        info["cpu"] = model[0] if model else "unknown"
        info["avx512f"] = "avx512f" in cpu_flags
        info["avx512_bf16"] = "avx512_bf16" in cpu_flags
        info["amx_bf16"] = "amx_bf16" in cpu_flags
    except OSError:
        info["cpu"] = "unknown"
    return info


def format_table(case_results):
    """A fixed-width text table of per-case results."""
    header = (
        f"{'model':<15} {'task':<14} {'T':>4} {'mode':<5} {'prec':<8} {'xla':<3} {'B':>3} "
        f"{'s/step':>7} {'ex/s':>7} {'GF/ex':>7} {'GF/s':>6} {'limit':>6} {'ratio':>5} "
        f"{'cpu':>5} {'MB/ex':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in case_results:
        memory = r.get("memory_per_example_mb")
        if "error" in r:
            lines.append(
                f"{r['model']:<15} {r['task']:<14} {r['seq_len']:>4} {r['mode']:<5} "
                f"{r['precision']:<8} {'yes' if r['jit'] else 'no':<3} {r['batch_size']:>3} "
                f"failed: {r['error']}"
            )
            continue
        lines.append(
            f"{r['model']:<15} {r['task']:<14} {r['seq_len']:>4} {r['mode']:<5} {r['precision']:<8} "
            f"{'yes' if r['jit'] else 'no':<3} {r['batch_size']:>3} {r['step_s']:>7.3f} "
            f"{r['examples_per_s']:>7.2f} {r['gflop_per_example']:>7.2f} {r['gflop_per_s']:>6.1f} "
            f"{r['limit_gflop_per_s']:>6.1f} {r['ratio_to_limit']:>5.2f} "
            f"{r['ratio_to_limit_cpu']:>5.2f} {'-' if memory is None else f'{memory:6.0f}':>6}"
        )
    return "\n".join(lines)


def format_profiles(case_results):
    """One line per profiled case: where a step's time goes (thread milliseconds)."""
    lines = []
    for r in case_results:
        if "profile" in r:
            case = Case(**{f.name: r[f.name] for f in dataclasses.fields(Case)})
            p = r["profile"]
            top = ", ".join(f"{k} {v:.0f}" for k, v in list(p["top_ms"].items())[:6])
            lines.append(
                f"{case.label()}: matmul {p['matmul_ms']:.0f} ms, XLA kernels {p['xla_ms']:.0f} ms, "
                f"other ops {p['other_ms']:.0f} ms per step (thread time; top: {top})"
            )
    return "\n".join(lines)


def format_comparisons(summary):
    lines = []
    for name, s in summary.items():
        if "error" in s:
            lines.append(f"{name}: failed: {s['error']}")
        elif name == "bfloat16_vs_float32":
            lines.append(f"bfloat16 / float32 training speedup: {s['speedup']:.2f}x")
        elif name == "xla_vs_no_xla":
            lines.append(f"XLA / no XLA training speedup: {s['speedup']:.2f}x")
        elif name == "funnel_vs_standard":
            funnel, standard = (c["model"] for c in s["cases"])
            lines.append(
                f"{funnel} / {standard} training time: {s['time_ratio']:.2f} "
                f"(FLOP ratio {s['flop_ratio']:.2f})"
            )
        elif name == "fusion_speedup":
            for precision, r in s.items():
                if precision != "cases":
                    lines.append(
                        f"fused / unfused element-wise training speedup, {precision}: {r['speedup']:.2f}x"
                    )
        elif name == "recompute_cost":
            lines.append(f"--recompute / plain training time: {s['time_ratio']:.2f}")
        elif name == "rel_attn_cost":
            shares = ", ".join(
                f"{k[: -len('_share')]} {100 * v:.0f}%"
                for k, v in s.items()
                if k.endswith("_share")
            )
            lines.append(f"relative-attention share of a layer's forward+backward time: {shares}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- memory search
def largest_fitting(fits, max_value):
    """The largest n in [1, max_value] with fits(n), assuming fits is monotone; 0 if fits(1) is False.

    Doubles from 1 until a failure, then bisects: O(log n) calls.
    """
    low, high = (
        0,
        max_value + 1,
    )  # fits(low) holds (or low is 0); fits(high) does not (or is out of range)
    n = 1
    while n < high:
        if not fits(n):
            high = n
            break
        low, n = n, 2 * n
    while high - low > 1:
        mid = (low + high) // 2
        if fits(mid):
            low = mid
        else:
            high = mid
    return low


def memory_search(model, seq_lens, precision, memory_limit_mb, max_batch, recompute):
    """Largest training batch per sequence length within `memory_limit_mb` of the first GPU.

    Must run before TensorFlow touches the GPU. Untested here (no GPU on the development machine).

    Returns:
      {seq_len: largest batch (0: not even one example fits)}.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        raise ValueError("--memory_search needs a GPU; none is visible to TensorFlow")
    tf.config.set_logical_device_configuration(
        gpus[0], [tf.config.LogicalDeviceConfiguration(memory_limit=memory_limit_mb)]
    )
    results = {}
    for seq_len in seq_lens:

        def fits(batch_size, seq_len=seq_len):
            case = Case(
                model, seq_len, precision=precision, batch_size=batch_size, recompute=recompute
            )
            try:
                step = build_step(case)
                step()
                step()  # a second step: fragmentation after the first can still run out
                ok = True
            except (tf.errors.ResourceExhaustedError, tf.errors.InternalError) as e:
                logging.info("batch %d, length %d: %s", batch_size, seq_len, type(e).__name__)
                ok = False
            else:
                logging.info("batch %d, length %d: fits", batch_size, seq_len)
            # Frees the trial's model, optimizer slots and traced functions before the next one.
            step = None
            gc.collect()
            return ok

        results[seq_len] = largest_fitting(fits, max_batch)
        logging.info("length %d: largest batch %d", seq_len, results[seq_len])
    return results


def run():
    if FLAGS.memory_search:
        results = memory_search(
            FLAGS.search_model,
            [int(t) for t in FLAGS.search_seq_lens],
            FLAGS.search_precision,
            FLAGS.memory_limit_mb,
            FLAGS.max_batch,
            _flag_bools(FLAGS.recompute, "recompute")[0],
        )
        for seq_len, batch in results.items():
            print(
                f"{FLAGS.search_model} {FLAGS.search_precision} T={seq_len}: largest batch {batch}"
            )
        output = {
            "machine": machine_info(),
            "memory_search": {
                "model": FLAGS.search_model,
                "precision": FLAGS.search_precision,
                "memory_limit_mb": FLAGS.memory_limit_mb,
                "recompute": _flag_bools(FLAGS.recompute, "recompute")[0],
                "largest_batch": {str(k): v for k, v in results.items()},
            },
        }
        data_utils.atomic_write_json(FLAGS.output, output, indent=2)
        return

    models = list(RELEASED) if FLAGS.models == ["all"] else FLAGS.models
    if FLAGS.compare_standard and len(FLAGS.compare_models) != 2:
        raise ValueError("--compare_models takes two models: a Funnel and a standard Transformer")
    table_groups, comparisons = plan(
        models,
        [int(t) for t in FLAGS.seq_lens],
        FLAGS.tasks,
        FLAGS.modes,
        FLAGS.precisions,
        _flag_bools(FLAGS.jit, "jit"),
        FLAGS.batch_size,
        FLAGS.rel_attn_type,
        _flag_bools(FLAGS.recompute, "recompute"),
        FLAGS.config,
        FLAGS.compare_precision,
        FLAGS.compare_jit,
        FLAGS.compare_standard,
        FLAGS.rel_attn_cost,
        FLAGS.compare_seq_len,
        FLAGS.rel_attn_seq_len,
        FLAGS.compare_models,
        FLAGS.compare_recompute,
        FLAGS.compare_fusion,
    )
    matmul_sizes = (
        [int(n) for n in FLAGS.matmul_sizes] if FLAGS.config == "released" else [128, 256]
    )
    threads = (FLAGS.inter_op_threads, FLAGS.intra_op_threads)
    args = (
        FLAGS.steps,
        FLAGS.warmup_steps,
        matmul_sizes,
        FLAGS.isolate,
        threads,
        FLAGS.profile_steps,
    )
    table_results = run_groups(table_groups, *args)
    comparison_results = run_groups(list(comparisons.values()), *args)

    rows = []
    for result in table_results:
        (row,) = result["cases"]
        if "error" in result:
            row["error"] = result["error"]
        else:
            row["peak_memory_mb"] = result["peak_memory_mb"]
            row["memory_per_example_mb"] = result["memory_per_example_mb"]
            row["memory_kind"] = result["memory_kind"]
        rows.append(row)
    summary = summarize_comparisons(comparisons, comparison_results)
    print(format_table(rows))
    print(format_profiles(rows + [c for r in comparison_results for c in r["cases"]]))
    print(format_comparisons(summary))
    output = {
        "machine": machine_info(),
        "settings": {
            name: FLAGS[name].value
            for name in (
                "config",
                "batch_size",
                "steps",
                "warmup_steps",
                "rel_attn_type",
                "matmul_sizes",
                "isolate",
                "inter_op_threads",
                "intra_op_threads",
            )
        },
        "limits": [r["limits"] for r in table_results + comparison_results],
        "table": rows,
        "comparisons": summary,
    }
    data_utils.atomic_write_json(FLAGS.output, output, indent=2)
    print(f"wrote {FLAGS.output}")


def main(_):
    try:
        run()
    except (ValueError, OSError) as e:
        sys.exit(f"{os.path.basename(sys.argv[0])}: error: {e}".replace("\n", " "))


if __name__ == "__main__":
    app.run(main)
