"""The pretext package as a whole: registry, parameter specs, light import, real scans end to end."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_ssl.pretext import (
    PRETEXTS,
    ContextRestoration,
    ImagingPlanes,
    ParamSpec,
    RubikCube,
    get_pretext,
)


@pytest.mark.parametrize(
    ("name", "cls"), [("rubik", RubikCube), ("context", ContextRestoration), ("planes", ImagingPlanes)]
)
def test_get_pretext(name, cls):
    assert isinstance(get_pretext(name), cls)
    assert PRETEXTS[name] is cls and cls.name == name
    assert (
        cls.__doc__ and "Parameters" in cls.__doc__ and "20" in cls.__doc__
    )  # numpydoc, cites its paper (year)


def test_get_pretext_kwargs_and_unknown():
    assert get_pretext("RUBIK", grid=3, gap=0).grid == 3
    with pytest.raises(
        ValueError, match=r"unknown pretext 'jigsaw'; choose one of \['context', 'genesis', 'planes', 'rubik'\]"
    ):
        get_pretext("jigsaw")
    with pytest.raises(ValueError, match="n_swaps must be >= 0"):
        get_pretext("context", n_swaps=-3)


@pytest.mark.parametrize("cls", [RubikCube, ContextRestoration, ImagingPlanes])
def test_parameter_specs_match_constructor(cls):
    signature = inspect.signature(cls.__init__)
    names = [p for p in signature.parameters if p != "self"]
    assert [spec.name for spec in cls.PARAMETERS] == names
    for spec in cls.PARAMETERS:
        assert isinstance(spec, ParamSpec) and spec.help
        default = signature.parameters[spec.name].default
        assert spec.default == default or (
            default is not None and np.all(np.asarray(default) == spec.default)
        )
        assert isinstance(spec.default, spec.type) or (spec.type is float and isinstance(spec.default, int))
        if spec.choices:
            assert spec.default in spec.choices
        if spec.min is not None:
            assert spec.default >= spec.min
            if spec.type in (int, float) and spec.min > 0:
                with pytest.raises(ValueError, match=spec.name):
                    cls(**{spec.name: spec.type(spec.min) - (1 if spec.type is int else spec.min)})
        if spec.max is not None:
            assert spec.default <= spec.max
            with pytest.raises(ValueError, match=spec.name):
                cls(**{spec.name: spec.type(spec.max) + 1})
    cls(**{spec.name: spec.default for spec in cls.PARAMETERS})


def test_import_does_not_load_torch():
    code = "import sys, napari_ssl.pretext; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "relpath",
    ["ct_organs/ct.nii.gz", "brain_tumor/image.nrrd", "mni152/t1.nii.gz"],
    ids=["ct", "mr_aniso", "mni"],
)
def test_real_scans_run_and_invert(shared_data, relpath):
    """Whole real scans, default parameters: all three run, Rubik and context invert exactly."""
    from napari_ssl import io

    vol = io.read(shared_data / relpath)
    array = vol.array
    rng = np.random.default_rng(0)
    for task in (RubikCube(), ContextRestoration()):
        params = task.sample(vol, rng)
        y = task.apply(array, params)
        assert y.dtype == array.dtype and y.shape == array.shape and not np.array_equal(y, array)
        np.testing.assert_array_equal(task.invert(y, params), array)
    tensor = torch.from_numpy(array.astype(np.float32))[None]
    params = RubikCube().sample(vol, rng)
    assert torch.equal(RubikCube().invert(RubikCube().apply(tensor, params), params), tensor)
    mm = ContextRestoration(n_swaps=4, patch_size=12.0, unit="mm").sample(vol, rng)
    np.testing.assert_allclose(np.asarray(mm.patch) * vol.spacing, 12.0, atol=max(vol.spacing) / 2 + 1e-9)
    planes = ImagingPlanes()
    params = planes.sample(vol, rng)
    images = planes.apply(array, params)
    assert images.shape == (11, 128, 128) and images.dtype == array.dtype and images.std() > 0
    t = planes.targets(params)
    assert t["heatmaps"].shape == (11, 11, 128, 128)
    assert (t["has_line"][8:].sum(axis=1) == 10).all()  # every oblique view cuts every other view
    np.testing.assert_allclose(t["slice_position"][:8], np.linspace(0, 1, 8), atol=1e-6)


def test_finite_check_fast_path_and_fallbacks():
    from napari_ssl.pretext._base import check_array

    x = np.zeros((4, 4, 4), np.float32)
    x[0, 0, 0] = x[1, 1, 1] = 3e38  # finite, but its dot product overflows: the exact test decides
    check_array(x)
    check_array(torch.from_numpy(x))
    check_array(np.full((4, 4, 4), 6e4, np.float16))  # float16 sums overflow fast
    check_array(torch.full((4, 4, 4), 6e4, dtype=torch.float16))
    check_array(np.zeros((4, 8, 4))[:, ::2])  # non-contiguous view
    for bad in (np.nan, np.inf, -np.inf):
        for arr in (np.zeros((4, 4, 4)), np.zeros((4, 8, 4))[:, ::2], np.zeros((4, 4, 4), np.float16)):
            arr = arr.copy()
            arr[1, 2, 3] = bad
            with pytest.raises(ValueError, match="NaN or inf"):
                check_array(arr)
            with pytest.raises(ValueError, match="NaN or inf"):
                check_array(torch.from_numpy(arr))
    check_array(np.array([[[2**62]]], dtype=np.int64))  # integers are always finite
