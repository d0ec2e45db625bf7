#!/usr/bin/env python3
"""deploy/kubernetes/ agrees with `egret serve`: the manifests are parsed (python3-yaml) and
their ports, probes, grace and model volume are checked against what the program itself says
its options come to (`egret serve ARGS --print-settings`), not against copied numbers.

    /usr/bin/python3 tests/test_deploy_manifests.py --egret build/egret

Each check is also run on altered copies of the manifests (a grace longer than the pod's
termination period, a probe on another port, ...), which must be caught.
"""
import argparse
import copy
import glob
import json
import os
import subprocess
import sys

try:
    import yaml
except ImportError:
    if os.path.exists("/usr/bin/python3") and not os.environ.get("EGRET_PY_REEXEC"):
        os.environ["EGRET_PY_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3", os.path.abspath(__file__)] +
                 sys.argv[1:])
    sys.exit("test_deploy_manifests.py: cannot import yaml; install python3-yaml "
             "(scripts/install-deps.sh)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFESTS = os.path.join(ROOT, "deploy/kubernetes")


def settings(egret, args):
    p = subprocess.run([egret, "serve"] + list(args) + ["--print-settings"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        return None, "egret serve %s: exit %d: %s" % (" ".join(args), p.returncode,
                                                       p.stderr.strip()[:300])
    return json.loads(p.stdout), None


def load(directory):
    docs = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    docs[doc["kind"]] = doc
    return docs


def subset(small, big):
    return bool(small) and all(big.get(k) == v for k, v in small.items())


def problems(docs, egret):
    """Everything in the manifests that disagrees with egret serve or with itself."""
    out = []
    for kind in ("Deployment", "Service", "PodDisruptionBudget"):
        if kind not in docs:
            out.append("no %s in deploy/kubernetes" % kind)
    if out:
        return out
    dep, svc, pdb = docs["Deployment"], docs["Service"], docs["PodDisruptionBudget"]
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    containers = [c for c in spec["containers"] if c.get("args", [None])[0] == "serve"]
    if len(containers) != 1:
        return ["want one container running `egret serve`, found %d" % len(containers)]
    c = containers[0]
    got, err = settings(egret, c["args"][1:])
    if err:
        return [err]
    defaults, err = settings(egret, [])
    if err:
        return [err]

    # ports
    host = got["listen"].rsplit(":", 1)[0]
    if host not in ("0.0.0.0", "[::]"):
        out.append("--listen %s: other pods cannot reach it (listen on 0.0.0.0)" % got["listen"])
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    if ports.get("grpc") != got["port"]:
        out.append("containerPort 'grpc' %s, egret listens on %s" % (ports.get("grpc"),
                                                                      got["port"]))
    if got["port"] != defaults["port"]:
        out.append("port %s is not egret's default %s (clients and docs assume it)" %
                   (got["port"], defaults["port"]))

    # probes: grpc.health.v1 on the port served
    for name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(name)
        if not probe or "grpc" not in probe:
            out.append("%s: want a grpc (grpc.health.v1) probe" % name)
            continue
        if probe["grpc"].get("port") != got["port"]:
            out.append("%s on port %s, egret serves %s" % (name, probe["grpc"].get("port"),
                                                          got["port"]))
        if probe["grpc"].get("service", "") not in ("", "egret.v1.Egret"):
            out.append("%s asks about service %r, which egret's health does not know" %
                       (name, probe["grpc"]["service"]))

    # drain: preStop wait + grace must end before the kubelet's SIGKILL
    pre = c.get("lifecycle", {}).get("preStop", {})
    wait = 0.0
    if "sleep" in pre:
        wait = float(pre["sleep"]["seconds"])
    elif "exec" in pre and pre["exec"]["command"][0].endswith("sleep"):
        wait = float(pre["exec"]["command"][1])
    term = spec.get("terminationGracePeriodSeconds", 30)
    if not term > wait + got["grace_s"]:
        out.append("terminationGracePeriodSeconds %s is not longer than preStop %g s + "
                   "--grace %g s" % (term, wait, got["grace_s"]))

    # GPU and the model from a volume
    gpus = int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
    if gpus < 1:
        out.append("no nvidia.com/gpu limit")
    volumes = {v["name"] for v in spec.get("volumes", [])}
    mounts = [m for m in c.get("volumeMounts", [])
              if m["name"] in volumes and
              (got["model"] + "/").startswith(m["mountPath"].rstrip("/") + "/")]
    if not mounts:
        out.append("the model folder %s is on no mounted volume" % got["model"])

    # selectors, the headless Service, the disruption budget
    if not subset(dep["spec"]["selector"]["matchLabels"], labels):
        out.append("the Deployment's selector does not match its pods")
    s = svc["spec"]
    if s.get("clusterIP") != "None":
        out.append("the Service is not headless (clusterIP: None)")
    if not subset(s.get("selector", {}), labels):
        out.append("the Service's selector does not match the pods")
    sports = {p.get("name"): p for p in s.get("ports", [])}
    if "grpc" not in sports:
        out.append("the Service has no port named grpc")
    else:
        sp = sports["grpc"]
        if sp["port"] != got["port"] or sp.get("targetPort", sp["port"]) not in ("grpc",
                                                                                 got["port"]):
            out.append("the Service's grpc port %s -> %s, egret serves %s" %
                       (sp["port"], sp.get("targetPort"), got["port"]))
    if not subset(pdb["spec"]["selector"]["matchLabels"], labels):
        out.append("the PodDisruptionBudget's selector does not match the pods")
    if "maxUnavailable" not in pdb["spec"] and "minAvailable" not in pdb["spec"]:
        out.append("the PodDisruptionBudget sets neither maxUnavailable nor minAvailable")
    return out


def altered(docs, change):
    d = copy.deepcopy(docs)
    change(d)
    return d


def container(d):
    return d["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def set_arg(d, name, value):
    args = container(d)["args"]
    args[args.index(name) + 1] = value


BREAKAGES = {
    "a grace longer than the termination period": lambda d: set_arg(d, "--grace", "600"),
    "a listen port the container does not expose": lambda d: set_arg(d, "--listen",
                                                                     "0.0.0.0:50052"),
    "a loopback listen address": lambda d: set_arg(d, "--listen", "127.0.0.1:50051"),
    "a readiness probe on another port":
        lambda d: container(d)["readinessProbe"]["grpc"].__setitem__("port", 8080),
    "an HTTP liveness probe":
        lambda d: container(d).__setitem__("livenessProbe", {"httpGet": {"port": 50051}}),
    "no GPU": lambda d: container(d)["resources"]["limits"].pop("nvidia.com/gpu"),
    "a model outside the volume": lambda d: set_arg(d, "--model", "/srv/idefics-9b"),
    "a Service with a cluster IP": lambda d: d["Service"]["spec"].pop("clusterIP"),
    "a bad option": lambda d: set_arg(d, "--grace", "soon"),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--egret", default=os.path.join(ROOT, "build/egret"))
    args = ap.parse_args()
    docs = load(MANIFESTS)
    failed = 0
    found = problems(docs, args.egret)
    for p in found:
        print("FAIL: deploy/kubernetes: " + p)
        failed += 1
    if found:  # the alterations assume manifests that pass
        return 1
    for name, change in BREAKAGES.items():
        if not problems(altered(docs, change), args.egret):
            print("FAIL: the check misses %s" % name)
            failed += 1
    print("%d problem(s); %d alterations caught" % (failed, len(BREAKAGES)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
