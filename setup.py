"""Installs two packages, ``neuroicl_tf`` (the library) and ``generators`` (episode synthesis),
plus the thin command lines in ``scripts/`` as ``neuroicl-<verb>`` entry points."""

from setuptools import find_packages, setup

# The stack as measured on this project's machines (see README.md). tf-keras needs the full
# tensorflow package; voxelmorph 0.3 and neurite 0.3 are PyTorch-only, hence the pins.
INSTALL_REQUIRES = [
    "tensorflow==2.21.*",
    "tf-keras==2.21.*",
    "neurite==0.2",
    "voxelmorph==0.2",
    "nibabel>=5",
    "numpy>=2",
    "scipy",
    "matplotlib",
    "nilearn",
    "tensorboard",  # tf.summary in training; tensorflow 2.21 does not pull it in
    # neuroicl-predict's affine registration of the context to the target (chosen over antspyx,
    # which pins numpy<2.4 and scipy<1.16; comparison in docs/predict.md).
    "SimpleITK>=2.3",
]

EXTRAS_REQUIRE = {
    # The serving API builds and checks gRPC PredictRequests in the tests (needs no server).
    "test": ["pytest", "ruff", "tensorflow-serving-api==2.21.*"],
    "serving": ["tensorflow-serving-api==2.21.*"],
    # Reading reference PyTorch .ckpt files; state dicts of numpy arrays need no torch.
    "torch": ["torch"],
}

# Every command is a thin module in scripts/ with a main(); see docs/cli.md.
COMMANDS = {
    verb: f"scripts.{verb}:main"
    for verb in ("demo", "train", "synth", "convert", "export", "predict", "evaluate")
}

setup(
    name="neuroicl_tf",
    version="0.1.0",
    description="In-context learning for neuroimaging (Neuralizer, Neuroverse3D) in TF/Keras",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.14",
    packages=find_packages(include=["neuroicl_tf*", "generators*", "scripts*"]),
    include_package_data=True,
    package_data={"neuroicl_tf": ["weights/*", "data/*"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": [f"neuroicl-{verb}={target}" for verb, target in COMMANDS.items()]
    },
)
