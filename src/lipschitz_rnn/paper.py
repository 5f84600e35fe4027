"""Published numbers to reproduce (REFERENCE.md §5), as data keyed by experiment.

A config names its row with ``[experiment] paper = "<key>"``; ``lipschitz-rnn report`` puts
our mean ± std beside the value here. Accuracies are test accuracies in percent; PTB is test
bits per character. ``source`` says where a number comes from: ``paper`` (the Lipschitz RNN
paper's table, Erichson et al. 2021), ``ASR`` (the AntisymmetricRNN paper, Chang et al.
2019) or ``benchmarks`` (quoted by benchmark summaries; the row and N are not confirmed).

Example:
    >>> row = PAPER["smnist_lipschitz_euler_n128"]
    >>> row.value, row.metric, row.hidden_size, row.params
    (99.4, 'accuracy', 128, '34k')
    >>> sorted({r.task for r in PAPER.values()})
    ['noisy_cifar', 'pmnist', 'ptb_char', 'scifar', 'smnist']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["PAPER", "PaperResult"]


@dataclass(frozen=True)
class PaperResult:
    key: str
    task: str  # smnist | pmnist | scifar | noisy_cifar | ptb_char
    model: str  # as the table names it
    hidden_size: Optional[int]  # None where the source does not say
    params: str  # as the table gives it ("34k"), "" when unknown
    metric: str  # "accuracy" (%) or "bpc"
    value: float
    source: str  # "paper", "ASR" or "benchmarks"
    note: str = ""


def _mnist_rows() -> list[PaperResult]:
    """REFERENCE §5 ordered / permuted pixel MNIST table: (model, key stem, ordered, permuted, N, params)."""
    table = [
        ("LSTM (as reported by Arjovsky et al.)", "lstm", 97.3, 92.7, 128, "68k"),
        ("MomentumLSTM", "momentum_lstm", 99.1, 94.7, 256, "270k"),
        ("Unitary RNN", "unitary_rnn", 95.1, 91.4, 512, "9k"),
        ("Full-capacity unitary RNN", "full_capacity_unitary_rnn", 96.9, 94.1, 512, "270k"),
        ("Soft orthogonal RNN", "soft_orthogonal_rnn", 94.1, 91.4, 128, "18k"),
        ("Kronecker RNN", "kronecker_rnn", 96.4, 94.5, 512, "11k"),
        ("Antisymmetric RNN", "antisymmetric", 98.0, 95.8, 128, "10k"),
        ("Incremental RNN", "incremental_rnn", 98.1, 95.6, 128, "4k/8k"),
        ("Exponential RNN", "exprnn", 98.4, 96.2, 360, "69k"),
        ("Sequential NAIS-Net", "nais_net", 94.3, 90.8, 128, "18k"),
        ("Lipschitz RNN, Euler", "lipschitz_euler", 99.0, 94.2, 64, "9k"),
        ("Lipschitz RNN, RK2", "lipschitz_midpoint", 99.1, 94.2, 64, "9k"),
        ("Lipschitz RNN, Euler", "lipschitz_euler", 99.4, 96.3, 128, "34k"),
        ("Lipschitz RNN, RK2", "lipschitz_midpoint", 99.3, 96.2, 128, "34k"),
    ]
    rows = []
    for model, stem, ordered, permuted, n, params in table:
        for task, value in (("smnist", ordered), ("pmnist", permuted)):
            rows.append(PaperResult(f"{task}_{stem}_n{n}", task, model, n, params, "accuracy", value, "paper"))
    # the gated AntisymmetricRNN is in the ASR paper, not in the Lipschitz paper's table
    for task, value in (("smnist", 98.8), ("pmnist", 93.1)):
        rows.append(
            PaperResult(
                f"{task}_antisymmetric_gated_n128",
                task,
                "AntisymmetricRNN, gated",
                128,
                "10k",
                "accuracy",
                value,
                "ASR",
            )
        )
    return rows


def _cifar_rows() -> list[PaperResult]:
    rows = []
    asr = [  # (model, key stem, pixel, noise-padded, N, params) from the ASR paper
        ("LSTM", "lstm", 59.7, 11.6, 128, ""),
        ("AntisymmetricRNN", "antisymmetric", 58.7, 48.3, 256, "36k"),
        ("AntisymmetricRNN, gated", "antisymmetric_gated", 62.2, 54.7, 256, "37k"),
    ]
    for model, stem, pixel, noisy, n, params in asr:
        rows.append(PaperResult(f"scifar_{stem}_n{n}", "scifar", model, n, params, "accuracy", pixel, "ASR"))
        rows.append(PaperResult(f"noisy_cifar_{stem}_n{n}", "noisy_cifar", model, n, params, "accuracy", noisy, "ASR"))
    unverified = "row and N unverified (quoted by benchmark summaries)"
    rows += [
        PaperResult(
            "scifar_lipschitz", "scifar", "Lipschitz RNN", None, "", "accuracy", 64.2, "benchmarks", unverified
        ),
        PaperResult(
            "noisy_cifar_lipschitz",
            "noisy_cifar",
            "Lipschitz RNN",
            None,
            "",
            "accuracy",
            59.0,
            "benchmarks",
            unverified,
        ),
        PaperResult(
            "scifar_lipschitz_second_row",
            "scifar",
            "Lipschitz RNN (second row)",
            None,
            "",
            "accuracy",
            60.5,
            "benchmarks",
            unverified,
        ),
        PaperResult(
            "noisy_cifar_lipschitz_second_row",
            "noisy_cifar",
            "Lipschitz RNN (second row)",
            None,
            "",
            "accuracy",
            57.4,
            "benchmarks",
            unverified,
        ),
    ]
    return rows


def _ptb_rows() -> list[PaperResult]:
    return [
        PaperResult(
            "ptb_char_lipschitz",
            "ptb_char",
            "Lipschitz RNN",
            None,
            "",
            "bpc",
            1.42,
            "benchmarks",
            "TBPTT length and N unverified",
        )
    ]


PAPER: dict[str, PaperResult] = {row.key: row for row in _mnist_rows() + _cifar_rows() + _ptb_rows()}
