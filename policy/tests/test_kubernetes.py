"""Kubernetes policies: typed resources and the manifests the program commits for Flux to apply."""

from __future__ import annotations

import pytest

from policy.gitops_policies.kubernetes import image_reference_problem
from policy.tests import resources as r
from policy.tests.cases import Case
from tools.policy_runner import analyze

FLANNEL_SPEC = r.pod_spec(
    r.container(
        "kube-flannel",
        image="ghcr.io/flannel-io/flannel:v0.27.4",
        securityContext={"privileged": False, "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}, "runAsNonRoot": None},
        resources={"limits": None},
    ),
    hostNetwork=True,
    securityContext=None,
    volumes=[{"name": "run", "hostPath": {"path": "/run/flannel"}}],
)

CASES = [
    # --- cluster-admin ---------------------------------------------------------------------
    Case(
        "k8s-no-cluster-admin-binding",
        "default-service-account-made-cluster-admin",
        bad=[r.binding("default-admin", "cluster-admin", [r.service_account("default", "default")])],
        expect="grants cluster-admin to ServiceAccount/default/default",
        good=[r.binding("default-view", "view", [r.service_account("default", "default")])],
    ),
    Case(
        "k8s-no-cluster-admin-binding",
        "role-binding-to-the-cluster-admin-cluster-role",
        bad=[
            r.binding(
                "alice-admin",
                "cluster-admin",
                [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}],
                kind="RoleBinding",
                namespace="default",
            )
        ],
        expect="to User/alice",
        good=[
            r.binding(
                "alice-edit",
                "edit",
                [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}],
                kind="RoleBinding",
                namespace="default",
            )
        ],
    ),
    Case(
        "k8s-no-cluster-admin-binding",
        "gitlab-admin-in-the-wrong-namespace",
        bad=[r.binding("gitlab-admin", "cluster-admin", [r.service_account("gitlab-admin", "default")])],
        expect="ServiceAccount/default/gitlab-admin",
        # The tutorial's integration account, and Flux's reconcilers, are allow-listed.
        good=[
            r.binding("gitlab-admin", "cluster-admin", [r.service_account("gitlab-admin", "kube-system")]),
            r.binding(
                "cluster-reconciler-flux-system",
                "cluster-admin",
                [
                    r.service_account("kustomize-controller", "flux-system"),
                    r.service_account("helm-controller", "flux-system"),
                ],
            ),
        ],
    ),
    Case(
        "k8s-no-cluster-admin-binding",
        "gitlab-agent-charts-own-binding",
        # GitLab's agent chart with rbac.create left on binds its own ServiceAccount to cluster-admin.
        bad=[
            r.binding(
                "kube-system:gitlab-agent-cluster-admin",
                "cluster-admin",
                [r.service_account("gitlab-agent", "kube-system")],
            )
        ],
        expect="grants cluster-admin to ServiceAccount/kube-system/gitlab-agent",
        # agentk runs as the tutorial's gitlab-admin instead (rbac.create false): allowed in agent mode too.
        good=[r.binding("gitlab-admin", "cluster-admin", [r.service_account("gitlab-admin", "kube-system")])],
    ),
    Case(
        "k8s-no-cluster-admin-binding",
        "binding-committed-to-the-app-repository",
        bad=[
            r.repository_file(
                "kubernetes/rbac.yml",
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: app-admin\n"
                "roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\n"
                "subjects:\n- kind: ServiceAccount\n  name: default\n  namespace: default\n",
            )
        ],
        expect="(file kubernetes/rbac.yml) grants cluster-admin",
        good=[r.repository_file("kubernetes/rbac.yml", "# no RBAC for the app\n"), r.application_settings(False)],
    ),
    # --- privileged containers -------------------------------------------------------------
    Case(
        "k8s-no-privileged-containers",
        "privileged-app-container",
        bad=[r.deployment(spec=r.pod_spec(r.container(securityContext={"privileged": True})))],
        expect="container shark-app is privileged",
        good=[r.deployment()],
    ),
    Case(
        "k8s-no-privileged-containers",
        "privilege-escalation-allowed",
        bad=[r.deployment(spec=r.pod_spec(r.container(securityContext={"allowPrivilegeEscalation": True})))],
        expect="allowPrivilegeEscalation: true",
        good=[r.deployment()],
    ),
    Case(
        "k8s-no-privileged-containers",
        "sys-admin-capability",
        bad=[r.deployment(spec=r.pod_spec(r.container(securityContext={"capabilities": {"add": ["SYS_ADMIN"]}})))],
        expect="adds SYS_ADMIN",
        # Flannel needs NET_ADMIN and the host network: kube-flannel is an exempt system namespace.
        good=[r.deployment(), r.daemon_set("kube-flannel-ds", "kube-flannel", FLANNEL_SPEC)],
    ),
    # --- host access -----------------------------------------------------------------------
    Case(
        "k8s-no-host-access",
        "app-on-the-host-network",
        bad=[r.deployment(spec=r.pod_spec(hostNetwork=True))],
        expect="sets hostNetwork: true",
        good=[r.deployment()],
    ),
    Case(
        "k8s-no-host-access",
        "docker-socket-mounted",
        bad=[r.deployment(spec=r.pod_spec(volumes=[{"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}}]))],
        expect="mounts hostPath /var/run/docker.sock",
        good=[r.deployment(spec=r.pod_spec(volumes=[{"name": "tmp", "emptyDir": {}}]))],
    ),
    Case(
        "k8s-no-host-access",
        "debug-pod-in-the-host-pid-namespace",
        bad=[r.pod("debug", r.pod_spec(hostPID=True))],
        expect="sets hostPID: true",
        good=[r.pod("debug", r.pod_spec())],
    ),
    # --- limits ----------------------------------------------------------------------------
    Case(
        "k8s-container-limits",
        "no-limits",
        bad=[r.deployment(spec=r.pod_spec(r.container(resources={"limits": None})))],
        expect="container shark-app has no cpu/memory limit",
        good=[r.deployment()],
    ),
    Case(
        "k8s-container-limits",
        "memory-but-no-cpu",
        bad=[r.deployment(spec=r.pod_spec(r.container(resources={"limits": {"cpu": None}})))],
        expect="has no cpu limit",
        good=[r.deployment()],
    ),
    Case(
        "k8s-container-limits",
        "unbounded-init-container",
        bad=[r.deployment(spec=r.pod_spec(initContainers=[r.container("migrate", resources=None)]))],
        expect="initContainer migrate has no cpu/memory limit",
        good=[r.deployment(spec=r.pod_spec(initContainers=[r.container("migrate")]))],
    ),
    # --- non-root --------------------------------------------------------------------------
    Case(
        "k8s-run-as-non-root",
        "root-by-default",
        bad=[r.deployment(spec=r.pod_spec(r.container(securityContext={"runAsNonRoot": None}), securityContext=None))],
        expect="does not set runAsNonRoot: true",
        good=[r.deployment(spec=r.pod_spec(r.container(securityContext={"runAsNonRoot": None})))],
    ),
    Case(
        "k8s-run-as-non-root",
        "container-overrides-the-pod",
        bad=[r.deployment(spec=r.pod_spec(r.container(securityContext={"runAsNonRoot": False})))],
        expect="does not set runAsNonRoot: true",
        good=[r.deployment()],
    ),
    Case(
        "k8s-run-as-non-root",
        "uid-zero",
        bad=[r.deployment(spec=r.pod_spec(r.container(securityContext={"runAsUser": 0})))],
        expect="sets runAsUser: 0",
        good=[r.deployment(spec=r.pod_spec(r.container(securityContext={"runAsUser": 1000})))],
    ),
    # --- images ----------------------------------------------------------------------------
    Case(
        "k8s-image-pinned",
        "nginx-latest",
        bad=[r.deployment("web", spec=r.pod_spec(r.container("web", image="nginx:latest")))],
        expect="nginx:latest uses the mutable tag :latest",
        good=[r.deployment("web", spec=r.pod_spec(r.container("web", image="nginx:1.27.3")))],
    ),
    Case(
        "k8s-image-pinned",
        "registry-image-without-tag",
        bad=[r.deployment(spec=r.pod_spec(r.container(image="gitlab.example.test:5050/operator/shark-application")))],
        expect="has no tag",
        good=[
            r.deployment(
                spec=r.pod_spec(
                    r.container(image="gitlab.example.test:5050/operator/shark-application@sha256:" + "ab" * 32)
                )
            )
        ],
    ),
    Case(
        "k8s-image-pinned",
        "manifest-in-git-with-latest",
        bad=[
            r.repository_file(
                "kubernetes/deployment.yml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shark-app\nspec:\n  template:\n    spec:\n"
                "      securityContext: {runAsNonRoot: true}\n      containers:\n      - name: shark-app\n"
                "        image: gitlab.example.test:5050/operator/shark-application:latest\n"
                "        resources: {limits: {cpu: 250m, memory: 128Mi}}\n",
            )
        ],
        expect="(file kubernetes/deployment.yml): container shark-app gitlab.example.test:5050/operator/shark-application:latest",
        good=[
            r.repository_file(
                "kubernetes/deployment.yml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shark-app\nspec:\n  template:\n    spec:\n"
                "      securityContext: {runAsNonRoot: true}\n      containers:\n      - name: shark-app\n"
                '        image: gitlab.example.test:5050/operator/shark-application:main # {"$imagepolicy": "flux:shark-app"}\n'
                "        resources: {limits: {cpu: 250m, memory: 128Mi}}\n",
            ),
            r.application_settings(False),
        ],
    ),
    # --- services --------------------------------------------------------------------------
    Case(
        "k8s-no-load-balancer-service",
        "load-balancer",
        bad=[r.service(service_type="LoadBalancer")],
        expect="Service default/shark-app is of type LoadBalancer",
        good=[r.service()],
    ),
]


def test_flannel_would_be_refused_outside_its_system_namespace() -> None:
    report = analyze([r.daemon_set("kube-flannel-ds", "default", FLANNEL_SPEC)])
    assert {v.policy for v in report.mandatory} >= {
        "k8s-no-privileged-containers",
        "k8s-no-host-access",
        "k8s-container-limits",
        "k8s-run-as-non-root",
    }


def test_an_exempt_workload_is_named_namespace_slash_name() -> None:
    workload = r.deployment("node-exporter", "monitoring", r.pod_spec(hostPID=True))
    assert analyze([workload]).of("k8s-no-host-access")
    config = {"k8s-no-host-access": {"exemptWorkloads": ["monitoring/node-exporter"]}}
    assert analyze([workload], config=config).of("k8s-no-host-access") == []


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("nginx", "no tag"),
        ("nginx:latest", "mutable tag"),
        ("docker.io/library/nginx:LATEST", "mutable tag"),
        ("gitlab.example.test:5050/group/app", "no tag"),
        ("gitlab.example.test:5050/group/app:1.0.0", None),
        ("ghcr.io/fluxcd/source-controller:v1.7.3", None),
        ("gitlab.example.test:5050/group/app@sha256:" + "0" * 64, None),
        ("app@md5:abc", "malformed digest"),
    ],
)
def test_image_references(image: str, problem: str | None) -> None:
    found = image_reference_problem(image, {"latest"})
    assert (found is None) if problem is None else (found is not None and problem in found)
