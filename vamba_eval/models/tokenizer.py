"""Tokenizers: the checkpoint's own (7B) or a small byte-level one with Qwen2-VL's special tokens.

The tiny tokenizer is built with the `tokenizers` library (256 byte symbols, no merges, plus the
Qwen2-VL special tokens) and saved as tokenizer.json beside each tiny checkpoint, so tiny and 7B
checkpoints load through the same code path (``AutoTokenizer.from_pretrained(folder)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def _byte_vocab() -> dict[str, int]:
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    return {ch: i for i, ch in enumerate(alphabet)}


def build_byte_tokenizer() -> Any:
    """A `transformers` fast tokenizer: bytes + Qwen2-VL special tokens (ids 256…263)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(vocab=_byte_vocab(), merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=list(SPECIAL_TOKENS[1:]))
    return fast


def special_token_ids(tokenizer: Any) -> dict[str, int]:
    """The config.json token-id keys for a tokenizer's special tokens."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    return {
        "bos_token_id": ids["<|endoftext|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "vision_token_id": ids["<|vision_pad|>"],
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
    }


def load_tokenizer(folder: Path) -> Any:
    """The tokenizer saved beside a checkpoint (never downloads)."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file() and not (folder / "vocab.json").is_file():
        raise FileNotFoundError(
            f"{folder}: no tokenizer.json; a checkpoint folder must hold its tokenizer "
            "(copy tokenizer.json/tokenizer_config.json from the release)"
        )
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
