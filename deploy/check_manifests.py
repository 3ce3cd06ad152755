#!/usr/bin/env python3
"""Cross-check a rendered overlay where schema validation cannot see: that the
objects refer to each other correctly, and that the gateway's ConfigMap config
agrees with its Deployment.

    python3 deploy/check_manifests.py rendered.yaml OUT_DIR

Checks every error it can find and prints them all (exit 1), then writes the gateway
ConfigMap's files to OUT_DIR, plus OUT_DIR/secret-env: a placeholder value for each
`secret_env` / `token_env` variable the config reads (so `gateway check` can compile it).
"""

import os
import sys

import yaml

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}
GATEWAY = "gateway"  # the Deployment and its ConfigMap volume `config`
errors = []


def err(msg):
    errors.append(msg)


def name(o):
    return f"{o['kind']}/{o['metadata']['name']}"


def pods(objs):
    """(workload, pod template) of every workload."""
    return [(o, o["spec"]["template"]) for o in objs if o["kind"] in WORKLOADS]


def selects(selector, labels):
    if not selector:
        return False
    # a LabelSelector (matchLabels/matchExpressions), or a Service's plain map
    structured = "matchLabels" in selector or "matchExpressions" in selector
    match = selector.get("matchLabels", {}) if structured else selector
    ok = all(labels.get(k) == v for k, v in match.items())
    for e in selector.get("matchExpressions", []) if structured else []:
        if e["operator"] == "In":
            ok = ok and labels.get(e["key"]) in e["values"]
        else:
            err(f"matchExpressions operator {e['operator']} not checked here")
    return ok


def selected(objs, selector):
    return [
        (w, t)
        for w, t in pods(objs)
        if selects(selector, t["metadata"].get("labels", {}))
    ]


def port_names(template):
    return {
        p.get("name"): p["containerPort"]
        for c in template["spec"]["containers"]
        for p in c.get("ports", [])
    }


def check_services(objs):
    for s in (o for o in objs if o["kind"] == "Service"):
        targets = selected(objs, s["spec"].get("selector"))
        if not targets:
            err(f"{name(s)}: its selector matches no pod template")
        for w, t in targets:
            names = port_names(t)
            for p in s["spec"]["ports"]:
                tp = p.get("targetPort", p["port"])
                if tp not in names and tp not in names.values():
                    err(f"{name(s)}: targetPort {tp} is not a port of {name(w)}")


