"""Reads a GGUF file written by `mamba export` with the `gguf` package (llama.cpp's own
reader) and checks it against the checkpoint it came from, read here with numpy alone:

    python3 tests/check_gguf.py OUT.gguf CHECKPOINT_DIR

Every tensor of the checkpoint must be in the file under llama.cpp's name, in llama.cpp's
shape, equal to the checkpoint's value (A to 1e-6) after llama.cpp's transformations (A = -exp(A_log), the
conv weight squeezed, Mamba-2's A and D as (H, 1) and its norm as (G, d_inner / G)) for an f32
export; no other tensor may be there. The token list must be the tokenizer's, padded to the
embedding's rows. Prints one line per tensor and exits 1 on the first difference.
"""

import json
import os
import struct
import sys

import gguf
import numpy as np


def safetensors(path):
    """{name: float32 array} of a safetensors file (f32, f16 or bf16)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = data[a:b]
        if info["dtype"] == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        elif info["dtype"] == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif info["dtype"] == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"{name}: unexpected dtype {info['dtype']}")
        out[name] = arr.reshape(info["shape"])
    return out


def expected(ckpt, cfg):
    """{gguf name: array} as llama.cpp's converter writes the checkpoint."""
    mamba2 = cfg["model_type"] == "mamba2"
    want = {
        "token_embd.weight": ckpt["backbone.embeddings.weight"],
        "output_norm.weight": ckpt["backbone.norm_f.weight"],
    }
    if "lm_head.weight" in ckpt and not cfg.get("tie_word_embeddings", not mamba2):
        want["output.weight"] = ckpt["lm_head.weight"]
    names = {
        "in_proj.weight": "ssm_in.weight",
        "conv1d.bias": "ssm_conv1d.bias",
        "x_proj.weight": "ssm_x.weight",
        "dt_proj.weight": "ssm_dt.weight",
        "dt_proj.bias": "ssm_dt.bias",
        "dt_bias": "ssm_dt.bias",
        "out_proj.weight": "ssm_out.weight",
    }
    for i in range(cfg["num_hidden_layers"]):
        p = f"backbone.layers.{i}."
        want[f"blk.{i}.attn_norm.weight"] = ckpt[p + "norm.weight"]
        m = lambda k: ckpt[p + "mixer." + k]
        for hf, gg in names.items():
            if p + "mixer." + hf in ckpt:
                want[f"blk.{i}.{gg}"] = m(hf)
        want[f"blk.{i}.ssm_conv1d.weight"] = m("conv1d.weight").squeeze(1)
        a = -np.exp(m("A_log"))
        if mamba2:
            heads, groups = a.shape[0], cfg["n_groups"]
            want[f"blk.{i}.ssm_a"] = a.reshape(heads, 1)
            want[f"blk.{i}.ssm_d"] = m("D").reshape(heads, 1)
            norm = m("norm.weight")
            want[f"blk.{i}.ssm_norm.weight"] = norm.reshape(groups, norm.shape[0] // groups)
        else:
            want[f"blk.{i}.ssm_a"] = a
            want[f"blk.{i}.ssm_d"] = m("D")
    return want


def main():
    path, ckdir = sys.argv[1], sys.argv[2]
    cfg = json.load(open(os.path.join(ckdir, "config.json")))
    ckpt = safetensors(os.path.join(ckdir, "model.safetensors"))
    want = expected(ckpt, cfg)
    r = gguf.GGUFReader(path)
    got = {t.name: t for t in r.tensors}
    if set(got) != set(want):
        raise SystemExit(f"tensors differ: extra {set(got) - set(want)}, missing {set(want) - set(got)}")
    for name, w in want.items():
        t = got[name]
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            raise SystemExit(f"{name}: {t.tensor_type.name}, expected F32 in an f32 export")
        # The reader gives numpy order (ggml's ne reversed).
        arr = np.asarray(t.data, dtype=np.float32).reshape(w.shape)
        if list(reversed([int(x) for x in t.shape])) != list(w.shape):
            raise SystemExit(f"{name}: shape {list(t.shape)}, expected {list(w.shape)} reversed")
        # Copies are exact; A = -exp(A_log) is computed on each side (exp may differ in the
        # last bit between libraries).
        same = np.allclose(arr, w, rtol=1e-6, atol=0) if name.endswith("ssm_a") else np.array_equal(arr, w)
        if not same:
            raise SystemExit(f"{name}: values differ from the checkpoint")
        print(f"{name} {list(w.shape)} equal")
    field = lambda k: r.fields[k].contents()
    tok = json.load(open(os.path.join(ckdir, "tokenizer.json")))
    tokens = field("tokenizer.ggml.tokens")
    rows = ckpt["backbone.embeddings.weight"].shape[0]
    if len(tokens) != rows:
        raise SystemExit(f"{len(tokens)} tokens for {rows} embedding rows")
    for t, i in tok["model"]["vocab"].items():
        if tokens[i] != t:
            raise SystemExit(f"token {i}: {tokens[i]!r}, the tokenizer says {t!r}")
    for i in range(len(tok["model"]["vocab"]) + len(tok.get("added_tokens", [])), rows):
        if tokens[i] != f"[PAD{i}]" or field("tokenizer.ggml.token_type")[i] != 5:
            raise SystemExit(f"token {i}: {tokens[i]!r} is not an unused pad")
    arch = field("general.architecture")
    for key, value in [
        (f"{arch}.block_count", cfg["num_hidden_layers"]),
        (f"{arch}.embedding_length", cfg["hidden_size"]),
        (f"{arch}.ssm.state_size", cfg["state_size"]),
        (f"{arch}.ssm.conv_kernel", cfg["conv_kernel"]),
        ("tokenizer.ggml.model", "gpt2"),
    ]:
        if field(key) != value:
            raise SystemExit(f"{key}: {field(key)!r}, expected {value!r}")
    print(f"{arch}: {len(want)} tensors, {len(tokens)} tokens: all equal")


main()
