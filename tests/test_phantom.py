"""The procedural sample phantom: deterministic, anatomical classes, aligned label volume."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ssl.phantom import PHANTOM_CLASSES, make_phantom


def test_deterministic_and_seeded():
    a_img, a_lab = make_phantom(shape=(24, 32, 32), seed=3)
    b_img, b_lab = make_phantom(shape=(24, 32, 32), seed=3)
    c_img, _ = make_phantom(shape=(24, 32, 32), seed=4)
    np.testing.assert_array_equal(a_img.array, b_img.array)
    np.testing.assert_array_equal(a_lab.array, b_lab.array)
    assert not np.array_equal(a_img.array, c_img.array)


def test_classes_and_geometry():
    image, labels = make_phantom()
    assert image.same_geometry(labels)
    assert image.array.dtype == np.float32 and labels.array.dtype == np.uint8
    present = set(np.unique(labels.array)) - {0}
    assert present == set(PHANTOM_CLASSES)
    assert (labels.array == 7).sum() > 500  # the lesion is visible, not a speck
    # the lesion is brighter than white matter on average: a tumor-like hyperintensity
    assert image.array[labels.array == 7].mean() > image.array[labels.array == 5].mean()
    # centred on the world origin
    np.testing.assert_allclose(image.world_corners().mean(axis=0), 0, atol=1e-9)
    assert image.spacing[0] > image.spacing[1]  # anisotropic on purpose


def test_rejects_tiny_shape():
    with pytest.raises(ValueError, match="at least 16"):
        make_phantom(shape=(8, 32, 32))
