"""Deployment files under infra/: they parse, agree with each other and with pyproject, and keep
credentials and root out. No docker and no cluster: static checks, plus the image's own sanity check
(the Dockerfile's `python -I -c "..."`, taken from it verbatim) run in this environment."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
DOCKERFILE = INFRA / "Dockerfile"
REQUIREMENTS = INFRA / "requirements-gpu.txt"
RAYCLUSTER = INFRA / "kuberay" / "raycluster.yaml"
RAYJOB = INFRA / "kuberay" / "rayjob.yaml"
LAUNCHER = INFRA / "aws" / "cluster.yaml"
YAML_FILES = sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml"))

CREDENTIAL_NAMES = {"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN"}
ACCESS_KEY_ID = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")
SECRET_ASSIGNMENT = re.compile(r"(?i)aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+]{20,}")
SECRETISH_ENV = re.compile(r"(?i)(SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL)")


# --------------------------------------------------------------------------- helpers
def load_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def load_one(path: Path, kind: str | None = None) -> dict[str, Any]:
    docs = [d for d in load_docs(path) if kind is None or d.get("kind") == kind]
    assert len(docs) == 1, f"{path.relative_to(ROOT)}: expected one {kind or 'document'}, found {len(docs)}"
    return docs[0]


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def requirement_pins() -> dict[str, Requirement]:
    pins: dict[str, Requirement] = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            pins[canonicalize_name(req.name)] = req
    return pins


def pinned_version(req: Requirement) -> Version:
    specs = list(req.specifier)
    assert len(specs) == 1 and specs[0].operator == "==", f"{req}: pin it with a single =="
    return Version(specs[0].version)


def pod_templates() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod template in the KubeRay manifests, named for test ids."""
    cluster = load_one(RAYCLUSTER, "RayCluster")["spec"]
    job = load_one(RAYJOB, "RayJob")["spec"]
    for prefix, spec in (("raycluster", cluster), ("rayjob", job["rayClusterSpec"])):
        yield f"{prefix}/head", spec["headGroupSpec"]["template"]
        for group in spec["workerGroupSpecs"]:
            yield f"{prefix}/{group['groupName']}", group["template"]
    if "submitterPodTemplate" in job:
        yield "rayjob/submitter", job["submitterPodTemplate"]


def cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    return [("raycluster", load_one(RAYCLUSTER, "RayCluster")["spec"]),
            ("rayjob", load_one(RAYJOB, "RayJob")["spec"]["rayClusterSpec"])]


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def quantity_bytes(q: str | int) -> int:
    """A Kubernetes memory quantity ("5Gi", "512Mi", "2000000000") in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    m = re.fullmatch(r"(\d+)([KMGT]i?)?", str(q))
    assert m, f"cannot read memory quantity {q!r}"
    return int(m.group(1)) * units.get(m.group(2) or "", 1)


def ray_floor() -> Version:
    for dep in pyproject()["project"]["dependencies"]:
        req = Requirement(dep)
        if canonicalize_name(req.name) == "ray":
            floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
            assert floors, f"pyproject's ray requirement {dep!r} has no floor"
            return max(floors)
    raise AssertionError("pyproject.toml does not depend on ray")


# --------------------------------------------------------------------------- every YAML
def test_infra_has_the_expected_files() -> None:
    for path in (DOCKERFILE, REQUIREMENTS, RAYCLUSTER, RAYJOB, LAUNCHER, INFRA / "SIZING.md", ROOT / ".dockerignore"):
        assert path.is_file(), f"missing {path.relative_to(ROOT)}"


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_yaml_parses(path: Path) -> None:
    docs = load_docs(path)
    assert docs and all(isinstance(d, dict) for d in docs), f"{path.name}: {docs!r:.200}"


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_kubernetes_objects_are_well_formed(path: Path) -> None:
    for doc in load_docs(path):
        if "kind" in doc:
            assert doc.get("apiVersion") in ("v1", "ray.io/v1"), f"{path.name}: apiVersion {doc.get('apiVersion')!r}"
            assert doc.get("metadata", {}).get("name"), f"{path.name}: {doc['kind']} without metadata.name"


# --------------------------------------------------------------------------- no credentials
@pytest.mark.parametrize("path", sorted(p for p in INFRA.rglob("*") if p.is_file()), ids=lambda p: str(p.relative_to(INFRA)))
def test_no_credentials_in_infra(path: Path) -> None:
    text = path.read_text(errors="replace")
    assert not ACCESS_KEY_ID.search(text), f"{path.name}: looks like an AWS access key id: {ACCESS_KEY_ID.search(text).group()}"
    assert not SECRET_ASSIGNMENT.search(text), f"{path.name}: assigns an AWS secret key"
    if path.suffix not in (".yaml", ".yml"):
        return
    for doc in load_docs(path):
        nodes = list(walk(doc))
        # runtimeEnvYAML is YAML inside a string: look inside it too
        for node in list(nodes):
            if isinstance(node, dict) and isinstance(node.get("runtimeEnvYAML"), str):
                nodes.extend(walk(yaml.safe_load(node["runtimeEnvYAML"])))
        for node in nodes:
            if not isinstance(node, dict):
                continue
            named = {str(k).upper() for k in node} & CREDENTIAL_NAMES
            assert not named, f"{path.name}: sets {sorted(named)}; credentials come from IRSA / instance roles"
            if str(node.get("name", "")).upper() in CREDENTIAL_NAMES:
                assert "value" not in node, f"{path.name}: env {node['name']} has a literal value; use a Secret or a role"


# --------------------------------------------------------------------------- Dockerfile
def test_dockerfile_runs_as_non_root() -> None:
    users = [args for ins, args in dockerfile_instructions() if ins == "USER"]
    assert users, "Dockerfile has no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"the image's final USER is {users[-1]!r}"
    assert user.isdigit(), f"USER {users[-1]!r}: use a numeric uid so Kubernetes runAsNonRoot can verify it"


def test_dockerfile_keeps_ray_startable() -> None:
    """KubeRay and the cluster launcher (`docker run IMAGE bash`) start Ray themselves."""
    entrypoints = [args for ins, args in dockerfile_instructions() if ins == "ENTRYPOINT"]
    assert not entrypoints, f"ENTRYPOINT {entrypoints} would break `docker run IMAGE bash` (cluster launcher)"


def test_dockerfile_bakes_in_no_secrets() -> None:
    for ins, args in dockerfile_instructions():
        if ins in ("ENV", "ARG"):
            assert not SECRETISH_ENV.search(args), f"{ins} {args}: secrets come at run time, not build time"
            assert not set(re.findall(r"[A-Z_]+", args)) & CREDENTIAL_NAMES, f"{ins} {args}"


def test_dockerfile_sets_a_writable_cache() -> None:
    ins = dockerfile_instructions()
    env = " ".join(args for i, args in ins if i == "ENV")
    m = re.search(r"POSEPIPE_CACHE=(\S+)", env)
    assert m, f"no ENV POSEPIPE_CACHE=... in the Dockerfile (ENV: {env})"
    cache = m.group(1)
    runs = " ".join(args for i, args in ins if i == "RUN")
    assert cache in runs and re.search(rf"chown\s+1000\S*\s+[^&]*{re.escape(cache)}", runs), \
        f"{cache} must be created and chowned to uid 1000 in a RUN step"
    assert re.search(r"HOME=\S+", env), "set HOME for the non-root user"


def test_dockerfile_installs_the_pinned_requirements_and_the_repo() -> None:
    ins = dockerfile_instructions()
    copies = [a for i, a in ins if i == "COPY"]
    assert any("infra/requirements-gpu.txt" in a for a in copies), copies
    assert any(re.search(r"(^|\s)\.\s+/app$", a) for a in copies), f"no `COPY . /app`: {copies}"
    runs = [a for i, a in ins if i == "RUN"]
    pip_runs = [r for r in runs if "pip install" in r and "-r" in r]
    assert pip_runs and all("download.pytorch.org/whl/cu" in r for r in pip_runs), \
        f"torch must come from PyTorch's CUDA index in every pip install: {pip_runs}"
    assert any(re.search(r"pip install .*/app(\s|$)", r) for r in runs), "the package itself is not installed"


def cuda_tags() -> dict[str, str]:
    """Where the image names its CUDA, each as a cuXYZ tag."""
    ins = dockerfile_instructions()
    found: dict[str, str] = {}
    for i, args in ins:
        if i == "FROM":
            m = re.search(r"-(cu\d+)$", args.split()[0])
            assert m, f"FROM {args}: expected a rayproject/ray:...-cuXYZ base"
            found["FROM"] = m.group(1)
        if i == "RUN":
            for tag in re.findall(r"download\.pytorch\.org/whl/(cu\d+)", args):
                found[f"RUN index {tag}"] = tag
    env = " ".join(a for i, a in ins if i == "ENV")
    m = re.search(r"POSEPIPE_IMAGE_CUDA=(\d+)\.(\d+)", env)
    assert m, f"no ENV POSEPIPE_IMAGE_CUDA=X.Y (the sanity check reads it): {env}"
    found["ENV POSEPIPE_IMAGE_CUDA"] = f"cu{m.group(1)}{m.group(2)}"
    found[f"{REQUIREMENTS.name} torch"] = str(pinned_version(requirement_pins()["torch"]).local)
    return found


def test_one_cuda_runtime() -> None:
    """The base's CUDA runtime is the one torch's wheel was built for (the Ray cu121 base once sat
    under a torch cu124: two runtimes, neither checked)."""
    found = cuda_tags()
    assert len(set(found.values())) == 1, f"the image names several CUDA versions: {json.dumps(found, indent=1)}"


def test_requirements_pin_torch_cuda_and_ray() -> None:
    pins = requirement_pins()
    torch = pinned_version(pins["torch"])
    assert torch.major == 2 and (torch.local or "").startswith("cu12"), f"torch pin {torch}: want 2.x+cu12x"
    assert "default" in pins["ray"].extras, f"{pins['ray']}: the head needs ray[default] (dashboard, job API)"
    pinned_version(pins["ray"])


def _on_the_image(req: Requirement) -> bool:
    """Whether a dependency applies to the image's Python 3.11 (tomli is for Pythons before 3.11)."""
    return req.marker is None or req.marker.evaluate({"python_version": "3.11", "platform_machine": "x86_64"})


