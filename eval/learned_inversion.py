#!/usr/bin/env python3
"""Attack 5 of DESIGN.md §6, learned inversion: a network trained to map the rows a compute node
receives to their tokens, across many sessions and keys. Runs on the GPU machine (PyTorch) over
the data that `silo-eval privacy-export` writes.

For each view listed in DATA_DIR/meta.json (plaintext and FedRAG with sphps at layers 0 and 1,
FedRAG with the dense mixer at layer 1) it trains a classifier on the rows of the first sessions and tests it on the rows of held-out sessions, whose scramblers
(FedRAG: fresh Φ, Ψ and Π per session) it has never seen. Input per row: the K′ row and the V′
row, each scaled to unit length (FedRAG's scales are secret), and the row's leverage in its key
(which no Φ changes). Output: a distribution over the whole vocabulary.

Prints a Markdown table and writes inversion.json (top-1 and top-5 accuracy on the held-out
rows, with the chance of always guessing the training set's most frequent tokens).

usage: learned_inversion.py DATA_DIR OUT_DIR [--epochs N] [--test-sessions N]
"""
import argparse
import json
import os
import time

import numpy as np
import torch
from torch import nn


def load_view(data_dir, name, rows, dim):
    def read(suffix, dtype):
        return np.fromfile(os.path.join(data_dir, f"{name}.{suffix}"), dtype=dtype)

    x = read("rows.f16", np.float16).astype(np.float32).reshape(rows, 2 * dim)
    leverage = read("leverage.f32", np.float32).reshape(rows, 1)
    label = read("label.i32", np.int32).astype(np.int64)
    session = read("session.i32", np.int32)
    k, v = x[:, :dim], x[:, dim:]
    k = k / np.maximum(np.linalg.norm(k, axis=1, keepdims=True), 1e-12)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return np.concatenate([k, v, leverage], axis=1), label, session


def top_k_hits(logits, labels, k):
    top = logits.topk(k, dim=1).indices
    return (top == labels[:, None]).any(dim=1).sum().item()


def train_and_test(features, labels, sessions, vocab, test_sessions, epochs, device):
    train = sessions < sessions.max() + 1 - test_sessions
    test = ~train
    x_train = torch.tensor(features[train], device=device)
    y_train = torch.tensor(labels[train], device=device)
    x_test = torch.tensor(features[test], device=device)
    y_test = torch.tensor(labels[test], device=device)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(features.shape[1], 1024), nn.GELU(),
        nn.Linear(1024, 1024), nn.GELU(),
        nn.Linear(1024, vocab)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        order = torch.randperm(len(x_train), device=device)
        for begin in range(0, len(order), 512):
            batch = order[begin:begin + 512]
            optimizer.zero_grad()
            loss_fn(model(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        test_logits = model(x_test)
        train_logits = model(x_train[:len(x_test)])
    # Chance: the training set's most frequent tokens, guessed for every held-out row.
    counts = np.bincount(labels[train], minlength=vocab)
    frequent = np.argsort(-counts)[:5]
    held_out = labels[test]
    return {
        "train_rows": int(train.sum()), "test_rows": int(test.sum()),
        "test_top1": top_k_hits(test_logits, y_test, 1), "test_top5": top_k_hits(test_logits, y_test, 5),
        "train_top1": top_k_hits(train_logits, y_train[:len(x_test)], 1),
        "train_checked": len(x_test),
        "chance_top1": int((held_out == frequent[0]).sum()),
        "chance_top5": int(np.isin(held_out, frequent).sum()),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--test-sessions", type=int, default=4)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with open(os.path.join(args.data_dir, "meta.json")) as f:
        meta = json.load(f)
    results = []
    print(f"learned inversion on {device}: {meta['sessions']} sessions, "
          f"{args.test_sessions} held out, {args.epochs} epochs\n")
    print("| view | train rows | test rows | train top-1 % | test top-1 % | test top-5 % | "
          "chance top-1 % | chance top-5 % | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for view in meta["views"]:
        start = time.time()
        features, labels, sessions = load_view(args.data_dir, view["name"], view["rows"], meta["dim"])
        result = train_and_test(features, labels, sessions, meta["vocab"], args.test_sessions,
                                args.epochs, device)
        result["view"] = view["name"]
        result["seconds"] = time.time() - start
        results.append(result)
        n = result["test_rows"]
        print(f"| {view['name']} | {result['train_rows']} | {n} | "
              f"{100 * result['train_top1'] / result['train_checked']:.1f} | "
              f"{100 * result['test_top1'] / n:.1f} | {100 * result['test_top5'] / n:.1f} | "
              f"{100 * result['chance_top1'] / n:.1f} | {100 * result['chance_top5'] / n:.1f} | "
              f"{result['seconds']:.0f} |", flush=True)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "inversion.json"), "w") as f:
        json.dump({"device": device, "epochs": args.epochs, "test_sessions": args.test_sessions,
                   "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
