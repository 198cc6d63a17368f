"""Only one thing beyond pyproject.toml: copy the top-level data folders (tasks/, oracles/, results/)
into the wheel as ``herobench/_data/<name>`` so that an installed herobench finds its shipped tasks
(``herobench.paths.data_dir``). Editable installs read them from the checkout instead."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA = ("tasks", "oracles", "results")


class BuildPyWithData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        root = Path(__file__).resolve().parent
        for name in DATA:
            src = root / name
            if src.is_dir():
                shutil.copytree(src, Path(self.build_lib) / "herobench" / "_data" / name, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithData})
