"""The micro ladder's tokenizer: a byte-level BPE trained with the `tokenizers` library on the
training files of the corpus, wrapped as a transformers `PreTrainedTokenizerFast`.

Byte-level (as GPT-2 and StarCoder) so that any text round-trips, indentation included. The end of
text token is the first special token, hence id 0: the id `Arch.hf_config` gives bos/eos/pad.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from sweeper.ladders.micro.config import TokenizerConfig

EOS_TOKEN = "<|endoftext|>"  # StarCoder's name for it
EOS_ID = 0


def train_tokenizer(texts: Sequence[str], config: TokenizerConfig) -> Tokenizer:
    """Train the BPE on `texts` (the standard library: ~2 s on one core)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    assert tokenizer.token_to_id(EOS_TOKEN) == EOS_ID
    return tokenizer


def as_transformers(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """The transformers view of the BPE, with eos = pad = bos = the end of text token (id 0)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN, bos_token=EOS_TOKEN
    )


def encode_stream(tokenizer: Tokenizer, texts: Sequence[str]) -> np.ndarray:
    """All texts as one token stream, each followed by the end of text token (uint16 ids)."""
    encoded = tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
    pieces = []
    for encoding in encoded:
        pieces.append(np.asarray(encoding.ids, dtype=np.uint16))
        pieces.append(np.array([EOS_ID], dtype=np.uint16))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint16)


def load_tokenizer(path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))
