"""Training patches for segmentation: foreground oversampling and augmentation with MONAI transforms (nnU-Net style).

For every patch, a third of them (``fg_ratio``) is *forced* onto the foreground: MONAI's
``RandCropByLabelClassesd`` centres it on a voxel of a random class (every class equally likely, from precomputed
indices); the others are cropped uniformly (``RandSpatialCropd``). The crop is 25% larger than the patch so that
``RandAffined`` (rotation up to 15 degrees, scaling 0.85-1.15) samples the patch from inside real data. Then mirroring
(``RandFlipd`` on each axis; off when a class is lateralised), Gaussian noise, multiplicative brightness and gamma
(``RandGaussianNoised``, ``RandScaleIntensityd``, ``RandAdjustContrastd``). Everything random about the patches of
step ``s`` comes from ``numpy.random.default_rng([seed, s])``: a run is reproducible.

A partially annotated case (labels holding :data:`~napari_ssl.classes.IGNORE`, unlabelled voxels) is cropped only
around annotated voxels: its non-forced patches centre on a labelled voxel (background or a class) instead of
anywhere; nearest-neighbour resampling and flips carry the ignore value as it is.
"""

from __future__ import annotations

import copy
import math
import queue
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

ROTATE = math.pi / 12  # 15 degrees
SCALE = 0.15
CROP_MARGIN = 1.25
#: share of a multi-channel case's patches in which one random input channel is blanked (modality dropout)
CHANNEL_DROPOUT = 0.3


def loader_threads(device_type: str, cores: int | None = None) -> int:
    """Threads that build training patches: beside a GPU as many as the data workers of pretraining
    (:func:`napari_ssl.device.data_workers`, at least one), one beside a CPU's step."""
    from napari_ssl.device import data_workers

    return max(1, data_workers("cuda", cores)) if device_type == "cuda" else 1


