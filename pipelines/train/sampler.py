"""A Trainer whose batches depend only on (seed, epoch), so a resumed fine-tune sees the same ones.

The stock length-grouped sampler shuffles with the global torch RNG when an epoch starts. After
a resume mid-epoch the Trainer skips the batches already trained, but draws the order from
whatever state the RNG is in by then, so it would skip other batches than it trained on.
Seeding the sampler per epoch makes the order of epoch N the same in every session.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler

MEGABATCH_BATCHES = 50  # batches sorted together: more means less padding, less mixing


class EpochSeededLengthSampler(LengthGroupedSampler):
    """Length-grouped shuffling (less padding per batch) seeded by seed + epoch.

    The stock sampler sorts mega-batches sized to make four per epoch, so on a dataset of a
    few dozen examples (the demo, a sweep's trials) a mega-batch is one batch and nothing is
    grouped. Here a mega-batch is up to MEGABATCH_BATCHES batches, and the batches are then
    shuffled (the longest one first, to meet an out-of-memory error at once).
    """

    def __init__(self, batch_size: int, dataset: Dataset, seed: int) -> None:
        super().__init__(batch_size, dataset=dataset, generator=torch.Generator())
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer (through accelerate's data loader) before each epoch."""
        self.generator.manual_seed(self.seed + epoch)

    def __iter__(self):
        n, size = len(self.lengths), self.batch_size
        order = torch.randperm(n, generator=self.generator).tolist()
        span = size * MEGABATCH_BATCHES
        grouped = [i for start in range(0, n, span)
                   for i in sorted(order[start : start + span], key=lambda i: self.lengths[i], reverse=True)]
        batches = [grouped[i : i + size] for i in range(0, n, size)]
        # The data loader cuts this order into batches again, so a short batch must stay last.
        tail = [batches.pop()] if len(batches[-1]) < size and len(batches) > 1 else []
        longest = max(range(len(batches)), key=lambda b: self.lengths[batches[b][0]])
        rest = [batches[b] for b in torch.randperm(len(batches), generator=self.generator).tolist() if b != longest]
        return iter([i for batch in [batches[longest], *rest, *tail] for i in batch])


class EpochSeededTrainer(Trainer):
    """The Trainer with EpochSeededLengthSampler for training batches.

    The sampler orders whole optimizer steps (effective batches): with N processes accelerate
    deals its consecutive per-device batches out to the ranks in turn, so step k trains on the
    same examples whatever N is, each rank on its own share (packed per rank).
    """

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        effective = self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        return EpochSeededLengthSampler(effective, dataset, seed)
