"""An opt-in model zoo: real checkpoints from the Hugging Face hub, fetched only when the caller allows it.

    model = load_pretrained("EleutherAI/pythia-70m", allow_download=True)   # or WORKBENCH_ALLOW_DOWNLOAD=1

Nothing is fetched by default. With permission, the hub's file list (names and sizes) is queried first and the
total is printed (``downloading EleutherAI/pythia-70m: 166 MB (model.safetensors, tokenizer.json, ...)``); then
only the safetensors weights, the config and the tokenizer files are downloaded, with a progress bar, into the
Hugging Face cache (``HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``). A model already in that cache loads
offline without permission, because nothing is fetched. Repos that ship only pickle weights
(``pytorch_model.bin``) are refused: the workbench never unpickles. No custom model code is ever run.

This module imports ``huggingface_hub`` only when a hub name is actually resolved.

Lesson: ``notebooks/00_tour.ipynb``.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .interface import ModelError

ENV_VAR = "WORKBENCH_ALLOW_DOWNLOAD"

#: A few small real models that the labs work with (name, approximate download with safetensors only).
SUGGESTED = {
    "EleutherAI/pythia-70m": "166 MB, GPT-NeoX, 6 layers, padded vocabulary",
    "gpt2": "548 MB, the 124M GPT-2",
    "HuggingFaceTB/SmolLM2-135M": "270 MB, Llama-style with grouped-query attention",
}

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Files besides the weights that loading needs: the config and the tokenizer. Never *.py (remote code).
_SIDE_FILES = ("config.json", "generation_config.json", "tokenizer*", "special_tokens_map.json",
               "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt", "chat_template.*")
_HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_SHARD = re.compile(r"model-\d+-of-\d+\.safetensors")


class DownloadNotAllowedError(ModelError):
    """A hub name was asked for, it is not in the local cache, and downloads are off (the default)."""


class UnsafeWeightsError(ModelError):
    """A model whose weights exist only as pickle files (``pytorch_model.bin`` ...), which are never loaded."""


class MissingWeightsError(ModelError):
    """A folder or hub repo without model weights (no ``*.safetensors``)."""


class HubError(ModelError):
    """The hub could not be reached (offline), or has no such repo or revision."""


def downloads_allowed(allow_download: bool | None = None) -> bool:
    """``allow_download`` when given, else the ``WORKBENCH_ALLOW_DOWNLOAD`` environment variable (off when unset)."""
    if allow_download is not None:
        return bool(allow_download)
    raw = os.environ.get(ENV_VAR, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{ENV_VAR}={os.environ[ENV_VAR]!r} is not understood: set it to 1 to allow downloads "
                     "or 0 (or unset it) to keep them off")


def looks_like_hub_name(name: str) -> bool:
    """True for ``"gpt2"`` or ``"EleutherAI/pythia-70m"``; False for paths such as ``"./m"``, ``"/a/b"``, ``"a/b/c"``."""
    return bool(_HUB_NAME.fullmatch(str(name))) and not str(name).endswith((".json", ".safetensors"))


def how_to_allow(name: str) -> str:
    """The sentence every refusal ends with: how to allow downloads and how to pass a local folder instead."""
    return (f"To download it from the Hugging Face hub (safetensors only, into the HF cache), pass "
            f"allow_download=True, e.g. load_pretrained({name!r}, allow_download=True), or set {ENV_VAR}=1 in the "
            f"environment. To use a copy you already have, pass its folder (config.json, *.safetensors and the "
            f"tokenizer files): from_hf('/path/to/folder') or load_pretrained('/path/to/folder').")


def _offline_hint(name: str) -> str:
    folder = name.split("/")[-1]
    return (f"If this machine has no internet, fetch the model on one that has, e.g. "
            f"python -c \"import huggingface_hub as h; h.snapshot_download({name!r}, "
            f"allow_patterns=['*.safetensors', '*.json', '*.txt', 'tokenizer*'], local_dir={folder!r})\", "
            f"copy the folder here and pass it: from_hf({folder!r}) or load_pretrained({folder!r}).")


def split_weights(names) -> tuple[list[str], list[str]]:
    """File names (relative, '/'-separated) -> (safetensors weight files to use, pickle weight files).

    Only top-level files count. With a sharded index (``model.safetensors.index.json``) the ``model-*-of-*``
    shards are used; with ``model.safetensors`` only that file (repos may also carry other copies, e.g. Mistral's
    ``consolidated.safetensors``)."""
    top = [n for n in names if "/" not in n]
    st = sorted(n for n in top if n.endswith(".safetensors"))
    if "model.safetensors.index.json" in top and any(_SHARD.fullmatch(n) for n in st):
        st = [n for n in st if _SHARD.fullmatch(n)]
    elif "model.safetensors" in st:
        st = ["model.safetensors"]
    pickles = sorted(n for n in top if n.endswith(PICKLE_SUFFIXES) and not n.startswith(("tokenizer", "training_args")))
    return st, pickles


def refuse_pickles(where: str, pickles: list[str]) -> UnsafeWeightsError:
    """The error for a model that has pickle weights only."""
    return UnsafeWeightsError(
        f"{where} has only pickle weights ({', '.join(pickles)}) and no *.safetensors file. The workbench loads "
        "safetensors only and never unpickles (unpickling a file can run any code in it). If you trust the file, "
        "convert it once yourself: AutoModelForCausalLM.from_pretrained(folder).save_pretrained(new_folder) writes "
        "model.safetensors; then pass new_folder to from_hf. Many hub repos also have a safetensors revision "
        "(look for a 'refs/pr/...' revision with model.safetensors and pass revision=...)."
    )


def check_weights(folder: Path) -> list[str]:
    """The safetensors weight files in a local model folder; a specific error when there are none."""
    folder = Path(folder)
    names = [p.name for p in folder.iterdir() if p.is_file()]
    st, pickles = split_weights(names)
    if st:
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise MissingWeightsError(
                    f"{str(folder)!r} is missing weight shards listed in model.safetensors.index.json: "
                    f"{', '.join(missing)}; copy (or download) the whole folder again")
        return st
    if pickles:
        raise refuse_pickles(repr(str(folder)), pickles)
    found = ", ".join(sorted(names)[:8]) or "the folder is empty"
    raise MissingWeightsError(
        f"{str(folder)!r} has no model weights: no *.safetensors file (found: {found}). Pass the folder that "
        "model.save_pretrained(folder) wrote (config.json plus model.safetensors), or a hub name with "
        "allow_download=True."
    )


def cached_folder(repo_id: str, revision: str | None = None, cache_dir=None) -> Path | None:
    """The snapshot folder of ``repo_id`` in the local HF cache when it holds a config and complete safetensors
    weights, else None. Reads the disk only; never touches the network."""
    try:
        import huggingface_hub as hub
    except ImportError:
        return None
    hit = hub.try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir, revision=revision)
    if not isinstance(hit, (str, os.PathLike)):
        return None
    folder = Path(hit).parent
    try:
        check_weights(folder)
    except ModelError:
        return None
    return folder


@dataclass
class DownloadPlan:
    """What a download would fetch: ``files`` as (name, bytes), largest first, and their ``total`` in bytes."""

    repo_id: str
    files: list[tuple[str, int]]

    @property
    def total(self) -> int:
        return sum(size for _, size in self.files)

    def describe(self) -> str:
        names = [n for n, _ in self.files]
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        return f"downloading {self.repo_id}: {format_size(self.total)} ({shown})"


def format_size(n: int) -> str:
    """Bytes in decimal units as the hub shows them: ``166 MB``, ``2.5 GB``, ``9.6 kB``."""
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    if n >= 1e7:
        return f"{n / 1e6:.0f} MB"
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e3:.1f} kB"


def _hub_errors():
    try:
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError
    except ImportError:  # huggingface_hub < 0.23
        from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError
    return GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError


def plan(repo_id: str, revision: str | None = None) -> DownloadPlan:
    """Ask the hub for the repo's file list with sizes and choose what to fetch (network: one metadata call)."""
    import huggingface_hub as hub

    gated, not_found, no_revision = _hub_errors()
    try:
        info = hub.model_info(repo_id, revision=revision, files_metadata=True)
    except gated as e:
        raise HubError(f"{repo_id!r} is gated on the hub: accept its licence on huggingface.co/{repo_id} and log in "
                       f"(hf auth login), then try again ({type(e).__name__})") from None
    except no_revision:
        raise HubError(f"{repo_id!r} has no revision {revision!r} on the hub") from None
    except not_found:
        raise HubError(f"no model repo named {repo_id!r} on the Hugging Face hub (check the spelling, e.g. "
                       f"{', '.join(map(repr, SUGGESTED))})") from None
    except Exception as e:  # noqa: BLE001 - offline, DNS, proxy, timeout: all mean the hub is out of reach
        raise HubError(f"cannot reach the Hugging Face hub to look up {repo_id!r} ({type(e).__name__}: {e}). "
                       + _offline_hint(repo_id)) from None
    sizes = {}
    for s in info.siblings or []:
        lfs = getattr(s, "lfs", None)
        sizes[s.rfilename] = int(s.size or getattr(lfs, "size", 0) or 0)
    st, pickles = split_weights(sizes)
    if not st:
        if pickles:
            raise refuse_pickles(f"hub repo {repo_id!r}", pickles)
        raise MissingWeightsError(f"hub repo {repo_id!r} has no model weights (*.safetensors) at its top level: "
                                  "it is not a transformers model repo the workbench can load")
    if "config.json" not in sizes:
        raise MissingWeightsError(f"hub repo {repo_id!r} has no config.json: it is not a transformers model repo")
    side = [n for n in sizes if "/" not in n and not n.endswith((".py", ".bin"))
            and any(fnmatch.fnmatch(n, p) for p in _SIDE_FILES)]
    if any(_SHARD.fullmatch(n) for n in st):
        side.append("model.safetensors.index.json")
    files = sorted({(n, sizes[n]) for n in st + side}, key=lambda f: (-f[1], f[0]))
    return DownloadPlan(repo_id, files)


