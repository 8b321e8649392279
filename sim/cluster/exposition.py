"""Prometheus text exposition (format 0.0.4) of the twin's metrics: what node-exporter (plus virt-handler's
per-VM metrics) would serve for one node, and what kube-state-metrics serves for the nodes.

Why it exists: the descheduler's recording rules (deploy/prometheus/descheduler-rules.yaml) read
node-exporter's and kube-state-metrics' series by name and label, so the twin must use the same ones:

node endpoint (`/nodes/<node>/metrics`, scraped with instance=<node>):
    node_cpu_seconds_total{cpu,mode}                   counter, per CPU, modes as node-exporter's
    node_memory_MemTotal_bytes, node_memory_MemAvailable_bytes            gauges
    node_pressure_{cpu,memory,io}_waiting_seconds_total                   counters: PSI "some"
    node_pressure_{memory,io}_stalled_seconds_total                       counters: PSI "full"
    kubevirt_vmi_cpu_usage_seconds_total{name,namespace,node}             counter per VM on the node
    kubevirt_vmi_memory_used_bytes, kubevirt_vmi_memory_domain_bytes      gauges per VM
kube-state-metrics endpoint:
    kube_node_info, kube_node_role{node,role}, kube_node_status_capacity / _allocatable{node,resource,unit},
    kube_node_status_condition{node,condition,status}, kube_node_spec_unschedulable, kube_node_spec_taint
Pure functions: the exporter (exporter.py) serves their output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sim.cluster.psi import CPU_MODES
from sim.cluster.state_view import NodeInfo
from sim.cluster.telemetry_state import Counters, NodeSample, VmSample

ROLE_PREFIX = "node-role.kubernetes.io/"
PRESSURE_HELP = {
    "cpu_waiting": "Total time in seconds that processes have waited for CPU time",
    "memory_waiting": "Total time in seconds that processes have waited for memory",
    "memory_stalled": "Total time in seconds no process could make progress due to memory congestion",
    "io_waiting": "Total time in seconds that processes have waited due to IO congestion",
    "io_stalled": "Total time in seconds no process could make progress due to IO congestion",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _num(value: float) -> str:
    return repr(float(value))


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Mapping[str, str], float]]) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        self.lines += [f"{name}{_labels(labels)} {_num(value)}" for labels, value in samples]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_node(node: NodeSample, counters: Counters, vms: Sequence[VmSample]) -> str:
    """One node's endpoint: node-exporter's series, then the per-VM series of the VMs it runs."""
    out = _Text()
    modes = counters.cpu.get(node.name, dict.fromkeys(CPU_MODES, 0.0))
    out.family(
        "node_cpu_seconds_total",
        "counter",
        "Seconds the CPUs spent in each mode.",
        (({"cpu": str(cpu), "mode": mode}, modes[mode]) for cpu in range(node.cpus) for mode in CPU_MODES),
    )
    out.family(
        "node_memory_MemAvailable_bytes",
        "gauge",
        "Memory information field MemAvailable_bytes.",
        [({}, node.pressure.memory_available_bytes)],
    )
    out.family(
        "node_memory_MemTotal_bytes", "gauge", "Memory information field MemTotal_bytes.", [({}, node.memory_total)]
    )
    pressure = counters.pressure.get(node.name, {})
    for counter, help_text in PRESSURE_HELP.items():
        out.family(f"node_pressure_{counter}_seconds_total", "counter", help_text, [({}, pressure.get(counter, 0.0))])
    mine = [vm for vm in vms if vm.node == node.name]

    def vm_labels(vm: VmSample) -> dict[str, str]:
        return {"name": vm.name, "namespace": vm.namespace, "node": vm.node}

    out.family(
        "kubevirt_vmi_cpu_usage_seconds_total",
        "counter",
        "Total CPU time spent in all modes (sum of both vcpu and hypervisor usage).",
        ((vm_labels(vm), counters.vm_cpu.get((vm.namespace, vm.name, vm.node), 0.0)) for vm in mine),
    )
    out.family(
        "kubevirt_vmi_memory_used_bytes",
        "gauge",
        "Amount of `used` memory as seen by the domain.",
        ((vm_labels(vm), vm.memory_used) for vm in mine),
    )
    out.family(
        "kubevirt_vmi_memory_domain_bytes",
        "gauge",
        "The amount of memory in bytes allocated to the domain.",
        ((vm_labels(vm), float(vm.memory_domain)) for vm in mine),
    )
    return out.text()


def render_kube_state(nodes: Sequence[NodeInfo]) -> str:
    """kube-state-metrics' node series, which the recording rules join on (`label_replace(..., "instance", ...)`)."""
    out = _Text()
    out.family("kube_node_info", "gauge", "Information about a cluster node.", (({"node": n.name}, 1) for n in nodes))
    roles = [
        ({"node": n.name, "role": key[len(ROLE_PREFIX) :]}, 1.0)
        for n in nodes
        for key in sorted(n.labels)
        if key.startswith(ROLE_PREFIX) and key != ROLE_PREFIX
    ]
    out.family("kube_node_role", "gauge", "The role of a cluster node.", roles)
    for what, cpu, mem in (
        ("capacity", lambda n: n.cpu_millis, lambda n: n.memory_bytes),
        ("allocatable", lambda n: n.allocatable_cpu_millis, lambda n: n.allocatable_memory_bytes),
    ):
        samples: list[tuple[Mapping[str, str], float]] = []
        for n in nodes:
            samples.append(({"node": n.name, "resource": "cpu", "unit": "core"}, cpu(n) / 1000.0))
            samples.append(({"node": n.name, "resource": "memory", "unit": "byte"}, float(mem(n))))
        out.family(f"kube_node_status_{what}", "gauge", f"The {what} for different resources of a node.", samples)

    def ready(n: NodeInfo, status: str) -> float:  # the twin's NotReady nodes are Ready=Unknown
        return float(status == ("true" if n.ready else "unknown"))

    out.family(
        "kube_node_status_condition",
        "gauge",
        "The condition of a cluster node.",
        (
            ({"node": n.name, "condition": "Ready", "status": status}, ready(n, status))
            for n in nodes
            for status in ("true", "false", "unknown")
        ),
    )
    out.family(
        "kube_node_spec_unschedulable",
        "gauge",
        "Whether a node can schedule new pods.",
        (({"node": n.name}, float(n.unschedulable)) for n in nodes),
    )
    out.family(
        "kube_node_spec_taint",
        "gauge",
        "The taint of a cluster node.",
        (({"node": n.name, "key": t.key, "value": t.value, "effect": t.effect}, 1.0) for n in nodes for t in n.taints),
    )
    return out.text()
