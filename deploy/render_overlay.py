#!/usr/bin/env python3
"""Render a kustomization offline, for checks where no kustomize binary exists.

    python3 deploy/render_overlay.py deploy/kubernetes/overlays/demo > demo.yaml

Implements only what this repository's kustomizations use, the same way
`kustomize build` does: `resources` (files and directories, depth first),
`namespace` (on namespaced kinds), `labels` (metadata only, includeSelectors
false), `images` (newName/newTag on containers of workloads) and
`configMapGenerator` with `files` and `disableNameSuffixHash: true`.
Any other key is an error, so the two can never silently disagree: use
`kubectl kustomize` or `kustomize build` for everything else (deploy/check.sh
prefers them when installed).
"""

import os
import sys

import yaml

SUPPORTED = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "labels",
    "images",
    "configMapGenerator",
}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
}


class RenderError(Exception):
    pass


def load_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def render(directory):
    path = os.path.join(directory, "kustomization.yaml")
    if not os.path.isfile(path):
        raise RenderError(f"{directory}: no kustomization.yaml")
    (k,) = load_docs(path)
    unknown = set(k) - SUPPORTED
    if unknown:
        raise RenderError(
            f"{path}: {sorted(unknown)} not supported here; use kustomize build"
        )
    objects = []
    for res in k.get("resources", []):
        target = os.path.normpath(os.path.join(directory, res))
        if os.path.isdir(target):
            objects.extend(render(target))
        elif os.path.isfile(target):
            objects.extend(load_docs(target))
        else:
            raise RenderError(f"{path}: resource {res!r} not found")
    for gen in k.get("configMapGenerator", []):
        objects.append(config_map(directory, path, gen))
    for label in k.get("labels", []):
        if label.get("includeSelectors") or label.get("includeTemplates"):
            raise RenderError(f"{path}: labels into selectors/templates not supported")
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(
                label["pairs"]
            )
    for image in k.get("images", []):
        set_image(objects, image)
    if "namespace" in k:
        for obj in objects:
            if obj.get("kind") not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = k["namespace"]
    return objects


def config_map(directory, path, gen):
    unknown = set(gen) - {"name", "files", "options"}
    options = gen.get("options", {})
    if unknown or set(options) - {"disableNameSuffixHash"}:
        raise RenderError(f"{path}: configMapGenerator {gen.get('name')}: unsupported keys")
    if options.get("disableNameSuffixHash") is not True:
        raise RenderError(
            f"{path}: configMapGenerator {gen['name']}: the name hash is not "
            "implemented here; set disableNameSuffixHash: true or use kustomize build"
        )
    data = {}
    for entry in gen.get("files", []):
        key, _, file = entry.partition("=") if "=" in entry else (None, "", entry)
        key = key or os.path.basename(file)
        with open(os.path.join(directory, file), encoding="utf-8") as f:
            data[key] = f.read()
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": gen["name"]},
        "data": data,
    }


def image_name(ref):
    """`repo/name:tag` or `name@sha256:...` -> `repo/name`."""
    ref = ref.split("@", 1)[0]
    last = ref.rsplit("/", 1)
    if ":" in last[-1]:
        ref = ref.rsplit(":", 1)[0]
    return ref


def set_image(objects, image):
    for obj in objects:
        spec = obj.get("spec", {})
        pod = spec.get("template", {}).get("spec") if "template" in spec else None
        if obj.get("kind") == "Pod":
            pod = spec
        if obj.get("kind") == "CronJob":
            pod = spec["jobTemplate"]["spec"]["template"]["spec"]
        if not pod:
            continue
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            if image_name(c["image"]) != image["name"]:
                continue
            name = image.get("newName", image["name"])
            if "newTag" in image:
                c["image"] = f"{name}:{image['newTag']}"
            elif image_name(c["image"]) != c["image"]:
                c["image"] = name + c["image"][len(image_name(c["image"])) :]
            else:
                c["image"] = name


def literal_blocks(dumper, value):
    """Multi-line strings (the embedded config) as `|` blocks, readable in the output."""
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} <kustomization directory>")
    try:
        objects = render(sys.argv[1])
    except (RenderError, OSError, yaml.YAMLError, KeyError) as e:
        sys.exit(f"render_overlay: {e}")
    yaml.SafeDumper.add_representer(str, literal_blocks)
    yaml.safe_dump_all(objects, sys.stdout, sort_keys=False, default_flow_style=False)


if __name__ == "__main__":
    main()
