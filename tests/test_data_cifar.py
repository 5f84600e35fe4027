"""CIFAR-10: both source formats, the JPEG cache, layouts, normalisation, noise padding, augmentation."""

import hashlib
import io
import json
import os
import threading
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from lipschitz_rnn.data import build_task, cifar
from lipschitz_rnn.data.cifar import CIFAR_JPEG_SHA256, SHARED_CIFAR_JPEG, load_cifar, rms_change
from lipschitz_rnn.data.sources import ChecksumError, CorruptDataError
from test_data_fakes import CLASSES, make_jpeg_tarball, make_official_dir, snapshot_dir


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv("LIPSCHITZ_RNN_CIFAR", raising=False)
    monkeypatch.setattr(cifar, "_CACHE", {})  # every test loads from disk


@pytest.fixture(scope="module")
def jpeg(tmp_path_factory):
    directory = tmp_path_factory.mktemp("jpeg")
    sha, members = make_jpeg_tarball(directory / "tiny.tar.gz")
    return directory / "tiny.tar.gz", sha, members


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    directory = tmp_path_factory.mktemp("official") / "cifar-10-batches-py"
    md5, content = make_official_dir(directory)
    return directory, md5, content


def decoded(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_jpeg_tarball_is_decoded_in_class_order_and_cached(jpeg, tmp_path):
    path, sha, members = jpeg
    data = load_cifar(tmp_path, cifar_path=path, cifar_sha256=sha)
    assert data.train_y.tolist() == [c for c in range(10) for _ in range(2)] and data.test_y.tolist() == list(range(10))
    assert np.array_equal(data.train_x[3], decoded(members[f"train/{CLASSES[1]}/0001.jpg"]))
    assert np.array_equal(data.test_x[9], decoded(members[f"test/{CLASSES[9]}/0000.jpg"]))
    cache = tmp_path / f"cifar10-jpeg-{sha[:16]}"
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["tarball_sha256"] == sha and meta["decode_seconds"] >= 0
    assert sorted(meta["files"]) == ["test_x", "test_y", "train_x", "train_y"]
    assert data.source.startswith("CIFAR-10 (JPEG copy, unverified")  # only the pinned tarball is "JPEG q75 copy"


def test_cached_arrays_are_used_without_decoding(jpeg, tmp_path, monkeypatch):
    path, sha, _ = jpeg
    first = load_cifar(tmp_path, cifar_path=path, cifar_sha256=sha)
    monkeypatch.setattr(cifar, "_CACHE", {})
    monkeypatch.setattr(cifar, "_decode_jpeg_tarball", lambda path: pytest.fail("decoded although cached"))
    second = load_cifar(tmp_path, cifar_path=path, cifar_sha256=sha)
    assert np.array_equal(first.train_x, second.train_x) and second.info["cache"] == first.info["cache"]


def test_corrupted_cache_is_reported_not_rewritten(jpeg, tmp_path, monkeypatch):
    path, sha, _ = jpeg
    load_cifar(tmp_path, cifar_path=path, cifar_sha256=sha)
    cached = tmp_path / f"cifar10-jpeg-{sha[:16]}" / "train_x.npy"
    cached.write_bytes(cached.read_bytes()[:-100])
    before = snapshot_dir(tmp_path)
    monkeypatch.setattr(cifar, "_CACHE", {})
    with pytest.raises(ChecksumError, match="train_x.npy.*Delete"):
        load_cifar(tmp_path, cifar_path=path, cifar_sha256=sha)
    assert snapshot_dir(tmp_path) == before


def test_a_truncated_cache_index_is_reported_naming_it(jpeg, tmp_path, monkeypatch):
    path, sha, _ = jpeg
    load_cifar(tmp_path, cifar_path=path, cifar_sha256=sha)
    meta = tmp_path / f"cifar10-jpeg-{sha[:16]}" / "meta.json"
    meta.write_text(meta.read_text()[:40])
    monkeypatch.setattr(cifar, "_CACHE", {})
    with pytest.raises(CorruptDataError, match="meta.json: unreadable cache index.*Delete"):
        load_cifar(tmp_path, cifar_path=path, cifar_sha256=sha)


def test_a_writer_interrupted_by_another_leaves_a_whole_cache(jpeg, tmp_path, monkeypatch):
    # Runs started together on a fresh machine each decode and write the cache. Here a second
    # writer runs to the end while the first is half-way through saving its first array.
    path, sha, _ = jpeg
    real_save, interrupted = np.save, []

    def save_and_let_another_writer_through(handle, array, **kwargs):
        if interrupted:
            return real_save(handle, array, **kwargs)
        interrupted.append(True)
        buffer = io.BytesIO()
        real_save(buffer, array, **kwargs)
        handle.write(buffer.getvalue()[: buffer.tell() // 2])
        cifar.load_cifar_jpeg(path, expected_sha256=sha, cache_dir=tmp_path)
        handle.write(buffer.getvalue()[buffer.tell() // 2 :])

    monkeypatch.setattr(np, "save", save_and_let_another_writer_through)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "could not cache" would mean the writers got in each other's way
        cifar.load_cifar_jpeg(path, expected_sha256=sha, cache_dir=tmp_path)
    monkeypatch.undo()
    decoded_now = cifar._decode_jpeg_tarball(path)
    monkeypatch.setattr(cifar, "_decode_jpeg_tarball", lambda path: pytest.fail("decoded although cached"))
    cached = cifar.load_cifar_jpeg(path, expected_sha256=sha, cache_dir=tmp_path)  # every file matches its hash
    assert all(np.array_equal(getattr(cached, name), array) for name, array in decoded_now.items())
    assert not list(tmp_path.glob("cifar10-jpeg-*/.*")), "a temporary file was left behind"


def test_writers_on_threads_never_leave_a_cache_that_fails_its_check(tmp_path):
    arrays = {"train_x": np.arange(2_000_000, dtype=np.uint8).reshape(-1, 8), "train_y": np.arange(10, dtype=np.uint8)}
    errors = []

    def write():
        try:
            cifar._write_jpeg_cache(tmp_path, arrays, {"tarball_sha256": "x"})
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    read, _ = cifar._read_jpeg_cache(tmp_path, "x")
    assert all(np.array_equal(read[name], array) for name, array in arrays.items())
    assert not list(tmp_path.glob(".*")), "a temporary file was left behind"
    mode = (tmp_path / "train_x.npy").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask, "a cache file in a shared data directory must be readable as the umask allows"


def test_truncated_tarball_is_refused_with_both_hashes(jpeg, tmp_path):
    path, sha, _ = jpeg
    broken = tmp_path / "cifar10-jpeg-q75.tar.gz"
    broken.write_bytes(path.read_bytes()[:-50])
    before = snapshot_dir(tmp_path)
    with pytest.raises(ChecksumError) as error:
        build_task("scifar", data_dir=tmp_path)  # found in data_dir, checked against the pinned hash
    assert CIFAR_JPEG_SHA256 in str(error.value) and hashlib.sha256(broken.read_bytes()).hexdigest() in str(error.value)
    with pytest.raises(ChecksumError, match=sha):
        build_task("scifar", data_dir=tmp_path, cifar_sha256=sha)
    assert snapshot_dir(tmp_path) == before


def test_official_batches_are_md5_checked_and_read_in_order(official, tmp_path):
    directory, md5, content = official
    data = load_cifar(tmp_path, cifar_path=directory.parent, cifar_md5=md5)  # parent holding cifar-10-batches-py/
    rows = np.concatenate([content[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert np.array_equal(data.train_x, rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    assert data.test_y.tolist() == content["test_batch"][1]
    assert "unofficial" in data.source  # only the published MD5s make it "CIFAR-10"
    with pytest.raises(ChecksumError, match="md5 mismatch: expected c99cafc152244af753f735de768cd75f"):
        load_cifar(tmp_path, cifar_path=directory)


def test_official_batches_written_at_protocol_5_also_load(tmp_path):
    md5, content = make_official_dir(tmp_path / "cifar-10-batches-py", protocol=5)
    data = load_cifar(tmp_path, cifar_source="official", cifar_md5=md5)
    assert data.train_y[:3].tolist() == content["data_batch_1"][1]


def test_search_order_and_source_filter(jpeg, official, tmp_path, monkeypatch):
    path, sha, _ = jpeg
    directory, md5, _ = official
    (tmp_path / "cifar10-jpeg-q75.tar.gz").write_bytes(path.read_bytes())
    (tmp_path / "cifar-10-batches-py").symlink_to(directory, target_is_directory=True)
    both = {"cifar_sha256": sha, "cifar_md5": md5}
    assert load_cifar(tmp_path, **both).info["source_kind"] == "jpeg tarball"  # tarball before the official dir
    assert load_cifar(tmp_path, cifar_source="official", **both).info["source_kind"] == "official python batches"
    monkeypatch.setenv("LIPSCHITZ_RNN_CIFAR", str(directory))
    assert load_cifar(tmp_path, **both).info["source_kind"] == "official python batches"  # env before data_dir
    with pytest.raises(ValueError, match="cifar_source='jpeg'"):
        load_cifar(tmp_path, cifar_source="jpeg", **both)
    with pytest.raises(ValueError, match="cifar_source must be one of"):
        load_cifar(tmp_path, cifar_source="png", **both)


@pytest.fixture
def tiny(official, tmp_path):
    directory, md5, content = official
    return {"data_dir": tmp_path, "cifar_path": directory, "cifar_md5": md5, "val_split": "none"}, content


def test_pixel_layouts(tiny):
    options, content = tiny
    rows = content["test_batch"][0].astype(np.float32) / 255  # (n, 3072) CHW
    rgb = build_task("scifar", normalize=False, **options)
    x, _ = next(rgb.batches("test", batch_size=3))
    assert x.shape == (3, 1024, 3) and (rgb.seq_len, rgb.input_size, rgb.num_classes) == (1024, 3, 10)
    assert torch.allclose(x[:, 5], torch.from_numpy(rows[:, [5, 1024 + 5, 2048 + 5]]))  # step t = pixel t's RGB
    reference = build_task("scifar", normalize=False, layout="reference-reshape", **options)
    x, _ = next(reference.batches("test", batch_size=3))
    assert torch.allclose(x.reshape(3, -1), torch.from_numpy(rows))  # the CHW vector viewed as (1024, 3)


def test_normalisation_uses_the_training_set_statistics(tiny):
    options, content = tiny
    task = build_task("scifar", **options)
    train = np.concatenate([content[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 1024) / 255
    assert np.allclose(task.info["normalize"]["mean"], train.mean(axis=(0, 2)))
    assert np.allclose(task.info["normalize"]["std"], train.std(axis=(0, 2)))
    x = torch.cat([x for x, _ in task.batches("train", batch_size=4)])
    assert torch.allclose(x.mean(dim=(0, 1)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 1), unbiased=False), torch.ones(3), atol=1e-4)


def test_noise_padded_rows_then_noise(tiny):
    options, content = tiny
    task = build_task("noisy_cifar", normalize=False, **options)
    assert (task.seq_len, task.input_size) == (1000, 96) and task.info["noise"]["kind"] == "independent"
    x, _ = next(task.batches("test", batch_size=3))
    image = content["test_batch"][0].reshape(3, 3, 32, 32).transpose(0, 2, 3, 1) / 255  # HWC
    assert torch.allclose(x[:, :32], torch.from_numpy(image.reshape(3, 32, 96)).float())
    reference = build_task("noisy_cifar", normalize=False, layout="reference-reshape", **options)
    x_ref, _ = next(reference.batches("test", batch_size=3))
    chw = content["test_batch"][0].reshape(3, 3, 32, 32) / 255
    assert torch.allclose(x_ref[:, :32], torch.from_numpy(chw.transpose(0, 2, 1, 3).reshape(3, 32, 96)).float())
    noise = x[:, 32:]
    assert noise.shape == (3, 968, 96) and abs(noise.mean().item()) < 0.02 and abs(noise.std().item() - 1) < 0.02
    assert not torch.equal(noise[0], noise[1])  # independent per sample


def test_evaluation_noise_is_fixed_per_sample(tiny):
    options, _ = tiny
    task = build_task("noisy_cifar", **options)
    whole = next(task.batches("test", batch_size=6))[0]
    pieces = torch.cat([x for x, _ in task.batches("test", batch_size=4)])
    assert torch.equal(whole, pieces)  # independent of batch size
    other_seed = next(build_task("noisy_cifar", noise_seed=1, **options).batches("test", batch_size=6))[0]
    assert not torch.equal(whole[:, 32:], other_seed[:, 32:])


def test_training_noise_changes_with_epoch_and_is_reproducible(tiny):
    options, _ = tiny
    task = build_task("noisy_cifar", **options)
    first = [x for x, _ in task.batches("train", batch_size=5, epoch=0, seed=7)]
    again = [x for x, _ in task.batches("train", batch_size=5, epoch=0, seed=7)]
    later = [x for x, _ in task.batches("train", batch_size=5, epoch=1, seed=7)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0][:, 32:], later[0][:, 32:])


def test_fixed_noise_is_one_block_for_every_sample(tiny):
    options, _ = tiny
    task = build_task("noisy_cifar", noise="fixed", noise_seed=3, **options)
    block = torch.randn(968, 96, generator=torch.Generator().manual_seed(3))
    for x, _ in (*task.batches("train", batch_size=4), next(task.batches("test", batch_size=4))):
        assert torch.equal(x[:, 32:], block.expand(len(x), 968, 96))


@pytest.mark.parametrize("noise", ["independent", "fixed"])
def test_noise_is_built_on_the_batch_device(tiny, noise):
    options, _ = tiny
    device = "cuda" if torch.cuda.is_available() else "cpu"
    on_cpu = build_task("noisy_cifar", noise=noise, **options)
    on_device = build_task("noisy_cifar", noise=noise, **options)
    on_device.batch_device = torch.device(device)
    x_cpu, y_cpu = next(on_cpu.batches("train", batch_size=4, epoch=2, seed=1))
    x, y = next(on_device.batches("train", batch_size=4, epoch=2, seed=1))
    assert x.device.type == device and torch.equal(y, y_cpu)
    assert torch.equal(x[:, :32].cpu(), x_cpu[:, :32])  # the image rows are the same
    again = next(on_device.batches("train", batch_size=4, epoch=2, seed=1))[0]
    assert torch.equal(x, again)  # keyed: reproducible on its device
    if noise == "fixed" or device == "cpu":
        assert torch.equal(x.cpu(), x_cpu)  # the fixed block is copied, not redrawn
    else:
        assert not torch.equal(x[:, 32:].cpu(), x_cpu[:, 32:])  # CUDA generators draw other numbers
        assert abs(x[:, 32:].std().item() - 1) < 0.02


def test_augmentation_is_a_flip_and_crop_of_the_padded_image(tiny):
    options, _ = tiny
    task = build_task("scifar", augment=True, **options)
    image = torch.arange(32 * 32 * 3, dtype=torch.int64).reshape(1, 32, 32, 3).remainder(251).to(torch.uint8)
    padded = torch.nn.functional.pad(image[0], (0, 0, 4, 4, 4, 4))
    candidates = [padded[t : t + 32, s : s + 32] for t in range(9) for s in range(9)]
    candidates += [c.flip(1) for c in candidates]
    outcomes = set()
    for position in range(40):
        out = task._augmented(image, (0, 0, 0), torch.tensor([position]))[0]
        match = [i for i, c in enumerate(candidates) if torch.equal(c, out)]
        assert len(match) == 1
        outcomes.add(match[0])
    assert len(outcomes) > 20 and any(i >= 81 for i in outcomes) and any(i < 81 for i in outcomes)


def test_augmentation_touches_training_batches_only(tiny):
    options, _ = tiny
    plain, augmented = build_task("scifar", **options), build_task("scifar", augment=True, **options)
    assert torch.equal(next(plain.batches("test", 5))[0], next(augmented.batches("test", 5))[0])
    assert not torch.equal(next(plain.batches("train", 15))[0], next(augmented.batches("train", 15))[0])
    assert augmented.info["augment"].startswith("random horizontal flip")


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [("layout", "chw", "layout must be one of"), ("noise", "pink", "noise must be one of"),
     ("normalize", "yes", "normalize must be True or False"), ("noise_seed", -1, "noise_seed")],
)  # fmt: skip
def test_bad_values(tiny, option, value, match):
    options, _ = tiny
    with pytest.raises(ValueError, match=match):
        build_task("noisy_cifar", **options, **{option: value})


def test_jpeg_quality_reencodes_every_image_and_names_it(tiny):
    options, _ = tiny
    plain = build_task("scifar", normalize=False, **options)
    errors = {}
    for quality in (90, 50, 10):
        task = build_task("scifar", normalize=False, jpeg_quality=quality, **options)
        assert task.source.endswith(f"re-encoded at JPEG q{quality}") and task.info["jpeg_quality"] == quality
        assert task.info["reencode_rms_change"] > 0
        assert task.sizes == plain.sizes
        x, y = next(task.batches("test", batch_size=6))
        x0, y0 = next(plain.batches("test", batch_size=6))
        assert torch.equal(y, y0)  # labels and order are kept
        errors[quality] = float((x - x0).pow(2).mean())
    # the fakes are noise images, which JPEG loses most of: lower quality, larger error
    assert 0 < errors[90] < errors[50] < errors[10]
    # the statistics used for normalisation are the re-encoded images'
    stats = build_task("scifar", jpeg_quality=10, **options).info["normalize"]["mean"]
    assert stats != build_task("scifar", **options).info["normalize"]["mean"]


def test_rms_change_is_in_grey_levels():
    before = np.zeros((5000, 2, 2, 3), dtype=np.uint8)  # more than one chunk
    after = np.full_like(before, 3)
    assert rms_change(before, after) == pytest.approx(3.0)
    assert rms_change(before, before) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        rms_change(before, after[:1])


@pytest.mark.parametrize("quality", [0, 96, 50.0, True])
def test_jpeg_quality_outside_pillows_range_is_refused(tiny, quality):
    options, _ = tiny
    with pytest.raises(ValueError, match="jpeg_quality must be an int in"):
        build_task("noisy_cifar", jpeg_quality=quality, **options)


def test_unknown_option_names_it(tiny):
    options, _ = tiny
    with pytest.raises(TypeError, match="noise"):
        build_task("scifar", noise="fixed", **options)  # scifar has no noise


# --- the real JPEG tarball ----------------------------------------------------------------------


@pytest.mark.slow  # decoding 60,000 JPEGs takes 10-30 s unless the data directory already holds the cache
def test_real_jpeg_tarball(tmp_path_factory):
    if not SHARED_CIFAR_JPEG.is_file():
        pytest.skip(f"{SHARED_CIFAR_JPEG} is absent (only this workplace's shared folder has it)")
    from test_data_fakes import real_data_dir

    data_dir = real_data_dir() if real_data_dir().is_dir() else tmp_path_factory.mktemp("cifar-cache")
    task = build_task("scifar", data_dir=data_dir, cifar_path=SHARED_CIFAR_JPEG)
    assert task.source == "CIFAR-10 (JPEG q75 copy)"
    assert task.sizes == {"train": 48000, "val": 2000, "test": 10000}
    assert np.allclose(task.info["normalize"]["mean"], [0.4913, 0.4821, 0.4465], atol=1e-4)
    assert np.allclose(task.info["normalize"]["std"], [0.2452, 0.2428, 0.2606], atol=1e-4)
    test_labels = torch.cat([y for _, y in task.batches("test", batch_size=1000)])
    assert torch.bincount(test_labels).tolist() == [1000] * 10
