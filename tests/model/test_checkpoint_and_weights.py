import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from model.build import build_model
from model.checkpoint import load_hf_checkpoint, save_hf_checkpoint
from model.weights import WeightsError


def test_hf_round_trip_gives_identical_logits(tiny_model, tokenizer, image_processor, tmp_path):
    folder = save_hf_checkpoint(tiny_model, tokenizer, image_processor, tmp_path / "ckpt")
    model, tok, proc = load_hf_checkpoint(folder)
    ids = torch.tensor([tokenizer("<|im_start|>user\nhello<|im_end|>\n")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(tiny_model(input_ids=ids).logits, model(input_ids=ids).logits)
    assert tok.get_vocab() == tokenizer.get_vocab()
    assert tok.chat_template == tokenizer.chat_template
    assert proc.to_dict()["size"] == image_processor.to_dict()["size"]


def _write_weight_folders(source, root, *, drop=None, reshape=None):
    """A Qwen2.5-VL-release-style ViT folder and a MiMo-style LLM folder (with an MTP layer) from `source`."""
    state = source.state_dict()
    vit = {"visual." + k[len("model.visual."):]: v.clone() for k, v in state.items() if k.startswith("model.visual.")}
    llm = {"model." + k[len("model.language_model."):]: v.clone()
           for k, v in state.items() if k.startswith("model.language_model.")}
    llm["model.mtp_layers.0.proj.weight"] = torch.zeros(2, 2)
    for d in (vit, llm):
        d.pop(drop, None)
        if reshape in d:
            d[reshape] = torch.zeros(3, 3)
    (root / "vit").mkdir(parents=True)
    (root / "llm").mkdir(parents=True)
    save_file(vit, str(root / "vit" / "model.safetensors"))
    save_file(llm, str(root / "llm" / "model.safetensors"))
    return root / "vit", root / "llm"


def _pretrained_cfg(tiny_cfg, vit, llm, seed=7):
    return dataclasses.replace(
        tiny_cfg,
        init=dataclasses.replace(tiny_cfg.init, source="pretrained", seed=seed),
        weights=dataclasses.replace(tiny_cfg.weights, vit=str(vit),
                                    llm=str(llm) if str(llm).startswith("s3://") else f"file://{llm}"),
    )


def test_pretrained_init_loads_vit_and_llm_and_keeps_projector_random(tiny_cfg, tokenizer, tmp_path):
    source = build_model(tiny_cfg, tokenizer)
    vit, llm = _write_weight_folders(source, tmp_path)
    model = build_model(_pretrained_cfg(tiny_cfg, vit, llm), tokenizer, runs_dir=tmp_path)
    src = source.state_dict()
    for name, value in model.state_dict().items():
        if name.startswith("model.visual.merger."):
            if value.dim() > 1:
                assert not torch.equal(value, src[name]), name
        else:
            assert torch.equal(value, src[name]), name


def test_missing_tensor_is_named_with_its_folder(tiny_cfg, tokenizer, tmp_path):
    source = build_model(tiny_cfg, tokenizer)
    vit, llm = _write_weight_folders(source, tmp_path, drop="model.layers.1.mlp.up_proj.weight")
    with pytest.raises(WeightsError, match=r"llm.*lacks 1 llm tensor.*model\.language_model\.layers\.1\.mlp\.up_proj"):
        build_model(_pretrained_cfg(tiny_cfg, vit, llm), tokenizer, runs_dir=tmp_path)


def test_shape_mismatch_is_named(tiny_cfg, tokenizer, tmp_path):
    source = build_model(tiny_cfg, tokenizer)
    vit, llm = _write_weight_folders(source, tmp_path, reshape="visual.blocks.0.attn.qkv.weight")
    with pytest.raises(WeightsError, match=r"visual\.blocks\.0\.attn\.qkv\.weight has shape \(3, 3\)"):
        build_model(_pretrained_cfg(tiny_cfg, vit, llm), tokenizer, runs_dir=tmp_path)


def test_missing_folder_is_named(tiny_cfg, tokenizer, tmp_path):
    with pytest.raises(WeightsError, match="does-not-exist"):
        build_model(_pretrained_cfg(tiny_cfg, tmp_path / "does-not-exist", tmp_path), tokenizer, runs_dir=tmp_path)


def test_pretrained_init_from_s3_folders(tiny_cfg, tokenizer, tmp_path, s3_server, s3_bucket):
    import boto3

    from conf import load_group

    source = build_model(tiny_cfg, tokenizer)
    vit, llm = _write_weight_folders(source, tmp_path / "local")
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    for folder in (vit, llm):
        client.upload_file(str(folder / "model.safetensors"), s3_bucket, f"weights/{folder.name}/model.safetensors")
    storage = load_group("storage", "s3")
    storage.root = f"s3://{s3_bucket}/store"
    storage.s3.endpoint_url = s3_server
    cfg = _pretrained_cfg(tiny_cfg, f"s3://{s3_bucket}/weights/vit", f"s3://{s3_bucket}/weights/llm")
    model = build_model(cfg, tokenizer, runs_dir=tmp_path / "runs", storage=storage)
    src = source.state_dict()
    assert torch.equal(model.state_dict()["model.language_model.layers.0.mlp.up_proj.weight"],
                       src["model.language_model.layers.0.mlp.up_proj.weight"])
    assert torch.equal(model.state_dict()["model.visual.blocks.1.attn.qkv.weight"],
                       src["model.visual.blocks.1.attn.qkv.weight"])
    with pytest.raises(WeightsError, match="needs the storage=s3 config"):
        build_model(cfg, tokenizer, runs_dir=tmp_path / "runs2")


def test_s3_weights_are_downloaded_once_per_node(tiny_cfg, tokenizer, tmp_path, s3_server, s3_bucket):
    """Two ranks (real processes) on one node ask for the same s3:// weights at once: one downloads each
    object, the other waits for it and reuses its copy."""
    import json
    import os
    import subprocess
    import sys

    import boto3
    from omegaconf import OmegaConf

    from conf import REPO_ROOT, load_group

    source = build_model(tiny_cfg, tokenizer)
    vit, _ = _write_weight_folders(source, tmp_path / "local")
    (vit / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    for path in sorted(vit.iterdir()):
        client.upload_file(str(path), s3_bucket, f"weights/vit/{path.name}")
    storage = load_group("storage", "s3")
    storage.root = f"s3://{s3_bucket}/store"
    storage.s3.endpoint_url = s3_server
    uri = f"s3://{s3_bucket}/weights/vit"
    ranks = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.model.weights_worker", json.dumps(OmegaConf.to_container(storage)), uri,
             str(tmp_path / "runs"), str(tmp_path / "barrier"), f"rank{rank}", "2"],
            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for rank in range(2)
    ]
    results = []
    for proc in ranks:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))

    objects = sorted(f"weights/vit/{p.name}" for p in vit.iterdir())
    assert sorted(key for r in results for key in r["gets"]) == objects, "each object is fetched exactly once"
    downloader = next(r for r in results if r["gets"])
    assert results[0]["dir"] == results[1]["dir"]
    folder = Path(results[0]["dir"])
    assert json.loads((folder / ".downloaded").read_text())["pid"] == downloader["pid"]
    assert sorted(p.name for p in folder.iterdir() if p.name != ".downloaded") == sorted(p.name for p in vit.iterdir())
    assert (folder / "model.safetensors").read_bytes() == (vit / "model.safetensors").read_bytes()

    # A changed object under the prefix is a new ETag, hence a new cache folder, not the stale copy.
    client.put_object(Bucket=s3_bucket, Key="weights/vit/config.json", Body=b'{"model_type": "changed"}')
    from model.weights import local_weights_dir

    refreshed = local_weights_dir(uri, tmp_path / "runs", storage)
    assert refreshed != folder and (refreshed / "config.json").read_text() == '{"model_type": "changed"}'
