"""The real repositories' config files, kept in `real_configs/` as data: one folder per repo and revision.

Each file is either the repository's own text (`name.json`), or what was seen of it (`name.partial.json`)
laid over a filler derived from sibling sources (`name.derived.json`); SOURCES.md in each folder says which.
Twins are built from these configs and the planner sizes the real models from them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

_ROOT = "real_configs"
# The layers of one config file, from the least to the most authoritative.
_LAYERS = (".derived.json", ".partial.json")
# Components without weights; everything else in a model_index is a weighted module.
UNWEIGHTED = frozenset({"scheduler", "tokenizer", "processor", "feature_extractor"})


class MissingConfigError(LookupError):
    """No copy (real, partial or derived) of a config file is kept."""


def folder_name(repo: str) -> str:
    """`org/name` → `org--name`, the Hugging Face cache's spelling."""
    return repo.replace("/", "--")


@dataclass(frozen=True)
class KeptRepo:
    """The kept config files of one repository at one revision."""

    repo: str
    revision: str
    root: Traversable

    def has(self, path: str) -> bool:
        stem = path.removesuffix(".json")
        return any(self.root.joinpath(stem + suffix).is_file() for suffix in (".json", *_LAYERS))

    def read(self, path: str) -> dict[str, Any]:
        """A config file, e.g. "transformer/config.json": the real one, or partial keys over a derived filler."""
        whole = self.root.joinpath(path)
        if whole.is_file():
            return _load(whole)
        stem = path.removesuffix(".json")
        merged: dict[str, Any] = {}
        found = False
        for suffix in _LAYERS:
            layer = self.root.joinpath(stem + suffix)
            if layer.is_file():
                merged.update(_load(layer))
                found = True
        if not found:
            raise MissingConfigError(f"no kept copy of {self.repo}/{path} at {self.revision}")
        return merged

    def model_index(self) -> dict[str, Any]:
        return self.read("model_index.json")

    def components(self) -> dict[str, tuple[str, str]]:
        """Component name → (library, class name), as model_index.json declares them."""
        return {
            name: (value[0], value[1])
            for name, value in self.model_index().items()
            if not name.startswith("_") and isinstance(value, list) and len(value) == 2
        }

    def weighted_components(self) -> dict[str, tuple[str, str]]:
        return {name: spec for name, spec in self.components().items() if name not in UNWEIGHTED}

    def component_config(self, component: str) -> dict[str, Any]:
        """The config of a weighted component (diffusers' config.json or transformers' config.json)."""
        return self.read(f"{component}/config.json")


def kept_repo(repo: str, revision: str = "main") -> KeptRepo:
    """The kept configs of `repo` at `revision`; MissingConfigError when none are kept."""
    root = resources.files("adgen_diffusion").joinpath(_ROOT, folder_name(repo), revision)
    if not root.is_dir():
        raise MissingConfigError(f"no configs of {repo} at {revision} are kept in {_ROOT}/")
    return KeptRepo(repo, revision, root)


def local_repo(directory: Path, repo: str = "") -> KeptRepo:
    """The configs of a pipeline folder on disk (a tiny twin, a snapshot), read the same way."""
    return KeptRepo(repo or directory.name, "local", directory)


def _load(file: Traversable) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
    return loaded
