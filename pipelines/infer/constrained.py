"""Constrained decoding: structured answers that are valid by construction, at a fraction of the cost.

Two answer shapes (declared by each task, see pipelines.tasks.base):

- SlotChoices (labeling): the fixed text of the answer (the JSON keys, quotes, commas) is
  forced and fed in one forward pass per slot; only the slot values are decided, each by the
  model's next-token logits over the values' tokens. 14 forward passes of ~9 tokens replace
  ~126 single-token decoding steps.
- ScoredCandidates (harmonization): every complete answer (the description mapped to each of
  the seven classes) is scored by its summed log-likelihood, and the most likely one is the
  answer. The text the candidates share is fed once; only their class tokens are fed per
  candidate, side by side in one forward pass under a tree attention mask.

Forced tokens are exactly the tokens of the training target (checked at compile time), so the
model sees what it was trained on.
"""
from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from pipelines.padding import pad_rows
from pipelines.tasks.base import ScoredCandidates, SlotChoices
from pipelines.train.encoding import encode_prompt, fit_prompt


class TemplateError(ValueError):
    """A tokenizer with which a constrained answer cannot be forced token by token."""


@dataclass(frozen=True)
class CompiledSlots:
    """A SlotChoices answer in tokens: runs[k] is forced before slot k (runs[-1] after the last);
    options[k][v] are the tokens of value v at slot k, told apart by their first token."""

    runs: list[list[int]]
    options: list[list[list[int]]]


