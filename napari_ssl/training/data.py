"""Data pipeline: scans from files, folders or in-memory arrays; resampling; normalisation; random patches.

- :func:`load_volumes` reads every scan under the given paths (any readable file, DICOM folders, recursively,
  through :mod:`napari_ssl.io`) or takes :class:`~napari_ssl.io.volume.Volume` objects / arrays (napari layers),
  optionally resamples them to a target spacing, normalises intensities and caches the result in memory.
- :class:`Normalization` is a frozen dataclass recorded in checkpoints (``meta["normalization"]``), so
  fine-tuning and inference normalise exactly as pretraining did.
- :class:`PretextDataset` turns the volumes into training samples for the pretexts: sample ``i`` is drawn
  from ``numpy.random.default_rng([seed, i])`` alone, so a run is reproducible whatever the number of
  DataLoader workers or processes, and a resumed run sees exactly the samples an uninterrupted one would.
  With more scans than a process keeps mapped, consecutive samples draw from a window of scans (a shuffle buffer of
  scans, as WebDataset's and tf.data's interleave are), so a worker maps each scan once for several samples.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl.io.volume import Volume
from napari_ssl.preprocess import Normalization, resample

# ---------------------------------------------------------------- loading and caching
_CACHE: OrderedDict[tuple[Any, ...], list[Volume]] = OrderedDict()
_CACHE_BYTES = int(os.environ.get("NAPARI_SSL_CACHE_MB", "2048")) * 2**20
MAX_CENTRES = 20000  # candidate patch centres kept per scan (a strided subset when the body has more)
MAPPED_SCANS = 64  # prepared scans a process keeps mapped (least recently used closed first)
SCAN_VISITS = 8  # with more scans than MAPPED_SCANS: samples each scan gives per pass, drawn in one window (below)


def clear_cache() -> None:
    """Forget the decoded volumes kept by :func:`load_volumes`."""
    _CACHE.clear()


def _cache_put(key: tuple[Any, ...], volumes: list[Volume]) -> None:
    _CACHE[key] = volumes
    _CACHE.move_to_end(key)
    while len(_CACHE) > 1 and sum(v.array.nbytes for vs in _CACHE.values() for v in vs) > _CACHE_BYTES:
        _CACHE.popitem(last=False)


def _path_key(path: Path) -> tuple[Any, ...]:
    stat = path.stat()
    newest = stat.st_mtime_ns
    if path.is_dir():  # a DICOM folder: any change inside
        newest = max([newest] + [p.stat().st_mtime_ns for p in path.iterdir()])
    return (str(path.resolve()), newest, stat.st_size)


def _prepare(volume: Volume, spacing: tuple[float, float, float] | None, norm: Normalization) -> list[Volume]:
    """Frames of a 4D volume split apart; resampled; normalised (float32)."""
    frames = (
        [volume]
        if volume.array.ndim == 3
        else [
            volume.with_array(frame, name=f"{volume.name or 'scan'}[{t}]")
            for t, frame in enumerate(volume.array)
        ]
    )
    out = []
    for frame in frames:
        if spacing is not None and not frame.is_plane:
            frame = resample(frame, spacing)
        out.append(frame.with_array(norm(frame.array)))
    return out


def load_volumes(
    sources: Sequence[Any],
    *,
    spacing: Sequence[float] | None = None,
    normalization: Normalization | None = None,
    cache: bool = True,
) -> list[Volume]:
    """Read, resample and normalise every scan of ``sources``.

    Parameters
    ----------
    sources : sequence
        Paths (a scan file, a DICOM series folder, or a folder searched recursively for both), and/or
        :class:`~napari_ssl.io.volume.Volume` objects, and/or (z, y, x) numpy arrays (e.g. napari layer data).
    spacing : (float, float, float), optional
        Target voxel size in mm (z, y, x); ``None`` keeps each scan's own grid.
    normalization : Normalization, optional
        Defaults to ``Normalization()`` (percentile z-score).
    cache : bool
        Keep decoded volumes in memory (keyed by path, modification time, spacing and normalisation).

    Returns
    -------
    list of Volume
        float32 volumes (a 4D series contributes one volume per frame).

    Raises
    ------
    FileNotFoundError, napari_ssl.io.ScanReadError
        A path that does not exist or holds no readable scan.
    ValueError
        No sources, or an array that is not 3D.
    """
    from napari_ssl import io

    norm = normalization or Normalization()
    target = (
        None
        if spacing is None
        else tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, float), (3,)))
    )
    if not sources:
        raise ValueError("no data given: pass scan files, folders or arrays")
    volumes: list[Volume] = []
    for i, source in enumerate(sources):
        if isinstance(source, Volume):
            volumes += _prepare(source, target, norm)
            continue
        if isinstance(source, np.ndarray) or (
            hasattr(source, "__array__") and not isinstance(source, (str, os.PathLike))
        ):
            array = np.asarray(source)
            if array.ndim not in (3, 4):
                raise ValueError(f"array source {i} must be 3D (z, y, x) or 4D, got shape {array.shape}")
            volumes += _prepare(Volume(array=array, name=f"array{i}"), target, norm)
            continue
        path = Path(source).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
        key = (*_path_key(path), target, norm)
        if cache and key in _CACHE:
            _CACHE.move_to_end(key)
            volumes += _CACHE[key]
            continue
        prepared: list[Volume] = []
        for vol in io.read_all(path):
            prepared += _prepare(vol, target, norm)
        if cache:
            _cache_put(key, prepared)
        volumes += prepared
    return volumes


def read_sources(sources: Sequence[Any]) -> list[Any]:
    """Every scan of ``sources`` as read (paths through :func:`napari_ssl.io.read_all`; Volumes and arrays as given)."""
    from napari_ssl import io

    out: list[Any] = []
    for source in sources:
        if isinstance(source, (str, os.PathLike)):
            path = Path(source).expanduser()
            if not path.exists():
                raise FileNotFoundError(f"{path}: no such file or directory")
            out += list(io.read_all(path))
        else:
            out.append(source)
    return out


def split_volumes(
    volumes: Sequence[Volume], val_fraction: float, seed: int
) -> tuple[list[Volume], list[Volume]]:
    """Hold out ``val_fraction`` of the volumes (at least one when there are two or more) for metrics.

    With a single volume nothing can be held out: the training list is returned as the held-out list
    too, and metrics are computed on fresh random samples from it (a different random stream).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(volumes)
    if n < 2 or val_fraction == 0.0:
        return list(volumes), list(volumes)
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    order = np.random.default_rng([seed, 7]).permutation(n)
    val_idx = set(order[:n_val].tolist())
    return [v for i, v in enumerate(volumes) if i not in val_idx], [
        v for i, v in enumerate(volumes) if i in val_idx
    ]


