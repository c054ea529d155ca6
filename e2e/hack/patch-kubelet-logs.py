#!/usr/bin/env python3
"""Lets several kubelets share one machine: the kubelet v1.20 hard-codes /var/log/pods
and /var/log/containers, and each kubelet's container GC deletes the log directories of
pods it does not know, that is, of every other node's pods. With this patch the
directories come from KUBELET_POD_LOGS_DIR and KUBELET_CONTAINER_LOGS_DIR (defaults
unchanged), and the testbed gives each node its own.
"""
import pathlib
import sys

root = pathlib.Path(sys.argv[1]) / "pkg/kubelet"
MARK = "etcd-pilot testbed"


def patch(path, old, new):
    src = path.read_text()
    if MARK in src:
        return
    if old not in src:
        sys.exit(f"kubelet-logs: {path} is not the v1.20.2 this patch expects")
    path.write_text(src.replace(old, new))


patch(
    root / "kuberuntime/kuberuntime_manager.go",
    """	// The root directory for pod logs
	podLogsRootDirectory = "/var/log/pods"
""",
    "",
)
src = (root / "kuberuntime/kuberuntime_manager.go").read_text()
if MARK not in src:
    src = src.replace(
        "\nconst (\n\t// The api version of kubelet runtime api",
        """
// The root directory for pod logs; from KUBELET_POD_LOGS_DIR for the etcd-pilot testbed,
// where several kubelets share one machine.
var podLogsRootDirectory = envOrDefault("KUBELET_POD_LOGS_DIR", "/var/log/pods")

func envOrDefault(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}

const (
	// The api version of kubelet runtime api""",
        1,
    )
    (root / "kuberuntime/kuberuntime_manager.go").write_text(src)

patch(
    root / "kuberuntime/legacy.go",
    """const (
	// legacyContainerLogsDir is the legacy location of container logs. It is the same with
	// kubelet.containerLogsDir.
	legacyContainerLogsDir = "/var/log/containers"
""",
    """// legacyContainerLogsDir: from KUBELET_CONTAINER_LOGS_DIR for the etcd-pilot testbed.
var legacyContainerLogsDir = envOrDefault("KUBELET_CONTAINER_LOGS_DIR", "/var/log/containers")

const (
""",
)
patch(
    root / "kubelet.go",
    """	// ContainerLogsDir is the location of container logs.
	ContainerLogsDir = "/var/log/containers"
""",
    "",
)
src = (root / "kubelet.go").read_text()
if MARK not in src:
    src = src.replace(
        "\nconst (\n\t// Max amount of time to wait for the container runtime to come up.",
        """
// ContainerLogsDir is the location of container logs; from KUBELET_CONTAINER_LOGS_DIR for
// the etcd-pilot testbed, where several kubelets share one machine.
var ContainerLogsDir = func() string {
	if v := os.Getenv("KUBELET_CONTAINER_LOGS_DIR"); v != "" {
		return v
	}
	return "/var/log/containers"
}()

const (
	// Max amount of time to wait for the container runtime to come up.""",
        1,
    )
    if MARK not in src:
        sys.exit("kubelet-logs: kubelet.go const block not found")
    (root / "kubelet.go").write_text(src)
print("kubelet: log directories configurable")
