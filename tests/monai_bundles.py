"""A MONAI bundle as a third party writes one, built in the tests with monai.bundle's own config format
(``ConfigParser.export_config_file``) and a small real MONAI network saved by ``torch.save``: zoo layout (configs/,
models/), RAS orientation, its own spacing and intensity scaling, softmax, ``Invertd`` and ``SaveImaged``. Its
``run`` loops over the data loader as MONAI's evaluator does (pytorch-ignite is not a dependency here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: the bundle's own workflow: what ``ConfigWorkflow(...).run()`` executes (no ignite evaluator needed)
RUN = ("$torch.no_grad()(lambda: [[@postprocessing(item) for item in monai.data.decollate_batch({**b, 'image': "
       "b['image'].to(@device), 'pred': @inferer(b['image'].to(@device), @network)})] for b in @dataloader])()")


def zoo_config(in_channels: int = 1, classes: tuple[str, ...] = ("background", "scalp", "lesion")) -> dict[str, Any]:
    return {
        "imports": ["$import glob", "$import os", "$import numpy as np"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii.gz')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": "UNet", "spatial_dims": 3, "in_channels": in_channels,
                        "out_channels": len(classes), "channels": [8, 16, 32], "strides": [2, 2],
                        "num_res_units": 1, "norm": "batch"},
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": 0.0, "a_max": 1.0, "b_min": -1.0,
             "b_max": 1.0, "clip": True},
            {"_target_": "EnsureTyped", "keys": "image"},
        ]},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 16], "sw_batch_size": 2, "overlap": 0.25,
                    "mode": "gaussian"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
             "separate_folder": False, "resample": False, "output_dtype": "$np.uint8"},
        ]},
        "load_weights": "$@network.load_state_dict(torch.load(@bundle_root + '/models/model.pt', "
                        "map_location=@device, weights_only=True))",
        "initialize": ["$monai.utils.set_determinism(seed=0)", "$@load_weights", "$@network.eval()"],
        "run": [RUN],
    }


def zoo_metadata(in_channels: int = 1, classes: tuple[str, ...] = ("background", "scalp", "lesion")) -> dict[str, Any]:
    import monai
    import numpy
    import torch

    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
                  "meta_schema_20220324.json",
        "version": "0.1.0", "changelog": {"0.1.0": "first version"}, "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0], "numpy_version": numpy.__version__,
        "optional_packages_version": {"nibabel": "5"}, "name": "Test phantom segmentation",
        "task": "phantom segmentation", "description": "a small UNet for tests", "authors": "napari-ssl tests",
        "copyright": "none", "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "MRI",
                                 "num_channels": in_channels, "spatial_shape": [32, 32, 16], "dtype": "float32",
                                 "value_range": [0, 1], "is_patch_data": True,
                                 "channel_def": {str(i): f"mr{i}" for i in range(in_channels)}}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": len(classes),
                                 "spatial_shape": [32, 32, 16], "dtype": "float32",
                                 "value_range": list(range(len(classes))), "is_patch_data": True,
                                 "channel_def": {str(i): c for i, c in enumerate(classes)}}}},
    }


def write_zoo_bundle(root: Path, in_channels: int = 1, seed: int = 0, weights: bool = True) -> Path:
    """A bundle folder at ``root`` (configs/ by MONAI's ConfigParser, models/model.pt by torch.save)."""
    import torch
    from monai.bundle import ConfigParser

    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    config = zoo_config(in_channels)
    ConfigParser.export_config_file(config, str(root / "configs" / "inference.json"), indent=2)
    ConfigParser.export_config_file(zoo_metadata(in_channels), str(root / "configs" / "metadata.json"), indent=2)
    if weights:
        torch.manual_seed(seed)
        parser = ConfigParser(config)
        net = parser.get_parsed_content("network_def")
        with torch.no_grad():  # running statistics that make the untrained network's classes depend on the image
            for module in net.modules():
                if isinstance(module, torch.nn.BatchNorm3d):
                    module.running_mean.uniform_(-0.2, 0.2)
                    module.running_var.uniform_(0.5, 1.5)
        torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


def run_bundle_workflow(root: Path, scan: Path, output_dir: Path) -> Path:
    """The bundle's own inference workflow (``monai.bundle.ConfigWorkflow``: LoadImaged reads ``scan``, SaveImaged
    writes the mask): the written mask's path."""
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=str(root / "configs" / "inference.json"),
                              meta_file=str(root / "configs" / "metadata.json"), logging_file=False,
                              workflow_type=None, bundle_root=str(root), datalist=[str(scan)],
                              output_dir=str(output_dir), device="$torch.device('cpu')")
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    written = sorted(output_dir.glob("*_seg.nii.gz"))
    assert len(written) == 1, written
    return written[0]
