"""Token counts of text, estimated without a tokenizer (the server sizes prompts with it, the
trace importer sizes conversations with it)."""

from __future__ import annotations


def estimate_tokens(text: str) -> int:
    """LLaMA-3 token count of ``text`` estimated without a tokenizer.

    ``ASCII characters / 4.5 + 0.8 x other characters``, rounded. On the bundled ShareGPT
    dump, against the LLaMA-3 tokenizer, it is +1% on the total and, per turn of 20+ tokens,
    +4% median, 13% mean absolute error, -16%..+23% for 80% of turns (``docs/trace-format.md``).
    """
    non_ascii = len(text) - len(text.encode("ascii", "ignore"))
    return int((len(text) - non_ascii) / 4.5 + 0.8 * non_ascii + 0.5)