# ---------------------------------------------------------------- patches
def random_corner(shape: Sequence[int], patch: Sequence[int], rng: np.random.Generator) -> tuple[int, ...]:
    """A uniformly random corner so that ``patch`` fits in ``shape`` (same length)."""
    return tuple(int(rng.integers(0, s - p + 1)) for s, p in zip(shape, patch, strict=True))


def crop(arrays: Sequence[np.ndarray], corner: Sequence[int], patch: Sequence[int]) -> list[np.ndarray]:
    """The same box of several aligned arrays (an image and its labels), last axes ``(z, y, x)``."""
    box = tuple(slice(c, c + p) for c, p in zip(corner, patch, strict=True))
    return [np.ascontiguousarray(a[(..., *box)]) for a in arrays]


def _pad_volume(volume: Volume, patch: Sequence[int]) -> Volume:
    from napari_ssl.preprocess import pad_to

    if all(s >= p for s, p in zip(volume.spatial_shape, patch, strict=True)):
        return volume
    return volume.with_array(pad_to(volume.array, patch, float(volume.array.min())))


@dataclass(frozen=True)
class SampleSpec:
    """How :class:`PretextDataset` turns a volume into one sample.

    ``pretexts`` maps pretext names to pretext objects (from :mod:`napari_ssl.pretext`); ``patch`` is the
    3D patch (z, y, x) for Rubik and context restoration. With ``foreground``, each volume's body mask
    (:func:`napari_ssl.io.foreground.foreground_mask`) centres patches on the body and guides where the pretexts
    put their cubes, swaps and planes.
    """

    patch: tuple[int, int, int]
    pretexts: Mapping[str, Any] = field(default_factory=dict)
    foreground: bool = False