def test_requirements_cover_and_satisfy_pyproject() -> None:
    pins = requirement_pins()
    declared = set()
    for dep in pyproject()["project"]["dependencies"]:
        req = Requirement(dep)
        if not _on_the_image(req):
            continue
        name = canonicalize_name(req.name)
        declared.add(name)
        assert name in pins, f"{req.name} is in pyproject but not pinned in {REQUIREMENTS.name}"
        version = pinned_version(pins[name])
        assert req.specifier.contains(version, prereleases=True), f"{pins[name]} does not satisfy pyproject's {dep}"
        assert req.extras <= pins[name].extras, f"{pins[name]}: pyproject asks for extras {sorted(req.extras)}"
    extra = sorted(set(pins) - declared)
    assert not extra, f"{REQUIREMENTS.name} pins {extra}, which pyproject's dependencies do not declare"


# --------------------------------------------------------------------------- the image's sanity check
# pyproject's distributions whose import name is not their name
IMPORT_NAMES = {"opencv-python-headless": "cv2", "pillow": "PIL", "smart-open": "smart_open"}


def sanity_command() -> tuple[str, list[str]]:
    """The Python the image runs after installing itself (`python -I -c "..."`), and the commands after it."""
    runs = [a for i, a in dockerfile_instructions() if i == "RUN" and "python -I -c" in a]
    assert len(runs) == 1, f"expected one RUN with the sanity check `python -I -c \"...\"`, found {len(runs)}"
    m = re.search(r'python -I -c "([^"]*)"(.*)$', runs[0])
    assert m, runs[0]
    after = [c.strip() for c in m.group(2).split("&&") if c.strip()]
    return m.group(1), after


def test_sanity_check_imports_the_package_by_its_names_and_every_dependency() -> None:
    code, after = sanity_command()
    imported = {name.strip() for stmt in code.split(";") if stmt.strip().startswith("import ")
                for name in stmt.strip()[len("import "):].split(",")}
    for package in ("posepipe.models", "posepipe.jobs.cli"):
        assert package in imported, f"the sanity check does not import {package}: {sorted(imported)}"
    assert any(n.startswith("posepipe.pipeline") for n in imported), sorted(imported)
    assert not imported & {"models", "pipeline", "jobs"}, "the package installs as posepipe.*, not top-level names"
    for dep in pyproject()["project"]["dependencies"]:
        if not _on_the_image(Requirement(dep)):
            continue
        name = canonicalize_name(Requirement(dep).name)
        module = IMPORT_NAMES.get(name, name.replace("-", "_"))
        assert module in imported, f"the sanity check does not import {module} (pyproject's {name})"
    assert any(c.startswith("posepipe ") for c in after), f"the CLI's entry point is not run: {after}"