@dataclass
class Case:
    """One labelled scan on the model grid: ``image`` (C, z, y, x) float32, ``labels`` (z, y, x) class indices."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    background: Sequence[float] = (0.0,)
    weight: float = 1.0  # how often its patches are drawn, relative to the other cases'


class PatchSampler:
    """Batches of augmented patches from :class:`Case` objects (see the module docstring)."""

    def __init__(self, cases: Sequence[Case], patch: Sequence[int], n_classes: int, *, fg_ratio: float = 1 / 3,
                 augment: bool = True, mirror: bool = True, seed: int = 0, max_indices: int = 50_000,
                 channel_dropout: float = 0.0) -> None:
        from monai.transforms import (
            Compose,
            RandAdjustContrastd,
            RandAffined,
            RandCropByLabelClassesd,
            RandFlipd,
            RandGaussianNoised,
            RandScaleIntensityd,
            RandSpatialCropd,
        )

        from napari_ssl.classes import IGNORE
        from napari_ssl.preprocess import pad_to

        self.patch = tuple(int(p) for p in patch)
        self.fg_ratio = float(fg_ratio)
        self.seed = int(seed)
        self.n_classes = int(n_classes)  # foreground classes
        self.channel_dropout = float(channel_dropout) if augment else 0.0
        self.crop = tuple(math.ceil(p * CROP_MARGIN) for p in self.patch) if augment else self.patch
        rng = np.random.default_rng([self.seed, 99])
        self.cases: list[dict[str, Any]] = []
        for case in cases:
            image = pad_to(case.image, self.crop, list(case.background))
            labels = pad_to(case.labels, self.crop, 0)
            flat = labels.reshape(-1)
            partial = bool(np.any(flat == IGNORE))
            indices = []
            for value in range(self.n_classes + 1):
                # background's voxels matter only to centre the patches of a partial case on annotated voxels
                idx = np.flatnonzero(flat == value) if value or partial else np.zeros(1, np.int64)
                if len(idx) > max_indices:
                    idx = np.sort(rng.choice(idx, max_indices, replace=False))
                indices.append(idx)
            present = [v for v in range(1, self.n_classes + 1) if len(indices[v])]
            annotated = partial and any(len(i) for i in indices)
            self.cases.append({"name": case.name, "image": image, "label": labels[None], "indices": indices,
                               "present": present, "partial": annotated, "background": list(case.background)})
        weights = np.array([float(getattr(c, "weight", 1.0)) for c in cases])
        # equal weights draw a case as before (one integer); others by their share
        self._p = None if np.allclose(weights, weights[0]) else weights / weights.sum()
        keys = ["image", "label"]
        self._fg = {}  # one crop transform per set of present classes (ratios 0 for absent ones)
        for entry in self.cases:
            key = tuple(entry["present"])
            if key and key not in self._fg:
                ratios = [0.0] + [1.0 if v in key else 0.0 for v in range(1, self.n_classes + 1)]
                self._fg[key] = RandCropByLabelClassesd(keys=keys, label_key="label", spatial_size=self.crop,
                                                        ratios=ratios, num_classes=self.n_classes + 1, num_samples=1,
                                                        indices_key="indices", warn=False)
        self._annotated = {}  # partial cases: a crop centred on any annotated voxel (background or a present class)
        for entry in self.cases:
            key = tuple(entry["present"])
            if entry["partial"] and key not in self._annotated:
                ratios = [1.0] + [1.0 if v in key else 0.0 for v in range(1, self.n_classes + 1)]
                if not len(entry["indices"][0]):
                    ratios[0] = 0.0
                self._annotated[key] = RandCropByLabelClassesd(
                    keys=keys, label_key="label", spatial_size=self.crop, ratios=ratios,
                    num_classes=self.n_classes + 1, num_samples=1, indices_key="indices", warn=False)
        self._random = RandSpatialCropd(keys=keys, roi_size=self.crop, random_size=False)
        after: list[Any] = []
        # the affine resamples only when drawn (p 0.3); otherwise the centre of the crop is taken by slicing
        self._affine = RandAffined(keys=keys, spatial_size=self.patch, prob=1.0, rotate_range=(ROTATE,) * 3,
                                   scale_range=(SCALE,) * 3, mode=("bilinear", "nearest"),
                                   padding_mode=("border", "zeros")) if augment else None
        self.p_affine = 0.3
        if augment:
            if mirror:
                after += [RandFlipd(keys=keys, prob=0.5, spatial_axis=axis) for axis in range(3)]
            after += [
                RandGaussianNoised(keys="image", prob=0.1, std=0.1),
                RandScaleIntensityd(keys="image", factors=0.25, prob=0.15),
                RandAdjustContrastd(keys="image", prob=0.15, gamma=(0.7, 1.5), retain_stats=True),
            ]
        self._after = Compose(after) if after else None

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
        """One patch: image (C, *patch) float32, labels (1, *patch) int64, and whether it was forced onto foreground."""
        pick = rng.integers(len(self.cases)) if self._p is None else rng.choice(len(self.cases), p=self._p)
        entry = self.cases[int(pick)]
        forced = bool(entry["present"]) and rng.random() < self.fg_ratio
        data = {"image": entry["image"], "label": entry["label"], "indices": entry["indices"]}
        if forced:
            crop = self._fg[tuple(entry["present"])]
        else:
            crop = self._annotated[tuple(entry["present"])] if entry["partial"] else self._random
        crop.set_random_state(seed=int(rng.integers(2**31)))
        out = crop(data)
        out = out[0] if isinstance(out, list) else out
        out = {"image": out["image"], "label": out["label"]}
        affine = self._affine is not None and rng.random() < self.p_affine
        if affine:
            self._affine.set_random_state(seed=int(rng.integers(2**31)))
            out = self._affine(out)
        else:
            out = {k: _centre(_plain(v), self.patch) for k, v in out.items()}
        if self._after is not None:
            self._after.set_random_state(seed=int(rng.integers(2**31)))
            out = self._after(out)
        image = np.asarray(_plain(out["image"]), dtype=np.float32)
        label = np.asarray(_plain(out["label"])).astype(np.int64)
        if self.channel_dropout and image.shape[0] > 1 and rng.random() < self.channel_dropout:
            # modality dropout: one input channel shows nothing (its background), so the network learns each
            # structure from every modality that shows it, not only from the brightest one
            channel = int(rng.integers(image.shape[0]))
            image = np.array(image, copy=True)
            image[channel] = entry["background"][channel]
        return np.ascontiguousarray(image), np.ascontiguousarray(label), forced

    def batch(self, step: int, batch_size: int) -> dict[str, np.ndarray]:
        """The batch of step ``step``: ``image`` (B, C, *patch) and ``label`` (B, 1, *patch)."""
        rng = np.random.default_rng([self.seed, 1000 + int(step)])
        xs, ys = zip(*[self.sample(rng)[:2] for _ in range(batch_size)], strict=True)
        return {"image": np.stack(xs), "label": np.stack(ys)}

    def batches(self, start: int, stop: int, batch_size: int, prefetch: int = 3,
                workers: int = 1) -> Iterator[dict[str, np.ndarray]]:
        """Batches of steps ``start..stop-1``, built ``prefetch`` ahead in helper threads (closing stops them).

        ``workers`` threads build batches side by side (a GPU consumes them faster than one thread augments); each
        has its own copy of the random transforms, and every batch depends on its step alone, so the batches are
        the same whatever the number of workers.
        """
        if workers > 1:
            yield from self._parallel_batches(start, stop, batch_size, prefetch, workers)
            return
        out: queue.Queue[Any] = queue.Queue(maxsize=max(1, prefetch))
        done = threading.Event()

        def work() -> None:
            try:
                for step in range(start, stop):
                    item = self.batch(step, batch_size)
                    while not done.is_set():
                        try:
                            out.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if done.is_set():
                        return
                out.put(None)
            except BaseException as exc:  # relayed to the consumer
                out.put(exc)

        thread = threading.Thread(target=work, name="napari-ssl-patches", daemon=True)
        thread.start()
        try:
            while True:
                item = out.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            done.set()
            thread.join(timeout=5)

    def _twin(self) -> PatchSampler:
        """This sampler with its own random transforms (the cases are shared, read only): one per worker thread."""
        twin = copy.copy(self)
        for name in ("_fg", "_annotated", "_random", "_affine", "_after"):
            setattr(twin, name, copy.deepcopy(getattr(self, name)))
        return twin

    def _parallel_batches(self, start: int, stop: int, batch_size: int, prefetch: int,
                          workers: int) -> Iterator[dict[str, np.ndarray]]:
        local = threading.local()

        def build(step: int) -> dict[str, np.ndarray]:
            if not hasattr(local, "sampler"):
                local.sampler = self._twin()
            return local.sampler.batch(step, batch_size)

        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="napari-ssl-patches")
        pending: deque[Future[dict[str, np.ndarray]]] = deque()
        steps = iter(range(start, stop))
        try:
            for step in steps:
                pending.append(pool.submit(build, step))
                if len(pending) >= workers + prefetch:
                    break
            while pending:
                item = pending.popleft().result()
                for step in steps:  # keep the pool full: one new batch for each one handed out
                    pending.append(pool.submit(build, step))
                    break
                yield item
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _plain(value: Any) -> Any:
    return value.as_tensor().numpy() if hasattr(value, "as_tensor") else (
        value.numpy() if hasattr(value, "numpy") else value)


def _centre(array: np.ndarray, patch: Sequence[int]) -> np.ndarray:
    starts = [(s - p) // 2 for s, p in zip(array.shape[1:], patch, strict=True)]
    return array[(slice(None), *(slice(a, a + p) for a, p in zip(starts, patch, strict=True)))]


__all__ = ["Case", "PatchSampler"]