class PretextDataset:
    """Map-style dataset: item ``i`` is one training sample, a dict of arrays keyed ``"<pretext>.<name>"``.

    Everything random about item ``i`` (which volume, where, every pretext choice) comes from
    ``numpy.random.default_rng([seed, i])``, so items are reproducible in any worker or process.
    ``length`` is virtual: indices may be any non-negative int below it.

    ``volumes`` are in-memory :class:`~napari_ssl.io.volume.Volume` objects or prepared scans
    (:class:`napari_ssl.training.prepared.PreparedScan`): those are memory-mapped on first use in each process (a
    DataLoader worker shares nothing with the others but the open files; the :data:`MAPPED_SCANS` last used stay
    mapped, so a process holds a bounded number of files open for any number of scans), their body mask and patch
    centres read from the prepared entry; the samples are the same as from the same scans in RAM.

    Which scan item ``i`` draws from: any scan, uniformly, while there are at most :data:`MAPPED_SCANS` of them. With
    more (and ``windowed``), each pass over the scans shuffles them (``default_rng([seed, 1, pass])``) and cuts them
    into windows of at most :data:`MAPPED_SCANS` scans; the pass's consecutive items draw uniformly from one window at
    a time, :data:`SCAN_VISITS` samples per scan of it. Every scan is still drawn equally often on average, a batch
    still mixes scans, and a worker maps a window's scans once for several samples instead of mapping a new scan for
    nearly every sample. ``windowed=False`` keeps the uniform draw (a few held-out samples, which map each scan once
    anyway).
    """

    def __init__(self, volumes: Sequence[Any], spec: SampleSpec, seed: int, length: int, *,
                 windowed: bool = True) -> None:
        self.volumes = list(volumes)
        self.spec = spec
        self.seed = int(seed)
        self.length = int(length)
        self.windowed = windowed
        self._pass_order: tuple[int, np.ndarray] | None = None  # (pass, its shuffled scans): the last one drawn
        self._adapters = {name: adapter(name, task) for name, task in spec.pretexts.items()}
        for build in self._adapters.values():  # builders that cut their own region are told the patch shape
            if hasattr(build, "patch_shape"):
                build.patch_shape = tuple(int(p) for p in spec.patch)
        self._volumes_3d = [v for v in self.volumes if min(v.spatial_shape) >= 2]
        if not self._volumes_3d:
            raise ValueError("no 3D scans in the data (only 2D images); the pretexts sample from volumes")
        pads = any(a.uses_patch for a in self._adapters.values())  # scans smaller than the patch: padded, not refused
        # a prepared scan smaller than the patch is padded in RAM (small by definition); the others stay mapped
        self._volumes_3d = [
            _pad_volume(v.open() if _is_prepared(v) and _smaller(v, spec.patch) else v, spec.patch) if pads else v
            for v in self._volumes_3d
        ]
        self._masks: list[np.ndarray | None] = [None] * len(self._volumes_3d)
        self._centres: list[np.ndarray | None] = [None] * len(self._volumes_3d)
        self._opened: OrderedDict[int, tuple[Any, Any, Any]] = OrderedDict()  # per process: the last scans mapped
        if spec.foreground:
            from napari_ssl.io.foreground import foreground_mask

            for i, vol in enumerate(self._volumes_3d):
                if _is_prepared(vol):  # the mask and centres are in the entry, mapped on first use
                    continue
                mask = foreground_mask(vol.array)
                if mask.any():
                    coords = (np.argwhere(mask[::2, ::2, ::2]) * 2).astype(np.int32)  # patch centres on the body
                    self._masks[i], self._centres[i] = mask, _spread(coords)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_opened"] = OrderedDict()  # memory maps are reopened in each process, never pickled
        state["_pass_order"] = None
        return state

    def __len__(self) -> int:
        return self.length

    def _volume(self, which: int) -> tuple[Any, np.ndarray | None, np.ndarray | None]:
        item = self._volumes_3d[which]
        if not _is_prepared(item):
            return item, self._masks[which], self._centres[which]
        opened = self._opened.get(which)
        if opened is not None:
            self._opened.move_to_end(which)
            return opened
        mask = centres = None
        if self.spec.foreground and item.has_body:
            mask, centres = item.open_mask(), _spread(item.open_centres())
        opened = self._opened[which] = (item.open(), mask, centres)
        if len(self._opened) > MAPPED_SCANS:  # three open files a scan: a bounded number, whatever the dataset's size
            self._opened.popitem(last=False)
        return opened

    def scan_of(self, index: int, rng: np.random.Generator) -> int:
        """The scan (an index into the 3D scans) item ``index`` draws from, with one draw of its ``rng``."""
        n = len(self._volumes_3d)
        if not self.windowed or n <= MAPPED_SCANS:
            return int(rng.integers(0, n))
        windows = -(-n // MAPPED_SCANS)  # per pass; their sizes differ by one at most
        pass_, offset = divmod(int(index), n * SCAN_VISITS)
        here = offset // SCAN_VISITS  # the pass's position in scans: window j spans [j*n//windows, (j+1)*n//windows)
        j = ((here + 1) * windows - 1) // n
        lo, hi = j * n // windows, (j + 1) * n // windows
        cached = self._pass_order  # one read: a thread drawing another pass meanwhile cannot mix the two orders
        if cached is None or cached[0] != pass_:
            cached = self._pass_order = (pass_, np.random.default_rng([self.seed, 1, pass_]).permutation(n))
        return int(cached[1][lo + int(rng.integers(0, hi - lo))])

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, int(index)])
        volume, mask, centres = self._volume(self.scan_of(index, rng))
        patch = np.empty((1, 0, 0, 0), np.float32)
        patch_mask = None
        if any(a.uses_patch for a in self._adapters.values()):
            if centres is not None:  # a patch centred on the body
                centre = np.asarray(centres[int(rng.integers(len(centres)))], dtype=np.int64)
                size = np.asarray(self.spec.patch)
                corner = tuple(int(c) for c in np.clip(centre - size // 2, 0, np.asarray(volume.spatial_shape) - size))
            else:
                corner = random_corner(volume.spatial_shape, self.spec.patch, rng)
            patch = crop([volume.array], corner, self.spec.patch)[0][None]  # (1, z, y, x)
            if mask is not None:
                patch_mask = crop([mask], corner, self.spec.patch)[0]
        sample: dict[str, Any] = {}
        for build in self._adapters.values():
            sample.update(build(volume, patch, rng, patch_mask if build.uses_patch else mask))
        return sample


def _spread(centres: np.ndarray) -> np.ndarray:
    """At most :data:`MAX_CENTRES` of a scan's candidate patch centres, evenly spread over the list (raster order, so
    over the body): a strided view, the same in RAM and on a memory map, read one row at a time."""
    step = -(-len(centres) // MAX_CENTRES)
    return centres[::step] if step > 1 else centres


def _is_prepared(item: Any) -> bool:
    return hasattr(item, "open_mask")


def _smaller(item: Any, patch: Sequence[int]) -> bool:
    return any(s < p for s, p in zip(item.spatial_shape, patch, strict=True))


# ---------------------------------------------------------------- pretext samples (each unit's own)
def adapter(name: str, task: Any) -> Any:
    """The sample builder of the registered pretext ``name`` (its unit's ``sample`` module, named by its registry
    record: :mod:`napari_ssl.pretext.registry`) for ``task``."""
    from napari_ssl.pretext import registry

    return registry.get(name).make_adapter(task)