def _tokens(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def compile_slots(tokenizer, shape: SlotChoices) -> CompiledSlots:
    """The token template of `shape`, equal to how the training targets are tokenized.

    Tokenizing the answer with every slot set to one value, for each value, must give sequences
    that differ only at one token per slot (true of the BPE tokenizers of the presets for the
    labeling JSON). Otherwise the fixed pieces and the values are tokenized separately, which
    is still a valid answer but may split text differently from training.
    """
    uniform = [_tokens(tokenizer, shape.render([v] * shape.slots)) for v in shape.values]
    if len({len(t) for t in uniform}) == 1:
        differing = [i for i in range(len(uniform[0])) if len({t[i] for t in uniform}) > 1]
        if len(differing) == shape.slots:
            bounds = [-1, *differing, len(uniform[0])]
            runs = [uniform[0][a + 1 : b] for a, b in itertools.pairwise(bounds)]
            options = [[[t[i]] for t in uniform] for i in differing]
            compiled = CompiledSlots(runs, options)
            if _check(tokenizer, shape, compiled):
                return compiled
    return _compile_by_pieces(tokenizer, shape)


def _check(tokenizer, shape: SlotChoices, compiled: CompiledSlots) -> bool:
    """Whether a mixed assignment (values alternating over slots) tokenizes as the template says."""
    picks = [k % len(shape.values) for k in range(shape.slots)]
    expected = compiled.runs[0]
    for slot, pick in enumerate(picks):
        expected = expected + compiled.options[slot][pick] + compiled.runs[slot + 1]
    return expected == _tokens(tokenizer, shape.render([shape.values[p] for p in picks]))


def _compile_by_pieces(tokenizer, shape: SlotChoices) -> CompiledSlots:
    marks = [f"\ue000{k}\ue001" for k in range(shape.slots)]
    text = shape.render(marks)
    pieces: list[str] = []
    for mark in marks:
        head, _, text = text.partition(mark)
        pieces.append(head)
    pieces.append(text)
    runs = [_tokens(tokenizer, piece) for piece in pieces]
    options = [[_tokens(tokenizer, v) for v in shape.values] for _ in range(shape.slots)]
    firsts = [o[0] if o else None for o in options[0]]
    if None in firsts or len(set(firsts)) < len(firsts):
        raise TemplateError(f"the values {shape.values} do not start with distinct tokens under this "
                            "tokenizer; use --decoding free")
    if any(not run for run in runs[1:-1]):
        raise TemplateError("two slots with no text between them cannot be forced; use --decoding free")
    return CompiledSlots(runs, options)


def _cache_argument(model) -> str:
    """The forward argument that takes the KV cache: `cache` (transformers >= 5.2x) or `past_key_values`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _returned_cache(out):
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values


class IncrementalBatch:
    """Feeds token chunks of different lengths to a batch, keeping the KV cache.

    A shorter chunk is padded at its end; the padding is masked out of attention (a hole in
    the sequence) and positions continue from each row's real length.
    """

    def __init__(self, model, pad_token_id: int) -> None:
        self.model, self.pad = model, pad_token_id
        self.device = next(model.parameters()).device
        self.cache_arg = _cache_argument(model)
        self.cache = None
        self.mask: torch.Tensor | None = None
        self.lengths: torch.Tensor | None = None

    def start(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """Left-padded prompts in; the next-token logits of each row out."""
        ids, mask = pad_rows(rows, self.pad, side="left")
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=positions.to(self.device), use_cache=True, logits_to_keep=1)
        self.cache, self.mask, self.lengths = _returned_cache(out), mask.to(self.device), mask.sum(-1)
        return out.logits[:, -1, :].float()

    def expand(self, repeats: int) -> None:
        """Repeat every row `repeats` times in place (row i becomes rows i*repeats ... ), cache included."""
        self.cache.batch_repeat_interleave(repeats)
        self.mask = self.mask.repeat_interleave(repeats, dim=0)
        self.lengths = self.lengths.repeat_interleave(repeats, dim=0)

    def feed(self, chunks: Sequence[Sequence[int]]) -> torch.Tensor:
        """One chunk per row (at least one token each) in; each row's next-token logits out."""
        logits = self.feed_all(chunks)
        last = torch.tensor([len(c) - 1 for c in chunks], device=logits.device)
        return logits[torch.arange(len(chunks), device=logits.device), last]

    def feed_all(self, chunks: Sequence[Sequence[int]]) -> torch.Tensor:
        """One chunk per row in; the logits after every chunk position, (rows, longest chunk, vocab)."""
        ids, mask = pad_rows(chunks, self.pad, side="right")
        width = ids.shape[1]
        positions = self.lengths[:, None] + torch.arange(width)[None, :]
        self.mask = torch.cat([self.mask, mask.to(self.device)], dim=1)
        out = self.model(input_ids=ids.to(self.device), attention_mask=self.mask,
                         position_ids=positions.to(self.device), use_cache=True, **{self.cache_arg: self.cache})
        self.cache = _returned_cache(out)
        self.lengths = self.lengths + mask.sum(-1)
        return out.logits.float()


def _batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


def slot_logits(model, pad_token_id: int, compiled: CompiledSlots, rows: Sequence[Sequence[int]]
                ) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Decide every slot of a batch of prompts (each already followed by compiled.runs[0]).

    Returns the chosen value index per row and slot, and per slot the logits (rows, values) of
    the values' first tokens that decided it. After each decision the whole chosen value and the
    fixed text up to the next slot are fed, so slot k+1 is decided in exactly the context of the
    teacher-forced answer (the training target).
    """
    batch = IncrementalBatch(model, pad_token_id)
    logits = batch.start(rows)
    picks: list[list[int]] = [[] for _ in rows]
    decided: list[torch.Tensor] = []
    for slot, options in enumerate(compiled.options):
        firsts = torch.tensor([o[0] for o in options], device=logits.device)
        decided.append(logits[:, firsts])
        chosen = decided[-1].argmax(-1).tolist()
        for r, value in enumerate(chosen):
            picks[r].append(value)
        if slot + 1 < len(compiled.options):
            logits = batch.feed([options[v] + compiled.runs[slot + 1] for v in chosen])
    return picks, decided


@torch.no_grad()
def decode_slots(model, tokenizer, shape: SlotChoices, prompts: Sequence[str], inputs: Sequence[str], *,
                 batch_size: int, max_prompt_tokens: int, desc: str) -> list[str]:
    """The answer of each prompt with every slot value chosen by the model (see module docstring)."""
    compiled = compile_slots(tokenizer, shape)
    encoded = [fit_prompt(encode_prompt(tokenizer, p), max_prompt_tokens) + compiled.runs[0] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
    outputs = [""] * len(prompts)
    with tqdm(total=len(prompts), desc=desc, unit="ex", leave=False) as bar:
        for rows in _batches(order, batch_size):
            picks, _ = slot_logits(model, tokenizer.pad_token_id, compiled, [encoded[i] for i in rows])
            for r, i in enumerate(rows):
                outputs[i] = shape.render([shape.values[v] for v in picks[r]])
            bar.update(len(rows))
    return outputs


def _shared_length(rows: Sequence[Sequence[int]], keep: int) -> int:
    """Length of the token prefix common to all `rows`, leaving at least `keep` tokens of each."""
    limit = min(len(r) for r in rows) - keep
    n = 0
    while n < limit and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return max(n, 0)


@torch.no_grad()
def decode_candidates(model, tokenizer, shape: ScoredCandidates, prompts: Sequence[str],
                      inputs: Sequence[str], *, batch_size: int, max_prompt_tokens: int, desc: str) -> list[str]:
    """The most likely complete answer of each prompt (summed log-probability of its tokens + eos).

    Every token is scored once in the context it has: the prompt head common to a batch (the
    instruction) is fed once for the whole batch; each row's rest of the prompt and the answer
    text common to its candidates (`{"<description>": "`) once per row; only then is the KV cache
    repeated for the candidates, which differ in a few class tokens. Scores equal a full forward
    pass of prompt + candidate (tested).
    """
    candidates = [shape.candidates(text) for text in inputs]
    counts = {len(c) for c in candidates}
    if len(counts) > 1:
        raise ValueError(f"every input must have the same number of candidate answers, got {sorted(counts)}")
    k = counts.pop() if counts else 0
    encoded = [fit_prompt(encode_prompt(tokenizer, p), max_prompt_tokens) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
    outputs = [""] * len(prompts)
    with tqdm(total=len(prompts), desc=desc, unit="ex", leave=False) as bar:
        for rows in _batches(order, max(1, batch_size)):
            scores = candidate_scores(model, tokenizer, [encoded[i] for i in rows],
                                      [[_tokens(tokenizer, c) + [tokenizer.eos_token_id] for c in candidates[i]]
                                       for i in rows])
            for r, i in enumerate(rows):
                outputs[i] = candidates[i][max(range(k), key=scores[r].__getitem__)]
            bar.update(len(rows))
    return outputs


def candidate_scores(model, tokenizer, prompts: Sequence[Sequence[int]],
                     targets: Sequence[Sequence[Sequence[int]]]) -> list[list[float]]:
    """Summed log-probability of each row's candidate token sequences after its prompt: (rows, k).

    One forward pass after the shared prompt head: each row holds its trunk (the rest of its
    prompt and the answer text common to its candidates) followed by every candidate's own
    tokens, packed end to end; a 4D attention mask lets each candidate see the trunk and itself
    only, and each candidate's positions continue from the trunk's, as if it were fed alone.
    """
    head = _shared_length(prompts, keep=1)
    shared = [_shared_length(t, keep=2) for t in targets]  # every candidate keeps a token to decide + eos
    batch = IncrementalBatch(model, tokenizer.pad_token_id)
    if head:
        batch.start([prompts[0][:head]])
        batch.expand(len(prompts))
    else:  # nothing in common: each row starts with its own first token
        head = 1
        batch.start([p[:1] for p in prompts])
    trunks = [list(p[head:]) + list(t[0][:n]) for p, t, n in zip(prompts, targets, shared, strict=True)]
    suffixes = [[list(c[n:]) for c in t] for t, n in zip(targets, shared, strict=True)]
    logprobs = torch.log_softmax(_feed_tree(batch, trunks, [[s[:-1] for s in row] for row in suffixes]), dim=-1)
    scores: list[list[float]] = []
    for r, (trunk, n) in enumerate(zip(trunks, shared, strict=True)):
        answer_start = len(trunk) - n - 1  # the position whose logits predict the answer's first token
        prefix = torch.tensor(trunk[len(trunk) - n:], dtype=torch.long, device=logprobs.device)
        common = float(logprobs[r, answer_start : answer_start + n].gather(-1, prefix[:, None]).sum())
        last, offset, row = logprobs[r, len(trunk) - 1], len(trunk), []
        for suffix in suffixes[r]:
            rest = torch.tensor(suffix[1:], dtype=torch.long, device=logprobs.device)
            own = logprobs[r, offset : offset + len(rest)].gather(-1, rest[:, None]).sum()
            row.append(common + float(last[suffix[0]] + own))
            offset += len(rest)
        scores.append(row)
    return scores


def _feed_tree(batch: IncrementalBatch, trunks: list[list[int]], branches: list[list[list[int]]]) -> torch.Tensor:
    """Feed each row's trunk, then its branches side by side (each sees the trunk and itself); all logits."""
    rows = [trunk + [t for branch in row for t in branch] for trunk, row in zip(trunks, branches, strict=True)]
    width, cached = max(len(r) for r in rows), batch.mask.shape[1]
    ids = torch.full((len(rows), width), batch.pad, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    sees = torch.zeros((len(rows), 1, width, cached + width), dtype=torch.bool)
    sees[:, 0, :, :cached] = batch.mask[:, None, :].bool()
    for r, (trunk, row) in enumerate(zip(trunks, branches, strict=True)):
        ids[r, : len(rows[r])] = torch.tensor(rows[r])
        base = int(batch.lengths[r])
        n = len(trunk)
        positions[r, :n] = base + torch.arange(n)
        sees[r, 0, :n, cached : cached + n] = torch.ones(n, n, dtype=torch.bool).tril()
        start = n
        for branch in row:
            end = start + len(branch)
            positions[r, start:end] = base + n + torch.arange(len(branch))
            sees[r, 0, start:end, cached : cached + n] = True
            sees[r, 0, start:end, cached + start : cached + end] = torch.ones(
                len(branch), len(branch), dtype=torch.bool).tril()
            start = end
    device = batch.device
    out = batch.model(input_ids=ids.to(device), attention_mask=sees.to(device), position_ids=positions.to(device),
                      use_cache=True, **{batch.cache_arg: batch.cache})
    return out.logits.float()


Decoder = Callable[..., list[str]]

# One decoder per answer shape: a task declares its shape, the registry finds the decoder.
DECODERS: dict[type, Decoder] = {SlotChoices: decode_slots, ScoredCandidates: decode_candidates}


def decode_constrained(model, tokenizer, shape, prompts: Sequence[str], inputs: Sequence[str], *,
                       batch_size: int, max_prompt_tokens: int, desc: str) -> list[str]:
    """Constrained answers for `prompts` (whose task inputs are `inputs`), in input order."""
    was_training = model.training
    model.eval()
    try:
        return DECODERS[type(shape)](model, tokenizer, shape, prompts, inputs, batch_size=batch_size,
                                     max_prompt_tokens=max_prompt_tokens, desc=desc)
    finally:
        model.train(was_training)
