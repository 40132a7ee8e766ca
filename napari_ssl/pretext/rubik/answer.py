"""What a Rubik's cube network answers on one sample: its permutation and rotations for the cubes the explorer shows,
cube by cube against the truth (torch; run by the explorer in a child process)."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_ssl.io.volume import Volume
from napari_ssl.study.answers import need, resize

__all__ = ["answer_rubik", "describe_rubik"]


def answer_rubik(network: Any, volume: Volume, task: Any, params: Any,
                 name: str = "rubik") -> dict[str, Any]:
    """The network's permutation and rotations for the cubes of ``params`` cut from the normalised scan.

    The cubes are resized to the cube shape the network was trained on. Cube ``i`` (the one in cell ``i``)
    is *in the right place* when the predicted permutation puts the true source cube there
    (``predicted_permutation[i] == params.permutation[i]``), and *turned right* when both its rotation flags
    are predicted right.

    Returns
    -------
    dict
        ``perm_pred`` / ``perm_true`` (class indices), ``perm_prob`` (softmax of the prediction),
        ``perm_prob_true``, ``permutation_pred`` / ``permutation_true`` (n_cubes,), ``rotations_pred`` /
        ``rotations_true`` (n_cubes, 2) bool, ``position_right``, ``rotation_right`` and ``right`` (n_cubes,) bool.
    """
    import torch

    need(network, name)
    head = network.net.spec.heads[name]
    if task.grid**3 != head["n_cubes"] or task.n_permutations != head["n_permutations"]:
        trained = round(head["n_cubes"] ** (1 / 3))
        raise ValueError(
            f"this network was trained with grid {trained} and {head['n_permutations']} permutations; "
            f"set the same to see its answer (now grid {task.grid}, {task.n_permutations} permutations)"
        )
    normed, _ = network.normalise(volume)
    cubes = np.ascontiguousarray(task.cubes(normed[None], params), dtype=np.float32)  # (n, 1, cz, cy, cx)
    with torch.no_grad():
        x = resize(torch.from_numpy(cubes).to(network.device), head["cube_shape"])
        out = network.forward(name, {f"{name}.cubes": x[None]})
        probs = torch.softmax(out[f"{name}.perm"][0].float(), dim=0).cpu().numpy()
        rot_pred = (out[f"{name}.rot"][0] > 0).cpu().numpy()
    pred = int(np.argmax(probs))
    perm_pred = np.asarray(task.permutations[pred])
    perm_true = np.asarray(params.permutation)
    rot_true = np.asarray(params.rotations, dtype=bool).reshape(-1, 2)
    position_right = perm_pred == perm_true
    rotation_right = (rot_pred == rot_true).all(axis=1)
    return {
        "perm_pred": pred,
        "perm_true": int(params.permutation_index),
        "perm_prob": float(probs[pred]),
        "perm_prob_true": float(probs[int(params.permutation_index)]),
        "permutation_pred": perm_pred,
        "permutation_true": perm_true,
        "rotations_pred": rot_pred,
        "rotations_true": rot_true,
        "position_right": position_right,
        "rotation_right": rotation_right,
        "right": position_right & rotation_right,
    }


def describe_rubik(result: dict[str, Any], label: str = "Rubik's cube") -> str:
    """One sentence on :func:`answer_rubik`'s result."""
    n = len(result["right"])
    return (
        f"Network: permutation {result['perm_pred']} predicted (p={result['perm_prob']:.2f}), true "
        f"{result['perm_true']} (p={result['perm_prob_true']:.2f}); {int(result['position_right'].sum())} of "
        f"{n} cubes in the right place, {int(result['rotation_right'].sum())} of {n} turned right "
        "(outlines: green both right, orange one, red neither)"
    )
