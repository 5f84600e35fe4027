"""How far re-encoding the CIFAR-10 copy as JPEG moves its pixels (the ``jpeg_quality`` ablation).

    python scripts/jpeg_ladder.py 75 50 25 [--data-dir data]

For each quality: the root-mean-square change of the 50,000 training images, in grey levels,
when the copy in the data directory is re-encoded at that quality (``reencode_jpeg``, exactly as
the task option does it). About 25 s per quality on one core.
"""

from __future__ import annotations

import argparse

from lipschitz_rnn.data.cifar import load_cifar, reencode_jpeg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("qualities", type=int, nargs="+")
    parser.add_argument("--data-dir", default=None, help="default: $LIPSCHITZ_RNN_DATA or ./data")
    args = parser.parse_args()
    data = load_cifar(args.data_dir)
    print(f"source: {data.source}")
    for quality in args.qualities:
        change = reencode_jpeg(data, quality).info["reencode_rms_change"]  # training images, as the runs record it
        print(f"q{quality}: rms change {change:.2f} grey levels")


if __name__ == "__main__":
    main()
