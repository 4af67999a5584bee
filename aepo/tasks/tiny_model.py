"""A tiny Llama and a character-level tokenizer, built in code (no download).

Llama because every engine we target (transformers' ``generate``, verl's agent loop, vLLM)
knows the architecture; character-level because the built-in task's answers are a few
digits and a tokenizer we define can still read any ASCII text (math problems included),
mapping anything else to ``<unk>``.
"""

from __future__ import annotations

import string
from pathlib import Path

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)
# Printable ASCII (space through '~') plus newline and tab: enough for any English math text.
CHARACTERS = tuple(dict.fromkeys(string.printable))

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)

TINY_MODEL_DEFAULTS = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    # Two heads of 32: vLLM's CPU attention backend refuses head_dim below 32, and the real
    # verl stack (vLLM rollout) runs this model in CI.
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    # RoPE has no per-position weights, so a long limit costs nothing and lets evaluation
    # feed real math problems to the tiny model.
    "max_position_embeddings": 4096,
}


def build_tokenizer():
    """A ``PreTrainedTokenizerFast`` with one token per character, pad/unk/bos/eos and a
    plain-text chat template. Decoding concatenates characters (no spaces inserted)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # One pre-token per character; WordLevel then maps each to its id (or <unk>).
    core.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(tokenizer, seed: int = 0, **overrides):
    """An untrained ``LlamaForCausalLM`` sized for a CPU (about 0.1M parameters)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    settings = {**TINY_MODEL_DEFAULTS, **overrides}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        **settings,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def save_tiny_model(path: str | Path, seed: int = 0) -> Path:
    """Save an untrained tiny Llama and its tokenizer so that
    ``AutoModelForCausalLM.from_pretrained(path)`` and ``AutoTokenizer.from_pretrained(path)``
    work offline. Returns the directory."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    model = build_tiny_model(tokenizer, seed=seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
