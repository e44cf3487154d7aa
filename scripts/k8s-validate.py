#!/usr/bin/env python3
"""Validates deploy/k8s offline; CI runs it (scripts/k8s-validate.sh installs what it needs).

- Every built-in resource is validated with kubernetes-validate in strict mode (unknown fields
  are errors) against the Kubernetes version given with --kubernetes-version.
- kubernetes-validate has no schema for a custom resource and would only warn: the
  RabbitmqCluster is checked here instead, against the RabbitMQ Cluster Operator's field names
  (listed below by hand from its API reference) and with its embedded Kubernetes types
  (resources, affinity, tolerations) validated by kubernetes-validate's schemas.
- The kustomizations list files that exist, and every manifest but secrets.example.yaml is in
  one of them, so `kubectl apply -k` deploys what was validated.
- The Deployments keep what docs/deployment.md ("Kubernetes") promises: probes on /readyz and /healthz, requests and
  limits, a non-root read-only container without capabilities, the broker URL and the API
  tokens from Secrets, a PodDisruptionBudget that selects their pods, and a NetworkPolicy that
  lets something in to them, behind one that denies everything else in the namespace.
- The Secrets that scripts/broker-users.py generates for a deployment are valid too, and the
  definitions the broker loads hold no administrator and no password.

Exit status 0 when everything passes; each problem is printed as `path: resource: message`.
"""

import argparse
import json
import pathlib
import re
import subprocess
import sys
import tempfile

try:
    import jsonschema
    import kubernetes_validate.utils as kv
    import yaml
except ImportError as missing:
    sys.exit(f"{missing}: run this with a Python that has kubernetes-validate "
             "(pip install kubernetes-validate; .ci/run keeps one in a virtualenv)")

ROOT = pathlib.Path(__file__).resolve().parent.parent
K8S_DIR = ROOT / "deploy" / "k8s"
NOT_APPLIED = {"secrets.example.yaml"}  # applied by hand, once: see its header

# RabbitmqCluster v1beta1 `spec` fields (RabbitMQ Cluster Operator 2.x API reference).
RABBITMQ_CLUSTER_SPEC = {
    "replicas", "image", "imagePullSecrets", "service", "persistence", "resources", "affinity",
    "tolerations", "terminationGracePeriodSeconds", "delayStartSeconds", "rabbitmq", "tls",
    "override", "skipPostDeploySteps", "autoEnableAllFeatureFlags", "secretBackend",
}
RABBITMQ_CLUSTER_SUBFIELDS = {
    "persistence": {"storageClassName", "storage"},
    "service": {"type", "annotations", "ipFamilyPolicy"},
    "rabbitmq": {"additionalPlugins", "additionalConfig", "advancedConfig", "envConfig",
                 "erlangInetConfig"},
}
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")


class Problems:
    def __init__(self):
        self.items = []

    def add(self, path, resource, message):
        self.items.append(f"{path}: {resource}: {message}")


def name_of(resource):
    return f"{resource.get('kind', '?')}/{(resource.get('metadata') or {}).get('name', '?')}"


def load(path):
    with open(path) as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def k8s_type_validator(version, definition):
    """A validator for one type of kubernetes-validate's strict definitions."""
    version = [v for v in kv.all_versions() if kv.major_minor(v) <= kv.major_minor(version)][-1]
    definitions = kv.schema_contents(
        f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version)
    schema = dict(definitions)
    schema["$ref"] = f"#/$defs/{definition}"
    return jsonschema.Draft202012Validator(schema)


def check_quantities(path, where, resources, problems):
    """kubernetes-validate takes any string for a quantity; the API server does not."""
    for kind in ("requests", "limits"):
        for what, value in ((resources or {}).get(kind) or {}).items():
            if not QUANTITY.match(str(value)):
                problems.add(path, where, f"resources.{kind}.{what} {value!r} is not a quantity")


