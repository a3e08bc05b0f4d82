"""The package's metadata, dependencies, extras and console scripts are in setup.cfg. Here is
what setup.cfg cannot say: the repository's top-level configs/ folder (the one copy of the
shipped YAML configs) is installed as the data package `his_common.configs`, where
`his_common.config` finds configs by name; the package list and the package data go with it."""
from setuptools import find_namespace_packages, find_packages, setup

CODE = ["his_env*", "quality_oracle*", "agents*", "experiments*", "his_cli*", "his_common*"]
CONFIGS = ["his_common.configs"] + [f"his_common.configs.{p}" for p in find_namespace_packages(where="configs")]

setup(
    packages=find_packages(include=CODE) + CONFIGS,
    package_dir={"his_common.configs": "configs"},
    package_data={"his_env": ["data/*.csv"], "quality_oracle": ["data/*.csv"],
                  **{package: ["*.yaml"] for package in CONFIGS}},
)
