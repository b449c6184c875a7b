"""Write a tiny llama-architecture GGUF model whose output is known in advance.

2 layers, embedding 64, a byte-level BPE vocabulary (GPT-2 byte mapping, one merge) with the
ChatML special tokens, and ChatML as its chat template. Attention and feed-forward weights are
random but small, so the last position's hidden state is, in effect, the embedding of the last
token; the output weights then pick that token's successor:

- after a newline (where every ChatML assistant turn starts) a lower-case letter: `a` by a
  margin that greedy decoding always takes, the others close behind so that sampling with a
  seed picks different letters for different seeds;
- `a`..`y` are followed by the next letter, `z` by `<|im_end|>` (end of turn): at temperature 0
  chat answers `abcdefghijklmnopqrstuvwxyz` and stops by itself (26 tokens);
- digits count on for ever (`0`..`9`, then `0` again): a prompt ending in a digit runs until
  `max_tokens` or the context ends;
- every other token is followed by `<|im_end|>`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_FF = 128
N_CTX = 2048

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
IM_START, IM_END, DOUBLE_SPACE = 256, 257, 258
N_VOCAB = 259
ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def _byte_chars() -> list[str]:
    """GPT-2's byte-to-unicode table: the text of each of the 256 byte tokens."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def successors() -> dict[int, int]:
    """The token each token is followed by at temperature 0."""
    nxt = {t: IM_END for t in range(N_VOCAB)}
    for a, b in zip(ALPHABET, ALPHABET[1:], strict=False):
        nxt[ord(a)] = ord(b)
    for d in range(10):
        nxt[ord("0") + d] = ord("0") + (d + 1) % 10
    nxt[ord("\n")] = ord("a")
    return nxt


def write_model(path: Path, seed: int = 1234, embedding: bool = False) -> Path:
    """Write the model to `path` (deterministic: the same bytes for the same seed).

    With `embedding` the file says to mean-pool its hidden states (one vector per input),
    which the server has no setting for.
    """
    import gguf  # test-only dependency, imported here so collecting tests does not need it

    rng = np.random.default_rng(seed)
    # Embeddings: tokens that lead somewhere get their own axis (the first 37 dimensions are
    # a..z, 0..9 and newline... assigned below), the rest share small random directions.
    embd = rng.normal(0, 0.02, (N_VOCAB, N_EMBD)).astype(np.float32)
    axis: dict[int, int] = {}
    for i, t in enumerate([ord(c) for c in ALPHABET + "0123456789\n"]):
        axis[t] = i
        embd[t] = 0
        embd[t, i] = 1.0
    rest = N_EMBD - 1  # the last axis stands for "anything else"
    for t in range(N_VOCAB):
        if t not in axis:
            embd[t, rest] = 1.0
    out = np.zeros((N_VOCAB, N_EMBD), dtype=np.float32)
    for t, n in successors().items():
        out[n, axis.get(t, rest)] = 4.0
    # After a newline: `a` first by a margin, the other letters close behind (seeds vary).
    nl = axis[ord("\n")]
    out[:, nl] = 0
    for c in ALPHABET:
        out[ord(c), nl] = 1.0
    out[ord("a"), nl] = 1.3

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("relay-tiny")
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_vocab_size(N_VOCAB)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if embedding:
        writer.add_pooling_type(gguf.PoolingType.MEAN)

    tokens = [*_byte_chars(), "<|im_start|>", "<|im_end|>", "ĠĠ"]
    types = [gguf.TokenType.NORMAL] * 256 + [gguf.TokenType.CONTROL] * 2 + [gguf.TokenType.NORMAL]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(["Ġ Ġ"])
    writer.add_bos_token_id(IM_START)
    writer.add_eos_token_id(IM_END)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML)

    def small(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.01, shape).astype(np.float32)

    writer.add_tensor("token_embd.weight", embd)
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    writer.add_tensor("output.weight", out)
    for i in range(N_LAYER):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", small(N_EMBD, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", small(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", small(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", small(N_EMBD, N_FF))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
