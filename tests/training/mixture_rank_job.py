"""One rank of the two-process data-stream test: `python -m tests.training.mixture_rank_job --config step.yaml
--rows N --out rank.json` under RANK / WORLD_SIZE, as the launcher starts a job's ranks.

Writes the sample ids of the rows this rank's stream emitted, its state_dict() afterwards, and for every task
the ids of the samples the rank's share of epoch 0 holds.
"""
from __future__ import annotations

import argparse
import json

import torch
from omegaconf import OmegaConf

from conf import validated
from training.config import StepConfig
from training.distributed import rank, world_size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from model.processor import build_image_processor
    from model.tokenizer import load_tokenizer
    from training.mixture import build_row_stream

    cfg = validated(StepConfig, OmegaConf.load(args.config), where=args.config)
    stream = build_row_stream(cfg, load_tokenizer(cfg.model, cfg.runs_dir), build_image_processor(cfg.model.processor),
                              rank=rank(), world_size=world_size())
    rows = stream.next_rows(args.rows)
    shares = {task: [stream.pools[task][int(i)].sample.id for i in stream.sampler.share(task, 0)]
              for task in stream.pools}
    with open(args.out, "w") as out:
        json.dump({"rank": rank(), "rows": [[s.sample_id for s in row] for row in rows],
                   "state": stream.state_dict(), "epoch0_shares": shares}, out)


if __name__ == "__main__":
    main()
