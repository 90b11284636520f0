"""The one table of API groups served by kube-apiserver itself. Pure, no I/O.

A group in ``BUILTIN_GROUPS`` holds built-in types: the apiserver accepts strategic merge patches for
them, and the tailer does not track them by default. Any other group is a custom resource (a CRD) or an
aggregated API; a name ending in ``.k8s.io`` says nothing (``gateway.networking.k8s.io`` and
``snapshot.storage.k8s.io`` are CRDs, where a strategic merge patch is refused).
"""

from __future__ import annotations

from kube_audit.contract import API_GROUP

# As of Kubernetes 1.32, including groups since removed (extensions, settings.k8s.io) so that events
# from older clusters are read the same way.
BUILTIN_GROUPS = frozenset({
    "",  # core: pods, services, configmaps, secrets, ...
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "extensions",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "settings.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
})

# Aggregated APIs that are not custom resources and have nothing to track (read-only or virtual),
# this project's own API among them.
AGGREGATED_GROUPS = frozenset({
    "metrics.k8s.io",
    "custom.metrics.k8s.io",
    "external.metrics.k8s.io",
    API_GROUP,
})


def is_builtin_group(group: str) -> bool:
    """A group of built-in types (strategic merge patches apply)."""
    return group in BUILTIN_GROUPS


def is_custom_group(group: str) -> bool:
    """A group of custom resources: neither built in nor a known aggregated API."""
    return group not in BUILTIN_GROUPS and group not in AGGREGATED_GROUPS


# Built-in resources without a namespace (kubectl audit asks the API for them without one).
CLUSTER_SCOPED = frozenset({
    "nodes", "namespaces", "persistentvolumes", "clusterroles", "clusterrolebindings", "storageclasses",
    "customresourcedefinitions", "priorityclasses", "ingressclasses", "validatingwebhookconfigurations",
    "mutatingwebhookconfigurations", "validatingadmissionpolicies", "validatingadmissionpolicybindings",
    "apiservices", "certificatesigningrequests", "csidrivers", "csinodes", "runtimeclasses",
    "volumeattachments", "flowschemas", "prioritylevelconfigurations", "ipaddresses", "servicecidrs",
    "deviceclasses", "resourceslices", "clustertrustbundles", "tokenreviews", "selfsubjectreviews",
    "selfsubjectaccessreviews", "selfsubjectrulesreviews", "subjectaccessreviews", "componentstatuses",
    "storageversionmigrations", "storageversions", "volumeattributesclasses",
})


# Common built-in resources as kubectl names them: plural -> (group, kind, short names). kubectl audit
# resolves a name with this table when it talks to a tailer directly (--server, no discovery) and for
# a type the cluster's discovery no longer serves (its audit history outlives it).
COMMON_RESOURCES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "pods": ("", "Pod", ("po",)),
    "services": ("", "Service", ("svc",)),
    "configmaps": ("", "ConfigMap", ("cm",)),
    "secrets": ("", "Secret", ()),
    "namespaces": ("", "Namespace", ("ns",)),
    "nodes": ("", "Node", ("no",)),
    "serviceaccounts": ("", "ServiceAccount", ("sa",)),
    "persistentvolumes": ("", "PersistentVolume", ("pv",)),
    "persistentvolumeclaims": ("", "PersistentVolumeClaim", ("pvc",)),
    "endpoints": ("", "Endpoints", ("ep",)),
    "events": ("", "Event", ("ev",)),
    "limitranges": ("", "LimitRange", ("limits",)),
    "resourcequotas": ("", "ResourceQuota", ("quota",)),
    "replicationcontrollers": ("", "ReplicationController", ("rc",)),
    "deployments": ("apps", "Deployment", ("deploy",)),
    "replicasets": ("apps", "ReplicaSet", ("rs",)),
    "statefulsets": ("apps", "StatefulSet", ("sts",)),
    "daemonsets": ("apps", "DaemonSet", ("ds",)),
    "controllerrevisions": ("apps", "ControllerRevision", ()),
    "jobs": ("batch", "Job", ()),
    "cronjobs": ("batch", "CronJob", ("cj",)),
    "horizontalpodautoscalers": ("autoscaling", "HorizontalPodAutoscaler", ("hpa",)),
    "ingresses": ("networking.k8s.io", "Ingress", ("ing",)),
    "ingressclasses": ("networking.k8s.io", "IngressClass", ()),
    "networkpolicies": ("networking.k8s.io", "NetworkPolicy", ("netpol",)),
    "poddisruptionbudgets": ("policy", "PodDisruptionBudget", ("pdb",)),
    "roles": ("rbac.authorization.k8s.io", "Role", ()),
    "rolebindings": ("rbac.authorization.k8s.io", "RoleBinding", ()),
    "clusterroles": ("rbac.authorization.k8s.io", "ClusterRole", ()),
    "clusterrolebindings": ("rbac.authorization.k8s.io", "ClusterRoleBinding", ()),
    "storageclasses": ("storage.k8s.io", "StorageClass", ("sc",)),
    "customresourcedefinitions": ("apiextensions.k8s.io", "CustomResourceDefinition", ("crd", "crds")),
    "priorityclasses": ("scheduling.k8s.io", "PriorityClass", ("pc",)),
    "certificatesigningrequests": ("certificates.k8s.io", "CertificateSigningRequest", ("csr",)),
    "leases": ("coordination.k8s.io", "Lease", ()),
    "endpointslices": ("discovery.k8s.io", "EndpointSlice", ()),
    "validatingwebhookconfigurations": ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration", ()),
    "mutatingwebhookconfigurations": ("admissionregistration.k8s.io", "MutatingWebhookConfiguration", ()),
    "apiservices": ("apiregistration.k8s.io", "APIService", ()),
}


def common_resource(name: str) -> tuple[str, str] | None:
    """(plural, group) of a common built-in resource named like kubectl does: plural, singular, kind or
    short name, optionally with its group (``deployments.apps``, ``deploy``, ``Deployment``); None if
    the table does not know it."""
    word, _, group = name.lower().partition(".")
    for plural, (g, kind, short) in COMMON_RESOURCES.items():
        if (not group or group == g) and word in {plural, kind.lower(), *short}:
            return plural, g
    return None
