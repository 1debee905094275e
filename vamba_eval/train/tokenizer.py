"""A small byte-level BPE trained with `tokenizers` on the training text, Qwen2-VL special tokens kept.

Byte-level (every UTF-8 string encodes, as the byte tokenizer of ``models.tokenizer``), with merges
learnt from the chat-formatted prompts, replies and captions so a Video-MME prompt is ~100 tokens
instead of ~500 bytes. The special tokens take ids 0…7 (config.json token ids follow them through
``models.tokenizer.special_token_ids``). Saved as tokenizer.json beside every checkpoint and loaded
with ``models.tokenizer.load_tokenizer`` like the 7B's.
"""

from __future__ import annotations

from typing import Any, Iterable

from vamba_eval.models.tokenizer import SPECIAL_TOKENS


def train_bpe(texts: Iterable[str], vocab_size: int) -> Any:
    """A `transformers` fast tokenizer: byte-level BPE of ``vocab_size`` entries incl. the specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=list(SPECIAL_TOKENS[1:]))


def training_texts(examples: Iterable[dict[str, Any]]) -> Iterable[str]:
    """The chat-formatted prompt and the reply of every example (what the model will read and write)."""
    from vamba_eval.models.base import qwen_chat
    from vamba_eval.train.formats import prompt_from_dict

    for e in examples:
        yield qwen_chat(prompt_from_dict(e["prompt"]), "")
        yield e["target"]