def check_rabbitmq_cluster(path, resource, version, problems):
    name = name_of(resource)
    if resource.get("apiVersion") != "rabbitmq.com/v1beta1":
        problems.add(path, name, f"apiVersion {resource.get('apiVersion')}, expected rabbitmq.com/v1beta1")
    metadata = resource.get("metadata") or {}
    if not metadata.get("name") or not metadata.get("namespace"):
        problems.add(path, name, "metadata needs a name and a namespace")
    spec = resource.get("spec") or {}
    for key in sorted(set(spec) - RABBITMQ_CLUSTER_SPEC):
        problems.add(path, name, f"spec.{key} is not a RabbitmqCluster field")
    for key, allowed in RABBITMQ_CLUSTER_SUBFIELDS.items():
        for sub in sorted(set(spec.get(key) or {}) - allowed):
            problems.add(path, name, f"spec.{key}.{sub} is not a RabbitmqCluster field")
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or replicas < 3 or replicas % 2 == 0:
        problems.add(path, name, f"spec.replicas {replicas!r}: quorum queues need an odd number, at least 3")
    storage = (spec.get("persistence") or {}).get("storage")
    if storage is not None and not QUANTITY.match(str(storage)):
        problems.add(path, name, f"spec.persistence.storage {storage!r} is not a quantity")
    check_quantities(path, name, spec.get("resources"), problems)
    embedded = {
        "resources": "io.k8s.api.core.v1.ResourceRequirements",
        "affinity": "io.k8s.api.core.v1.Affinity",
    }
    for key, definition in embedded.items():
        if key in spec:
            for error in k8s_type_validator(version, definition).iter_errors(spec[key]):
                problems.add(path, name, f"spec.{key}: {error.message}")
    for i, toleration in enumerate(spec.get("tolerations") or []):
        validator = k8s_type_validator(version, "io.k8s.api.core.v1.Toleration")
        for error in validator.iter_errors(toleration):
            problems.add(path, name, f"spec.tolerations[{i}]: {error.message}")


def check_deployment(path, resource, budgets, policies, problems):
    name = name_of(resource)
    template = resource["spec"]["template"]
    pod = template["spec"]
    labels = template["metadata"].get("labels") or {}
    pod_security = pod.get("securityContext") or {}
    for container in pod["containers"]:
        where = f"{name} container {container['name']}"
        for probe, wanted in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            got = ((container.get(probe) or {}).get("httpGet") or {}).get("path")
            if got != wanted:
                problems.add(path, where, f"{probe} must GET {wanted} (has {got!r})")
        resources = container.get("resources") or {}
        check_quantities(path, where, resources, problems)
        for kind in ("requests", "limits"):
            for what in ("cpu", "memory"):
                if what not in (resources.get(kind) or {}):
                    problems.add(path, where, f"resources.{kind}.{what} is missing")
        security = container.get("securityContext") or {}
        if not (security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))):
            problems.add(path, where, "runAsNonRoot is not set")
        if security.get("runAsUser", pod_security.get("runAsUser")) != 10001:
            problems.add(path, where, "must run as uid 10001 (the image's user)")
        if security.get("readOnlyRootFilesystem") is not True:
            problems.add(path, where, "readOnlyRootFilesystem is not true")
        if security.get("allowPrivilegeEscalation") is not False:
            problems.add(path, where, "allowPrivilegeEscalation is not false")
        if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
            problems.add(path, where, "capabilities are not all dropped")
        env = {e["name"]: e for e in container.get("env") or []}
        for variable in ("CHOREO_AMQP_URL", "CHOREO_API_TOKENS"):
            reference = (env.get(variable, {}).get("valueFrom") or {}).get("secretKeyRef")
            if not reference:
                problems.add(path, where, f"{variable} must come from a Secret")
            elif reference.get("optional"):
                problems.add(path, where, f"{variable}'s Secret must not be optional")
    if not any(all(labels.get(k) == v for k, v in selector.items()) for selector in budgets):
        problems.add(path, name, "no PodDisruptionBudget selects its pods")
    if not any(selects(policy["spec"]["podSelector"], labels) and policy["spec"].get("ingress")
               for policy in policies):
        problems.add(path, name, "no NetworkPolicy lets anything in to its pods")


