#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention on the shapes of silo-attention-bench's decode rows.

  python3 attention/bench/sdpa_bench.py [--iterations N]

1 query row, 32 heads, 8 KV heads (enable_gqa), head_dim 128, f16 K/V, n_kv 4096 and 32768;
K/V rotate over copies larger than the L2 cache, as in silo-attention-bench. Prints time per call
and bandwidth = bytes of K and V / time, in the same table format. Needs a CUDA device.
"""
import argparse
import time

import torch
import torch.nn.functional as F

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
L2_BYTES = 64 << 20


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    device = torch.device("cuda")
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(device)}; "
          f"scaled_dot_product_attention, f16, enable_gqa")
    for n_kv in (4096, 32768):
        kv_bytes = n_kv * KV_HEADS * HEAD_DIM * 2
        copies = max(2, L2_BYTES // (2 * kv_bytes) + 1)
        q = torch.randn(1, HEADS, 1, HEAD_DIM, device=device, dtype=torch.float16)
        ks = [torch.randn(1, KV_HEADS, n_kv, HEAD_DIM, device=device, dtype=torch.float16)
              for _ in range(copies)]
        vs = [torch.randn(1, KV_HEADS, n_kv, HEAD_DIM, device=device, dtype=torch.float16)
              for _ in range(copies)]
        for i in range(3):
            F.scaled_dot_product_attention(q, ks[i % copies], vs[i % copies], enable_gqa=True)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(args.iterations):
            F.scaled_dot_product_attention(q, ks[i % copies], vs[i % copies], enable_gqa=True)
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / args.iterations
        print(f"{'sdpa decode attention, n_kv ' + str(n_kv):<44} {seconds * 1e6:12.2f} "
              f"{2 * kv_bytes / seconds / 1e9:14.1f}")


if __name__ == "__main__":
    main()