def check_references(objs):
    by_kind = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    for w, t in pods(objs):
        spec = t["spec"]
        for v in spec.get("volumes", []):
            if "configMap" in v and ("ConfigMap", v["configMap"]["name"]) not in by_kind:
                err(f"{name(w)}: volume {v['name']}: no ConfigMap {v['configMap']['name']}")
        for c in spec["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if not ref:
                    continue
                secret = by_kind.get(("Secret", ref["name"]))
                keys = set((secret or {}).get("stringData", {})) | set(
                    (secret or {}).get("data", {})
                )
                if ref["key"] not in keys:
                    err(f"{name(w)}: env {e['name']}: no key {ref['key']} in Secret {ref['name']}")
            names = port_names(t)
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if port is not None and port not in names and port not in names.values():
                    err(f"{name(w)}: {probe} port {port} is not a container port")
            check_hardening(w, spec, c)
    for o in objs:
        if o["kind"] == "HorizontalPodAutoscaler":
            ref = o["spec"]["scaleTargetRef"]
            target = by_kind.get((ref["kind"], ref["name"]))
            if not target:
                err(f"{name(o)}: no {ref['kind']} {ref['name']}")
            elif any(
                "cpu" not in c.get("resources", {}).get("requests", {})
                for c in target["spec"]["template"]["spec"]["containers"]
            ):
                err(f"{name(o)}: CPU utilization needs a CPU request on every container")
        if o["kind"] == "PodDisruptionBudget" and not selected(objs, o["spec"]["selector"]):
            err(f"{name(o)}: its selector matches no pod template")
        if o["kind"] == "NetworkPolicy":
            targets = selected(objs, o["spec"]["podSelector"])
            if not targets:
                err(f"{name(o)}: its podSelector matches no pod template")
            for rule in o["spec"].get("ingress", []):
                for p in rule.get("ports", []):
                    for w, t in targets:
                        names = port_names(t)
                        if p["port"] not in names and p["port"] not in names.values():
                            err(f"{name(o)}: port {p['port']} is not a port of {name(w)}")


def check_hardening(w, pod, c):
    psc, sc = pod.get("securityContext", {}), c.get("securityContext", {})
    where = f"{name(w)} container {c['name']}"
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        err(f"{where}: runAsNonRoot is not set")
    if (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        err(f"{where}: seccompProfile is not RuntimeDefault")
    if sc.get("allowPrivilegeEscalation") is not False:
        err(f"{where}: allowPrivilegeEscalation is not false")
    if sc.get("readOnlyRootFilesystem") is not True:
        err(f"{where}: readOnlyRootFilesystem is not true")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        err(f"{where}: capabilities are not dropped (drop: [ALL])")
    if "memory" not in c.get("resources", {}).get("limits", {}):
        err(f"{where}: no memory limit")


def host_port(address):
    return int(str(address).rsplit(":", 1)[1])


def check_gateway(objs, out_dir):
    deploy = next((o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == GATEWAY), None)
    if deploy is None:
        err(f"no Deployment {GATEWAY}")
        return
    pod = deploy["spec"]["template"]["spec"]
    (c,) = [c for c in pod["containers"] if c["name"] == GATEWAY]
    args = c.get("args", [])
    config_path = args[args.index("--config") + 1] if "--config" in args else None
    mount = next((m for m in c.get("volumeMounts", []) if m["name"] == "config"), None)
    volume = next((v for v in pod["volumes"] if v["name"] == "config"), None)
    if not (config_path and mount and volume and "configMap" in volume):
        err(f"{name(deploy)}: expected --config in args and a ConfigMap volume `config` mounted")
        return
    if "subPath" in mount:
        err(f"{name(deploy)}: the config is mounted with subPath: kubelet never updates it (no hot reload)")
    if os.path.dirname(config_path) != mount["mountPath"].rstrip("/"):
        err(f"{name(deploy)}: --config {config_path} is not in the mounted directory {mount['mountPath']}")
    cm = next((o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == volume["configMap"]["name"]), None)
    key = os.path.basename(config_path)
    if cm is None or key not in cm.get("data", {}):
        err(f"ConfigMap {volume['configMap']['name']}: no key {key}")
        return
    os.makedirs(out_dir, exist_ok=True)
    for k, v in cm["data"].items():
        with open(os.path.join(out_dir, k), "w", encoding="utf-8") as f:
            f.write(v)
    config = yaml.safe_load(cm["data"][key])

    ports = port_names({"spec": pod})
    listen = [host_port(l["address"]) for l in config.get("listeners", [])]
    if ports.get("http") not in listen:
        err(f"{name(deploy)}: containerPort http {ports.get('http')} is none of the config's listeners {listen}")
    admin = config.get("admin", {}).get("address", "127.0.0.1:9090")
    if str(admin).startswith("127.") or host_port(admin) != ports.get("admin"):
        err(f"{name(deploy)}: the probes need the admin API on 0.0.0.0:{ports.get('admin')}, the config has {admin}")
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        got = c.get(probe, {}).get("httpGet", {})
        if got.get("path") != path or got.get("port") not in ("admin", ports.get("admin")):
            err(f"{name(deploy)}: {probe} should be GET {path} on the admin port")

    env = {e["name"] for e in c.get("env", [])}
    needed = sorted(set(find_key(config, "secret_env")) | set(find_key(config, "token_env")))
    for var in needed:
        if var not in env:
            err(f"{name(deploy)}: the config reads {var} (secret_env, token_env) but the container has no such env var")
    with open(os.path.join(out_dir, "secret-env"), "w", encoding="utf-8") as f:
        for var in needed:
            f.write(f"{var}=placeholder-for-gateway-check-only\n")

    services = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
    for svc, spec in (config.get("services") or {}).items():
        d = spec.get("discovery") or {}
        if d.get("type") != "dns" or "host" not in d:
            continue
        short = d["host"].rstrip(".").split(".")[0]
        s = services.get(short)
        if s is None:
            err(f"config services.{svc}: no Service {short} for DNS name {d['host']}")
        elif s["spec"].get("clusterIP") != "None":
            err(f"Service {short}: not headless (clusterIP: None), so DNS gives one virtual IP, not the pods")
        elif d.get("port") not in [p["port"] for p in s["spec"]["ports"]]:
            err(f"config services.{svc}: port {d.get('port')} is not a port of Service {short}")

    for s in services.values():
        if any(p.get("targetPort") == "admin" for p in s["spec"]["ports"]) and s["spec"].get("type", "ClusterIP") != "ClusterIP":
            err(f"{name(s)}: exposes the admin port beyond the cluster (type {s['spec']['type']})")


def find_key(node, key):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key and isinstance(v, str):
                yield v
            else:
                yield from find_key(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from find_key(v, key)


def main():
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} RENDERED.yaml OUT_DIR")
    with open(sys.argv[1], encoding="utf-8") as f:
        objs = [o for o in yaml.safe_load_all(f) if o]
    check_services(objs)
    check_references(objs)
    check_gateway(objs, sys.argv[2])
    for e in errors:
        print(f"check_manifests: {e}", file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"check_manifests: {len(objs)} objects consistent")


if __name__ == "__main__":
    main()
