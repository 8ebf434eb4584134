# ruff: noqa: E402 - one-off probes: imports follow sys.path set-up on purpose
import copy
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import numpy as np
import torch

torch.set_num_threads(1)

from sssl_dist.config import FeatureConfig, to_dict
from sssl_dist.data.segments import SegmentBatcher, SegmentTable, loss_pass_batches
from sssl_dist.method.models import build_model, fuse_conv_bn
from sssl_dist.method.tasks import task_of
from sssl_dist.outputs.export import load_model
from sssl_dist.outputs.predict import decode_row, file_key

files = json.loads(Path("/tmp/prof/files.json").read_text())[:120]
fc = to_dict(FeatureConfig())
rows = [decode_row({"file": file_key(f), "path": os.fsencode(f)}, fc, None) for f in files]
m = load_model(str(Path("/tmp/prof/model.sssl")))
cfg = m.cfg
inputs = []
for r in rows:
    if r["error"]:
        continue
    mel = np.frombuffer(r["mel"], dtype=np.float32).reshape(int(r["n_mels"]), -1)
    song = {"song_id": "song", "duration_s": float(r["duration_s"]), cfg.task: 0}
    t = SegmentTable.build([song], cfg.task, cfg.segment_seconds, cfg.hop_seconds)
    b = SegmentBatcher(t, {"song": mel}, m.fc)
    inputs.append(torch.cat([b.inputs(i) for i in loss_pass_batches(0, len(t), 128)]))
print("files", len(inputs), "segments", sum(len(x) for x in inputs), "shape", inputs[0].shape)
# load_model's network is folded already: the unfolded one from the same weights.
net = build_model(cfg.backbone, task_of(cfg).num_outputs, cfg.dropout)
net.load_state_dict(torch.load("/tmp/prof/model.sssl", weights_only=True)["state_dict"])
net.eval()


fnet = fuse_conv_bn(copy.deepcopy(net))


def run(model, per_file=True, bf16=False, bs=128):
    outs = []
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        if per_file:
            for x in inputs:
                for j in range(0, len(x), bs):
                    outs.append(torch.softmax(model(x[j : j + bs]).float(), -1))
        else:
            allx = torch.cat(inputs)
            for j in range(0, len(allx), bs):
                outs.append(torch.softmax(model(allx[j : j + bs]).float(), -1))
    return torch.cat(outs)


ref = run(net)
for name, kw, model in [
    ("base", {}, net),
    ("fused", {}, fnet),
    ("bf16", {"bf16": True}, net),
    ("fused+bf16", {"bf16": True}, fnet),
    ("base cross-file 128", {"per_file": False}, net),
    ("fused cross-file 256", {"per_file": False, "bs": 256}, fnet),
    ("fused+bf16 cross-file 256", {"per_file": False, "bs": 256, "bf16": True}, fnet),
]:
    run(model, **kw)
    ts = []
    for _ in range(3):
        t0 = time.perf_counter()
        p = run(model, **kw)
        ts.append(time.perf_counter() - t0)
    d = (p - ref).abs().max().item()
    agree = (p.argmax(1) == ref.argmax(1)).float().mean().item()
    print(
        f"{name:28s} {min(ts) * 1000 / len(inputs):6.2f} ms/file",
        f"max|dp| {d:.2e}  argmax agree {agree:.4f}",
    )
