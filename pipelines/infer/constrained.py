"""Constrained decoding: structured answers that are valid by construction, at a fraction of the cost.

Two answer shapes (declared by each task, see pipelines.tasks.base):

- SlotChoices (labeling): the fixed text of the answer (the JSON keys, quotes, commas) is
  forced and fed in one forward pass per slot; only the slot values are decided, each by the
  model's next-token logits over the values' tokens. 14 forward passes of ~9 tokens replace
  ~126 single-token decoding steps.
- ScoredCandidates (harmonization): the answer is the complete candidate (the description
  mapped to each of the seven classes) of highest summed log-likelihood. The text the
  candidates share is fed once; their own class tokens follow as a prefix tree ("T1", "T2" and
  "T2/FLAIR" share their "T"), side by side under a tree attention mask; and a candidate whose
  first own token is already less likely than a complete candidate is never fed (it cannot
  win), so a confident model feeds one small subtree per description.

Forced tokens are exactly the tokens of the training target (checked at compile time), so the
model sees what it was trained on.
"""
from __future__ import annotations

import inspect
import itertools
import math
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


def text_tokens(tokenizer, text: str) -> list[int]:
    """`text`'s tokens without special tokens (as training tokenizes a target)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def compile_slots(tokenizer, shape: SlotChoices) -> CompiledSlots:
    """The token template of `shape`, equal to how the training targets are tokenized.

    Tokenizing the answer with every slot set to one value, for each value, must give sequences
    that differ only at one token per slot (true of the BPE tokenizers of the presets for the
    labeling JSON). Otherwise the fixed pieces and the values are tokenized separately, which
    is still a valid answer but may split text differently from training.
    """
    uniform = [text_tokens(tokenizer, shape.render([v] * shape.slots)) for v in shape.values]
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
    return expected == text_tokens(tokenizer, shape.render([shape.values[p] for p in picks]))


def _compile_by_pieces(tokenizer, shape: SlotChoices) -> CompiledSlots:
    marks = [f"\ue000{k}\ue001" for k in range(shape.slots)]
    text = shape.render(marks)
    pieces: list[str] = []
    for mark in marks:
        head, _, text = text.partition(mark)
        pieces.append(head)
    pieces.append(text)
    runs = [text_tokens(tokenizer, piece) for piece in pieces]
    options = [[text_tokens(tokenizer, v) for v in shape.values] for _ in range(shape.slots)]
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


def _last_columns(width: int, keep: int, device) -> torch.Tensor:
    """`logits_to_keep` for the last `keep` of `width` columns, as indices: an int would have the
    model slice its hidden states to a view whose product with the output embedding runs as a
    batched matmul over a copy of the embedding per row (about 60 ms more per call for 16 rows
    on 2 cores, measured)."""
    return torch.arange(max(width - keep, 0), width, device=device)


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
                         position_ids=positions.to(self.device), use_cache=True,
                         logits_to_keep=_last_columns(ids.shape[1], 1, self.device))
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

    def feed_tail(self, chunks: Sequence[Sequence[int]], keep: int) -> torch.Tensor:
        """One chunk per row, left-padded so that every row ends in the last column; the logits of
        the last `keep` columns only, (rows, keep, vocab)."""
        ids, mask = pad_rows(chunks, self.pad, side="left")
        width = ids.shape[1]
        real = mask.sum(-1)
        positions = ((self.lengths - (width - real))[:, None] + torch.arange(width)[None, :]).clamp(min=0)
        self.mask = torch.cat([self.mask, mask.to(self.device)], dim=1)
        out = self.model(input_ids=ids.to(self.device), attention_mask=self.mask,
                         position_ids=positions.to(self.device), use_cache=True,
                         logits_to_keep=_last_columns(width, keep, self.device),
                         **{self.cache_arg: self.cache})
        self.cache = _returned_cache(out)
        self.lengths = self.lengths + real
        return out.logits.float()

    def feed_trees(self, trees: Sequence[PrefixTree]) -> torch.Tensor:
        """Each row's prefix tree after its sequence, every node seeing the sequence and its own
        ancestors at the position it would have if fed alone; the logits (rows, width, vocab), row
        r's node i in column width - len(trees[r].tokens) + i. The nodes leave the cache afterwards."""
        width, cached = max(len(t.tokens) for t in trees), self.mask.shape[1]
        ids = torch.full((len(trees), width), self.pad, dtype=torch.long)
        positions = torch.zeros((len(trees), width), dtype=torch.long)
        sees = torch.zeros((len(trees), 1, width, cached + width), dtype=torch.bool)
        sees[:, 0, :, :cached] = self.mask[:, None, :].bool()  # padding sees the sequence: no empty row
        for r, tree in enumerate(trees):
            start = width - len(tree.tokens)
            ids[r, start:] = torch.tensor(tree.tokens)
            for i, (depth, ancestry) in enumerate(zip(tree.depths(), tree.ancestries(), strict=True)):
                positions[r, start + i] = int(self.lengths[r]) + depth - 1
                sees[r, 0, start + i, [cached + start + a for a in ancestry]] = True
        out = self.model(input_ids=ids.to(self.device), attention_mask=sees.to(self.device),
                         position_ids=positions.to(self.device), use_cache=True, **{self.cache_arg: self.cache})
        self.cache = _returned_cache(out)
        self.cache.crop(-width)  # a negative count removes that many tokens (every transformers version)
        return out.logits.float()

    def select(self, rows: Sequence[int]) -> None:
        """Keep only `rows` (in that order), cache included."""
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        self.cache.batch_select_indices(index)
        self.mask, self.lengths = self.mask[index], self.lengths[index.cpu()]


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
            logits = batch.feed_tail([options[v] + compiled.runs[slot + 1] for v in chosen], keep=1)[:, -1]
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