def resolve(repo_id: str, *, allow_download: bool | None = None, revision: str | None = None, cache_dir=None,
            context: str = "") -> Path:
    """A local folder for hub model ``repo_id``: the cached snapshot when there is one (offline, no permission
    needed), else a fresh download when allowed, else :class:`DownloadNotAllowedError`.

    ``context`` is prepended to the refusal (``load_pretrained`` says which names are shipped)."""
    folder = cached_folder(repo_id, revision, cache_dir)
    if folder is not None:
        return folder
    if not downloads_allowed(allow_download):
        if "/" in repo_id and not Path(repo_id).exists():
            context += f"There is no local folder {str(Path(repo_id).resolve())!r} either. "
        raise DownloadNotAllowedError(
            f"{context}{repo_id!r} is not in the local Hugging Face cache and downloads are off (the default: "
            f"nothing is fetched unless you allow it). " + how_to_allow(repo_id))
    try:
        import huggingface_hub as hub
    except ImportError:
        raise ImportError("downloading from the hub needs huggingface_hub, which comes with the 'hf' extra: "
                          "pip install 'lm-workbench[hf]'") from None
    p = plan(repo_id, revision)
    print(p.describe(), flush=True)
    try:
        path = hub.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                     allow_patterns=[n for n, _ in p.files])
    except Exception as e:  # noqa: BLE001 - a broken connection half-way, a full disk
        raise HubError(f"downloading {repo_id!r} failed ({type(e).__name__}: {e}); run it again to resume. "
                       + _offline_hint(repo_id)) from None
    check_weights(Path(path))
    return Path(path)


def load(repo_id: str, *, allow_download: bool | None = None, revision: str | None = None, cache_dir=None,
         dtype=None, device=None, context: str = ""):
    """:func:`resolve` then :func:`~workbench.models.hf_adapter.from_hf` on the folder; the model is named
    ``repo_id``."""
    from .hf_adapter import from_hf

    folder = resolve(repo_id, allow_download=allow_download, revision=revision, cache_dir=cache_dir,
                     context=context)
    model = from_hf(folder, dtype=dtype, device=device)
    model.name = repo_id
    return model
