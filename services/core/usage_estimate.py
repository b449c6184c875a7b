"""Token counts for replies whose upstream did not give them.

Some OpenAI-compatible servers (llama.cpp's Python server, older vLLM) ignore
`stream_options.include_usage`, so a stream ends without usage. A non-empty reply is never
reported as zero tokens: Relay then estimates, and marks the Usage `estimated` (the access log
writes `tokens=~P+C`, relay_tokens_estimated counts them). The estimate:

- completion: the number of streamed text pieces, since these servers send one token per
  chunk, or a token per 4 bytes of text if that is more (servers that batch tokens);
- prompt: a token per 4 bytes of the messages' text, plus 4 per message for the chat
  template's role markers, plus 3 for the assistant turn's opening.

It is what the tokens-per-minute limit is charged with and what the reply cache stores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator

from services.core.types import ChatDelta, ChatRequest, ChatResult, Usage

PER_MESSAGE = 4
REPLY_OPENING = 3


def size(text: str) -> int:
    """UTF-8 bytes of a text; a lone surrogate (valid JSON, not Unicode) counts as 3."""
    return len(text.encode("utf-8", "surrogatepass"))


def text_tokens(text: str) -> int:
    """Estimate the tokens of a text: one per 4 bytes of UTF-8, at least one if non-empty."""
    return (size(text) + 3) // 4


def chat_prompt_tokens(req: ChatRequest) -> int:
    parts = sum(
        text_tokens(m.text())
        + sum(text_tokens(c.name) + text_tokens(c.arguments) for c in m.tool_calls)
        + PER_MESSAGE
        for m in req.messages
    )
    return parts + REPLY_OPENING


def needs_estimate(usage: Usage | None, said_something: bool) -> bool:
    """Usage is missing, or zero for a reply that was not empty."""
    return usage is None or (usage.total_tokens == 0 and said_something)


def fill_usage(
    deltas: Generator[ChatDelta, None, None], prompt_tokens: int
) -> Generator[ChatDelta, None, None]:
    """Pass the deltas on; give the final one an estimate when the upstream gave no usage."""
    pieces = made_bytes = 0
    try:
        for d in deltas:
            if d.finish_reason is None:
                texts = [d.content, d.reasoning, d.refusal]
                texts += [t for c in d.tool_calls for t in (c.name, c.arguments)]
                said = [t for t in texts if t]
                pieces += 1 if said else 0
                made_bytes += sum(size(t) for t in said)
            elif needs_estimate(d.usage, pieces > 0 or bool(d.content)):
                made = max(pieces, (made_bytes + 3) // 4)
                d = dataclasses.replace(d, usage=estimate(prompt_tokens, made, d.usage))
            yield d
    finally:
        deltas.close()


def estimate(prompt_tokens: int, completion_tokens: int, given: Usage | None) -> Usage:
    """An estimated Usage; counts the upstream did give (non-zero) are kept."""
    if given is not None:
        prompt_tokens = given.prompt_tokens or prompt_tokens
        completion_tokens = given.completion_tokens or completion_tokens
    return Usage(prompt_tokens, completion_tokens, estimated=True)


def complete_usage(result: ChatResult, prompt_tokens: int) -> ChatResult:
    """A whole reply: estimate its usage from its text when the upstream gave none."""
    texts = [result.content, result.reasoning, result.refusal]
    texts += [t for c in result.tool_calls for t in (c.name, c.arguments)]
    if not needs_estimate(result.usage, any(texts)):
        return result
    made = sum(text_tokens(t) for t in texts if t)
    return dataclasses.replace(result, usage=estimate(prompt_tokens, made, result.usage))
