"""The deployment files run as written.

- cluster/rayjob.yaml is valid against KubeRay's RayJob CRD, with the API server's pruning made
  strict: a field the schema does not know fails here, where the API server would drop it
  without a word;
- cluster/cluster.yaml locks its cluster: a token made on the head before Ray starts (mode
  600), copied to the workers, and required by every `ray start`; the dashboard off the network;
- the image, the manifests and the installed Ray name one Ray version;
- the test session itself runs Ray with token authentication on.
"""

from __future__ import annotations

import copy
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

from sssl_dist.config import load_config

REPO = Path(__file__).resolve().parents[1]
# KubeRay v1.7.0's RayJob CRD, version v1: its openAPIV3Schema unmodified, with where it came
# from (tag, commit, path, sha256) beside it.
SCHEMA_FILE = REPO / "tests/data/kuberay-v1.7.0-rayjob-schema.json"
# The extensions the conversion below understands; a vendored schema with any other fails
# test_schema_uses_only_understood_extensions instead of being half-checked.
_KNOWN_EXTENSIONS = {
    "x-kubernetes-preserve-unknown-fields",  # honoured: unknown fields kept
    "x-kubernetes-int-or-string",  # the CRD spells it out as anyOf integer/string too
    "x-kubernetes-list-type",  # list semantics for server-side apply: not about field names
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",  # CEL rules: not evaluated here
}


def _yaml(name: str) -> Any:
    return yaml.safe_load((REPO / "cluster" / name).read_text())


