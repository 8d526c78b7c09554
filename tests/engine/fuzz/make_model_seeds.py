#!/usr/bin/env python3
"""Writes the seed corpus of model_fuzzer: two complete, tiny GGUF models with tokenizers.

    python3 make_model_seeds.py [OUT_DIR]      (default: model_corpus/ beside this script)

Needs the `gguf` and `numpy` packages (pip install gguf). The models are random and small
(a few KiB) so that the fuzzer mutates whole files quickly: a llama with Q8_0 and Q4_1 matrices
and an untied output, and a qwen2 with QKV biases and F16 matrices; both carry a byte-level BPE
vocabulary (the 256 byte symbols, a few merges, ChatML special tokens) and a chat template.
"""
import pathlib
import sys

import gguf
import numpy as np

DIM, HEADS, KV_HEADS, FFN, LAYERS = 32, 2, 1, 64, 1


def byte_symbols():
    """GPT-2's byte-to-unicode table: printable bytes map to themselves, others above 255."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    symbols, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def write(path, arch, matrix_type, bias, tied):
    rng = np.random.default_rng(len(arch))
    tokens = byte_symbols() + ["Ġt", "he", "Ġthe", "<|im_start|>", "<|im_end|>"]
    merges = ["Ġ t", "h e", "Ġt he"]
    types = [gguf.TokenType.NORMAL] * (len(tokens) - 2) + [gguf.TokenType.CONTROL] * 2
    vocab = len(tokens)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(LAYERS)
    writer.add_context_length(64)
    writer.add_embedding_length(DIM)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2" if arch == "qwen2" else "llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(vocab - 2)
    writer.add_eos_token_id(vocab - 1)
    writer.add_chat_template(
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
        "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}")

    def matrix(name, rows, cols, qtype):
        data = rng.standard_normal((rows, cols)).astype(np.float32) * 0.1
        if qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, data.astype(np.float16))
        elif qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    def vector(name, n):
        writer.add_tensor(name, (1 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    head_dim = DIM // HEADS
    matrix("token_embd.weight", vocab, DIM, gguf.GGMLQuantizationType.Q8_0)
    if not tied:
        matrix("output.weight", vocab, DIM, matrix_type)
    vector("output_norm.weight", DIM)
    for i in range(LAYERS):
        vector(f"blk.{i}.attn_norm.weight", DIM)
        vector(f"blk.{i}.ffn_norm.weight", DIM)
        matrix(f"blk.{i}.attn_q.weight", HEADS * head_dim, DIM, matrix_type)
        matrix(f"blk.{i}.attn_k.weight", KV_HEADS * head_dim, DIM, matrix_type)
        matrix(f"blk.{i}.attn_v.weight", KV_HEADS * head_dim, DIM, matrix_type)
        matrix(f"blk.{i}.attn_output.weight", DIM, HEADS * head_dim, matrix_type)
        matrix(f"blk.{i}.ffn_gate.weight", FFN, DIM, matrix_type)
        matrix(f"blk.{i}.ffn_up.weight", FFN, DIM, matrix_type)
        matrix(f"blk.{i}.ffn_down.weight", DIM, FFN, matrix_type)
        if bias:
            vector(f"blk.{i}.attn_q.bias", HEADS * head_dim)
            vector(f"blk.{i}.attn_k.bias", KV_HEADS * head_dim)
            vector(f"blk.{i}.attn_v.bias", KV_HEADS * head_dim)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main():
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else
                       pathlib.Path(__file__).parent / "model_corpus")
    out.mkdir(parents=True, exist_ok=True)
    write(out / "tiny_llama_q4_1.gguf", "llama", gguf.GGMLQuantizationType.Q4_1, False, False)
    write(out / "tiny_qwen2_f16.gguf", "qwen2", gguf.GGMLQuantizationType.F16, True, True)


if __name__ == "__main__":
    main()
