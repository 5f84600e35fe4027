"""Datasets as sequence tasks (pixel MNIST, CIFAR-10, char-level PTB, synthetic memory tasks)."""

from .base import TASKS, SequenceTask, build_task

__all__ = ["TASKS", "SequenceTask", "build_task"]
