"""Build a real nnU-Net v2 results folder with nnU-Net's own API, for the tests and the benchmark.

From the shared abdominal CT (``ct_organs``: CT + organ masks) five small training cases are made (the scan, flips,
crops; liver, spleen and kidneys as three classes), then nnU-Net plans (fingerprint extraction, an
``ExperimentPlanner`` with a narrow network), preprocesses and trains its stock ``nnUNetTrainer`` for two iterations
on the CPU, so ``fold_0/checkpoint_final.pth`` exists. Nothing of nnU-Net's files is written by hand.

Run as a script in a child process (``python tests/nnunet_folder.py OUT_ROOT``): nnU-Net's folders come from the
``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` environment variables and its planner and trainer print
a lot, so the child keeps both away from the caller. It prints the results folder (the one with ``dataset.json``,
``plans.json`` and ``fold_0``) on its last line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

DATASET_ID = 501
DATASET_NAME = f"Dataset{DATASET_ID:03d}_Organs"
#: the classes of the test model: ct_organs' TotalSegmentator ids -> our labels
CLASSES = {"liver": (5,), "spleen": (1,), "kidney": (2, 3)}
TRAINED = "nnUNetTrainer__nnUNetPlans__3d_fullres"


def build_in_child(root: Path, shared_data: Path, timeout: float = 600) -> Path:
    """Build the folder under ``root`` in a child process; returns the trained model folder."""
    env = dict(os.environ)
    env.update({
        "nnUNet_raw": str(root / "raw"),
        "nnUNet_preprocessed": str(root / "preprocessed"),
        "nnUNet_results": str(root / "results"),
        "nnUNet_compile": "false",
        "OMP_NUM_THREADS": "2",
    })
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(root), str(shared_data)],
                          env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"building the nnU-Net folder failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def _write_cases(raw: Path, shared_data: Path) -> None:
    import numpy as np
    import SimpleITK as sitk
    from batchgenerators.utilities.file_and_folder_operations import maybe_mkdir_p
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    ct = sitk.ReadImage(str(shared_data / "ct_organs" / "ct.nii.gz"))
    seg = sitk.ReadImage(str(shared_data / "ct_organs" / "labels.nii.gz"))
    organs = sitk.GetArrayFromImage(seg)
    labels = np.zeros(organs.shape, np.uint8)
    for value, ids in enumerate(CLASSES.values(), start=1):
        labels[np.isin(organs, ids)] = value
    image = sitk.GetArrayFromImage(ct)
    cases = [
        (slice(None), slice(None), slice(None)),
        (slice(None), slice(None), slice(None, None, -1)),
        (slice(None), slice(0, 80), slice(None)),
        (slice(None), slice(None), slice(10, 110)),
        (slice(None), slice(None, None, -1), slice(None)),
    ]
    folder = raw / DATASET_NAME
    maybe_mkdir_p(str(folder / "imagesTr"))
    maybe_mkdir_p(str(folder / "labelsTr"))
    for k, crop in enumerate(cases):
        for array, sub, suffix in ((image, "imagesTr", "_0000"), (labels, "labelsTr", "")):
            out = sitk.GetImageFromArray(np.ascontiguousarray(array[crop]))
            out.SetSpacing(ct.GetSpacing())
            out.SetDirection(ct.GetDirection())
            out.SetOrigin(ct.GetOrigin())
            sitk.WriteImage(out, str(folder / sub / f"organs_{k:03d}{suffix}.nii.gz"))
    generate_dataset_json(str(folder), channel_names={0: "CT"},
                          labels={"background": 0, **{name: i for i, name in enumerate(CLASSES, start=1)}},
                          num_training_cases=len(cases), file_ending=".nii.gz", dataset_name=DATASET_NAME)


def _build(root: Path, shared_data: Path) -> Path:
    import torch
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiment_dataset,
        preprocess,
    )
    from nnunetv2.run.run_training import get_trainer_from_args

    class NarrowPlanner(ExperimentPlanner):
        """nnU-Net's default planner with a narrow network (8 to 32 features), so CPU training takes seconds."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.UNet_base_num_features = 8
            self.UNet_max_features_3d = 32

    torch.set_num_threads(2)
    started = time.perf_counter()
    _write_cases(root / "raw", shared_data)
    extract_fingerprints([DATASET_ID], num_processes=1, verbose=False, show_progress_bar=False)
    plan_experiment_dataset(DATASET_ID, NarrowPlanner)
    preprocess([DATASET_ID], configurations=("3d_fullres",), num_processes=(1,), show_progress_bar=False)
    os.environ["nnUNet_n_proc_DA"] = "0"  # noqa: SIM112 - the trainer's data augmentation in its own process (after planning,
    # whose planner sets torch's threads from it)
    trainer = get_trainer_from_args(str(DATASET_ID), "3d_fullres", 0, "nnUNetTrainer", device=torch.device("cpu"))
    trainer.num_epochs = 1
    trainer.num_iterations_per_epoch = 2
    trainer.num_val_iterations_per_epoch = 1
    trainer.run_training()
    folder = Path(trainer.output_folder_base)
    print(f"built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return folder


if __name__ == "__main__":
    print(_build(Path(sys.argv[1]), Path(sys.argv[2])))