def shared_length(rows: Sequence[Sequence[int]], keep: int) -> int:
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

    See `best_candidates`: every token is fed once in the context it has, and candidates that
    cannot win are not fed at all. The answers equal those of scoring every candidate with a
    full forward pass of prompt + candidate (tested).
    """
    candidates = [shape.candidates(text) for text in inputs]
    counts = {len(c) for c in candidates}
    if len(counts) > 1:
        raise ValueError(f"every input must have the same number of candidate answers, got {sorted(counts)}")
    encoded = [fit_prompt(encode_prompt(tokenizer, p), max_prompt_tokens) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
    outputs = [""] * len(prompts)
    with tqdm(total=len(prompts), desc=desc, unit="ex", leave=False) as bar:
        for rows in _batches(order, max(1, batch_size)):
            best, _ = best_candidates(model, tokenizer, [encoded[i] for i in rows],
                                      [[text_tokens(tokenizer, c) + [tokenizer.eos_token_id] for c in candidates[i]]
                                       for i in rows])
            for r, i in enumerate(rows):
                outputs[i] = candidates[i][best[r]]
            bar.update(len(rows))
    return outputs


@dataclass(frozen=True)
class PrefixTree:
    """Token sequences that share beginnings, as a tree of their tokens before the last.

    tokens[i] is node i's token, parents[i] its parent node (-1: the tree's root, the sequence it
    follows); paths[c] are the nodes of sequences[c] without its last token, which is predicted at
    the last node (the first token is predicted by the root).
    """

    sequences: list[list[int]]
    tokens: list[int]
    parents: list[int]
    paths: list[list[int]]

    @classmethod
    def of(cls, sequences: Sequence[Sequence[int]]) -> PrefixTree:
        index: dict[tuple[int, ...], int] = {}
        tokens: list[int] = []
        parents: list[int] = []
        paths: list[list[int]] = []
        for sequence in sequences:
            path: list[int] = []
            for j in range(len(sequence) - 1):
                node = index.setdefault(tuple(sequence[: j + 1]), len(tokens))
                if node == len(tokens):
                    tokens.append(sequence[j])
                    parents.append(path[-1] if path else -1)
                path.append(node)
            paths.append(path)
        return cls([list(s) for s in sequences], tokens, parents, paths)

    def depths(self) -> list[int]:
        """1 for a child of the root, 2 for its children, ..."""
        depth: list[int] = []
        for parent in self.parents:
            depth.append(1 if parent < 0 else depth[parent] + 1)
        return depth

    def ancestries(self) -> list[list[int]]:
        """Each node with its ancestors (the nodes it attends to)."""
        chains: list[list[int]] = []
        for node, parent in enumerate(self.parents):
            chains.append([*(chains[parent] if parent >= 0 else []), node])
        return chains

    def scores(self, root: torch.Tensor, nodes: torch.Tensor) -> list[float]:
        """Summed log-probability of each sequence: its first token from `root` (vocab), each next
        token from the log-probabilities of the node before it, `nodes` (len(tokens), vocab)."""
        out = []
        for sequence, path in zip(self.sequences, self.paths, strict=True):
            rest = torch.tensor(sequence[1:], dtype=torch.long, device=nodes.device)
            at = torch.tensor(path, dtype=torch.long, device=nodes.device)
            out.append(float(root[sequence[0]] + nodes[at].gather(-1, rest[:, None]).sum()))
        return out


def _start_trunks(model, tokenizer, prompts: Sequence[Sequence[int]], targets: Sequence[Sequence[Sequence[int]]]
                  ) -> tuple[IncrementalBatch, list[list[int]], list[int]]:
    """The batch after the prompt head common to all rows (fed once, then repeated), each row's
    trunk (the rest of its prompt and the answer text its candidates share) and that shared length."""
    head = shared_length(prompts, keep=1)
    shared = [shared_length(t, keep=2) for t in targets]  # every candidate keeps a token to decide + eos
    batch = IncrementalBatch(model, tokenizer.pad_token_id)
    if head:
        batch.start([prompts[0][:head]])
        batch.expand(len(prompts))
    else:  # nothing in common: each row starts with its own first token
        head = 1
        batch.start([p[:1] for p in prompts])
    trunks = [list(p[head:]) + list(t[0][:n]) for p, t, n in zip(prompts, targets, shared, strict=True)]
    return batch, trunks, shared


def candidate_scores(model, tokenizer, prompts: Sequence[Sequence[int]], targets: Sequence[Sequence[Sequence[int]]],
                     *, relative: bool = False) -> list[list[float]]:
    """Summed log-probability of each row's candidate token sequences after its prompt: (rows, k).

    The prompt head common to the batch is fed once; each row's trunk once (left-padded, logits
    only where scored); then the candidates' own tokens as one prefix tree per row, side by side
    under a 4D attention mask. `relative` leaves out the answer text common to a row's candidates
    (the same for each, so the ranking is unchanged) and computes its logits not at all.
    """
    batch, trunks, shared = _start_trunks(model, tokenizer, prompts, targets)
    trunk = torch.log_softmax(batch.feed_tail(trunks, keep=1 if relative else max(shared) + 1), dim=-1)
    trees = [PrefixTree.of([c[n:] for c in t]) for t, n in zip(targets, shared, strict=True)]
    nodes = torch.log_softmax(batch.feed_trees(trees), dim=-1)
    scores = []
    for r, (row, tree, n) in enumerate(zip(trunks, trees, shared, strict=True)):
        common = 0.0
        if not relative and n:
            prefix = torch.tensor(row[len(row) - n:], dtype=torch.long, device=trunk.device)
            common = float(trunk[r, -n - 1 : -1].gather(-1, prefix[:, None]).sum())
        own = tree.scores(trunk[r, -1], nodes[r, nodes.shape[1] - len(tree.tokens):])
        scores.append([common + s for s in own])
    return scores


# A row is confident when its most likely first class token has at least this probability. When
# most rows of a batch are, the first round scores only the candidates that begin with each row's
# most likely token (the few other rows get a second round); when most are not, every candidate
# at once (one round, not two). Speed only: the answers are exact either way.
CONFIDENT = 0.9


def best_candidates(model, tokenizer, prompts: Sequence[Sequence[int]], targets: Sequence[Sequence[Sequence[int]]],
                    *, confident: float = CONFIDENT) -> tuple[list[int], list[int]]:
    """The index of each row's most likely candidate (the first of equals), and how many were scored.

    As `candidate_scores(relative=True)`, but a candidate is fed only if it can still win: its
    score is at most the log-probability of its first own token, known after the trunk. First
    the candidates that begin with each row's most likely token are scored (every candidate,
    when most rows are not `confident`), then, in the rows where any is left whose first token is
    not below the best score so far, those. A confident model settles most rows with one small
    tree.
    """
    batch, trunks, shared = _start_trunks(model, tokenizer, prompts, targets)
    first = torch.log_softmax(batch.feed_tail(trunks, keep=1)[:, -1], dim=-1)
    suffixes = [[list(c[n:]) for c in t] for t, n in zip(targets, shared, strict=True)]
    bounds = [[float(first[r, s[0]]) for s in row] for r, row in enumerate(suffixes)]
    scores = [[-math.inf] * len(row) for row in suffixes]
    if 2 * sum(math.exp(max(row)) >= confident for row in bounds) >= len(bounds):
        wanted = [[c for c, b in enumerate(row) if b == max(row)] for row in bounds]
    else:
        wanted = [list(range(len(row))) for row in bounds]
    rows = list(range(len(suffixes)))
    while rows:
        trees = [PrefixTree.of([suffixes[r][c] for c in wanted[r]]) for r in rows]
        nodes = torch.log_softmax(batch.feed_trees(trees), dim=-1)
        for i, (r, tree) in enumerate(zip(rows, trees, strict=True)):
            own = tree.scores(first[r], nodes[i, nodes.shape[1] - len(tree.tokens):])
            for c, score in zip(wanted[r], own, strict=True):
                scores[r][c] = score
        for r in rows:  # a margin for rounding: a candidate is skipped only if it clearly cannot win
            best = max(scores[r])
            wanted[r] = [c for c, b in enumerate(bounds[r]) if scores[r][c] == -math.inf and b > best - 1e-4]
        keep = [i for i, r in enumerate(rows) if wanted[r]]
        if keep and len(keep) < len(rows):
            batch.select(keep)
        rows = [rows[i] for i in keep]
    best = [max(range(len(row)), key=row.__getitem__) for row in scores]
    return best, [sum(s > -math.inf for s in row) for row in scores]


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