def test_sanity_check_runs(tmp_path: Path) -> None:
    """The image's own check, verbatim, in this environment (told this environment's Ray and CUDA)."""
    import ray
    import torch

    code, after = sanity_command()
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSEPIPE_IMAGE_")}
    env.update(POSEPIPE_IMAGE_RAY=ray.__version__, POSEPIPE_IMAGE_CUDA=str(torch.version.cuda))
    done = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    # ... and it fails, saying what it found, when the image's Ray is not the one it names
    env["POSEPIPE_IMAGE_RAY"] = "0.0.0"
    wrong = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert wrong.returncode != 0 and ray.__version__ in wrong.stderr, wrong.stderr[-2000:]
    cli = Path(sys.executable).with_name("posepipe")
    for command in after:
        words = command.split(">")[0].split()
        assert words[0] == "posepipe", f"unexpected command after the sanity check: {command}"
        run = subprocess.run([str(cli), *words[1:]], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and "Usage" in run.stdout, run.stderr[-2000:]


# --------------------------------------------------------------------------- Ray version everywhere
def ray_versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for ins, args in dockerfile_instructions():
        if ins == "FROM":
            m = re.match(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d+)-cu(\d+)", args)
            assert m, f"FROM {args}: expected rayproject/ray:<version>-py311-cu12x"
            assert m.group(2) == "311" and m.group(3).startswith("12"), f"FROM {args}: want Python 3.11, CUDA 12"
            found["Dockerfile FROM"] = m.group(1)
        if ins == "ENV" and "POSEPIPE_IMAGE_RAY=" in args:
            found["Dockerfile ENV POSEPIPE_IMAGE_RAY"] = re.search(r"POSEPIPE_IMAGE_RAY=(\S+)", args).group(1)
    found[REQUIREMENTS.name] = str(pinned_version(requirement_pins()["ray"]))
    for name, spec in cluster_specs():
        found[f"{name} rayVersion"] = str(spec["rayVersion"])
    for path in YAML_FILES:
        for doc in load_docs(path):
            for node in walk(doc):
                if isinstance(node, dict) and isinstance(node.get("image"), str):
                    m = re.search(r"ray(\d+\.\d+\.\d+)", node["image"])
                    assert m, f"{path.name}: image {node['image']} does not name its Ray version"
                    found[f"{path.name} image {node['image']}"] = m.group(1)
    return found


def test_ray_version_agrees_everywhere_and_meets_pyproject() -> None:
    found = ray_versions()
    assert len(set(found.values())) == 1, f"Ray versions disagree: {json.dumps(found, indent=1)}"
    version = Version(next(iter(found.values())))
    assert version >= ray_floor(), f"Ray {version} is below pyproject's floor {ray_floor()}"


def test_one_image_everywhere() -> None:
    images = {node["image"] for path in YAML_FILES for doc in load_docs(path) for node in walk(doc)
              if isinstance(node, dict) and isinstance(node.get("image"), str)}
    assert len(images) == 1, f"the manifests name several images: {sorted(images)}"
    assert not any(i.endswith(":latest") or ":" not in i.rsplit("/", 1)[-1] for i in images), images


# --------------------------------------------------------------------------- KubeRay RayCluster / RayJob
@pytest.mark.parametrize("name", ["raycluster", "rayjob"])
def test_cluster_spec_shape(name: str) -> None:
    spec = dict(cluster_specs())[name]
    head = spec["headGroupSpec"]
    assert str(head["rayStartParams"].get("num-cpus")) == "0", f"{name}: head rayStartParams {head['rayStartParams']}"
    head_limits = head["template"]["spec"]["containers"][0]["resources"].get("limits", {})
    assert "nvidia.com/gpu" not in head_limits, f"{name}: the head asks for a GPU"
    groups = spec["workerGroupSpecs"]
    gpu_groups = [g for g in groups if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"].get("limits", {})]
    assert gpu_groups, f"{name}: no worker group has nvidia.com/gpu in its limits"
    for g in groups:
        assert g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"], f"{name}/{g['groupName']}: {g}"
        assert all(isinstance(v, str) for v in g.get("rayStartParams", {}).values()), \
            f"{name}/{g['groupName']}: rayStartParams values must be strings: {g.get('rayStartParams')}"
    for g in gpu_groups:
        pod = g["template"]["spec"]
        assert any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])), f"{name}/{g['groupName']}: no GPU toleration"
        res = pod["containers"][0]["resources"]
        assert res["limits"]["nvidia.com/gpu"] == res.get("requests", res["limits"]).get("nvidia.com/gpu"), res