def strict(node: Any) -> Any:
    """The CRD schema as JSON Schema that refuses what the API server would prune.

    The rule of structural schemas: an object keeps only the fields its `properties` list,
    unless it sets x-kubernetes-preserve-unknown-fields (or describes a map with
    additionalProperties). So wherever an object lists properties, or lists none and is no map,
    unknown fields are refused here.
    """
    if isinstance(node, list):
        return [strict(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items() if k != "properties"}
    if "properties" in node:
        out["properties"] = {k: strict(v) for k, v in node["properties"].items()}
    is_object = node.get("type") == "object" or "properties" in node
    if (
        is_object
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def rayjob_validator() -> jsonschema.Draft4Validator:
    schema = strict(json.loads(SCHEMA_FILE.read_text())["openAPIV3Schema"])
    # The top-level metadata is an ObjectMeta: the API server checks it with its own schema,
    # not the CRD's (which says only "type: object").
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft4Validator(schema)


def _errors(manifest: Any) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in rayjob_validator().iter_errors(manifest)
    ]


def test_vendored_schema_is_kuberay_v1_7_0():
    doc = json.loads(SCHEMA_FILE.read_text())
    assert (doc["tag"], doc["path"]) == (
        "v1.7.0",
        "ray-operator/config/crd/bases/ray.io_rayjobs.yaml",
    )
    spec = doc["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert "authOptions" in spec["rayClusterSpec"]["properties"]


def test_schema_uses_only_understood_extensions():
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.update(k for k in node if k.startswith("x-kubernetes-"))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(SCHEMA_FILE.read_text())["openAPIV3Schema"])
    assert found <= _KNOWN_EXTENSIONS, found - _KNOWN_EXTENSIONS


def test_rayjob_is_valid_against_the_crd():
    assert _errors(_yaml("rayjob.yaml")) == []


def _set(manifest: dict, path: str, value: Any) -> dict:
    """A copy of manifest with the dotted path set (list indices as numbers)."""
    out = copy.deepcopy(manifest)
    *parents, last = path.split(".")
    node: Any = out
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[last] = value
    return out


def _rename(manifest: dict, path: str, new: str) -> dict:
    out = copy.deepcopy(manifest)
    *parents, last = path.split(".")
    node: Any = out
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[new] = node.pop(last)
    return out


HEAD = "spec.rayClusterSpec.headGroupSpec"
WORKER_CONTAINER = "spec.rayClusterSpec.workerGroupSpecs.0.template.spec.containers.0"


@pytest.mark.parametrize(
    "path,misspelled",
    [
        ("spec.shutdownAfterJobFinishes", "shutdownAfterJobFinished"),
        ("spec.rayClusterSpec.authOptions", "authOption"),
        ("spec.rayClusterSpec.authOptions.mode", "mod"),
        (f"{HEAD}.rayStartParams", "rayStartParam"),
        (f"{WORKER_CONTAINER}.volumeMounts", "volumeMount"),
        ("spec.rayClusterSpec.workerGroupSpecs.0.maxReplicas", "maxReplica"),
    ],
)
def test_a_misspelled_field_fails(path, misspelled):
    errors = _errors(_rename(_yaml("rayjob.yaml"), path, misspelled))
    assert any(repr(misspelled) in e and "not allowed" in e for e in errors), errors


def test_a_wrong_value_fails():
    job = _yaml("rayjob.yaml")
    assert _errors(_set(job, "spec.rayClusterSpec.authOptions.mode", "tokens"))
    assert _errors(_set(job, "spec.rayClusterSpec.workerGroupSpecs.0.replicas", "two"))


def _dockerfile_arg(name: str) -> str:
    return re.search(rf"^ARG {name}=(\S+)$", (REPO / "Dockerfile").read_text(), re.M).group(1)


def test_rayjob_runs_as_written():
    job = _yaml("rayjob.yaml")
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}
    # One Ray version: the installed one, the image's base, the manifests'.
    assert cluster["rayVersion"] == _dockerfile_arg("RAY_VERSION") == ray.__version__
    pin = f'"ray[train,tune,default]=={ray.__version__}"'
    assert any(pin in c for c in _yaml("cluster.yaml")["setup_commands"])
    # The image the README's `docker build` makes, not a placeholder.
    templates = [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]
    ]
    images = {c["image"] for t in templates for c in t["spec"]["containers"]}
    assert images == {"sssl-dist:0.1.0-gpu"}
    # --config names a config the installed package ships.
    config = re.search(r"--config (\S+)", job["spec"]["entrypoint"]).group(1)
    assert "/" not in config and load_config(config).backbone == "vgg16"
    # Every pod mounts the one claim that cluster/shared-pvc.yaml creates, ReadWriteMany.
    pvc = _yaml("shared-pvc.yaml")
    claims = {
        v["persistentVolumeClaim"]["claimName"] for t in templates for v in t["spec"]["volumes"]
    }
    assert claims == {pvc["metadata"]["name"]} and pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_dockerfile_build_context_holds_what_it_copies():
    text = (REPO / "Dockerfile").read_text()
    allowed = set((REPO / ".dockerignore").read_text().split())
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        *sources, _ = [p for p in line.split() if not p.startswith("--")]
        for src in sources:
            assert (REPO / src).exists(), src
            assert f"!{src}" in allowed or f"!{src}/" in allowed, f"{src} is not in the context"
    assert 'pip install -q . "ray[train,tune,default]==${RAY_VERSION}"' in text


def test_cluster_yaml_locks_the_cluster():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _yaml("cluster.yaml")
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` does first
    # The head makes the token in its setup, which runs before its start commands.
    assert any("ray get-auth-token --generate" in c for c in config["head_setup_commands"])
    assert config["cluster_synced_files"] == ["~/.ray/auth_token"]
    starts = [
        c
        for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"]
        if "ray start" in c
    ]
    assert len(starts) == 2 and all(c.startswith("RAY_AUTH_MODE=token ray start") for c in starts)
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start


def test_head_token_command_writes_mode_600_and_keeps_an_existing_token(tmp_path):
    (command,) = [c for c in _yaml("cluster.yaml")["head_setup_commands"] if "auth-token" in c]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(tmp_path), PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
    token = tmp_path / ".ray" / "auth_token"
    tokens = []
    for _ in range(2):
        proc = subprocess.run(
            ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        assert stat.S_IMODE(token.parent.stat().st_mode) == 0o700
        assert token.read_text() not in proc.stdout  # never printed into `ray up`'s log
        tokens.append(token.read_text())
    assert tokens[0] == tokens[1] and len(tokens[0]) == 64


def test_the_test_session_runs_ray_with_token_auth(ray_session):
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    assert is_token_auth_enabled()
    assert ray_session.cluster_resources()  # and the session's own calls carry the token
