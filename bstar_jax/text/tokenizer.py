"""Tokenizers (transformers AutoTokenizer), a small local BPE, and encoding prompts and SFT
examples in the project's format (text/format.py)."""
from __future__ import annotations

import os
import pathlib
from typing import Iterable, Sequence

from bstar_jax.core import distributed
from bstar_jax.models.gguf_io import EMBEDDED_MODELS, embedded_path
from bstar_jax.text.format import format_prompt

# Special tokens of the BPE trained by `train_bpe` (ids 0, 1, 2 in this order).
PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = "<pad>", "<s>", "</s>"


# --------------------------------------------------------------------------- loading


def embedded_gguf_path(alias: str) -> pathlib.Path:
    """Path of the GGUF file an embedded alias names (e.g. "smollm2-135m"); see models.embedded_path."""
    return pathlib.Path(embedded_path(alias))


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


@distributed.decided_on_writer
def _local_kind(name: str) -> str | None:
    """"gguf" (a .gguf file), "folder", or None (neither: a hub id or a missing path), as the
    writer sees `name`; every process loads the same kind (each from its own copy)."""
    path = pathlib.Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return "gguf"
    return "folder" if path.is_dir() else None


def load_tokenizer(path_or_id: str | os.PathLike, *, gguf_file: str | None = None):
    """Load a transformers tokenizer.

    `path_or_id` is an embedded alias ("smollm2-135m"), a `.gguf` file, an HF folder (with
    `gguf_file` naming a GGUF file inside it, optionally), or a hub id (online only).
    """
    from transformers import AutoTokenizer  # heavy import, kept local

    name = os.fspath(path_or_id)
    if name in EMBEDDED_MODELS:
        path = embedded_gguf_path(name)
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    path = pathlib.Path(name).expanduser()
    kind = _local_kind(name)
    if kind == "gguf":
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    if kind == "folder":
        return AutoTokenizer.from_pretrained(str(path), gguf_file=gguf_file)
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 \
            or name.endswith(".gguf"):
        raise FileNotFoundError(f"tokenizer path {name!r} does not exist")
    try:
        return AutoTokenizer.from_pretrained(name, gguf_file=gguf_file)
    except OSError as e:
        hint = " (HF_HUB_OFFLINE is set)" if _hub_offline() else ""
        raise OSError(
            f"could not load tokenizer {name!r} from the hub{hint}: the hub is unreachable or the id "
            f"is wrong; pass a local folder, a .gguf file or one of {sorted(EMBEDDED_MODELS)}"
        ) from e


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike):
    """Train a byte-level BPE on `texts`, save it as an HF tokenizer folder and return it.

    Special tokens: `<pad>` (0), `<s>` (1, BOS), `</s>` (2, EOS). All 256 bytes are in the
    vocabulary, so any text encodes and `decode(encode(text)) == text` exactly (newlines and
    spaces included). Digits are split one per token (as Llama's tokenizer does), so that numbers
    are spelled digit by digit and arithmetic is learnable by a small model; otherwise BPE merges
    some digit pairs and not others ("20" one token, "21" two). The folder reloads offline with
    `AutoTokenizer.from_pretrained(out_dir)`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(specials):
        raise ValueError(f"vocab_size={vocab_size} < 256 bytes + {len(specials)} special tokens")
    tok = Tokenizer(models.BPE())
    # The GPT-2 split regex keeps runs of newlines as their own pre-tokens, so "\n\n" survives.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD_TOKEN, bos_token=BOS_TOKEN,
                                   eos_token=EOS_TOKEN, clean_up_tokenization_spaces=False)
    fast.save_pretrained(os.fspath(out_dir))
    return fast


# --------------------------------------------------------------------------- encoding


def _bos(tokenizer) -> list[int]:
    return [] if tokenizer.bos_token_id is None else [int(tokenizer.bos_token_id)]


def encode_prompts(tokenizer, questions: Sequence[str]) -> list[list[int]]:
    """Token ids of `format_prompt(q)` for each question, BOS first when the tokenizer has one."""
    bos = _bos(tokenizer)
    return [bos + list(tokenizer.encode(format_prompt(q), add_special_tokens=False))
            for q in questions]


def encode_example(tokenizer, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """(prompt ids, target ids) for SFT: BOS + prompt, and response + EOS.

    The two halves are tokenised separately, exactly as the sampler sees them (the prompt is
    encoded alone, the model continues it), so training and generation share token boundaries.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; SFT targets need one")
    prompt_ids = _bos(tokenizer) + list(tokenizer.encode(prompt, add_special_tokens=False))
    target_ids = list(tokenizer.encode(response, add_special_tokens=False))
    return prompt_ids, target_ids + [int(tokenizer.eos_token_id)]
