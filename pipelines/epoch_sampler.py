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


class EpochSeededLengthSampler(LengthGroupedSampler):
    """Length-grouped shuffling (less padding per batch) seeded by seed + epoch."""

    def __init__(self, batch_size: int, dataset: Dataset, seed: int) -> None:
        super().__init__(batch_size, dataset=dataset, generator=torch.Generator())
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer (through accelerate's data loader) before each epoch."""
        self.generator.manual_seed(self.seed + epoch)


class EpochSeededTrainer(Trainer):
    """The Trainer with EpochSeededLengthSampler for training batches."""

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochSeededLengthSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                        dataset, seed)