def test_raycluster_autoscales_and_has_a_cpu_decode_group() -> None:
    spec = load_one(RAYCLUSTER, "RayCluster")["spec"]
    assert spec.get("enableInTreeAutoscaling") is True
    assert any(g["maxReplicas"] > g["minReplicas"] for g in spec["workerGroupSpecs"]), "no group can scale"
    cpu = [g for g in spec["workerGroupSpecs"] if "decode" in g.get("rayStartParams", {}).get("resources", "")]
    assert cpu, "no worker group advertises the custom `decode` resource"
    resources = json.loads(json.loads(cpu[0]["rayStartParams"]["resources"]))  # KubeRay's quoted-JSON form
    assert resources["decode"] > 0, resources


@pytest.mark.parametrize("name,template", list(pod_templates()), ids=[n for n, _ in pod_templates()])
def test_pods_run_as_non_root(name: str, template: dict[str, Any]) -> None:
    pod = template["spec"]
    pod_ctx = pod.get("securityContext", {})
    for c in pod["containers"]:
        ctx = {**pod_ctx, **c.get("securityContext", {})}
        assert ctx.get("runAsNonRoot") is True or ctx.get("runAsUser", 0) != 0, f"{name}/{c['name']}: {ctx}"
        assert ctx.get("runAsUser", 1000) == 1000, f"{name}/{c['name']}: runAsUser {ctx.get('runAsUser')} != the image's 1000"
        assert c.get("securityContext", {}).get("allowPrivilegeEscalation") is False, \
            f"{name}/{c['name']}: set allowPrivilegeEscalation: false (the base image grants sudo)"


@pytest.mark.parametrize("name,template", [t for t in pod_templates() if not t[0].endswith("submitter")],
                         ids=[n for n, _ in pod_templates() if not n.endswith("submitter")])
def test_object_store_fits_in_shm(name: str, template: dict[str, Any]) -> None:
    group = name.split("/")[1]
    spec = dict(cluster_specs())[name.split("/")[0]]
    params = spec["headGroupSpec"]["rayStartParams"] if group == "head" else \
        next(g for g in spec["workerGroupSpecs"] if g["groupName"] == group)["rayStartParams"]
    shm = next(v for v in template["spec"]["volumes"] if v["name"] == "shm")
    mount = next(m for c in template["spec"]["containers"] for m in c.get("volumeMounts", []) if m["name"] == "shm")
    assert mount["mountPath"] == "/dev/shm" and shm["emptyDir"].get("medium") == "Memory", shm
    store = int(params["object-store-memory"])
    assert store < quantity_bytes(shm["emptyDir"]["sizeLimit"]), f"{name}: object store {store} B > /dev/shm {shm}"
    limit = quantity_bytes(template["spec"]["containers"][0]["resources"]["limits"]["memory"])
    assert store < limit / 2, f"{name}: object store {store} B leaves too little of {limit} B to the workers"


