# ruff: noqa: E402 - one-off probes: imports follow ray.init and sys.path set-up on purpose
import json
import resource
import shutil
import time
from pathlib import Path

files = json.loads(Path("/tmp/prof/files.json").read_text())
import ray

ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


def cpu(w):
    r = resource.getrusage(w)
    return r.ru_utime + r.ru_stime


import sssl_dist.outputs.predict as P

p0, m0 = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_THREAD)
t0 = time.perf_counter()
models = P.load_models(["/tmp/prof/model.sssl"])
p1, m1 = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_THREAD)
print(f"load_models: wall {time.perf_counter() - t0:.1f} proc {p1 - p0:.1f} main {m1 - m0:.1f}")
shutil.rmtree("/tmp/prof/out", ignore_errors=True)
t0 = time.perf_counter()
s = P.run_predict(["/tmp/prof/model.sssl"], files, "/tmp/prof/out", plots=False)
p2, m2 = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_THREAD)
print(f"run_predict: wall {time.perf_counter() - t0:.1f} proc {p2 - p1:.1f} main {m2 - m1:.1f}")
