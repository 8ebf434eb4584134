# ruff: noqa: E402 - one-off probes: imports follow ray.init and sys.path set-up on purpose
import time

import ray

ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
from sssl_dist.outputs.predict import SegmentPredictor


@ray.remote(num_cpus=1)
def burn(s):
    t = time.perf_counter()
    while time.perf_counter() - t < s:
        pass


for busy in (False, True):
    refs = [burn.remote(15) for _ in range(2)] if busy else []
    time.sleep(1.0 if busy else 0)
    t0 = time.perf_counter()
    a = (
        ray.remote(SegmentPredictor)
        .options(num_cpus=0)
        .remote(["/tmp/prof/model.sssl"], ["m"], False, 1)
    )
    ray.get(a.__ray_ready__.remote())
    print("busy" if busy else "idle", "actor ready in", round(time.perf_counter() - t0, 1))
    ray.kill(a)
    ray.get(refs)
