"""Kubernetes policies: least privilege for what runs in the cluster.

They apply to ``kubernetes:*`` resources the program (or a remote component such as
``kubernetes:yaml/v2:ConfigFile``, whose children the engine analyzes one by one) registers, and to
manifests the program commits to GitLab for Flux or the push pipeline to apply (``kubernetes/*.yml``
in a ``gitlab.RepositoryFile``), which the engine would otherwise never show a policy.

System workloads that need host access by design (Flannel's DaemonSet in ``kube-flannel``, the
control plane in ``kube-system``) are exempt by namespace; the lists are policy config.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pulumi_policy import Severity

from .common import (
    KubeObject,
    Subject,
    containers,
    get,
    has,
    items,
    kube_objects,
    resource_policy,
    string_list,
    truthy,
)

CLUSTER_ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding"
ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
SERVICE = "kubernetes:core/v1:Service"

_EXEMPT_NAMESPACES = string_list(
    "Namespaces of system workloads exempt from this policy (Flannel runs privileged on the host network).",
    ["kube-system", "kube-flannel"],
)
_EXEMPT_WORKLOADS = string_list('Individual workloads exempt from this policy, as "namespace/name".', [])


def _workloads(subject: Subject) -> Iterator[tuple[KubeObject, Mapping[str, Any]]]:
    """(object, pod spec) of every non-exempt workload behind the resource."""
    exempt_namespaces = set(subject.config.get("exemptNamespaces", []))
    exempt_workloads = set(subject.config.get("exemptWorkloads", []))
    for obj in kube_objects(subject.resource_type, subject.props):
        spec = obj.pod_spec()
        if spec is None:
            continue
        if obj.namespace in exempt_namespaces or f"{obj.namespace}/{obj.name}" in exempt_workloads:
            continue
        yield obj, spec


# --------------------------------------------------------------------------------------------
# RBAC
# --------------------------------------------------------------------------------------------
def _subject_id(entry: Mapping[str, Any], binding_namespace: str) -> str:
    kind = str(get(entry, "kind", default=""))
    name = str(get(entry, "name", default=""))
    if kind == "ServiceAccount":
        return f"ServiceAccount/{get(entry, 'namespace', default=binding_namespace)}/{name}"
    return f"{kind}/{name}"


@resource_policy(
    name="k8s-no-cluster-admin-binding",
    description="Nothing is bound to cluster-admin but the allow-listed subjects: gitlab-admin (the identity GitLab "
    "acts as in both integrations: agentk runs as it, or the certificate-based cluster uses its token) and Flux's "
    "reconcilers (they apply the repository). GitLab's agent chart's own binding is not allowed.",
    remediation="bind a Role/ClusterRole with the verbs the subject needs; if cluster-admin is truly required, "
    'add "ServiceAccount/<namespace>/<name>" to allowedSubjects in policy/config.<stack>.json with the reason.',
    resource_types=None,
    config={
        "adminRoles": string_list("ClusterRoles that grant full control.", ["cluster-admin"]),
        "allowedSubjects": string_list(
            'Subjects allowed to hold them: "ServiceAccount/<ns>/<name>", "User/<name>" or "Group/<name>".',
            [
                # GitLab acts as this account: agentk runs as it (agent mode, the chart's own RBAC off),
                # or the certificate-based cluster uses its token (certificate mode). REFERENCE §5.
                "ServiceAccount/kube-system/gitlab-admin",
                # Flux's install.yaml binds cluster-admin to these (ClusterRoleBinding
                # cluster-reconciler-flux-system); the controllers run in flux-system (components/flux.py).
                "ServiceAccount/flux-system/kustomize-controller",
                "ServiceAccount/flux-system/helm-controller",
            ],
        ),
    },
    severity=Severity.CRITICAL,
)
def no_cluster_admin_binding(subject: Subject) -> Iterator[str]:
    admin_roles = set(subject.config["adminRoles"])
    allowed = set(subject.config["allowedSubjects"])
    for obj in kube_objects(subject.resource_type, subject.props):
        if obj.kind not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        role = get(obj.body, "roleRef")
        if get(role, "kind") != "ClusterRole" or get(role, "name") not in admin_roles:
            continue
        for entry in items(get(obj.body, "subjects")):
            identity = _subject_id(entry, obj.namespace)
            if identity not in allowed:
                yield f"{obj.label} grants {get(role, 'name')} to {identity}."


# --------------------------------------------------------------------------------------------
# Pods
# --------------------------------------------------------------------------------------------
_DANGEROUS_CAPABILITIES = {"ALL", "SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "SYS_MODULE", "DAC_READ_SEARCH"}


@resource_policy(
    name="k8s-no-privileged-containers",
    description="No container runs privileged, allows privilege escalation or adds host-level capabilities, "
    "except allow-listed system workloads.",
    remediation="drop privileged/allowPrivilegeEscalation (set allowPrivilegeEscalation: false and "
    "capabilities.drop: [ALL]); exempt a system workload by namespace only if it needs the host.",
    resource_types=None,
    config={"exemptNamespaces": _EXEMPT_NAMESPACES, "exemptWorkloads": _EXEMPT_WORKLOADS},
    severity=Severity.CRITICAL,
)
def no_privileged_containers(subject: Subject) -> Iterator[str]:
    for obj, spec in _workloads(subject):
        for label, container in containers(spec):
            context = get(container, "securityContext", default={})
            if truthy(get(context, "privileged")):
                yield f"{obj.label}: {label} is privileged."
            if truthy(get(context, "allowPrivilegeEscalation")):
                yield f"{obj.label}: {label} sets allowPrivilegeEscalation: true."
            added = {str(c).upper() for c in items(get(context, "capabilities", "add"))}
            if added & _DANGEROUS_CAPABILITIES:
                yield f"{obj.label}: {label} adds {', '.join(sorted(added & _DANGEROUS_CAPABILITIES))}."


@resource_policy(
    name="k8s-no-host-access",
    description="No pod uses the host's network, PID or IPC namespace or mounts a hostPath volume, except "
    "allow-listed system workloads.",
    remediation="use a Service/ConfigMap/emptyDir/PersistentVolume instead of host access; exempt a system "
    "workload by namespace in policy config only if it must manage the node.",
    resource_types=None,
    config={"exemptNamespaces": _EXEMPT_NAMESPACES, "exemptWorkloads": _EXEMPT_WORKLOADS},
    severity=Severity.CRITICAL,
)
def no_host_access(subject: Subject) -> Iterator[str]:
    for obj, spec in _workloads(subject):
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            if truthy(get(spec, field)):
                yield f"{obj.label} sets {field}: true."
        for volume in items(get(spec, "volumes")):
            if has(volume, "hostPath"):
                yield f"{obj.label} mounts hostPath {get(volume, 'hostPath', 'path', default='?')} (volume {get(volume, 'name')})."


@resource_policy(
    name="k8s-container-limits",
    description="Every container declares resource limits (cpu and memory), so one workload cannot starve a node.",
    remediation="set resources.limits (and requests) on every container, e.g. limits: {cpu: 250m, memory: 128Mi}.",
    resource_types=None,
    config={
        "requiredLimits": string_list("Resources every container must limit.", ["cpu", "memory"]),
        "exemptNamespaces": _EXEMPT_NAMESPACES,
        "exemptWorkloads": _EXEMPT_WORKLOADS,
    },
    severity=Severity.MEDIUM,
)
def container_limits(subject: Subject) -> Iterator[str]:
    required = list(subject.config["requiredLimits"])
    for obj, spec in _workloads(subject):
        for label, container in containers(spec):
            if label.startswith("ephemeralContainer"):
                continue  # debug containers take no resources field
            limits = get(container, "resources", "limits", default={})
            missing = [name for name in required if not has(limits, name)]
            if missing:
                yield f"{obj.label}: {label} has no {'/'.join(missing)} limit."


@resource_policy(
    name="k8s-run-as-non-root",
    description="Every container runs as non-root: runAsNonRoot true on the pod or the container, never runAsUser 0.",
    remediation="set securityContext.runAsNonRoot: true and a non-zero runAsUser on the pod spec (the image "
    "must have a numeric non-root USER, as apps/shark-app's Dockerfile does).",
    resource_types=None,
    config={"exemptNamespaces": _EXEMPT_NAMESPACES, "exemptWorkloads": _EXEMPT_WORKLOADS},
    severity=Severity.HIGH,
)
def run_as_non_root(subject: Subject) -> Iterator[str]:
    for obj, spec in _workloads(subject):
        pod_context = get(spec, "securityContext", default={})
        for label, container in containers(spec):
            context = get(container, "securityContext", default={})
            non_root = get(context, "runAsNonRoot")
            if non_root is None:
                non_root = get(pod_context, "runAsNonRoot")
            user = get(context, "runAsUser")
            if user is None:
                user = get(pod_context, "runAsUser")
            if non_root is not True:
                yield f"{obj.label}: {label} does not set runAsNonRoot: true (pod or container)."
            elif user is not None and int(float(user)) == 0:
                yield f"{obj.label}: {label} sets runAsUser: 0."


def image_reference_problem(image: str, forbidden_tags: set[str]) -> str | None:
    """Why an image reference is not pinned, or None (pure function).

    ``name@sha256:...`` is pinned; ``name:tag`` is pinned unless the tag is forbidden (latest). The tag
    is what follows the last ':' of the last path component, so a registry port (host:5050/app) is
    not mistaken for a tag.
    """
    if "@" in image:
        return None if image.split("@", 1)[1].startswith("sha256:") else f"{image} has a malformed digest"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"{image} has no tag (it means :latest)"
    tag = last.rsplit(":", 1)[1]
    if tag.lower() in forbidden_tags:
        return f"{image} uses the mutable tag :{tag}"
    return None


@resource_policy(
    name="k8s-image-pinned",
    description="Every container image is pinned: a tag other than latest, or a digest.",
    remediation="reference an immutable tag (the pipeline pushes the commit SHA / the release version) or "
    "name@sha256:<digest>.",
    resource_types=None,
    config={"forbiddenTags": string_list("Tags that never pin an image.", ["latest"])},
    severity=Severity.HIGH,
)
def image_pinned(subject: Subject) -> Iterator[str]:
    forbidden = {tag.lower() for tag in subject.config["forbiddenTags"]}
    for obj in kube_objects(subject.resource_type, subject.props):
        spec = obj.pod_spec()
        if spec is None:
            continue
        for label, container in containers(spec):
            image = get(container, "image")
            if not isinstance(image, str) or not image:
                yield f"{obj.label}: {label} names no image."
                continue
            problem = image_reference_problem(image, forbidden)
            if problem:
                yield f"{obj.label}: {label} {problem}."


@resource_policy(
    name="k8s-no-load-balancer-service",
    description="No Service of type LoadBalancer: the app is served on its NodePort behind the workers' "
    "security group (appCidrs), not on a cloud load balancer outside it.",
    remediation="use type NodePort (as the tutorial's shark-app Service does) and open the port through appCidrs.",
    resource_types=None,
    severity=Severity.MEDIUM,
)
def no_load_balancer_service(subject: Subject) -> Iterator[str]:
    for obj in kube_objects(subject.resource_type, subject.props):
        if obj.kind == "Service" and get(obj.body, "spec", "type") == "LoadBalancer":
            yield f"{obj.label} is of type LoadBalancer."


POLICIES = [
    no_cluster_admin_binding,
    no_privileged_containers,
    no_host_access,
    container_limits,
    run_as_non_root,
    image_pinned,
    no_load_balancer_service,
]
