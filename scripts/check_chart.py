#!/usr/bin/env python3
"""Lints and renders charts/etcd-operator with a real Helm engine (the helm-sdkpy package).

helm-sdkpy has no `helm template`, so rendering is an `Install` against a minimal in-process
fake apiserver on 127.0.0.1: it serves discovery, answers reads with 404, and records every
object Helm creates. Those objects are what Helm rendered; they are written, one file per
values set, to target/chart/ for the Rust test `chart::rendered_chart_is_kubernetes_objects`,
which parses each into its k8s-openapi type.
"""

import asyncio
import json
import os
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import helm_sdkpy as helm
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "etcd-operator"
OUT = Path(os.environ.get("RENDERED_CHART_DIR", ROOT / "target" / "chart"))

# (group/version, [(resource, kind, namespaced)]) the fake apiserver advertises.
RESOURCES = {
    "v1": [("namespaces", "Namespace", False), ("serviceaccounts", "ServiceAccount", True),
           ("services", "Service", True), ("secrets", "Secret", True),
           ("configmaps", "ConfigMap", True)],
    "apps/v1": [("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True)],
    "rbac.authorization.k8s.io/v1": [("clusterroles", "ClusterRole", False),
                                     ("clusterrolebindings", "ClusterRoleBinding", False),
                                     ("roles", "Role", True), ("rolebindings", "RoleBinding", True)],
    "apiextensions.k8s.io/v1": [("customresourcedefinitions", "CustomResourceDefinition", False)],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor", True)],
    "etcd.rustops.dev/v1alpha1": [("etcdclusters", "EtcdCluster", True)],
}

# Values sets to render: the defaults, and every optional part switched on.
VALUE_SETS = {
    "defaults": {},
    "everything": {
        "replicaCount": 3,
        "image": {"repository": "registry.example/etcd-operator", "tag": "test", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "pull"}],
        "serviceAccount": {"create": True, "name": "custom"},
        "leaderElection": {"enabled": True},
        "logFormat": "text",
        "metricsPort": 9090,
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
        "podAnnotations": {"note": "hello"},
        "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prom"}},
    },
}


class FakeApiserver(BaseHTTPRequestHandler):
    """Just enough of an apiserver for `helm install`."""

    created = []  # bodies of every create, in order
    objects = {}  # path -> object

    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def not_found(self):
        self.reply(404, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                         "reason": "NotFound", "code": 404, "message": "not found"})

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/version":
            return self.reply(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"})
        if path == "/api":
            return self.reply(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        if path == "/apis":
            groups = []
            for gv in RESOURCES:
                if "/" in gv:
                    g, v = gv.split("/")
                    groups.append({"name": g, "versions": [{"groupVersion": gv, "version": v}],
                                   "preferredVersion": {"groupVersion": gv, "version": v}})
            return self.reply(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        for gv, resources in RESOURCES.items():
            prefix = "/api/v1" if gv == "v1" else f"/apis/{gv}"
            if path == prefix:
                return self.reply(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
                    {"name": r, "singularName": k.lower(), "kind": k, "namespaced": ns,
                     "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                    for r, k, ns in resources]})
        if path in self.objects:
            return self.reply(200, self.objects[path])
        plurals = {r for resources in RESOURCES.values() for r, _, _ in resources}
        if path.rsplit("/", 1)[-1] in plurals:
            # A list (Helm checks for existing releases and objects): empty.
            return self.reply(200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []})
        return self.not_found()

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_POST(self):
        raw = self.read_body()
        if "protobuf" in self.headers.get("Content-Type", ""):
            # Helm's release record (a Secret, through the typed client): not a chart object.
            name = self.path.split("?")[0].rsplit("/", 1)[-1]
            return self.reply(201, {"kind": "Secret", "apiVersion": "v1",
                                    "metadata": {"name": name, "namespace": "etcd-operator", "resourceVersion": "1"}})
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            print(f"fake apiserver: non-JSON body for {self.path}: {self.headers}", file=sys.stderr)
            raise
        meta = body.setdefault("metadata", {})
        meta.setdefault("uid", "00000000-0000-0000-0000-%012d" % len(self.created))
        meta.setdefault("resourceVersion", "1")
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        if body.get("kind") == "CustomResourceDefinition":
            body["status"] = {"conditions": [
                {"type": "Established", "status": "True"}, {"type": "NamesAccepted", "status": "True"}],
                "acceptedNames": body["spec"]["names"]}
        path = self.path.split("?")[0].rstrip("/") + "/" + meta.get("name", "")
        self.objects[path] = body
        type(self).created.append(body)
        self.reply(201, body)

    do_PUT = do_POST

    def do_PATCH(self):
        path = self.path.split("?")[0]
        if path in self.objects:
            return self.reply(200, self.objects[path])
        return self.not_found()

    def do_DELETE(self):
        self.reply(200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}})


def kubeconfig(port):
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "fake", "user": {"token": "fake"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "etcd-operator"}}],
    })


async def render(port, name, values):
    FakeApiserver.created = []
    FakeApiserver.objects = {}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(kubeconfig(port))
    config = helm.Configuration(namespace="etcd-operator", kubeconfig=f.name)
    await helm.Install(config).run("etcd-operator", str(CHART), values=values, wait=False, timeout=60)
    os.unlink(f.name)
    # Helm also stores the release (a Secret); only the chart's objects are checked.
    docs = [o for o in FakeApiserver.created if o.get("kind") != "Secret"]
    for o in docs:
        for k in ("uid", "resourceVersion", "creationTimestamp"):
            o["metadata"].pop(k, None)
        o.pop("status", None)
    return docs


def main():
    os.environ.setdefault("HELM_DRIVER", "memory")
    lint = asyncio.run(helm.Lint(helm.Configuration()).run(str(CHART)))
    errors = [m for m in lint.get("Messages") or [] if m.get("Severity", 0) >= 2]
    if lint.get("Errors") or errors:
        print(f"helm lint failed: {json.dumps(lint, indent=1)}", file=sys.stderr)
        return 1
    print("helm lint: ok")

    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApiserver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        for name, values in VALUE_SETS.items():
            docs = asyncio.run(render(server.server_address[1], name, values))
            kinds = sorted(d["kind"] for d in docs)
            (OUT / f"{name}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
            print(f"helm render ({name}): {', '.join(kinds)}")
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
