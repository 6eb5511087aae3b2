"""Initialise the VLM from separate ViT and LLM weight folders (local or s3://), as MiMo-VL does.

ViT folder: any safetensors checkpoint whose vision tensors are named `visual.*` (Qwen2.5-VL release) or
`model.visual.*` (transformers 5 layout). Its merger (projector) is NOT used: MiMo-VL's projector starts
from random init. LLM folder: a causal LM with `model.*` and `lm_head.*` tensors (MiMo-7B-Base); its MTP
layers (`model.mtp_layers.*`) are ignored. A missing tensor or a shape mismatch is an error that names the
folder and the tensors.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from model.config import ModelConfig, require_weights
from model.parts import PROJECTOR_PREFIX, part_of
from storage.uri import resolve_local

log = logging.getLogger(__name__)

IGNORED_LLM_PREFIXES = ("model.mtp_layers.",)
SHOW_MISSING = 12


class WeightsError(ValueError):
    """A weights folder that cannot initialise the model; the message names the folder and tensors."""


def local_weights_dir(uri: str, runs_dir: str | Path, storage=None) -> Path:
    """A local folder holding the weights at `uri`: the folder itself, or an S3 prefix copied ONCE per node
    into runs_dir/cache/weights/<key> with the S3 client of `storage` (a conf/storage section). The key
    covers the URI and every object's ETag; the ranks of a node serialise on a file lock, the first one
    downloads and the others reuse its copy."""
    if uri.startswith("s3://"):
        from storage.store import open_store

        if storage is None:
            raise WeightsError(f"{uri}: reading weights from S3 needs the storage=s3 config (client settings)")
        return open_store(storage).cached_folder(uri, Path(runs_dir) / "cache" / "weights")
    folder = resolve_local(uri)
    if not folder.is_dir():
        raise WeightsError(f"weights folder {folder} does not exist")
    return folder


def safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [folder / n for n in names]
        absent = [str(f) for f in files if not f.exists()]
        if absent:
            raise WeightsError(f"{index} lists shards that are missing: {absent}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise WeightsError(f"no *.safetensors files in weights folder {folder}")
    return files


def _vit_target(name: str) -> str | None:
    for prefix in ("model.visual.", "visual."):
        if name.startswith(prefix):
            target = "model.visual." + name[len(prefix):]
            return None if target.startswith(PROJECTOR_PREFIX) else target
    return None


def _llm_target(name: str) -> str | None:
    if name.startswith(IGNORED_LLM_PREFIXES):
        return None
    if name.startswith("lm_head."):
        return name
    for prefix in ("model.language_model.", "model."):
        if name.startswith(prefix):
            return "model.language_model." + name[len(prefix):]
    return None


def _load_part(model: torch.nn.Module, folder: Path, part: str, target_of) -> int:
    from safetensors import safe_open

    params = dict(model.named_parameters(remove_duplicate=False))
    wanted = {n for n in params if part_of(n) == part}
    # Tied output embeddings are the input embeddings: nothing to load for lm_head.
    if getattr(model.config, "tie_word_embeddings", False):
        wanted.discard("lm_head.weight")
    loaded: set[str] = set()
    with torch.no_grad():
        for file in safetensors_files(folder):
            with safe_open(str(file), framework="pt") as shard:
                for name in shard.keys():
                    target = target_of(name)
                    if target is None or target not in wanted:
                        continue
                    tensor = shard.get_tensor(name)
                    param = params[target]
                    if tuple(tensor.shape) != tuple(param.shape):
                        raise WeightsError(
                            f"{file}: tensor {name} has shape {tuple(tensor.shape)}, "
                            f"model expects {tuple(param.shape)} for {target}"
                        )
                    param.copy_(tensor.to(param.dtype))
                    loaded.add(target)
    missing = sorted(wanted - loaded)
    if missing:
        shown = ", ".join(missing[:SHOW_MISSING]) + (f", … ({len(missing)} in all)" if len(missing) > SHOW_MISSING else "")
        raise WeightsError(f"weights folder {folder} lacks {len(missing)} {part} tensor(s): {shown}")
    return len(loaded)


def load_pretrained_parts(model: torch.nn.Module, cfg: ModelConfig, runs_dir: str | Path, storage=None) -> None:
    """Copy the ViT (minus projector) and LLM weights into `model`; the projector keeps its random init."""
    vit_dir = local_weights_dir(require_weights(cfg, "vit"), runs_dir, storage)
    llm_dir = local_weights_dir(require_weights(cfg, "llm"), runs_dir, storage)
    n_vit = _load_part(model, vit_dir, "vit", _vit_target)
    n_llm = _load_part(model, llm_dir, "llm", _llm_target)
    log.info("loaded %d ViT tensors from %s and %d LLM tensors from %s; projector randomly initialised",
             n_vit, vit_dir, n_llm, llm_dir)
