"""deploy/kubernetes/ against the Kubernetes API schemas, offline.

kubernetes-validate bundles the OpenAPI schemas of each Kubernetes
release; every object is validated strictly (unknown fields are errors)
for the release pinned here, both as written and as `kustomize build`
renders the whole tree (tests/kustomize_lite.py). Then what the schemas
cannot say: the DaemonSets have what pepc needs on a node, the pools
select disjoint nodes, git-sync feeds the path pepc watches, and every
pepc.yaml in a ConfigMap is one pepc loads.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from kustomize_lite import build

ROOT = Path(__file__).resolve().parent.parent
KDIR = ROOT / "deploy" / "kubernetes"
#: the oldest Kubernetes release the manifests promise to fit
K8S_VERSION = "1.30.0"


def manifest_files() -> list[Path]:
    return sorted(p for p in KDIR.rglob("*.yaml") if p.name != "kustomization.yaml" and p.name != "pepc.yaml")


def validate(obj: dict) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(KDIR)))
def test_every_manifest_as_written(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for d in docs:
        validate(d)


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return build(KDIR)


def test_the_rendered_tree_validates(rendered):
    kinds = sorted(o["kind"] for o in rendered)
    assert kinds == ["ConfigMap"] * 4 + ["DaemonSet"] * 2 + ["Namespace"]
    for o in rendered:
        validate(o)
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == "pepc-system"


def daemonsets(rendered) -> list[dict]:
    return [o for o in rendered if o["kind"] == "DaemonSet"]


def container(ds: dict, name: str) -> dict:
    (c,) = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return c


def test_daemonsets_have_what_pepc_needs_on_a_node(rendered):
    for ds in daemonsets(rendered):
        spec = ds["spec"]["template"]["spec"]
        assert spec["hostNetwork"] is True
        pepc = container(ds, "pepc")
        caps = pepc["securityContext"]["capabilities"]
        assert set(caps["add"]) == {"BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN"} and caps["drop"] == ["ALL"]
        assert pepc["securityContext"].get("privileged") is not True
        mounts = {m["mountPath"]: m["name"] for m in pepc["volumeMounts"]}
        vols = {v["name"]: v for v in spec["volumes"]}
        assert vols[mounts["/sys/fs/bpf"]]["hostPath"]["path"] == "/sys/fs/bpf"
        assert vols[mounts["/run/pepc"]]["hostPath"]["path"] == "/run/pepc"
        assert vols[mounts["/var/lib/pepc"]]["hostPath"]["path"] == "/var/lib/pepc"
        assert pepc["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert pepc["readinessProbe"]["httpGet"]["path"] == "/readyz"
        port = {p["name"]: p["containerPort"] for p in pepc["ports"]}["metrics"]
        ann = ds["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == str(port)
        assert f"$(NODE_IP):{port}" in pepc["args"]
        # the config pepc reads is the pool's ConfigMap
        cm = vols[mounts["/etc/pepc"]]["configMap"]["name"]
        assert cm in {o["metadata"]["name"] for o in rendered if o["kind"] == "ConfigMap"}


def test_git_sync_feeds_the_path_pepc_watches(rendered):
    for ds in daemonsets(rendered):
        spec = ds["spec"]["template"]["spec"]
        sync = container(ds, "git-sync")
        init = [c for c in spec["initContainers"] if c["name"] == "git-sync-init"][0]
        for c in (sync, init):
            repo, _, tag = c["image"].rpartition(":")
            assert repo == "registry.k8s.io/git-sync/git-sync" and tag.startswith("v4.")
        env = {e["name"]: e["value"] for e in sync["env"]}
        pepc = container(ds, "pepc")
        watched = pepc["args"][pepc["args"].index("watch") + 1]
        assert watched.startswith(f"{env['GITSYNC_ROOT']}/{env['GITSYNC_LINK']}/")
        git_mount = lambda c: {m["name"]: m for m in c["volumeMounts"]}["git"]  # noqa: E731
        assert git_mount(pepc)["mountPath"] == git_mount(sync)["mountPath"] == env["GITSYNC_ROOT"]
        assert git_mount(pepc).get("readOnly") is True
        assert {v["name"]: v for v in spec["volumes"]}["git"].get("emptyDir") is not None
        # GITSYNC_REPO and the rest come from the pool's ConfigMap
        (ref,) = sync["envFrom"]
        cms = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "ConfigMap"}
        assert "GITSYNC_REPO" in cms[ref["configMapRef"]["name"]]["data"]


def test_pools_select_disjoint_nodes(rendered):
    """Every combination of pool labels lands exactly one DaemonSet."""

    def selects(ds: dict, labels: dict) -> bool:
        terms = ds["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        for t in terms:
            ok = True
            for e in t["matchExpressions"]:
                v = labels.get(e["key"])
                ok &= {
                    "In": v in e.get("values", []), "NotIn": v not in e.get("values", []),
                    "Exists": v is not None, "DoesNotExist": v is None,
                }[e["operator"]]
            if ok:
                return True
        return False

    sets = daemonsets(rendered)
    for pool in (None, "edge"):
        labels = {"kubernetes.io/os": "linux", **({"pepc.io/pool": pool} if pool else {})}
        assert sum(selects(ds, labels) for ds in sets) == 1, pool
    selectors = [tuple(sorted(ds["spec"]["selector"]["matchLabels"].items())) for ds in sets]
    assert len(set(selectors)) == len(selectors)  # no DaemonSet adopts another's pods
    for ds in sets:
        assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()


def test_every_pool_config_is_one_pepc_loads(rendered, tmp_path):
    from pepc.loader import load_config

    configs = [o for o in rendered if o["kind"] == "ConfigMap" and "pepc.yaml" in o["data"]]
    assert len(configs) == 2
    for cm in configs:
        f = tmp_path / f"{cm['metadata']['name']}.yaml"
        f.write_text(cm["data"]["pepc.yaml"])
        cfg = load_config(str(f), None)
        assert cfg.state_dir == "/var/lib/pepc" and cfg.pin_root == "/sys/fs/bpf/pepc" and cfg.interfaces
