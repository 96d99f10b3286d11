"""Forward + backward time of the Hugging Face PyTorch port of Funnel, for the benchmark's comparison.

Not part of the project's environment: run it with a Python that has `torch` and `transformers`, e.g.

    python3 -m venv /tmp/hf && /tmp/hf/bin/pip install torch transformers
    /tmp/hf/bin/python scripts/pytorch_funnel_step.py --block_sizes=4,4,4 --d_model=768

It times the classification model (encoder only, dropout on, like `benchmark.py --modes=grad`) on random
ids and, in alternation with it, a square float32 matmul, and prints one JSON line: seconds per step,
examples per second and the matmul rate, each the median over the rounds.
"""

import argparse
import json
import statistics
import time

import torch
from transformers import FunnelConfig, FunnelForSequenceClassification


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--block_sizes", default="4,4,4", help="Layers per block, comma-separated.")
    parser.add_argument("--d_model", type=int, default=768, help="Hidden size (d_head 64).")
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="Timed rounds.")
    parser.add_argument("--matmul_size", type=int, default=2560)
    args = parser.parse_args()

    torch.manual_seed(0)
    config = FunnelConfig(
        vocab_size=30522,
        block_sizes=[int(b) for b in args.block_sizes.split(",")],
        d_model=args.d_model,
        n_head=args.d_model // 64,
        d_head=64,
        d_inner=4 * args.d_model,
        hidden_act="gelu_new",
        attention_type="relative_shift",
        num_labels=2,
    )
    model = FunnelForSequenceClassification(config).train()
    batch, seq_len = args.batch_size, args.seq_len
    ids = torch.randint(5, config.vocab_size, (batch, seq_len))
    token_type_ids = torch.zeros(batch, seq_len, dtype=torch.long)
    token_type_ids[:, seq_len // 2 :] = 1
    labels = torch.randint(0, 2, (batch,))

    def step():
        model(input_ids=ids, token_type_ids=token_type_ids, labels=labels).loss.backward()
        model.zero_grad(set_to_none=True)

    n = args.matmul_size
    a, b = torch.randn(n, n), torch.randn(n, n)

    def timed(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    for _ in range(2):
        step()
    step_s, matmul_s = [], []
    for _ in range(args.steps):
        step_s.append(timed(step))
        matmul_s.append(statistics.median(timed(lambda: torch.mm(a, b)) for _ in range(3)))
    seconds = statistics.median(step_s)
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "step_s": seconds,
                "examples_per_s": batch / seconds,
                "matmul_gflops": 2 * n**3 / statistics.median(matmul_s) / 1e9,
                "round_step_s": step_s,
            }
        )
    )


if __name__ == "__main__":
    main()
