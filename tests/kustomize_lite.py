"""Just enough of `kustomize build` to render deploy/kubernetes/ in a test.

No kubectl or kustomize binary is installed where the tests run, and the
point is to validate what a cluster would receive, so this renders the
features the manifests use, the way kustomize defines them: resources
(files and directories), namespace, nameSuffix (with the ConfigMap
references of pod specs renamed along), labels (with includeSelectors),
configMapGenerator (files, literals, behavior create/replace, a content
hash suffix), JSON 6902 patches with a kind/name target, and images.
A kustomization using anything else fails here, loudly, rather than being
rendered wrongly.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

SUPPORTED = {"apiVersion", "kind", "namespace", "resources", "nameSuffix", "labels", "configMapGenerator", "patches", "images"}


class Unsupported(Exception):
    pass


def _pod_spec(obj: dict) -> dict | None:
    if obj.get("kind") in ("DaemonSet", "Deployment", "StatefulSet", "Job"):
        return obj["spec"]["template"]["spec"]
    if obj.get("kind") == "Pod":
        return obj["spec"]
    return None


def _containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def _rename_configmap_refs(obj: dict, old: str, new: str) -> None:
    spec = _pod_spec(obj)
    if spec is None:
        return
    for v in spec.get("volumes") or []:
        if "configMap" in v and v["configMap"].get("name") == old:
            v["configMap"]["name"] = new
    for c in _containers(spec):
        for e in c.get("envFrom") or []:
            if "configMapRef" in e and e["configMapRef"].get("name") == old:
                e["configMapRef"]["name"] = new
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
            if ref and ref.get("name") == old:
                ref["name"] = new


def _pointer(doc, path: str):
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]
    parent = doc
    for p in parts[:-1]:
        parent = parent[int(p)] if isinstance(parent, list) else parent[p]
    return parent, parts[-1]


def _json6902(doc: dict, ops: list[dict]) -> None:
    for op in ops:
        parent, key = _pointer(doc, op["path"])
        if isinstance(parent, list):
            i = len(parent) if key == "-" else int(key)
            if op["op"] == "add":
                parent.insert(i, op["value"])
            elif op["op"] == "replace":
                parent[i] = op["value"]
            elif op["op"] == "remove":
                del parent[i]
            else:
                raise Unsupported(op["op"])
        else:
            if op["op"] in ("add", "replace"):
                if op["op"] == "replace" and key not in parent:
                    raise KeyError(f"replace of a missing {op['path']}")
                parent[key] = op["value"]
            elif op["op"] == "remove":
                del parent[key]
            else:
                raise Unsupported(op["op"])


def _generate(base: Path, gen: dict) -> dict:
    data: dict[str, str] = {}
    for f in gen.get("files") or []:
        key, _, name = f.rpartition("=") if "=" in f else (Path(f).name, "", f)
        data[key or Path(name).name] = (base / name).read_text()
    for lit in gen.get("literals") or []:
        k, _, v = lit.partition("=")
        data[k] = v
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data}


def _hash(cm: dict) -> str:
    return hashlib.sha256(json.dumps(cm["data"], sort_keys=True).encode()).hexdigest()[:10]


def build(path: Path) -> list[dict]:
    """The objects `kustomize build path` gives (names of generated
    ConfigMaps carry a content hash, as kustomize's do, not the same one)."""
    out, generated = _build(Path(path))
    # hash suffixes last, as kustomize does, with references following
    for cm in [o for o in out if id(o) in generated]:
        old = cm["metadata"]["name"]
        new = f"{old}-{_hash(cm)}"
        cm["metadata"]["name"] = new
        for o in out:
            _rename_configmap_refs(o, old, new)
    return out


def _build(path: Path) -> tuple[list[dict], set[int]]:
    if path.is_file():
        return [d for d in yaml.safe_load_all(path.read_text()) if d], set()
    k = yaml.safe_load((path / "kustomization.yaml").read_text())
    unknown = set(k) - SUPPORTED
    if unknown:
        raise Unsupported(f"{path}: kustomization fields this renderer does not know: {sorted(unknown)}")
    objs: list[dict] = []
    generated: set[int] = set()
    for r in k.get("resources") or []:
        sub, gen = _build(path / r)
        objs += sub
        generated |= gen
    for g in k.get("configMapGenerator") or []:
        cm = _generate(path, g)
        behavior = g.get("behavior", "create")
        if behavior == "create":
            objs.append(cm)
            generated.add(id(cm))
        elif behavior == "replace":
            (target,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == g["name"]]
            target["data"] = cm["data"]
        else:
            raise Unsupported(f"configMapGenerator behavior {behavior}")
    for p in k.get("patches") or []:
        t = p["target"]
        hits = [o for o in objs if o["kind"] == t["kind"] and o["metadata"]["name"] == t["name"]]
        if not hits:
            raise KeyError(f"{path}: patch target {t} matches nothing")
        for o in hits:
            _json6902(o, yaml.safe_load(p["patch"]))
    for img in k.get("images") or []:
        for o in objs:
            spec = _pod_spec(o)
            for c in _containers(spec) if spec else []:
                if c["image"].split(":")[0] == img["name"]:
                    c["image"] = f"{img.get('newName', img['name'])}:{img['newTag']}"
    for lab in k.get("labels") or []:
        for o in objs:
            o["metadata"].setdefault("labels", {}).update(lab["pairs"])
            if lab.get("includeSelectors") and _pod_spec(o) is not None and o["kind"] != "Pod":
                o["spec"]["selector"]["matchLabels"].update(lab["pairs"])
                o["spec"]["template"]["metadata"].setdefault("labels", {}).update(lab["pairs"])
    if "nameSuffix" in k:
        sfx = k["nameSuffix"]
        for o in objs:
            if o["kind"] == "Namespace":
                continue
            old = o["metadata"]["name"]
            o["metadata"]["name"] = old + sfx
            if o["kind"] == "ConfigMap":
                for other in objs:
                    _rename_configmap_refs(other, old, old + sfx)
    if "namespace" in k:
        for o in objs:
            if o["kind"] != "Namespace":
                o["metadata"]["namespace"] = k["namespace"]
    return objs, generated