def selects(selector, labels):
    """Whether a label selector (matchLabels and In expressions) selects these labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        if expression["operator"] != "In" or labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def check_network_policies(policies, problems):
    denies = [p for p in policies
              if p["spec"].get("podSelector") == {}
              and set(p["spec"].get("policyTypes") or []) == {"Ingress", "Egress"}
              and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    if not denies:
        problems.add("network-policies.yaml", "NetworkPolicy",
                     "no policy denies all ingress and egress in the namespace by default")


def generated_secrets(problems):
    """The Secrets scripts/broker-users.py makes for a deployment, in a throwaway directory."""
    with tempfile.TemporaryDirectory() as directory:
        made = subprocess.run([sys.executable, str(ROOT / "scripts" / "broker-users.py"), "k8s", directory],
                              capture_output=True, text=True)
    if made.returncode != 0:
        problems.add("scripts/broker-users.py", "k8s", made.stderr.strip())
        return []
    secrets = [doc for doc in yaml.safe_load_all(made.stdout) if doc]
    names = {name_of(doc) for doc in secrets}
    wanted = {"Secret/choreo-rabbitmq-definitions", "Secret/choreo-api-tokens",
              "Secret/choreo-orders-broker", "Secret/choreo-billing-broker", "Secret/choreo-shipping-broker",
              "Secret/choreo-observer-broker"}
    if names != wanted:
        problems.add("scripts/broker-users.py", "k8s", f"makes {sorted(names)}, not {sorted(wanted)}")
    for doc in secrets:
        if doc.get("metadata", {}).get("name") == "choreo-rabbitmq-definitions":
            loaded = json.loads(doc["stringData"]["definitions.json"])
            for user in loaded["users"]:
                if not user.get("password_hash"):
                    problems.add("scripts/broker-users.py", "k8s", f"user {user['name']} has no password")
    return secrets


def check_definitions(problems):
    definitions = json.loads((ROOT / "deploy" / "rabbitmq" / "definitions.json").read_text())
    for user in definitions["users"]:
        if "administrator" in user.get("tags") or []:
            problems.add("deploy/rabbitmq/definitions.json", user["name"], "an administrator in the services' definitions")
        if user.get("password") or user.get("password_hash"):
            problems.add("deploy/rabbitmq/definitions.json", user["name"], "a password in the repository")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", action="append",
                        help="a Kubernetes version to validate against (repeatable; default: "
                             "1.29, the oldest still in common use, and the newest known)")
    args = parser.parse_args()
    versions = args.kubernetes_version or ["1.29.0", kv.latest_version()]
    problems = Problems()

    files = sorted(K8S_DIR.rglob("*.yaml"))
    listed = set()
    resources = []  # (path, resource)
    for path in files:
        relative = path.relative_to(K8S_DIR)
        docs = load(path)
        if path.name == "kustomization.yaml":
            for entry in docs[0].get("resources") or []:
                target = (path.parent / entry).resolve()
                if not target.is_file():
                    problems.add(relative, "Kustomization", f"lists {entry}, which does not exist")
                listed.add(target)
            continue
        if not docs:
            problems.add(relative, "-", "no resource in the file")
        resources += [(relative, doc) for doc in docs]

    for path in files:
        if path.name != "kustomization.yaml" and path.name not in NOT_APPLIED and path.resolve() not in listed:
            problems.add(path.relative_to(K8S_DIR), "-", "in no kustomization.yaml")

    budgets = [r["spec"]["selector"].get("matchLabels") or {}
               for _, r in resources if r.get("kind") == "PodDisruptionBudget"]
    policies = [r for _, r in resources if r.get("kind") == "NetworkPolicy"]
    check_network_policies(policies, problems)
    check_definitions(problems)
    resources += [(pathlib.Path("(scripts/broker-users.py k8s)"), doc) for doc in generated_secrets(problems)]
    counts = {}
    for path, resource in resources:
        kind = resource.get("kind", "?")
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "Deployment":
            check_deployment(path, resource, budgets, policies, problems)
        elif kind == "RabbitmqCluster":
            check_rabbitmq_cluster(path, resource, versions[0], problems)
    for version in versions:
        for path, resource in resources:
            if resource.get("kind") == "RabbitmqCluster":
                continue
            try:
                kv.validate(resource, version, strict=True)
            except kv.ValidationError as error:
                where = ".".join(str(p) for p in error.path)
                problems.add(path, name_of(resource), f"Kubernetes {error.version}: {where}: {error.message}")
            except kv.SchemaNotFoundError as error:
                problems.add(path, name_of(resource), error.message)

    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    if problems.items:
        print("\n".join(problems.items), file=sys.stderr)
        print(f"deploy/k8s: {len(problems.items)} problem(s) in {summary}", file=sys.stderr)
        return 1
    against = " and ".join(kv.major_minor(v) for v in versions)
    print(f"deploy/k8s: valid against Kubernetes {against}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