def test_rayjob_runs_posepipe_and_cleans_up() -> None:
    job = load_one(RAYJOB, "RayJob")["spec"]
    entry = job["entrypoint"]
    assert entry.startswith("posepipe run "), entry
    assert re.search(r"--address\s+auto\b", entry) and "--output s3://" in entry, entry
    assert job["shutdownAfterJobFinishes"] is True
    assert isinstance(job["ttlSecondsAfterFinished"], int) and job["ttlSecondsAfterFinished"] >= 0
    assert job["submissionMode"] in ("K8sJobMode", "HTTPMode", "InteractiveMode"), job["submissionMode"]
    assert "rayClusterSpec" in job or "clusterSelector" in job
    env = yaml.safe_load(job["runtimeEnvYAML"])["env_vars"]
    assert env.get("POSEPIPE_CACHE"), env
    # posepipe's driver may forward AWS settings in its own ray.init(runtime_env=...): Ray refuses to
    # merge a key set twice unless told to.
    assert env.get("RAY_OVERRIDE_JOB_RUNTIME_ENV") == "1", env
    assert all(isinstance(v, str) for v in env.values()), f"env_vars values must be strings: {env}"


def test_rayjob_cluster_has_a_gpu_per_worker_from_the_start() -> None:
    """The planner sizes from the GPUs present at start, so the fixed GPU count must match --num-workers."""
    job = load_one(RAYJOB, "RayJob")["spec"]
    m = re.search(r"--num-workers\s+(\d+)", job["entrypoint"])
    assert m, job["entrypoint"]
    gpus = 0
    for g in job["rayClusterSpec"]["workerGroupSpecs"]:
        n = g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0)
        if n:
            assert g["minReplicas"] == g["replicas"], f"{g['groupName']}: start at full size ({g})"
            gpus += int(n) * g["replicas"]
    assert gpus >= 1 and int(m.group(1)) % gpus == 0, f"--num-workers {m.group(1)} on {gpus} GPUs"


def test_pods_use_the_irsa_service_account() -> None:
    sa = load_one(INFRA / "kuberay" / "serviceaccount.yaml", "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    for name, template in pod_templates():
        assert template["spec"].get("serviceAccountName") == sa["metadata"]["name"], name


# --------------------------------------------------------------------------- AWS cluster launcher
def test_launcher_config() -> None:
    cfg = load_one(LAUNCHER)
    assert cfg["provider"]["type"] == "aws" and cfg["provider"].get("region"), cfg["provider"]
    assert cfg["auth"]["ssh_user"] == "ubuntu"
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types, f"head_node_type {cfg['head_node_type']!r} not in {sorted(types)}"
    assert types[cfg["head_node_type"]]["resources"].get("CPU") == 0, "the head should advertise CPU 0"
    gpu_types = [n for n, t in types.items() if t.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu_types, f"no node type advertises GPU: {json.dumps({n: t.get('resources') for n, t in types.items()})}"
    for name, t in types.items():
        lo, hi = t.get("min_workers", 0), t.get("max_workers", 0)
        assert lo <= hi <= cfg["max_workers"], f"{name}: min {lo} / max {hi} vs cluster max_workers {cfg['max_workers']}"
        assert "Arn" in t["node_config"].get("IamInstanceProfile", {}), f"{name}: S3 access needs an IamInstanceProfile"
    for name in gpu_types:
        assert types[name]["resources"].get("CPU", 0) >= 1, f"{name}: workers need CPUs to decode"
    assert cfg["docker"]["image"] and cfg["docker"]["container_name"]
    assert isinstance(cfg.get("setup_commands"), list) and cfg.get("idle_timeout_minutes", 0) > 0


def test_launcher_config_matches_rays_schema() -> None:
    """Validate against the schema shipped with the installed Ray, when there is one (no network)."""
    jsonschema = pytest.importorskip("jsonschema")
    spec = find_spec("ray")
    schema_path = Path(spec.origin).parent / "autoscaler" / "ray-schema.json" if spec and spec.origin else None
    if schema_path is None or not schema_path.is_file():
        pytest.skip("ray's cluster-launcher schema is not installed")
    jsonschema.validate(load_one(LAUNCHER), json.loads(schema_path.read_text()))


# --------------------------------------------------------------------------- .dockerignore
def test_dockerignore_keeps_the_context_small_and_clean() -> None:
    patterns = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    for needed in (".git", ".venv", "out", "**/__pycache__", ".pytest_cache", "*.egg-info", ".env"):
        assert needed in patterns, f".dockerignore should exclude {needed}"
    for kept in ("models", "pipeline", "jobs", "pyproject.toml", "README.md", "infra"):
        assert kept not in patterns, f".dockerignore must not exclude {kept}: the image installs from it"
